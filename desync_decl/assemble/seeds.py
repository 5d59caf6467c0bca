"""Seeds: files that already hold some of the target's chunks, and how users name them.

A seed is a file plus an index saying which chunk sits where in it. desync
names a seed by its index (``--seed path/x.caibx`` means the blob ``path/x``,
or ``--seed INDEX:BLOB``) or lets a directory be searched (``--seed-dir``);
a file without an index (``--seed-file``) is chunked on the fly by the caller.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index

INDEX_SUFFIX = ".caibx"


@dataclass(frozen=True)
class Seed:
    path: Path  # the file holding the data
    index: Index  # which chunk sits where in it
    label: str  # how the user named it, for messages and plans


@dataclass(frozen=True)
class SeedSpec:
    """A seed as named on the command line or in a manifest, not yet opened."""

    file: Path
    index: Path | None  # None: no index, chunk the file with the target's parameters


def parse_seed_arg(arg: str) -> SeedSpec:
    """desync's ``--seed`` forms: ``x.caibx`` (blob ``x`` beside it) or ``INDEX:BLOB``."""
    if arg.endswith(INDEX_SUFFIX):
        return SeedSpec(file=Path(arg[: -len(INDEX_SUFFIX)]), index=Path(arg))
    parts = arg.split(":")
    if len(parts) >= 2 and parts[0] and parts[1]:
        return SeedSpec(file=Path(parts[1]), index=Path(parts[0]))
    raise DesyncError(
        f"seed {arg!r}: expected INDEX{INDEX_SUFFIX} (its blob beside it) or INDEX:BLOB"
    )


def seeds_in_dir(directory: str | os.PathLike, *, exclude: Path | None = None) -> list[SeedSpec]:
    """Every ``*.caibx`` under ``directory`` whose blob exists, in a stable order;
    ``exclude`` (the index being extracted) is left out."""
    root = Path(directory)
    if not root.is_dir():
        raise DesyncError(f"seed directory {root}: not a directory")
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            index = Path(dirpath, name)
            if not name.endswith(INDEX_SUFFIX) or index.resolve() == skip:
                continue
            blob = index.with_name(name[: -len(INDEX_SUFFIX)])
            if blob.is_file() or blob.is_block_device():
                found.append(SeedSpec(file=blob, index=index))
    return found
