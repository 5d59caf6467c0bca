"""Ports of desync's ``cmd/desync/extract_test.go``: ``extract`` on desync's fixtures.

Each case runs our ``extract`` verb with desync's arguments, from the directory that
holds desync's ``testdata/`` (so ``--seed-dir testdata`` finds what desync's finds),
and asserts what desync's test asserts: the output is ``blob1`` byte for byte, or the
command fails.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests import servers_http
from tests.servers_http import Step

scripted = servers_http.scripted

BLOB1_CAIBX = "testdata/blob1.caibx"  # the index every case extracts

# TestExtractCommand: (sub-case, desync's arguments before the output, the output).
# Outputs: "new" (absent), "other" (4 other bytes), "complete" (already blob1).
EXTRACT_CASES = [
    ("extract to new file", "--store testdata/blob1.store testdata/blob1.caibx", "new"),
    (
        "extract to exiting file with overwrite",
        "--store testdata/blob1.store testdata/blob1.caibx",
        "other",
    ),
    (
        "extract to exiting file without overwrite",
        "--in-place --store {out_dir} testdata/blob1.caibx",
        "complete",
    ),
    (
        "extract with single seed",
        "--store testdata/blob1.store --seed testdata/blob2.caibx testdata/blob1.caibx",
        "new",
    ),
    (
        "extract with multi seed",
        (
            "-s testdata/blob1.store --seed testdata/blob2.caibx --seed testdata/blob1.caibx "
            "testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with seed directory",
        "-s testdata/blob1.store --seed-dir testdata --skip-invalid-seeds testdata/blob1.caibx",
        "new",
    ),
    (
        "extract with single seed and explicit data directory",
        (
            "--store testdata/blob1.store --seed testdata/blob2_without_data.caibx:testdata/blob2 "
            "testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with single seed, explicit data directory and unexpected seed options",
        (
            "--store testdata/blob1.store --seed "
            "testdata/blob2_without_data.caibx:testdata/blob2:reserved_options "
            "testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with multi seed and explicit data directories",
        (
            "-s testdata/blob1.store --seed testdata/blob2_without_data.caibx:testdata/blob2 "
            "--seed testdata/blob1_without_data.caibx:testdata/blob1 testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with multi seed and one explicit data directory",
        (
            "-s testdata/blob1.store --seed testdata/blob2_without_data.caibx:testdata/blob2 "
            "--seed testdata/blob1.caibx testdata/blob1.caibx"
        ),
        "new",
    ),
    ("extract with cache", "-s testdata/blob1.store -c {cache} testdata/blob1.caibx", "new"),
    (
        "extract with multiple stores",
        "-s testdata/blob2.store -s testdata/blob1.store testdata/blob1.caibx",
        "new",
    ),
    (
        "extract with multiple stores and cache",
        "-n 1 -s testdata/blob2.store -s testdata/blob1.store --cache {cache} testdata/blob1.caibx",
        "new",
    ),
    (
        "extract with corrupted seed",
        (
            "--store testdata/blob1.store --seed testdata/blob2_corrupted.caibx "
            "--skip-invalid-seeds testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with multiple corrupted seeds (skipping invalid seeds)",
        (
            "--store testdata/empty.store --seed testdata/blob2_corrupted.caibx --seed "
            "testdata/blob1.caibx --skip-invalid-seeds testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with seed directory without skipping invalid seeds",
        (
            "-s testdata/blob1.store --seed-dir testdata --seed testdata/blob1.caibx "
            "testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with multiple corrupted seeds",
        (
            "--store testdata/empty.store --seed testdata/blob2_corrupted.caibx --seed "
            "testdata/blob1.caibx testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with single seed that has all the expected chunks",
        "--store testdata/empty.store --seed testdata/blob1.caibx testdata/blob1.caibx",
        "new",
    ),
    (
        "extract while regenerating the corrupted seed",
        (
            "--store testdata/blob1.store --seed testdata/blob2_corrupted.caibx "
            "--regenerate-invalid-seeds testdata/blob1.caibx"
        ),
        "new",
    ),
    (
        "extract with corrupted seed and empty store",
        (
            "--store testdata/empty.store --seed testdata/blob1_corrupted_index.caibx "
            "--regenerate-invalid-seeds testdata/blob1.caibx"
        ),
        "new",
    ),
]

# TestExtractWithInvalidSeeds: each must fail.
FAILING_CASES = [
    (
        "extract with corrupted seed",
        "--store testdata/blob1.store --seed testdata/blob2_corrupted.caibx testdata/blob1.caibx",
    ),
    (
        "extract with missing seed",
        "--store testdata/blob1.store --seed testdata/blob_missing testdata/blob1.caibx",
    ),
    (
        "extract with missing seed data",
        (
            "--store testdata/blob1.store --seed testdata/blob2_without_data.caibx "
            "testdata/blob1.caibx"
        ),
    ),
    (
        "extract with multiple corrupted seeds",
        (
            "--store testdata/empty.store --seed testdata/blob2_corrupted.caibx --seed "
            "testdata/blob1.caibx testdata/blob2.caibx"
        ),
    ),
    (
        "extract with corrupted blob1 seed and a valid seed",
        (
            "--store testdata/blob2.store --seed testdata/blob1_corrupted_index.caibx --seed "
            "testdata/blob1.caibx testdata/blob2.caibx"
        ),
    ),
    (
        "extract with corrupted blob1 seed",
        (
            "--store testdata/blob2.store --seed testdata/blob1_corrupted_index.caibx "
            "testdata/blob2.caibx"
        ),
    ),
    (
        "extract with both --regenerate-invalid-seed and --skip-invalid-seeds",
        (
            "--store testdata/blob1.store --seed testdata/blob1_corrupted_index.caibx "
            "--regenerate-invalid-seeds --skip-invalid-seeds testdata/blob1.caibx"
        ),
    ),
]


@pytest.fixture
def in_upstream(cli, cmd_data: Path) -> Callable[..., object]:
    """``cli`` run from the directory holding desync's ``testdata/``, as desync's tests run."""
    return lambda *argv: cli(*argv, cwd=cmd_data.parent)


@pytest.mark.parametrize(
    ("args", "output"), [c[1:] for c in EXTRACT_CASES], ids=[c[0] for c in EXTRACT_CASES]
)
def test_extract_command(in_upstream, cmd_data, tmp_path, args, output):
    """TestExtractCommand: every sub-case writes blob1 exactly."""
    expected = (cmd_data / "blob1").read_bytes()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    cache = tmp_path / "cache"
    cache.mkdir()
    out = out_dir / "out"
    if output == "other":
        out.write_bytes(bytes([0, 1, 2, 3]))
    elif output == "complete":
        out.write_bytes(expected)
    argv = args.format(out_dir=out_dir, cache=cache).split()
    r = in_upstream("extract", *argv, out)
    assert r.code == 0, r.err
    assert out.read_bytes() == expected


def test_extract_with_failover(in_upstream, scripted, tmp_path):
    """TestExtractWithFailover: the first member of a failover group answers every
    request with a 500; the group falls over to the local store and succeeds."""
    failing = scripted(Step(500, b"failed"))
    out = tmp_path / "out"
    r = in_upstream("extract", "--store", f"{failing.url}|testdata/blob1.store", BLOB1_CAIBX, out)
    assert r.code == 0, r.err
    assert failing.requests, "the failing member was never asked"


@pytest.mark.parametrize("args", [c[1] for c in FAILING_CASES], ids=[c[0] for c in FAILING_CASES])
def test_extract_with_invalid_seeds(in_upstream, capsys, tmp_path, args):
    """TestExtractWithInvalidSeeds: every sub-case fails, saying why (argparse says it
    on stderr for the refused pair of flags), and leaves no output."""
    out = tmp_path / "out"
    r = in_upstream("extract", *args.split(), out)
    assert r.code != 0
    assert (r.err + capsys.readouterr().err).strip()
    assert not out.exists()


# --- issue 15's failures in extract, each with its own test ----------------------------------


def stats_of(r) -> dict:
    assert r.code == 0, r.err
    return json.loads(r.out)


def test_a_regenerated_seed_supplies_what_the_store_lacks(in_upstream, cmd_data, tmp_path):
    """blob1_corrupted_index.caibx lies about blob1; the store is empty. The chunk
    the store lacks must not end the run before the seed is found invalid and
    re-indexed: then every chunk comes from the regenerated seed (desync validates
    the plan's seeds before it fetches anything)."""
    out = tmp_path / "out"
    r = in_upstream(
        "extract",
        "--print-stats",
        "--store",
        "testdata/empty.store",
        "--seed",
        "testdata/blob1_corrupted_index.caibx",
        "--regenerate-invalid-seeds",
        BLOB1_CAIBX,
        out,
    )
    stats = stats_of(r)
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()
    assert stats["chunks-from-store"] == 0
    assert stats["chunks-from-seeds"] == stats["chunks-total"] == 161
    assert stats["attempts"] == 2
    assert [p.split(" doesn't")[0] for p in stats["seed-problems"]] == [
        "seed index for testdata/blob1_corrupted_index.caibx"
    ]


def test_an_invalid_seed_is_the_error_not_the_chunk_the_store_lacks(in_upstream, tmp_path):
    """Without --regenerate/--skip, the same run fails naming the seed (what desync's
    check of the seeds reports), not a chunk missing from the empty store."""
    out = tmp_path / "out"
    r = in_upstream(
        "extract",
        "--store",
        "testdata/empty.store",
        "--seed",
        "testdata/blob1_corrupted_index.caibx",
        BLOB1_CAIBX,
        out,
    )
    assert r.code == 1
    assert r.err.startswith(
        "desync-decl: error: seed index for testdata/blob1_corrupted_index.caibx doesn't match"
    ), r.err
    assert len(r.err.splitlines()) == 1
    assert not out.exists()


def test_print_stats_counts_self_seed_copies_as_seed_bytes(cli, tmp_path):
    """desync's self seed is a seed: a chunk written again from where it already is
    in the target counts in bytes-copied/cloned-from-seeds (and in neither chunk
    count). A new target, so no null run is written."""
    data = random.Random(15).randbytes(300_000)
    (tmp_path / "blob").write_bytes(data + data + data)
    store, index = tmp_path / "store", tmp_path / "blob.caibx"
    assert cli("make", "-m", "4:16:64", "-s", store, index, tmp_path / "blob").code == 0
    out = tmp_path / "out"
    stats = stats_of(cli("extract", "--print-stats", "-s", store, index, out))
    assert out.read_bytes() == data * 3
    sources = stats["plan"]["sources"]
    assert sources["self"]["bytes"] > 500_000
    copied = stats["bytes-copied-from-seeds"] + stats["bytes-cloned-from-seeds"]
    assert copied == sources["self"]["bytes"]
    assert stats["chunks-from-store"] == sources["store"]["chunks"]
    assert stats["chunks-from-seeds"] == 0
    assert stats["seeds"] == 1  # the null seed only


def test_print_stats_counts_nulls_written_over_old_data(in_upstream, cmd_data, tmp_path):
    """In place over a file of other bytes, blob1's 31 null chunks are written as
    zeros by the null seed: desync counts them as copied from seeds. On a new
    target they are left as holes and count nothing."""
    out = tmp_path / "out"
    out.write_bytes(b"\xff" * 2_097_152)
    argv = ["extract", "--print-stats", "-s", "testdata/blob1.store", BLOB1_CAIBX, out]
    stats = stats_of(in_upstream(argv[0], "--in-place", *argv[1:]))
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()
    nulls = stats["plan"]["sources"]["null"]
    assert stats["chunks-from-seeds"] == nulls["chunks"] == 31
    assert stats["bytes-copied-from-seeds"] + stats["bytes-cloned-from-seeds"] == nulls["bytes"]
    fresh = stats_of(in_upstream(*argv[:-1], tmp_path / "new"))
    assert fresh["bytes-copied-from-seeds"] == fresh["bytes-cloned-from-seeds"] == 0


def test_print_stats_seeds_counts_every_seed_given_and_the_null_seed(in_upstream, tmp_path):
    """desync counts its null seed and every seed it was given, also one dropped
    later as invalid (it counts before checking them)."""
    r = in_upstream(
        "extract",
        "--print-stats",
        "-s",
        "testdata/blob1.store",
        "--seed",
        "testdata/blob2_corrupted.caibx",
        "--seed",
        "testdata/blob2.caibx",
        "--skip-invalid-seeds",
        BLOB1_CAIBX,
        tmp_path / "out",
    )
    stats = stats_of(r)
    assert stats["seeds"] == 3
    assert len(stats["seed-problems"]) == 1
    assert [s["name"] for s in stats["plan"]["seeds"]] == ["testdata/blob2.caibx"]
