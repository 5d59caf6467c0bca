"""Issue 13, item 6: what an operator running apply on a fleet sees.

A tag typo is an error naming the tags there are; ``plan`` says which apply holds
a lock (pid, host, user, since when) without waiting for it; root keeps its state
in ``/var/lib/desync-decl``; make and tar results carry the index digest a
``pin`` takes; progress shows on a terminal (plan's chunk checks, every task of
``apply -j N``) and nothing of it when piped. Everything runs the real CLI.
"""

from __future__ import annotations

import json
import os
import pty
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from desync_decl.reconcile.lock import locked
from desync_decl.reconcile.state import default_state_dir
from tests.conftest import ROOT
from tests.servers_http import cli_server  # noqa: F401 - fixture
from tests.test_reconcile_kinds import blob, index_of, make_index, manifest, write

CLI = [sys.executable, "-m", "desync_decl"]


def run(*argv: object, env: dict[str, str] | None = None, cwd: Path | None = None):
    return subprocess.run(
        [*CLI, *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=cwd,
        check=False,
    )


@pytest.fixture
def site(tmp_path) -> Path:
    """A make (tagged publish) and an extract of what it writes (tagged install)."""
    write(tmp_path / "build" / "app.img", blob(50, 300_000))
    return manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: publish
          tags: [publish]
          make: {source: build/app.img, index: rel/app.caibx, store: s}
        - name: install
          tags: [install]
          extract: {index: rel/app.caibx, path: out/app.img, stores: [s]}
        """,
    )


def state_args(m: Path) -> list[object]:
    return [m, "--state-dir", m.parent / "state"]


# --- tags --------------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["plan", "apply"])
@pytest.mark.parametrize("option", ["--tags", "--skip-tags"])
def test_a_tag_no_task_carries_is_an_error_listing_the_known_tags(site, verb, option):
    r = run(verb, *state_args(site), option, "install,ap")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        f"desync-decl: error: {option}: no task is tagged 'ap';"
        f" the tags of the manifest are: {'all, ' if option == '--tags' else ''}install, publish"
    ]
    assert r.stdout == ""
    assert not (site.parent / "rel").exists() and not (site.parent / "state").exists()


def test_known_tags_still_select(site):
    r = run("apply", *state_args(site), "--tags", "publish")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "RECAP ok=0 changed=1 failed=0 skipped=0"
    assert run("plan", *state_args(site), "--tags", "all").returncode == 0


# --- the index digest a pin takes ------------------------------------------------------


def test_make_prints_the_index_digest_a_pin_takes(site):
    first = run("apply", *state_args(site), "--tags", "publish")
    assert first.returncode == 0, first.stderr
    digest = index_of(site.parent / "rel" / "app.caibx").file_digest()
    assert digest.startswith("sha512-256:")
    assert first.stdout.splitlines()[0].endswith(f"; index digest {digest}")
    again = run("apply", *state_args(site), "--tags", "publish")
    assert again.stdout.splitlines()[0].startswith("ok: [publish] make: ")
    assert again.stdout.splitlines()[0].endswith(f"; index digest {digest}")
    # what was printed is what an extract's pin accepts
    text = site.read_text().replace("stores: [s]}", f"stores: [s], pin: '{digest}'}}")
    site.write_text(text)
    pinned = run("apply", *state_args(site))
    assert pinned.returncode == 0, pinned.stdout + pinned.stderr
    assert (site.parent / "out" / "app.img").read_bytes() == blob(50, 300_000)


def test_tar_prints_the_index_digest(tmp_path):
    write(tmp_path / "tree" / "a.txt", b"a" * 5000)
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - {name: pack, tar: {source: tree, index: rel/t.caidx, store: s}}
        """,
    )
    r = run("apply", *state_args(m))
    assert r.returncode == 0, r.stderr
    digest = index_of(tmp_path / "rel" / "t.caidx").file_digest()
    assert r.stdout.splitlines()[0].endswith(f"; index digest {digest}")


# --- root's state folder --------------------------------------------------------------


@pytest.mark.skipif(os.geteuid() != 0, reason="root's default needs root")
def test_root_keeps_its_state_in_var_lib_whatever_xdg_says(tmp_path, monkeypatch):
    """Root's records belong to the machine: the same folder under sudo, cron and
    systemd, whatever HOME and XDG_STATE_HOME they pass (other users keep XDG's)."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("DESYNC_DECL_STATE_DIR", raising=False)
    assert default_state_dir() == Path("/var/lib/desync-decl")
    help_text = run("apply", "--help").stdout
    assert "/var/lib/desync-declforroot" in "".join(help_text.split())  # however wrapped


def test_the_state_dir_variable_wins_for_every_user(tmp_path, monkeypatch):
    """A service unit (or a test) chooses the folder without a flag on every command."""
    monkeypatch.setenv("DESYNC_DECL_STATE_DIR", str(tmp_path / "chosen"))
    assert default_state_dir() == tmp_path / "chosen"


# --- plan names the apply holding a lock ---------------------------------------------------


def test_plan_says_which_apply_holds_a_lock_without_waiting(site):
    assert run("apply", *state_args(site), "--tags", "publish").returncode == 0
    target = site.parent / "out" / "app.img"
    with locked(site.parent / "state", {f"file:{target}": True}, timeout=1):
        r = run("plan", *state_args(site))
        as_json = run("plan", *state_args(site), "--json")
        markdown = run("plan", *state_args(site), "--markdown")
    assert r.returncode == 0, r.stderr
    line = r.stdout.splitlines()[1]
    holder = f"pid {os.getpid()} on host {socket.gethostname()}, user root, since "
    assert line.startswith(f"  note: {target} is locked by {holder}"), line
    assert line.endswith(": an apply is running, and another apply would wait for it")
    assert f"> {target} is locked by {holder}" in markdown.stdout
    doc = json.loads(as_json.stdout)
    schema = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
    Draft202012Validator(schema).validate(doc)  # the schema documents the locks
    [lock] = doc["locks"]
    assert lock["what"] == str(target) and lock["pid"] == os.getpid()
    assert lock["host"] == socket.gethostname() and lock["since"].endswith("Z")
    free = run("plan", *state_args(site), "--json")
    assert json.loads(free.stdout)["locks"] == []


def test_plan_peeks_without_creating_the_state_folder(site):
    r = run("plan", *state_args(site))
    assert r.returncode == 0, r.stderr
    assert "locked by" not in r.stdout
    assert not (site.parent / "state").exists()


# --- progress on a terminal -------------------------------------------------------------


def on_terminal(*argv: object) -> tuple[str, str, int]:
    """Run the CLI with stderr on a pseudo-terminal (stdout piped, as a script would read
    it): stdout, everything the terminal received, exit status."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, *map(str, argv)], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    )
    os.close(slave)
    received = bytearray()
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: every end of the terminal closed
            break
        if not data:
            break
        received += data
    os.close(master)
    assert proc.stdout is not None
    out = proc.stdout.read().decode()
    return out, received.decode(errors="replace"), proc.wait(timeout=120)


@pytest.fixture
def served(tmp_path, cli_server) -> Path:  # noqa: F811
    """Two images whose chunks a real chunk-server serves, and a manifest installing both."""
    store = tmp_path / "store"
    for n in (1, 2):
        make_index(
            write(tmp_path / f"v{n}.img", blob(80 + n, 400_000)), tmp_path / f"{n}.caibx", store
        )
    server = cli_server("chunk-server", "-s", store)
    return manifest(
        tmp_path,
        f"""\
        stores: {{remote: {{url: "{server.url}"}}}}
        tasks:
        - {{name: one, extract: {{index: 1.caibx, path: out/1.img, stores: [remote]}}}}
        - {{name: two, extract: {{index: 2.caibx, path: out/2.img, stores: [remote]}}}}
        """,
    )


def test_plan_shows_its_chunk_checks_on_a_terminal_and_nothing_when_piped(served):
    out, terminal, code = on_terminal("plan", *state_args(served))
    assert code == 0, terminal
    assert out.splitlines()[0] == f"plan for {served}"
    for task in ("one", "two"):
        assert f"\r[{task}] checking chunks " in terminal
    assert terminal.endswith("\r\x1b[K")  # the status line is gone when the plan prints
    piped = run("plan", *state_args(served))
    assert piped.stdout == out and piped.stderr == ""


def test_every_task_of_apply_j2_shows_its_progress_from_the_observe_phase(served):
    out, terminal, code = on_terminal("apply", *state_args(served), "-j", "2")
    assert code == 0, terminal
    assert out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0"
    for task in ("one", "two"):
        for stage in ("observe", "checking chunks", "assemble"):
            assert re.search(rf"\[{task}\] {stage}\b", terminal), (task, stage, terminal)
    for n in (1, 2):
        assert (served.parent / "out" / f"{n}.img").read_bytes() == blob(80 + n, 400_000)


def test_apply_j2_piped_shows_no_progress(served):
    # -n 4: two tasks of 8 threads each overflow the HTTP store's pool of 10 connections,
    # which urllib3 logs on stderr (a warning of its own, not progress)
    r = run("apply", *state_args(served), "-j", "2", "-n", "4")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0"


# --- plan's exit status counts a pending handler ----------------------------------


def test_detailed_exitcode_is_2_while_a_failed_handler_waits_to_run_again(tmp_path):
    """Every task converged, but apply would still run the handler an earlier apply
    failed to run: that is a change, and a pipeline gating on plan must see it."""
    write(tmp_path / "a.img", blob(90, 100_000))
    m = manifest(
        tmp_path,
        "stores: {s: {url: store}}\n"
        "handlers: {restart: {command: [sh, -c, 'test -e fixed']}}\n"
        "tasks:\n- name: publish\n  notify: [restart]\n"
        "  make: {source: a.img, index: a.caibx, store: s}\n",
    )
    state = ["--state-dir", tmp_path / "state"]
    assert run("apply", m, *state).returncode == 1  # the handler failed
    assert run("plan", m, *state, "--detailed-exitcode").returncode == 2
    (tmp_path / "fixed").touch()
    assert run("apply", m, *state).returncode == 0
    assert run("plan", m, *state, "--detailed-exitcode").returncode == 0
