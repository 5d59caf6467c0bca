"""What the seeded-extraction tests share: two versions of a file, made into real
indexes and a real local store by the CLI, and the numbers a test expects,
computed from the indexes themselves (never from the code under test).

``v1`` is the old version a machine already has (the seed); ``v2`` is ``v1``
with a few 4 KiB blocks rewritten at block-aligned offsets (the update). The
store holds the chunks of ``v2`` only.
"""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.formats import index as index_format
from desync_decl.formats.index import Index
from tests.conftest import Result

SMALL = "4:16:64"  # KiB: 2 MiB make about 128 chunks
BLOCK = 4096
PREFIX = "desync-decl: error: "


@dataclass
class Versions:
    dir: Path
    v1: Path  # the seed's blob
    v2: Path  # the blob the store and v2.caibx describe
    index1: Path  # v1.caibx, beside v1
    index2: Path  # v2.caibx
    store: Path  # chunks of v2 only
    old: Index
    new: Index
    sizes: str

    @property
    def data1(self) -> bytes:
        return self.v1.read_bytes()

    @property
    def data2(self) -> bytes:
        return self.v2.read_bytes()

    def shared_ids(self) -> set[bytes]:
        """Chunks of v2 that v1 also holds (a seed can supply them)."""
        return self.new.unique_ids() & self.old.unique_ids()

    def missing(self) -> tuple[int, int]:
        """(chunks, bytes) of v2 that v1 lacks, each distinct chunk counted once:
        what an extraction seeded with v1 has to fetch from the store."""
        return fetched_from_store(self.new, self.old.unique_ids())

    def from_seed(self) -> int:
        """How many of v2's chunks (in order, repeats included) v1 holds."""
        shared = self.old.unique_ids()
        return sum(1 for c in self.new if c.id in shared)


def fetched_from_store(index: Index, available: set[bytes]) -> tuple[int, int]:
    seen: set[bytes] = set(available)
    chunks = size = 0
    for c in index:
        if c.id not in seen:
            seen.add(c.id)
            chunks += 1
            size += c.size
    return chunks, size


def changed(data: bytes, blocks: list[int], seed: int = 2) -> bytes:
    """``data`` with the 4 KiB blocks numbered ``blocks`` overwritten by random bytes."""
    rng = random.Random(seed)
    out = bytearray(data)
    for b in blocks:
        out[b * BLOCK : (b + 1) * BLOCK] = rng.randbytes(BLOCK)
    return bytes(out)


def make_index(
    cli, index: Path, blob: Path, sizes: str = SMALL, store: Path | None = None
) -> Index:
    args = ["-s", store] if store is not None else []
    r = cli("make", *args, "-m", sizes, index, blob)
    assert r.code == 0, r.err
    return index_format.decode(index.read_bytes())


def make_versions(
    cli,
    dir: Path,
    *,
    size: int = 2 << 20,
    blocks: tuple[int, ...] = (25, 200, 390),
    sizes: str = SMALL,
    store: Path | None = None,
) -> Versions:
    """v1 (random), v2 (v1 with ``blocks`` rewritten), their indexes, a store of v2."""
    dir.mkdir(parents=True, exist_ok=True)
    v1, v2 = dir / "v1", dir / "v2"
    data1 = random.Random(1).randbytes(size)
    v1.write_bytes(data1)
    v2.write_bytes(changed(data1, list(blocks)))
    store = store or dir / "store"
    new = make_index(cli, dir / "v2.caibx", v2, sizes, store=store)
    old = make_index(cli, dir / "v1.caibx", v1, sizes)
    versions = Versions(dir, v1, v2, dir / "v1.caibx", dir / "v2.caibx", store, old, new, sizes)
    chunks, _ = versions.missing()
    assert 0 < chunks < len(new) // 4, "v2 should differ from v1 in a few chunks only"
    return versions


def chunk_path(store: Path, id: bytes) -> Path:
    return store / id.hex()[:4] / f"{id.hex()}.cacnk"


def stats_of(result: Result) -> dict:
    """The ``--print-stats`` JSON of a run that must have succeeded."""
    assert result.code == 0, result.err
    assert "Traceback" not in result.err
    return json.loads(result.out)


def error_line(result: Result) -> str:
    """The one line a failed command prints (exit 1, no traceback)."""
    assert result.code == 1, result
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {result.err!r}"
    assert lines[0].startswith(PREFIX), lines[0]
    return lines[0]


def sparse_bytes(path: Path) -> int:
    """Bytes of disk the file really holds (``st_blocks`` counts 512-byte units)."""
    return path.stat().st_blocks * 512


def rechunked(cli, path: Path, tmp: Path, sizes: str = SMALL) -> bytes:
    """The index bytes ``make`` (no store) writes for ``path``."""
    make_index(cli, tmp / "rechunked.caibx", path, sizes)
    return (tmp / "rechunked.caibx").read_bytes()


# --- real processes, killed with SIGKILL (see tests/test_crash_safety.py) ---


def start(*argv: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "desync_decl", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def run(*argv: object) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "desync_decl", *map(str, argv)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 30.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (fail if it finished first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            pytest.fail(
                f"the command finished (exit {proc.returncode}) before it could be killed: "
                f"{proc.stderr.read().decode() if proc.stderr else ''}"
            )
        assert time.monotonic() < deadline, "timed out waiting for the moment to kill"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
