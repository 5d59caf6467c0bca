"""Chunk files made old, as they are when a prune runs a day after they were written:
prune keeps chunks younger than its minimum age (an hour by default)."""

from __future__ import annotations

import os
import time
from pathlib import Path

A_DAY = 24 * 3600


def backdate(store: Path, seconds: float = A_DAY) -> None:
    """Set the modification time of every file in the local store ``store`` back by
    ``seconds``."""
    when = time.time() - seconds
    for path in store.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.utime(path, (when, when))
