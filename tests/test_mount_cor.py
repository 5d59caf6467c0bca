"""Copy-on-read (``--cor-file`` and its state files): the chunks a mount reads are
copied into a local sparse file, marked one bit per chunk, and found there again
by a later mount that reuses the saved state, even with no store at all."""

from __future__ import annotations

import errno
import os
import signal
import time

import pytest

from desync_decl.errors import DesyncError
from desync_decl.mount.cor import CopyOnRead
from desync_decl.ops.blobreader import BlobReader
from desync_decl.stores.base import ChunkMissing
from desync_decl.stores.local import LocalStore
from tests.test_blobreader import build
from tests.test_mount import make_blob, mounts, needs_fuse, start_mount

__all__ = ["mounts"]  # the fixture, used by the FUSE tests here


def bits(path) -> list[int]:
    data = path.read_bytes()
    return [i for i in range(len(data) * 8) if data[i // 8] & (1 << (i % 8))]


def test_a_read_copies_its_chunks_into_the_sparse_file_and_marks_them(tmp_path):
    blob, index, store = build(tmp_path, [40, 64, 30, 64, 50], zeros_at={3})
    cor = CopyOnRead(BlobReader(index, store), str(tmp_path / "cor"), state=str(tmp_path / "s"))
    assert os.path.getsize(tmp_path / "cor") == len(blob)
    assert cor.read(50, 60) == blob[50:110]  # chunks 1 and 2
    assert [cor.has(i) for i in range(5)] == [False, True, True, False, False]
    assert cor.read(140, 50) == blob[140:190]  # the null chunk: marked, never written
    cor.save()
    cor.close()
    data = (tmp_path / "cor").read_bytes()
    assert data[40:134] == blob[40:134]
    assert data[:40] == bytes(40) and data[198:] == bytes(50)
    assert bits(tmp_path / "s") == [1, 2, 3]
    assert store.total == 2


def test_a_saved_state_is_used_again_without_asking_the_store(tmp_path):
    blob, index, store = build(tmp_path, [40, 64, 30])
    first = CopyOnRead(BlobReader(index, store), str(tmp_path / "cor"), state=str(tmp_path / "s"))
    first.read(0, 50)
    first.save()
    first.close()
    empty = LocalStore(tmp_path / "empty", create=True)
    again = CopyOnRead(BlobReader(index, empty), str(tmp_path / "cor"), state=str(tmp_path / "s"))
    assert again.read(0, 104) == blob[:104]
    with pytest.raises(ChunkMissing):
        again.read(110, 10)
    again.close()


@pytest.mark.parametrize("problem", ["state length", "file length", "no state"])
def test_a_state_that_does_not_fit_starts_an_empty_file(tmp_path, problem):
    blob, index, store = build(tmp_path, [40, 64, 30])
    cor_file, state = tmp_path / "cor", tmp_path / "s"
    first = CopyOnRead(BlobReader(index, store), str(cor_file), state=str(state))
    first.read(0, len(blob))
    first.save()
    first.close()
    if problem == "state length":
        state.write_bytes(b"\xff\xff")
    elif problem == "file length":
        os.truncate(cor_file, len(blob) + 1)
    else:
        state.unlink()
    empty = LocalStore(tmp_path / "empty", create=True)
    again = CopyOnRead(BlobReader(index, empty), str(cor_file), state=str(state))
    with pytest.raises(ChunkMissing):
        again.read(0, 10)
    again.close()
    assert cor_file.read_bytes() == bytes(len(blob))


def test_a_failed_fetch_is_not_marked_and_leaves_no_zeros_behind(tmp_path):
    blob, index, store = build(tmp_path, [40, 64, 30])
    victim = index.chunk(1)
    saved = store.inner.get_chunk(victim.id)
    store.inner.remove_chunk(victim.id)
    cor = CopyOnRead(BlobReader(index, store), str(tmp_path / "cor"))
    with pytest.raises(ChunkMissing):
        cor.read(45, 10)
    assert not cor.has(1)
    store.inner.store_chunk(saved)
    assert cor.read(45, 10) == blob[45:55]
    cor.close()


def test_preloading_copies_every_chunk_an_init_state_marks(tmp_path):
    _, index, store = build(tmp_path, [40, 64, 30, 20, 64, 10, 10, 10, 10])
    (tmp_path / "init").write_bytes(bytes([0b1010_0110, 0b1]))  # chunks 1, 2, 5, 7, 8
    cor = CopyOnRead(BlobReader(index, store), str(tmp_path / "cor"))
    cor.preload(str(tmp_path / "init"), workers=3)
    deadline = time.monotonic() + 5
    while cor.copied() < 5:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    cor.close()
    assert [i for i in range(9) if cor.has(i)] == [1, 2, 5, 7, 8]
    assert store.total == 5


def test_an_init_state_for_another_index_is_refused(tmp_path):
    _, index, store = build(tmp_path, [40, 64, 30])
    (tmp_path / "init").write_bytes(b"\xff\xff")
    cor = CopyOnRead(BlobReader(index, store), str(tmp_path / "cor"))
    with pytest.raises(DesyncError, match="not a state file for this index"):
        cor.preload(str(tmp_path / "init"), workers=1)
    cor.close()


@needs_fuse
def test_a_second_mount_reads_what_the_first_copied_with_no_store(tmp_path, mounts):
    blob = make_blob(tmp_path)
    cor_file, state = tmp_path / "blob.cor", tmp_path / "blob.state"
    flags = ["--cor-file", cor_file, "--cor-state-save", state, blob.index_path]
    mount = start_mount(tmp_path, "-s", blob.store, *flags)
    mounts.append(mount)
    with open(mount.file, "rb") as f:
        assert f.read(200_000) == blob.data[:200_000]
    mount.process.send_signal(signal.SIGHUP)  # saves the state while mounted
    deadline = time.monotonic() + 5
    while not state.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert mount.unmount() == 0
    assert "chunks in" in mount.stderr()
    assert cor_file.stat().st_blocks * 512 < len(blob.data)  # sparse: only what was read
    (tmp_path / "empty").mkdir()
    again = start_mount(tmp_path, "-s", tmp_path / "empty", *flags)
    mounts.append(again)
    fd = os.open(again.file, os.O_RDONLY)
    try:
        assert os.pread(fd, 150_000, 0) == blob.data[:150_000]
        with pytest.raises(OSError) as e:
            os.pread(fd, 100, len(blob.data) - 100)
        assert e.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert again.unmount() == 0


def test_state_files_need_a_cor_file(cli, tmp_path):
    r = cli("mount-index", "-s", "x", "--cor-state-save", "s", "x.caibx", tmp_path)
    assert r.code == 1 and "need --cor-file" in r.err
