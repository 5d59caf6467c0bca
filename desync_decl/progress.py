"""Progress reporting through a callback object, so the library never prints.

Worker threads call ``advance`` concurrently; implementations must lock.
The default ``NO_PROGRESS`` does nothing. The CLI picks a terminal bar.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, stage: str, total: int) -> None:
        """A new stage begins; ``total`` is in bytes (0 when unknown)."""
        ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class _NoProgress:
    def start(self, stage: str, total: int) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()
