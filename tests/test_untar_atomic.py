"""``untar --atomic`` and the untar task's ``atomic: true``: the new tree is built beside
the old one and switched in with one rename, so a failed or interrupted untar leaves the
whole old tree (issue 19, item 2)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from desync_decl.formats.index import decode
from desync_decl.reconcile.model import Status
from desync_decl.server.messages import Request, Response
from tests.conftest import ROOT
from tests.servers_http import chunk_service, serve  # noqa: F401 - a fixture
from tests.test_reconcile_kinds import apply
from tests.test_reconcile_tree import published, site, snapshot, untar_manifest
from tests.test_untar_update import _identity, model_versions
from tests.waiting import wait_until


@pytest.fixture
def versions(cli, tmp_path) -> tuple[Path, Path, Path, Path, Path]:
    return model_versions(cli, tmp_path)


def _last_chunk_gone(store: Path, index: Path) -> None:
    """Delete the store's copy of the index's last chunk: the untar fails at its end."""
    with open(index, "rb") as f:
        last = list(decode(f.read()))[-1].id.hex()
    (gone,) = store.glob(f"{last[:4]}/{last}.cacnk")
    gone.unlink()


def test_atomic_switches_the_whole_tree_and_links_unchanged_files(cli, versions, tmp_path):
    store, i1, i2, _, v2 = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    before = _identity(out)
    (out / "stray.tmp").write_text("mine\n")
    assert cli("untar", "--atomic", "-i", "-s", store, i2, out).code == 0
    after = _identity(out)
    assert after.pop("stray.tmp")  # carried over: extras are kept without --delete-extra
    for same in ("shards/s0.bin", "shards/s2.bin", "tok/vocab.json"):
        assert after[same][0] == before[same][0], f"{same} was not linked"
    assert after["shards/s1.bin"][0] != before["shards/s1.bin"][0]
    assert os.stat(out / "shards/s0.bin").st_nlink == 1  # the old tree is gone
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
    os.unlink(out / "stray.tmp")
    assert cli("mtree", "--no-time", out).out == cli("mtree", "--no-time", v2).out


def test_a_failed_atomic_untar_leaves_the_whole_old_tree(cli, versions, tmp_path):
    store, i1, i2, _, _ = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    old = cli("mtree", out).out
    _last_chunk_gone(store, i2)
    r = cli("untar", "--atomic", "-i", "-s", store, i2, out)
    assert r.code != 0 and "Traceback" not in r.err
    assert cli("mtree", out).out == old
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []


def test_without_atomic_a_failed_untar_leaves_a_mix_of_whole_files(cli, versions, tmp_path):
    """What the README says an interruption leaves: each file old or new, never torn."""
    store, i1, i2, v1, v2 = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    _last_chunk_gone(store, i2)
    assert cli("untar", "-i", "-s", store, i2, out).code != 0
    assert (out / "config.json").read_text() == '{"layers": 5}\n'  # new
    assert (out / "shards/s1.bin").read_bytes() in (
        (v1 / "shards/s1.bin").read_bytes(),
        (v2 / "shards/s1.bin").read_bytes(),
    )


def test_atomic_removes_what_an_interrupted_run_left_and_deletes_extras(cli, versions, tmp_path):
    store, i1, _, v1, _ = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    leftover = tmp_path / ".out.untar-0123456789abcdef"
    (leftover / "half").mkdir(parents=True)
    (leftover / "half" / "written").write_text("x")
    (out / "stray").mkdir()
    (out / "stray" / "f").write_text("x")
    other = tmp_path / ".other.untar-0123456789abcdef"  # another target's: not ours
    other.mkdir()
    assert cli("untar", "--atomic", "--delete-extra", "-i", "-s", store, i1, out).code == 0
    assert not leftover.exists() and other.exists()
    assert not (out / "stray").exists()
    assert cli("mtree", out).out == cli("mtree", v1).out


def test_atomic_refuses_a_symlink_as_the_target(cli, versions, tmp_path):
    store, i1, _, _, _ = versions
    real = tmp_path / "real"
    real.mkdir()
    os.symlink(real, tmp_path / "out")
    r = cli("untar", "--atomic", "-i", "-s", store, i1, tmp_path / "out")
    assert r.code != 0 and "not a directory" in r.err and len(r.err.strip().splitlines()) == 1
    assert os.listdir(real) == []


def test_atomic_task_converges_and_keeps_extras(tmp_path):
    m = untar_manifest(tmp_path, ", atomic: true")
    state = tmp_path / "state"
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    assert [r.status for r in apply(m, state)] == [Status.CHANGED]
    out = tmp_path / "out"
    (out / "mine.txt").write_text("kept\n")
    readme = os.lstat(out / "doc" / "readme.txt").st_ino
    published(site(tmp_path / "v2", 2), tmp_path / "site.caidx", tmp_path / "store")
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED, r.msg
    assert os.lstat(out / "doc" / "readme.txt").st_ino == readme
    assert (out / "mine.txt").read_text() == "kept\n"
    got, want = snapshot(out), snapshot(tmp_path / "v2")
    assert got.pop("old.txt")[-1] == b"only in version 1\n"  # extras are kept
    assert got.pop("mine.txt")[-1] == b"kept\n"
    got.pop("."), want.pop(".")
    assert got == want
    assert [r.status for r in apply(m, state)] == [Status.OK]


def test_a_killed_atomic_untar_leaves_the_old_tree_whole_and_is_finished_next_time(
    cli,
    versions,
    tmp_path,
    serve,  # noqa: F811
):
    """The store answers nothing until the untar is killed: meanwhile a reader sees the
    whole old tree; after SIGKILL the old tree is there, whole; the next run ends at
    v2 and removes what the killed one left."""
    store, i1, i2, _, v2 = versions
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", store, i1, out).code == 0
    old = cli("mtree", out).out
    service = chunk_service(store)
    asked, release = threading.Event(), threading.Event()

    def app(request: Request) -> Response:
        asked.set()
        release.wait(60)  # held until the untar is killed
        return service(request)

    url = serve(app).url
    argv = [sys.executable, "-m", "desync_decl", "untar", "--atomic", "-i", "-s", url]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    untar = subprocess.Popen([*argv, str(i2), str(out)], env=env, stderr=subprocess.PIPE)
    try:
        wait_until(asked.is_set, "the untar asks the store for a chunk v2 adds")
        assert cli("mtree", out).out == old  # a reader sees the old tree, whole
        assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.untar-")]
        untar.send_signal(signal.SIGKILL)
        untar.wait(30)
    finally:
        release.set()
        if untar.poll() is None:
            untar.kill()
            untar.wait(30)
    assert cli("mtree", out).out == old
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".out.untar-")]  # left over
    assert cli("untar", "--atomic", "-i", "-s", url, i2, out).code == 0
    assert cli("mtree", out).out == cli("mtree", v2).out
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out.")] == []
