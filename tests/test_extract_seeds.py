"""Seeded extraction end to end: every way to name a seed, the null and self seeds,
``--dry-run``, the real casync, and bad input (seeds that lie about their data:
test_extract_invalid_seeds.py; --in-place and killed runs: test_extract_inplace.py;
reflinks: test_extract_reflink.py).

Real files, real indexes and a real local store, all made by the CLI. Expected
numbers are computed from the indexes in the test; bytes fetched from the store
are proved to be only the missing ones by deleting every other chunk from it.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from desync_decl.assemble.plan import null_chunk_id
from tests.extract_helpers import (
    Versions,
    chunk_path,
    error_line,
    fetched_from_store,
    make_index,
    make_versions,
    rechunked,
    sparse_bytes,
    stats_of,
)


@pytest.fixture
def v(cli, tmp_path) -> Versions:
    return make_versions(cli, tmp_path)


def listing(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


# --- every way to name a seed ---------------------------------------------------------------------


def seed_beside_its_blob(v: Versions) -> tuple[list[object], Path, Path]:
    return ["--seed", v.index1], v.index2, v.v1


def seed_index_colon_blob(v: Versions) -> tuple[list[object], Path, Path]:
    """The index and its blob in different directories under unrelated names."""
    (v.dir / "indexes").mkdir()
    (v.dir / "images").mkdir()
    index, blob = v.dir / "indexes" / "old.caibx", v.dir / "images" / "disk-1.img"
    shutil.copy(v.index1, index)
    shutil.copy(v.v1, blob)
    return ["--seed", f"{index}:{blob}"], v.index2, blob


def seed_dir(v: Versions) -> tuple[list[object], Path, Path]:
    """A directory searched recursively: the only usable seed is old/v1.

    orphan.caibx has no blob beside it (skipped); v2.caibx is the index being
    extracted, and although its blob is right there it must not be a seed.
    """
    seeds = v.dir / "seeds"
    (seeds / "old").mkdir(parents=True)
    shutil.copy(v.v1, seeds / "old" / "v1")
    shutil.copy(v.index1, seeds / "old" / "v1.caibx")
    shutil.copy(v.index1, seeds / "orphan.caibx")
    shutil.copy(v.index2, seeds / "v2.caibx")
    shutil.copy(v.v2, seeds / "v2")
    (seeds / "notes.txt").write_text("not an index")
    return ["--seed-dir", seeds], seeds / "v2.caibx", seeds / "old" / "v1"


def seed_file(v: Versions) -> tuple[list[object], Path, Path]:
    """A file without an index: chunked on the fly with the target's chunk sizes."""
    return ["--seed-file", v.v1], v.index2, v.v1


@pytest.mark.parametrize(
    "form",
    [seed_beside_its_blob, seed_index_colon_blob, seed_dir, seed_file],
    ids=lambda f: f.__name__,
)
def test_each_seed_form_supplies_every_chunk_but_the_changed_ones(cli, tmp_path, v, form):
    args, index, expected_seed = form(v)
    out = tmp_path / "out"
    stats = stats_of(cli("extract", "--print-stats", "-s", v.store, *args, index, out))
    assert out.read_bytes() == v.data2
    assert rechunked(cli, out, tmp_path) == v.index2.read_bytes()
    chunks, size = v.missing()
    assert stats["bytes-from-store"] == size
    assert stats["chunks-from-store"] == chunks
    assert stats["chunks-from-seeds"] == v.from_seed() > 0
    assert stats["chunks-from-seeds"] + stats["chunks-from-store"] == stats["chunks-total"]
    assert stats["seeds"] == 2  # the null seed and v1
    assert [s["file"] for s in stats["plan"]["seeds"]] == [str(expected_seed)]


def test_seed_dir_without_any_usable_seed_fetches_everything(cli, tmp_path, v):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    shutil.copy(v.index1, empty / "v1.caibx")  # its blob is elsewhere: not a seed
    stats = stats_of(
        cli(
            "extract", "--print-stats", "-s", v.store, "--seed-dir", empty, v.index2, tmp_path / "o"
        )
    )
    assert stats["seeds"] == 1
    assert stats["bytes-from-store"] == v.new.length
    assert (tmp_path / "o").read_bytes() == v.data2


def test_several_seeds_each_supply_what_they_hold(cli, tmp_path):
    """v2's first half is in one seed, its second half in another."""
    v = make_versions(cli, tmp_path)
    half = len(v.data2) // 2
    (tmp_path / "a").write_bytes(v.data2[:half] + bytes(100))
    (tmp_path / "b").write_bytes(random.Random(5).randbytes(1000) + v.data2[half:])
    stats = stats_of(
        cli(
            "extract",
            "--print-stats",
            "-s",
            v.store,
            "--seed-file",
            tmp_path / "a",
            "--seed-file",
            tmp_path / "b",
            v.index2,
            tmp_path / "out",
        )
    )
    assert (tmp_path / "out").read_bytes() == v.data2
    per_seed = [s["bytes"] for s in stats["plan"]["seeds"]]
    assert all(n > half // 2 for n in per_seed), per_seed
    assert stats["bytes-from-store"] < v.new.length // 10  # the chunks around the cut


# --- the store only needs what no seed has --------------------------------------------------------


def test_chunks_a_seed_holds_are_never_fetched_from_the_store(cli, tmp_path, v):
    for id in v.shared_ids():
        chunk_path(v.store, id).unlink()
    assert len(list(v.store.rglob("*.cacnk"))) == v.missing()[0]

    out = tmp_path / "out"
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed", v.index1, v.index2, out)
    )
    assert out.read_bytes() == v.data2
    assert stats["chunks-from-store"] == v.missing()[0]

    unseeded = tmp_path / "unseeded"
    line = error_line(cli("extract", "-s", v.store, v.index2, unseeded))
    named = re.search(r"\b[0-9a-f]{64}\b", line)
    assert named and "missing" in line, line
    assert bytes.fromhex(named.group()) in v.shared_ids()
    assert not unseeded.exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".unseeded")]


# --- the null seed and the self seed --------------------------------------------------------------


def test_a_zero_run_comes_from_the_null_seed_and_stays_a_hole(cli, tmp_path):
    rng = random.Random(3)
    data = rng.randbytes(300_000) + bytes(1_500_000) + rng.randbytes(200_000)
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    index = make_index(cli, tmp_path / "blob.caibx", blob, store=tmp_path / "store")
    null = null_chunk_id(index)
    nulls = [c for c in index if c.id == null]
    null_bytes = sum(c.size for c in nulls)
    assert null_bytes > 1_000_000

    args = ("-s", tmp_path / "store", tmp_path / "blob.caibx", tmp_path / "out")
    plan = stats_of(cli("extract", "--dry-run", "--json", *args))
    assert plan["sources"]["null"] == {"chunks": len(nulls), "bytes": null_bytes}

    stats = stats_of(cli("extract", "--print-stats", *args))
    out = tmp_path / "out"
    assert out.read_bytes() == data
    assert stats["chunks-from-seeds"] == len(nulls)
    assert stats["bytes-from-store"] == len(data) - null_bytes
    # Only the data is on disk: the zero run is a hole. Slack: the chunks on
    # both edges of the run are partly zeros and written, and ext4 rounds every
    # allocation to 4 KiB blocks.
    assert sparse_bytes(out) <= len(data) - null_bytes + 16 * 4096
    assert sparse_bytes(out) < len(data) // 2


def test_a_repeated_block_is_fetched_once_and_copied_from_the_output(cli, tmp_path):
    rng = random.Random(4)
    a = rng.randbytes(300_000)
    data = a + rng.randbytes(400_000) + a + rng.randbytes(100_000) + a
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    index = make_index(cli, tmp_path / "blob.caibx", blob, store=tmp_path / "store")
    repeats = len(index) - len(index.unique_ids())
    assert repeats > 20

    args = ("-s", tmp_path / "store", tmp_path / "blob.caibx", tmp_path / "out")
    plan = stats_of(cli("extract", "--dry-run", "--json", *args))
    assert plan["sources"]["self"]["chunks"] == repeats
    assert plan["sources"]["self"]["bytes"] > 0

    stats = stats_of(cli("extract", "--print-stats", *args))
    assert (tmp_path / "out").read_bytes() == data
    assert stats["chunks-from-store"] == len(index.unique_ids())
    assert stats["bytes-from-store"] == fetched_from_store(index, set())[1] < len(data)


# --- --dry-run ------------------------------------------------------------------------------------


def test_dry_run_writes_nothing_and_its_plan_is_what_the_run_does(cli, tmp_path, v):
    out = tmp_path / "out"
    args = ("-s", v.store, "--seed", v.index1, v.index2, out)
    before = listing(tmp_path)
    plan = stats_of(cli("extract", "--dry-run", "--json", *args))
    assert not out.exists()
    assert listing(tmp_path) == before

    out.write_bytes(b"previous version")
    st = out.stat()
    assert stats_of(cli("extract", "--dry-run", "--json", *args)) == plan
    assert out.read_bytes() == b"previous version"
    assert (out.stat().st_ino, out.stat().st_mtime_ns) == (st.st_ino, st.st_mtime_ns)

    segments = plan.pop("segments")
    ends = [s["offset"] + s["length"] for s in segments]
    assert [s["offset"] for s in segments] == [0, *ends[:-1]]  # they tile the target
    assert sum(s["length"] for s in segments) == plan["bytes-total"] == v.new.length

    stats = stats_of(cli("extract", "--print-stats", *args))
    assert out.read_bytes() == v.data2
    assert stats["plan"] == plan
    assert stats["chunks-from-store"] == plan["sources"]["store"]["chunks"]
    assert stats["bytes-from-store"] == plan["sources"]["store"]["bytes"]
    assert stats["chunks-from-seeds"] == plan["sources"]["seed"]["chunks"]


def test_dry_run_needs_no_store_and_prints_a_readable_plan(cli, tmp_path, v):
    r = cli("extract", "--dry-run", "--seed", v.index1, v.index2, tmp_path / "out")
    assert r.code == 0, r.err
    lines = {line.split()[0] + " " + line.split()[1]: line for line in r.out.splitlines()}
    assert f" {v.from_seed()} chunks" in lines["from seeds"]
    assert f" {v.missing()[1]} bytes" in lines["from stores"]
    assert f"{v.index1}: {v.from_seed()} chunks" in r.out
    assert not (tmp_path / "out").exists()


def test_dry_run_in_place_counts_what_the_target_already_holds(cli, tmp_path, v):
    out = tmp_path / "out"
    shutil.copy(v.v1, out)
    plan = stats_of(cli("extract", "--dry-run", "--json", "-k", v.index2, out))
    assert out.read_bytes() == v.data1
    in_place = plan["sources"]["in-place"]["chunks"]
    assert in_place == v.from_seed()  # v2 only rewrote blocks in place: nothing moved
    stats = stats_of(cli("extract", "--print-stats", "-k", "-s", v.store, v.index2, out))
    assert stats["chunks-in-place"] == in_place
    assert stats["plan"] == {k: val for k, val in plan.items() if k != "segments"}
    assert out.read_bytes() == v.data2


# --- the real casync ------------------------------------------------------------------------------


def casync_run(casync: str, *argv: object) -> None:
    done = subprocess.run([casync, *map(str, argv)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def test_casync_made_store_and_seed_index(cli, casync, tmp_path):
    """Store, target index and seed index all by ``casync make``; the store lacks
    every chunk the seed holds, so both tools must take them from the seed."""
    v = make_versions(cli, tmp_path / "ours")  # only for its v1 / v2 files
    cs = "--chunk-size=4096:16384:65536"
    store = tmp_path / "cstore"
    casync_run(casync, "make", f"--store={store}", cs, tmp_path / "v2.caibx", v.v2)
    casync_run(casync, "make", f"--store={tmp_path / 'other'}", cs, tmp_path / "v1.caibx", v.v1)
    assert (tmp_path / "v2.caibx").read_bytes() == v.index2.read_bytes()
    for id in v.shared_ids():
        chunk_path(store, id).unlink()

    out = tmp_path / "ours.out"
    seed = f"{tmp_path / 'v1.caibx'}:{v.v1}"
    stats = stats_of(
        cli("extract", "--print-stats", "-s", store, "--seed", seed, tmp_path / "v2.caibx", out)
    )
    assert out.read_bytes() == v.data2
    assert stats["bytes-from-store"] == v.missing()[1]

    theirs = tmp_path / "casync.out"
    casync_run(
        casync, "extract", f"--store={store}", f"--seed={v.v1}", tmp_path / "v2.caibx", theirs
    )
    assert theirs.read_bytes() == out.read_bytes()


# --- bad input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("arg", ["foo", "v1.cai", ":blob", "index:", ""])
def test_a_seed_in_no_known_form_is_one_clear_error(cli, tmp_path, v, arg):
    line = error_line(cli("extract", "-s", v.store, "--seed", arg, v.index2, tmp_path / "out"))
    assert f"seed {arg!r}" in line and "INDEX:BLOB" in line
    assert not (tmp_path / "out").exists()


def test_a_third_field_in_a_seed_is_ignored_with_a_warning(cli, tmp_path, v):
    """desync splits INDEX:BLOB on ':' and warns about (then ignores) a third field."""
    out = tmp_path / "out"
    r = cli("extract", "-s", v.store, "--seed", f"{v.index1}:{v.v1}:extra", v.index2, out)
    assert r.code == 0, r.err
    assert out.read_bytes() == v.data2
    assert "extra" in r.err and "error" not in r.err, r.err


def test_in_place_with_the_target_as_its_own_seed_is_refused(cli, tmp_path, v):
    out = tmp_path / "out"
    shutil.copy(v.v1, out)
    shutil.copy(v.index1, tmp_path / "out.caibx")
    for seed in (["--seed", tmp_path / "out.caibx"], ["--seed-file", out]):
        line = error_line(cli("extract", "-k", "-s", v.store, *seed, v.index2, out))
        assert "target itself" in line
        assert out.read_bytes() == v.data1
    # without --in-place the old target is a fine seed: the output is a new file
    stats = stats_of(
        cli("extract", "--print-stats", "-s", v.store, "--seed-file", out, v.index2, out)
    )
    assert out.read_bytes() == v.data2
    assert stats["chunks-from-seeds"] == v.from_seed()


def test_a_missing_seed_index_or_dir_is_one_clear_error(cli, tmp_path, v):
    out = tmp_path / "out"
    for seed in (["--seed", tmp_path / "nope.caibx"], ["--seed-dir", tmp_path / "nodir"]):
        line = error_line(cli("extract", "-s", v.store, *seed, v.index2, out))
        assert "nope.caibx" in line or "nodir" in line
    empty = tmp_path / "empty.caibx"
    empty.write_bytes(b"")
    assert "empty" in error_line(cli("extract", "-s", v.store, "--seed", empty, v.index2, out))
    assert not out.exists()


def test_skip_and_regenerate_cannot_be_combined(cli, tmp_path, v, capsys):
    r = cli(
        "extract",
        "--skip-invalid-seeds",
        "--regenerate-invalid-seeds",
        "-s",
        v.store,
        v.index2,
        tmp_path / "out",
    )
    assert r.code == 1
    usage = capsys.readouterr().err  # argparse writes usage errors to sys.stderr itself
    assert usage.count("\n") == 1 and "not allowed with" in usage, usage
    assert not (tmp_path / "out").exists()


def test_stats_json_keys_follow_desync(cli, tmp_path, v):
    r = cli("extract", "--print-stats", "-s", v.store, "--seed", v.index1, v.index2, tmp_path / "o")
    stats = stats_of(r)
    desync_keys = [
        "chunks-from-seeds",
        "chunks-from-store",
        "chunks-in-place",
        "bytes-copied-from-seeds",
        "bytes-cloned-from-seeds",
        "blocksize",
        "bytes-total",
        "chunks-total",
        "seeds",
    ]
    missing = [k for k in desync_keys if k not in stats]
    assert not missing, f"--print-stats lacks desync's keys {missing}"
    assert stats["blocksize"] == os.stat(tmp_path / "o").st_blksize
