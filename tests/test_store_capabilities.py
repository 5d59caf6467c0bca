"""What a store can do is what protocols it meets: a wrapper is writable exactly when
what it wraps is (``single_flight``), on real local stores."""

from __future__ import annotations

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.stores.base import WriteStore
from desync_decl.stores.compose import Router
from desync_decl.stores.local import LocalStore
from desync_decl.stores.single_flight import SingleFlight, single_flight


def test_single_flight_is_writable_exactly_when_its_store_is(tmp_path):
    local = LocalStore(tmp_path / "store", create=True)
    read_only = Router([local])  # a router cannot be written to
    assert not isinstance(read_only, WriteStore)

    reading = single_flight(read_only)
    assert isinstance(reading, SingleFlight) and not isinstance(reading, WriteStore)

    writing = single_flight(local)
    assert isinstance(writing, WriteStore)
    data = b"through the single flight"
    chunk = Chunk(Digest.SHA512_256.hash(data), plain=data)
    writing.store_chunk(chunk)
    assert bytes(local.get_chunk(chunk.id).plain()) == data
    assert bytes(reading.get_chunk(chunk.id).plain()) == data
