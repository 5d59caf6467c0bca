"""``mount-index`` as a real process on a real FUSE mount (fuse3 + mfusepy).

The mounted file is read at many seeded random ranges (chunk boundaries, the
end of the file) and by threads at once against the original; a chunk missing
from the store fails only the reads that need it, with EIO; the process
unmounts cleanly on ``fusermount3 -u``, SIGINT and SIGTERM and exits 0.
"""

from __future__ import annotations

import errno
import hashlib
import importlib.util
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.cli.console import Console
from desync_decl.cli.main import main
from desync_decl.cli.mount import mount_name
from desync_decl.formats import index as index_format
from desync_decl.formats.index import Index
from desync_decl.stores.local import LocalStore


def _fuse_missing() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    if shutil.which("fusermount3") is None:
        return "fuse3 is not installed (apt-get install fuse3)"
    if importlib.util.find_spec("mfusepy") is None:
        return "mfusepy is not installed (pip install mfusepy)"
    return None


needs_fuse = pytest.mark.skipif(_fuse_missing() is not None, reason=str(_fuse_missing()))


@dataclass
class Blob:
    data: bytes
    index: Index
    index_path: Path
    store: Path


@dataclass
class Mount:
    process: subprocess.Popen
    path: Path
    log: Path

    @property
    def file(self) -> Path:
        return self.path / "blob"

    def stderr(self) -> str:
        return self.log.read_text()

    def unmount(self) -> int:
        subprocess.run(["fusermount3", "-u", str(self.path)], check=True, timeout=10)
        return self.process.wait(timeout=10)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(timeout=10)


def start_mount(tmp: Path, *argv: object) -> Mount:
    """``mount-index ... tmp/mnt`` in a process; returns once the file is there."""
    mountpoint, log = tmp / "mnt", tmp / "mount.log"
    mountpoint.mkdir(exist_ok=True)
    with open(log, "wb") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "desync_decl", "mount-index", *map(str, argv), str(mountpoint)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    mount = Mount(process, mountpoint, log)
    deadline = time.monotonic() + 10
    while not os.path.ismount(mountpoint):
        if process.poll() is not None:
            pytest.fail(f"mount-index exited {process.returncode}: {mount.stderr()}")
        assert time.monotonic() < deadline, f"not mounted after 10 s: {mount.stderr()}"
        time.sleep(0.02)
    return mount


@pytest.fixture
def mounts() -> Iterator[list[Mount]]:
    """Mounts a test starts; whatever is still mounted at the end is unmounted."""
    started: list[Mount] = []
    yield started
    for m in started:
        if os.path.ismount(m.path):
            subprocess.run(["fusermount3", "-u", "-z", str(m.path)], check=False)
        if m.process.poll() is None:
            m.process.kill()
            m.process.wait()


def make_blob(tmp: Path) -> Blob:
    """3 MB with a repeated block and a zero run, chunked small (~150 chunks)."""
    rng = random.Random(11)
    a = rng.randbytes(300_000)
    data = rng.randbytes(900_000) + a + bytes(700_000) + a + rng.randbytes(777_777)
    (tmp / "blob.img").write_bytes(data)
    out, err = io.StringIO(), io.StringIO()
    args = ["make", "-s", tmp / "store", "-m", "4:16:64", tmp / "blob.caibx", tmp / "blob.img"]
    assert main([str(a) for a in args], Console(out=out, err=err)) == 0, err.getvalue()
    path = tmp / "blob.caibx"
    return Blob(data, index_format.decode(path.read_bytes()), path, tmp / "store")


@pytest.fixture(scope="module")
def blob(tmp_path_factory) -> Blob:
    return make_blob(tmp_path_factory.mktemp("blob"))


@pytest.fixture(scope="module")
def mounted(blob, tmp_path_factory) -> Iterator[Mount]:
    """One mount of the blob shared by the read-only tests of this module."""
    mount = start_mount(tmp_path_factory.mktemp("mount"), "-s", blob.store, blob.index_path)
    yield mount
    assert mount.unmount() == 0


def interesting_ranges(blob: Blob, rng: random.Random, count: int) -> list[tuple[int, int]]:
    """Ranges around chunk boundaries, at the end of the file and anywhere."""
    n = len(blob.data)
    ends = list(blob.index.ends)
    ranges = [(0, 1), (0, n), (n - 1, 1), (n - 1, 100), (n, 10), (n - 5000, 5000)]
    for _ in range(count):
        kind = rng.randrange(3)
        if kind == 0:
            offset = max(0, rng.choice(ends) + rng.randrange(-3, 4))
        elif kind == 1:
            offset = max(0, n - rng.randrange(1, 300_000))
        else:
            offset = rng.randrange(n)
        ranges.append((offset, rng.choice([1, 2, 7, 4096, 5000, 65_536, 200_000])))
    return ranges


@needs_fuse
def test_the_mount_holds_one_read_only_file_named_after_the_index(blob, mounted):
    assert os.listdir(mounted.path) == ["blob"]
    st = mounted.file.stat()
    assert st.st_size == len(blob.data)
    assert st.st_mode & 0o777 == 0o444
    with pytest.raises(OSError) as e:
        os.open(mounted.file, os.O_RDWR)
    assert e.value.errno in (errno.EROFS, errno.EACCES)
    assert not (mounted.path / "other").exists()


@needs_fuse
def test_random_ranges_read_the_original_bytes(blob, mounted):
    rng = random.Random(5)
    fd = os.open(mounted.file, os.O_RDONLY)
    try:
        for k, (offset, size) in enumerate(interesting_ranges(blob, rng, 400)):
            if k % 25 == 0:  # drop the kernel's copy, so reads reach the mount again
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            got = os.pread(fd, size, offset)
            assert got == blob.data[offset : offset + size], (offset, size)
    finally:
        os.close(fd)


@needs_fuse
def test_concurrent_readers_each_get_the_original_bytes(blob, mounted):
    failures: list[str] = []

    def random_reader(seed: int) -> None:
        rng = random.Random(seed)
        fd = os.open(mounted.file, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for offset, size in interesting_ranges(blob, rng, 60):
                if os.pread(fd, size, offset) != blob.data[offset : offset + size]:
                    failures.append(f"{offset}+{size}")
        finally:
            os.close(fd)

    def sequential_reader() -> None:
        digest = hashlib.sha256()
        with open(mounted.file, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            while piece := f.read(100_000):
                digest.update(piece)
        if digest.digest() != hashlib.sha256(blob.data).digest():
            failures.append("sequential read")

    threads = [threading.Thread(target=random_reader, args=(s,)) for s in range(6)]
    threads += [threading.Thread(target=sequential_reader) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


@needs_fuse
def test_a_missing_chunk_fails_only_its_range_with_eio_until_it_is_back(blob, tmp_path, mounts):
    store = tmp_path / "store"
    shutil.copytree(blob.store, store)
    local = LocalStore(store)
    null = null_chunk_id(blob.index)
    assert null in blob.index.unique_ids()
    local.remove_chunk(null)  # served from memory: never needed
    victim = next(c for c in blob.index if c.start > 100_000 and c.id != null)
    saved = local.get_chunk(victim.id)
    local.remove_chunk(victim.id)
    mount = start_mount(tmp_path, "-s", store, blob.index_path)
    mounts.append(mount)
    fd = os.open(mount.file, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as e:
            os.pread(fd, 10, victim.start + victim.size // 2)
        assert e.value.errno == errno.EIO
        far = victim.start - 70_000  # a page and the kernel's readahead away
        assert os.pread(fd, 4096, far) == blob.data[far : far + 4096]
        zeros = len(blob.data) - 777_777 - 300_000 - 600_000
        assert os.pread(fd, 100_000, zeros) == bytes(100_000)
        assert os.pread(fd, 1000, len(blob.data) - 1000) == blob.data[-1000:]
        local.store_chunk(saved)
        middle = victim.start + victim.size // 2
        assert os.pread(fd, 10, middle) == blob.data[middle : middle + 10]
    finally:
        os.close(fd)
    assert mount.unmount() == 0
    log = mount.stderr()
    assert f"chunk {victim.id.hex()} missing from {store}" in log
    assert null.hex() not in log


@needs_fuse
def test_fusermount_unmounts_and_the_process_reports_and_exits_zero(blob, tmp_path, mounts):
    mount = start_mount(tmp_path, "-s", blob.store, "-n", "3", blob.index_path)
    mounts.append(mount)
    assert mount.file.read_bytes() == blob.data
    assert mount.unmount() == 0
    assert not os.path.ismount(mount.path)
    log = mount.stderr()
    assert f"blob.caibx ({len(blob.data)} bytes) mounted at {mount.path}" in log
    assert f"unmounted {mount.path}:" in log and "0 failed reads" in log


@needs_fuse
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_unmounts_cleanly_and_exits_zero(blob, tmp_path, mounts, sig):
    mount = start_mount(tmp_path, "-s", blob.store, blob.index_path)
    mounts.append(mount)
    with open(mount.file, "rb") as f:
        assert f.read(1000) == blob.data[:1000]
    assert mount.stop(sig) == 0
    assert not os.path.ismount(mount.path)
    assert "unmounted" in mount.stderr()


@needs_fuse
def test_the_store_file_is_read_again_on_sighup(blob, tmp_path, mounts):
    (tmp_path / "empty").mkdir()
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(tmp_path / "empty")]}))
    mount = start_mount(tmp_path, "--store-file", store_file, blob.index_path)
    mounts.append(mount)
    fd = os.open(mount.file, os.O_RDONLY)
    try:
        with pytest.raises(OSError):
            os.pread(fd, 100, 0)
        store_file.write_text(json.dumps({"stores": [str(blob.store)]}))
        mount.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while "reloaded" not in mount.stderr():
            assert time.monotonic() < deadline, mount.stderr()
            time.sleep(0.02)
        assert os.pread(fd, 100, 0) == blob.data[:100]
    finally:
        os.close(fd)
    assert os.path.ismount(mount.path)
    assert mount.unmount() == 0


def test_a_mount_point_that_is_not_a_directory_is_an_error(cli, tmp_path):
    blob = make_blob(tmp_path)
    r = cli("mount-index", "-s", blob.store, blob.index_path, tmp_path / "nowhere")
    assert r.code == 1
    assert "mount point" in r.err and "is not a directory" in r.err


def test_store_flags_and_store_file_are_exclusive(cli, tmp_path):
    r = cli("mount-index", "-s", "a", "--store-file", "f.json", "x.caibx", tmp_path)
    assert r.code == 1 and "cannot be combined" in r.err
    r = cli("mount-index", "x.caibx", tmp_path)
    assert r.code == 1 and "no store given" in r.err


@pytest.mark.parametrize(
    ("location", "name"),
    [
        ("blob.caibx", "blob"),
        ("/srv/images/disk.img.caibx", "disk.img"),
        ("-", "-"),
        ("https://host/idx/app.caibx?token=x", "app"),
        ("tree.caidx", "tree"),
        ("noext", "noext"),
    ],
)
def test_the_file_is_named_after_the_index_without_its_extension(location, name):
    assert mount_name(location) == name
