"""Ports of desync's ``cmd/desync/info_test.go`` and ``inspectchunks_test.go``:
``info`` and ``inspect-chunks`` on desync's fixtures, from the directory holding its
``testdata/`` as desync's tests run.

desync's info test compares the whole decoded JSON object (every key, no more); we
also check that the keys come in desync's order.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

COMMON = {"total": 161, "unique": 131, "in-store": 131, "size": 2097152}
SIZES = {"chunk-size-min": 2048, "chunk-size-avg": 8192, "chunk-size-max": 32768}
DESYNC_KEYS = [
    "total",
    "unique",
    "in-store",
    "in-seed",
    "in-cache",
    "not-in-seed-nor-cache",
    "size",
    "dedup-size-not-in-seed",
    "dedup-size-not-in-seed-nor-cache",
    "dedup-size-not-in-seed-nor-cache-compressed",
    "chunk-size-min",
    "chunk-size-avg",
    "chunk-size-max",
]


def expected(
    in_seed: int,
    in_cache: int,
    missing: int,
    not_in_seed: int,
    not_in_either: int,
    compressed: int,
) -> dict[str, int]:
    """One of desync's expected outputs, in desync's key order."""
    values = {
        **COMMON,
        "in-seed": in_seed,
        "in-cache": in_cache,
        "not-in-seed-nor-cache": missing,
        "dedup-size-not-in-seed": not_in_seed,
        "dedup-size-not-in-seed-nor-cache": not_in_either,
        "dedup-size-not-in-seed-nor-cache-compressed": compressed,
        **SIZES,
    }
    return {k: values[k] for k in DESYNC_KEYS}


# TestInfoCommand: (sub-case, arguments, desync's expected JSON)
INFO_CASES = [
    (
        "info command with store",
        ["-s", "testdata/blob1.store", "testdata/blob1.caibx"],
        expected(0, 0, 131, 1114112, 1114112, 0),
    ),
    (
        "info command with seed",
        ["-s", "testdata/blob1.store", "--seed", "testdata/blob2.caibx", "testdata/blob1.caibx"],
        expected(124, 0, 7, 80029, 80029, 0),
    ),
    (
        "info command with seed and cache",
        [
            "-s",
            "testdata/blob2.store",
            "--seed",
            "testdata/blob1.caibx",
            "--cache",
            "testdata/blob2.cache",
            "--chunks-info",
            "testdata/blob2_chunks_info.json",
            "testdata/blob2.caibx",
        ],
        expected(124, 25, 7, 80029, 80029, 76000),
    ),
    (
        "info command with cache",
        [
            "-s",
            "testdata/blob2.store",
            "--cache",
            "testdata/blob2.cache",
            "--chunks-info",
            "testdata/blob2_chunks_info.json",
            "testdata/blob2.caibx",
        ],
        expected(0, 25, 106, 1114112, 853943, 818145),
    ),
    (
        "info command with chunks info that doesn't have the compressed size for all chunk",
        [
            "-s",
            "testdata/blob2.store",
            "--chunks-info",
            "testdata/blob2_chunks_info_missing.json",
            "testdata/blob2.caibx",
        ],
        expected(0, 0, 131, 1114112, 1114112, 0),
    ),
]

# TestInspectChunksCommand: (sub-case, arguments, the JSON file desync expects)
INSPECT_CASES = [
    (
        "inspect the chunks info with a local store",
        ["-s", "testdata/blob2.store", "testdata/blob2.caibx"],
        "blob2_chunks_info.json",
    ),
    (
        "run inspect with a seed that doesn't have all the compressed chunks",
        ["-s", "testdata/blob2.cache", "testdata/blob2.caibx"],
        "blob2_chunks_info_missing.json",
    ),
    (
        "inspect the chunks info without any stores",
        ["testdata/blob2.caibx"],
        "blob2_chunks_info_no_store.json",
    ),
]


@pytest.fixture
def in_upstream(cli, cmd_data: Path) -> Callable[..., object]:
    """``cli`` run from the directory holding desync's ``testdata/``."""
    return lambda *argv: cli(*argv, cwd=cmd_data.parent)


@pytest.mark.parametrize(
    ("args", "want"), [c[1:] for c in INFO_CASES], ids=[c[0] for c in INFO_CASES]
)
def test_info_command(in_upstream, args, want):
    """TestInfoCommand: JSON by default, exactly desync's keys and numbers."""
    r = in_upstream("info", *args)
    assert r.code == 0, r.err
    got = json.loads(r.out)
    assert got == want
    assert list(got) == DESYNC_KEYS


@pytest.mark.parametrize(
    ("args", "file"), [c[1:] for c in INSPECT_CASES], ids=[c[0] for c in INSPECT_CASES]
)
def test_inspect_chunks_command(in_upstream, cmd_data, args, file):
    """TestInspectChunksCommand: the chunk list desync's fixture holds (a missing
    compressed_size is 0 to desync's decoder, so it is compared as such)."""
    r = in_upstream("inspect-chunks", *args)
    assert r.code == 0, r.err

    def decoded(rows: list[dict]) -> list[tuple[str, int, int]]:
        return [(r["id"], r["uncompressed_size"], r.get("compressed_size", 0)) for r in rows]

    want = json.loads((cmd_data / file).read_text())
    assert decoded(json.loads(r.out)) == decoded(want)


# --- issue 15: info's output formats and --chunks-info, beyond desync's cases ---------------


def test_plain_format_prints_desyncs_lines_in_its_order(in_upstream):
    """``-f plain``: desync's thirteen lines, in its order, then each store's counts."""
    r = in_upstream(
        "info",
        "-f",
        "plain",
        "-s",
        "testdata/blob1.store",
        "--seed",
        "testdata/blob2.caibx",
        "testdata/blob1.caibx",
    )
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[:13] == [
        "Blob size: 2097152",
        "Size of deduplicated chunks not in seed: 80029",
        "Size of deduplicated chunks not in seed nor cache: 80029",
        "Total chunks: 161",
        "Unique chunks: 131",
        "Chunks in store: 131",
        "Chunks in seed: 124",
        "Chunks in cache: 0",
        "Chunks not in seed nor cache: 7",
        "Compressed chunks not in seed nor cache: 0",
        "Chunk size min: 2048",
        "Chunk size avg: 8192",
        "Chunk size max: 32768",
    ]
    assert lines[13] == "  testdata/blob1.store: 131 present, 0 missing"
    assert "Extraction plan:" in lines


def test_json_flag_adds_ours_after_desyncs_keys(in_upstream):
    """``--json``: desync's keys first (same values), then the digests, flags, each
    store's counts and, with a seed, the plan."""
    argv = ["-s", "testdata/blob1.store", "--seed", "testdata/blob2.caibx", "testdata/blob1.caibx"]
    plain = json.loads(in_upstream("info", *argv).out)
    r = in_upstream("info", "--json", *argv)
    assert r.code == 0, r.err
    full = json.loads(r.out)
    assert list(full)[:13] == DESYNC_KEYS
    assert {k: full[k] for k in DESYNC_KEYS} == plain
    assert full["stores"] == [{"store": "testdata/blob1.store", "present": 131, "missing": 0}]
    assert full["digest"] == "sha512-256" and full["index-digest"].startswith("sha512-256:")
    assert full["plan"]["seeds"][0]["name"] == "testdata/blob2.caibx"


def test_chunks_info_with_another_size_for_a_chunk_is_an_error(in_upstream, cmd_data, tmp_path):
    """desync's check: a chunks-info file whose size of a chunk differs from the
    index's describes other data; one line naming the chunk, exit 1."""
    rows = json.loads((cmd_data / "blob2_chunks_info.json").read_text())
    rows[0]["uncompressed_size"] += 1
    bad = tmp_path / "info.json"
    bad.write_text(json.dumps(rows))
    r = in_upstream("info", "--chunks-info", bad, "testdata/blob2.caibx")
    assert r.code == 1
    assert r.err == (
        f"desync-decl: error: the chunks info file has an unexpected size for the chunk"
        f" {rows[0]['id']}: {rows[0]['uncompressed_size']} instead of"
        f" {rows[0]['uncompressed_size'] - 1}\n"
    )


@pytest.mark.parametrize(
    ("content", "why"),
    [
        ("[{", "1:3: Expecting property name"),
        ('{"id": 1}', "expected a JSON list of chunks"),
        ('[{"id": "zz", "uncompressed_size": 1}]', "entry 0: 'id' must be a chunk id"),
        ('[{"id": "' + "ab" * 32 + '", "uncompressed_size": -1}]', "'uncompressed_size' must"),
    ],
)
def test_a_bad_chunks_info_file_is_one_line_naming_it(in_upstream, tmp_path, content, why):
    bad = tmp_path / "info.json"
    bad.write_text(content)
    r = in_upstream("info", "--chunks-info", bad, "testdata/blob2.caibx")
    assert r.code == 1 and r.out == ""
    assert len(r.err.splitlines()) == 1
    assert f"chunks info {bad}" in r.err and why in r.err, r.err
