"""Seed ranges are cloned (reflinked), not copied, on real loop-mounted XFS and Btrfs,
and copied on ext4: the same extraction, the same output bytes.

Evidence is read from the filesystem itself: ``filefrag`` (FIEMAP) says how much
of the output shares blocks with another file, ``statfs`` how much space the
extraction used. The store lives outside the reflink filesystem, so the space
used there is the output's alone.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from desync_decl.formats import index as index_format
from tests.extract_helpers import Versions, error_line, make_versions, stats_of
from tests.loopfs import fs_type, fs_used_bytes, shared_bytes

MIB = 1 << 20
BIG = "16:64:256"  # KiB: long runs of whole blocks between the changes


def versions_on(cli, directory: Path, store: Path) -> Versions:
    """A 4 MiB v1 and v2 differing in three 4 KiB blocks, in ``directory``."""
    return make_versions(
        cli, directory, size=4 * MIB, blocks=(100, 500, 900), sizes=BIG, store=store
    )


def seed_bytes(stats: dict) -> int:
    return stats["plan"]["sources"]["seed"]["bytes"]


def test_seed_ranges_are_cloned_on_a_reflink_filesystem(cli, tmp_path, reflink_dir):
    v = versions_on(cli, reflink_dir, tmp_path / "store")
    out = reflink_dir / "out"
    used = fs_used_bytes(reflink_dir)
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed", v.index1, v.index2, out)
    )
    grown = fs_used_bytes(reflink_dir) - used
    assert out.read_bytes() == v.data2

    cloned, copied = stats["bytes-cloned-from-seeds"], stats["bytes-copied-from-seeds"]
    assert cloned + copied == seed_bytes(stats) == v.new.length - v.missing()[1]
    # Only the partial blocks at both ends of each seed range are copied.
    seed_ranges = len([s for s in plan_segments(cli, v, out) if s["source"] == "seed"])
    block = os.stat(out).st_blksize
    assert cloned > 0 and copied <= 2 * block * seed_ranges
    assert cloned % block == 0

    # The filesystem agrees: every cloned byte shares its block with v1, and
    # nothing else does (the rest was written by us). Cloned ranges are whole,
    # aligned blocks, and both filesystems report sharing per extent of whole
    # blocks, so the counts match exactly; one block of slack per seed range
    # only covers a filesystem merging or splitting extents at a range's edge.
    shared = shared_bytes(out)
    assert abs(shared - cloned) <= block * seed_ranges, (shared, cloned)
    assert shared_bytes(v.v1) >= cloned - block * seed_ranges

    # Space: the output costs what was not cloned (store chunks and copied
    # edges, rounded up to blocks), far less than its size. Measured: exactly
    # that on both filesystems; 128 KiB of slack for extent-tree and (Btrfs)
    # copy-on-write metadata, which another kernel may account differently.
    not_cloned = v.new.length - cloned
    assert v.missing()[1] <= grown <= not_cloned + 128 * 1024, (grown, not_cloned)
    assert grown < v.new.length // 4


def plan_segments(cli, v: Versions, out: Path) -> list[dict]:
    """The segments of the plan ``extract --dry-run`` prints (for another output
    name: without --in-place the plan does not depend on the target)."""
    return stats_of(
        cli("extract", "--dry-run", "--json", "--seed", v.index1, v.index2, out.with_name("x"))
    )["segments"]


def test_on_ext4_the_same_extraction_copies(cli, tmp_path):
    assert fs_type(tmp_path) not in ("xfs", "btrfs"), "tmp_path is meant to be a non-reflink fs"
    v = versions_on(cli, tmp_path / "v", tmp_path / "store")
    out = tmp_path / "out"
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed", v.index1, v.index2, out)
    )
    assert out.read_bytes() == v.data2
    assert stats["bytes-cloned-from-seeds"] == 0
    assert stats["bytes-copied-from-seeds"] == seed_bytes(stats) > v.new.length // 2


def test_seed_data_at_another_offset_within_a_block_is_copied_not_cloned(
    cli, tmp_path, reflink_dir
):
    """Cloning needs the same offset within a block on both sides: v2 = 1000 bytes
    + v1 cannot share v1's blocks, v2 = 4096 bytes + v1 can."""
    v = versions_on(cli, reflink_dir, tmp_path / "store")
    for shift, clones in ((1000, False), (4096, True)):
        shifted = reflink_dir / f"shifted{shift}"
        shifted.write_bytes(os.urandom(shift) + v.data1)
        store = tmp_path / f"store{shift}"
        made = cli("make", "-s", store, "-m", BIG, reflink_dir / "s.caibx", shifted)
        assert made.code == 0, made.err
        out = reflink_dir / f"out{shift}"
        stats = stats_of(
            cli(
                "extract",
                "--print-stats",
                "-s",
                store,
                "--seed",
                v.index1,
                reflink_dir / "s.caibx",
                out,
            )
        )
        assert out.read_bytes() == shifted.read_bytes()
        assert seed_bytes(stats) > 3 * MIB
        assert (stats["bytes-cloned-from-seeds"] > 3 * MIB) is clones, stats
        assert (shared_bytes(out) > 3 * MIB) is clones


def test_a_seed_on_another_filesystem_is_copied(cli, tmp_path, reflink_dir):
    v = versions_on(cli, tmp_path / "v", tmp_path / "store")
    out = reflink_dir / "out"
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed", v.index1, v.index2, out)
    )
    assert out.read_bytes() == v.data2
    assert stats["bytes-cloned-from-seeds"] == 0
    assert shared_bytes(out) == 0


def test_the_reflinked_output_stays_correct_when_the_seed_changes(cli, tmp_path, reflink_dir):
    """Clones are copy-on-write: rewriting the seed afterwards leaves the output alone."""
    v = versions_on(cli, reflink_dir, tmp_path / "store")
    out = reflink_dir / "out"
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed", v.index1, v.index2, out)
    )
    assert stats["bytes-cloned-from-seeds"] > 0
    with open(v.v1, "r+b") as f:
        f.write(bytes(len(v.data1)))
        os.fsync(f.fileno())
    assert out.read_bytes() == v.data2
    made = cli("make", "-m", BIG, reflink_dir / "check.caibx", out)
    assert made.code == 0
    assert index_format.decode((reflink_dir / "check.caibx").read_bytes()).ids == v.new.ids


@pytest.fixture(params=["ext4", "xfs", "btrfs"])
def any_fs(request, tmp_path) -> Path:
    """A directory on ext4 (tmp_path), or on the loop-mounted XFS or Btrfs."""
    if request.param == "ext4":
        return tmp_path / "ext4"
    return request.getfixturevalue(f"{request.param}_dir")


@pytest.mark.parametrize("policy", [None, "--skip-invalid-seeds"])
def test_a_truncated_seed_is_an_invalid_seed_on_every_filesystem(cli, tmp_path, any_fs, policy):
    """The seed file lost its last MiB after its index was made. Whether its
    ranges are cloned or copied, that is the seed's fault, said as such."""
    v = versions_on(cli, any_fs, tmp_path / "store")
    os.truncate(v.v1, v.new.length - MIB)
    out = any_fs / "out"
    args = ["-s", v.store, "--seed", v.index1, v.index2, out]
    if policy is None:
        line = error_line(cli("extract", *args))
        assert "doesn't match its data" in line and str(v.index1) in line, line
        assert not out.exists()
        return
    r = cli("extract", "--print-stats", policy, *args)
    stats = stats_of(r)
    assert out.read_bytes() == v.data2
    assert "doesn't match its data" in r.err
    assert stats["chunks-from-seeds"] == 0
