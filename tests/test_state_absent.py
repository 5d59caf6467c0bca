"""``state: absent`` for extract and untar targets (issue 13, item 7): the file or
tree goes with its record, plan shows a delete with a diff, ``--check`` writes
nothing, a second run is ok, and a symlink planted at the path or on the way to
it never leads the deletion elsewhere. Everything through the CLI."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from desync_decl.archive import clearing
from desync_decl.errors import DesyncError
from tests.test_fleet_seeds import SIZES, run


def write(path: Path, body: str) -> Path:
    path.write_text("version: 1\nstores: {s: {url: store}}\ntasks:\n" + body)
    return path


def task_of(r: subprocess.CompletedProcess) -> dict:
    (task,) = json.loads(r.stdout)["tasks"]
    return task


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """Every entry below ``root`` with its inode and mtime: what --check must not move."""
    return {
        str(p.relative_to(root)): (p.lstat().st_ino, p.lstat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
    }


def present_then_absent(tmp_path: Path, kind: str, present: str, target: Path) -> None:
    """Converge ``present``, then the same task with ``state: absent``."""
    state = tmp_path / "state"
    m = write(tmp_path / "present.yaml", f"- name: app\n  {kind}: {{{present}}}\n")
    r = run("apply", m, "--state-dir", state)
    assert r.returncode == 0 and target.exists(), r.stdout + r.stderr
    records = snapshot(state)
    gone = write(
        tmp_path / "absent.yaml", f"- name: app\n  {kind}: {{path: out/app, state: absent}}\n"
    )

    plan = run("plan", gone, "--state-dir", state, "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    task = task_of(plan)
    assert task["action"] == "delete"
    what = "file" if kind == "extract" else "directory"
    assert task["reason"] == f"state absent: the {what} is removed"
    assert (task["diff"]["before"]["content"], task["diff"]["after"]) == (
        what,
        {"content": "absent"},
    )

    before = snapshot(tmp_path)
    check = run("apply", gone, "--state-dir", state, "--check", "--json")
    assert check.returncode == 0 and task_of(check)["status"] == "changed"
    assert snapshot(tmp_path) == before  # --check wrote and removed nothing

    r = run("apply", gone, "--state-dir", state, "--json")
    assert r.returncode == 0 and task_of(r)["status"] == "changed", r.stdout + r.stderr
    assert not os.path.lexists(target)
    assert len(snapshot(state)) < len(records)  # its record (and index copy) went too
    again = run("apply", gone, "--state-dir", state, "--json")
    assert (task_of(again)["status"], task_of(again)["msg"]) == ("ok", "absent")

    # present again: nothing recorded lies about it, it is made anew
    r = run("apply", m, "--state-dir", state, "--json")
    assert task_of(r)["status"] == "changed" and target.exists()


def test_extract_absent_removes_the_file_and_its_record(tmp_path):
    (tmp_path / "app.img").write_bytes(random.Random(7).randbytes(300_000))
    made = run(
        "make", "-s", tmp_path / "store", "-m", SIZES, tmp_path / "app.caibx", tmp_path / "app.img"
    )
    assert made.returncode == 0, made.stderr
    present = "index: app.caibx, path: out/app, stores: [s]"
    present_then_absent(tmp_path, "extract", present, tmp_path / "out" / "app")


def test_untar_absent_removes_the_tree_and_its_record(tmp_path):
    src = tmp_path / "src"
    (src / "deep" / "er").mkdir(parents=True)
    (src / "deep" / "er" / "f").write_bytes(random.Random(8).randbytes(50_000))
    (src / "top").write_text("top\n")
    os.symlink("/etc/passwd", src / "link")
    (src / "deep").chmod(0o555)  # a directory without write access is emptied all the same
    made = run("tar", "-i", "-s", tmp_path / "store", "-m", SIZES, tmp_path / "t.caidx", src)
    assert made.returncode == 0, made.stderr
    present = "index: t.caidx, path: out/app, stores: [s]"
    present_then_absent(tmp_path, "untar", present, tmp_path / "out" / "app")
    assert Path("/etc/passwd").exists()


def test_a_symlink_at_the_path_is_removed_never_what_it_points_to(tmp_path):
    victim = tmp_path / "victim"
    (victim / "tree").mkdir(parents=True)
    (victim / "tree" / "keep").write_text("keep\n")
    (victim / "file").write_text("keep\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    for kind, name, points_to in (("extract", "f", "file"), ("untar", "t", "tree")):
        os.symlink(victim / points_to, shared / name)
        m = write(
            tmp_path / "m.yaml", f"- name: x\n  {kind}: {{path: shared/{name}, state: absent}}\n"
        )
        r = run("apply", m, "--state-dir", tmp_path / "state", "--json")
        assert r.returncode == 0 and task_of(r)["status"] == "changed", r.stdout + r.stderr
        assert not os.path.lexists(shared / name)
    assert (victim / "tree" / "keep").read_text() == "keep\n"
    assert (victim / "file").read_text() == "keep\n"


def test_a_symlink_planted_on_the_way_is_refused(tmp_path):
    victim = tmp_path / "victim"
    (victim / "app").mkdir(parents=True)
    (victim / "app" / "keep").write_text("keep\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    os.symlink(victim, shared / "sub")  # shared/sub/app would be victim/app
    for kind in ("extract", "untar"):
        m = write(
            tmp_path / "m.yaml", f"- name: x\n  {kind}: {{path: shared/sub/app, state: absent}}\n"
        )
        r = run("apply", m, "--state-dir", tmp_path / "state")
        assert r.returncode != 0, r.stdout
        assert f"{shared / 'sub'} is a symlink in a directory others can write" in r.stdout
        assert "Traceback" not in r.stderr
        assert (victim / "app" / "keep").read_text() == "keep\n"


def test_absent_refuses_what_the_task_does_not_manage_and_present_needs_an_index(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "dir").mkdir()
    (tmp_path / "out" / "file").write_text("x")
    m = write(
        tmp_path / "m.yaml",
        "- name: x\n  extract: {path: out/dir, state: absent}\n"
        "- name: y\n  untar: {path: out/file, state: absent}\n",
    )
    r = run("apply", m, "--state-dir", tmp_path / "state", "--json")
    tasks = json.loads(r.stdout)["tasks"]
    assert [t["msg"] for t in tasks] == [
        f"cannot remove {tmp_path / 'out' / 'dir'}: it is a directory, not a file",
        f"cannot remove {tmp_path / 'out' / 'file'}: it is a file, not a directory",
    ]
    assert (tmp_path / "out" / "dir").is_dir() and (tmp_path / "out" / "file").exists()
    m = write(tmp_path / "m.yaml", "- name: x\n  extract: {path: out/app, stores: [s]}\n")
    r = run("plan", m, "--state-dir", tmp_path / "state")
    assert r.returncode != 0
    assert r.stderr.strip().endswith("missing required key 'index' in 'extract' of task 'x'")


def test_absent_removes_a_tree_deeper_than_the_recursion_limit(tmp_path):
    """1500 nested directories: removed by a loop holding one directory open at a time
    (a recursive walk dies of RecursionError, and of too many open files)."""
    (tmp_path / "out" / "app").mkdir(parents=True)
    fd = os.open(tmp_path / "out" / "app", os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(1500):
        os.mkdir("d", dir_fd=fd)
        os.close(os.open("f", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
        inner = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = inner
    os.close(fd)
    m = write(tmp_path / "m.yaml", "- name: x\n  untar: {path: out/app, state: absent}\n")
    try:
        r = run("apply", m, "--state-dir", tmp_path / "state", "--json")
        assert r.returncode == 0 and task_of(r)["status"] == "changed", r.stdout + r.stderr
        assert not os.path.lexists(tmp_path / "out" / "app")
    finally:  # left behind, it would break pytest's own (recursive) cleanup
        subprocess.run(["rm", "-rf", tmp_path / "out"], check=True)


@contextlib.contextmanager
def mounted(*argv: object):
    """``mount ARGV`` (the last one the mount point) for the block."""
    subprocess.run(["mount", *map(str, argv)], check=True)
    try:
        yield
    finally:
        subprocess.run(["umount", str(argv[-1])], check=True)


def test_absent_never_empties_a_filesystem_mounted_in_the_tree(tmp_path):
    """A tmpfs, or a bind mount of a folder of the same filesystem (same device, its
    own mount), inside an untar target: plan and apply refuse naming it before
    anything goes; the deletion walk itself stops at one mounted after the look."""
    if os.geteuid() != 0:
        pytest.skip("mounts (CI runs as root)")
    app = tmp_path / "out" / "app"
    (app / "data").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "keep").write_text("keep\n")
    m = write(tmp_path / "m.yaml", "- name: x\n  untar: {path: out/app, state: absent}\n")
    for mount in (["-t", "tmpfs", "tmpfs"], ["--bind", tmp_path / "elsewhere"]):
        with mounted(*mount, app / "data"):
            (app / "data" / "keep").write_text("keep\n")
            (app / "file").write_text("app\n")
            want = f"cannot remove {app}: {app / 'data'} is a mount point; unmount it first"
            plan = run("plan", m, "--state-dir", tmp_path / "state")
            assert plan.returncode != 0 and want in plan.stdout + plan.stderr, plan.stdout
            r = run("apply", m, "--state-dir", tmp_path / "state", "--json")
            assert r.returncode != 0 and task_of(r)["msg"] == want
            assert "Traceback" not in r.stderr
            assert (app / "file").exists() and (app / "data" / "keep").read_text() == "keep\n"
            # mounted after plan looked: the walk stops at it, the mount's files stay
            out = os.open(tmp_path / "out", os.O_RDONLY)
            with pytest.raises(DesyncError, match=f"{app / 'data'}: it is a mount point"):
                clearing.remove(out, str(tmp_path / "out"), b"app")
            os.close(out)
            assert (app / "data" / "keep").read_text() == "keep\n"
    assert (tmp_path / "elsewhere" / "keep").read_text() == "keep\n"
