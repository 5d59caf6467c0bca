"""Manifests that cost CPU and memory without any alias (issue 12, item 10).

A 4 MB ``tasks: [0,0,…]`` (2 million values) took over 100 s and 1.27 GB to
validate, one problem printed per value; a 17 MB mapping of a million keys
20 s and 1.46 GB. Now a file larger than ``MAX_FILE_BYTES`` is refused unread,
one writing more than ``MAX_VALUES`` values is refused while its events are
counted (before a node tree is built), and at most ``MAX_PROBLEMS`` problems are
reported, then one line saying there are more.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from desync_decl.manifest.loader import MAX_FILE_BYTES, MAX_VALUES
from desync_decl.manifest.problems import MAX_PROBLEMS
from tests.conftest import ROOT

HEAD = "version: 1\nstores: {s: {url: store}}\n"


def run(verb: str, path: Path) -> subprocess.CompletedProcess[str]:
    state = ["--state-dir", str(path.parent / "state")] if verb == "plan" else []
    return subprocess.run(  # the timeout only stops a run that would take minutes
        [sys.executable, "-m", "desync_decl", verb, str(path), *state],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def one_line(run: subprocess.CompletedProcess[str], verb: str, pattern: str) -> None:
    """The run refused the manifest in one line matching ``pattern``."""
    assert run.returncode == 1 and run.stdout == "", run.stderr[-2000:]
    lines = run.stderr.splitlines()
    assert len(lines) == 1, lines[:3]
    line = lines[0]
    prefix = "" if verb == "validate" else "desync-decl: error: "
    assert re.fullmatch(re.escape(prefix) + pattern, line), line


@pytest.mark.parametrize("verb", ["validate", "plan"])
def test_a_file_larger_than_the_bound_is_refused_unread(tmp_path, verb):
    path = tmp_path / "m.yaml"
    padding = "# " + "x" * 1000 + "\n"
    path.write_text(HEAD + "tasks: []\n" + padding * (MAX_FILE_BYTES // len(padding) + 1))
    one_line(run(verb, path), verb, re.escape(f"{path}: larger than 4 MiB") + ".*")


@pytest.mark.parametrize(
    "body",
    [
        "tasks: [" + "0, " * MAX_VALUES + "0]\n",  # a flat list
        "tags: {" + ", ".join(f"k{n}: 0" for n in range(MAX_VALUES)) + "}\n",  # many keys
    ],
    ids=["list", "mapping"],
)
@pytest.mark.parametrize("verb", ["validate", "plan"])
def test_too_many_values_are_refused_in_one_line(tmp_path, verb, body):
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + body)
    pattern = re.escape(f"{path}:") + rf"3:\d+: more than {MAX_VALUES} values"
    one_line(run(verb, path), verb, pattern)


def test_at_most_the_first_problems_are_reported_then_one_line(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + "tasks: [" + ", ".join(["0"] * (3 * MAX_PROBLEMS)) + "]\n")
    result = run("validate", path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == MAX_PROBLEMS + 1, len(lines)
    assert all(line.startswith(f"{path}:3:") for line in lines[:-1])
    assert lines[-1] == f"{path}: … and more problems (only the first {MAX_PROBLEMS} are shown)"
