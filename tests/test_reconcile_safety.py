"""Locks between runs, fast-path records, ordering and tags, and the proof that a
converged run fetches nothing: store calls counted in-process, and HTTP requests
counted in a real chunk-server's log."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from desync_decl.manifest import Task
from desync_decl.reconcile.graph import dependencies, selected
from desync_decl.reconcile.kinds.base import Resources
from desync_decl.reconcile.lock import LockTimeout, locked
from desync_decl.reconcile.state import XATTR, StateStore
from desync_decl.stores.local import LocalStore
from tests.servers_http import cli_server  # noqa: F401 - fixture
from tests.test_reconcile_kinds import blob, make_index, manifest, write


@pytest.fixture
def published(tmp_path) -> Path:
    """An index and a store holding its chunks, and a manifest that installs it."""
    make_index(
        write(tmp_path / "v.img", blob(40, 400_000)), tmp_path / "v.caibx", tmp_path / "store"
    )
    return manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - {name: install, extract: {index: v.caibx, path: out/v.img, stores: [s]}}
        """,
    )


def apply_process(m: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "desync_decl",
            "apply",
            str(m),
            "--state-dir",
            str(m.parent / "state"),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_two_applies_on_one_target_take_turns(published):
    target = published.parent / "out" / "v.img"
    with locked(published.parent / "state", {f"file:{target}": True}, timeout=1):
        runs = [apply_process(published) for _ in range(2)]
        for run in runs:  # both wait for the lock this test holds
            line = run.stderr.readline()
            assert line == f"[install] waiting for lock on {target} held by pid {os.getpid()}\n"
    outs = [run.communicate(timeout=30)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    firsts = sorted(out.splitlines()[0].split(":")[0] for out in outs)
    assert firsts == ["changed", "ok"]  # the second saw what the first wrote
    assert target.read_bytes() == blob(40, 400_000)


def test_a_lock_timeout_fails_the_task_naming_the_holder(published):
    target = published.parent / "out" / "v.img"
    with locked(published.parent / "state", {f"file:{target}": True}, timeout=1):
        run = apply_process(published, "--lock-timeout", "0.2")
        out, _ = run.communicate(timeout=30)
    assert run.returncode == 1
    holder = f"held by pid {os.getpid()}"
    assert out.splitlines() == [
        f"failed: [install] extract: timed out waiting for lock on {target} {holder}",
        "RECAP ok=0 changed=0 failed=1 skipped=0",
    ]
    assert not target.exists()


def test_shared_locks_coexist_and_exclude_an_exclusive_one(tmp_path):
    key = "store:/somewhere"
    busy = r"timed out waiting for lock on store /somewhere held by pid \d+"
    with (
        locked(tmp_path, {key: False}, timeout=0),
        locked(tmp_path, {key: False}, timeout=0),
        pytest.raises(LockTimeout, match=busy),
        locked(tmp_path, {key: True}, timeout=0.1),
    ):
        pass
    with locked(tmp_path, {key: True}, timeout=0):
        pass


def test_file_records_live_in_an_xattr_or_the_state_folder(tmp_path):
    f = write(tmp_path / "f", b"data")
    with_xattr = StateStore(tmp_path / "state")
    record = with_xattr.put_file_record(f, "sha512-256:x")
    assert record.ctime_ns is None and os.getxattr(f, XATTR)
    assert with_xattr.file_record(f) == record and record.matches("sha512-256:x", f.stat())
    assert not record.matches("sha512-256:y", f.stat())
    assert not (tmp_path / "state").exists()

    g = write(tmp_path / "g", b"data")
    folder = StateStore(tmp_path / "state", xattrs=False)
    record = folder.put_file_record(g, "sha512-256:x")
    assert record.ctime_ns == g.stat().st_ctime_ns
    with pytest.raises(OSError):
        os.getxattr(g, XATTR)
    assert folder.file_record(g) == record
    os.chmod(g, 0o600)  # the ctime moves: a folder record no longer matches
    assert not record.matches("sha512-256:x", g.stat())


def _task(name: str, tags: tuple[str, ...] = ()) -> Task:
    return Task(name, "make", None, tags, 0, None)  # type: ignore[arg-type]


def test_tags_follow_ansible():
    plain, always, never = _task("a", ("x",)), _task("b", ("always",)), _task("c", ("never", "y"))
    assert [selected(t) for t in (plain, always, never)] == [True, True, False]
    assert [selected(t, ["x"]) for t in (plain, always, never)] == [True, True, False]
    assert [selected(t, ["y"]) for t in (plain, always, never)] == [False, True, True]
    assert [selected(t, ["all"]) for t in (plain, always, never)] == [True, True, False]
    assert [selected(t, [], ["always"]) for t in (plain, always, never)] == [True, False, False]


def test_ordering_needs_only_what_flows_between_tasks():
    s, i, j = frozenset({"store:/s"}), "file:/i.caibx", "file:/j.caibx"
    make = Resources(reads=frozenset({"file:/src"}), adds=s, writes=frozenset({i}))
    other_make = Resources(adds=s, writes=frozenset({j}))
    extract = Resources(reads=frozenset({i}) | s, writes=frozenset({"file:/out"}))
    prune = Resources(writes=s, patterns=frozenset({"file:/*.caibx"}))
    deps = dependencies([make, other_make, extract, prune])
    assert deps.after == [[], [], [0, 1], [0, 1, 2]]
    assert deps.needs == [[], [], [0], [0, 1]]  # a prune's keep globs read the indexes


# --- a converged run fetches nothing -------------------------------------------------------


def counting(monkeypatch) -> dict[str, int]:
    calls = {"get_chunk": 0, "has_chunk": 0, "store_chunk": 0}
    for name in calls:
        real = getattr(LocalStore, name)

        def wrapper(self, *args, _real=real, _name=name):
            calls[_name] += 1
            return _real(self, *args)

        monkeypatch.setattr(LocalStore, name, wrapper)
    return calls


def test_a_second_apply_asks_no_store_anything(cli, tmp_path, monkeypatch):
    write(tmp_path / "app.img", blob(41))
    make_index(write(tmp_path / "lib.img", blob(42)), tmp_path / "lib.caibx")
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}, near: {url: near}}
        tasks:
        - {name: mk, make: {source: app.img, index: app.caibx, store: s}}
        - {name: chop, chop: {index: lib.caibx, source: lib.img, store: s}}
        - {name: warm, cache: {indexes: [app.caibx, lib.caibx], stores: [s], cache: near}}
        - {name: ex, extract: {index: app.caibx, path: out/app.img, stores: [s]}}
        """,
    )
    calls = counting(monkeypatch)
    first = cli("apply", m, "--state-dir", tmp_path / "state")
    assert first.out.splitlines()[-1] == "RECAP ok=0 changed=4 failed=0 skipped=0", first.out
    assert calls["get_chunk"] > 0 and calls["store_chunk"] > 0
    calls.update(dict.fromkeys(calls, 0))
    second = cli("apply", m, "--state-dir", tmp_path / "state")
    assert second.out.splitlines()[-1] == "RECAP ok=4 changed=0 failed=0 skipped=0"
    assert calls == {"get_chunk": 0, "has_chunk": 0, "store_chunk": 0}
    calls.update(dict.fromkeys(calls, 0))
    verified = cli("apply", m, "--state-dir", tmp_path / "state", "--verify")
    assert verified.out.splitlines()[-1] == "RECAP ok=4 changed=0 failed=0 skipped=0"
    assert calls["has_chunk"] > 0 and calls["get_chunk"] == 0  # presence asked, nothing fetched


def test_a_second_apply_sends_no_request_to_a_chunk_server(cli, tmp_path, cli_server):  # noqa: F811
    make_index(write(tmp_path / "v.img", blob(43)), tmp_path / "v.caibx", tmp_path / "store")
    log = tmp_path / "access.log"
    server = cli_server("chunk-server", "-s", tmp_path / "store", "--log", log)
    m = manifest(
        tmp_path,
        f"""\
        stores: {{remote: {{url: "{server.url}"}}}}
        tasks:
        - {{name: ex, extract: {{index: v.caibx, path: out/v.img, stores: [remote]}}}}
        """,
    )
    first = cli("plan", m, "--state-dir", tmp_path / "state", "--json")
    assert first.code == 0, first.err
    r = cli("apply", m, "--state-dir", tmp_path / "state")
    assert r.code == 0 and r.out.startswith("changed: [ex]"), r.out + r.err
    gets = [line for line in log.read_text().splitlines() if "Request: GET " in line]
    assert len(gets) == len(make_index(tmp_path / "v.img", tmp_path / "again.caibx").unique_ids())
    requests = len(log.read_text().splitlines())
    r = cli("apply", m, "--state-dir", tmp_path / "state")
    assert r.out.startswith("ok: [ex] extract: converged (recorded)")
    assert len(log.read_text().splitlines()) == requests  # not one request
