"""A store's background writeback starts once enough was written and leaves no
thread behind once waited for (forked extraction needs a process without threads)."""

from __future__ import annotations

import threading

from desync_decl.stores.writeback import Writeback


def writeback_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "writeback"]


def test_a_syncfs_starts_after_enough_bytes_and_wait_ends_it(tmp_path):
    w = Writeback(str(tmp_path), every=100)
    w.wrote(60)
    assert not writeback_threads()  # not enough yet
    w.wrote(60)
    w.wait()
    assert not writeback_threads()


def test_a_failing_syncfs_is_left_to_the_final_one(tmp_path):
    w = Writeback(str(tmp_path / "gone"), every=1)
    w.wrote(1)  # the directory does not exist: the background call fails quietly
    w.wait()
    w.wrote(1)  # and the next one may start again
    w.wait()
    assert not writeback_threads()
