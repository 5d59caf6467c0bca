"""Seeds that do not hold what their index says: changed, truncated or
unreadable after the index was made. By default the extraction fails with one
line naming the seed and leaves the target as it was; ``--skip-invalid-seeds``
drops the seed, ``--regenerate-invalid-seeds`` re-indexes it (in memory) and
still uses what is right in it. Either way the output is correct.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from tests.extract_helpers import Versions, error_line, make_versions, stats_of


@pytest.fixture
def v(cli, tmp_path) -> Versions:
    return make_versions(cli, tmp_path)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


# --- a seed changed after its index was made ------------------------------------------------------


@pytest.fixture
def corrupt(v) -> Versions:
    """v1 with 100 bytes overwritten inside a chunk that v2 takes from it, after
    its index was made: the index now lies about that chunk."""
    shared = v.old.unique_ids() & v.new.unique_ids()
    victim = [c for c in v.old if c.id in shared][len(v.old) // 2]
    with open(v.v1, "r+b") as f:
        f.seek(victim.start + victim.size // 2)
        f.write(bytes(b ^ 0xFF for b in v.data1[f.tell() : f.tell() + 100]))
    return v


def test_a_seed_that_does_not_match_its_index_fails_the_extraction(cli, tmp_path, corrupt):
    v = corrupt
    out = tmp_path / "out"
    out.write_bytes(b"previous version")
    before = listing(tmp_path)
    line = error_line(cli("extract", "-s", v.store, "--seed", v.index1, v.index2, out))
    assert "doesn't match its data" in line
    assert str(v.index1) in line
    assert listing(tmp_path) == before  # old target untouched, no temp file left


def test_skip_invalid_seeds_drops_the_bad_seed_with_a_warning(cli, tmp_path, corrupt):
    v = corrupt
    out = tmp_path / "out"
    r = cli(
        "extract",
        "--print-stats",
        "--skip-invalid-seeds",
        "-s",
        v.store,
        "--seed",
        v.index1,
        v.index2,
        out,
    )
    stats = stats_of(r)
    assert out.read_bytes() == v.data2
    warning = r.err.strip().splitlines()
    assert len(warning) == 1 and "doesn't match its data" in warning[0], r.err
    assert str(v.index1) in warning[0]
    assert stats["chunks-from-seeds"] == 0
    assert stats["bytes-from-store"] == v.new.length
    assert stats["attempts"] == 2
    assert len(stats["seed-problems"]) == 1


def test_regenerate_invalid_seeds_reindexes_and_still_uses_the_seed(cli, tmp_path, corrupt):
    v = corrupt
    out = tmp_path / "out"
    index_before = v.index1.read_bytes()
    args = ("--regenerate-invalid-seeds", "-s", v.store, "--seed", v.index1, v.index2, out)
    r = cli("extract", "--print-stats", *args)
    stats = stats_of(r)
    assert out.read_bytes() == v.data2
    assert "doesn't match its data" in r.err
    # The unchanged parts still come from the (re-indexed) seed: only the
    # changed chunks and the ones around the corruption are fetched.
    assert stats["chunks-from-seeds"] > 0.8 * stats["chunks-total"]
    assert v.missing()[1] < stats["bytes-from-store"] < v.missing()[1] + 3 * 64 * 1024
    assert stats["attempts"] == 2
    assert v.index1.read_bytes() == index_before  # nothing on disk was rewritten


@pytest.mark.parametrize("policy", [None, "--skip-invalid-seeds", "--regenerate-invalid-seeds"])
def test_a_seed_whose_blob_is_gone(cli, tmp_path, v, policy):
    v.v1.unlink()
    out = tmp_path / "out"
    args = ["-s", v.store, "--seed", v.index1, v.index2, out]
    if policy is None:
        line = error_line(cli("extract", *args))
        assert str(v.index1) in line and "v1" in line
        assert not out.exists()
        return
    r = cli("extract", "--print-stats", policy, *args)
    stats = stats_of(r)
    assert out.read_bytes() == v.data2
    assert str(v.index1) in r.err
    assert stats["bytes-from-store"] == v.new.length


def test_a_bad_seed_is_dropped_and_the_good_one_still_used(cli, tmp_path, corrupt):
    v = corrupt
    good = tmp_path / "good"
    good.write_bytes(v.data2[: len(v.data2) // 2])
    args = ("-s", v.store, "--seed", v.index1, "--seed-file", good, v.index2, tmp_path / "out")
    stats = stats_of(cli("extract", "--print-stats", "--skip-invalid-seeds", *args))
    assert (tmp_path / "out").read_bytes() == v.data2
    assert [s["file"] for s in stats["plan"]["seeds"]] == [str(good)]
    assert stats["plan"]["seeds"][0]["bytes"] > len(v.data2) // 2 - 2 * 64 * 1024


def test_two_bad_seeds_are_both_regenerated(cli, tmp_path, corrupt):
    v = corrupt
    shutil.copy(v.v1, tmp_path / "copy")
    shutil.copy(v.index1, tmp_path / "copy.caibx")
    args = ("-s", v.store, "--seed", v.index1, "--seed", tmp_path / "copy.caibx", v.index2)
    r = cli("extract", "--print-stats", "--regenerate-invalid-seeds", *args, tmp_path / "out")
    stats = stats_of(r)
    assert (tmp_path / "out").read_bytes() == v.data2
    assert stats["attempts"] == 3 and len(stats["seed-problems"]) == 2
    assert r.err.count("doesn't match its data") == 2
    assert stats["chunks-from-seeds"] > 0.8 * stats["chunks-total"]


# --- with --in-place: found before the user's file is written -------------------------------------


def test_an_invalid_seed_is_found_before_the_in_place_target_is_written(cli, tmp_path, v):
    """desync validates every seed before writing (spec 8.2): a failed run with a
    lying seed must not leave unverified seed bytes in the user's file."""
    seed_bytes = bytearray(v.data1)
    mid = len(seed_bytes) // 2
    seed_bytes[mid : mid + 100] = bytes(b ^ 0xFF for b in seed_bytes[mid : mid + 100])
    v.v1.write_bytes(bytes(seed_bytes))  # v1.caibx now lies about one chunk
    out = tmp_path / "out"
    old = random.Random(9).randbytes(len(v.data2))  # nothing in place: all from the seed
    out.write_bytes(old)
    line = error_line(cli("extract", "-k", "-s", v.store, "--seed", v.index1, v.index2, out))
    assert "doesn't match its data" in line
    assert out.read_bytes() == old


@pytest.mark.parametrize("in_place", [False, True], ids=["new-file", "in-place"])
def test_a_seed_that_cannot_be_read_is_an_invalid_seed(cli, tmp_path, v, in_place):
    """v1.caibx's blob "v1" is a directory: opening works, reading fails. The
    error must name the seed (not the target), and --skip-invalid-seeds skip it."""
    v.v1.unlink()
    v.v1.mkdir()
    out = tmp_path / "out"
    old = random.Random(9).randbytes(len(v.data2))  # nothing in place: seeds are needed
    out.write_bytes(old)
    k = ["-k"] if in_place else []
    args = [*k, "-s", v.store, "--seed", v.index1, v.index2, out]
    line = error_line(cli("extract", *args))
    assert str(v.index1) in line and "doesn't match its data" in line, line
    assert out.read_bytes() == old
    stats = stats_of(cli("extract", "--print-stats", "--skip-invalid-seeds", *args))
    assert out.read_bytes() == v.data2
    assert stats["chunks-from-seeds"] == 0


def test_in_place_a_bad_seed_is_regenerated_and_still_used(cli, tmp_path, corrupt):
    v = corrupt
    out = tmp_path / "out"
    out.write_bytes(random.Random(9).randbytes(len(v.data2)))
    args = ("-k", "--regenerate-invalid-seeds", "-s", v.store, "--seed", v.index1, v.index2, out)
    r = cli("extract", "--print-stats", *args)
    stats = stats_of(r)
    assert out.read_bytes() == v.data2
    assert "doesn't match its data" in r.err
    assert stats["attempts"] == 2
    assert stats["chunks-from-seeds"] > 0.8 * stats["chunks-total"]
