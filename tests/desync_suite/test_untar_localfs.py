"""Ports of desync's localfs_escape_test.go, localfs_dirmeta_test.go and
localfs_dirmtime_test.go: what ``untar`` writes on disk, and where it refuses to.

desync's tests drive its LocalFS writer with single nodes (``CreateFile("evil/passwd")``).
A catar cannot name such a node: its names are single components, refused otherwise
by the decoder (test_archive_decoder.py). The same situations arise across two
extractions: a symlink that the first left in the target, a name the second archive
writes through it. Those are what these ports extract.

desync's read-only directory tests only mean something for a user the permissions
hold back, so those run the command as ``nobody`` (a forked child of the test that
drops root, in a directory nobody may write: ``unprivileged``). The tests of the
modes a directory has while it is being filled stop the archive stream there
(``Paused``) and look.
"""

from __future__ import annotations

import functools
import io
import os
import pwd
import shutil
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.cli.console import Console
from desync_decl.cli.main import main
from desync_decl.formats.catar import records as r
from desync_decl.ops.untar import untar
from tests.cli_checks import refused
from tests.hostile_archives import MemNode, archive, dir_with_file, evil_names, symlink_only

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="runs the command as nobody: needs root")


@dataclass
class Run:
    code: int
    err: str


# -- escapes (localfs_escape_test.go) ------------------------------------------------------


def put(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"a{len(list(tmp_path.glob('a*.catar')))}.catar"
    path.write_bytes(data)
    return path


def untar_cli(cli, *argv: object) -> Run:
    result = cli("untar", "--no-same-owner", "--no-same-permissions", *argv)
    return Run(result.code, result.err)


def test_localfs_symlink_write_escape(cli, tmp_path):
    """TestLocalFSSymlinkWriteEscape: a symlink ``evil`` to a directory outside, left by
    one archive, then ``evil/passwd`` written by the next: refused, the file outside
    keeps its contents."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    outside.mkdir()
    (outside / "passwd").write_text("original-contents\n")
    first = untar_cli(cli, put(tmp_path, symlink_only(b"evil", os.fsencode(outside))), root)
    assert first.code == 0, first
    refused(untar_cli(cli, put(tmp_path, dir_with_file(b"evil", b"passwd", b"PWNED")), root),
            "evil", "symlink")  # fmt: skip
    assert (outside / "passwd").read_text() == "original-contents\n"
    assert os.listdir(outside) == ["passwd"]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (evil_names(b"../escape"), "contains '/'"),
        (evil_names(b"../evildir", MemNode.dir()), "contains '/'"),
        (evil_names(b"..", MemNode.dir(children={b"escape": MemNode.file(b"x")})), "name '..'"),
        (evil_names(b"..", MemNode.dir(children={b"evildir": MemNode.dir()})), "name '..'"),
    ],
    ids=["file", "dir", "file-in-dotdot", "dir-in-dotdot"],
)
def test_localfs_lexical_escape(cli, tmp_path, data, why):
    """TestLocalFSLexicalEscape: a file ``../escape`` or a directory ``../evildir``
    (one name, or ``escape`` in a directory ``..``) is refused, nothing appears beside
    the root."""
    refused(untar_cli(cli, put(tmp_path, data), tmp_path / "out" / "root"), why)
    assert sorted(os.listdir(tmp_path)) == ["a0.catar", "out"]
    assert os.listdir(tmp_path / "out") == ["root"]


def test_localfs_absolute_symlink_target_verbatim(cli, tmp_path):
    """TestLocalFSAbsoluteSymlinkTargetVerbatim: an absolute target is made as it is
    (``/etc``), and the link is never followed by a later write. (The write is tried
    through a link to a directory of the test's, not through ``/etc``.)"""
    root = tmp_path / "root"
    assert untar_cli(cli, put(tmp_path, symlink_only(b"abs", b"/etc")), root).code == 0
    assert os.readlink(root / "abs") == "/etc"
    outside = tmp_path / "outside"
    outside.mkdir()
    assert (
        untar_cli(cli, put(tmp_path, symlink_only(b"abs2", os.fsencode(outside))), root).code == 0
    )
    second = put(tmp_path, dir_with_file(b"abs2", b"desync-should-not-exist", b"x"))
    refused(untar_cli(cli, second, root), "abs2", "symlink")
    assert os.listdir(outside) == []
    assert os.readlink(root / "abs") == "/etc" and os.readlink(root / "abs2") == str(outside)


def test_localfs_benign_relative_symlink(cli, tmp_path):
    """TestLocalFSBenignRelativeSymlink: desync follows a symlink in the root that stays
    in it (``link -> sub``, then ``link/g`` lands in ``sub/g``). We follow none, not
    even those: the write is refused and ``sub`` stays empty (differs: see the
    README's compatibility section; ``--delete-extra`` replaces the link with the
    archive's directory instead)."""
    root = tmp_path / "root"
    first = archive(MemNode.dir(children={b"sub": MemNode.dir(), b"link": MemNode.symlink(b"sub")}))
    assert untar_cli(cli, put(tmp_path, first), root).code == 0
    second = put(tmp_path, dir_with_file(b"link", b"g", b"hello"))
    refused(untar_cli(cli, second, root), "link", "symlink")
    assert os.listdir(root / "sub") == []
    replaced = cli("untar", "--delete-extra", second, root)
    assert replaced.code == 0, replaced.err
    assert (root / "link" / "g").read_bytes() == b"hello" and not (root / "link").is_symlink()


# -- read-only directories (localfs_dirmeta_test.go) --------------------------------------


@pytest.fixture
def unprivileged() -> Iterator[Path]:
    """A directory nobody owns and can reach (pytest's temp dirs are root's, 0700)."""
    top = Path(tempfile.mkdtemp(prefix="desync-suite-"))
    top.chmod(0o755)
    dir = top / "nobody"
    dir.mkdir()
    user = pwd.getpwnam("nobody")
    os.chown(dir, user.pw_uid, user.pw_gid)
    try:
        yield dir
    finally:
        shutil.rmtree(top)  # as root: read-only directories are no obstacle


@functools.cache
def loaded_for_untar() -> None:
    """Every module an ``untar`` loads, loaded: nobody may not be able to read them
    (Python's own library under root's home, this checkout), so the child must find
    them in memory. An extraction as root (of a file, a symlink, directories) loads
    them."""
    with tempfile.TemporaryDirectory() as scratch:
        catar = Path(scratch) / "a.catar"
        tree = {b"d": MemNode.dir(children={b"f": MemNode.file(b"x")}), b"l": MemNode.symlink(b"d")}
        catar.write_bytes(archive(MemNode.dir(children=tree)))
        console = Console(out=io.StringIO(), err=io.StringIO(), binary_out=io.BytesIO())
        for extra in ([], ["--no-same-permissions"]):
            argv = ["untar", "--no-same-owner", *extra, str(catar), f"{scratch}/out"]
            assert main(argv, console) == 0


def as_nobody(*argv: object) -> Run:
    """The command line run as nobody, in a forked child of this process, with the
    modules it needs already loaded (``loaded_for_untar``)."""
    loaded_for_untar()
    user = pwd.getpwnam("nobody")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 99
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(user.pw_gid)
            os.setuid(user.pw_uid)
            out, err = io.StringIO(), io.StringIO()
            code = main([str(a) for a in argv], Console(out=out, err=err, binary_out=io.BytesIO()))
            os.write(write_end, err.getvalue().encode())
        except BaseException as e:
            os.write(write_end, f"child failed: {e!r}\n".encode())
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        err = f.read().decode()
    _, status = os.waitpid(pid, 0)
    return Run(os.waitstatus_to_exitcode(status), err)


def tar_of(cli, src: Path, out: Path) -> Path:
    result = cli("tar", out, src)
    assert result.code == 0, result.err
    return out


def modes(root: Path, *names: str) -> dict[str, int]:
    return {n: stat.S_IMODE(os.lstat(root / n).st_mode) for n in names}


def read_only_tree(src: Path, *, whole: bool) -> Path:
    """``ro/sub1/file``, ``ro/sub1/link -> file`` and ``ro/sub2/deep`` (``whole``), or
    just ``ro/sub/file``; every directory 0555 (with ``whole``, the root too)."""
    if whole:
        (src / "ro/sub1").mkdir(parents=True)
        (src / "ro/sub2/deep").mkdir(parents=True)
        (src / "ro/sub1/file").write_text("content")
        (src / "ro/sub1/link").symlink_to("file")
        dirs = ["ro/sub2/deep", "ro/sub2", "ro/sub1", "ro", "."]
    else:
        (src / "ro/sub").mkdir(parents=True)
        (src / "ro/sub/file").write_text("content")
        dirs = ["ro/sub", "ro"]
    for d in dirs:
        (src / d).chmod(0o555)
    return src


@AS_ROOT
def test_untar_read_only_dir(cli, tmp_path, unprivileged):
    """TestUnTarReadOnlyDir: read-only directories holding directories and files are
    extracted (as nobody), and have their 0555 afterwards."""
    src = read_only_tree(tmp_path / "src", whole=True)
    catar = tar_of(cli, src, unprivileged / "ro.catar")
    dst = unprivileged / "out"
    result = as_nobody("untar", "--no-same-owner", catar, dst)
    assert (result.code, result.err) == (0, "")
    dirs = [".", "ro", "ro/sub1", "ro/sub2", "ro/sub2/deep"]
    assert modes(dst, *dirs) == dict.fromkeys(dirs, 0o555)
    assert (dst / "ro/sub1/file").read_text() == "content"
    assert os.readlink(dst / "ro/sub1/link") == "file"


@AS_ROOT
def test_untar_read_only_dir_no_same_permissions(cli, tmp_path, unprivileged):
    """TestUnTarReadOnlyDirNoSamePermissions: ignoring the archive's modes, the
    directories are writable by their owner, not 0555."""
    catar = tar_of(cli, read_only_tree(tmp_path / "src", whole=False), unprivileged / "a.catar")
    dst = unprivileged / "out"
    result = as_nobody("untar", "--no-same-owner", "--no-same-permissions", catar, dst)
    assert (result.code, result.err) == (0, "")
    assert {n: m & 0o700 for n, m in modes(dst, "ro", "ro/sub").items()} == {
        "ro": 0o700,
        "ro/sub": 0o700,
    }


@AS_ROOT
def test_untar_no_same_permissions_over_read_only_tree(cli, tmp_path, unprivileged):
    """TestUnTarNoSamePermissionsOverReadOnlyTree: a second extraction, ignoring the
    modes, over the read-only tree the first one left."""
    catar = tar_of(cli, read_only_tree(tmp_path / "src", whole=False), unprivileged / "a.catar")
    dst = unprivileged / "out"
    assert as_nobody("untar", "--no-same-owner", catar, dst).code == 0
    assert modes(dst, "ro", "ro/sub") == {"ro": 0o555, "ro/sub": 0o555}
    second = as_nobody("untar", "--no-same-owner", "--no-same-permissions", catar, dst)
    assert (second.code, second.err) == (0, "")
    assert (dst / "ro/sub/file").read_text() == "content"


@AS_ROOT
def test_untar_into_read_only_dir(cli, tmp_path, unprivileged):
    """TestUnTarIntoReadOnlyDir: the target exists already and is not writable."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src/file").write_text("content")
    catar = tar_of(cli, tmp_path / "src", unprivileged / "a.catar")
    dst = unprivileged / "out"
    dst.mkdir(mode=0o555)
    user = pwd.getpwnam("nobody")
    os.chown(dst, user.pw_uid, user.pw_gid)
    dst.chmod(0o555)
    result = as_nobody("untar", "--no-same-owner", catar, dst)
    assert (result.code, result.err) == (0, "")
    assert (dst / "file").read_text() == "content"


# -- directories while they are filled -----------------------------------------------------


class Paused(io.RawIOBase):
    """An archive stream that stops at byte ``at`` until ``resume`` is set, and says
    (``reached``) when the reader has asked for more than that."""

    def __init__(self, data: bytes, at: int) -> None:
        super().__init__()
        self.data, self.at, self.pos = data, at, 0
        self.reached, self.resume = threading.Event(), threading.Event()

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[override]
        if self.pos == self.at and not self.resume.is_set():
            self.reached.set()
            assert self.resume.wait(60)
        end = self.at if self.pos < self.at else len(self.data)
        n = min(len(b), end - self.pos)
        b[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def extract_pausing(data: bytes, before: bytes, target: Path, look: Callable[[], None]) -> None:
    """Extract ``data`` into ``target``, calling ``look`` while the stream is stopped
    inside the FILENAME of ``before`` (everything before it has been extracted)."""
    stream = Paused(data, data.index(r.filename(before)) + r.HEADER_SIZE)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            untar(stream, target, same_owner=False)
        except BaseException as e:
            failure.append(e)
            stream.reached.set()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert stream.reached.wait(60)
        assert not failure, failure
        look()
    finally:
        stream.resume.set()
        worker.join(60)
    assert not failure, failure


def test_localfs_dir_mode_while_populated(tmp_path):
    """TestLocalFSDirModeWhilePopulated: ``priv`` (0700) and ``priv/ro`` (0500) are
    never more open than the archive says while ``priv/ro/file`` is written (0500 only
    gains what writing takes), and have their own modes at the end."""
    ro = MemNode.dir(0o500, children={b"file": MemNode.file(b"content", 0o600)})
    data = archive(MemNode.dir(0o755, children={b"priv": MemNode.dir(0o700, children={b"ro": ro})}))
    dst = tmp_path / "out"
    seen: dict[str, int] = {}
    extract_pausing(data, b"file", dst, lambda: seen.update(modes(dst, "priv", "priv/ro")))
    assert seen == {"priv": 0o700, "priv/ro": 0o700}
    assert modes(dst, "priv", "priv/ro") == {"priv": 0o700, "priv/ro": 0o500}
    assert (dst / "priv/ro/file").read_bytes() == b"content"


def test_localfs_dir_setgid_while_populated(tmp_path):
    """TestLocalFSDirSetgidWhilePopulated: ``shared`` (02775) has its setgid bit while
    its contents are written, so they get its group, and keeps it."""
    shared = MemNode.dir(0o2775, children={b"file": MemNode.file(b"x")})
    data = archive(MemNode.dir(0o755, children={b"shared": shared}))
    dst = tmp_path / "out"
    seen: dict[str, int] = {}
    extract_pausing(data, b"file", dst, lambda: seen.update(modes(dst, "shared")))
    assert seen["shared"] & stat.S_ISGID
    assert modes(dst, "shared")["shared"] & stat.S_ISGID


# -- directory times (localfs_dirmtime_test.go) ---------------------------------------------

MTIME = 1577872800  # 2020-01-01


def assert_times_survive_untar(cli, tmp_path: Path, src: Path, names: list[str]) -> None:
    """Give ``names`` in ``src`` one old time, archive the tree, untar it: every one
    of them has that time in the extracted tree."""
    for name in names:
        os.utime(src / name, (MTIME, MTIME))
    catar = tar_of(cli, src, tmp_path / "a.catar")
    assert cli("untar", "--no-same-owner", catar, tmp_path / "out").code == 0
    got = {n: int(os.stat(tmp_path / "out" / n).st_mtime) for n in names}
    assert got == dict.fromkeys(names, MTIME)


def test_untar_dir_mtime(cli, tmp_path):
    """TestUnTarDirMTime: directory times survive the writing of their contents, two
    levels up included."""
    src = tmp_path / "src"
    (src / "dir/sub/deep").mkdir(parents=True)
    (src / "dir/sub/file").write_text("content")
    (src / "dir/file").write_text("content")
    names = ["dir/sub/deep", "dir/sub/file", "dir/sub", "dir/file", "dir", "."]
    assert_times_survive_untar(cli, tmp_path, src, names)


def test_contains_siblings_with_a_common_prefix(cli, tmp_path):
    """TestContains checks desync's helper that tells a directory's contents from a
    sibling's that shares its name's prefix (``dir`` and ``dirx/file``): the time of
    ``dir`` must survive ``dirx`` being filled after it (and ``dir/sub``'s the files
    of ``dir`` after it)."""
    src = tmp_path / "src"
    (src / "dir/sub").mkdir(parents=True)
    (src / "dir/subx").write_text("x")
    (src / "dirx").mkdir()
    (src / "dirx/file").write_text("x")
    names = ["dir/sub", "dir/subx", "dir", "dirx/file", "dirx", "."]
    assert_times_survive_untar(cli, tmp_path, src, names)
