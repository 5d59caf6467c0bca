"""The reference layout of a GOODBYE table's items, in Python, for tests to hold the
C one (``ext/goodbye.c``) to: slot k of an n-item implicit binary search tree
(children of slot k at 2k+1 and 2k+2) holds the item that comes ``layout(n)[k]``-th
in sorted order."""

from __future__ import annotations


def layout(n: int) -> tuple[int, ...]:
    """For each slot of an n-item table, the index of the sorted item it holds."""
    slots = [0] * n
    sorted_index = 0
    stack: list[int] = []
    k = 0
    while stack or k < n:  # in-order walk of the implicit tree
        while k < n:
            stack.append(k)
            k = 2 * k + 1
        k = stack.pop()
        slots[k] = sorted_index
        sorted_index += 1
        k = 2 * k + 2
    return tuple(slots)
