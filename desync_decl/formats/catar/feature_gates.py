"""What an archive's feature flags let a node carry, and what extraction applies.

The first ENTRY's feature flags say what an archive stores, and casync's decoder
(src/cadecoder.c, ``validate_format_*`` and ``ca_decoder_parse_entry``) holds
every node to them. It refuses ("Bad message") a record the flags do not cover
(USER/GROUP without user-names, XATTR without xattrs, ACL_* without acl, SELINUX
without selinux) and ENTRY values more precise than the flags (a mode without
permissions, an owner without uid flags, a time finer than the time flag). It
accepts FCAPS and QUOTA_PROJID records whatever the flags, and then ignores them
unless the flags include fcaps / quota-projid. We refuse and ignore the same, so
no archive gets a capability, label, ACL, owner, mode or project id past flags
that say it stores none.

Extraction applies an attribute only from the record meant for it: a capability
only from FCAPS (with fcaps), a label only from SELINUX (with selinux) and, from
XATTR records, only the ``user.*`` and ``trusted.*`` attributes casync stores
there. casync would also apply, say, ``security.capability`` from an XATTR record
(bypassing the fcaps flag); we leave such attributes out (``ignored_xattrs``).
"""

from __future__ import annotations

import stat

from desync_decl.formats import flags as ff
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar.entry import Acl, Entry

# ENTRY.flags may hold only these attributes, and only those the archive's flags store.
_ENTRY_FLAG_BITS = ft.CHATTR_FLAGS | ft.FAT_FLAGS | ff.WITH_SUBVOLUME | ff.WITH_SUBVOLUME_RO
_TIME_UNITS = (
    (ft.WITH_NSEC_TIME, 1),
    (ft.WITH_USEC_TIME, 1000),
    (ft.WITH_SEC_TIME, 10**9),
    (ft.WITH_2SEC_TIME, 2 * 10**9),
)
_NO_TIME = 0xFFFFFFFFFFFFFFFF  # casync's "unset": never valid in an archive
_XATTR_NAME_MAX = 255  # xattr(7)


def _feature(bit: int) -> str:
    return next(name for name, value in ft.NAMES.items() if value == bit)


class EntryRules:
    """What an ENTRY may hold in an archive with these flags, worked out once per
    archive (the decoder asks for every node)."""

    def __init__(self, flags: int) -> None:
        self.types = frozenset(t for t in ft.NODE_TYPES if ft.stores_type(flags, t))
        self.entry_flags = flags & _ENTRY_FLAG_BITS
        self.any_mode = bool(flags & (ft.WITH_PERMISSIONS | ft.WITH_ACL))
        read_only = flags & ft.WITH_READ_ONLY
        self.file_modes = (0o666, 0o444) if read_only else (0o666,)
        self.dir_modes = (0o777, 0o555) if read_only else (0o777,)
        self.max_id = ft.max_id(flags)
        # casync checks usec-time against a millisecond (it refuses its own archives
        # with sub-millisecond times); we check the microsecond the flag means.
        self.time_unit = next((unit for bit, unit in _TIME_UNITS if flags & bit), 0)

    def problem(self, e: Entry) -> str | None:
        """Why casync refuses this ENTRY (of a known node type), or None."""
        fmt, perms = e.mode & 0o170000, e.mode & 0o7777
        if fmt not in self.types:
            return f"node type {fmt:o} not allowed here"
        if e.flags & ~self.entry_flags:
            return f"ENTRY flags {e.flags:#x} not allowed by the feature flags"
        if e.flags and fmt not in (stat.S_IFREG, stat.S_IFDIR):
            return f"ENTRY flags {e.flags:#x} on a node that is neither a file nor a directory"
        if fmt == stat.S_IFLNK:
            if perms != 0o777:
                return f"symlink mode {perms:04o} (must be 0777)"
        elif not self.any_mode and perms not in (
            self.dir_modes if fmt == stat.S_IFDIR else self.file_modes
        ):
            return f"mode {perms:04o} but the archive stores no permissions"
        for what, ident in (("uid", e.uid), ("gid", e.gid)):
            if ident > self.max_id or ident == 0xFFFF:  # ft.id_allowed, max_id worked out once
                return f"{what} {ident} not allowed by the feature flags"
        unit = self.time_unit
        if (e.mtime % unit or e.mtime == _NO_TIME) if unit else e.mtime:
            return f"mtime {e.mtime} not allowed by the archive's time flags"
        return None


def node_problem(e: Entry) -> str | None:
    """Why casync refuses a node's optional records under its archive's flags."""
    flags, fmt = e.feature_flags, stat.S_IFMT(e.mode)
    for present, bit, what in (
        (e.user is not None or e.group is not None, ft.WITH_USER_NAMES, "USER/GROUP"),
        (bool(e.xattrs), ft.WITH_XATTRS, "XATTR"),
        (bool(e.acl), ft.WITH_ACL, "ACL"),
        (e.selinux is not None, ft.WITH_SELINUX, "SELINUX"),
    ):
        if present and not flags & bit:
            return f"{what} record but the archive's feature flags exclude {_feature(bit)}"
    for name, _ in e.xattrs:
        if (problem := xattr_name_problem(name)) is not None:
            return problem
    if fmt == stat.S_IFLNK and (e.xattrs or e.acl):
        return "XATTR or ACL records on a symlink"
    if e.fcaps is not None and fmt != stat.S_IFREG:
        return "FCAPS record on a node that is not a regular file"
    if e.quota_projid is not None:
        if fmt not in (stat.S_IFREG, stat.S_IFDIR):
            return "QUOTA_PROJID record on a node that is neither a file nor a directory"
        if not 0 < e.quota_projid <= 0xFFFFFFFF:
            return f"quota project id {e.quota_projid} out of range"
    return _acl_problem(flags, e.acl)


def xattr_name_problem(name: bytes) -> str | None:
    """Why casync refuses an XATTR name: it needs a namespace, ``ns.name``, and fits xattr(7)."""
    ns, dot, rest = name.partition(b".")
    if not ns or not dot or not rest or len(name) > _XATTR_NAME_MAX:
        return f"invalid XATTR name {name!r}"
    return None


def _acl_problem(flags: int, acl: Acl) -> str | None:
    """ACL entries name users only with user-names and hold ids the flags allow."""
    for a in (*acl.users, *acl.groups, *acl.default_users, *acl.default_groups):
        if a.name and not flags & ft.WITH_USER_NAMES:
            return "ACL entry with a name but the archive's feature flags exclude user-names"
        if not ft.id_allowed(flags, a.id):
            return f"ACL entry id {a.id} not allowed by the feature flags"
    return None


# -- extraction ------------------------------------------------------------------------


def applied_xattrs(e: Entry) -> list[tuple[bytes, bytes]]:
    """The extended attributes extraction sets on a node (sorted by name): XATTR
    records in casync's namespaces with xattrs, the label of SELINUX with selinux,
    the capability of FCAPS with fcaps (on regular files)."""
    flags = e.feature_flags
    out = [(n, v) for n, v in e.xattrs if ft.stores_xattr(n)] if flags & ft.WITH_XATTRS else []
    if e.selinux is not None and flags & ft.WITH_SELINUX:
        out.append((b"security.selinux", e.selinux + b"\0"))
    if e.fcaps is not None and flags & ft.WITH_FCAPS and stat.S_ISREG(e.mode):
        out.append((b"security.capability", e.fcaps))
    return sorted(out)


def ignored_xattrs(e: Entry) -> list[bytes]:
    """Names of XATTR records extraction leaves out: namespaces casync never stores
    there (capabilities, labels and ACLs have records and flags of their own)."""
    return [n for n, _ in e.xattrs if not ft.stores_xattr(n)]
