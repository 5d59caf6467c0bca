"""A module's logger, with ``logging`` loaded when there is something to log.

``logging`` (and ``traceback``, ``string``, ``textwrap`` behind it) costs ~5 ms
of a command's start-up. A module on a hot verb's path that logs only now and then
(a warning before an upload, what an untar could not restore) asks for its logger
here when it logs, so a command with nothing to say never loads it; the CLI's
handler is attached when it is loaded (``cli/logs.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import logging


def logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)``, ``logging`` imported now."""
    import logging

    return logging.getLogger(name)
