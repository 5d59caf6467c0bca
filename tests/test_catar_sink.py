"""``tar`` to a file: the writer thread (``archive/catar_sink.py``) reading payloads of
files on disk itself.

The archive equals the one made on a single thread (payloads read in blocks by the
walk) and casync's, for payloads on either side of every size limit of the writer
(deferred or not, gathered in its buffer or copied through it) and for more pieces
than one batch or one writev holds. Errors on the writer reach the caller and every
file it was handed is closed.
"""

from __future__ import annotations

import io
import os
import random
import subprocess
import threading
from pathlib import Path

import pytest

from desync_decl import output_batch
from desync_decl.archive import catar_sink
from desync_decl.archive.catar_sink import CatarSink
from desync_decl.archive.disk_source import DiskOptions, FilePayload, disk_tree
from desync_decl.errors import DesyncError
from desync_decl.formats.catar import encode
from desync_decl.formats.catar.features import DESYNC_TAR
from desync_decl.ops.tar import TarInput, tar
from tests.test_tar import SIZE_CHANGES
from tests.test_tar_casync_interop import DESYNC_DEFAULT_AS_CASYNC

BUFFER = catar_sink.BUFFER_BYTES
SIZES = [0, 1, 4095, 4096, 4097, BUFFER - 1, BUFFER, BUFFER + 1]


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("sink") / "tree"
    rng = random.Random(5)
    (root / "sizes").mkdir(parents=True)
    for size in SIZES:
        (root / "sizes" / f"f{size}").write_bytes(rng.randbytes(size))
    many = root / "many"  # more payloads than a batch, more pieces than a writev
    many.mkdir()
    for i in range(3 * catar_sink.BATCH_PAYLOADS):
        size = (128 << 10) + rng.randrange(4096) if i % 3 == 0 else rng.randrange(64)
        (many / f"{i:04d}").write_bytes(rng.randbytes(size))
    for i in range(output_batch.MAX_IOV + 10):
        os.symlink(f"target{i}", many / f"link{i:04d}")
    (root / "big").write_bytes(rng.randbytes(3 * BUFFER + 12345))
    return root


def test_the_archive_equals_the_single_thread_one_and_casyncs(tree, tmp_path, casync):
    out = tmp_path / "ours.catar"
    with open(out, "wb") as f:
        tar(TarInput(tree), f)
    single = b"".join(bytes(p) for p in encode(disk_tree(tree, DiskOptions(DESYNC_TAR))))
    theirs = tmp_path / "casync.catar"
    subprocess.run([casync, "make", *DESYNC_DEFAULT_AS_CASYNC, str(theirs), str(tree)], check=True)
    data = out.read_bytes()
    assert data == single
    assert data == theirs.read_bytes()


def test_tar_to_a_file_object_without_a_descriptor_gives_the_same_archive(tree, tmp_path):
    out = tmp_path / "ours.catar"
    with open(out, "wb") as f:
        tar(TarInput(tree), f)
    buffer = io.BytesIO()
    tar(TarInput(tree), buffer)
    assert buffer.getvalue() == out.read_bytes()


def test_a_write_error_reaches_the_caller_and_every_file_is_closed(tree, tmp_path):
    before = open_fds()
    fd = os.open(tmp_path / "x", os.O_RDONLY | os.O_CREAT)  # writes fail: EBADF
    try:
        with pytest.raises(OSError), open(fd, "rb", closefd=False) as f:
            tar(TarInput(tree), f)  # type: ignore[arg-type]
    finally:
        os.close(fd)
    assert open_fds() == before


def test_a_payload_that_fails_stops_the_writer_and_the_rest_are_closed(tmp_path):
    files = []
    for i in range(5):
        path = tmp_path / f"f{i}"
        path.write_bytes(b"x" * 1000)
        files.append(path)
    before = open_fds()
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        sink = CatarSink(out)
        payloads = [FilePayload(os.open(p, os.O_RDONLY), 1000, str(p)) for p in files]
        payloads[1].size = 2000  # "shrank" since its stat
        with pytest.raises(DesyncError, match="f1: file changed while archiving"), sink:
            for p in payloads:
                sink.put(b"header")
                sink.put(p)
    finally:
        os.close(out)
    assert open_fds() == before
    written = (tmp_path / "out").read_bytes()  # nothing after the failed payload
    assert (b"header" + b"x" * 1000 + b"header").startswith(written)


def test_an_error_on_the_walking_thread_drops_what_is_queued(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"y" * 10)
    before = open_fds()
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        with pytest.raises(RuntimeError, match="walk failed"), CatarSink(out) as sink:
            sink.put(FilePayload(os.open(path, os.O_RDONLY), 10, str(path)))
            raise RuntimeError("walk failed")
    finally:
        os.close(out)
    assert open_fds() == before


@pytest.mark.parametrize(("size", "change"), SIZE_CHANGES)
def test_a_deferred_payload_that_changed_size_is_an_error(tmp_path, size, change):
    """As ``payload()`` (tests/test_tar.py): one byte past the size shows growth, for a
    payload gathered in the writer's buffer (5 bytes) and one copied through it (3 MiB)."""
    data = random.Random(size).randbytes(size)
    path = tmp_path / "f"
    path.write_bytes(data)
    before = open_fds()
    payload = FilePayload(os.open(path, os.O_RDONLY), size, str(path))
    if change is not None:
        with open(path, "ab") as f:
            if change:
                f.write(change)
            else:
                f.truncate(size // 2)
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        if change is None:
            with CatarSink(out) as sink:
                sink.put(payload)
        else:
            with (
                pytest.raises(DesyncError, match="f: file changed while archiving"),
                CatarSink(out) as sink,
            ):
                sink.put(payload)
    finally:
        os.close(out)
    assert open_fds() == before
    if change is None:
        assert (tmp_path / "out").read_bytes() == data


def test_a_payload_that_cannot_be_read_is_an_error_naming_it(tmp_path):
    (tmp_path / "d").mkdir()
    before = open_fds()
    payload = FilePayload(os.open(tmp_path / "d", os.O_RDONLY), 10, "the-dir")
    out = os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT)
    try:
        with (
            pytest.raises(DesyncError, match="cannot read the-dir: Is a directory"),
            CatarSink(out) as sink,
        ):
            sink.put(b"header")
            sink.put(payload)
    finally:
        os.close(out)
    assert open_fds() == before


def test_the_archive_through_a_pipe_equals_the_one_in_a_file(tree, tmp_path):
    """A pipe takes no copy_file_range: every payload is read through the writer's
    buffer (gathered, or copied through it when larger), with the same bytes."""
    out = tmp_path / "ours.catar"
    with open(out, "wb") as f:
        tar(TarInput(tree), f)
    read_end, write_end = os.pipe()
    got = bytearray()

    def drain() -> None:
        while block := os.read(read_end, 1 << 20):
            got.extend(block)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        with open(write_end, "wb", closefd=True) as f:
            tar(TarInput(tree), f)
    finally:
        reader.join()
        os.close(read_end)
    assert bytes(got) == out.read_bytes()
