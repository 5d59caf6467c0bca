"""A local store run by root never acts through a symbolic link planted in it.

A user who can write the store's prefix directories (a store in a directory
``nobody`` owns) may swap a prefix directory for a link to a root-only
directory, or plant a link where a chunk file should be. ``prune``, eviction
(``remove_chunk``), ``touch`` and the stats behind ``usage``/``stored_size``
must neither delete, touch nor count a file outside the store through it.

Races are made deterministic, not timed: the attacker's swap runs (as
``nobody``, through ``setpriv``) from a hook the store necessarily calls
between listing a chunk and deleting it — ``keep``'s membership test for
``prune``, and a wrapper around ``remove_chunk`` for eviction, which lists
(``usage()``) first and removes afterwards.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.stores.local import LocalStore
from desync_decl.stores.lru import SizeLimited
from tests.test_root_safety import AS_NOBODY

VICTIM_DATA = b"root-only data that must survive\n"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="the attacker is nobody, the store root")


def chunk_of(seed: int) -> Chunk:
    data = random.Random(seed).randbytes(10_000)
    return Chunk(Digest.SHA512_256.hash(data), plain=data)


def chunk_name(id: ChunkID) -> str:
    return id.hex() + ".cacnk"


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory ``nobody`` can reach (pytest's own tmp_path is root-only)."""
    base = Path(tempfile.mkdtemp(prefix="test-store-symlinks-"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base)


def victim_dir(base: Path, names: list[str]) -> Path:
    """A root-only directory holding files named like the store's chunks."""
    victim = base / "root-only"
    victim.mkdir(mode=0o700)
    for name in names:
        (victim / name).write_bytes(VICTIM_DATA)
    return victim


def store_with(base: Path, chunks: list[Chunk]) -> tuple[Path, LocalStore]:
    """A store whose directories ``nobody`` owns, holding ``chunks``."""
    root = base / "store"
    store = LocalStore(root, create=True)
    for chunk in chunks:
        store.store_chunk(chunk)
    for directory in [root, *root.iterdir()]:
        os.chown(directory, 65534, 65534)
    return root, store


def swap_prefix_as_nobody(prefix: Path, target: Path) -> None:
    """The attacker: rename the prefix directory away, plant a link in its place."""
    script = (
        "import os, sys; os.rename(sys.argv[1], sys.argv[1] + '.moved'); "
        "os.symlink(sys.argv[2], sys.argv[1])"
    )
    subprocess.run(
        [*AS_NOBODY, "/usr/bin/python3", "-c", script, str(prefix), str(target)],
        check=True,
    )
    assert prefix.is_symlink()


class SwapOnFirstLookup(set):
    """``keep`` for prune: the first membership test (after the listing, before any
    deletion) lets the attacker swap the prefix directory for a link."""

    def __init__(self, prefix: Path, target: Path) -> None:
        super().__init__()
        self.swap: tuple[Path, Path] | None = (prefix, target)

    def __contains__(self, id: object) -> bool:
        if self.swap is not None:
            swap_prefix_as_nobody(*self.swap)
            self.swap = None
        return super().__contains__(id)


@as_root
def test_prune_deletes_nothing_through_a_prefix_swapped_after_listing(shared: Path) -> None:
    chunk = chunk_of(1)
    root, store = store_with(shared, [chunk])
    victim = victim_dir(shared, [chunk_name(chunk.id)])
    prefix = root / chunk.id.hex()[:4]

    removed = store.prune(SwapOnFirstLookup(prefix, victim))

    assert (victim / chunk_name(chunk.id)).read_bytes() == VICTIM_DATA
    # what was deleted was the chunk in the directory prune listed (now renamed away)
    assert removed == 1
    assert not (Path(f"{prefix}.moved") / chunk_name(chunk.id)).exists()


@as_root
def test_eviction_deletes_nothing_through_a_prefix_swapped_after_listing(
    shared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chunks = [chunk_of(seed) for seed in range(2, 6)]
    root, store = store_with(shared, chunks)
    victim = victim_dir(shared, [chunk_name(c.id) for c in chunks])
    remove = store.remove_chunk

    def swap_then_remove(id: ChunkID) -> None:
        # the attacker's swap lands between eviction's listing and its deletions
        for c in chunks:
            prefix = root / c.id.hex()[:4]
            if not prefix.is_symlink():
                swap_prefix_as_nobody(prefix, victim)
        remove(id)

    monkeypatch.setattr(store, "remove_chunk", swap_then_remove)
    cache = SizeLimited(store, limit=15_000)
    cache.store_chunk(chunk_of(6))  # over the limit: evicts
    assert any(Path(f"{root / c.id.hex()[:4]}.moved").exists() for c in chunks)  # it did

    for c in chunks:
        assert (victim / chunk_name(c.id)).read_bytes() == VICTIM_DATA


def store_with_prefix_link(base: Path, chunk: Chunk) -> tuple[LocalStore, Path]:
    """An empty store whose prefix directory for ``chunk`` is a link to a victim
    directory holding a file of the chunk's name (the victim is returned)."""
    store = LocalStore(base / "store", create=True)
    store.flush()
    victim = victim_dir(base, [chunk_name(chunk.id)])
    (base / "store" / chunk.id.hex()[:4]).symlink_to(victim)
    return store, victim


def test_remove_chunk_does_not_follow_a_prefix_link(tmp_path: Path) -> None:
    chunk = chunk_of(7)
    store, victim = store_with_prefix_link(tmp_path, chunk)

    store.remove_chunk(chunk.id)  # as for a missing chunk: nothing to do

    assert (victim / chunk_name(chunk.id)).read_bytes() == VICTIM_DATA


def test_touch_changes_no_file_behind_a_link(tmp_path: Path) -> None:
    linked_prefix, linked_file = chunk_of(8), chunk_of(9)
    store = LocalStore(tmp_path / "store", create=True)
    store.store_chunk(chunk_of(10))
    victim = victim_dir(tmp_path, [chunk_name(linked_prefix.id), "other"])
    for name in (chunk_name(linked_prefix.id), "other"):
        os.utime(victim / name, (1_000_000, 1_000_000))
    (tmp_path / "store" / linked_prefix.id.hex()[:4]).symlink_to(victim)
    prefix = tmp_path / "store" / linked_file.id.hex()[:4]
    prefix.mkdir(exist_ok=True)
    (prefix / chunk_name(linked_file.id)).symlink_to(victim / "other")

    store.touch(linked_prefix.id)
    store.touch(linked_file.id)

    for name in (chunk_name(linked_prefix.id), "other"):
        assert (victim / name).stat().st_mtime == 1_000_000


def test_a_chunk_file_link_is_neither_counted_nor_deleted_through(tmp_path: Path) -> None:
    real, linked = chunk_of(11), chunk_of(12)
    root = tmp_path / "store"
    store = LocalStore(root, create=True)
    store.store_chunk(real)
    victim = victim_dir(tmp_path, [])
    (victim / "big").write_bytes(VICTIM_DATA * 1000)
    prefix = root / linked.id.hex()[:4]
    prefix.mkdir(exist_ok=True)
    (prefix / chunk_name(linked.id)).symlink_to(victim / "big")

    assert store.stored_size(linked.id) is None
    assert not store.has_chunk(linked.id)
    assert [id for _, _, id in store.usage()] == [real.id]
    assert list(store.iter_chunk_ids()) == [real.id]

    assert store.prune(set()) == 1  # the real chunk; the link is no chunk
    assert (victim / "big").read_bytes() == VICTIM_DATA * 1000


def test_prune_skips_a_planted_prefix_link(tmp_path: Path) -> None:
    """Regression guard (held before too): a prefix that is a link is not walked."""
    chunk = chunk_of(13)
    store, victim = store_with_prefix_link(tmp_path, chunk)

    assert store.prune(set()) == 0
    assert list(store.iter_chunk_ids()) == []
    assert (victim / chunk_name(chunk.id)).read_bytes() == VICTIM_DATA
