"""What one listener bounds, so that no client can make a server hold memory, threads
or connections without end, and why each bound is where it is.

The servers face networks, and a probe found that pipelining GETs without
reading the answers grew a chunk-server from 27 MB to 438 MB, that 200
connections trickling a request head stayed open forever, and that 64 slowly
sent upload bodies took every worker thread. Each bound here is per listener:

- ``max_buffer`` (128 KiB): request bytes read ahead of the request being
  answered. Past it the connection stops reading (the kernel's socket buffers
  and TCP then hold the client back) until answers drain. It holds a request
  head of the 64 KiB limit (``http1.MAX_HEAD``) whole, so an oversized head is
  always seen and refused (431), whenever it arrives. One read can add up to
  asyncio's read size (256 KiB) on top; on the way out a connection holds the
  answer being written and asyncio's 64 KiB write buffer, and answers no
  further request until that has drained. An answer that can be large is
  streamed (``messages.Stream``): a local index file is read a 256 KiB piece
  at a time, only when the transport has drained (``resume_writing``), so a
  connection holds at most a piece and the write buffer whatever the
  index's size (60 connections pipelining GETs of an 11 MB index held 679 MB
  when each answer was built whole). A chunk answer is held whole, at most
  one per connection and at most ``--max-chunk-size`` (compressed) each.
- ``head_timeout`` (20 s, Apache's ``RequestReadTimeout header=20``): a
  request head must be complete this long after its first byte arrived (a
  new connection's first head: after it was accepted). A client trickling a
  head byte by byte (slowloris) is answered 408 and closed.
- ``idle_timeout`` (120 s, desync's): a connection with no request under way
  is closed after this long without progress.
- ``write_timeout`` (20 s, as the head deadline): an answer the client does not
  take (the transport's write buffer above asyncio's high-water mark, a
  streamed body waiting, or a closing connection's last bytes) must drain
  some bytes at least this often, or the connection is cut. Bytes the client
  sends meanwhile do not count: only its reading does. Before, such a
  connection had the whole idle timeout and could not be evicted: eight
  addresses with 64 connections each, a 4 KiB receive buffer and 100
  pipelined GETs of a 96 KB chunk held all 512 slots, and every other client
  was refused 503 for as long as they reconnected.
- ``body_timeout`` and ``body_min_rate`` (20 s and 64 KiB/s): while the
  server waits for body bytes, a pause may last ``body_timeout``, and all
  waiting together at most ``body_timeout`` plus a second for every
  ``body_min_rate`` bytes received. A trickled upload loses its connection
  (408) instead of keeping its slot. The rate is what makes holding a slot
  cost real bandwidth: at Apache's 500 B/s (1 KiB/s before), 32 uploads
  trickled at 1.2 KB/s, 38 KB/s in all, held every upload slot for as long
  as they liked (a 1 GiB index for 12 days); at 64 KiB/s holding all 64 takes
  4 MiB/s, and a 1 GiB upload has at most 4.5 hours. Any link that uploads
  chunks at all sends faster than 64 KiB/s.
- ``max_connections`` (512) and ``max_connections_per_client`` (64, by IPv4
  address or IPv6 /64 network, ``client_key``: whoever has one IPv6 address
  usually has the 2^64 of its network): a client past its own share is
  answered 503 with ``Retry-After`` and closed. One address cannot take every
  connection; 64 is six times desync's default concurrency of 10, for a few
  clients behind one NAT address. At the total bound a new connection is not
  refused: it evicts the connection that has waited longest for its client
  with no request in the service's hands (idle keep-alive, a head not
  complete yet, a TLS handshake, an answer the client does not take, counted
  from its last drained byte), as nginx reuses idle keep-alive connections. Else eight
  addresses holding idle connections, renewed before the idle timeout, would
  lock every other client out; now they lose their own connections instead.
  A TLS connection counts from its accept, before its handshake (which holds
  some 300 KB of buffers): a client past its share is closed before any TLS
  byte, and a handshake must be done within ``handshake_timeout`` (10 s).
- ``max_uploads`` (64) and ``max_uploads_per_client`` (16): requests other
  than GET and HEAD (uploads) run in a thread pool of their own of this size,
  and one more than these is answered 503 with ``Retry-After`` at once,
  never queued. A client's share is above desync's default concurrency of 10
  (at 4, a ``cache -n 10`` into a chunk-server had its uploads refused while
  its own dropped connections still held slots) and a quarter of the total:
  it takes four addresses, each sending at least ``body_min_rate`` per upload
  (4 MiB/s in all), to hold every slot. GET and HEAD never wait for an upload:
  they are answered on the event loop (local stores) or in the readers' pool.
"""

from __future__ import annotations

import ipaddress
import threading
from collections import Counter
from dataclasses import dataclass

MAX_HEAD = 64 * 1024  # request line and headers
RETRY_AFTER = 5  # seconds a refused client is asked to wait


@dataclass(frozen=True)
class Limits:
    max_buffer: int = 128 * 1024
    head_timeout: float = 20.0
    idle_timeout: float = 120.0
    write_timeout: float = 20.0
    handshake_timeout: float = 10.0
    body_timeout: float = 20.0
    body_min_rate: float = 64 * 1024.0
    max_connections: int = 512
    max_connections_per_client: int = 64
    max_uploads: int = 64
    max_uploads_per_client: int = 16

    def __post_init__(self) -> None:
        if self.max_buffer < MAX_HEAD + 4:
            raise ValueError(f"max_buffer must hold a whole request head ({MAX_HEAD + 4} bytes)")


def client_key(host: str) -> str:
    """Whom a connection counts against: its IPv4 address, or its IPv6 /64 network."""
    if ":" not in host:
        return host
    try:
        address = ipaddress.IPv6Address(host.partition("%")[0])
    except ValueError:
        return host
    if address.ipv4_mapped is not None:  # a dual-stack socket's IPv4 client
        return str(address.ipv4_mapped)
    return str(ipaddress.IPv6Network((address, 64), strict=False))


class Slots:
    """At most ``total`` holders at once, at most ``per_client`` of them from one client.

    Thread-safe: a slot is taken on the event loop and may be given back by the
    thread that finished the work."""

    def __init__(self, total: int, per_client: int) -> None:
        self.total, self.per_client = total, per_client
        self._held: Counter[str] = Counter()
        self._count = 0
        self._lock = threading.Lock()

    def take(self, client: str) -> bool:
        with self._lock:
            if self._count >= self.total or self._held[client] >= self.per_client:
                return False
            self._count += 1
            self._held[client] += 1
            return True

    def client_has_room(self, client: str) -> bool:
        """Whether ``client`` is below its own share (a refusal is then the total's)."""
        with self._lock:
            return self._held[client] < self.per_client

    def give_back(self, client: str) -> None:
        with self._lock:
            self._count -= 1
            self._held[client] -= 1
            if not self._held[client]:
                del self._held[client]
