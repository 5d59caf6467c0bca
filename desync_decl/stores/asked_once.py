"""Whether store calls on this thread get one attempt each (``asked_once``).

A failover group (``compose``) asks a member once while a healthy member is left to
hand over to; ``retry`` reads the flag to skip its backoff. Its own module so that
``compose``, on every command's path, does not load ``retry`` and the key/value
backends' ``objects`` it wraps.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

_once: ContextVar[bool] = ContextVar("store_asked_once", default=False)


@contextlib.contextmanager
def asked_once() -> Iterator[None]:
    """Store calls in this block (on this thread) get one attempt each."""
    token = _once.set(True)
    try:
        yield
    finally:
        _once.reset(token)


def is_asked_once() -> bool:
    """Whether the calls made now are inside ``asked_once``."""
    return _once.get()
