"""Decoded catar nodes as a tar stream (``untar --output-format gnu-tar``).

GNU format headers (long names through GNU's LongLink records); a member with
xattrs or a sub-second mtime gets a PAX header instead (``SCHILY.xattr.*``
records, exact ``mtime``), as GNU tar's posix format writes them. The xattrs are
those ``untar`` would set (capabilities and labels included, as far as the
archive's feature flags cover them: feature_gates.py). Names are
relative: ``./`` for the root, then ``./a/b``, so our ``tar --input-format
tar`` reads the stream back as it was.
"""

from __future__ import annotations

import os
import stat
import tarfile
from typing import BinaryIO, Literal

from desync_decl.archive.disk_writer import UntarStats
from desync_decl.formats.catar.decoder import Decoder, DirEnd, Node
from desync_decl.formats.catar.feature_gates import applied_xattrs

_BLOCK = tarfile.BLOCKSIZE
_RECORD = tarfile.RECORDSIZE
_TYPES = {
    stat.S_IFREG: tarfile.REGTYPE,
    stat.S_IFDIR: tarfile.DIRTYPE,
    stat.S_IFLNK: tarfile.SYMTYPE,
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}


def write_tar(decoder: Decoder, out: BinaryIO) -> UntarStats:
    stats = UntarStats()
    written = 0
    for ev in decoder:
        if isinstance(ev, DirEnd):
            continue
        fmt = stat.S_IFMT(ev.entry.mode)
        if fmt == stat.S_IFSOCK:
            stats.others += 1  # tar has no sockets (GNU tar skips them too)
            continue
        info, pax = _info(ev, fmt)
        head = info.tobuf(pax, "utf-8", "surrogateescape")
        out.write(head)
        written += len(head)
        if fmt == stat.S_IFREG:
            for block in decoder.payload():
                out.write(block)
            pad = -ev.size % _BLOCK
            out.write(bytes(pad))
            written += ev.size + pad
        stats.count(fmt, ev.size)
    end = 2 * _BLOCK + (-(written + 2 * _BLOCK) % _RECORD)
    out.write(bytes(end))
    return stats


def _info(node: Node, fmt: int) -> tuple[tarfile.TarInfo, Literal[1, 2]]:
    """The member's header, and its format: GNU, or PAX where xattrs or ns times need it."""
    e = node.entry
    name = "./" + "/".join(os.fsdecode(p) for p in node.path)
    info = tarfile.TarInfo(name + "/" if fmt == stat.S_IFDIR and node.path else name)
    info.type = _TYPES[fmt]
    info.mode = e.mode & 0o7777
    info.uid, info.gid = e.uid, e.gid
    info.uname = os.fsdecode(e.user) if e.user else ""
    info.gname = os.fsdecode(e.group) if e.group else ""
    info.mtime = e.mtime // 10**9
    if fmt == stat.S_IFREG:
        info.size = node.size
    elif fmt == stat.S_IFLNK:
        info.linkname = os.fsdecode(node.target)
    elif fmt in (stat.S_IFCHR, stat.S_IFBLK):
        info.devmajor, info.devminor = os.major(node.rdev), os.minor(node.rdev)
    xattrs = applied_xattrs(e)
    if not xattrs and not e.mtime % 10**9:
        return info, tarfile.GNU_FORMAT
    info.pax_headers = {
        "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
        for k, v in xattrs
    }
    info.pax_headers["mtime"] = f"{e.mtime // 10**9}.{e.mtime % 10**9:09d}"
    return info, tarfile.PAX_FORMAT
