"""casync's remote protocol: message framing shared by the ``ssh://`` client and ``pull``.

A message is ``u64 size ‖ u64 type ‖ body`` (little endian, size counting the
16-byte header), at most 16 MiB. casync checks each type's exact shape
(``caremote.c``: a HELLO is 24 bytes with non-zero flags, a REQUEST holds one
or more 32-byte ids, an ABORT's reason is printable and NUL-terminated), so we
write exactly that and refuse anything else with ``ProtocolError``.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

HELLO = 0x3C71D0948CA5FBEE
INDEX = 0xB32A91DD2B3E27F8
INDEX_EOF = 0x4F0932F1043718F5
ARCHIVE = 0x95D6428A69EDDCC5
ARCHIVE_EOF = 0x450BEF663F24CBAD
REQUEST = 0x8AB427E0F89D9210
CHUNK = 0x5213DD180A84BC8C
MISSING = 0xD010F9FAC82B7B6C
GOODBYE = 0xAD205DBF1A3686C3
ABORT = 0xE7D9136B7EFEA352

NAMES = {
    HELLO: "HELLO",
    INDEX: "INDEX",
    INDEX_EOF: "INDEX_EOF",
    ARCHIVE: "ARCHIVE",
    ARCHIVE_EOF: "ARCHIVE_EOF",
    REQUEST: "REQUEST",
    CHUNK: "CHUNK",
    MISSING: "MISSING",
    GOODBYE: "GOODBYE",
    ABORT: "ABORT",
}

# HELLO feature flags: services a side provides, then operations it wants
READABLE_STORE = 0x1
WRITABLE_STORE = 0x2
READABLE_INDEX = 0x4
WRITABLE_INDEX = 0x8
READABLE_ARCHIVE = 0x10
WRITABLE_ARCHIVE = 0x20
PULL_CHUNKS = 0x40
PULL_INDEX = 0x80
PULL_ARCHIVE = 0x100
PUSH_CHUNKS = 0x200
PUSH_INDEX = 0x400
PUSH_INDEX_CHUNKS = 0x800
PUSH_ARCHIVE = 0x1000
FEATURE_FLAGS_MAX = 0x1FFF

REQUEST_HIGH_PRIORITY = 0x1
CHUNK_COMPRESSED = 0x1

HEADER = struct.Struct("<QQ")
U64 = struct.Struct("<Q")
ID_SIZE = 32
MAX_SIZE = 16 * 1024 * 1024  # casync's CA_PROTOCOL_SIZE_MAX, header included
MAX_CHUNK_DATA = MAX_SIZE - HEADER.size - U64.size - ID_SIZE


class ProtocolError(ValueError):
    """The peer sent something the protocol does not allow."""


@dataclass(frozen=True)
class Message:
    type: int
    body: bytes

    @property
    def name(self) -> str:
        return NAMES.get(self.type, f"unknown message type {self.type:#x}")


def encode(type: int, body: bytes = b"") -> bytes:
    if HEADER.size + len(body) > MAX_SIZE:
        raise ProtocolError(f"{NAMES.get(type, type)} message of {len(body)} bytes is too large")
    return HEADER.pack(HEADER.size + len(body), type) + body


def hello(flags: int) -> bytes:
    return encode(HELLO, U64.pack(flags))


def request(ids: Sequence[bytes], *, high_priority: bool = True) -> bytes:
    flags = REQUEST_HIGH_PRIORITY if high_priority else 0
    return encode(REQUEST, U64.pack(flags) + b"".join(ids))


def chunk(id: bytes, data: bytes | memoryview, *, compressed: bool) -> bytes:
    if len(data) > MAX_CHUNK_DATA:
        raise ProtocolError(f"chunk {id.hex()} ({len(data)} bytes) does not fit in a message")
    flags = CHUNK_COMPRESSED if compressed else 0
    return encode(CHUNK, U64.pack(flags) + id + bytes(data))


def missing(id: bytes) -> bytes:
    return encode(MISSING, id)


def goodbye() -> bytes:
    return encode(GOODBYE)


def abort(reason: str, errno: int = 0) -> bytes:
    """casync's reader insists on printable text and a final NUL."""
    text = "".join(c if c >= " " else " " for c in reason).encode("utf-8", "replace")
    return encode(ABORT, U64.pack(errno) + text + b"\0")


def chunk_message_size(data_size: int) -> int:
    """The size of a CHUNK message carrying ``data_size`` bytes (at most ``MAX_SIZE``):
    the most a client expecting a chunk of that size lets the far side announce."""
    return min(MAX_SIZE, HEADER.size + U64.size + ID_SIZE + data_size)


def read_message(read: Callable[[int], bytes], max_size: int = MAX_SIZE) -> Message | None:
    """The next message from ``read(n)`` (a stream's read: at most n bytes, b"" at
    end); None for a clean end of stream between messages. A size beyond
    ``max_size`` is refused from the header, before any of the body is read."""
    header = _read_exactly(read, HEADER.size, at_start=True)
    if header is None:
        return None
    size, type = HEADER.unpack(header)
    if size < HEADER.size or size > MAX_SIZE:
        raise ProtocolError(f"message size {size} is out of range")
    if size > max_size:
        raise ProtocolError(f"a message of {size} bytes, more than the {max_size} expected")
    body = _read_exactly(read, size - HEADER.size, at_start=False) or b""
    return Message(type, body)


def _read_exactly(read: Callable[[int], bytes], n: int, *, at_start: bool) -> bytes | None:
    parts, got = [], 0
    while got < n:
        part = read(n - got)
        if not part:
            if got == 0 and at_start:
                return None
            raise ProtocolError(f"stream ended inside a message ({got} of {n} bytes)")
        parts.append(part)
        got += len(part)
    return b"".join(parts)


# --- bodies -------------------------------------------------------------------------


def parse_hello(m: Message) -> int:
    _expect(m, HELLO)
    if len(m.body) != U64.size:
        raise ProtocolError(f"HELLO of {len(m.body)} bytes")
    (flags,) = U64.unpack(m.body)
    if flags == 0 or flags & ~FEATURE_FLAGS_MAX:
        raise ProtocolError(f"HELLO with invalid feature flags {flags:#x}")
    return flags


def parse_request(m: Message) -> tuple[int, list[bytes]]:
    """(flags, ids): one or more ids, in order."""
    _expect(m, REQUEST)
    ids = m.body[U64.size :]
    if len(m.body) < U64.size + ID_SIZE or len(ids) % ID_SIZE:
        raise ProtocolError(f"REQUEST of {len(m.body)} bytes is not flags and whole ids")
    (flags,) = U64.unpack_from(m.body)
    if flags & ~REQUEST_HIGH_PRIORITY:
        raise ProtocolError(f"REQUEST with unknown flags {flags:#x}")
    return flags, [ids[i : i + ID_SIZE] for i in range(0, len(ids), ID_SIZE)]


def parse_chunk(m: Message) -> tuple[bool, bytes, bytes]:
    """(compressed, id, data)."""
    _expect(m, CHUNK)
    if len(m.body) < U64.size + ID_SIZE + 1:
        raise ProtocolError(f"CHUNK of {len(m.body)} bytes has no data")
    (flags,) = U64.unpack_from(m.body)
    if flags & ~CHUNK_COMPRESSED:
        raise ProtocolError(f"CHUNK with unknown flags {flags:#x}")
    id = m.body[U64.size : U64.size + ID_SIZE]
    return bool(flags & CHUNK_COMPRESSED), id, m.body[U64.size + ID_SIZE :]


def parse_missing(m: Message) -> bytes:
    _expect(m, MISSING)
    if len(m.body) != ID_SIZE:
        raise ProtocolError(f"MISSING of {len(m.body)} bytes")
    return m.body


def parse_abort(m: Message) -> tuple[int, str]:
    """(errno, reason); lenient about the text: it only ends up in a message."""
    _expect(m, ABORT)
    if len(m.body) < U64.size:
        raise ProtocolError(f"ABORT of {len(m.body)} bytes")
    (errno,) = U64.unpack_from(m.body)
    reason = m.body[U64.size :].rstrip(b"\0").decode("utf-8", "replace")
    return errno, reason


def _expect(m: Message, type: int) -> None:
    if m.type != type:
        raise ProtocolError(f"expected {NAMES[type]}, got {m.name}")
