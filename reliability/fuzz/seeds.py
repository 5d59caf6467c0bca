"""Seed inputs for the fuzz targets: real casync vectors and our own outputs.

The vectors are casync's, committed under ``tests/vectors`` (the format tests
compare with them too). Everything is small: seeds are mutated, not read whole
into a corpus of megabytes.
"""

from __future__ import annotations

import gzip
import lzma
import random
from pathlib import Path

import zstandard

from desync_decl.formats import chunkfile
from desync_decl.formats.catar import encode
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from tests.vectors import VECTORS

ROOT = Path(__file__).resolve().parents[2]
MAX_SEED = 64 * 1024  # larger vector files are cut: the head holds the structure


def _files(pattern: str, limit: int = 40) -> list[bytes]:
    found = sorted(VECTORS.glob(pattern))[:limit]
    return [p.read_bytes()[:MAX_SEED] for p in found]


def index_seeds() -> list[bytes]:
    rng = random.Random(1)
    own = Index.from_chunks(
        blob_flags(Digest.SHA256),
        ChunkSizes(16, 64, 256),
        [(rng.randrange(16, 257), rng.randbytes(32)) for _ in range(5)],
    )
    empty = Index.from_chunks(blob_flags(Digest.SHA512_256), ChunkSizes(64, 256, 1024), [])
    return [own.encode(), empty.encode(), *_files("*/*/index.caibx"), *_files("*/*/*.caidx")]


def chunk_seeds() -> list[bytes]:
    rng = random.Random(2)
    plain = [b"", b"x", rng.randbytes(3000), bytes(5000), b"abc" * 2000]
    own = [chunkfile.compress(p) for p in plain]
    own += [zstandard.ZstdCompressor(write_checksum=True).compress(p) for p in plain[1:3]]
    own += [chunkfile.compress(plain[2]) + chunkfile.compress(plain[4])]  # two frames
    own += [lzma.compress(plain[4]), gzip.compress(plain[4])]
    return own + _files("blob/*/store/*/*", limit=30)


def catar_seeds() -> list[bytes]:
    from tests.hostile_archives import MemNode  # an in-memory tree for the encoder

    tree = MemNode.dir(
        children={
            b"a": MemNode.file(b"hello"),
            b"d": MemNode.dir(children={b"f": MemNode.file(b"x" * 300, mode=0o600)}),
            b"l": MemNode.symlink(b"a"),
            b"n": MemNode.device(0x0103),
        }
    )
    own = b"".join(bytes(piece) for piece in encode(tree))
    found = sorted(VECTORS.glob("tree/*/archive.catar"))[:3]
    return [own, *(p.read_bytes() for p in found)]  # whole: a cut archive is only truncated


def manifest_seeds() -> list[bytes]:
    own = [
        b"version: 1\nstores: {s: {url: store}}\ntasks:\n"
        b"- {name: x, extract: {index: a.caibx, path: out, stores: [s]}}\n",
        b"version: 1\ndefaults: &d {concurrency: ${env:JOBS}}\nstores:\n"
        b"  s: {url: store, options: {http_auth: 'Bearer ${env:TOKEN}'}}\n"
        b"tasks:\n- name: m\n  make: {source: a, index: a.caibx, store: s}\n",
    ]
    found = sorted((ROOT / "manifests").glob("*.yaml"))
    return own + [p.read_bytes() for p in found]


SEEDS = {
    "index": index_seeds,
    "chunk": chunk_seeds,
    "encrypted_chunk": chunk_seeds,
    "catar": catar_seeds,
    "manifest": manifest_seeds,
}
