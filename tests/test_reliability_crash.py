"""Crashes and full disks: SIGKILL at random points of every writing verb, then a rerun
that must converge; and every writing verb on a full filesystem.

After each kill (``reliability/crash_runs.py``): nothing half-written under a final
name (the target is the old or the new version, an index is whole or absent, every
file an untar has named is whole), no chunk referenced by a kept index deleted,
``desync-decl verify`` finds the store clean; the rerun makes the same bytes as a
run never killed. On a full disk: one clear line, nothing half-written left, the
old target untouched.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from desync_decl.formats import index as index_format
from reliability.crash_runs import (
    CASE_NAMES,
    MIB,
    CrashBench,
    case,
    delays,
    kill_trial,
    kills_through_runs,
)
from reliability.disk_full import CASES as FULL_DISK_CASES
from reliability.disk_full import Inputs, full_disk_trial, small_tmpfs

KILLS_PER_CASE = 6  # in the slow test, at delays spread over a whole run


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> CrashBench:
    return CrashBench(tmp_path_factory.mktemp("crash"), size=16 * MIB)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_a_killed_run_leaves_nothing_half_written_and_a_rerun_converges(bench, name):
    (delay,) = delays(bench, case(name), 1, random.Random(name))
    verdict, _ = kill_trial(bench, case(name), delay)
    assert verdict.outcome == "ok", verdict


@pytest.mark.slow
@pytest.mark.parametrize("name", CASE_NAMES)
def test_kills_all_through_a_run_never_lose_or_corrupt_anything(bench, name):
    """Delays drawn over the length of an uninterrupted run (measured first)."""
    killed = 0
    chosen = delays(bench, case(name), KILLS_PER_CASE, random.Random(f"slow {name}"))
    for verdict, was_running in kills_through_runs(bench, case(name), chosen):
        assert verdict.outcome == "ok", verdict
        killed += was_running
    assert killed >= 2, "the kills came after the run had finished"


# --- full disks -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Inputs:
    return Inputs.make(tmp_path_factory.mktemp("full"))


@pytest.fixture
def small_fs(tmp_path) -> Path:
    """A real 1 MiB filesystem (tmpfs: mounting needs root, which CI has)."""
    if os.geteuid() != 0:
        pytest.skip(reason="mounting a tmpfs needs root")
    with small_tmpfs(tmp_path / "small") as mnt:
        yield mnt


@pytest.mark.parametrize("name", FULL_DISK_CASES)
def test_a_full_disk_is_one_clear_line_and_leaves_nothing_half_written(
    tmp_path, small_fs, inputs, name
):
    work = tmp_path / "work"
    work.mkdir()
    verdict = full_disk_trial(inputs, name, small_fs, work)
    assert verdict.outcome == "clean_error", verdict
    assert str(small_fs) in verdict.detail


def test_the_full_disk_cases_write_more_than_the_disk_holds(inputs):
    """So that each case above really runs out of space."""
    assert index_format.decode(inputs.index.read_bytes()).length > 2 * MIB
    assert sum(p.stat().st_size for p in inputs.tree.rglob("*") if p.is_file()) > 2 * MIB
