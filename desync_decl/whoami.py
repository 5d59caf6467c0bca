"""Who this process is, as lock records name it: one way for every lock to find it.

The user is the effective uid's name from the password database, never ``LOGNAME``
or ``USER`` (which whoever starts the process sets as they like): a lock record
says who really holds it.
"""

from __future__ import annotations

import os
import pwd


def user_name() -> str:
    """The effective user's name, or its uid when the password database has none."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def host_name() -> str:
    """The host's name, as ``gethostname`` gives it (the kernel's node name), read
    without importing ``socket``: every command that may take a store lock imports
    this module, and ``socket`` alone took 2 ms of each one's start-up."""
    return os.uname().nodename
