"""A catar index (``.caidx``) mounted as a read-only directory tree.

At mount the archive's metadata is read once: the strict catar decoder walks
the stream through a seekable reader, so the payload of a big file is skipped
by seeking rather than fetched. Each node keeps its metadata and, for a file,
where its payload starts in the stream; reading a file is reading the stream
at that offset (chunk cache, prefetch for sequential readers, EIO on a chunk
that cannot be had). Modes, owners, times, symlinks, devices and xattrs are
the archive's; the kernel checks permissions against them.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from desync_decl.formats.catar import Decoder, DirEnd, Entry
from desync_decl.formats.catar.feature_gates import applied_xattrs
from desync_decl.mount.base import Source, SourceFilesystem, no_report
from desync_decl.ops.blobreader import BlobReader, Stream

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer

_BUFFER = 64 << 10  # read-ahead of the metadata scan; a payload past it is skipped by a seek


@dataclass(slots=True)
class TreeNode:
    entry: Entry
    size: int = 0  # regular files: payload bytes; symlinks: target bytes
    offset: int = 0  # regular files: where the payload starts in the stream
    target: bytes = b""
    rdev: int = 0
    children: dict[str, TreeNode] = field(default_factory=dict)
    subdirs: int = 0


class _StreamIO(io.RawIOBase):
    """The indexed stream as a seekable file, read through ``source``."""

    def __init__(self, source: Source, length: int, stream: Stream) -> None:
        super().__init__()
        self._source, self._length, self._stream, self._pos = source, length, stream, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._length}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, b: WriteableBuffer) -> int:
        view = memoryview(b).cast("B")
        data = self._source.read(self._pos, len(view), self._stream)
        view[: len(data)] = data
        self._pos += len(data)
        return len(data)


def load_tree(reader: BlobReader, source: Source, *, name: str = "archive") -> TreeNode:
    """Every node of the catar stream, by name below its directory (the root returned)."""
    raw = _StreamIO(source, reader.length, reader.stream())
    decoder = Decoder(io.BufferedReader(raw, _BUFFER), name)
    stack: list[TreeNode] = []
    root: TreeNode | None = None
    for item in decoder:
        if isinstance(item, DirEnd):
            stack.pop()
            continue
        node = TreeNode(item.entry, item.size, 0, item.target, item.rdev)
        kind = stat.S_IFMT(item.entry.mode)
        if kind == stat.S_IFREG:
            node.offset = decoder.pos  # the decoder has just read the PAYLOAD header
        elif kind == stat.S_IFLNK:
            node.size = len(item.target)
        if stack:
            stack[-1].children[os.fsdecode(item.path[-1])] = node
            stack[-1].subdirs += kind == stat.S_IFDIR
        else:
            root = node
        if kind == stat.S_IFDIR:
            stack.append(node)
    assert root is not None  # the decoder refuses an empty stream
    return root


class TreeFilesystem(SourceFilesystem):
    """FUSE operations over a tree loaded by ``load_tree``."""

    def __init__(
        self,
        reader: BlobReader,
        root: TreeNode,
        *,
        source: Source | None = None,
        report: Callable[[str], None] = no_report,
        on_mount: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(reader, source or reader, report=report, on_mount=on_mount)
        self.root = root
        self._files: dict[int, tuple[str, TreeNode]] = {}

    def _node(self, path: str) -> TreeNode:
        node = self.root
        for part in path.split("/"):
            if not part:
                continue
            if not stat.S_ISDIR(node.entry.mode):
                raise OSError(errno.ENOTDIR, "not a directory")
            found = node.children.get(part)
            if found is None:
                raise OSError(errno.ENOENT, "no such file")
            node = found
        return node

    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        node = self._node(path)
        e = node.entry
        is_dir = stat.S_ISDIR(e.mode)
        return {
            "st_mode": e.mode,
            "st_nlink": 2 + node.subdirs if is_dir else 1,
            "st_uid": e.uid,
            "st_gid": e.gid,
            "st_size": node.size,
            "st_blocks": (node.size + 511) // 512,
            "st_rdev": node.rdev,
            "st_atime": e.mtime,
            "st_mtime": e.mtime,
            "st_ctime": e.mtime,
        }

    def readdir(self, path: str, fh: int) -> list[str]:
        node = self._node(path)
        if not stat.S_ISDIR(node.entry.mode):
            raise OSError(errno.ENOTDIR, "not a directory")
        return [".", "..", *node.children]

    def readlink(self, path: str) -> str:
        node = self._node(path)
        if not stat.S_ISLNK(node.entry.mode):
            raise OSError(errno.EINVAL, "not a symbolic link")
        return os.fsdecode(node.target)

    def open(self, path: str, flags: int) -> int:
        node = self._node(path)
        if not stat.S_ISREG(node.entry.mode):
            raise OSError(errno.EACCES if stat.S_ISDIR(node.entry.mode) else errno.ENXIO, path)
        fh = self._open_handle(flags)
        with self._lock:
            self._files[fh] = (path, node)
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        name, node = self._files[fh]
        size = max(0, min(size, node.size - offset))
        if size == 0:
            return b""
        return self._read(f"{name.lstrip('/')} at {offset}+{size}", node.offset + offset, size, fh)

    def release(self, path: str, fh: int) -> int:
        with self._lock:
            self._files.pop(fh, None)
        return super().release(path, fh)

    def listxattr(self, path: str) -> list[str]:
        return [os.fsdecode(name) for name, _ in applied_xattrs(self._node(path).entry)]

    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        wanted = os.fsencode(name)
        for key, value in applied_xattrs(self._node(path).entry):
            if key == wanted:
                return value
        raise OSError(errno.ENODATA, "no such attribute")
