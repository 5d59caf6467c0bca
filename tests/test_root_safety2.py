"""``apply`` as root next to a hostile local user, second round (issue 12, red team):
a symlink planted as a *directory* of the target, and a file of the attacker's
adopted by root (chowned, chmodded) while they hold it mapped.

As ``test_root_safety``: real files, real stores, the attacker a real process run as
nobody through setpriv.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_reconcile_kinds import write
from tests.test_root_safety import (  # noqa: F401 - fixtures
    AS_NOBODY,
    NOBODY,
    SECRET,
    apply,
    as_nobody,
    install,
    published,
    shared,
)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="the attacks need root (the victim) and setpriv (the attacker as nobody)",
)

# the attacker's interpreter: a system one nobody can reach, else ours
PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
REFUSED = "is a symlink in a directory others can write"


def identity(path: Path) -> tuple:
    """What root must not change: inode, owner, mode, content (a directory's: names)."""
    st = path.stat()
    held = path.read_bytes() if path.is_file() else sorted(os.listdir(path))
    return (st.st_ino, st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), held)


# --- H1: a symlink as a directory of the target --------------------------------------------

PLANT_DIR = """
import os, sys
os.symlink(sys.argv[2], sys.argv[1])
"""


@pytest.fixture
def rootonly(shared) -> Path:  # noqa: F811 - the fixture
    """A directory only root may enter, beside ``shared``, holding root's 0600
    ``app.img``; nobody has planted ``shared/sub -> rootonly``."""
    dir = shared.parent / "rootonly"
    dir.mkdir(mode=0o700)
    write(dir / "app.img", SECRET).chmod(0o600)
    planted = as_nobody(PLANT_DIR, shared / "sub", dir)
    assert planted.returncode == 0, planted.stderr
    return dir


@pytest.mark.parametrize(
    "extra, name",
    [
        ("", "app.img"),
        (", in_place: true", "app.img"),
        (", backup: true", "app.img"),
        (', owner: nobody, mode: "0666"', "app.img"),  # converged: attributes only
        ("", "new/app.img"),  # a directory to make below the link
    ],
    ids=["replace", "in-place", "backup", "attributes", "mkdir"],
)
def test_a_symlink_planted_as_a_directory_of_the_target_is_refused(
    tmp_path,
    shared,  # noqa: F811 - the fixture
    rootonly,
    published,  # noqa: F811 - the fixture
    extra,
    name,
):
    if "owner" in extra:  # root's file already holds the content: only attributes differ
        write(rootonly / "app.img", published[1]).chmod(0o600)
    before = {p.name: identity(p) for p in rootonly.iterdir()}
    target = shared / "sub" / name
    (r,) = apply(install(tmp_path, target, extra=extra), tmp_path / "state")
    assert {p.name: identity(p) for p in rootonly.iterdir()} == before
    assert r.status.value == "failed"
    assert r.msg == f"cannot write {target}: {shared / 'sub'} {REFUSED}"


@pytest.mark.usefixtures("published")
def test_plan_out_and_extract_refuse_a_symlinked_directory(tmp_path, shared, rootonly, cli):  # noqa: F811
    before = {p.name: identity(p) for p in rootonly.iterdir()}
    m = install(tmp_path, tmp_path / "out" / "app.img")
    out = shared / "sub" / "plan.json"
    r = cli("plan", m, "--state-dir", tmp_path / "state", "--out", out)
    assert (r.code, r.err) == (
        1,
        f"desync-decl: error: cannot write {out}: {shared / 'sub'} {REFUSED}\n",
    )
    target = shared / "sub" / "app.img"
    r = cli("extract", "-s", tmp_path / "store", tmp_path / "v2.caibx", target)
    assert (r.code, r.err) == (
        1,
        f"desync-decl: error: cannot write {target}: {shared / 'sub'} {REFUSED}\n",
    )
    assert {p.name: identity(p) for p in rootonly.iterdir()} == before


# --- H2, M1: a file of the attacker's is replaced, never adopted ---------------------------

MAP_SHARED = """
import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDWR)
view = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
print(os.fstat(fd).st_ino, flush=True)
sys.stdin.readline()
view[:7] = b"#!EVIL!"
view.flush()
print("written", flush=True)
"""


def attackers(path: Path, data: bytes, mode: int) -> int:
    """``path`` made nobody's file with ``data`` and ``mode``; its inode."""
    write(path, data)
    os.chown(path, NOBODY, NOBODY)
    path.chmod(mode)
    return path.stat().st_ino


@pytest.mark.parametrize("in_place", [False, True], ids=["replace", "in-place"])
def test_a_mapped_file_of_the_attacker_never_becomes_roots_set_uid_program(
    tmp_path,
    shared,  # noqa: F811 - the fixture
    published,  # noqa: F811 - the fixture
    in_place,
):
    """nobody holds a copy of the right content mapped shared and writable; the task
    wants it root's and set-uid: a new file of root's takes the name, and what
    nobody then writes through the mapping reaches only their own file."""
    tool = shared / "tool"
    attackers(tool, published[1], 0o755)
    mapper = subprocess.Popen(
        [*AS_NOBODY, PYTHON, "-c", MAP_SHARED, str(tool)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        mapped = int(mapper.stdout.readline())
        extra = f', owner: root, mode: "4755", in_place: {str(in_place).lower()}'
        (r,) = apply(install(tmp_path, tool, extra=extra), tmp_path / "state")
        assert r.status.value == "changed", r.msg
        mapper.stdin.write("\n")
        mapper.stdin.flush()
        assert mapper.stdout.readline() == "written\n"
    finally:
        mapper.kill()
        mapper.wait()
    st = tool.stat()
    assert st.st_ino != mapped and tool.read_bytes() == published[1]
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o4755)
    assert "a new file replaces it" in r.msg


@pytest.mark.parametrize(
    "content, in_place",
    [(0, True), (1, False)],
    ids=["in-place-content-differs", "converged-attributes-only"],
)
def test_the_attackers_mode_bits_never_survive_on_a_file_given_to_root(
    tmp_path,
    shared,  # noqa: F811 - the fixture
    published,  # noqa: F811 - the fixture
    content,
    in_place,
):
    """nobody's 06777 (or 0666) file; the task wants it root's and names no mode: the
    new file's mode is what a file of someone else's may pass on (``kept_mode``: no
    set-id, no group/other write), on a new inode."""
    target = shared / "app.img"
    mode = 0o6777 if in_place else 0o666
    planted = attackers(target, published[content], mode)
    extra = f", owner: root, group: root, in_place: {str(in_place).lower()}"
    (r,) = apply(install(tmp_path, target, extra=extra), tmp_path / "state")
    assert r.status.value == "changed", r.msg
    st = target.stat()
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, mode & 0o755)
    assert st.st_ino != planted and target.read_bytes() == published[1]


def test_in_place_for_another_owner_converges_once(
    tmp_path,
    shared,  # noqa: F811 - the fixture
    published,  # noqa: F811 - the fixture
):
    """A file that is to be someone else's is replaced rather than written in place
    while it differs; once it holds the content with its attributes, it is left alone."""
    target = shared / "app.img"
    attackers(target, published[0], 0o644)
    m = install(tmp_path, target, extra=', owner: nobody, mode: "0640", in_place: true')
    assert [r.status.value for r in apply(m, tmp_path / "state")] == ["changed"]
    st = target.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o640)
    assert [r.status.value for r in apply(m, tmp_path / "state")] == ["ok"]
    assert target.stat().st_ino == st.st_ino and target.read_bytes() == published[1]


def test_a_file_linked_elsewhere_is_not_made_set_id_in_place(tmp_path, published):  # noqa: F811
    """Root's own converged file, hard-linked under another name: made set-uid in
    place, the other name would stay a set-uid copy no later update reaches."""
    tool = write(tmp_path / "out" / "tool", published[1])
    tool.chmod(0o755)
    other = tmp_path / "kept-elsewhere"
    other.hardlink_to(tool)
    (r,) = apply(install(tmp_path, tool, extra=', mode: "4755"'), tmp_path / "state")
    assert r.status.value == "changed", r.msg
    assert stat.S_IMODE(tool.stat().st_mode) == 0o4755 and tool.read_bytes() == published[1]
    assert stat.S_IMODE(other.stat().st_mode) == 0o755
    assert tool.stat().st_ino != other.stat().st_ino
