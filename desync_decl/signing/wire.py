"""SSH's wire encoding (RFC 4251 §5): the fields of key blobs, certificates,
SSHSIG blobs, KRLs and ssh-agent messages.

Every read is bounded by the bytes handed in: a length field that points past them
is a ``WireError``, never a short read or a huge allocation.
"""

from __future__ import annotations

import struct

from desync_decl.errors import DesyncError


class WireError(DesyncError):
    """Bytes that are not the SSH wire structure expected; the message says which field."""


class Reader:
    """Reads SSH wire fields from ``data`` front to back."""

    def __init__(self, data: bytes, what: str) -> None:
        self._data = memoryview(data)
        self._pos = 0
        self._what = what

    def _take(self, n: int, field: str) -> bytes:
        if n > len(self._data) - self._pos:
            raise WireError(f"{self._what}: truncated at {field}")
        out = bytes(self._data[self._pos : self._pos + n])
        self._pos += n
        return out

    def byte(self, field: str) -> int:
        return self._take(1, field)[0]

    def u32(self, field: str) -> int:
        value: int = struct.unpack(">I", self._take(4, field))[0]
        return value

    def u64(self, field: str) -> int:
        value: int = struct.unpack(">Q", self._take(8, field))[0]
        return value

    def string(self, field: str) -> bytes:
        return self._take(self.u32(field), field)

    def text(self, field: str) -> str:
        """A string field that must be UTF-8 (names, namespaces, principals)."""
        raw = self.string(field)
        try:
            return raw.decode()
        except UnicodeDecodeError:
            raise WireError(f"{self._what}: {field} is not UTF-8") from None

    def mpint(self, field: str) -> int:
        raw = self.string(field)
        if raw[:1] and raw[0] & 0x80:
            raise WireError(f"{self._what}: {field} is negative")
        return int.from_bytes(raw, "big")

    def consumed(self) -> bytes:
        """The bytes read so far (what a certificate's CA signed)."""
        return bytes(self._data[: self._pos])

    def remaining(self) -> int:
        return len(self._data) - self._pos

    def end(self) -> None:
        """The structure is complete: trailing bytes are an error."""
        if self._pos != len(self._data):
            raise WireError(f"{self._what}: {len(self._data) - self._pos} bytes after the end")


def u32(value: int) -> bytes:
    return struct.pack(">I", value)


def string(value: bytes | str) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return u32(len(raw)) + raw


def mpint(value: int) -> bytes:
    """A non-negative integer, big-endian, with a 0 byte in front when its top bit is set."""
    raw = value.to_bytes((value.bit_length() + 8) // 8, "big") if value else b""
    return string(raw)
