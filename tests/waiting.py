"""Waiting for a condition instead of sleeping a guessed time.

A sleep long enough on an idle machine is too short on a loaded one (and too long
everywhere else); a test waits for what it needs, with a deadline that only a
hang reaches.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest

from desync_decl.server.http1 import Site
from desync_decl.server.listen import Listener

T = TypeVar("T")


def wait_until(condition: Callable[[], object], what: str, timeout: float = 30.0) -> None:
    """Return once ``condition()`` holds; fail the test, naming ``what``, at the deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"gave up after {timeout:.0f} s waiting until {what}")
        time.sleep(0.005)


def server_state(listener: Listener, read: Callable[[Site], T]) -> T:
    """``read(site)`` run on the listener's event loop, where its connections change
    (reading them from another thread could see a set change size mid-iteration)."""

    async def on_loop() -> T:
        return read(listener._site)

    return asyncio.run_coroutine_threadsafe(on_loop(), listener._loop).result(timeout=10)


def admitted(site: Site) -> int:
    """Connections holding a slot."""
    return sum(c.admitted for c in site.connections)


def uploading(site: Site) -> int:
    """Connections whose request is in the service's hands (an upload being received)."""
    return sum(c.busy for c in site.connections)


def partial_heads(site: Site) -> int:
    """Connections holding part of a request head, no request yet."""
    return sum(bool(c.buffer) and not c.busy for c in site.connections)


def backed_up(site: Site) -> int:
    """Connections holding a slot with answers their client has not taken."""
    return sum(c.waiting_for_client() and c._owes_client() for c in site.connections)


def accept_backlog(port: int) -> int:
    """Connections the kernel holds for the IPv4 listener on ``port`` that its server
    has not accepted yet (a listening socket's ``rx_queue`` in /proc/net/tcp)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, queues = fields[1], fields[3], fields[4]
        if state == "0A" and int(local.split(":")[1], 16) == port:
            return int(queues.split(":")[1], 16)
    raise AssertionError(f"nothing listens on port {port}")
