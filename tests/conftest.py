"""Shared fixtures: the real casync binary, a CLI runner.

In CI (``CI`` set) a skipped test is a failure: every tool a test needs must
really be there, so a green run proves what it claims. Everywhere, a test that
opens a path outside the repository and the temp dirs fails (tests/confined.py).
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.cli.console import Console
from desync_decl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]

# tests.confined: the audit hook that fails a test reading outside the repository.
# tests.loopfs: loop-mounted XFS/Btrfs fixtures for reflink tests (xfs_dir, btrfs_dir,
# reflink_dir). pytester: runs a pytest session in a subprocess (test_confined.py).
pytest_plugins = ["tests.confined", "tests.loopfs", "tests.servers_oci", "pytester"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skip is turned into a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI (CI is set, so skips fail): {reason}"


@pytest.fixture(scope="session", autouse=True)
def empty_home(tmp_path_factory) -> Iterator[Path]:
    """``HOME`` is an empty directory: the tester's own ~/.config/desync/config.json,
    ~/.aws or ~/.ssh must not change what a test sees (tests that need a home set
    their own)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HOME", str(home))
        yield home


@pytest.fixture(scope="session")
def casync() -> str:
    """The real casync binary (Debian package ``casync``, installed by .ci/run)."""
    path = shutil.which("casync")
    if path is None:
        pytest.skip(reason="casync is not installed (apt-get install casync)")
    return path


@dataclass
class Result:
    code: int
    out: str
    err: str
    data: bytes  # binary stdout (cat, make -)


@pytest.fixture
def cli(monkeypatch):
    """Run the CLI in-process: ``cli("make", "-s", store, idx, file)`` -> Result."""

    def run(*argv: str, stdin: bytes = b"", cwd: Path | None = None) -> Result:
        if cwd is not None:
            monkeypatch.chdir(cwd)
        out, err = io.StringIO(), io.StringIO()
        binary = io.BytesIO()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
        try:
            code = main([str(a) for a in argv], Console(out=out, err=err, binary_out=binary))
        except SystemExit as e:
            code = int(e.code or 0)
        return Result(code, out.getvalue(), err.getvalue(), binary.getvalue())

    return run
