"""Progress for reading an archive: a catar decoder that reports how far into the
stream it is, against the stream's length when known (an index's, a file's).

The decoder's position is what moves, whether a payload is read, skipped by a seek
or copied by a worker from the archive file by offset, so the meter follows the
archive, not the writes: entries left as they are still count as done.
"""

from __future__ import annotations

import io
import os
import stat
from collections.abc import Iterator
from typing import BinaryIO

from desync_decl.formats.catar import Decoder, DirEnd, Node
from desync_decl.formats.catar.decoder import BLOCK_SIZE, Leaves
from desync_decl.formats.index import Index
from desync_decl.progress import Progress


class MeteredDecoder(Decoder):
    """A ``Decoder`` that advances ``progress`` by the bytes of stream it passed,
    after every entry and every payload block."""

    def __init__(self, stream: BinaryIO, source: str, progress: Progress) -> None:
        super().__init__(stream, source)
        self._progress = progress
        self._counted = 0

    def _tell(self) -> None:
        if self.pos > self._counted:
            self._progress.advance(self.pos - self._counted)
            self._counted = self.pos

    def events(self, leaves: bool = False) -> Iterator[Node | DirEnd | Leaves]:
        for event in super().events(leaves):
            self._tell()
            yield event
        self._tell()

    def payload(self, block_size: int = BLOCK_SIZE) -> Iterator[bytes]:
        for block in super().payload(block_size):
            self._tell()
            yield block


def archive_length(archive: BinaryIO | Index) -> int:
    """The catar stream's length in bytes: an index's, a regular file's from where it
    is now; 0 for a pipe (unknown)."""
    if isinstance(archive, Index):
        return archive.length
    try:
        st = os.fstat(archive.fileno())
        return max(0, st.st_size - archive.tell()) if stat.S_ISREG(st.st_mode) else 0
    except (OSError, AttributeError, ValueError, io.UnsupportedOperation):
        return 0
