"""``mtree``: list a catar, a caidx's archive, or a directory in mtree format.

A directory is encoded (with the given feature flags) and decoded again on
the fly, as desync does, so the listing shows exactly what ``tar`` would store.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from typing import BinaryIO

from desync_decl.archive.mtree import mtree_lines
from desync_decl.archive.streams import IterReader
from desync_decl.formats.catar import Decoder
from desync_decl.formats.catar.features import DESYNC_TAR
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index
from desync_decl.ops.tar import TarInput
from desync_decl.ops.untar import catar_decoder
from desync_decl.stores.base import Store


def mtree(
    archive: BinaryIO | Index,
    *,
    store: Store | None = None,
    digest: Digest = Digest.SHA512_256,
    concurrency: int = 10,
    source: str = "archive",
) -> Iterator[str]:
    """Lines of the listing of a catar stream or an index's archive (without newlines)."""
    yield from mtree_lines(
        catar_decoder(archive, store, source=source, concurrency=concurrency), digest
    )


def mtree_dir(
    path: str | os.PathLike, *, flags: int = DESYNC_TAR, digest: Digest = Digest.SHA512_256
) -> Iterator[str]:
    """Lines of the listing of a directory, as ``tar`` with ``flags`` would archive it."""
    with TarInput(path, flags=flags).stream() as pieces:
        reader = io.BufferedReader(IterReader(pieces), 1 << 20)  # type: ignore[arg-type]  # no payload deferred: Buffers
        yield from mtree_lines(Decoder(reader, os.fsdecode(path)), digest)
