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
source, store_dir, index_file = sys.argv[1:]
made = make(source, sizes=ChunkSizes.parse("4:16:64"), store=LocalStore(store_dir, create=True),
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


def test_a_forked_make_stores_and_indexes_what_threads_do(tmp_path):
    source = _source(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", FORKED_MAKE, source, tmp_path / "forked", tmp_path / "f.caibx"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    forks, total, stored, stored_bytes = map(int, done.stdout.split())
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
