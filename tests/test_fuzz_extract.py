"""Hostile data reaching extract: a chunk whose bytes do not hash to its id never
lands in a target (new or updated in place, from a local store or through a
chunk-server that does not verify), and a tiny index claiming a terabyte
allocates nothing for it."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings

from desync_decl.formats import chunkfile
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk import MAX_PLAIN_SIZE
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.server.chunks import ChunkService
from desync_decl.stores.local import LocalStore
from desync_decl.stores.swap import StoreStack
from reliability.fuzz import mutate
from tests import servers_http

serve = servers_http.serve  # the fixture
BLOB = random.Random(3).randbytes(400_000)


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, Path, Index]:
    """A blob's index and a store holding its chunks (made once, copied per test)."""
    root = tmp_path_factory.mktemp("published")
    (root / "blob").write_bytes(BLOB)
    run = subprocess.run(
        [sys.executable, "-m", "desync_decl", "make", "-s", root / "store", "-m", "16K:32K:64K",
         root / "blob.caibx", root / "blob"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    index = index_format.decode((root / "blob.caibx").read_bytes())
    assert len(index) >= 5
    return root / "blob.caibx", root / "store", index


def chunk_file(store: Path, id: bytes) -> Path:
    h = id.hex()
    return store / h[:4] / f"{h}.cacnk"


def corruptions(index: Index) -> dict[str, object]:
    """Ways the stored file of chunk 2 can be wrong: each is (stored bytes, plain or None)."""
    victim, other = index.chunk(2), index.chunk(3)
    same_length = bytes(b ^ 0x55 for b in BLOB[victim.start : victim.end])
    flipped = bytearray(chunkfile.compress(BLOB[victim.start : victim.end]))
    flipped[len(flipped) // 2] ^= 1
    return {
        "another chunk's file": BLOB[other.start : other.end],
        "right length, wrong bytes": same_length,
        "one bit flipped in the frame": bytes(flipped),
    }


def plant(store: Path, index: Index, stored: bytes, compress: bool) -> None:
    path = chunk_file(store, index.id(2))
    path.chmod(0o644)
    path.write_bytes(chunkfile.compress(stored) if compress else stored)


def bad_range(index: Index, target: Path, planted: bytes) -> bool:
    """Whether the target holds the planted bytes where chunk 2 belongs."""
    c = index.chunk(2)
    with open(target, "rb") as f:
        f.seek(c.start)
        return f.read(len(planted)) == planted[: c.size]


def copy_store(store: Path, to: Path) -> Path:
    subprocess.run(["cp", "-r", str(store), str(to)], check=True)
    return to


@pytest.mark.parametrize(
    "kind", ["another chunk's file", "right length, wrong bytes", "one bit flipped in the frame"]
)
@pytest.mark.parametrize("through", ["local store", "chunk-server"])
@pytest.mark.parametrize("in_place", [False, True], ids=["new target", "in place"])
def test_a_chunk_that_does_not_hash_to_its_id_is_never_written(
    published, tmp_path, cli, serve, kind, through, in_place
):
    index_path, store, index = published
    store = copy_store(store, tmp_path / "store")
    stored = corruptions(index)[kind]
    plant(store, index, stored, compress=kind != "one bit flipped in the frame")
    location = str(store)
    if through == "chunk-server":  # serving without verifying, as chunk-server does by default
        service = ChunkService(StoreStack(LocalStore(store, skip_verify=True)))
        location = serve(service).url
    target = tmp_path / "out"
    old = bytes(len(BLOB))
    if in_place:
        target.write_bytes(old)
    r = cli("extract", "-e", "1", *(["-k"] if in_place else []), "-s", location, index_path, target)
    assert r.code == 1 and "invalid" in r.err and index.id(2).hex() in r.err, r.err
    assert r.err.count("\n") == 1  # one line, no traceback
    if not in_place:
        assert not target.exists()
        assert sorted(p.name for p in tmp_path.iterdir()) == ["store"]  # no temp file left
    else:
        assert kind == "one bit flipped in the frame" or not bad_range(index, target, stored)
        c = index.chunk(2)
        assert target.read_bytes()[c.start : c.end] == old[c.start : c.end]


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)
@given(mutate.strategy(3))
def test_a_mutated_chunk_file_either_extracts_the_right_bytes_or_fails(
    published, tmp_path_factory, cli, ops
):
    index_path, store, index = published
    root = tmp_path_factory.mktemp("mutated")
    store = copy_store(store, root / "store")
    path = chunk_file(store, index.id(2))
    path.chmod(0o644)
    path.write_bytes(mutate.apply(path.read_bytes(), ops))
    r = cli("extract", "-e", "1", "-s", store, index_path, root / "out")
    if r.code == 0:  # the mutation left the same bytes (e.g. flipped a bit twice)
        assert (root / "out").read_bytes() == BLOB
    else:
        assert r.code == 1 and r.err.count("\n") == 1 and not (root / "out").exists(), r.err


def test_a_tiny_index_claiming_a_terabyte_allocates_nothing_for_it(tmp_path):
    """8192 entries of 128 MiB each: a 320 KiB index for 1 TiB of chunks no store has."""
    rng = random.Random(4)
    sizes = ChunkSizes(MAX_PLAIN_SIZE // 4, MAX_PLAIN_SIZE // 2, MAX_PLAIN_SIZE)
    entries = [(MAX_PLAIN_SIZE, rng.randbytes(32)) for _ in range(8192)]
    index = Index.from_chunks(blob_flags(Digest.SHA512_256), sizes, entries)
    (tmp_path / "huge.caibx").write_bytes(index.encode())
    (tmp_path / "store").mkdir()
    code = f"""
import tracemalloc
tracemalloc.start()
from desync_decl.cli.main import main
code = main(["extract", "-s", {str(tmp_path / "store")!r}, {str(tmp_path / "huge.caibx")!r},
             {str(tmp_path / "out")!r}])
print(code, tracemalloc.get_traced_memory()[1] >> 20)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    status, peak_mib = map(int, run.stdout.split())
    assert status == 1 and run.stderr.count("\n") == 1, run.stderr
    assert "missing" in run.stderr or "no space left" in run.stderr.lower(), run.stderr
    # the plan hashed 128 MiB of zeros for the null chunk's id: it allocated them all
    assert peak_mib < 32, f"{peak_mib} MiB allocated ({run.stderr})"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["huge.caibx", "store"]
