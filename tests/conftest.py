"""Shared fixtures: the casync vectors, the real casync binary, a CLI runner.

In CI (``CI`` set) a skipped test is a failure: every tool a test needs must
really be there, so a green run proves what it claims.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.cli.console import Console
from desync_decl.cli.main import main

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DESYNC_DECL_SHARED", ROOT.parent / "shared"))
VECTORS = SHARED / "vectors"

# Loop-mounted XFS/Btrfs fixtures for reflink tests: xfs_dir, btrfs_dir, reflink_dir.
pytest_plugins = ["tests.loopfs"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Under CI a skip is turned into a failure."""
    outcome = yield
    report = outcome.get_result()
    if os.environ.get("CI") and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped in CI (CI is set, so skips fail): {reason}"


def _gen_input():
    if not VECTORS.is_dir():
        pytest.skip(reason=f"casync vectors not found at {VECTORS} (set DESYNC_DECL_SHARED)")
    sys.path.insert(0, str(VECTORS))
    try:
        import gen_input  # type: ignore[import-not-found]
    finally:
        sys.path.pop(0)
    return gen_input


@pytest.fixture(scope="session")
def gen_input():
    """shared/vectors/gen_input.py: rebuilds every vector input exactly."""
    return _gen_input()


@pytest.fixture(scope="session")
def vectors() -> Path:
    if not VECTORS.is_dir():
        pytest.skip(reason=f"casync vectors not found at {VECTORS} (set DESYNC_DECL_SHARED)")
    return VECTORS


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
