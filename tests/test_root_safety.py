"""``apply`` as root next to a hostile local user (``nobody``, via setpriv): the target's
directory, or the state folder, is one the attacker can write, and what they plant
there (symlinks to root's files, forged records, a racing swap) must never make root
write, chmod or chown anything but the target it was asked to converge.

Real files, real stores, a real unprivileged process as the attacker; the only hook
is an observer on a real store's reads, to look at the temp file mid-extraction.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_decl.errors import DesyncError
from desync_decl.manifest import load_manifest
from desync_decl.reconcile import ApplyOptions, apply_manifest, open_context
from desync_decl.reconcile.lock import locked
from desync_decl.reconcile.state import XATTR
from desync_decl.stores.local import LocalStore
from tests.test_reconcile_kinds import blob, make_index, manifest, statuses, write

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="the attacks need root (the victim) and setpriv (the attacker as nobody)",
)

NOBODY = 65534
AS_NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
SECRET = b"root's secret, 0600\n"


def as_nobody(code: str, *args: object) -> subprocess.CompletedProcess:
    """Run Python ``code`` as nobody (``sys.argv[1:]`` = ``args``)."""
    argv = [*AS_NOBODY, sys.executable, "-c", code, *map(str, args)]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory owned by nobody, reachable by nobody (pytest's tmp dirs are not)."""
    top = Path(tempfile.mkdtemp(prefix="desync-root-safety-"))
    top.chmod(0o755)
    dir = top / "shared"
    dir.mkdir(mode=0o755)
    os.chown(dir, NOBODY, NOBODY)
    try:
        yield dir
    finally:
        shutil.rmtree(top)


@pytest.fixture
def victim(tmp_path) -> Path:
    """A root-owned 0600 file in a directory only root can enter."""
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    file = write(private / "victim", SECRET)
    file.chmod(0o600)
    return file


def unchanged(victim: Path) -> bool:
    st = victim.stat()
    return (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, 0o600) and (
        victim.read_bytes() == SECRET
    )


@pytest.fixture
def published(tmp_path) -> tuple[bytes, bytes]:
    """Two versions of an image, each with an index; their chunks in ``store``."""
    v1, v2 = blob(71, 300_000), blob(72, 300_000)
    make_index(write(tmp_path / "v1.img", v1), tmp_path / "v1.caibx", tmp_path / "store")
    make_index(write(tmp_path / "v2.img", v2), tmp_path / "v2.caibx", tmp_path / "store")
    return v1, v2


def install(tmp_path: Path, target: Path, version: int = 2, extra: str = "", name="m.yaml"):
    """A manifest (``name``) with one task: extract ``v<version>`` to ``target``."""
    task = f'{{index: v{version}.caibx, path: "{target}", stores: [s]{extra}}}'
    return manifest(
        tmp_path,
        f"stores: {{s: {{url: store}}}}\ntasks:\n- {{name: install, extract: {task}}}\n",
        name,
    )


def apply(m: Path, state: Path, *, xattrs: bool = True):
    ctx = open_context(load_manifest(m), state_dir=state, concurrency=4, xattrs=xattrs)
    try:
        return apply_manifest(ctx, ApplyOptions())
    finally:
        ctx.resolver.close()


# --- 1: backups --------------------------------------------------------------------------

PLANT_BACKUPS = """
import os, sys, time
target, victim = sys.argv[1], sys.argv[2]
now = int(time.time())
for t in range(now - 2, now + 120):
    stamp = time.strftime("%Y-%m-%d@%H:%M:%S", time.localtime(t))
    os.symlink(victim, f"{target}.{stamp}~")
"""


@pytest.mark.parametrize("in_place", [False, True], ids=["link", "copy"])
def test_a_backup_is_never_written_through_a_planted_symlink(
    tmp_path, shared, victim, published, in_place
):
    """Symlinks at every backup name of the next two minutes, to a file root has not
    made yet (dangling: "exists" is False) in a directory only root may write."""
    v1, v2 = published
    target = write(shared / "app.img", v1)  # root's file in nobody's directory
    planted = as_nobody(PLANT_BACKUPS, target, victim.parent / "made-by-root")
    assert planted.returncode == 0, planted.stderr
    links = {p for p in shared.iterdir() if p.is_symlink()}
    m = install(tmp_path, target, extra=f", backup: true, in_place: {str(in_place).lower()}")
    (r,) = apply(m, tmp_path / "state")
    assert r.status.value == "changed", r.msg
    assert sorted(victim.parent.iterdir()) == [victim] and unchanged(victim)
    backup = Path(r.stats["backup"])
    assert backup not in links and not backup.is_symlink()
    assert backup.read_bytes() == v1 and target.read_bytes() == v2
    assert {p for p in shared.iterdir() if p.is_symlink()} == links  # left alone


# --- 2: attributes on the open file, before the rename -----------------------------------

RACER = """
import os, sys
target, victim = sys.argv[1], sys.argv[2]
temp = target + ".racer"
while True:
    try:
        os.symlink(victim, temp)
        os.rename(temp, target)
    except OSError:
        pass
"""


@pytest.mark.parametrize("xattrs", [True, False], ids=["xattr-records", "folder-records"])
def test_a_racer_swapping_the_target_for_a_symlink_never_reaches_the_victim(
    tmp_path, shared, victim, published, xattrs
):
    target = shared / "app.img"
    manifests = [
        install(tmp_path, target, v, ', owner: nobody, mode: "0666"', f"m{v}.yaml") for v in (1, 2)
    ]
    racer = subprocess.Popen([*AS_NOBODY, sys.executable, "-c", RACER, str(target), str(victim)])
    changed = 0
    try:
        started = time.monotonic() + 30
        while not target.is_symlink() and time.monotonic() < started:
            time.sleep(0.01)  # the racer is running before the first round
        for round in range(12):
            (r,) = apply(manifests[round % 2], tmp_path / "state", xattrs=xattrs)
            changed += r.status.value == "changed"
            assert unchanged(victim), f"round {round}: {r.status.value} {r.msg}"
    finally:
        racer.kill()
        racer.wait()
    assert changed > 0  # the race was run, not refused every time
    # the racer's last word is a symlink: no record may say "converged" for it
    os.symlink(victim, shared / "last")
    os.rename(shared / "last", target)
    (r,) = apply(manifests[1], tmp_path / "state", xattrs=xattrs)
    assert r.status.value == "changed", r.msg
    assert not target.is_symlink() and target.read_bytes() == published[1]
    st = target.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (NOBODY, 0o666) and unchanged(victim)


def test_a_mode_is_kept_from_the_old_file_only_as_far_as_its_owner_is_trusted(tmp_path, published):
    """No mode in the task: a file of ours keeps its mode; from another user's file
    neither set-id bits nor group/other write are taken (the new file is root's)."""
    v1, v2 = published
    cases = {"ours-0640": (0, 0o640, 0o640), "nobody-0666": (NOBODY, 0o666, 0o644)}
    cases["nobody-4777"] = (NOBODY, 0o4777, 0o755)
    for name, (uid, mode, _) in cases.items():
        old = write(tmp_path / "out" / name, v1)
        os.chown(old, uid, uid)
        old.chmod(mode)
        m = install(tmp_path, old, name=f"{name}.yaml")
        (r,) = apply(m, tmp_path / "state")
        assert r.status.value == "changed", r.msg
    for name, (_, _, kept) in cases.items():
        st = (tmp_path / "out" / name).stat()
        assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (0, 0, kept), name
        assert (tmp_path / "out" / name).read_bytes() == v2


FORGE = """
import json, os, sys
target, ours = sys.argv[1], sys.argv[2]
record = json.loads(os.getxattr(ours, sys.argv[3]))
with open(target, "wb") as f:
    f.write(b"nobody's program")
st = os.stat(target)
record.update(size=st.st_size, mtime_ns=st.st_mtime_ns, ino=st.st_ino)
os.setxattr(target, sys.argv[3], json.dumps(record).encode())
"""


def test_a_forged_xattr_record_on_someone_elses_file_is_not_believed(tmp_path, shared, published):
    """nobody swaps our set-uid root file for their own with a copy of our record
    (fitted to their file): root must not take it as converged and chown/chmod it."""
    target = shared / "tool"
    m = install(tmp_path, target, extra=', owner: root, mode: "4755"')
    assert statuses(apply(m, tmp_path / "state")) == ["changed"]
    (shared / "ours").hardlink_to(target)  # nobody reads our record from the same inode
    target.unlink()
    forged = as_nobody(FORGE, target, shared / "ours", XATTR)
    assert forged.returncode == 0, forged.stderr
    assert json.loads(os.getxattr(target, XATTR))["ino"] == target.stat().st_ino
    (r,) = apply(m, tmp_path / "state")
    assert r.status.value == "changed", r.msg
    st = target.stat()
    assert target.read_bytes() == published[1]
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (0, 0o4755)


PLANT_TARGET = """
import os, sys
os.symlink(sys.argv[2], sys.argv[1])
"""


def test_in_place_does_not_write_through_a_symlink_planted_at_the_target(
    tmp_path, shared, victim, published
):
    target = shared / "disk.img"
    assert as_nobody(PLANT_TARGET, target, victim).returncode == 0
    m = install(tmp_path, target, extra=", in_place: true")
    (r,) = apply(m, tmp_path / "state")
    assert r.status.value == "failed"
    assert r.msg == f"cannot write {target}: a symlink in a directory others can write"
    assert unchanged(victim) and target.is_symlink()


# --- 4: temp files -------------------------------------------------------------------------

READ = """
import sys
try:
    open(sys.argv[1], "rb").read(1)
except OSError as e:
    print(e.strerror)
else:
    print("read")
"""


def test_the_temp_file_of_a_0600_target_is_never_readable_by_others(
    tmp_path, shared, published, monkeypatch
):
    target = shared / "secret.img"
    seen: list[tuple[int, str]] = []
    lock = threading.Lock()
    real = LocalStore.get_chunk

    def observe(self, id):
        """While the extract runs: the temp file's mode, and whether nobody can read it."""
        with lock:
            if not seen:
                (temp,) = shared.glob(f".{target.name}.*.tmp")
                seen.append((stat.S_IMODE(temp.stat().st_mode), as_nobody(READ, temp).stdout))
        return real(self, id)

    monkeypatch.setattr(LocalStore, "get_chunk", observe)
    m = install(tmp_path, target, extra=', mode: "0600"')
    assert statuses(apply(m, tmp_path / "state")) == ["changed"]
    assert seen == [(0o600, "Permission denied\n")]
    assert stat.S_IMODE(target.stat().st_mode) == 0o600 and target.read_bytes() == published[1]

    seen.clear()  # no mode given: private while written, the default once complete
    other = install(tmp_path, shared / "public.img", name="public.yaml")
    target = shared / "public.img"
    assert statuses(apply(other, tmp_path / "state")) == ["changed"]
    assert seen == [(0o600, "Permission denied\n")]
    assert stat.S_IMODE(target.stat().st_mode) == 0o644 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- 5: the state folder -------------------------------------------------------------------

PLANT_STATE = """
import os, sys
state, victim, victim_dir = sys.argv[1:4]
locks = os.path.join(state, "locks")
for name in os.listdir(locks):
    os.unlink(os.path.join(locks, name))
    os.symlink(victim, os.path.join(locks, name))
records = os.path.join(state, "records")
if os.path.exists(records):
    os.rename(records, records + ".old")
os.symlink(victim_dir, records)
"""


@pytest.mark.parametrize("shared_how", ["0777", "owned-by-nobody"])
def test_a_shared_state_folder_is_refused_and_its_plants_touch_nothing(
    tmp_path, shared, victim, published, cli, shared_how
):
    state = shared / "state"
    m = install(tmp_path, tmp_path / "out" / "app.img", extra=", owner: nobody")
    first = cli("apply", m, "--state-dir", state)
    assert first.code == 0, first.out + first.err
    for dir in (d for d in (state, state / "locks", state / "records") if d.exists()):
        if shared_how == "0777":
            dir.chmod(0o777)
        else:
            os.chown(dir, NOBODY, NOBODY)
    victim_dir = victim.parent / "dir"  # root's, where nobody cannot even look
    victim_dir.mkdir(mode=0o700)
    planted = as_nobody(PLANT_STATE, state, victim, victim_dir)
    assert planted.returncode == 0, planted.stderr
    (tmp_path / "out" / "app.img").unlink()  # the run would write a record and take a lock

    r = cli("apply", m, "--state-dir", state)
    assert unchanged(victim) and list(victim_dir.iterdir()) == []
    mode = "0777" if shared_how == "0777" else "0700"
    uid = 0 if shared_how == "0777" else NOBODY
    assert (r.code, r.out) == (1, "")
    assert r.err == (
        f"desync-decl: error: refusing {state}: owned by uid {uid} with mode {mode}"
        " (it must be ours and writable by no one else)\n"
    )


def test_a_lock_file_is_never_opened_through_a_symlink(tmp_path, victim):
    """Even in a private state folder (say, left there by an old tool), a symlink in
    place of a lock file is refused, not followed and truncated."""
    key = f"file:{tmp_path / 'app.img'}"
    with locked(tmp_path / "state", {key: True}, timeout=0):
        pass
    (lock,) = (tmp_path / "state" / "locks").iterdir()
    lock.unlink()
    lock.symlink_to(victim)
    with (
        pytest.raises(DesyncError, match=f"^cannot open lock file {lock}: "),
        locked(tmp_path / "state", {key: True}, timeout=0),
    ):
        pass
    assert unchanged(victim) and lock.is_symlink()


def test_state_folders_are_made_private_whatever_the_umask(tmp_path, published, cli):
    state = tmp_path / "state"
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - {name: mk, make: {source: v1.img, index: again.caibx, store: s}}
        """,
    )
    mask = os.umask(0)
    try:
        r = cli("apply", m, "--state-dir", state)
    finally:
        os.umask(mask)
    assert r.code == 0, r.out + r.err
    for dir in (state, state / "locks", state / "records"):
        assert stat.S_IMODE(dir.stat().st_mode) == 0o700, dir


def test_a_symlink_as_the_state_folder_or_in_it_is_refused(tmp_path, published, cli):
    m = install(tmp_path, tmp_path / "out" / "app.img")
    real = tmp_path / "real-state"
    assert cli("apply", m, "--state-dir", real).code == 0
    link = tmp_path / "state-link"
    link.symlink_to(real)
    r = cli("apply", m, "--state-dir", link)
    assert (r.code, r.err) == (1, f"desync-decl: error: refusing {link}: it is a symlink\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (real / "locks").rename(tmp_path / "old-locks")
    (real / "locks").symlink_to(elsewhere)
    (tmp_path / "out" / "app.img").unlink()
    r = cli("apply", m, "--state-dir", real)
    assert (r.code, r.out.splitlines()) == (
        1,
        [
            f"failed: [install] extract: refusing {real / 'locks'}: it is a symlink",
            "RECAP ok=0 changed=0 failed=1 skipped=0",
        ],
    )
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "out" / "app.img").exists()
