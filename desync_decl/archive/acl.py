"""POSIX ACLs: the kernel's ``system.posix_acl_*`` xattr values <-> catar ACL records.

The xattr value is a u32 version (2) and one ``{u16 tag, u16 perm, u32 id}``
per entry, sorted by tag then id. The mode bits already hold the owner, the
mask (or group) and other bits; the catar keeps only what they cannot.
"""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

from desync_decl.formats.catar.entry import NO_MASK, Acl, AclEntry, DefaultAcl

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"

_VERSION = 2
_HEAD = struct.Struct("<I")
_ITEM = struct.Struct("<HHI")
USER_OBJ, USER, GROUP_OBJ, GROUP, MASK, OTHER = 0x01, 0x02, 0x04, 0x08, 0x10, 0x20
_UNDEFINED_ID = 0xFFFFFFFF

Namer = Callable[[int], bytes]  # id -> name (b"" when not stored or unknown)


class AclFormatError(ValueError):
    pass


def parse(value: bytes) -> list[tuple[int, int, int]]:
    """(tag, perm, id) entries of an ACL xattr value."""
    if len(value) < _HEAD.size or (len(value) - _HEAD.size) % _ITEM.size:
        raise AclFormatError("ACL xattr of the wrong size")
    if _HEAD.unpack_from(value)[0] != _VERSION:
        raise AclFormatError("unknown ACL xattr version")
    return [t for t in _ITEM.iter_unpack(value[_HEAD.size :])]


def to_catar(
    access: bytes | None, default: bytes | None, user_name: Namer, group_name: Namer
) -> Acl:
    """The catar ACL of a node from its two ACL xattrs (None when absent)."""
    acl = Acl()
    if access is not None:
        entries = parse(access)
        masked = any(tag == MASK for tag, _, _ in entries)
        acl = Acl(
            users=_named(entries, USER, user_name),
            groups=_named(entries, GROUP, group_name),
            group_obj=_perm(entries, GROUP_OBJ) if masked else None,
        )
    if default is not None:
        entries = parse(default)
        has_mask = any(tag == MASK for tag, _, _ in entries)
        acl = dataclasses.replace(
            acl,
            default=DefaultAcl(
                _perm(entries, USER_OBJ),
                _perm(entries, GROUP_OBJ),
                _perm(entries, OTHER),
                _perm(entries, MASK) if has_mask else NO_MASK,
            ),
            default_users=_named(entries, USER, user_name),
            default_groups=_named(entries, GROUP, group_name),
        )
    return acl


def _named(entries: list[tuple[int, int, int]], tag: int, namer: Namer) -> tuple[AclEntry, ...]:
    return tuple(
        AclEntry(i, p, namer(i)) for t, p, i in sorted(entries, key=lambda e: e[2]) if t == tag
    )


def _perm(entries: list[tuple[int, int, int]], tag: int) -> int:
    for t, p, _ in entries:
        if t == tag:
            return p
    raise AclFormatError(f"ACL without a {tag:#x} entry")


def access_xattr(acl: Acl, mode: int) -> bytes | None:
    """The access ACL xattr to set after chmod(mode), or None when the mode says it all."""
    if not (acl.users or acl.groups or acl.group_obj is not None):
        return None
    group_obj = acl.group_obj if acl.group_obj is not None else (mode >> 3) & 7
    items = [(USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID)]
    items += [(USER, a.permissions & 7, a.id) for a in acl.users]
    items += [(GROUP_OBJ, group_obj & 7, _UNDEFINED_ID)]
    items += [(GROUP, a.permissions & 7, a.id) for a in acl.groups]
    items += [(MASK, (mode >> 3) & 7, _UNDEFINED_ID), (OTHER, mode & 7, _UNDEFINED_ID)]
    return _build(items)


def default_xattr(acl: Acl) -> bytes | None:
    d = acl.default
    if d is None:
        return None
    items = [(USER_OBJ, d.user_obj & 7, _UNDEFINED_ID)]
    items += [(USER, a.permissions & 7, a.id) for a in acl.default_users]
    items += [(GROUP_OBJ, d.group_obj & 7, _UNDEFINED_ID)]
    items += [(GROUP, a.permissions & 7, a.id) for a in acl.default_groups]
    if d.mask != NO_MASK:
        items.append((MASK, d.mask & 7, _UNDEFINED_ID))
    elif acl.default_users or acl.default_groups:
        mask = d.group_obj
        for a in (*acl.default_users, *acl.default_groups):
            mask |= a.permissions
        items.append((MASK, mask & 7, _UNDEFINED_ID))
    items.append((OTHER, d.other & 7, _UNDEFINED_ID))
    return _build(items)


def _build(items: list[tuple[int, int, int]]) -> bytes:
    return _HEAD.pack(_VERSION) + b"".join(_ITEM.pack(*i) for i in items)
