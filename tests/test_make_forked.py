"""``make`` into a local store from a regular file hashes and stores on forked workers
(``ops.make._forked``): the same index, the same chunk files and the same counts as on
threads, holes still done without reading them, and a failing worker is one clear error
with no index published.

Forking needs a process without other threads, which a test process cannot promise
(session servers run on threads in it): the forked make runs in a fresh interpreter,
which counts its forks."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore

SIZES = "4:16:64"

FORKED_MAKE = """
import os, sys
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore

forks = []
os.register_at_fork(after_in_parent=lambda: forks.append(1))
source, store_dir, index_file, sizes = sys.argv[1:]
made = make(source, sizes=ChunkSizes.parse(sizes), store=LocalStore(store_dir, create=True),
            concurrency=2)
with open(index_file, "wb") as f:
    f.write(made.index.encode())
print(len(forks), made.chunks_total, made.chunks_stored, made.bytes_stored)
"""


def _source(tmp_path: Path) -> Path:
    """Random data, a repeat of some of it, and a hole of many zero chunks."""
    rng = random.Random(11)
    data = rng.randbytes(2_000_000)
    source = tmp_path / "src"
    with source.open("wb") as f:
        f.write(data + data[:300_000])
        f.seek(3_000_000, os.SEEK_CUR)  # a hole: zero chunks, never read
        f.write(rng.randbytes(500_000))
    return source


def _files(store: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in store.rglob("*.cacnk")}


def _forked_make(source: Path, store: Path, index: Path, sizes: str) -> tuple[int, ...]:
    """``FORKED_MAKE`` in a fresh interpreter: forks, chunks, stored, bytes stored."""
    done = subprocess.run(
        [sys.executable, "-c", FORKED_MAKE, source, store, index, sizes],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return tuple(map(int, done.stdout.split()))


def test_a_forked_make_stores_and_indexes_what_threads_do(tmp_path):
    source = _source(tmp_path)
    forks, total, stored, stored_bytes = _forked_make(
        source, tmp_path / "forked", tmp_path / "f.caibx", SIZES
    )
    assert forks == 2  # one worker process per core asked for

    threaded = make(
        source, sizes=ChunkSizes.parse(SIZES), store=LocalStore(tmp_path / "threads", create=True)
    )
    assert (tmp_path / "f.caibx").read_bytes() == threaded.index.encode()
    assert (total, stored, stored_bytes) == (
        threaded.chunks_total,
        threaded.chunks_stored,
        threaded.bytes_stored,
    )
    assert stored < total  # the repeat and the hole's zero chunks were found, not stored again
    assert _files(tmp_path / "forked") == _files(tmp_path / "threads")


def test_a_chunk_both_workers_wrote_is_counted_once(tmp_path):
    """One block repeated back to back: its chunks come to both workers at once, and
    each may find a chunk missing that the other is writing. The store ends with each
    chunk once, and the counts say so. Five makes, as the race is not certain in one."""
    source = tmp_path / "rep.bin"
    source.write_bytes(random.Random(9).randbytes(300_000) * 40)
    for run in range(5):
        store = tmp_path / f"store{run}"
        forks, total, stored, stored_bytes = _forked_make(
            source, store, tmp_path / f"{run}.caibx", "16:64:256"
        )
        assert forks == 2
        files = _files(store)
        assert (stored, stored_bytes) == (len(files), sum(map(len, files.values())))
        assert total > stored


def test_a_worker_that_cannot_store_fails_the_make_and_no_index_is_published(tmp_path):
    source = _source(tmp_path)
    probe = make(source, sizes=ChunkSizes.parse(SIZES))
    store = tmp_path / "store"
    store.mkdir()
    blocked = probe.index.id(len(probe.index) - 1).hex()[:4]  # the last chunk's prefix
    (store / blocked).write_bytes(b"a file where a prefix directory belongs")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "desync_decl",
            "make",
            "-m",
            SIZES.replace(":", "k:") + "k",
            "-s",
            store,
            tmp_path / "out.caibx",
            source,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert blocked in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (tmp_path / "out.caibx").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.caibx")]
