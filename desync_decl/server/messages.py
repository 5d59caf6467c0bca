"""What a server sees of a request and what it answers, without any socket.

The services (chunk-server, index-server) decide on these; ``listen`` moves
them over HTTP. The body is read only when a service asks for it, after it has
checked the credentials, the path and the announced size, and then in pieces
(``Body.read``), so that no upload has to be held whole in memory.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

OCTETS = "application/octet-stream"


class Body(Protocol):
    def read(self, size: int) -> bytes:
        """Up to ``size`` more bytes of the body, b"" after its last byte.

        Raises ``ConnectionError`` when the client went away or sent too slowly."""
        ...


class _NoBody:
    def read(self, size: int) -> bytes:
        return b""


NO_BODY: Body = _NoBody()


@dataclass(frozen=True)
class Request:
    method: str
    path: str  # the target's path as sent, not percent-decoded (so "%2e" is no dot)
    authorization: str | None  # the header's bytes as Latin-1 text (each byte one character)
    length: int | None  # the announced body size (Content-Length), None when none was given
    body: Body = NO_BODY  # at most ``length`` bytes


@runtime_checkable
class Stream(Protocol):
    """An answer's body of ``length`` bytes made piece by piece as the client takes them,
    so that it is never held whole (an index of up to 1 GiB, once per connection)."""

    length: int

    def next_piece(self) -> bytes:
        """The next bytes (b"" after the last); raises ``OSError`` or ``FormatError``
        when the body cannot be completed: the connection is then cut, never the
        answer ended short as if it were whole."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes | memoryview | Stream = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def text(
        cls, status: int, message: str, *, headers: tuple[tuple[str, str], ...] = ()
    ) -> Response:
        return cls(status, (message + "\n").encode(), headers=headers)


def authorized(request: Request, expected: str | None) -> bool:
    """Whether the request carries the expected ``Authorization`` value (none expected: yes).

    Compared as bytes: the header's bytes exactly as sent against the expected
    value in UTF-8 (what clients send for text beyond Latin-1; a value from the
    command line that is not UTF-8 keeps its own bytes). Encoding both sides
    with "replace" made every such character a "?", so ``Bearer ??????``
    passed where the real token failed. Compared in constant time, so the
    answer's timing does not leak the value."""
    if expected is None:
        return True
    given = (request.authorization or "").encode("latin-1")  # the parser decoded Latin-1
    return hmac.compare_digest(given, expected.encode("utf-8", "surrogateescape"))


METHODS = ("GET", "HEAD", "PUT")
UNAUTHORIZED = Response.text(401, "Unauthorized")
METHOD_NOT_ALLOWED = Response.text(
    405, "only GET, PUT and HEAD are supported", headers=(("Allow", ", ".join(METHODS)),)
)
INTERNAL_ERROR = Response.text(500, "internal server error")


def refusal(request: Request, authorization: str | None) -> Response | None:
    """What a service answers before it looks at the path: 401 without the expected
    ``Authorization``, 405 for a method it does not serve; None lets the request in."""
    if not authorized(request, authorization):
        return UNAUTHORIZED
    if request.method not in METHODS:
        return METHOD_NOT_ALLOWED
    return None


def failure(report: Callable[[str], None], detail: str) -> Response:
    """A 500: ``detail`` goes to the server's ``report`` only, never to the client."""
    report(detail)
    return INTERNAL_ERROR
