"""Directory trees for the ``tar`` and ``untar`` kinds: a tree's fingerprint (walked by
``archive.tree_walk``) and the index it would get.

The fingerprint is one ``lstat`` per entry (path, type, mode, owner, size,
mtime, ctime, inode), hashed: any write, rename, chmod, chown, xattr or ACL
change moves an mtime or a ctime, so a matching fingerprint means "as we left
it" without reading a byte of content. ``tree_index`` is what ``tar -i`` would
write for a tree, computed through ``ops.tar.tar_index`` with a store that
keeps nothing.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct

from desync_decl.archive.patterns import Patterns
from desync_decl.archive.tree_walk import open_tree, walk
from desync_decl.formats import flags as ff
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.ops.tar import TarInput, tar_index
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.dry import DryStore

_STAT = struct.Struct("<IIIQqqQQ")


def fingerprint(
    root: str | os.PathLike, *, one_file_system: bool = False, action: str = "read"
) -> str | None:
    """``sha256:<hex>`` over every entry's lstat; None when ``root`` does not exist
    (``open_tree``, errors saying ``action``)."""
    fd = open_tree(root, action)
    if fd is None:
        return None
    try:
        h = hashlib.sha256()
        for rel, st in walk(fd, os.fsdecode(root), one_file_system=one_file_system):
            h.update(rel + b"\0")
            h.update(
                _STAT.pack(
                    st.st_mode,
                    st.st_uid,
                    st.st_gid,
                    st.st_size,
                    st.st_mtime_ns,
                    st.st_ctime_ns,
                    st.st_ino,
                    st.st_rdev,
                )
            )
    finally:
        os.close(fd)
    return f"sha256:{h.hexdigest()}"


def tree_index(
    root: str | os.PathLike,
    flags: int,
    sizes: ChunkSizes,
    *,
    concurrency: int,
    progress: Progress = NO_PROGRESS,
    patterns: Patterns | None = None,
) -> Index:
    """The index ``tar -i`` with ``flags``, ``sizes`` and ``patterns`` would write for
    ``root``."""
    one_file_system = bool(flags & ff.EXCLUDE_SUBMOUNTS)
    source = TarInput(root, flags=flags, one_file_system=one_file_system, patterns=patterns)
    result = tar_index(
        source,
        DryStore(),
        sizes=sizes,
        concurrency=concurrency,
        progress=progress,
        stage="reading tree",
    )
    assert result.index is not None
    return result.index


def mount_point_at_or_below(root: str | os.PathLike) -> str | None:
    """A mount point at ``root`` or below it, by ``/proc/self/mountinfo`` (None if
    none, or unknown): what ``state: absent`` must not empty, said before anything
    is deleted (the deletion itself stops at one too)."""
    try:
        with open("/proc/self/mountinfo", "rb") as f:
            table = f.read()
    except OSError:
        return None
    real = os.fsencode(os.path.realpath(root))
    below = real.rstrip(b"/") + b"/"
    for line in table.splitlines():
        fields = line.split(b" ")
        if len(fields) > 4:
            point = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), fields[4])
            if point == real or point.startswith(below):
                return os.fsdecode(point)
    return None


def repeated(index: Index) -> set[ChunkID]:
    """The chunks an index lists more than once."""
    seen: set[ChunkID] = set()
    again: set[ChunkID] = set()
    for c in index:
        (again if c.id in seen else seen).add(c.id)
    return again
