"""Issue 13, item 2: one source of routing truth, and failover that sticks.

Plan asks the real store stack where each chunk would come from
(``compose.locate``), so a failover group whose first member is down moves to the
member that works once, while planning, and stays there for the apply. A dead
member costs a request one failed attempt (no retries with backoff while another
member is left): with the origin refusing connections, or hung, plan and apply
take at most about one timeout more than with it up.

Real parts: moto's S3 server in its own process as the origin (killed: refused;
SIGSTOP: hung), ``desync-decl chunk-server`` as the mirror, the CLI as a process;
and a small socket server that counts the connections a dead member gets.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from collections.abc import Iterator

import pytest

from desync_decl.formats.digest import Digest
from desync_decl.parallel import ordered_map
from desync_decl.stores.compose import FailoverGroup
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.tally import Switch, observing
from tests import fleet_routing_helpers, servers_http
from tests.fleet_routing_helpers import (
    CONCURRENCY,
    STORE_TIMEOUT,
    Fleet,
    group_manifest,
    make_fleet,
)
from tests.servers_http import Step
from tests.store_contract import random_chunks

origin, fleet = fleet_routing_helpers.origin, fleet_routing_helpers.fleet
cli_server, scripted = servers_http.cli_server, servers_http.scripted

pytest.importorskip("moto.server", reason="moto[server] is not installed")

MARGIN = 5.0  # seconds on top of the bound: a loaded machine, process start-up


class Resetting:
    """A dead member that still counts: accepts each connection and resets it."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/store/"
        self.connections = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            conn.close()

    def close(self) -> None:
        """Stop its thread (a thread left running keeps later tests from forking:
        test_forked); shutdown wakes the blocked accept, a close alone does not."""
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        self._thread.join(timeout=10)


@pytest.fixture
def resetting() -> Iterator[Resetting]:
    server = Resetting()
    yield server
    server.close()


def _up_times(fleet: Fleet, manifest) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """Plan and apply with every store up: the reference the bounds are relative to."""
    plan = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "state-up")
    assert plan.code == 0, plan.out + plan.err
    apply = fleet.cli("apply", manifest, "--state-dir", fleet.tmp / "state-up")
    assert apply.code == 0, apply.out + apply.err
    target = fleet.tmp / "out" / "app.img"
    assert target.read_bytes() == fleet.blob
    target.unlink()
    return plan.seconds, apply.seconds


@pytest.mark.parametrize("outage", ["refused", "hung"])
def test_a_dead_origin_costs_plan_and_apply_one_timeout_and_the_mirror_serves(fleet, outage):
    manifest = fleet.manifest(group_manifest(fleet))
    up_plan, up_apply = _up_times(fleet, manifest)
    fleet.origin.kill() if outage == "refused" else fleet.origin.freeze()
    state = fleet.tmp / "state-down"

    bound = up_plan + STORE_TIMEOUT + MARGIN
    plan = fleet.cli("plan", manifest, "--state-dir", state, "--json", limit=bound + 30)
    assert plan.code == 0, plan.out + plan.err
    assert plan.seconds <= bound, (
        f"plan took {plan.seconds:.1f} s, with the origin up {up_plan:.1f} s"
    )
    (task,) = plan.json()["tasks"]
    served = {s["store"]: s["chunks"] for s in task["travel"]["stores"]}
    assert served == {"mirror": task["travel"]["total"]["chunks"]}, served
    assert any("switched from 'origin' to 'mirror'" in w for w in task["warnings"]), task

    bound = up_apply + STORE_TIMEOUT + MARGIN
    apply = fleet.cli("apply", manifest, "--state-dir", state, "--json", limit=bound + 30)
    assert apply.code == 0, apply.out + apply.err
    assert apply.seconds <= bound, f"apply took {apply.seconds:.1f} s, up {up_apply:.1f} s"
    assert (fleet.tmp / "out" / "app.img").read_bytes() == fleet.blob
    if outage == "hung":  # one connection per request in flight, in each of the two runs
        assert 1 <= fleet.origin.connections() <= 2 * CONCURRENCY, fleet.origin.connections()
    (result,) = apply.json()["tasks"]
    reads = result["stats"]["reads"]
    # the group moved while planning: no chunk read was sent to the origin
    assert set(reads["stores"]) == {"mirror"}, reads
    assert reads["groups"] == {"upstream": {"mirror": reads["stores"]["mirror"]["served"]}}
    assert len(result["warnings"]) == 1, result["warnings"]


def test_plan_and_apply_ask_a_dead_member_once_per_request_in_flight(
    tmp_path,
    resetting,
    cli_server,
):
    """The planner asked the group's first member for every chunk (three attempts
    each, with backoff); now the group moves once and plan and apply stay there."""
    fleet = make_fleet(tmp_path, None, cli_server)
    manifest = fleet.manifest(group_manifest(fleet, origin_url=resetting.url))
    applied = fleet.cli("apply", manifest, "--state-dir", tmp_path / "state", limit=120)
    assert applied.code == 0, applied.out + applied.err
    assert (tmp_path / "out" / "app.img").read_bytes() == fleet.blob
    # each request in flight when the origin failed tried it once: at most one per thread
    assert 1 <= resetting.connections <= CONCURRENCY, resetting.connections
    warnings = [line for line in applied.out.splitlines() if "warning:" in line]
    assert len(warnings) == 1, applied.out
    assert "group 'upstream' switched from 'origin' to 'mirror'" in warnings[0]


def test_with_every_member_down_apply_says_one_error_not_a_switch_per_request(
    tmp_path, resetting, cli_server
):
    """The trial saw 26 to 50 "switched" warnings, the group flipping between two dead
    members once per request in flight: with nothing left to hand over to, a group
    stays where it is, and only the error (naming both) is said."""
    fleet = make_fleet(tmp_path, None, cli_server)
    other = Resetting()
    try:
        body = group_manifest(fleet, origin_url=resetting.url).replace(fleet.mirror_url, other.url)
        applied = fleet.cli("apply", fleet.manifest(body), "--state-dir", tmp_path / "s")
    finally:
        other.close()
    assert applied.code == 1, applied.out + applied.err
    switches = [line for line in applied.out.splitlines() if "switched" in line]
    assert len(switches) <= 1, applied.out  # origin -> mirror before the mirror failed too
    (failed,) = [line for line in applied.out.splitlines() if line.startswith("failed:")]
    assert "every store of the failover group" in failed
    assert resetting.url in failed and other.url in failed


def test_locate_moves_the_group_as_a_read_would_and_the_reads_stay_there(tmp_path, resetting):
    """One routing truth: the member ``locate`` settles on is the one reads use."""
    from desync_decl.stores.compose import locate  # new in issue 13

    good = LocalStore(tmp_path / "good", create=True)
    chunks = random_chunks(32, seed=5)
    for c in chunks:
        good.store_chunk(c)
    dead = Opener(digest=Digest.SHA512_256).chunk_store(resetting.url)
    group = FailoverGroup([dead, good])
    ids = [c.id for c in chunks]
    where = list(ordered_map(lambda id: locate(group, id), ids, workers=8))
    assert {w.leaf for w in where} == {good}
    assert all(w.through == (group,) for w in where)
    asked = resetting.connections
    assert 1 <= asked <= 8
    got = list(ordered_map(group.get_chunk, ids, workers=8))
    assert [c.plain() for c in got] == [c.plain() for c in chunks]
    assert resetting.connections == asked  # the reads never went back to the dead member


def test_a_blip_on_the_member_that_works_still_heals_while_the_other_is_dead(
    resetting,
    scripted,
):
    """Members are asked once each without retries; when all failed, again with them."""
    (chunk,) = random_chunks(1, seed=9)
    mirror = scripted(Step(503), Step(200, chunk.stored()))
    opener = Opener(digest=Digest.SHA512_256, overrides={"error_retry_base_interval": 0.01})
    group = FailoverGroup([opener.chunk_store(resetting.url), opener.chunk_store(mirror.url)])
    assert group.get_chunk(chunk.id).plain() == chunk.plain()
    assert [method for method, _, _ in mirror.requests] == ["GET", "GET"]
    assert group.get_chunk(chunk.id).plain() == chunk.plain()  # and it stays on the mirror
    assert len(mirror.requests) == 3


def test_a_blip_on_the_working_member_does_not_send_the_group_back_to_the_dead_one(
    resetting,
    scripted,
):
    """The origin is dead and the mirror active; one 503 from the mirror used to
    switch the group straight back to the origin (the next member in turn), where
    every request paid its timeout again. A member that failed recently is passed
    over: the mirror is asked again, with its retries, and the group stays there."""
    first, second, third = random_chunks(3, seed=11)
    mirror = scripted(
        Step(200, first.stored()),
        Step(503),
        Step(200, second.stored()),
        Step(200, third.stored()),
    )
    opener = Opener(digest=Digest.SHA512_256, overrides={"error_retry_base_interval": 0.01})
    group = FailoverGroup([opener.chunk_store(resetting.url), opener.chunk_store(mirror.url)])
    with observing() as tally:
        assert group.get_chunk(first.id).plain() == first.plain()
        assert resetting.connections == 1  # the origin failed once: the group moved
        assert group.get_chunk(second.id).plain() == second.plain()  # the 503, then a retry
        assert group.get_chunk(third.id).plain() == third.plain()
    assert resetting.connections == 1, "the group went back to the dead origin"
    assert len(mirror.requests) == 4
    switches = [e for e in tally.events if isinstance(e, Switch)]
    assert [(str(s.old), str(s.new)) for s in switches] == [
        (str(group.members[0]), str(group.members[1]))
    ]
