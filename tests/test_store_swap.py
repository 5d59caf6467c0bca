"""``StoreStack``: what is served before and after ``swap`` and ``close``, and that
every store it was given is closed exactly once (a second close of a pooled store
would close connections another user may hold)."""

from __future__ import annotations

import pytest

from desync_decl.stores.base import StoreError
from desync_decl.stores.swap import StoreStack


class Counted:
    """A closable thing (the stack holds chunk and index stores alike)."""

    def __init__(self, name: str) -> None:
        self.name, self.closes = name, 0

    def __str__(self) -> str:
        return self.name

    def close(self) -> None:
        self.closes += 1


def test_close_closes_once_and_nothing_is_served_after():
    first = Counted("first")
    stack = StoreStack(first)
    with stack.use() as leased:
        assert leased is first
    stack.close()
    assert first.closes == 1
    for _ in range(3):
        with pytest.raises(StoreError, match="first: closed"), stack.use():
            pass
    stack.close()
    assert first.closes == 1


def test_a_lease_running_at_close_closes_the_store_when_it_ends():
    first = Counted("first")
    stack = StoreStack(first)
    with stack.use() as leased:
        stack.close()
        assert first.closes == 0  # still being read
        assert leased is first
    assert first.closes == 1
    stack.close()
    assert first.closes == 1


def test_a_swap_closes_the_old_store_once_and_one_after_close_closes_the_new():
    first, second, late = Counted("first"), Counted("second"), Counted("late")
    stack = StoreStack(first)
    with stack.use():
        stack.swap(second)
        assert first.closes == 0
    assert first.closes == 1
    with stack.use() as leased:
        assert leased is second
    stack.close()
    stack.swap(late)  # e.g. a reload racing the shutdown: never served
    assert (first.closes, second.closes, late.closes) == (1, 1, 1)
    with pytest.raises(StoreError), stack.use():
        pass
