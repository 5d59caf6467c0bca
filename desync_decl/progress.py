"""Progress reporting through a callback object, so the library never prints.

Worker threads call ``advance`` concurrently; implementations must lock.
The default ``NO_PROGRESS`` does nothing. The CLI picks a terminal bar.
The declarative verbs give each task its own ``TaskProgress`` (``ProgressFor``:
a task's name -> its meter), closed when the task ends, so tasks running at
once (``apply -j N``) each show theirs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

BYTES = "bytes"


class Progress(Protocol):
    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        """A new stage begins; ``total`` (0 when unknown) and each ``advance`` count
        ``unit``: bytes (shown as ``12.5 MiB``), or things such as ``"chunks"``,
        ``"entries"`` (shown as ``1200/4171 chunks``)."""
        ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class TaskProgress(Progress, Protocol):
    def close(self) -> None:
        """The task is over: its meter goes away."""
        ...


ProgressFor = Callable[[str], TaskProgress]


class _NoProgress:
    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        pass

    def advance(self, n: int) -> None:
        pass

    def finish(self) -> None:
        pass

    def close(self) -> None:
        pass


NO_PROGRESS: Progress = _NoProgress()
_NO_TASK_PROGRESS = _NoProgress()


def no_progress_for(task: str) -> TaskProgress:
    """The ``ProgressFor`` that shows nothing."""
    return _NO_TASK_PROGRESS


def shown(progress: Progress) -> bool:
    """Whether ``progress`` is shown to someone: work done only to give a total (a
    walk of the tree before ``tar``) is skipped when nobody watches."""
    return not isinstance(progress, _NoProgress)
