"""The suite's confinement (tests/confined.py) fails a test that opens a path outside
the repository and the temp dirs: run here on a small session of its own, in a
subprocess, with the plugin and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.confined import Confinement, allowed_roots
from tests.conftest import ROOT

# Where the vectors were read from before they were committed (issue 14): a sibling
# of the checkout. Not ROOT.parent / "shared": a clone in /tmp has its siblings in
# the temp dir, which tests may use.
OUTSIDE = Path("/work/shared/vectors/README.md")


def test_the_path_used_below_is_outside_for_this_checkout(pytestconfig):
    assert not Confinement(allowed_roots(pytestconfig)).allows("open", str(OUTSIDE))


@pytest.fixture
def session(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    monkeypatch.delenv("CI", raising=False)

    def run(source: str) -> pytest.RunResult:
        pytester.makepyfile(test_inner=source)
        return pytester.runpytest_subprocess("-p", "tests.confined", "-p", "no:cacheprovider")

    return run


def test_a_test_reading_another_checkouts_files_fails_and_names_the_path(session):
    result = session(
        f"""
import pytest

def test_reads_outside():
    with pytest.raises(OSError):  # whether or not it exists: trying is enough
        open({str(OUTSIDE)!r}).read()

def test_lists_outside():
    import os
    with pytest.raises(OSError):
        os.listdir({str(OUTSIDE.parent)!r})

def test_reads_the_repository_and_its_temp_dir(tmp_path):
    (tmp_path / "f").write_text("x")
    assert (tmp_path / "f").read_text() == "x"
    assert open({str(ROOT / "pyproject.toml")!r}).read()
"""
    )
    result.assert_outcomes(passed=1, failed=2)
    result.stdout.fnmatch_lines(
        [f"*opened outside the repository and the temp dirs during call: {OUTSIDE}"]
    )
    result.stdout.fnmatch_lines([f"*during call: {OUTSIDE.parent}"])


def test_a_read_outside_while_collecting_fails_the_session(session):
    result = session(
        f"""
try:
    open({str(OUTSIDE)!r}).read()
except OSError:
    pass

def test_nothing():
    pass
"""
    )
    result.assert_outcomes(passed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines([f"{OUTSIDE} (during collection or imports, not in a test)"])
