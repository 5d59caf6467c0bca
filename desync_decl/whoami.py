"""Who this process is, as lock records name it: one way for every lock to find it.

The user is the effective uid's name from the password database, never ``LOGNAME``
or ``USER`` (which whoever starts the process sets as they like): a lock record
says who really holds it.
"""

from __future__ import annotations

import os
import pwd
import socket


def user_name() -> str:
    """The effective user's name, or its uid when the password database has none."""
    uid = os.geteuid()
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def host_name() -> str:
    return socket.gethostname()
