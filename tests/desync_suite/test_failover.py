"""Ports of desync's ``failover_test.go``: a failover group (``-s "a|b"``) of real HTTP
stores. desync's tests used in-memory stores told to fail; here each member is our
chunk-server over one local store behind a real listener, and a switch in front of
it answers 503 while the member is to fail (a store that is down for a while).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.server.chunks import ChunkService
from desync_decl.server.messages import Request, Response
from desync_decl.stores import http
from desync_decl.stores.base import ChunkMissing, Store, StoreError
from desync_decl.stores.compose import FailoverGroup
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.single_flight import single_flight
from desync_decl.stores.swap import StoreStack
from tests import servers_http, store_contract
from tests.store_contract import random_chunks

serve = servers_http.serve  # the fixture
opened = store_contract.opened  # the fixture: stores closed after the test
# a failing member is tried 10 times over 3 ms x (1 + ... + 9) = 135 ms: through many of
# its 10 ms turns, however long each request waits for the GIL among 16 readers
QUICK = StoreOptions(error_retry=10, error_retry_base_interval=0.003, timeout=10.0)


@dataclass
class Switch:
    """A chunk-server that answers 503 while ``failing()`` says so; counts requests."""

    service: ChunkService
    failing: Callable[[], bool]
    requests: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: Request) -> Response:
        with self._lock:
            self.requests += 1
        if self.failing():
            return Response.text(503, "failed")
        return self.service(request)


@pytest.fixture
def chunks_served(tmp_path) -> tuple[ChunkService, list[Chunk]]:
    """One chunk-server service over a local store holding eight chunks."""
    local = LocalStore(tmp_path / "store", skip_verify=True, create=True)
    chunks = random_chunks(8, seed=40)
    for chunk in chunks:
        local.store_chunk(chunk)
    return ChunkService(StoreStack(single_flight(local))), chunks


def members(serve, opened, switches: list[Switch]) -> list[Store]:
    stores: list[Store] = []
    for switch in switches:
        stores.append(http.open_chunk_store(serve(switch).url, QUICK, Opener()))
        opened.append(stores[-1])
    return stores


def test_a_chunk_no_member_has_is_missing(serve, opened, chunks_served):
    """TestFailoverMissingChunk."""
    service, _ = chunks_served
    group = FailoverGroup(members(serve, opened, [Switch(service, lambda: False)]))
    with pytest.raises(ChunkMissing):
        group.get_chunk(ChunkID(bytes(32)))


def test_when_every_member_fails_the_failure_is_reported(serve, opened, chunks_served):
    """TestFailoverAllError."""
    service, chunks = chunks_served
    switches = [Switch(service, lambda: True), Switch(service, lambda: True)]
    group = FailoverGroup(members(serve, opened, switches))
    with pytest.raises(StoreError, match="503") as failed:
        group.get_chunk(chunks[0].id)
    assert not isinstance(failed.value, ChunkMissing)


def test_the_group_fails_over_to_the_member_that_works_and_stays_there(
    serve, opened, chunks_served
):
    """TestFailoverSimple: two failing members, then one that works; later reads go
    to the working one only (desync looks at the group's active member)."""
    service, chunks = chunks_served
    switches = [Switch(service, lambda: True), Switch(service, lambda: True)]
    switches.append(Switch(service, lambda: False))
    group = FailoverGroup(members(serve, opened, switches))
    assert bytes(group.get_chunk(chunks[0].id).plain()) == bytes(chunks[0].plain())
    asked = [s.requests for s in switches[:2]]
    for chunk in chunks[1:]:
        group.get_chunk(chunk.id)
    assert [s.requests for s in switches[:2]] == asked
    assert switches[2].requests == len(chunks)


def in_turn(member: int) -> Callable[[], bool]:
    """Whether ``member`` (0 or 1) fails now: the two take turns every 10 ms of the
    clock (a clock, not a thread flipping a flag: a thread starved of the GIL by the
    readers would leave one member failing for as long as it waits)."""
    return lambda: int(time.monotonic() / 0.01) % 2 != member


def test_members_failing_in_turn_under_concurrent_reads(serve, opened, chunks_served):
    """TestFailoverMutliple: the two members fail in turn, switching every 10 ms, while
    16 threads read in a tight loop for half a second; no read fails (a member asked
    with its retries reaches its next turn)."""
    service, chunks = chunks_served
    switches = [Switch(service, in_turn(0)), Switch(service, in_turn(1))]
    group = FailoverGroup(members(serve, opened, switches))
    errors: list[BaseException] = []
    until = time.monotonic() + 0.5  # time passing is the behaviour under test

    def read() -> None:
        i = 0
        while time.monotonic() < until:
            try:
                group.get_chunk(chunks[i % len(chunks)].id)
            except BaseException as e:
                errors.append(e)
                return
            i += 1

    readers = [threading.Thread(target=read, daemon=True) for _ in range(16)]
    for t in readers:
        t.start()
    for t in readers:
        t.join(30)
    assert not any(t.is_alive() for t in readers)
    assert errors == []
    assert all(s.requests > 0 for s in switches)
