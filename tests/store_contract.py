"""The contract every chunk store backend must meet, as one shared suite (restic's pattern).

A backend's test module subclasses ``StoreContract`` and provides an ``env``
fixture returning a ``ContractEnv`` for a fresh, empty store location on a real
server. The suite then checks round trips, missing vs invalid vs failed,
listing, prune, encryption, uncompressed form and concurrency.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, Store, StoreError
from desync_decl.stores.compose import locate
from desync_decl.stores.keys import WrongKey
from desync_decl.stores.options import StoreOptions

KEY = "11" * 32


@dataclass
class ContractEnv:
    location: str
    open: Callable[[StoreOptions], Store]  # the store at ``location`` with these options
    put_raw: Callable[[str, bytes], None]  # write an object's raw bytes at a key under the base
    break_store: Callable[[], None]  # make every later call fail (e.g. stop the server)
    can_prune: bool = True  # desync's capability table: HTTP stores cannot list or prune
    reads_both_forms: bool = False  # the local store also reads the other compression form


def chunk_of(data: bytes) -> Chunk:
    return Chunk(Digest.SHA512_256.hash(data), plain=data)


def random_chunks(n: int, seed: int = 1) -> list[Chunk]:
    rng = random.Random(seed)
    return [chunk_of(rng.randbytes(rng.randrange(1, 70_000))) for _ in range(n)]


ID_NEVER_STORED = Digest.SHA512_256.hash(b"never stored")


@pytest.fixture
def opened():
    """Stores a test opens, closed after it (their connections may hold server processes)."""
    stores: list = []
    yield stores
    for store in stores:
        store.close()


def put_file(root: Path) -> Callable[[str, bytes], None]:
    """``put_raw`` for a store whose objects are the files under ``root``."""

    def put_raw(key: str, data: bytes) -> None:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    return put_raw


def in_eight_threads(
    work: Callable[[Chunk], None], chunks: list[Chunk], timeout: float | None = None
) -> None:
    """``work`` on every chunk, the chunks dealt out to eight threads running at once;
    fails if any thread raised, or is still running ``timeout`` seconds after it."""
    errors: list[BaseException] = []

    def run(part: list[Chunk]) -> None:
        try:
            for c in part:
                work(c)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run, args=(chunks[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert not errors and not any(t.is_alive() for t in threads)


class StoreContract:
    @pytest.fixture
    def env(self) -> ContractEnv:  # pragma: no cover - provided by each backend's module
        raise NotImplementedError

    def test_a_stored_chunk_reads_back_with_the_same_bytes(self, env):
        store = env.open(StoreOptions())
        for chunk in random_chunks(3):
            store.store_chunk(chunk)
            assert store.has_chunk(chunk.id)
            assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())

    def test_a_missing_chunk_is_missing_not_an_error(self, env):
        store = env.open(StoreOptions())
        with pytest.raises(ChunkMissing):
            store.get_chunk(ID_NEVER_STORED)
        assert store.has_chunk(ID_NEVER_STORED) is False

    def test_a_chunk_whose_bytes_do_not_match_its_name_is_invalid(self, env):
        store = env.open(StoreOptions(uncompressed=True))
        good, other = random_chunks(2, seed=2)
        h = good.id.hex()
        env.put_raw(f"{h[:4]}/{h}", bytes(other.plain()))
        with pytest.raises(ChunkInvalid):
            store.get_chunk(good.id)

    def test_undecodable_compressed_data_is_invalid(self, env):
        store = env.open(StoreOptions())
        good = random_chunks(1, seed=3)[0]
        h = good.id.hex()
        env.put_raw(f"{h[:4]}/{h}.cacnk", b"not zstd at all")
        with pytest.raises(ChunkInvalid):
            store.get_chunk(good.id)

    def test_the_store_is_named_by_its_location(self, env):
        assert str(env.open(StoreOptions())) == env.location

    def test_listing_and_prune_keep_exactly_the_keep_set(self, env):
        store = env.open(StoreOptions())
        if not env.can_prune:
            assert not hasattr(store, "prune") and not hasattr(store, "iter_chunk_ids")
            return
        chunks = random_chunks(5, seed=4)
        for c in chunks:
            store.store_chunk(c)
        env.put_raw("not-a-chunk", b"left alone")
        assert set(store.iter_chunk_ids()) == {c.id for c in chunks}
        keep = {chunks[0].id, chunks[3].id}
        assert store.prune(keep) == 3
        assert set(store.iter_chunk_ids()) == keep
        assert all(store.has_chunk(id) for id in keep)

    def test_an_uncompressed_store_keeps_plain_chunks_apart_from_compressed_ones(self, env):
        plain = env.open(StoreOptions(uncompressed=True))
        packed = env.open(StoreOptions())
        chunk = random_chunks(1, seed=5)[0]
        plain.store_chunk(chunk)
        assert bytes(plain.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
        if env.reads_both_forms:  # casync's local layout: either file form is the chunk
            assert bytes(packed.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
        else:  # desync: a store sees only its own format (issue #298)
            with pytest.raises(ChunkMissing):
                packed.get_chunk(chunk.id)

    def test_encrypted_chunks_round_trip_and_need_the_key(self, env):
        options = StoreOptions(encryption=True, encryption_key=KEY)
        store = env.open(options)
        chunk = random_chunks(1, seed=6)[0]
        store.store_chunk(chunk)
        assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
        other_key = env.open(StoreOptions(encryption=True, encryption_key="22" * 32))
        ours = options.storage_format().cipher.key_id
        theirs = other_key.format.cipher.key_id
        if env.can_prune:  # a store that lists tells the key its chunk is under (issue 19)
            wrong = f"in .* is encrypted with key {ours}, not the configured key {theirs}"
            with pytest.raises(WrongKey, match=wrong):
                other_key.get_chunk(chunk.id)
            with pytest.raises(WrongKey, match=wrong):  # what a plan asks: the same answer
                locate(env.open(StoreOptions(encryption=True, encryption_key="22" * 32)), chunk.id)
            unencrypted = env.open(StoreOptions())
            with pytest.raises(WrongKey, match=f"key {ours}, but no key is configured"):
                unencrypted.get_chunk(chunk.id)
        else:  # HTTP cannot list: another key's fingerprint cannot be guessed
            with pytest.raises(ChunkMissing):  # another key id: another name
                other_key.get_chunk(chunk.id)
        h = chunk.id.hex()
        name = f"{h[:4]}/{h}.cacnk.xchacha20-poly1305-"
        env.put_raw(name + options.storage_format().cipher.key_id, b"\0" * 64)
        with pytest.raises(ChunkInvalid):
            store.get_chunk(chunk.id)

    def test_a_plain_chunk_read_with_a_key_is_no_missing_chunk(self, env):
        """Every backend, HTTP too, can look for the unencrypted name of a chunk it
        misses: a key configured for a plain store is a wrong key, not missing chunks."""
        chunk = random_chunks(1, seed=16)[0]
        env.open(StoreOptions()).store_chunk(chunk)
        keyed = env.open(StoreOptions(encryption=True, encryption_key=KEY))
        fingerprint = keyed.format.cipher.key_id
        with pytest.raises(
            WrongKey, match=f"is not encrypted, but the configured key {fingerprint}"
        ):
            keyed.get_chunk(chunk.id)
        with pytest.raises(ChunkMissing):  # a chunk in no form at all is missing, as before
            keyed.get_chunk(ID_NEVER_STORED)

    def test_eight_threads_store_and_read_at_once(self, env):
        store = env.open(StoreOptions())

        def store_and_read(c: Chunk) -> None:
            store.store_chunk(c)
            assert bytes(store.get_chunk(c.id).plain()) == bytes(c.plain())

        in_eight_threads(store_and_read, random_chunks(24, seed=7))

    def test_a_failing_store_raises_a_store_error_never_missing(self, env):
        store = env.open(StoreOptions(error_retry=1, timeout=2.0))
        chunk = random_chunks(1, seed=8)[0]
        store.store_chunk(chunk)
        env.break_store()
        with pytest.raises(StoreError):
            store.get_chunk(chunk.id)
        with pytest.raises(StoreError):
            store.has_chunk(ID_NEVER_STORED)
