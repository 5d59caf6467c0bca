"""The CI example (``examples/ci/``; issue 16, item 2): the workflow's ``plan`` and
``apply`` steps, run as GitHub Actions runs them (``bash -eo pipefail`` from the
checkout, the workflow's environment, ``GITHUB_OUTPUT`` and ``RUNNER_TEMP``), against
the suite's stores: moto's S3 as the origin, our chunk-server as a mirror that wants
a bearer token the manifest reads from the environment (a secret of the workflow).

What the workflow runs is read from the workflow file, so the test runs exactly
those commands; the steps it does not run (installing, posting the comment) are
checked to be the only others. A release goes through the flow: a plan that
would create (exit status 2, the Markdown with its commit and totals), the apply,
a plan with nothing to do (0), a pin moved to v2 (2, the pin's change shown),
errors (1) in a task and in a manifest that does not load, a plan cut to fit a comment.
"""

from __future__ import annotations

import grp
import os
import pwd
import random
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT
from tests.servers_cloud import cloud_env, moto_server, s3_bucket  # noqa: F401 - fixtures
from tests.servers_http import cli_server  # noqa: F401 - fixture

WORKFLOW = ROOT / "examples" / "ci" / "desync-decl.yml"
TOKEN = "mirror|token-0815"  # a secret of the workflow; '|' would be escaped in a cell
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")


def workflow() -> dict[str, Any]:
    doc = yaml.safe_load(WORKFLOW.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def step(job: str, id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job and its step ``id``."""
    doc = workflow()
    found = [s for s in doc["jobs"][job]["steps"] if s.get("id") == id]
    assert len(found) == 1, f"no single step {id!r} in job {job!r}"
    return doc["jobs"][job], found[0]


@dataclass
class StepRun:
    code: int
    log: str  # stdout and stderr, as the job's log shows them
    outputs: dict[str, str]  # what the step wrote to GITHUB_OUTPUT


class Runner:
    """A stand-in for a runner: the workflow's environment, a ``desync-decl`` on the
    PATH that runs this tree's package, a state folder and ``RUNNER_TEMP``."""

    def __init__(self, tmp: Path) -> None:
        self.temp = tmp / "runner-temp"
        self.temp.mkdir()
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        shim = bin_dir / "desync-decl"  # what `pip install "$DESYNC_DECL"` puts on the PATH
        shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m desync_decl "$@"\n')
        shim.chmod(0o755)
        self.env = {
            **os.environ,
            "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "PYTHONPATH": str(ROOT),
            "DESYNC_DECL_STATE_DIR": str(tmp / "state"),
            "RUNNER_TEMP": str(self.temp),
        }

    def run(self, job_name: str, id: str, manifest: Path, **env: str) -> StepRun:
        job, s = step(job_name, id)
        doc = workflow()
        given = {"MIRROR_TOKEN": TOKEN, **env}
        step_env = {**doc.get("env", {}), **job.get("env", {}), **s.get("env", {})}
        unset = [k for k, v in step_env.items() if "${{" in str(v) and k not in given]
        assert unset == [], f"the test gives no value for {unset}"
        outputs = self.temp / "github-output"
        outputs.write_text("")
        done = subprocess.run(
            # `shell: bash` (the workflow's default), as GitHub runs it
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", s["run"]],
            cwd=ROOT,  # the checkout: the scripts are where the workflow says
            env={
                **self.env,
                **{k: str(v) for k, v in step_env.items()},
                **given,
                "MANIFEST": str(manifest),
                "GITHUB_OUTPUT": str(outputs),
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=120,
            check=False,
        )
        pairs = [line.split("=", 1) for line in outputs.read_text().splitlines()]
        return StepRun(done.returncode, done.stdout, dict(pairs))

    @property
    def comment(self) -> str:
        """What the comment step posts."""
        return (self.temp / "plan.md").read_text()


def git(cwd: Path, *argv: str) -> str:
    identity = ("-c", "user.name=t", "-c", "user.email=t@example.com")
    done = subprocess.run(
        [GIT or "git", *identity, *argv], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def desync(*argv: object) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "desync_decl", *map(str, argv)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


# --- the workflow runs the scripts, and only they run desync-decl --------------------------


def test_the_workflow_plans_pull_requests_applies_main_and_runs_only_the_scripts():
    doc = workflow()
    assert set(doc["on"]) == {"pull_request", "push"}
    assert doc["defaults"]["run"]["shell"] == "bash"  # what Runner.run runs a step with
    assert doc["on"]["push"]["branches"] == ["main"]
    assert doc["jobs"]["plan"]["if"] == "github.event_name == 'pull_request'"
    assert doc["jobs"]["apply"]["if"] == "github.event_name == 'push'"
    runs = {
        (job, s.get("id") or s.get("name")): s["run"]
        for job, body in doc["jobs"].items()
        for s in body["steps"]
        if "run" in s
    }
    tested = {("plan", "plan"), ("apply", "apply")}
    for key, command in runs.items():
        if key in tested:
            continue  # run by the tests below
        # the others install, post the comment, fail the job: none plans or applies
        assert "examples/ci/" not in command and "desync-decl plan" not in command, key
        assert "desync-decl apply" not in command, key
    assert "examples/ci/plan.sh" in runs[("plan", "plan")]
    assert "examples/ci/apply.sh" in runs[("apply", "apply")]
    comment = runs[("plan", "comment")]
    assert '--body-file "$RUNNER_TEMP/plan.md"' in comment
    failing = next(
        s for s in doc["jobs"]["plan"]["steps"] if s.get("name") == "fail on plan errors"
    )
    assert failing["if"] == "steps.plan.outputs.status == '1'"


# --- a release, through the workflow's steps ---------------------------------------------


@pytest.fixture
def fleet(tmp_path, moto_server, s3_bucket, cli_server):  # noqa: F811 - fixtures
    """v1 and v2 of an image in S3, a firmware in the mirror's store, their indexes."""
    rng = random.Random(16)
    v1 = bytes(rng.choices(b"abcdefgh", k=300_000))  # compresses: network < plain bytes
    v2 = v1[:100_000] + rng.randbytes(40_000) + v1[140_000:]
    firmware = rng.randbytes(120_000)
    origin = f"s3+{moto_server.endpoint}/{s3_bucket}/store"
    indexes = tmp_path / "indexes"
    indexes.mkdir()
    digests = {}
    for name, data, store in (
        ("app-v1", v1, origin),
        ("app-v2", v2, origin),
        ("fw", firmware, tmp_path / "mirror-store"),
    ):
        (tmp_path / f"{name}.img").write_bytes(data)
        digests[name] = desync(
            "make", "-s", store, indexes / f"{name}.caibx", tmp_path / f"{name}.img"
        ).split()[-1]
    mirror = cli_server(
        "chunk-server", "-s", tmp_path / "mirror-store", env={"DESYNC_HTTP_AUTH": f"Bearer {TOKEN}"}
    )
    return Fleet(tmp_path, origin, mirror.url, digests, {"v1": v1, "v2": v2, "fw": firmware})


@dataclass
class Fleet:
    tmp: Path
    origin: str
    mirror: str
    digests: dict[str, str]
    data: dict[str, bytes]

    def manifest(self, version: str, *, index: str | None = None, body: str | None = None) -> Path:
        """The manifests repository at a new commit: the app at ``version``."""
        repo = self.tmp / "gitops"
        (repo / "manifests").mkdir(parents=True, exist_ok=True)
        path = repo / "manifests" / "host.yaml"
        index = index or str(self.tmp / "indexes" / f"app-{version}.caibx")
        path.write_text(
            body
            or f"""\
version: 1
stores:
  origin: {{url: "{self.origin}"}}
  mirror:
    url: "{self.mirror}"
    options: {{http_auth: "Bearer ${{env:MIRROR_TOKEN}}"}}
tasks:
  - name: install app
    extract:
      index: {index}
      path: {self.tmp / "host" / "app.img"}
      stores: [origin]
      mode: "0644"
      pin: "{self.digests[f"app-{version}"]}"
  - name: install firmware
    extract:
      index: {self.tmp / "indexes" / "fw.caibx"}
      path: {self.tmp / "host" / "fw.bin"}
      stores: [mirror]
"""
        )
        if not (repo / ".git").exists():
            git(repo, "init", "-q")
        git(repo, "add", ".")
        git(repo, "commit", "-q", "--allow-empty", "-m", f"app {version}")
        return path

    def commit(self) -> str:
        return git(self.tmp / "gitops", "rev-parse", "--short", "HEAD")


def table_row(markdown: str, task: str) -> list[str]:
    """The cells of the table's row for ``task``, split at the ``|`` not escaped."""
    line = next(line for line in markdown.splitlines() if f"| {task} |" in line)
    return [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]


def test_a_release_plans_in_the_pull_request_and_applies_on_merge(tmp_path, fleet):
    runner = Runner(tmp_path)
    short = lambda digest: digest[: len("sha512-256:") + 12] + "…"  # noqa: E731

    # the pull request: everything to create
    m = fleet.manifest("v1")
    plan = runner.run("plan", "plan", m)
    assert plan.code == 0, plan.log  # the step passes whatever the plan says
    assert plan.outputs == {"status": "2"}, plan.log
    comment = runner.comment
    lines = comment.splitlines()
    assert lines[0] == f"### desync-decl plan: `{m}`"
    assert lines[2] == f"Manifest `{m}` at commit `{fleet.commit()}`"
    assert lines[4] == "**2 to create, 0 to update, 0 to delete, 0 unchanged**"
    app = table_row(comment, "install app")
    me, us = pwd.getpwuid(os.geteuid()).pw_name, grp.getgrgid(os.getegid()).gr_name
    assert (
        app[0] == ":heavy_plus_sign: create"
        and app[5]
        == f"mode 0644<br>owner {me}<br>group {us}<br>pin {short(fleet.digests['app-v1'])}"
    )
    total = table_row(comment, "**Total**")[-1]
    assert total.startswith("from stores: ") and ", network: about " in total, total
    assert comment in plan.log  # the job's log has it too
    assert TOKEN not in plan.log and "token-0815" not in plan.log

    # merged: apply
    applied = runner.run("apply", "apply", m)
    assert applied.code == 0, applied.log
    assert applied.log.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0"
    assert (tmp_path / "host" / "app.img").read_bytes() == fleet.data["v1"]
    assert (tmp_path / "host" / "fw.bin").read_bytes() == fleet.data["fw"]

    # the next pull request's plan, before its change: nothing to do
    plan = runner.run("plan", "plan", m)
    assert plan.outputs == {"status": "0"}, plan.log
    assert "**0 to create, 0 to update, 0 to delete, 2 unchanged**" in runner.comment
    assert table_row(runner.comment, "**Total**")[-1] == "nothing travels"

    # the release of v2: index and pin move
    m = fleet.manifest("v2")
    plan = runner.run("plan", "plan", m)
    assert plan.outputs == {"status": "2"}, plan.log
    app = table_row(runner.comment, "install app")
    assert app[0] == ":arrows_counterclockwise: update"
    assert app[5] == f"pin {short(fleet.digests['app-v1'])} → {short(fleet.digests['app-v2'])}"
    assert f"at commit `{fleet.commit()}`" in runner.comment
    applied = runner.run("apply", "apply", m)
    assert applied.code == 0, applied.log
    assert (tmp_path / "host" / "app.img").read_bytes() == fleet.data["v2"]


def test_errors_fail_the_plan_with_a_comment_and_fail_the_apply(tmp_path, fleet):
    runner = Runner(tmp_path)
    # a task's error: a row of the plan
    m = fleet.manifest("v1", index=str(tmp_path / "indexes" / "missing.caibx"))
    plan = runner.run("plan", "plan", m)
    assert plan.code == 0 and plan.outputs == {"status": "1"}, plan.log
    assert table_row(runner.comment, "install app")[0] == ":x: error"
    applied = runner.run("apply", "apply", m)
    assert applied.code == 1, applied.log
    assert "RECAP ok=0 changed=1 failed=1 skipped=0" in applied.log

    # a manifest that does not load: the comment says so, the log says why
    m = fleet.manifest("v1", body="version: 1\ntasks:\n  - name: x\n    extract: {}\n")
    plan = runner.run("plan", "plan", m)
    assert plan.outputs == {"status": "1"}, plan.log
    assert runner.comment.startswith("### desync-decl plan failed\n")
    assert f"{m}:4:" in plan.log
    assert runner.run("apply", "apply", m).code == 1


def test_a_long_plan_is_cut_to_fit_a_comment_and_logged_whole(tmp_path, fleet):
    runner = Runner(tmp_path)
    m = fleet.manifest("v1")
    plan = runner.run("plan", "plan", m, DESYNC_DECL_COMMENT_LIMIT="600")
    assert plan.outputs == {"status": "2"}, plan.log
    whole = plan.log.split("\n… the plan")[0]
    assert "| | **Total** |" in whole
    comment = runner.comment
    kept, note = comment.rsplit("\n\n", 1)
    assert len(kept) + 1 <= 600 and whole.startswith(kept)
    assert note == "… the plan is cut here: the whole of it is in the log of this job.\n"
