"""Extraction runs on forked worker processes for fork-safe stores and on threads
otherwise; both give the same bytes, and a failing worker becomes one clear error."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import sys
import threading

import pytest

from desync_decl.errors import DesyncError
from desync_decl.forked import Done, can_fork, forked_map, run_forked
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.ops.extract import extract
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore


class Counter:
    """Progress that keeps every report, in the order the parent received them."""

    def __init__(self) -> None:
        self.reports: list[int] = []

    @property
    def total(self) -> int:
        return sum(self.reports)

    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        self.reports.append(n)

    def finish(self) -> None:
        pass


@pytest.fixture
def made(tmp_path):
    data = random.Random(5).randbytes(3_000_000) + bytes(500_000)
    (tmp_path / "src").write_bytes(data)
    store = LocalStore(tmp_path / "store", create=True)
    result = make(tmp_path / "src", sizes=ChunkSizes.parse("4:16:64"), store=store)
    return store, result.index, data


# Forking needs a process without other threads, which a test process cannot promise
# (session-scoped servers such as moto run on threads in it): the forked extraction
# runs in a fresh interpreter, which counts its forks.
FORKED_EXTRACT = """
import os, sys
from desync_decl.forked import can_fork
from desync_decl.formats.index import decode
from desync_decl.ops.extract import extract
from desync_decl.stores.local import LocalStore

forks = []
os.register_at_fork(after_in_parent=lambda: forks.append(1))
store_dir, index_file, out = sys.argv[1:]
store = LocalStore(store_dir)
total = []

class Progress:
    def start(self, stage, n): pass
    def advance(self, n): total.append(n)
    def finish(self): pass

assert can_fork(store, 2)
with open(index_file, "rb") as f:
    index = decode(f.read())
extract(index, out, store, concurrency=2, progress=Progress())
print(len(forks), sum(total))
"""


def test_local_stores_are_extracted_by_forked_workers(tmp_path, made):
    store, index, data = made
    (tmp_path / "index.caibx").write_bytes(index.encode())
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            FORKED_EXTRACT,
            store.path,
            tmp_path / "index.caibx",
            tmp_path / "out",
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    forks, progress_total = map(int, done.stdout.split())
    assert forks == 2  # one worker process per worker
    assert progress_total == len(data)  # progress came back through the pipes
    assert (tmp_path / "out").read_bytes() == data


def test_from_a_threaded_program_extraction_uses_threads(tmp_path, made):
    store, index, data = made
    seen: list[bool] = []

    def run() -> None:
        seen.append(can_fork(store, 2))
        extract(index, tmp_path / "out", store, concurrency=2)

    t = threading.Thread(target=run)
    t.start()
    t.join()
    assert seen == [False]  # forking beside another thread is unsafe
    assert (tmp_path / "out").read_bytes() == data


# "No child left" is asked of a fresh interpreter: in the test process, children that
# other tests started (servers, subprocesses) would answer waitpid(-1) too.
FAILING_WORKER = """
import os
from desync_decl.errors import DesyncError
from desync_decl.forked import run_forked

class Quiet:
    def start(self, stage, n): pass
    def advance(self, n): pass
    def finish(self): pass

def work(claims, report):
    for item in claims:
        report(10)
        if item == 1:
            raise DesyncError("chunk abc missing from somewhere")

try:
    run_forked(work, 3, 3, Quiet())
except DesyncError as e:
    print("error:", e)
try:
    os.waitpid(-1, os.WNOHANG)
    print("a child is left")
except ChildProcessError:
    print("every child was reaped")
"""


def test_a_failing_worker_is_one_error_and_no_worker_outlives_the_call():
    done = subprocess.run(
        [sys.executable, "-c", FAILING_WORKER], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "error: chunk abc missing from somewhere",
        "every child was reaped",
    ]


def test_an_unexpected_worker_exception_is_reported_not_swallowed():
    def work(claims, report) -> None:
        raise ValueError("boom")

    with pytest.raises(DesyncError, match="worker failed: ValueError"):
        run_forked(work, 1, 2, Counter())


def test_while_workers_write_the_parent_makes_their_writes_durable(tmp_path, monkeypatch):
    """Forked workers report bytes written; the parent passes the progress on and
    fdatasyncs the target every SYNC_EVERY bytes (the real call, counted)."""
    from desync_decl.assemble import execute

    synced: list[int] = []
    real_fdatasync = os.fdatasync

    def counting_fdatasync(fd: int) -> None:
        real_fdatasync(fd)
        synced.append(fd)

    monkeypatch.setattr(execute.os, "fdatasync", counting_fdatasync)
    counter = Counter()
    fd = os.open(tmp_path / "target", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        syncing = execute._Syncing(counter, fd)
        for _ in range(10):
            os.write(fd, bytes(1024))
            syncing.advance(execute.SYNC_EVERY // 4)
    finally:
        os.close(fd)
    assert counter.total == 10 * (execute.SYNC_EVERY // 4)
    assert synced == [fd, fd]  # after 4 and after 8 reports

    # A failed sync is raised: Linux reports a write-back error to one sync call only.
    read_end, write_end = os.pipe()  # a pipe cannot be synced: EINVAL
    try:
        with pytest.raises(OSError):
            execute._Syncing(counter, write_end).advance(execute.SYNC_EVERY)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_workers_take_the_next_item_when_free_so_a_slow_one_holds_no_share_back():
    """Whoever takes item 0 stops until every other item is done: with a split fixed
    at the start it would wait for items that are its own, forever (the per-test
    timeout fails it). More items than the ticket pipe holds at once, so the parent
    must refill it as the workers read."""
    items = 40_000  # 160 KB of tickets; a pipe holds 64 KiB
    done_read, done_write = os.pipe()  # a byte for each item but 0, once it is done

    def work(claims, report) -> None:
        taken: list[int] = []
        for item in claims:
            taken.append(item)
            if item == 0:
                waited = 0
                while waited < items - 1:
                    waited += len(os.read(done_read, items))
            else:
                os.write(done_write, b"x")
            report(item + 1)
        assert taken == sorted(taken)  # each worker's items come in increasing order

    counter = Counter()
    try:
        run_forked(work, items, 2, counter)
    finally:
        os.close(done_read)
        os.close(done_write)
    assert sorted(counter.reports) == list(range(1, items + 1))  # each item once


def test_forked_map_yields_in_order_with_the_parents_own_results_in_place():
    """Children answer in whatever order they finish; the results come back in the
    items' order, ``Done`` items in their place, more of them than may be in flight
    at once; what a child notes reaches the parent."""
    count, in_flight = 3000, 100
    notes: list[str] = []

    def items():
        for n in range(count):
            yield Done(-n) if n % 7 == 0 else struct.pack("<I", n)

    def work(payload: bytes, note) -> bytes:
        (n,) = struct.unpack("<I", payload)
        if n == 1:
            note(f"worker {os.getpid()} saw 1")
        return struct.pack("<Q", n * n)

    results = list(forked_map(work, items(), 4, 2, notes.append, in_flight))
    expected = [-n if n % 7 == 0 else struct.pack("<Q", n * n) for n in range(count)]
    assert results == expected
    assert len(notes) == 1 and notes[0].endswith(" saw 1") and str(os.getpid()) not in notes[0]


def test_a_forked_map_worker_failure_is_raised_with_its_type():
    """The worker's own error, not a generic one (the other worker is killed and
    reaped by forked_map's cleanup, as run_forked's is)."""

    def work(payload: bytes, note) -> bytes:
        if payload == b"\x05":
            raise DesyncError("chunk 5 cannot be written")
        return payload

    with pytest.raises(DesyncError, match="chunk 5 cannot be written"):
        list(forked_map(work, (bytes([n]) for n in range(200)), 1, 2, print, 50))
