"""Fails a test that opens or lists a path outside the repository and the temp dirs.

A test that reads a file a fresh clone does not have (a sibling checkout, the
user's home, another project's data) passes here and fails for everyone else.
An audit hook (PEP 578) sees every ``open`` (``open()``, ``os.open``, imports)
and every directory listing in this process; a path outside ``allowed_roots``
fails the test that was running, or, when nothing was running (collection,
module imports), the session. Only this process is watched, not subprocesses.

Paths are judged as given: made absolute against the working directory, not
resolved through symlinks. Opening a directory on the way to an allowed root
(``/``, or ``/work`` for a checkout in ``/work/x``) is allowed: a walk by
descriptors starts there and reads nothing from it; listing one is not. A
relative path opened against a directory descriptor (``dir_fd``) is judged
against the working directory, which tests keep in the repository or a temp dir.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Audit events that name a path this process reads.
WATCHED = frozenset({"open", "os.listdir", "os.scandir"})

# The operating system and Python's own installation: never project data.
SYSTEM = ("/proc", "/sys", "/dev", "/etc", "/usr")


def _python_install() -> set[str]:
    """Where the interpreter and the installed packages (pytest, hypothesis, moto, ...) live."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.update(site.getsitepackages())
    paths.add(site.getusersitepackages())
    paths.update(p for p in sysconfig.get_paths().values())
    return paths


class Confinement:
    """The allowed roots and what was opened outside them since the last report."""

    def __init__(self, allowed: set[str]) -> None:
        self.allowed = tuple(sorted({os.path.normpath(p) for p in allowed}))
        self.on_the_way = {str(parent) for root in self.allowed for parent in Path(root).parents}
        self.outside: list[str] = []

    def allows(self, event: str, path: str) -> bool:
        if event == "open" and path in self.on_the_way:
            return True
        return any(path == root or path.startswith(root + os.sep) for root in self.allowed)

    def audit(self, event: str, args: tuple[object, ...]) -> None:
        if event not in WATCHED:
            return
        target = args[0] if args else None
        if isinstance(target, int):  # an open descriptor: judged when it was opened
            return
        path = os.path.abspath(os.fsdecode(target if target is not None else "."))
        if not self.allows(event, path) and path not in self.outside:
            self.outside.append(path)

    def take(self) -> list[str]:
        found, self.outside = self.outside, []
        return found


def allowed_roots(config: pytest.Config) -> set[str]:
    """The repository, the temp dir (where pytest's tmp_path lives unless --basetemp
    puts it elsewhere), the operating system's files and Python's installation."""
    allowed = {str(ROOT), tempfile.gettempdir(), *SYSTEM, *_python_install()}
    if config.option.basetemp:
        allowed.add(os.path.abspath(config.option.basetemp))
    return allowed


_confinement: Confinement | None = None
_outside_tests: list[str] = []  # opened while no test ran: collection, imports


def pytest_configure(config: pytest.Config) -> None:
    """Install the hook once per process (an audit hook cannot be removed)."""
    global _confinement
    if _confinement is None:
        _confinement = Confinement(allowed_roots(config))
        sys.addaudithook(_confinement.audit)


def pytest_collection_finish(session: pytest.Session) -> None:
    if _confinement is not None:
        _outside_tests.extend(_confinement.take())


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    """A phase (setup, call, teardown) that opened a path outside fails, naming it."""
    outcome = yield
    report = outcome.get_result()
    found = _confinement.take() if _confinement is not None else []
    if found:
        report.outcome = "failed"
        report.longrepr = (
            f"opened outside the repository and the temp dirs during {call.when}: "
            + ", ".join(found)
        )


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Paths opened outside any test fail the run as a whole."""
    if _confinement is not None:
        _outside_tests.extend(_confinement.take())
    if _outside_tests:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter) -> None:
    if _outside_tests:
        terminalreporter.section("opened outside the repository and the temp dirs")
        for path in _outside_tests:
            terminalreporter.line(f"{path} (during collection or imports, not in a test)")
