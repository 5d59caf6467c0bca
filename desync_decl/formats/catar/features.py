"""What an archive's feature flags ask for, and casync's ``--with``/``--without`` names.

The flags (shared with index headers, see ``formats/flags.py``) decide which
node types are stored and how precisely: this module turns a file's stat
values into the ENTRY values casync would write for the same flags.
"""

from __future__ import annotations

import stat
from collections.abc import Callable

from desync_decl.errors import UsageError
from desync_decl.formats import flags as ff

WITH_16BIT_UIDS = ff.WITH_16BIT_UIDS
WITH_32BIT_UIDS = ff.WITH_32BIT_UIDS
WITH_USER_NAMES = ff.WITH_USER_NAMES
WITH_SEC_TIME = ff.WITH_SEC_TIME
WITH_USEC_TIME = ff.WITH_USEC_TIME
WITH_NSEC_TIME = ff.WITH_NSEC_TIME
WITH_2SEC_TIME = ff.WITH_2SEC_TIME
WITH_READ_ONLY = ff.WITH_READ_ONLY
WITH_PERMISSIONS = ff.WITH_PERMISSIONS
WITH_SYMLINKS = 0x200
WITH_DEVICE_NODES = 0x400
WITH_FIFOS = 0x800
WITH_SOCKETS = 0x1000
WITH_XATTRS = 0x10000000
WITH_ACL = ff.WITH_ACL
WITH_SELINUX = 0x40000000
WITH_FCAPS = 0x80000000
WITH_QUOTA_PROJID = ff.WITH_QUOTA_PROJID
CHATTR_FLAGS = 0x3FF0000  # flag-append .. flag-projinherit
NODE_TYPES = (
    stat.S_IFREG,
    stat.S_IFDIR,
    stat.S_IFLNK,
    stat.S_IFCHR,
    stat.S_IFBLK,
    stat.S_IFIFO,
    stat.S_IFSOCK,
)
FAT_FLAGS = 0xE000  # flag-hidden, flag-system, flag-archive

# Feature names as casync's --with= takes them.
NAMES = {
    "16bit-uids": 0x1,
    "32bit-uids": 0x2,
    "user-names": 0x4,
    "sec-time": 0x8,
    "usec-time": 0x10,
    "nsec-time": 0x20,
    "2sec-time": 0x40,
    "read-only": 0x80,
    "permissions": 0x100,
    "symlinks": 0x200,
    "device-nodes": 0x400,
    "fifos": 0x800,
    "sockets": 0x1000,
    "flag-hidden": 0x2000,
    "flag-system": 0x4000,
    "flag-archive": 0x8000,
    "flag-append": 0x10000,
    "flag-noatime": 0x20000,
    "flag-compr": 0x40000,
    "flag-nocow": 0x80000,
    "flag-nodump": 0x100000,
    "flag-dirsync": 0x200000,
    "flag-immutable": 0x400000,
    "flag-sync": 0x800000,
    "flag-nocomp": 0x1000000,
    "flag-projinherit": 0x2000000,
    "subvolume": 0x4000000,
    "subvolume-ro": 0x8000000,
    "xattrs": 0x10000000,
    "acl": 0x20000000,
    "selinux": 0x40000000,
    "fcaps": 0x80000000,
    "quota-projid": 0x100000000,
}
# casync's feature sets before normalization, measured on the Debian casync 2 binary
# (for each bit: does `--with=BIT --without=SET` keep it).
GROUPS = {
    "all": ff.WITH_MASK,
    "best": 0x1FFFFFE26,
    "unix": 0x1F09,
    "fat": 0xE0C0,
    "chattr": CHATTR_FLAGS,
    "fat-attrs": FAT_FLAGS,
    "privileged": 0x1EC414407,
    "fuse": 0x13FFFFFB,
}

# What desync writes in every ENTRY and in a `tar -i` index (its TarFeatureFlags).
DESYNC_TAR = 0xB000000010001F22
# What `casync make DIR` writes by default (as root, every "with" bit, normalized).
CASYNC_DEFAULT = ff.normalize(ff.WITH_MASK | ff.BLOB_DEFAULT)


def parse_features(with_: list[str], without: list[str], default: int) -> int:
    """The "with" bits after ``--with`` (replacing ``default``'s) and ``--without``."""
    bits = default & ff.WITH_MASK
    if with_:
        bits = 0
        for name in with_:
            bits |= _bits(name, "--with")
    for name in without:
        bits &= ~_bits(name, "--without")
    return bits


def _bits(name: str, option: str) -> int:
    value = GROUPS.get(name, NAMES.get(name))
    if value is None:
        known = ", ".join([*GROUPS, *NAMES])
        raise UsageError(f"{option}: unknown feature '{name}' (known: {known})")
    return value


def archive_flags(
    with_bits: int,
    *,
    sha512_256: bool = True,
    exclude_nodump: bool = True,
    exclude_file: bool = True,
    exclude_submounts: bool = False,
) -> int:
    """The full, normalized flag word of an archive."""
    flags = with_bits & ff.WITH_MASK
    flags |= ff.SHA512_256 if sha512_256 else 0
    flags |= ff.EXCLUDE_NODUMP if exclude_nodump else 0
    flags |= ff.EXCLUDE_FILE if exclude_file else 0
    flags |= ff.EXCLUDE_SUBMOUNTS if exclude_submounts else 0
    return ff.normalize(flags)


def stores_type(flags: int, mode: int) -> bool:
    """Whether nodes of this type go into an archive with these flags."""
    fmt = stat.S_IFMT(mode)
    if fmt in (stat.S_IFREG, stat.S_IFDIR):
        return True
    needed = {
        stat.S_IFLNK: WITH_SYMLINKS,
        stat.S_IFCHR: WITH_DEVICE_NODES,
        stat.S_IFBLK: WITH_DEVICE_NODES,
        stat.S_IFIFO: WITH_FIFOS,
        stat.S_IFSOCK: WITH_SOCKETS,
    }.get(fmt, 0)
    return bool(flags & needed)


def entry_mode(flags: int, mode: int) -> int:
    """st_mode as casync stores it: exact with permissions/acl, else coarser."""
    fmt = stat.S_IFMT(mode)
    if fmt == stat.S_IFLNK:
        return stat.S_IFLNK | 0o777
    if flags & (WITH_PERMISSIONS | WITH_ACL):
        return fmt | (mode & 0o7777)
    is_dir = fmt == stat.S_IFDIR
    if flags & WITH_READ_ONLY and not mode & 0o222:
        return fmt | (0o555 if is_dir else 0o444)
    return fmt | (0o777 if is_dir else 0o666)


def entry_ids(flags: int, uid: int, gid: int, where: Callable[[], str]) -> tuple[int, int]:
    """The ids an entry stores; ``where`` names the node (for an error, so only then)."""
    if not flags & (WITH_16BIT_UIDS | WITH_32BIT_UIDS):
        return 0, 0
    if not (id_allowed(flags, uid) and id_allowed(flags, gid)):
        width = "32-bit" if flags & WITH_32BIT_UIDS else "16-bit"
        raise UsageError(f"{where()}: uid/gid {uid}/{gid} do not fit the archive's {width} ids")
    return uid, gid


def id_allowed(flags: int, ident: int) -> bool:
    """Whether an id fits the archive's id width, as casync checks it: never
    (uid_t)-1 nor the 16-bit -1, and only 0 when the archive stores no ids."""
    return ident <= max_id(flags) and ident != 0xFFFF


def max_id(flags: int) -> int:
    if flags & WITH_16BIT_UIDS:
        return 0xFFFE
    return 0xFFFFFFFE if flags & WITH_32BIT_UIDS else 0


def entry_mtime(flags: int, mtime_ns: int) -> int:
    """mtime truncated to the archive's granularity (0 when it stores no times)."""
    if flags & WITH_NSEC_TIME:
        return mtime_ns
    for bit, unit in ((WITH_USEC_TIME, 1000), (WITH_SEC_TIME, 10**9), (WITH_2SEC_TIME, 2 * 10**9)):
        if flags & bit:
            return mtime_ns - mtime_ns % unit
    return 0


def stores_xattr(name: bytes) -> bool:
    """casync keeps only user.* and trusted.* as XATTR records (others have their own)."""
    return name.startswith((b"user.", b"trusted."))
