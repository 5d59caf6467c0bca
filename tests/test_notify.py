"""Issue 13, item 7: ``notify`` and ``handlers``, run through the real CLI.

A handler runs once, after every task, when a task notifying it changed; never
when nothing changed; under ``--check`` it is reported and not run. Its output
(bounded, escaped) and exit status are in the text recap and ``--json``; a
failure or a timeout fails the apply and the next apply runs it again; a timeout
kills everything it started. An unknown handler name is a manifest error at
FILE:LINE:COL.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests.conftest import ROOT
from tests.servers_http import cli_server  # noqa: F401 - fixture
from tests.test_reconcile_kinds import blob, make_index, manifest, write

CLI = [sys.executable, "-m", "desync_decl"]
PLAN_SCHEMA = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
OUTPUT_LIMIT = 64 * 1024  # bytes of a handler's output kept, as the schema documents


def run(*argv: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, *map(str, argv)], capture_output=True, text=True, timeout=120, check=False
    )


def site(tmp_path: Path, handlers: str, notify_a: str = "[restart]", notify_b: str = "[restart]"):
    """Two makes notifying handlers; the handlers section as given."""
    write(tmp_path / "a.img", blob(60, 100_000))
    write(tmp_path / "b.img", blob(61, 100_000))
    return manifest(
        tmp_path,
        "stores: {s: {url: store}}\nhandlers:\n"
        + textwrap.indent(textwrap.dedent(handlers), "  ")
        + f"""\
tasks:
- name: publish a
  notify: {notify_a}
  make: {{source: a.img, index: rel/a.caibx, store: s}}
- name: publish b
  notify: {notify_b}
  make: {{source: b.img, index: rel/b.caibx, store: s}}
- name: other
  make: {{source: a.img, index: rel/c.caibx, store: s}}
""",
    )


def apply(m: Path, *extra: object) -> subprocess.CompletedProcess[str]:
    return run("apply", m, "--state-dir", m.parent / "state", *extra)


COUNTING = """\
restart:
  # counts its runs, and sees what every task wrote (it runs after all of them)
  command: [sh, -c, "echo run >> runs; ls rel; echo done"]
"""


def test_a_handler_runs_once_after_all_tasks_and_only_when_a_task_changed(tmp_path):
    m = site(tmp_path, COUNTING)
    first = apply(m)
    assert first.returncode == 0, first.stdout + first.stderr
    assert (tmp_path / "runs").read_text() == "run\n"  # two tasks notified it: run once
    lines = first.stdout.splitlines()
    at = lines.index("ok: [restart] handler: exit status 0; notified by publish a, publish b")
    assert [line.split(":")[0] for line in lines[:at]] == ["changed"] * 3  # tasks first
    assert lines[at + 1 :] == [
        "  | a.caibx",
        "  | b.caibx",
        "  | c.caibx",
        "  | done",
        "RECAP ok=0 changed=3 failed=0 skipped=0 handlers-ok=1",
    ]
    again = apply(m, "--json")
    assert again.returncode == 0
    assert json.loads(again.stdout)["handlers"] == []
    assert (tmp_path / "runs").read_text() == "run\n"  # nothing changed: not run
    write(tmp_path / "b.img", blob(62, 100_000))
    third = json.loads(apply(m, "--json").stdout)
    [handler] = third["handlers"]
    assert handler["name"] == "restart" and handler["status"] == "ok"
    assert handler["notified-by"] == ["publish b"] and handler["exit"] == 0
    assert handler["output"] == "a.caibx\nb.caibx\nc.caibx\ndone\n"
    assert (tmp_path / "runs").read_text() == "run\nrun\n"


def test_restart_after_the_image_from_a_chunk_server_changed(tmp_path, cli_server):  # noqa: F811
    """The issue's case: an extract from a real chunk-server notifies "restart app",
    which sees the new image (it runs after the extract) and runs only when it changed."""
    m, store = served_image(tmp_path, cli_server, 70)
    first = apply(m)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "ok: [restart app] handler: exit status 0; notified by image" in first.stdout
    cksum = subprocess.run(["cksum"], input=blob(70, 300_000), capture_output=True, check=True)
    assert (tmp_path / "restarts").read_bytes() == cksum.stdout
    assert "handler" not in apply(m).stdout  # converged: no restart
    make_index(write(tmp_path / "v2.img", blob(71, 300_000)), tmp_path / "app.caibx", store)
    assert apply(m).returncode == 0
    cksum2 = subprocess.run(["cksum"], input=blob(71, 300_000), capture_output=True, check=True)
    assert (tmp_path / "restarts").read_bytes() == cksum.stdout + cksum2.stdout


def served_image(tmp_path: Path, cli_server, seed: int) -> tuple[Path, Path]:  # noqa: F811
    """An image (``blob(seed)``) published to a store behind a real chunk-server, and a
    manifest extracting it to ``srv/app.img`` that notifies "restart app" (which appends
    the image's checksum to ``restarts``); the manifest and the store."""
    store = tmp_path / "store"
    make_index(write(tmp_path / "v1.img", blob(seed, 300_000)), tmp_path / "app.caibx", store)
    server = cli_server("chunk-server", "-s", store)
    m = manifest(
        tmp_path,
        f"""\
        stores: {{mirror: {{url: "{server.url}"}}}}
        handlers:
          restart app:
            command: [sh, -c, "cksum < srv/app.img >> restarts"]
            timeout: 30s
        tasks:
        - name: image
          notify: [restart app]
          extract: {{index: app.caibx, path: srv/app.img, stores: [mirror]}}
        """,
    )
    return m, store


def test_check_reports_would_run_and_runs_nothing(tmp_path):
    m = site(tmp_path, COUNTING)
    plan = run("plan", m, "--state-dir", tmp_path / "state")
    assert plan.stdout.splitlines()[-2:] == [
        "  * run     [restart] handler: notified by publish a, publish b",
        "Plan: 3 to create, 0 to update, 0 to delete, 0 unchanged.",
    ]
    doc = json.loads(run("plan", m, "--state-dir", tmp_path / "state", "--json").stdout)
    Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert doc["handlers"] == [
        {"name": "restart", "notified-by": ["publish a", "publish b"], "earlier": False}
    ]
    markdown = run("plan", m, "--state-dir", tmp_path / "state", "--markdown").stdout
    assert "- restart: notified by publish a, publish b" in markdown
    r = apply(m, "--check")
    assert r.returncode == 0, r.stderr
    assert "would run: [restart] handler: notified by publish a, publish b" in r.stdout
    assert r.stdout.splitlines()[-1].endswith(" handlers-would-run=1")
    doc = json.loads(apply(m, "--check", "--json").stdout)
    assert [(h["name"], h["status"]) for h in doc["handlers"]] == [("restart", "would run")]
    assert not (tmp_path / "runs").exists()


def test_a_failing_handler_fails_the_apply_and_runs_again_next_time(tmp_path):
    m = site(
        tmp_path,
        """\
        restart:
          command: [sh, -c, "echo try >> runs; test -e fixed || { echo not yet >&2; exit 3; }"]
        """,
    )
    first = apply(m)
    assert first.returncode == 1
    assert "failed: [restart] handler: exit status 3; notified by publish a, publish b" in (
        first.stdout
    )
    assert "  | not yet" in first.stdout
    assert first.stdout.splitlines()[-1].endswith("failed=0 skipped=0 handlers-failed=1")
    plan = run("plan", m, "--state-dir", tmp_path / "state")
    assert "  * run     [restart] handler: notified by an earlier apply: publish a, publish b" in (
        plan.stdout
    )
    second = apply(m, "--json")  # no task changes: the notification was kept
    assert second.returncode == 1
    [h] = json.loads(second.stdout)["handlers"]
    assert (h["status"], h["exit"], h["earlier"]) == ("failed", 3, True)
    (tmp_path / "fixed").touch()
    third = apply(m)
    assert third.returncode == 0, third.stdout
    assert (
        "ok: [restart] handler: exit status 0; notified by an earlier apply: publish a, publish b"
        in third.stdout
    )
    fourth = apply(m)
    assert "handler" not in fourth.stdout
    assert (tmp_path / "runs").read_text() == "try\n" * 3


def test_a_handler_whose_program_is_missing_fails_the_apply(tmp_path):
    m = site(tmp_path, "restart: {command: [./no-such-program, --now]}\n")
    r = apply(m)
    assert r.returncode == 1
    assert (
        "failed: [restart] handler: cannot run ./no-such-program: no such file or directory;"
        " notified by publish a, publish b" in r.stdout
    )
    assert r.stderr == ""


def test_a_handler_that_times_out_is_killed_with_what_it_started(tmp_path):
    m = site(
        tmp_path,
        """\
        restart:
          command: [sh, -c, "sleep 300 & echo $! > bg.pid; echo started; wait"]
          timeout: 1s
        """,
        notify_b="[]",
    )
    r = apply(m)
    assert r.returncode == 1
    assert (
        "failed: [restart] handler: timed out after 1s: it and what it started were killed;"
        " notified by publish a" in r.stdout
    )
    assert "  | started" in r.stdout
    assert not running(int((tmp_path / "bg.pid").read_text()))  # the background sleep too


def running(pid: int) -> bool:
    """Whether ``pid`` runs: a zombie does not (a container's init may never reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def test_handler_output_is_bounded_and_escaped(tmp_path):
    m = site(
        tmp_path,
        """\
        restart:
          command:
          - sh
          - -c
          - head -c 1000000 /dev/zero | tr '\\0' x; printf '\\n\\033[2J\\342\\200\\256 tail\\n'
        """,
    )
    r = apply(m)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "\x1b" not in r.stdout and "\u202e" not in r.stdout
    assert "  | \\x1b[2J\\u202e tail" in r.stdout
    tmp_path.joinpath("a.img").write_bytes(blob(63, 100_000))
    [h] = json.loads(apply(m, "--json").stdout)["handlers"]
    assert len(h["output"].encode()) == OUTPUT_LIMIT
    assert h["output-dropped"] == 1_000_000 + len("\n\x1b[2J\u202e tail\n".encode()) - OUTPUT_LIMIT
    assert h["output"].endswith("\n\x1b[2J\u202e tail\n")


def test_an_unknown_handler_is_a_manifest_error_at_its_place(tmp_path):
    m = site(tmp_path, COUNTING, notify_b="[restart, reload]")
    lines = m.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "reload" in text)
    where = f"{m}:{line}:{lines[line - 1].index('reload') + 1}"
    for r in (run("validate", m), apply(m)):
        assert r.returncode == 1
        assert r.stderr.splitlines()[-1].endswith(
            f"{where}: unknown handler 'reload' in 'notify[1]' of task 'publish b'; known: restart"
        )
    assert not (tmp_path / "rel").exists()


def test_the_schema_documents_handlers_and_notify():
    doc = json.loads(run("schema").stdout)
    assert "handlers" in doc["properties"] and "notify" in doc["$defs"]["task"]["properties"]
    assert doc["$defs"]["handler"]["required"] == ["command"]


def test_a_changed_target_notifies_even_when_its_state_cannot_be_kept(tmp_path, cli_server):  # noqa: F811
    """The state folder's disk is full (a real full tmpfs over its index copies) when an
    extract has replaced the image: the task changed, so it says so with a warning and
    the handler runs; the next apply finds it converged and does not run it again."""
    if os.geteuid() != 0:
        pytest.skip("mounts a tmpfs (CI runs as root)")
    m, store = served_image(tmp_path, cli_server, 72)
    assert apply(m).returncode == 0
    indexes = tmp_path / "state" / "indexes"
    subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", indexes], check=True
    )
    try:
        with contextlib.suppress(OSError), (indexes / "filler").open("wb") as f:
            while True:  # until the disk is full
                f.write(b"\0" * 4096)
                f.flush()
        make_index(write(tmp_path / "v2.img", blob(73, 300_000)), tmp_path / "app.caibx", store)
        r = apply(m)
        assert r.returncode == 0, r.stdout + r.stderr
        assert r.stdout.startswith("changed: [image] extract: extracted")
        target = tmp_path / "srv" / "app.img"
        assert f"  warning: [image] {target} changed but its state was not kept: " in r.stdout
        assert "No space left on device" in r.stdout
        assert "ok: [restart app] handler: exit status 0; notified by image" in r.stdout
        assert target.read_bytes() == blob(73, 300_000)
        again = apply(m)
        assert again.returncode == 0 and "handler" not in again.stdout, again.stdout
    finally:
        subprocess.run(["umount", indexes], check=True)
    sums = [
        subprocess.run(["cksum"], input=blob(n, 300_000), capture_output=True, check=True).stdout
        for n in (72, 73)
    ]
    assert (tmp_path / "restarts").read_bytes() == b"".join(sums)


def published(tmp_path: Path, folder: Path, handler: str) -> Path:
    """A manifest in ``folder`` whose task writes a target outside it (absolute paths,
    as a GitOps checkout would name them) and notifies ``restart``."""
    folder.mkdir(parents=True, exist_ok=True)
    m = folder / "fleet.yaml"
    m.write_text(
        f"""\
version: 1
stores: {{s: {{url: "{tmp_path / "store"}"}}}}
handlers:
  restart: {{command: [sh, -c, '{handler}']}}
tasks:
- name: image
  notify: [restart]
  make: {{source: "{tmp_path / "app.img"}", index: "{tmp_path / "app.caibx"}", store: s}}
"""
    )
    return m


def test_a_kept_notification_is_found_from_the_next_commits_checkout(tmp_path):
    """GitOps checks each commit out to a folder of its own: the notification a failed
    handler kept under the first checkout runs from the second; a manifest managing
    other targets from the same state folder never runs it."""
    write(tmp_path / "app.img", blob(80, 100_000))
    state = tmp_path / "state"
    handler = f"echo try >> {tmp_path}/runs; test -e {tmp_path}/fixed"
    first = published(tmp_path, tmp_path / "gitops" / "1111111", handler)
    r = run("apply", first, "--state-dir", state)
    assert r.returncode == 1 and "failed: [restart] handler: exit status 1" in r.stdout
    (tmp_path / "other").mkdir()
    other = manifest(  # another application on the host, sharing the state folder
        tmp_path / "other",
        "stores: {s: {url: store}}\n"
        'handlers: {restart: {command: [sh, -c, "echo other >> ../runs"]}}\n'
        "tasks:\n- name: image\n  notify: [restart]\n"
        "  make: {source: ../app.img, index: other.caibx, store: s}\n",
    )
    assert run("apply", other, "--state-dir", state).returncode == 0  # its own change: runs
    assert run("apply", other, "--state-dir", state).stdout.count("handler") == 0
    (tmp_path / "fixed").touch()
    second = published(tmp_path, tmp_path / "gitops" / "2222222", handler)
    plan = run("plan", second, "--state-dir", state)
    assert "  * run     [restart] handler: notified by an earlier apply: image" in plan.stdout
    r = run("apply", second, "--state-dir", state)
    assert r.returncode == 0, r.stdout
    assert "ok: [restart] handler: exit status 0; notified by an earlier apply: image" in r.stdout
    assert "handler" not in run("apply", second, "--state-dir", state).stdout
    assert (tmp_path / "runs").read_text() == "try\nother\ntry\n"


def test_a_handler_that_succeeds_keeps_a_notification_added_while_it_ran(tmp_path):
    """Two applies at once: A's handler runs (waiting for a file); meanwhile B changes
    the target again, then waits for A's run (one run of a handler at a time) and runs
    the handler itself, which fails. A's success must not erase B's notification: the
    next apply runs the handler for B's change."""
    write(tmp_path / "app.img", blob(81, 100_000))
    state = tmp_path / "state"
    handler = (
        'test -z "$FAIL" || exit 1; if [ -n "$WAIT" ]; then touch started;'
        " while [ ! -e go ]; do sleep 0.05; done; fi; echo ran >> runs"
    )
    m = published(tmp_path, tmp_path / "site", handler)
    argv = [*CLI, "apply", str(m), "--state-dir", str(state)]
    a = subprocess.Popen(argv, env={**os.environ, "WAIT": "1"}, stdout=subprocess.PIPE, text=True)
    b = None
    try:
        started = tmp_path / "site" / "started"
        deadline = time.monotonic() + 60
        while not started.exists() and a.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert started.exists(), "A's handler never started"
        published_by_a = (tmp_path / "app.caibx").read_bytes()
        write(tmp_path / "app.img", blob(82, 100_000))  # the next version, published by B
        b = subprocess.Popen(
            argv, env={**os.environ, "FAIL": "1"}, stdout=subprocess.PIPE, text=True
        )
        while (tmp_path / "app.caibx").read_bytes() == published_by_a:  # B changed it
            assert b.poll() is None and time.monotonic() < deadline, b.communicate()
            time.sleep(0.05)
    finally:
        (tmp_path / "site" / "go").touch()
        out, _ = a.communicate(timeout=120)
        b_out = b.communicate(timeout=120)[0] if b is not None else ""
    assert a.returncode == 0 and "ok: [restart] handler: exit status 0" in out, out
    assert b is not None and b.returncode == 1 and "changed: [image]" in b_out, b_out
    assert "failed: [restart] handler: exit status 1; notified by image" in b_out
    c = run("apply", m, "--state-dir", state)
    assert c.returncode == 0, c.stdout
    assert "ok: [restart] handler: exit status 0; notified by an earlier apply: image" in c.stdout
    assert (tmp_path / "site" / "runs").read_text() == "ran\nran\n"


def test_handler_output_never_shows_the_credentials_it_inherits(tmp_path):
    """A failing ``env``/``curl -v`` in a handler: the store credentials in apply's
    environment show as ``${env:NAME}`` in the recap and --json (also percent-encoded,
    and the end of one the output limit cut into), while the handler still gets them
    and the rest of the environment."""
    secret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYzEXAMPLEKEY"
    token = "desync-http-auth-token-0123456789"
    shown = (
        'env; printf "%s\\n" "curl -v http://h/?k=$ENCODED"; '
        'test "$AWS_SECRET_ACCESS_KEY" = "$EXPECTED" || echo "not inherited"'
    )
    m = site(tmp_path, f"restart: {{command: [sh, -c, '{shown}; exit 2']}}\n")
    env = {
        "AWS_SECRET_ACCESS_KEY": secret,
        "DESYNC_HTTP_AUTH": f"Bearer {token}",
        "EXPECTED": secret,
        "ENCODED": secret.replace("/", "%2F").replace("+", "%2B"),
        "APP_SETTING": "visible-setting",
    }
    h, stdout = the_handler(m, env)
    assert h["exit"] == 2
    assert "AWS_SECRET_ACCESS_KEY=${env:AWS_SECRET_ACCESS_KEY}" in h["output"]
    assert "DESYNC_HTTP_AUTH=${env:DESYNC_HTTP_AUTH}" in h["output"]
    assert "APP_SETTING=visible-setting" in h["output"]  # the rest of the environment is kept
    assert "not inherited" not in h["output"]
    for leak in (secret, token, env["ENCODED"]):
        assert leak not in stdout and leak.lower() not in stdout.lower()
    # the output limit cuts into the secret: its end is not shown either
    cut = (
        f'printf %s "$AWS_SECRET_ACCESS_KEY"; head -c {OUTPUT_LIMIT - 12} /dev/zero | tr "\\\\0" y'
    )
    m = site(tmp_path, f"restart: {{command: [sh, -c, '{cut}']}}\n")
    write(tmp_path / "a.img", blob(64, 100_000))
    h, stdout = the_handler(m, env)
    assert h["status"] == "ok" and h["output-dropped"] == len(secret) - 12
    assert h["output"].startswith("(sensitive value)yyy")
    assert secret[-12:] not in stdout


def the_handler(m: Path, env: dict[str, str]) -> tuple[dict, str]:
    """Apply ``m`` with ``env`` added to the environment: its one handler's JSON, and
    all of stdout."""
    r = subprocess.run(
        [*CLI, "apply", str(m), "--state-dir", str(m.parent / "state"), "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
        check=False,
    )
    [h] = json.loads(r.stdout)["handlers"]
    return h, r.stdout


def test_an_apply_during_a_handler_run_waits_and_does_not_run_it_again(tmp_path):
    """The trial's case: apply A changed the image and runs the slow restart; apply B,
    started meanwhile, finds the image converged and A's notification still kept. B
    must wait for A's run and then leave it: one restart, never two at once."""
    m = site(
        tmp_path,
        """\
        restart:
          command: [sh, -c, "echo start >> runs; sleep 2; echo end >> runs"]
        """,
    )
    first = subprocess.Popen(
        [*CLI, "apply", str(m), "--state-dir", str(m.parent / "state")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    runs = tmp_path / "runs"
    deadline = time.monotonic() + 60
    while not (runs.exists() and runs.read_text()):  # A's handler has started
        assert time.monotonic() < deadline and first.poll() is None, first.communicate()
        time.sleep(0.05)
    second = apply(m, "--json")
    out, err = first.communicate(timeout=60)
    assert first.returncode == 0, out + err
    assert second.returncode == 0, second.stdout + second.stderr
    assert json.loads(second.stdout)["handlers"] == []
    assert runs.read_text() == "start\nend\n"
