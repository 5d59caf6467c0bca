"""untar honours the archive's feature flags as casync does, and mtree shows what it sets.

Each case is an archive whose root holds one node ``f`` with records or ENTRY
values that the feature flags may or may not cover (capabilities, xattrs,
SELinux labels, ACLs, owner names and ids, modes, times, chattr flags, device
nodes, project ids). The real ``casync extract`` and our ``untar`` run as root on
each: where casync refuses the archive as malformed ("Bad message") we refuse
it, where it extracts we extract; and nothing the flags exclude is ever applied.
"""

from __future__ import annotations

import base64
import os
import stat
import struct
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from desync_decl.archive import fsattrs
from desync_decl.archive.extract import current_umask
from desync_decl.formats.catar import features as ft
from desync_decl.formats.catar.entry import Acl, AclEntry, Entry
from desync_decl.reconcile.model import Verb
from tests.hostile_archives import MTIME, MemNode, raw_archive
from tests.test_reconcile_kinds import apply, plan, statuses
from tests.test_reconcile_tree import published, site, untar_manifest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="capabilities and owners need root")

# vfs_cap_data revision 2: cap_net_raw permitted and effective
CAP = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
LABEL = b"system_u:object_r:etc_t:s0"

XATTRS = ft.DESYNC_TAR  # 32bit-uids, nsec-time, permissions, node types, xattrs
BARE = XATTRS & ~ft.WITH_XATTRS
FCAPS = XATTRS | ft.WITH_FCAPS
NO_PERMS = XATTRS & ~ft.WITH_PERMISSIONS
ACL = ft.archive_flags(ft.WITH_32BIT_UIDS | ft.WITH_NSEC_TIME | ft.WITH_ACL)  # no user-names
ACL_NAMES = ft.archive_flags(ft.WITH_NSEC_TIME | ft.WITH_ACL)  # acl brings user-names


@dataclass
class Case:
    id: str
    features: int  # the archive's feature flags
    mode: int = stat.S_IFREG | 0o644
    fields: dict[str, object] = field(default_factory=dict)


def case(id: str, features: int, mode: int = stat.S_IFREG | 0o644, **fields: object) -> Case:
    return Case(id, features, mode, fields)


CASES = [
    # FCAPS records pass whatever the flags, and apply only with fcaps
    case("fcaps-without-xattrs-or-fcaps", BARE, fcaps=CAP),
    case("fcaps-with-xattrs-without-fcaps", XATTRS, fcaps=CAP),
    case("fcaps-with-fcaps", FCAPS, fcaps=CAP),
    case("fcaps-on-a-directory", FCAPS, stat.S_IFDIR | 0o755, fcaps=CAP),
    # XATTR records need xattrs; of their names only user.* and trusted.* apply
    case("xattr-capability-without-xattrs", BARE, xattrs=((b"security.capability", CAP),)),
    case("xattr-user-without-xattrs", BARE, xattrs=((b"user.a", b"v"),)),
    case("xattr-trusted-without-xattrs", BARE, xattrs=((b"trusted.a", b"v"),)),
    case("xattr-capability-without-fcaps", XATTRS, xattrs=((b"security.capability", CAP),)),
    case("xattr-capability-with-fcaps", FCAPS, xattrs=((b"security.capability", CAP),)),
    case("xattr-selinux-without-selinux", XATTRS, xattrs=((b"security.selinux", LABEL + b"\0"),)),
    case("xattr-user", XATTRS, xattrs=((b"user.a", b"v"),)),
    case("xattr-trusted", XATTRS, xattrs=((b"trusted.a", b"v"),)),
    case("xattr-name-without-namespace", XATTRS, xattrs=((b"userfoo", b"v"),)),
    case("xattr-on-a-symlink", XATTRS, stat.S_IFLNK | 0o777, xattrs=((b"trusted.a", b"v"),)),
    # SELINUX needs selinux
    case("selinux-without-selinux", XATTRS, selinux=LABEL),
    case("selinux-with-selinux", XATTRS | ft.WITH_SELINUX, selinux=LABEL),
    # ACL records need acl; names in them need user-names
    case(
        "acl-without-acl",
        XATTRS,
        mode=stat.S_IFREG | 0o640,
        acl=Acl(users=(AclEntry(4242, 6),), group_obj=4),
    ),
    case(
        "acl-with-acl",
        ACL,
        mode=stat.S_IFREG | 0o660,
        acl=Acl(users=(AclEntry(4242, 6),), group_obj=4),
    ),
    case(
        "acl-name-without-user-names",
        ACL,
        mode=stat.S_IFREG | 0o660,
        acl=Acl(users=(AclEntry(65534, 6, b"nobody"),), group_obj=4),
    ),
    # USER/GROUP need user-names
    case("user-name-without-user-names", XATTRS, uid=65534, user=b"nobody"),
    case("user-name-with-user-names", ACL_NAMES, uid=65534, user=b"nobody"),
    # owner ids need a uid flag and must fit it
    case("uid-without-uid-flags", XATTRS & ~ft.WITH_32BIT_UIDS, uid=4242),
    case("uid-65535-in-32-bit-ids", XATTRS, uid=0xFFFF),
    case("uid-beyond-16-bit-ids", (XATTRS & ~ft.WITH_32BIT_UIDS) | ft.WITH_16BIT_UIDS, uid=70000),
    case("uid-with-32-bit-ids", XATTRS, uid=4242, gid=4343),
    # modes need permissions (or acl); without, the umask's default applies
    case("mode-0644-without-permissions", NO_PERMS),
    case("setuid-without-permissions", NO_PERMS, stat.S_IFREG | 0o4755),
    case("mode-0666-without-permissions", NO_PERMS, stat.S_IFREG | 0o666),
    case("dir-0777-without-permissions", NO_PERMS, stat.S_IFDIR | 0o777),
    case("mode-0444-with-read-only", NO_PERMS | ft.WITH_READ_ONLY, stat.S_IFREG | 0o444),
    # times no finer than the time flag
    case("nsec-time-in-sec-time", (XATTRS & ~ft.WITH_NSEC_TIME) | ft.WITH_SEC_TIME, mtime=MTIME),
    case("time-without-time-flags", XATTRS & ~ft.WITH_NSEC_TIME, mtime=MTIME),
    # chattr flags need their flag, and only files and directories have them
    case("immutable-without-chattr", XATTRS, flags=0x400000),
    case("noatime-on-a-symlink", XATTRS | 0x20000, stat.S_IFLNK | 0o777, flags=0x20000),
    # node types need their flag
    case("device-without-device-nodes", XATTRS & ~ft.WITH_DEVICE_NODES, stat.S_IFCHR | 0o600),
    case("device-with-device-nodes", XATTRS, stat.S_IFCHR | 0o600),
    # QUOTA_PROJID passes whatever the flags, applies only with quota-projid
    case("projid-without-quota-projid", XATTRS, quota_projid=42),
    case("projid-zero", XATTRS | ft.WITH_QUOTA_PROJID, quota_projid=0),
    case("projid-on-a-symlink", XATTRS, stat.S_IFLNK | 0o777, quota_projid=42),
]


# cases that extract with extended attributes to compare
EXTRACTED_ATTRIBUTES = {
    "fcaps-with-xattrs-without-fcaps",
    "fcaps-with-fcaps",
    "xattr-capability-without-fcaps",
    "xattr-capability-with-fcaps",
    "xattr-selinux-without-selinux",
    "xattr-user",
    "selinux-with-selinux",
}


def build(c: Case) -> bytes:
    """The archive: a root directory valid under ``c.features`` holding ``f``."""
    flags, mtime = c.features, ft.entry_mtime(c.features, MTIME)
    fields = {"mtime": mtime, **c.fields}
    root = MemNode(Entry(flags, ft.entry_mode(flags, stat.S_IFDIR | 0o755), mtime=mtime))
    kid = MemNode(Entry(flags, c.mode, **fields))  # type: ignore[arg-type]
    fmt = stat.S_IFMT(c.mode)
    if fmt == stat.S_IFREG:
        kid.data = b"hi\n"
    elif fmt == stat.S_IFLNK:
        kid.target = b"elsewhere"
    elif fmt == stat.S_IFCHR:
        kid.rdev = os.makedev(1, 3)
    root.kids[b"f"] = kid
    return raw_archive(root)


@dataclass
class Outcome:
    refused: bool  # as malformed (casync: EBADMSG)
    stderr: str
    stat: os.stat_result | None = None  # of f, when extracted
    xattrs: dict[str, bytes] = field(default_factory=dict)


def extract(argv: list[str], out: Path) -> Outcome:
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode:
        refused = "Bad message" in done.stderr or "invalid archive" in done.stderr
        return Outcome(refused, done.stderr.strip())
    node = out / "f"
    names = os.listxattr(node, follow_symlinks=False)
    return Outcome(
        False,
        done.stderr,
        os.lstat(node),
        {n: os.getxattr(node, n, follow_symlinks=False) for n in names},
    )


def ours(archive: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "desync_decl", "untar", str(archive), str(out)]


def allowed_xattrs(c: Case) -> dict[str, bytes]:
    """What the flags let extraction set on ``f``: told from the flags and records
    here, independently of the code under test."""
    flags, f = c.features, c.fields
    want: dict[str, bytes] = {}
    if flags & ft.WITH_XATTRS:
        for name, value in f.get("xattrs", ()):  # type: ignore[attr-defined]
            if name.startswith((b"user.", b"trusted.")):
                want[name.decode()] = value
    if flags & ft.WITH_SELINUX and "selinux" in f:
        want["security.selinux"] = f["selinux"] + b"\0"  # type: ignore[operator]
    if flags & ft.WITH_FCAPS and "fcaps" in f and stat.S_ISREG(c.mode):
        want["security.capability"] = f["fcaps"]  # type: ignore[assignment]
    return want


@pytest.mark.parametrize("c", CASES, ids=lambda c: c.id)
def test_untar_refuses_and_applies_as_casync_within_the_feature_flags(casync, tmp_path, c):
    archive = tmp_path / "x.catar"
    archive.write_bytes(build(c))
    theirs = extract(
        [casync, "extract", str(archive), str(tmp_path / "casync")], tmp_path / "casync"
    )
    mine = extract(ours(archive, tmp_path / "ours"), tmp_path / "ours")
    assert mine.refused == theirs.refused, (mine.stderr, theirs.stderr)
    if mine.refused:
        assert mine.stderr.startswith("desync-decl: error: "), mine.stderr
        assert len(mine.stderr.splitlines()) == 1, mine.stderr
        return
    assert mine.stat is not None, mine.stderr
    acls = {n for n in mine.xattrs if n.startswith("system.posix_acl_")}
    assert {n: v for n, v in mine.xattrs.items() if n not in acls} == allowed_xattrs(c)
    for name, _ in c.fields.get("xattrs", ()):  # type: ignore[attr-defined]
        if name.decode() not in mine.xattrs:
            assert f"xattr {name.decode()} not set" in mine.stderr
    if theirs.stat is None:
        # casync did not refuse but failed applying: with fcaps it sets the XATTR
        # record's capability, then fails (ERANGE) checking for one to remove
        return
    # everything we set, casync set too (it also sets XATTR records of other namespaces)
    assert mine.xattrs.items() <= theirs.xattrs.items()
    for attr in ("st_uid", "st_gid", "st_mtime_ns", "st_rdev"):
        assert getattr(mine.stat, attr) == getattr(theirs.stat, attr), attr
    assert stat.S_IFMT(mine.stat.st_mode) == stat.S_IFMT(theirs.stat.st_mode)
    if c.features & (ft.WITH_PERMISSIONS | ft.WITH_ACL):
        assert mine.stat.st_mode == theirs.stat.st_mode
    else:
        # No modes stored: the umask's default, minus write bits for a read-only node.
        # casync sets no more (it leaves directories at 0700, and its read-only
        # clears the read bits instead of the write bits).
        default = default_mode(c)
        assert stat.S_IMODE(mine.stat.st_mode) == default
        assert stat.S_IMODE(theirs.stat.st_mode) & ~default == 0


def default_mode(c: Case) -> int:
    mode = (0o777 if stat.S_ISDIR(c.mode) else 0o666) & ~current_umask()
    read_only = c.features & ft.WITH_READ_ONLY and not c.mode & 0o222
    return mode & ~0o222 if read_only else mode


def mtree_xattrs(listing: str, name: str) -> dict[str, bytes]:
    """The ``xattr.NAME=BASE64`` fields of one node in an mtree listing."""
    line = next(line for line in listing.splitlines() if line.split(" ", 1)[0] == name)
    return {
        key.removeprefix("xattr."): base64.b64decode(value)
        for key, _, value in (f.partition("=") for f in line.split()[1:])
        if key.startswith("xattr.")
    }


@pytest.mark.parametrize(
    "c",
    [c for c in CASES if c.id.startswith(("fcaps", "xattr", "selinux"))],
    ids=lambda c: c.id,
)
def test_mtree_shows_the_xattrs_untar_sets(cli, tmp_path, c):
    archive = tmp_path / "x.catar"
    archive.write_bytes(build(c))
    listing = cli("mtree", archive)
    extracted = cli("untar", archive, tmp_path / "out")
    if extracted.code:  # refused: mtree reads the archive the same way
        assert (listing.code, listing.err) == (1, extracted.err)
        return
    on_disk = tmp_path / "out" / "f"
    names = os.listxattr(on_disk, follow_symlinks=False)
    assert mtree_xattrs(listing.out, "f") == {
        n: os.getxattr(on_disk, n, follow_symlinks=False) for n in names
    }


def test_tar_with_fcaps_round_trips_a_capability_and_mtree_shows_it(cli, tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "ping").write_bytes(b"#!/bin/sh\n")
    subprocess.run(["setcap", "cap_net_raw+ep", str(tree / "ping")], check=True)
    cap = os.getxattr(tree / "ping", "security.capability")

    assert cli("tar", "--with=best", tmp_path / "best.catar", tree).code == 0
    assert cli("untar", tmp_path / "best.catar", tmp_path / "best").code == 0
    assert os.getxattr(tmp_path / "best" / "ping", "security.capability") == cap
    listing = cli("mtree", tmp_path / "best.catar").out
    assert mtree_xattrs(listing, "ping") == {"security.capability": cap}
    assert cli("mtree", "--with=best", tmp_path / "best").out == listing

    assert cli("tar", tmp_path / "plain.catar", tree).code == 0  # desync's flags: no fcaps
    assert cli("untar", tmp_path / "plain.catar", tmp_path / "plain").code == 0
    assert "security.capability" not in os.listxattr(tmp_path / "plain" / "ping")
    assert mtree_xattrs(cli("mtree", tmp_path / "plain.catar").out, "ping") == {}


def test_mtree_feature_options_apply_to_directories_only(cli, tmp_path):
    archive = tmp_path / "x.catar"
    archive.write_bytes(build(CASES[0]))
    result = cli("mtree", "--with=best", archive)
    assert result.code == 1
    assert result.err.startswith("desync-decl: error: --with/--without apply to a directory")


@pytest.mark.parametrize(
    "c",
    [c for c in CASES if c.id in EXTRACTED_ATTRIBUTES],
    ids=lambda c: c.id,
)
def test_gnu_tar_output_carries_the_xattrs_untar_sets(cli, tmp_path, c):
    archive = tmp_path / "x.catar"
    archive.write_bytes(build(c))
    assert cli("untar", archive, tmp_path / "out").code == 0
    assert cli("untar", "--output-format", "gnu-tar", archive, tmp_path / "x.tar").code == 0
    with tarfile.open(tmp_path / "x.tar") as tar:
        member = tar.getmember("f")
    pax = {
        k.removeprefix("SCHILY.xattr."): v.encode("utf-8", "surrogateescape")
        for k, v in member.pax_headers.items()
        if k.startswith("SCHILY.xattr.")
    }
    on_disk = tmp_path / "out" / "f"
    assert pax == {n: os.getxattr(on_disk, n) for n in os.listxattr(on_disk)}


@pytest.mark.parametrize("with_projid", [False, True], ids=["without", "with"])
def test_project_ids_apply_only_with_quota_projid_like_casync(casync, xfs_dir, with_projid):
    """QUOTA_PROJID passes whatever the flags; only quota-projid applies it (on XFS,
    where files have project ids)."""
    flags = XATTRS | ft.WITH_QUOTA_PROJID if with_projid else XATTRS
    archive = xfs_dir / "x.catar"
    archive.write_bytes(build(case("projid", flags, quota_projid=42)))
    projids = []
    for argv, out in (
        ([casync, "extract", str(archive), str(xfs_dir / "casync")], xfs_dir / "casync"),
        (ours(archive, xfs_dir / "ours"), xfs_dir / "ours"),
    ):
        subprocess.run(argv, check=True, capture_output=True)
        with open(out / "f", "rb") as f:
            projids.append(fsattrs.project_id(f.fileno()))
    assert projids[1] == projids[0] == (42 if with_projid else 0)


def test_untar_task_compares_xattrs_only_where_it_restores_them(tmp_path):
    """The untar kind compares mtree listings, which now show xattrs: they count as
    owners do (not restored with no_same_owner), so such a task still converges,
    and without it a lost xattr is drift."""
    state = tmp_path / "state"
    src = site(tmp_path / "v1")
    os.setxattr(src / "big.bin", "user.origin", b"build 7")
    published(src, tmp_path / "site.caidx", tmp_path / "store")
    loose = untar_manifest(tmp_path, ", no_same_owner: true")
    assert statuses(apply(loose, state)) == ["changed"]
    assert "user.origin" not in os.listxattr(tmp_path / "out" / "big.bin")
    (entry,) = plan(loose, state, verify=True).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.NOOP, "converged")

    strict = untar_manifest(tmp_path)
    assert statuses(apply(strict, state)) == ["changed"]
    assert os.getxattr(tmp_path / "out" / "big.bin", "user.origin") == b"build 7"
    (entry,) = plan(strict, state, verify=True).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.NOOP, "converged")
    os.removexattr(tmp_path / "out" / "big.bin", "user.origin")
    (entry,) = plan(strict, state, verify=True).entries
    assert entry.action.verb is Verb.UPDATE
    assert statuses(apply(strict, state)) == ["changed"]
    assert os.getxattr(tmp_path / "out" / "big.bin", "user.origin") == b"build 7"
