"""HTTP/1.1 messages as the fault proxy reads them: whole, de-chunked, re-framed.

``read_message`` reads one request or response (head and whole body; a chunked
body is decoded, a response delimited by the end of the connection read to
the end); ``Message.head()`` writes it back with a ``Content-Length``, which
may differ from the body's (a truncated answer that looks complete).
"""

from __future__ import annotations

from typing import BinaryIO

MAX_LINE = 65536


class Message:
    """A request or response: its start line, headers and whole (de-chunked) body."""

    def __init__(self, start: bytes, headers: list[tuple[str, str]]) -> None:
        self.start, self.headers, self.body = start, headers, b""
        self.bodied = False  # has a body section, sent on with a Content-Length
        self._pending = 0  # request body bytes still to read after a 100 Continue

    @property
    def method(self) -> str:
        return self.start.split(b" ", 1)[0].decode("latin-1")

    @property
    def target(self) -> str:
        return self.start.split(b" ", 2)[1].decode("latin-1")

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        return values[-1] if values else None

    def expects_continue(self) -> bool:
        return (self.header("expect") or "").lower() == "100-continue"

    def read_rest(self, reader: BinaryIO) -> None:
        self.body = _read_exact(reader, self._pending)
        self._pending = 0

    def closes(self) -> bool:
        return (self.header("connection") or "").lower() == "close"

    def head(self, *, length: int | None = None) -> bytes:
        """Start line and headers; a body goes on with a Content-Length (``length``)."""
        drop = {"expect", *(("content-length", "transfer-encoding") if self.bodied else ())}
        lines = [self.start]
        lines += [f"{k}: {v}".encode("latin-1") for k, v in self.headers if k.lower() not in drop]
        if self.bodied:
            lines.append(f"Content-Length: {len(self.body) if length is None else length}".encode())
        return b"\r\n".join(lines) + b"\r\n\r\n"


def read_message(reader: BinaryIO, *, request: bool = False, method: str = "GET") -> Message | None:
    """The next message on ``reader``, or None at a clean EOF before it starts."""
    start = reader.readline(MAX_LINE)
    while request and start in (b"\r\n", b"\n"):  # stray blank lines between requests
        start = reader.readline(MAX_LINE)
    if not start:
        return None
    headers = []
    while True:
        line = reader.readline(MAX_LINE)
        if not line:
            raise ValueError("connection closed in the middle of a head")
        if line in (b"\r\n", b"\n"):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers.append((name.strip(), value.strip()))
    message = Message(start.rstrip(b"\r\n"), headers)
    length = message.header("content-length")
    chunked = "chunked" in (message.header("transfer-encoding") or "").lower()
    if request:
        message.bodied = chunked or length is not None
        if chunked:
            message.body = _read_chunked(reader)
        elif message.expects_continue():
            message._pending = int(length or 0)
        else:
            message.body = _read_exact(reader, int(length or 0))
        return message
    status = int(start.split(b" ", 2)[1])
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return message
    message.bodied = True
    if chunked:
        message.body = _read_chunked(reader)
    elif length is not None:
        message.body = _read_exact(reader, int(length))
    else:  # delimited by the end of the connection
        message.body = reader.read()
        message.headers.append(("Connection", "close"))
    return message


def _read_exact(reader: BinaryIO, n: int) -> bytes:
    data = reader.read(n) if n else b""
    if len(data) != n:
        raise ValueError("connection closed in the middle of a body")
    return data


def _read_chunked(reader: BinaryIO) -> bytes:
    parts = []
    while True:
        size = int(reader.readline(MAX_LINE).split(b";", 1)[0].strip() or b"0", 16)
        if size == 0:
            while reader.readline(MAX_LINE) not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(parts)
        parts.append(_read_exact(reader, size))
        reader.readline(MAX_LINE)
