"""Upload bodies moved to disk as they arrive: a slow or large upload holds a file, not memory.

A probe found each upload held in memory at 1.5 to 2 times its size (2 GiB
per connection at the 1 GiB index limit). Here a service reads a body in
pieces of at most ``PIECE`` bytes (``Body.read``), hands each to a check (an
index's structure) and writes it to a file: the final file's temp file
(index-server) or an unnamed spool file (chunk-server). Spool files are made
with ``tempfile.TemporaryFile``: mode 0600 (nobody else reads a half-received
upload), unnamed (O_TMPFILE) where the filesystem can, so that a failed
upload, a killed server or a crash leaves nothing behind; in the store's own
directory where the store is local, so an upload lands on the store's disk
and not in a RAM-backed /tmp.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from typing import IO

from desync_decl.fsutil import write_all
from desync_decl.server.messages import Body

PIECE = 1 << 20  # bytes asked of a body at once


def receive(body: Body, length: int, fd: int, check: Callable[[bytes], None] | None = None) -> None:
    """Write exactly ``length`` bytes of ``body`` to ``fd``, each piece through ``check``
    first (which raises to refuse the upload before the rest is read)."""
    left = length
    while left:
        piece = body.read(min(PIECE, left))
        if not piece:
            raise ConnectionError("the body ended before its announced length")
        if check is not None:
            check(piece)
        write_all(fd, piece)
        left -= len(piece)


def spool(directory: str | None) -> IO[bytes]:
    """An unnamed 0600 file in ``directory`` (None: the system's temp directory)."""
    return tempfile.TemporaryFile(dir=directory)
