"""casync feature flags: the u64 in every index header and catar ENTRY.

casync normalizes flags on write and refuses un-normalized or unknown bits on
read (the bits are in casync's src/caformat.h, the rule in
ca_feature_flags_normalize, src/caformat-util.c); so do we.
"""

from __future__ import annotations

WITH_16BIT_UIDS = 0x1
WITH_32BIT_UIDS = 0x2
WITH_USER_NAMES = 0x4
WITH_SEC_TIME = 0x8
WITH_USEC_TIME = 0x10
WITH_NSEC_TIME = 0x20
WITH_2SEC_TIME = 0x40
WITH_READ_ONLY = 0x80
WITH_PERMISSIONS = 0x100
FLAG_NODUMP = 0x100000
WITH_SUBVOLUME = 0x4000000
WITH_SUBVOLUME_RO = 0x8000000
WITH_ACL = 0x20000000
WITH_QUOTA_PROJID = 0x100000000
EXCLUDE_FILE = 0x1000000000000000
SHA512_256 = 0x2000000000000000
EXCLUDE_SUBMOUNTS = 0x4000000000000000
EXCLUDE_NODUMP = 0x8000000000000000

WITH_MASK = (WITH_QUOTA_PROJID << 1) - 1  # every "with" bit from 0x1 to quota-projid
SUPPORTED = WITH_MASK | EXCLUDE_FILE | SHA512_256 | EXCLUDE_SUBMOUNTS | EXCLUDE_NODUMP

# What `casync make` writes for a blob (exclude-file, sha512-256, exclude-nodump).
BLOB_DEFAULT = EXCLUDE_FILE | SHA512_256 | EXCLUDE_NODUMP


def normalize(flags: int) -> int:
    """Apply casync's normalization rules (redundant bits cleared, implied bits set)."""
    if flags & WITH_32BIT_UIDS:
        flags &= ~WITH_16BIT_UIDS
    if flags & WITH_NSEC_TIME:
        flags &= ~(WITH_USEC_TIME | WITH_SEC_TIME | WITH_2SEC_TIME)
    if flags & WITH_USEC_TIME:
        flags &= ~(WITH_SEC_TIME | WITH_2SEC_TIME)
    if flags & WITH_SEC_TIME:
        flags &= ~WITH_2SEC_TIME
    if flags & WITH_ACL:
        flags &= ~(WITH_PERMISSIONS | WITH_READ_ONLY)
        if not flags & (WITH_16BIT_UIDS | WITH_32BIT_UIDS):
            flags |= WITH_32BIT_UIDS | WITH_USER_NAMES
    if flags & WITH_PERMISSIONS:
        flags &= ~WITH_READ_ONLY
    if flags & EXCLUDE_NODUMP:
        flags &= ~FLAG_NODUMP
    if flags & WITH_SUBVOLUME_RO:
        flags |= WITH_SUBVOLUME
    return flags


def problem(flags: int) -> str | None:
    """Why casync would refuse these flags, or None when they are fine."""
    unknown = flags & ~SUPPORTED
    if unknown:
        return f"unsupported feature flags 0x{unknown:x}"
    if normalize(flags) != flags:
        return f"feature flags 0x{flags:016x} are not normalized (0x{normalize(flags):016x})"
    return None
