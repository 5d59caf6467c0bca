"""``extract --in-place`` and extraction interrupted by SIGKILL.

In place, the target is rewritten where it stands (same inode, a block device
even), keeping every chunk it already holds; a killed run leaves a mix of old
and new that a rerun finishes. Without ``--in-place`` a killed run leaves the
old target as it was.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from pathlib import Path

import pytest

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.formats import index as index_format
from tests.extract_helpers import (
    Versions,
    error_line,
    fetched_from_store,
    kill_when,
    make_index,
    make_versions,
    run,
    sparse_bytes,
    start,
    stats_of,
)

MIB = 1 << 20


@pytest.fixture
def v(cli, tmp_path) -> Versions:
    return make_versions(cli, tmp_path)


def same_place(v: Versions, old: bytes) -> int:
    """How many chunks of v2 the bytes ``old`` already hold at the right offset."""
    new = v.data2
    return sum(1 for c in v.new if old[c.start : c.end] == new[c.start : c.end])


def test_in_place_keeps_what_is_there_and_writes_into_the_same_inode(cli, tmp_path, v):
    out = tmp_path / "out"
    shutil.copy(v.v1, out)
    inode = out.stat().st_ino
    stats = stats_of(cli("extract", "--print-stats", "-k", "-s", v.store, v.index2, out))
    assert out.read_bytes() == v.data2
    assert out.stat().st_ino == inode
    assert stats["chunks-in-place"] == same_place(v, v.data1) > 0
    in_place = {c.id for c in v.new if v.data1[c.start : c.end] == v.data2[c.start : c.end]}
    assert stats["bytes-from-store"] == fetched_from_store(v.new, in_place)[1]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_in_place_on_a_longer_or_shorter_target_sets_its_length(cli, tmp_path, v):
    out = tmp_path / "out"
    for old in (v.data1 + random.Random(8).randbytes(300_000), v.data1[:700_000]):
        out.write_bytes(old)
        stats = stats_of(cli("extract", "--print-stats", "-k", "-s", v.store, v.index2, out))
        assert out.read_bytes() == v.data2
        assert stats["chunks-in-place"] == same_place(v, old) > 0


def test_in_place_with_a_seed_takes_moved_data_from_the_seed(cli, tmp_path, v):
    """The target holds v1 shifted by 1000 bytes: nothing is in place, all but the
    changed chunks come from the seed."""
    out = tmp_path / "out"
    out.write_bytes(bytes(1000) + v.data1)
    args = ("--print-stats", "-k", "-s", v.store, "--seed", v.index1, v.index2, out)
    stats = stats_of(cli("extract", *args))
    assert out.read_bytes() == v.data2
    assert stats["chunks-in-place"] == 0
    assert stats["chunks-from-seeds"] == v.from_seed()
    assert stats["bytes-from-store"] == v.missing()[1]


def test_in_place_turns_a_new_zero_run_into_a_hole(cli, tmp_path):
    rng = random.Random(6)
    old = rng.randbytes(2 * MIB)
    new = old[:300_000] + bytes(1_400_000) + old[1_700_000:]
    (tmp_path / "new").write_bytes(new)
    index = make_index(cli, tmp_path / "new.caibx", tmp_path / "new", store=tmp_path / "store")
    null = null_chunk_id(index)
    null_bytes = sum(c.size for c in index if c.id == null)
    out = tmp_path / "out"
    out.write_bytes(old)
    assert sparse_bytes(out) >= len(old)

    args = ("--print-stats", "-k", "-s", tmp_path / "store", tmp_path / "new.caibx", out)
    stats = stats_of(cli("extract", *args))
    assert out.read_bytes() == new
    assert stats["chunks-from-seeds"] == sum(1 for c in index if c.id == null) > 0
    kept = {c.id for c in index if old[c.start : c.end] == new[c.start : c.end]}
    # from the store: only the chunks on the edges of the run, part zeros, part data
    assert stats["bytes-from-store"] == fetched_from_store(index, kept | {null})[1] < 3 * 64 * 1024
    assert sparse_bytes(out) <= len(new) - null_bytes + 16 * 4096  # holes punched


# --- block devices --------------------------------------------------------------------------------


@pytest.fixture
def loop_device(tmp_path) -> Path:
    """A 3 MiB loop block device backed by a file of random bytes (root and losetup needed)."""
    if os.geteuid() != 0 or shutil.which("losetup") is None:
        pytest.skip(reason="a loop block device needs root and losetup (util-linux)")
    backing = tmp_path / "disk.img"
    backing.write_bytes(random.Random(10).randbytes(3 * MIB))
    made = subprocess.run(
        ["losetup", "--find", "--show", str(backing)], capture_output=True, text=True, check=False
    )
    if made.returncode != 0:
        pytest.skip(reason=f"losetup failed: {made.stderr.strip()}")
    device = Path(made.stdout.strip())
    try:
        yield device
    finally:
        subprocess.run(["losetup", "--detach", str(device)], check=False)


def read_device(device: Path, length: int) -> bytes:
    fd = os.open(device, os.O_RDONLY)
    try:
        return os.pread(fd, length, 0)
    finally:
        os.close(fd)


def test_a_block_device_is_written_only_in_place(cli, tmp_path, v, loop_device):
    before = read_device(loop_device, 3 * MIB)
    line = error_line(cli("extract", "-s", v.store, v.index2, loop_device))
    assert "block device" in line and "--in-place" in line
    assert read_device(loop_device, 3 * MIB) == before
    assert loop_device.is_block_device()

    stats = stats_of(
        cli(
            "extract",
            "--print-stats",
            "-k",
            "-s",
            v.store,
            "--seed",
            v.index1,
            v.index2,
            loop_device,
        )
    )
    assert read_device(loop_device, 3 * MIB) == v.data2 + before[len(v.data2) :]
    assert stats["chunks-from-seeds"] == v.from_seed()
    assert loop_device.is_block_device()


def test_a_block_device_seed_without_an_index(cli, tmp_path, v, loop_device):
    """The other partition of an A/B pair, chunked on the fly (desync issue #178)."""
    fd = os.open(loop_device, os.O_WRONLY)
    try:
        os.pwrite(fd, v.data1, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    out = tmp_path / "out"
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed-file", loop_device, v.index2, out)
    )
    assert out.read_bytes() == v.data2
    # all but v1's last chunk, which the device continues past 2 MiB
    assert stats["chunks-from-seeds"] >= v.from_seed() - 1
    stats = stats_of(
        cli(
            "extract",
            "--print-stats",
            "-s",
            v.store,
            "--seed",
            f"{v.index1}:{loop_device}",
            v.index2,
            out,
        )
    )
    assert out.read_bytes() == v.data2
    assert stats["chunks-from-seeds"] == v.from_seed()


def test_a_zero_run_is_zeroed_on_a_block_device(cli, tmp_path, loop_device):
    rng = random.Random(13)
    data = rng.randbytes(500_000) + bytes(1_000_000) + rng.randbytes(500_000)
    (tmp_path / "z").write_bytes(data)
    index = make_index(cli, tmp_path / "z.caibx", tmp_path / "z", store=tmp_path / "store")
    null = null_chunk_id(index)
    assert any(c.id == null for c in index)
    before = read_device(loop_device, 3 * MIB)
    stats = stats_of(
        cli(
            "extract",
            "--print-stats",
            "-k",
            "-s",
            tmp_path / "store",
            tmp_path / "z.caibx",
            loop_device,
        )
    )
    assert read_device(loop_device, 3 * MIB) == data + before[len(data) :]
    assert stats["chunks-from-seeds"] == sum(1 for c in index if c.id == null)


def test_a_device_smaller_than_the_index_is_refused(cli, tmp_path, loop_device):
    big = tmp_path / "big"
    big.write_bytes(random.Random(11).randbytes(4 * MIB))
    make_index(cli, tmp_path / "big.caibx", big, store=tmp_path / "store")
    before = read_device(loop_device, 3 * MIB)
    line = error_line(
        cli("extract", "-k", "-s", tmp_path / "store", tmp_path / "big.caibx", loop_device)
    )
    assert "smaller" in line
    assert read_device(loop_device, 3 * MIB) == before


# --- killed runs ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> Versions:
    """A 32 MiB v1 and a v2 sharing only its first quarter, made by a real process
    (module scope: made once for the kill tests)."""
    d = tmp_path_factory.mktemp("killed")
    rng = random.Random(12)
    old = rng.randbytes(32 * MIB)
    new = old[: 8 * MIB] + rng.randbytes(24 * MIB)
    (d / "v1").write_bytes(old)
    (d / "v2").write_bytes(new)
    for name, store in (("v2", ["-s", d / "store"]), ("v1", [])):
        made = run("make", *store, d / f"{name}.caibx", d / name)
        assert made.returncode == 0, made.stderr
    return Versions(
        d,
        d / "v1",
        d / "v2",
        d / "v1.caibx",
        d / "v2.caibx",
        d / "store",
        index_format.decode((d / "v1.caibx").read_bytes()),
        index_format.decode((d / "v2.caibx").read_bytes()),
        "16:64:256",
    )


def test_a_killed_in_place_extract_is_finished_by_a_rerun(tmp_path, big):
    target = tmp_path / "target"
    shutil.copy(big.v1, target)
    old = big.data1
    watch = 9 * MIB  # the first MiB that v2 changes: the run has started writing

    def writing() -> bool:
        with open(target, "rb") as f:
            f.seek(watch)
            return f.read(MIB) != old[watch : watch + MIB]

    proc = start("extract", "-n", "1", "-k", "-s", big.store, big.index2, target)
    kill_when(proc, writing)
    now = target.read_bytes()
    assert now not in (old, big.data2), "the kill should land mid-way"
    written = same_place(big, now) - same_place(big, old)
    assert written > 0

    rerun = run("extract", "--print-stats", "-k", "-s", big.store, big.index2, target)
    assert rerun.returncode == 0, rerun.stderr
    stats = json.loads(rerun.stdout)
    assert target.read_bytes() == big.data2
    assert stats["chunks-in-place"] == same_place(big, now)  # the killed run's work is kept
    assert not [p for p in tmp_path.iterdir() if p.name != "target"]


def test_a_killed_extract_leaves_the_old_target_and_a_rerun_succeeds(tmp_path, big):
    target = tmp_path / "target"
    target.write_bytes(b"previous version")
    args = ("-s", big.store, "--seed", big.index1, big.index2, target)

    def temp_is_filling() -> bool:
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".target.")]
        return bool(temps) and temps[0].stat().st_size > 0 and temps[0].stat().st_blocks > 2048

    proc = start("extract", "-n", "1", *args)
    kill_when(proc, temp_is_filling)
    assert target.read_bytes() == b"previous version"
    strays = [p.name for p in tmp_path.iterdir() if p.name != "target"]
    assert all(name.startswith(".target.") and name.endswith(".tmp") for name in strays), strays

    rerun = run("extract", *args)
    assert rerun.returncode == 0, rerun.stderr
    assert target.read_bytes() == big.data2
