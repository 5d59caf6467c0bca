"""``untar``: a catar (a file, or the chunks of a caidx in a store) into a
directory, confined to it, or re-encoded as a GNU tar stream.

The archive is decoded as it streams in: nothing is held whole in memory, and
chunks of an index are fetched ahead by a bounded pool.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import BinaryIO

from desync_decl.archive.disk_writer import UntarStats, WriteOptions, write_tree
from desync_decl.archive.streams import index_reader
from desync_decl.archive.tar_writer import write_tar
from desync_decl.formats.catar import Decoder
from desync_decl.formats.index import Index
from desync_decl.stores.base import Store


@dataclass(frozen=True)
class UntarResult:
    target: str
    stats: UntarStats
    flags: int | None  # the archive's feature flags


def catar_decoder(
    archive: BinaryIO | Index, store: Store | None = None, *, source: str, concurrency: int = 10
) -> Decoder:
    """A decoder over a catar stream, or over an index's chunks fetched from ``store``."""
    if isinstance(archive, Index):
        if store is None:
            raise ValueError("an index needs a store")
        return Decoder(index_reader(archive, store, concurrency=concurrency), source)
    return Decoder(archive, source)


def untar(
    archive: BinaryIO | Index,
    target: str | os.PathLike,
    *,
    store: Store | None = None,
    same_owner: bool = True,
    same_permissions: bool = True,
    concurrency: int = 10,
    source: str = "archive",
) -> UntarResult:
    """Extract into the directory ``target`` (created if missing)."""
    decoder = catar_decoder(archive, store, source=source, concurrency=concurrency)
    stats = write_tree(decoder, target, WriteOptions(same_owner, same_permissions))
    return UntarResult(os.fsdecode(target), stats, decoder.flags)


def untar_to_tar(
    archive: BinaryIO | Index,
    out: BinaryIO,
    *,
    store: Store | None = None,
    concurrency: int = 10,
    source: str = "archive",
) -> UntarResult:
    """Write the archive's tree as a GNU tar stream to ``out``."""
    decoder = catar_decoder(archive, store, source=source, concurrency=concurrency)
    stats = write_tar(decoder, out)
    return UntarResult("-", stats, decoder.flags)
