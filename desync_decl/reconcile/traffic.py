"""What a task's transfers come to: plain bytes, and the bytes that cross the network.

Plain bytes are chunk bytes as the index counts them. Over the network a remote
store sends its chunks as it holds them (compressed, usually): its
``stored_bytes``, which the plan takes from the store where it tells sizes and
counts as plain bytes where it does not (``estimated``). A store in a local
directory, or a cache's own copy, moves nothing over the network. An upload's
network bytes are always an estimate (chunks are compressed as they are stored).

The text plan's ``network:`` lines say these per task; the Markdown plan's totals
row adds them over the plan.
"""

from __future__ import annotations

from dataclasses import dataclass

from desync_decl.reconcile.model import Travel


@dataclass(frozen=True)
class Traffic:
    plain: int = 0
    network: int = 0
    estimated: bool = False  # network counts plain bytes where a size is unknown

    def __add__(self, other: Traffic) -> Traffic:
        return Traffic(
            self.plain + other.plain,
            self.network + other.network,
            self.estimated or other.estimated,
        )


def fetched(t: Travel) -> Traffic:
    """Read from stores: all of them for plain bytes, the remote ones for the network."""
    remote = [s for s in t.stores if s.remote and s.stored_bytes is not None]
    return Traffic(
        sum(s.bytes for s in t.stores),
        sum(s.stored_bytes or 0 for s in remote),
        any(s.stored_estimated for s in remote),
    )


def uploaded(t: Travel) -> Traffic:
    """Written to a store: plain bytes, and an estimate of the network's when remote."""
    u = t.upload
    if u is None:
        return Traffic()
    over = u.remote and u.stored_bytes is not None and u.chunks > 0
    return Traffic(u.bytes, (u.stored_bytes or 0) if over else 0, over)
