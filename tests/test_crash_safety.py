"""A process killed mid-write (SIGKILL, no cleanup) leaves no partial file under a final
name: every chunk file in the store is whole, and the extract target is untouched."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desync_decl.formats.digest import Digest
from desync_decl.ops.verify import verify_store
from desync_decl.stores.local import LocalStore


def start(*argv: object) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "desync_decl", *map(str, argv)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def kill_when(proc: subprocess.Popen, ready, timeout: float = 20.0) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` holds (or fail if it finished first)."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, "the command finished before it could be killed"
        assert time.monotonic() < deadline
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def big_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("crash") / "big.img"
    rng = random.Random(1)
    with path.open("wb") as f:
        for _ in range(48):
            f.write(rng.randbytes(1 << 20))
    return path


def test_killed_make_leaves_only_whole_chunks_and_no_index(tmp_path, big_file):
    store = tmp_path / "store"
    proc = start("make", "-n", "1", "-m", "1:4:16", "-s", store, tmp_path / "x.caibx", big_file)
    kill_when(proc, lambda: store.is_dir() and sum(1 for _ in store.iterdir()) > 200)
    assert proc.returncode == -signal.SIGKILL
    assert not (tmp_path / "x.caibx").exists()
    s = LocalStore(store)
    assert verify_store(s) == []  # every file under a final name is a valid chunk
    assert sum(1 for _ in s.iter_chunk_ids()) > 0


def test_killed_extract_leaves_the_old_target_and_a_rerun_succeeds(tmp_path, big_file):
    store = tmp_path / "store"
    made = subprocess.run(
        [sys.executable, "-m", "desync_decl", "make", "-s", store, tmp_path / "x.caibx", big_file],
        capture_output=True,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    target = tmp_path / "target.img"
    target.write_bytes(b"previous version")
    proc = start("extract", "-n", "1", "-s", store, tmp_path / "x.caibx", target)

    def temp_is_growing() -> bool:
        temps = [p for p in tmp_path.iterdir() if p.name.startswith(".target.img.")]
        return bool(temps) and os.stat(temps[0]).st_blocks > 2048

    kill_when(proc, temp_is_growing)
    assert target.read_bytes() == b"previous version"
    rerun = subprocess.run(
        [sys.executable, "-m", "desync_decl", "extract", "-s", store, tmp_path / "x.caibx", target],
        capture_output=True,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert Digest.SHA256.hash(target.read_bytes()) == Digest.SHA256.hash(big_file.read_bytes())
