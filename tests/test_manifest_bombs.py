"""Aliases that cost much more than they weigh: budgeted by the text they add, not
only by how many values they add, and a string's references expanded once.

The issue's shape: one 1 MB string named by 99,000 aliases is fewer values than
the value budget allows, yet took 109 s to validate and 147 s to plan.
"""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from desync_decl.manifest import load_manifest
from tests.conftest import ROOT


def one_string_named_by_many_aliases(path: Path, size: int, aliases: int) -> Path:
    names = ", ".join(["*big"] * aliases)
    path.write_text(
        "version: 1\nstores: {s: {url: store}}\ntasks:\n- name: t\n  verify: {store: s}\n"
        f"  tags: [&big {'A' * size}, {names}]\n"
    )
    return path


@pytest.mark.parametrize("verb", ["validate", "plan"])
def test_one_megabyte_string_named_99000_times_is_refused_in_one_line(tmp_path, verb):
    path = one_string_named_by_many_aliases(tmp_path / "m.yaml", 1 << 20, 99_000)
    state = ["--state-dir", str(tmp_path / "state")] if verb == "plan" else []
    run = subprocess.run(  # the timeout only stops a run that would take minutes
        [sys.executable, "-m", "desync_decl", verb, str(path), *state],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert run.returncode == 1 and run.stdout == ""
    [line] = run.stderr.splitlines()
    prefix = "" if verb == "validate" else "desync-decl: error: "
    budget = r"aliases expand the manifest by more than \d+ MiB of text"  # names the limit
    assert re.fullmatch(f"{re.escape(prefix + str(path))}:6:[0-9]+: {budget}", line), line


class CountingEnv(Mapping[str, str]):
    """An environment that counts how often it is read."""

    def __init__(self, values: dict[str, str]) -> None:
        self.values, self.reads = values, 0

    def __getitem__(self, key: str) -> str:
        self.reads += 1
        return self.values[key]

    def __contains__(self, key: object) -> bool:
        self.reads += 1
        return key in self.values

    def __iter__(self) -> Iterator[str]:
        return iter(self.values)

    def __len__(self) -> int:
        return len(self.values)


def test_legitimate_aliases_load_and_a_reference_is_expanded_once_however_many_name_it(
    tmp_path,
):
    """Shared options, a merge, a long string named a few times (under the budget), and a
    store URL from the environment named by 1, 10 or 1000 aliases: read as often each time."""
    token = "t" * (128 << 10)
    shared = (
        f"  a: {{url: https://a.example/s, options: &o {{timeout: 1m, http_auth: &t {token}}}}}\n"
        "  b: {url: https://b.example/s, options: {<<: *o, retries: 2}}\n"
        "  c: {url: https://c.example/s, options: {http_cookie: *t, http_auth: *t}}\n"
        "  first: {url: &u '${env:ROOT}/store'}\n"
    )
    reads = []
    for count in (1, 10, 1000):
        path = tmp_path / f"m{count}.yaml"
        named = "".join(f"  s{i}: {{url: *u}}\n" for i in range(count))
        path.write_text(f"version: 1\nstores:\n{shared}{named}")
        env = CountingEnv({"ROOT": "/srv"})
        stores = load_manifest(path, env=env).stores
        assert stores["b"].options == {"timeout": 60.0, "http_auth": token, "error_retry": 2}
        assert stores["c"].options == {"http_cookie": token, "http_auth": token}
        assert {stores[f"s{i}"].url for i in range(count)} == {"/srv/store"}
        reads.append(env.reads)
    assert reads[0] == reads[1] == reads[2]
