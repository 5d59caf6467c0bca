"""Linux inode attributes beyond stat: chattr flags, quota project ids, owner names.

chattr flags (``FS_IOC_GETFLAGS``) map to the catar's flag-* feature bits;
filesystems without them (tmpfs, proc, ...) answer ENOTTY and count as "none".
"""

from __future__ import annotations

import errno
import fcntl
import grp
import operator
import os
import pwd
import struct
from collections.abc import Callable, Sequence
from functools import lru_cache, reduce

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IOC_FSGETXATTR = 0x801C581F
FS_IOC_FSSETXATTR = 0x401C5820
_FSXATTR = struct.Struct("<5I8x")  # xflags, extsize, nextents, projid, cowextsize, pad

FS_NODUMP_FL = 0x40
FS_IMMUTABLE_FL = 0x10
FS_APPEND_FL = 0x20
# kernel chattr bit -> catar feature bit
CHATTR_TO_FEATURE = {
    0x20: 0x10000,  # append      -> flag-append
    0x80: 0x20000,  # noatime     -> flag-noatime
    0x4: 0x40000,  # compr        -> flag-compr
    0x800000: 0x80000,  # nocow   -> flag-nocow
    0x40: 0x100000,  # nodump     -> flag-nodump
    0x10000: 0x200000,  # dirsync -> flag-dirsync
    0x10: 0x400000,  # immutable  -> flag-immutable
    0x8: 0x800000,  # sync        -> flag-sync
    0x400: 0x1000000,  # nocomp   -> flag-nocomp
    0x20000000: 0x2000000,  # projinherit -> flag-projinherit
}
_UNSUPPORTED = (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def _ioctl(fd: int, request: int, buf: bytearray) -> bool:
    """False when the filesystem does not have the attribute; other errors raise."""
    try:
        fcntl.ioctl(fd, request, buf)
    except OSError as e:
        if e.errno in _UNSUPPORTED:
            return False
        raise
    return True


def chattr_flags(fd: int) -> int:
    """The kernel's chattr bits of an open file or directory (0 where unsupported)."""
    buf = bytearray(8)
    return int.from_bytes(buf[:4], "little") if _ioctl(fd, FS_IOC_GETFLAGS, buf) else 0


_MAPPED_CHATTR = reduce(operator.or_, CHATTR_TO_FEATURE)


def to_features(chattr: int, wanted: int) -> int:
    """chattr bits as catar feature bits, limited to the ``wanted`` feature bits."""
    if not chattr & _MAPPED_CHATTR:
        return 0  # most files: no loop
    out = 0
    for kbit, fbit in CHATTR_TO_FEATURE.items():
        if chattr & kbit:
            out |= fbit
    return out & wanted


def from_features(features: int) -> int:
    out = 0
    for kbit, fbit in CHATTR_TO_FEATURE.items():
        if features & fbit:
            out |= kbit
    return out


def set_chattr(fd: int, add: int) -> bool:
    """Add chattr bits to an open file; False when the filesystem has none."""
    current = chattr_flags(fd)
    if current | add == current:
        return True
    return _ioctl(fd, FS_IOC_SETFLAGS, bytearray((current | add).to_bytes(8, "little")))


def project_id(fd: int) -> int:
    buf = bytearray(_FSXATTR.size)
    return int(_FSXATTR.unpack(buf)[3]) if _ioctl(fd, FS_IOC_FSGETXATTR, buf) else 0


def set_project_id(fd: int, projid: int) -> bool:
    buf = bytearray(_FSXATTR.size)
    if not _ioctl(fd, FS_IOC_FSGETXATTR, buf):
        return False
    fields = list(_FSXATTR.unpack(buf))
    fields[3] = projid
    return _ioctl(fd, FS_IOC_FSSETXATTR, bytearray(_FSXATTR.pack(*fields)))


BTRFS_FIRST_FREE_OBJECTID = 256  # the inode number of every btrfs subvolume's root
BTRFS_IOC_SUBVOL_CREATE = 0x5000940E
BTRFS_IOC_SUBVOL_GETFLAGS = 0x80089419
BTRFS_IOC_SUBVOL_SETFLAGS = 0x4008941A
BTRFS_SUBVOL_RDONLY = 0x2
_VOL_ARGS = struct.Struct("<q4088s")  # struct btrfs_ioctl_vol_args: fd, name


def subvolume(fd: int, ino: int) -> tuple[bool, bool]:
    """(is a btrfs subvolume, is read-only) for an open directory."""
    if ino != BTRFS_FIRST_FREE_OBJECTID:
        return False, False
    buf = bytearray(8)
    if not _ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf):
        return False, False  # inode 256 on another filesystem
    return True, bool(int.from_bytes(buf, "little") & BTRFS_SUBVOL_RDONLY)


def create_subvolume(parent_fd: int, name: bytes) -> bool:
    """Make ``name`` in ``parent_fd`` a new btrfs subvolume; False when not on btrfs."""
    return _ioctl(parent_fd, BTRFS_IOC_SUBVOL_CREATE, bytearray(_VOL_ARGS.pack(0, name)))


def set_subvolume_read_only(fd: int) -> bool:
    buf = bytearray(8)
    if not _ioctl(fd, BTRFS_IOC_SUBVOL_GETFLAGS, buf):
        return False
    flags = int.from_bytes(buf, "little") | BTRFS_SUBVOL_RDONLY
    return _ioctl(fd, BTRFS_IOC_SUBVOL_SETFLAGS, bytearray(flags.to_bytes(8, "little")))


@lru_cache(maxsize=4096)
def user_name(uid: int) -> bytes:
    """The user's name, or b"" when the id has none here."""
    return _name(pwd.getpwuid, uid)


@lru_cache(maxsize=4096)
def group_name(gid: int) -> bytes:
    return _name(grp.getgrgid, gid)


def _name(lookup: Callable[[int], Sequence[object]], ident: int) -> bytes:
    try:
        return os.fsencode(str(lookup(ident)[0]))
    except KeyError:
        return b""
