"""untar's worker threads: batches written in any order, directories finished in
post-order after everything written into them, errors raised in archive order."""

from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path

import pytest

from desync_decl.archive import write_queue as wq
from desync_decl.archive.write_queue import WriteQueue
from tests import hostile_archives as h


class Recorder:
    """Writes and directory finishes as they happen; a write of ``fail`` raises."""

    def __init__(self, fail: str | None = None, slow: str | None = None) -> None:
        self.lock = threading.Lock()
        self.events: list[str] = []
        self.fail, self.slow = fail, slow

    def write(self, item: str) -> None:
        if item == self.slow:
            time.sleep(0.05)
        if item == self.fail:
            raise OSError(f"cannot write {item}")
        with self.lock:
            self.events.append(item)

    def finish(self, d: str) -> None:
        assert threading.current_thread() is threading.main_thread()
        with self.lock:
            self.events.append(f"end {d}")


@pytest.fixture
def small_batches(monkeypatch):
    monkeypatch.setattr(wq, "BATCH_ITEMS", 2)


def test_a_directory_is_finished_after_everything_queued_before_its_end(small_batches):
    r = Recorder(slow="a/1")
    q: WriteQueue[str, str] = WriteQueue(r.write, r.finish, workers=4)
    for item in ("a/1", "a/2", "a/b/1", "a/b/2", "a/b/3"):
        q.add(item, 1)
    q.dir_end("a/b")
    q.add("a/3", 1)
    q.dir_end("a")
    q.close()
    ends = [r.events.index("end a/b"), r.events.index("end a")]
    assert ends[0] < ends[1]
    for item in ("a/1", "a/2", "a/b/1", "a/b/2", "a/b/3"):
        assert r.events.index(item) < ends[0]
    assert r.events.index("a/3") < ends[1]


def test_without_workers_everything_happens_at_once_on_the_calling_thread():
    r = Recorder(fail="bad")
    q: WriteQueue[str, str] = WriteQueue(r.write, r.finish, workers=0)
    q.add("a/1", 1)
    q.dir_end("a")
    assert r.events == ["a/1", "end a"]
    with pytest.raises(OSError, match="cannot write bad"):
        q.add("bad", 1)
    q.close()
    assert q.pending_dirs() == []


def test_an_error_stops_the_writes_after_it_and_is_raised(small_batches):
    r = Recorder(fail="x2")
    q: WriteQueue[str, str] = WriteQueue(r.write, r.finish, workers=1)
    with pytest.raises(OSError, match="cannot write x2"):
        for i in range(100):
            q.add(f"x{i}", 1)
        q.dir_end("root")
        q.close()
    q.stop()
    assert r.events == ["x0", "x1"]


def test_closing_after_an_error_of_the_decoder_writes_and_finishes_what_came_before():
    r = Recorder()
    q: WriteQueue[str, str] = WriteQueue(r.write, r.finish, workers=2)
    q.add("f", 1)
    q.dir_end("d")
    q.add("g", 1)  # then the decoder fails
    q.close()
    assert r.events[r.events.index("f") + 1 :].count("end d") == 1
    assert "g" in r.events and q.pending_dirs() == []


def test_closing_raises_the_error_of_an_earlier_write():
    r = Recorder(fail="bad")
    q: WriteQueue[str, str] = WriteQueue(r.write, r.finish, workers=2)
    q.add("bad", 1)
    q.dir_end("d")
    with pytest.raises(OSError, match="cannot write bad"):
        q.close()
    assert q.pending_dirs() == ["d"]


def test_waiting_directories_stay_bounded(small_batches, monkeypatch):
    monkeypatch.setattr(wq, "MAX_WAITING_DIRS", 3)
    r = Recorder(slow="f0")
    q: WriteQueue[str, str] = WriteQueue(r.write, r.finish, workers=2)
    most = 0
    for i in range(20):
        q.add(f"f{i}", 1)
        q.dir_end(f"d{i}")
        most = max(most, len(q.pending_dirs()))
    q.close()
    assert most <= 3
    assert [e for e in r.events if e.startswith("end")] == [f"end d{i}" for i in range(20)]


# -- through untar -------------------------------------------------------------------


def test_many_files_in_read_only_directories_keep_their_times(cli, tmp_path, monkeypatch):
    """Directory times and read-only modes are set only after the workers wrote into them."""
    monkeypatch.setattr(wq, "BATCH_ITEMS", 3)
    monkeypatch.setattr(wq, "MAX_WAITING_DIRS", 2)
    tree = tmp_path / "tree"
    for d in range(12):
        sub = tree / f"d{d:02}" / "inner"
        sub.mkdir(parents=True)
        for f in range(7):
            (sub / f"f{f}").write_bytes(os.urandom(f * 3000))
            (sub.parent / f"g{f}").write_bytes(b"g" * f)
        (sub / "link").symlink_to("f1")
        big = sub.parent / "big"
        big.write_bytes(os.urandom(1_100_000))  # above SMALL_FILE: written on the main thread
        for p in (sub, sub.parent):
            os.utime(p, ns=(10**18 + d, 10**18 + d))
            os.chmod(p, 0o555)
    os.utime(tree, ns=(10**18, 10**18))
    assert cli("tar", tmp_path / "x.catar", tree).code == 0
    out = tmp_path / "out"
    result = cli("untar", tmp_path / "x.catar", out)
    assert result.code == 0, result.err
    assert cli("mtree", out).out == cli("mtree", tree).out
    assert not list(Path(out).rglob(".#untar.*"))


def test_a_failing_file_among_many_stops_with_its_error(cli, tmp_path, monkeypatch):
    monkeypatch.setattr(wq, "BATCH_ITEMS", 2)
    files = {f"f{i:03}".encode(): h.MemNode.file(b"x" * i) for i in range(50)}
    data = h.archive(h.MemNode.dir(children=files))
    out = tmp_path / "out"
    (out / "f010").mkdir(parents=True)  # a directory in the way of the 11th file
    (tmp_path / "x.catar").write_bytes(data)
    result = cli("untar", tmp_path / "x.catar", out)
    assert result.code == 1 and "f010" in result.err and "in the way" in result.err
    for i in range(10):
        assert (out / f"f{i:03}").read_bytes() == b"x" * i
    assert not list(out.rglob(".#untar.*"))


# -- how file contents get there -----------------------------------------------------


@pytest.fixture
def small_tree(tmp_path) -> Path:
    tree = tmp_path / "tree"
    (tree / "d").mkdir(parents=True)
    for i in range(30):
        (tree / "d" / f"f{i}").write_bytes(os.urandom(i * 700))
    (tree / "big").write_bytes(os.urandom(3_000_000))
    (tree / "existing").write_bytes(b"new")
    return tree


def untar_listing(cli, catar: Path, out: Path) -> str:
    (out / "existing").parent.mkdir(parents=True, exist_ok=True)
    (out / "existing").write_bytes(b"old contents, replaced")
    result = cli("untar", catar, out)
    assert result.code == 0, result.err
    assert not list(out.rglob(".#untar.*"))
    return cli("mtree", out).out


def test_payloads_copied_from_a_catar_file_by_offset_or_read(cli, small_tree, tmp_path):
    """From a file the workers copy payloads by offset; from stdin they are read."""
    catar = tmp_path / "x.catar"
    assert cli("tar", catar, small_tree).code == 0
    want = cli("mtree", small_tree).out
    assert untar_listing(cli, catar, tmp_path / "file") == want
    result = cli("untar", "-", tmp_path / "stdin", stdin=catar.read_bytes())
    assert result.code == 0, result.err
    assert cli("mtree", tmp_path / "stdin").out == want


def test_without_sendfile_or_unnamed_files_the_fallbacks_write_the_same(
    cli, small_tree, tmp_path, monkeypatch
):
    from desync_decl.archive import disk_writer

    catar = tmp_path / "x.catar"
    assert cli("tar", catar, small_tree).code == 0

    def no_sendfile(*args):
        raise OSError(errno.EINVAL, "not here")

    monkeypatch.setattr(os, "sendfile", no_sendfile)
    monkeypatch.setattr(disk_writer, "_O_UNNAMED", os.O_WRONLY | os.O_TMPFILE | os.O_CREAT)
    assert untar_listing(cli, catar, tmp_path / "out") == cli("mtree", small_tree).out


def test_an_archive_that_starts_inside_a_file(small_tree, tmp_path):
    from desync_decl.ops.tar import TarInput, tar
    from desync_decl.ops.untar import untar

    path = tmp_path / "x.bin"
    with open(path, "wb") as f:
        f.write(b"some header before the archive")
        tar(TarInput(small_tree), f)
    with open(path, "rb") as f:
        f.seek(len(b"some header before the archive"))
        untar(f, tmp_path / "out")
    for p in small_tree.rglob("*"):
        if p.is_file():
            assert (tmp_path / "out" / p.relative_to(small_tree)).read_bytes() == p.read_bytes()


def test_a_catar_file_cut_short_fails_without_half_written_files(cli, small_tree, tmp_path):
    catar = tmp_path / "x.catar"
    assert cli("tar", catar, small_tree).code == 0
    data = catar.read_bytes()
    at = data.index((small_tree / "big").read_bytes()[:64]) + 1_000_000
    catar.write_bytes(data[:at])
    result = cli("untar", catar, tmp_path / "out")
    assert result.code == 1 and "truncated" in result.err
    assert not (tmp_path / "out" / "big").exists()
    assert not list((tmp_path / "out").rglob(".#untar.*"))


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_any_number_of_workers_writes_the_same_tree(cli, small_tree, tmp_path, workers):
    from desync_decl.archive.disk_writer import WriteOptions
    from desync_decl.archive.extract import write_tree
    from desync_decl.formats.catar import Decoder

    catar = tmp_path / "x.catar"
    assert cli("tar", catar, small_tree).code == 0
    with open(catar, "rb") as f:
        write_tree(Decoder(f), tmp_path / "out", WriteOptions(), workers=workers)
    assert cli("mtree", tmp_path / "out").out == cli("mtree", small_tree).out
