"""Converged without the network (issue 13, item 5): a target whose record matches
the task's ``pin`` is ``ok`` without the index being fetched, for extract and
untar. The index is served by an index-server process and the chunks by a
chunk-server process; both are stopped before the runs that must not need them.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

from tests.servers_http import cli_server  # noqa: F401 (fixture)
from tests.test_fleet_seeds import SIZES, run


def publish(tmp_path: Path, cli_server, make: list[object]) -> tuple[str, object, object]:  # noqa: F811
    """Make an index with ``make`` (its digest printed), serve it and its chunks."""
    made = run(*make)
    assert made.returncode == 0, made.stderr
    digest = made.stdout.split()[-1]
    indexes = cli_server("index-server", "-s", tmp_path / "indexes")
    chunks = cli_server("chunk-server", "-s", tmp_path / "store")
    return digest, indexes, chunks


def manifest(tmp_path: Path, kind: str, url: str, store: str, pin: str, path: str) -> Path:
    m = tmp_path / "m.yaml"
    m.write_text(
        "version: 1\n"
        f"stores: {{origin: {{url: '{store}', options: {{timeout: 2s, retries: 0}}}}}}\n"
        "tasks:\n"
        f"- name: app\n  {kind}: {{index: '{url}', path: {path}, stores: [origin], pin: '{pin}'}}\n"
    )
    return m


def apply(m: Path, state: Path, *extra: str) -> tuple[subprocess.CompletedProcess, dict | None]:
    r = run("apply", m, "--state-dir", state, "--json", *extra)
    try:
        (task,) = json.loads(r.stdout)["tasks"]
    except (ValueError, KeyError):
        return r, None
    return r, task


def check_offline(tmp_path: Path, kind: str, url: str, digest: str, servers: list) -> None:
    store = servers[1].url
    m = manifest(tmp_path, kind, url, store, digest, "out/app")
    state = tmp_path / "state"
    r, task = apply(m, state)
    assert r.returncode == 0 and task["status"] == "changed", r.stdout + r.stderr
    for server in servers:
        assert server.stop() is not None  # the origin is down from here on
    r, task = apply(m, state)
    assert r.returncode == 0, r.stdout + r.stderr
    assert (task["status"], task["msg"]) == ("ok", "converged (recorded)")
    plan = run("plan", m, "--state-dir", state, "--json")
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert json.loads(plan.stdout)["tasks"][0]["action"] == "no-op"
    # what the record cannot vouch for still needs the index: a failure, not a guess
    r, task = apply(m, state, "--verify")
    assert r.returncode != 0 and task["status"] == "failed"
    other = "sha512-256:" + "0" * 64
    r, task = apply(manifest(tmp_path, kind, url, store, other, "out/app"), state)
    assert r.returncode != 0 and task["status"] == "failed"


def test_extract_pinned_and_recorded_needs_no_index_server(tmp_path, cli_server):  # noqa: F811
    (tmp_path / "indexes").mkdir()
    (tmp_path / "app.img").write_bytes(random.Random(5).randbytes(1 << 20))
    make = ["make", "-s", tmp_path / "store", "-m", SIZES, tmp_path / "indexes" / "app.caibx"]
    digest, indexes, chunks = publish(tmp_path, cli_server, [*make, tmp_path / "app.img"])
    url = f"{indexes.url.rstrip('/')}/app.caibx"
    check_offline(tmp_path, "extract", url, digest, [indexes, chunks])
    assert (tmp_path / "out" / "app").read_bytes() == (tmp_path / "app.img").read_bytes()


def test_untar_pinned_and_recorded_needs_no_index_server(tmp_path, cli_server):  # noqa: F811
    (tmp_path / "indexes").mkdir()
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.bin").write_bytes(random.Random(6).randbytes(300_000))
    (src / "sub" / "b.txt").write_text("b\n")
    os.symlink("a.bin", src / "link")
    make = ["tar", "-i", "-s", tmp_path / "store", "-m", SIZES, tmp_path / "indexes" / "t.caidx"]
    digest, indexes, chunks = publish(tmp_path, cli_server, [*make, src])
    url = f"{indexes.url.rstrip('/')}/t.caidx"
    check_offline(tmp_path, "untar", url, digest, [indexes, chunks])
    assert (tmp_path / "out" / "app" / "a.bin").read_bytes() == (src / "a.bin").read_bytes()
