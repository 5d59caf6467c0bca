"""A node's metadata: the ENTRY record and the optional records after it.

Order in the stream (casync's): ENTRY, USER, GROUP, XATTR* (ascending names),
ACL_USER*, ACL_GROUP*, ACL_GROUP_OBJ, ACL_DEFAULT, ACL_DEFAULT_USER*,
ACL_DEFAULT_GROUP* (ascending ids), SELINUX, FCAPS, QUOTA_PROJID. ``encode``
writes that order and ``MetadataReader`` accepts nothing else.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from desync_decl.formats.catar import records as r

NO_MASK = 0xFFFFFFFFFFFFFFFF  # ACL_DEFAULT.mask when the default ACL has no mask entry

_ENTRY = struct.Struct("<2Q6Q")
_U64 = struct.Struct("<Q")
_U64x2 = struct.Struct("<2Q")
_U64x4 = struct.Struct("<4Q")


@dataclass(frozen=True, slots=True)
class AclEntry:
    """A named user or group entry: id, rwx bits (4/2/1) and the name if stored."""

    id: int
    permissions: int
    name: bytes = b""


@dataclass(frozen=True, slots=True)
class DefaultAcl:
    user_obj: int
    group_obj: int
    other: int
    mask: int = NO_MASK


@dataclass(frozen=True, slots=True)
class Acl:
    """The parts of POSIX ACLs that the mode bits do not already hold."""

    users: tuple[AclEntry, ...] = ()
    groups: tuple[AclEntry, ...] = ()
    group_obj: int | None = None  # the owning group's bits when a mask hides them
    default: DefaultAcl | None = None
    default_users: tuple[AclEntry, ...] = ()
    default_groups: tuple[AclEntry, ...] = ()

    def __bool__(self) -> bool:
        return bool(
            self.users
            or self.groups
            or self.group_obj is not None
            or self.default is not None
            or self.default_users
            or self.default_groups
        )


# What a node without ACL records has: one shared value (an Acl is frozen), where a new
# Acl() per ENTRY was six attribute stores for each of a tree's entries.
NO_ACL = Acl()


@dataclass(slots=True)
class Entry:
    feature_flags: int
    mode: int  # st_mode with the type bits
    flags: int = 0  # chattr/FAT attributes as feature-flag bits
    uid: int = 0
    gid: int = 0
    mtime: int = 0  # nanoseconds since the epoch
    user: bytes | None = None
    group: bytes | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    acl: Acl = NO_ACL
    selinux: bytes | None = None
    fcaps: bytes | None = None
    quota_projid: int | None = None


def encode(e: Entry) -> bytes:
    """ENTRY and every optional record of ``e``, in stream order."""
    parts = [
        _ENTRY.pack(r.ENTRY_SIZE, r.ENTRY, e.feature_flags, e.mode, e.flags, e.uid, e.gid, e.mtime)
    ]
    if e.user is not None:
        parts.append(r.record(r.USER, e.user + b"\0"))
    if e.group is not None:
        parts.append(r.record(r.GROUP, e.group + b"\0"))
    for name, value in e.xattrs:
        parts.append(r.record(r.XATTR, name + b"\0" + value))
    acl = e.acl
    if acl:
        parts.extend(_acl_entry(r.ACL_USER, a) for a in acl.users)
        parts.extend(_acl_entry(r.ACL_GROUP, a) for a in acl.groups)
        if acl.group_obj is not None:
            parts.append(r.record(r.ACL_GROUP_OBJ, _U64.pack(acl.group_obj)))
        if acl.default is not None:
            d = acl.default
            parts.append(
                r.record(r.ACL_DEFAULT, _U64x4.pack(d.user_obj, d.group_obj, d.other, d.mask))
            )
        parts.extend(_acl_entry(r.ACL_DEFAULT_USER, a) for a in acl.default_users)
        parts.extend(_acl_entry(r.ACL_DEFAULT_GROUP, a) for a in acl.default_groups)
    if e.selinux is not None:
        parts.append(r.record(r.SELINUX, e.selinux + b"\0"))
    if e.fcaps is not None:
        parts.append(r.record(r.FCAPS, e.fcaps))
    if e.quota_projid is not None:
        parts.append(r.record(r.QUOTA_PROJID, _U64.pack(e.quota_projid)))
    return b"".join(parts)


def _acl_entry(typ: int, a: AclEntry) -> bytes:
    body = _U64x2.pack(a.id, a.permissions)
    return r.record(typ, body + a.name + b"\0" if a.name else body)


def decode_entry(body: bytes) -> Entry:
    """An ENTRY record's body (48 bytes) without the optional records."""
    ff, mode, flags, uid, gid, mtime = struct.unpack("<6Q", body)
    return Entry(ff, mode, flags, uid, gid, mtime)


# Rank of each optional record in the stream; several of one kind only where
# marked (XATTR names and ACL ids must then strictly increase).
_RANK = {
    r.USER: 1,
    r.GROUP: 2,
    r.XATTR: 3,
    r.ACL_USER: 4,
    r.ACL_GROUP: 5,
    r.ACL_GROUP_OBJ: 6,
    r.ACL_DEFAULT: 7,
    r.ACL_DEFAULT_USER: 8,
    r.ACL_DEFAULT_GROUP: 9,
    r.SELINUX: 10,
    r.FCAPS: 11,
    r.QUOTA_PROJID: 12,
}
_REPEATABLE = {r.XATTR, r.ACL_USER, r.ACL_GROUP, r.ACL_DEFAULT_USER, r.ACL_DEFAULT_GROUP}
METADATA_TYPES = frozenset(_RANK)


class MetadataError(ValueError):
    """An optional record that is malformed or out of order (the caller adds the offset)."""


class MetadataReader:
    """Adds the optional records after an ENTRY to it, checking casync's order."""

    def __init__(self, entry: Entry) -> None:
        self.entry = entry
        self._rank = 0
        self._last_name: bytes | None = None  # the XATTR before, in this rank
        self._last_id: int | None = None  # the ACL entry's id before, in this rank
        self._acl: dict[str, object] = {}
        self._xattrs: list[tuple[bytes, bytes]] = []

    def add(self, typ: int, body: bytes) -> None:
        rank = _RANK[typ]
        if rank < self._rank or (rank == self._rank and typ not in _REPEATABLE):
            raise MetadataError(f"{r.NAMES[typ]} record out of order")
        if rank != self._rank:
            self._last_name = self._last_id = None
        self._rank = rank
        e = self.entry
        if typ in (r.USER, r.GROUP, r.SELINUX):
            value = _cstring(body, r.NAMES[typ])
            if typ == r.USER:
                e.user = value
            elif typ == r.GROUP:
                e.group = value
            else:
                e.selinux = value
        elif typ == r.XATTR:
            self._xattr(body)
        elif typ in (r.ACL_USER, r.ACL_GROUP, r.ACL_DEFAULT_USER, r.ACL_DEFAULT_GROUP):
            self._acl_entry(typ, body)
        elif typ == r.ACL_GROUP_OBJ:
            self._acl["group_obj"] = _u64(body, "ACL_GROUP_OBJ")
        elif typ == r.ACL_DEFAULT:
            if len(body) != 32:
                raise MetadataError("ACL_DEFAULT record of the wrong size")
            self._acl["default"] = DefaultAcl(*_U64x4.unpack(body))
        elif typ == r.FCAPS:
            e.fcaps = bytes(body)
        else:
            e.quota_projid = _u64(body, "QUOTA_PROJID")

    def _xattr(self, body: bytes) -> None:
        name, sep, value = bytes(body).partition(b"\0")
        if not sep or not name:
            raise MetadataError("XATTR record without a name")
        if self._last_name is not None and name <= self._last_name:
            raise MetadataError("XATTR names not in ascending order")
        self._last_name = name
        self._xattrs.append((name, value))

    def _acl_entry(self, typ: int, body: bytes) -> None:
        if len(body) < 16:
            raise MetadataError(f"{r.NAMES[typ]} record too short")
        ident, perms = _U64x2.unpack_from(body)
        name = _cstring(body[16:], r.NAMES[typ]) if len(body) > 16 else b""
        if self._last_id is not None and ident <= self._last_id:
            raise MetadataError(f"{r.NAMES[typ]} ids not in ascending order")
        self._last_id = ident
        key = {
            r.ACL_USER: "users",
            r.ACL_GROUP: "groups",
            r.ACL_DEFAULT_USER: "default_users",
            r.ACL_DEFAULT_GROUP: "default_groups",
        }[typ]
        self._acl[key] = (*self._acl.get(key, ()), AclEntry(ident, perms, name))  # type: ignore[misc]  # the entries so far: a tuple

    def finish(self) -> Entry:
        if self._xattrs:
            self.entry.xattrs = tuple(self._xattrs)
        if self._acl:
            self.entry.acl = Acl(**self._acl)  # type: ignore[arg-type]  # each key set with its field's type
        return self.entry


def _cstring(body: bytes, what: str) -> bytes:
    if not body or body[-1] != 0 or b"\0" in body[:-1]:
        raise MetadataError(f"{what} record is not one NUL-terminated string")
    return bytes(body[:-1])


def _u64(body: bytes, what: str) -> int:
    if len(body) != 8:
        raise MetadataError(f"{what} record of the wrong size")
    return int(_U64.unpack(body)[0])
