"""Decoded catar nodes as a GNU tar stream (``untar --output-format gnu-tar``).

Written as desync writes it (Go's archive/tar in GNU format), so desync's own
``testdata/complex.gnu-tar`` is what ``complex.catar`` gives, byte for byte but for
one field: names as in the archive (``.`` for the root, then ``a``, ``a/b``, no
trailing ``/``), GNU magic, a name or link target longer than 100 bytes in a GNU
``././@LongLink`` entry before its header, numbers too large for octal in GNU's
base-256, times in whole seconds (GNU's format has no finer field), the archive
closed by two zero blocks. The exception is the mode: desync writes Go's
``os.FileMode`` there (its own type bits, in base-256), which GNU tar masks and other
readers take as a mode; we write the permission bits in octal, as GNU tar does.

A PAX extended header comes before a member only for what GNU's header cannot
hold: extended attributes (``SCHILY.xattr.NAME`` records, as GNU tar's ``--xattrs``
writes them; the ones ``untar`` would set: feature_gates.py), a user or group name
longer than its 32-byte field, an owner id too large for base-256. desync cannot
write xattrs of a directory, file or symlink at all (Go refuses them in GNU format).
"""

from __future__ import annotations

import os
import stat
from typing import BinaryIO

from desync_decl.archive.disk_writer import UntarStats
from desync_decl.formats.catar.decoder import Decoder, DirEnd, Node
from desync_decl.formats.catar.feature_gates import applied_xattrs

BLOCK = 512
_GNU_MAGIC = b"ustar  \0"  # magic and version of GNU's format
_POSIX_MAGIC = b"ustar\x0000"  # of POSIX's, for the PAX extended header
_TYPES = {
    stat.S_IFREG: b"0",
    stat.S_IFLNK: b"2",
    stat.S_IFCHR: b"3",
    stat.S_IFBLK: b"4",
    stat.S_IFDIR: b"5",
    stat.S_IFIFO: b"6",
}
_LONG_NAME, _LONG_LINK, _PAX = b"L", b"K", b"x"
_NAME_FIELD = 100
_OWNER_NAME_FIELD = 32


def write_tar(decoder: Decoder, out: BinaryIO) -> UntarStats:
    stats = UntarStats()
    for ev in decoder:
        if isinstance(ev, DirEnd):
            continue
        fmt = stat.S_IFMT(ev.entry.mode)
        if fmt == stat.S_IFSOCK:
            stats.others += 1  # tar has no sockets (GNU tar skips them too)
            continue
        out.write(member_headers(ev, fmt))
        if fmt == stat.S_IFREG:
            for block in decoder.payload():
                out.write(block)
            out.write(bytes(-ev.size % BLOCK))
        stats.count(fmt, ev.size)
    out.write(bytes(2 * BLOCK))
    return stats


def member_headers(node: Node, fmt: int) -> bytes:
    """The header blocks of one member: a PAX extended header if it needs one, GNU
    long-name and long-link entries if it needs them, then its GNU header."""
    e = node.entry
    name = b"/".join(node.path) if node.path else b"."
    target = node.target if fmt == stat.S_IFLNK else b""
    user, group = e.user or b"", e.group or b""
    pax: list[tuple[bytes, bytes]] = [(b"SCHILY.xattr." + k, v) for k, v in applied_xattrs(e)]
    for key, value in ((b"uname", user), (b"gname", group)):
        if len(value) > _OWNER_NAME_FIELD:
            pax.append((key, value))
    for key, number in ((b"uid", e.uid), (b"gid", e.gid)):
        if not _fits(number, 8):
            pax.append((key, b"%d" % number))
    major, minor = (os.major(node.rdev), os.minor(node.rdev)) if fmt in (
        stat.S_IFCHR, stat.S_IFBLK
    ) else (0, 0)  # fmt: skip
    parts = []
    if pax:
        parts.append(_extended(_PAX, b"././@PaxHeader", _pax_records(pax), _POSIX_MAGIC))
    if len(name) > _NAME_FIELD:
        parts.append(_extended(_LONG_NAME, b"././@LongLink", name + b"\0", _GNU_MAGIC))
    if len(target) > _NAME_FIELD:
        parts.append(_extended(_LONG_LINK, b"././@LongLink", target + b"\0", _GNU_MAGIC))
    parts.append(
        _header(
            name=name,
            mode=e.mode & 0o7777,
            uid=e.uid if _fits(e.uid, 8) else 0,
            gid=e.gid if _fits(e.gid, 8) else 0,
            size=node.size if fmt == stat.S_IFREG else 0,
            mtime=e.mtime // 10**9,
            type=_TYPES[fmt],
            link=target,
            user=user if len(user) <= _OWNER_NAME_FIELD else b"",
            group=group if len(group) <= _OWNER_NAME_FIELD else b"",
            major=major,
            minor=minor,
        )
    )
    return b"".join(parts)


def _extended(type: bytes, name: bytes, data: bytes, magic: bytes) -> bytes:
    """A header whose data describes the next member, and that data, padded."""
    head = _header(name=name, size=len(data), type=type, magic=magic, devices=False)
    return head + data + bytes(-len(data) % BLOCK)


def _pax_records(records: list[tuple[bytes, bytes]]) -> bytes:
    """PAX records: ``LEN KEY=VALUE\\n``, LEN counting the whole record."""
    out = []
    for key, value in records:
        body = b" " + key + b"=" + value + b"\n"
        n = len(body) + 1
        while len(b"%d" % n) + len(body) != n:
            n += 1
        out.append(b"%d" % n + body)
    return b"".join(out)


def _header(
    *,
    name: bytes,
    type: bytes,
    mode: int = 0,
    uid: int = 0,
    gid: int = 0,
    size: int = 0,
    mtime: int = 0,
    link: bytes = b"",
    user: bytes = b"",
    group: bytes = b"",
    major: int = 0,
    minor: int = 0,
    magic: bytes = _GNU_MAGIC,
    devices: bool = True,
) -> bytes:
    """One 512-byte header block. Names longer than their field are cut (the whole
    name is in a long-name entry before it); ``devices`` False leaves the device
    number fields empty, as Go's archive/tar does in its extended headers."""
    block = bytearray(BLOCK)
    block[0:100] = _field(name, 100)
    block[100:108] = _number(mode, 8)
    block[108:116] = _number(uid, 8)
    block[116:124] = _number(gid, 8)
    block[124:136] = _number(size, 12)
    block[136:148] = _number(mtime, 12)
    block[156:157] = type
    block[157:257] = _field(link, 100)
    block[257:265] = magic
    block[265:297] = user.ljust(32, b"\0")
    block[297:329] = group.ljust(32, b"\0")
    if devices:
        block[329:337] = _number(major, 8)
        block[337:345] = _number(minor, 8)
    block[148:156] = b" " * 8  # the checksum counts its own field as spaces
    block[148:156] = b"%06o\0 " % sum(block)
    return bytes(block)


def _field(name: bytes, width: int) -> bytes:
    """A name in a field of ``width`` bytes: cut to fit, without the ``/`` a cut can
    leave at its end (readers would take a file for a directory), NUL-padded."""
    if len(name) > width:
        name = name[:width].rstrip(b"/")
    return name.ljust(width, b"\0")


def _fits(value: int, width: int) -> bool:
    """Whether a numeric field of ``width`` bytes holds ``value`` (octal or base-256)."""
    return 0 <= value < 1 << (8 * (width - 1))


def _number(value: int, width: int) -> bytes:
    """``value`` in a numeric field: octal digits and a NUL, or GNU's base-256 (the
    high bit set, then the value big-endian) where octal has too few digits."""
    if value < 8 ** (width - 1):
        return b"%0*o\0" % (width - 1, value)
    return bytes([0x80]) + value.to_bytes(width - 1, "big")
