"""Routers, failover groups and caches over real local stores and a scripted failing store.

``FailingStore`` wraps a real store and fails on a script ("ok,err,ok"): the
composition rules are about which error kind each wrapper reacts to, and a
store that fails on cue is the only way to hit every branch deterministically
(desync's tests do the same with a server that always answers 500).
"""

from __future__ import annotations

import json
import random
import time

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import Digest
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError, plain_of
from desync_decl.stores.compose import Cache, FailoverGroup, Router
from desync_decl.stores.converters import StorageFormat
from desync_decl.stores.local import LocalStore
from desync_decl.stores.lru import SizeLimited
from desync_decl.stores.tally import ask, observed, observing
from tests.fleet_routing_helpers import nested_parentheses


class FailingStore:
    """A real store that raises StoreError on the calls the script marks ``err``."""

    def __init__(self, inner: LocalStore, script: str) -> None:
        self.inner, self.script, self.calls = inner, script.split(","), 0

    def __str__(self) -> str:
        return f"failing({self.inner})"

    def _step(self) -> None:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "err":
            raise StoreError(f"{self} failed on cue")

    def get_chunk(self, id):
        self._step()
        return self.inner.get_chunk(id)

    def has_chunk(self, id):
        self._step()
        return self.inner.has_chunk(id)

    def close(self) -> None:
        pass


def chunk(text: str) -> Chunk:
    data = text.encode() * 1000
    return Chunk(Digest.SHA512_256.hash(data), plain=data)


@pytest.fixture
def stores(tmp_path):
    def make(name: str, *chunks: Chunk) -> LocalStore:
        store = LocalStore(tmp_path / name, create=True)
        for c in chunks:
            store.store_chunk(c)
        return store

    return make


A, B = chunk("a"), chunk("b")


def test_a_router_moves_on_when_missing_and_reports_all_stores_when_none_has_it(stores):
    router = Router([stores("one", A), stores("two", B)])
    assert bytes(router.get_chunk(B.id).plain()) == bytes(B.plain())
    with pytest.raises(ChunkMissing, match="all stores"):
        router.get_chunk(chunk("c").id)


def test_a_router_stops_at_a_failing_store_instead_of_hiding_it(stores):
    router = Router([FailingStore(stores("one"), "err"), stores("two", A)])
    with pytest.raises(StoreError):
        router.get_chunk(A.id)


def test_a_failover_group_switches_on_failure_and_stays_there(stores):
    first = FailingStore(stores("one", A, B), "err")
    second = FailingStore(stores("two", A, B), "ok")
    group = FailoverGroup([first, second])
    assert bytes(group.get_chunk(A.id).plain()) == bytes(A.plain())
    assert bytes(group.get_chunk(B.id).plain()) == bytes(B.plain())
    assert (first.calls, second.calls) == (1, 2)  # no fail-back to the first member


def test_a_failover_group_does_not_fail_over_on_a_missing_chunk(stores):
    second = FailingStore(stores("two", A), "ok")
    group = FailoverGroup([stores("one"), second])
    with pytest.raises(ChunkMissing):
        group.get_chunk(A.id)
    assert second.calls == 0


def test_a_failover_group_raises_the_last_error_when_every_member_fails(stores):
    group = FailoverGroup([FailingStore(stores("one"), "err"), FailingStore(stores("two"), "err")])
    with pytest.raises(StoreError, match="two"):
        group.has_chunk(A.id)


def test_a_cache_fetches_a_miss_upstream_and_keeps_it(stores):
    cache = stores("cache")
    both = Cache(stores("up", A), cache)
    assert bytes(both.get_chunk(A.id).plain()) == bytes(A.plain())
    assert cache.has_chunk(A.id)


def test_a_repairing_cache_replaces_an_invalid_cached_chunk(stores, tmp_path):
    cache = stores("cache", A)
    path = next((tmp_path / "cache").rglob("*.cacnk"))
    path.write_bytes(B.stored())  # the cache file now holds another chunk's bytes
    with pytest.raises(ChunkInvalid):
        Cache(stores("up", A), cache, repair=False).get_chunk(A.id)
    assert bytes(Cache(stores("up2", A), cache).get_chunk(A.id).plain()) == bytes(A.plain())
    assert bytes(cache.get_chunk(A.id).plain()) == bytes(A.plain())  # overwritten


def test_the_cache_verb_copies_only_missing_chunks_and_reencrypts(cli, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(bytes(range(256)) * 4000)
    assert (
        cli("make", "-s", tmp_path / "src", "-m", "4:16:64", tmp_path / "b.caibx", blob).code == 0
    )
    config = tmp_path / "config.json"
    key = "ab" * 32
    options = {"encryption": True, "encryption-key": key, "encryption-algorithm": "aes-256-gcm"}
    config.write_text(json.dumps({"store-options": {str(tmp_path / "enc"): options}}))
    args = ["--config", config, "cache", "--json", "-s", tmp_path / "src", "-c", tmp_path / "enc"]
    first = cli(*args, tmp_path / "b.caibx")
    assert first.code == 0, first.err
    counts = json.loads(first.out)
    assert counts["chunks-copied"] == counts["chunks-total"] > 0
    files = [p for p in (tmp_path / "enc").rglob("*") if p.is_file()]
    assert len(files) == counts["chunks-total"]
    assert all(p.name.endswith(".cacnk.aes-256-gcm-" + p.name[-8:]) for p in files)
    again = json.loads(cli(*args, tmp_path / "b.caibx").out)
    assert again["chunks-copied"] == 0 and again["chunks-present"] == counts["chunks-total"]
    out = tmp_path / "out"
    r = cli("--config", config, "extract", "-s", tmp_path / "enc", tmp_path / "b.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == blob.read_bytes()
    plain = LocalStore(tmp_path / "enc", format=StorageFormat())
    assert list(plain.iter_chunk_ids()) == []  # without the key, nothing is visible


def test_extract_through_a_cache_fills_it_and_a_failover_group(cli, tmp_path):
    blob = tmp_path / "blob"
    blob.write_bytes(b"".join(i.to_bytes(4, "big") for i in range(100_000)))
    assert (
        cli("make", "-s", tmp_path / "src", "-m", "4:16:64", tmp_path / "b.caibx", blob).code == 0
    )
    group = f"{tmp_path / 'missing-dir-is-an-error'}|{tmp_path / 'src'}"
    r = cli("extract", "-s", group, "-c", tmp_path / "cache", tmp_path / "b.caibx", tmp_path / "o")
    assert r.code == 1 and "missing-dir-is-an-error" in r.err  # opening fails before failover
    r = cli(
        "extract", "-s", tmp_path / "src", "-c", tmp_path / "cache", tmp_path / "b.caibx",
        tmp_path / "o",
    )  # fmt: skip
    assert r.code == 0, r.err
    assert (tmp_path / "o").read_bytes() == blob.read_bytes()
    cached = {p.name for p in (tmp_path / "cache").rglob("*.cacnk")}
    stored = {p.name for p in (tmp_path / "src").rglob("*.cacnk")}
    assert cached == stored


def test_a_size_limited_cache_evicts_the_least_recently_used_chunks(stores, tmp_path):
    rng = random.Random(3)
    chunks = [chunk_of_bytes(rng.randbytes(10_000)) for _ in range(10)]
    size = len(chunks[0].stored())
    cache = SizeLimited(stores("cache"), limit=8 * size + size // 2)

    def put(c: Chunk) -> None:
        cache.store_chunk(c)
        time.sleep(0.01)  # distinct mtimes: the kernel's clock is coarse

    for c in chunks[:5]:
        put(c)
    cache.get_chunk(chunks[0].id)  # used again: now the most recent of the first five
    time.sleep(0.01)
    for c in chunks[5:]:
        put(c)
    kept = {c.id for c in chunks if cache.has_chunk(c.id)}
    assert chunks[0].id in kept
    assert {c.id for c in chunks[1:4]}.isdisjoint(kept)  # the three least recently used
    assert sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.cacnk")) <= cache.limit


def chunk_of_bytes(data: bytes) -> Chunk:
    return Chunk(Digest.SHA512_256.hash(data), plain=data)


def test_extract_with_a_cache_size_limit_keeps_the_cache_under_it(cli, tmp_path, capsys):
    blob = tmp_path / "blob"
    blob.write_bytes(random.Random(5).randbytes(600_000))
    made = cli("make", "-s", tmp_path / "src", "-m", "4:16:64", tmp_path / "b.caibx", blob)
    assert made.code == 0, made.err
    args = ["-s", tmp_path / "src", "-c", tmp_path / "cache", "--cache-max-size", "200K"]
    r = cli("extract", *args, tmp_path / "b.caibx", tmp_path / "o")
    assert r.code == 0, r.err
    assert (tmp_path / "o").read_bytes() == blob.read_bytes()
    cached = sum(p.stat().st_size for p in (tmp_path / "cache").rglob("*.cacnk"))
    assert 0 < cached <= 200 * 1024
    bad = cli("extract", *args[:-1], "lots", tmp_path / "b.caibx", tmp_path / "o")
    assert bad.code == 1 and "'lots' is not a size" in bad.err + capsys.readouterr().err


def test_a_router_names_the_stores_that_said_missing_before_one_failed(stores, tmp_path):
    """Missing from the first store, the second failing: both are in the message."""
    router = Router([stores("one"), FailingStore(stores("two", A), "err")])
    with pytest.raises(StoreError) as failed:
        router.get_chunk(A.id)
    message = str(failed.value)
    assert f"missing from {tmp_path / 'one'}" in message, message
    assert "failed on cue" in message, message


def test_a_group_names_the_member_that_failed_before_another_said_missing(stores, tmp_path):
    """The first member fails, the second lacks the chunk: the error says both."""
    group = FailoverGroup([FailingStore(stores("one", A), "err"), stores("two")])
    with pytest.raises(ChunkMissing) as missing:
        group.get_chunk(A.id)
    message = str(missing.value)
    assert f"missing from {tmp_path / 'two'}" in message, message
    assert f"failing({tmp_path / 'one'}) failed on cue" in message, message


def test_a_chunk_in_no_store_is_said_without_nested_parentheses(stores, tmp_path):
    """A router over a size-limited cache: one plain sentence naming every store."""
    cached = Cache(stores("up"), SizeLimited(stores("near"), 1 << 20))
    router = Router([cached, stores("other")])
    with pytest.raises(ChunkMissing) as missing:
        router.get_chunk(A.id)
    message = str(missing.value)
    assert not nested_parentheses(message), message
    assert f"{tmp_path / 'up'}, cached in {tmp_path / 'near'}" in message, message
    assert str(tmp_path / "other") in message, message


def test_counting_a_read_neither_decodes_under_the_tally_lock_nor_raises(stores, tmp_path):
    """The tally decoded each served chunk inside its lock (every reader's zstd in
    turn) and let a DecodeError out of a read it had already counted. Now a read
    through ``plain_of`` is counted at the index's size, and a chunk that does not
    decode is counted as served and handed to the reader, which says what is wrong."""
    stores("raw", A)
    path = next((tmp_path / "raw").rglob("*.cacnk"))
    path.write_bytes(b"not zstd at all")
    store = LocalStore(tmp_path / "raw", skip_verify=True)  # what a store hands over unchecked
    with observing() as tally:
        chunk = ask(store, A.id)
    assert chunk.id == A.id
    assert tally.counts[store].chunks["served"] == 1
    assert tally.counts[store].bytes["served"] == 0  # not known: it does not decode
    with observing() as tally, pytest.raises(DecodeError):
        plain_of(observed(store), A.id, len(A.plain()), 1 << 20)
    assert tally.counts[store].bytes["served"] == len(A.plain())  # the index's size
