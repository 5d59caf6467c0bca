"""The checks a maintainer runs by hand, run by the suite so CI enforces them.

ruff (lint and format) and mypy over ``desync_decl`` with the configuration in
pyproject.toml; the same commands ``.pre-commit-config.yaml`` runs on commit.
A ``type: ignore`` must name its error code (mypy's ``ignore-without-code``) and
say why on the same line, so the next maintainer can judge whether it still holds.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IGNORE = re.compile(r"#\s*type:\s*ignore\b(?P<rest>.*)$")
WITH_CODE_AND_REASON = re.compile(r"^\[[a-z0-9_,\- ]+\]\s+#\s*\S")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run a Python tool module from the repository root, capturing its report."""
    return subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def test_mypy_finds_no_error_in_the_package():
    done = run("mypy")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Success: no issues found" in done.stdout


@pytest.mark.parametrize(
    "argv", [("ruff", "check", "."), ("ruff", "format", "--check", ".")], ids=["lint", "format"]
)
def test_ruff_is_clean(argv):
    done = run(*argv)
    assert done.returncode == 0, done.stdout + done.stderr


def unexplained_ignores(root: Path) -> list[str]:
    """``path:line`` of each ``type: ignore`` under ``root`` without ``[code]`` and a reason."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            m = IGNORE.search(line)
            if m and not WITH_CODE_AND_REASON.match(m["rest"].strip()):
                found.append(f"{path.relative_to(root)}:{number}: {line.strip()}")
    return found


def test_every_type_ignore_names_its_code_and_says_why():
    assert unexplained_ignores(ROOT / "desync_decl") == []


def test_the_ignore_check_tells_a_reasoned_ignore_from_a_bare_one(tmp_path):
    """The check itself: only the last form passes."""
    sample = tmp_path / "sample.py"
    sample.write_text(
        "a = f()  # type: ignore\n"
        "b = f()  # type: ignore[attr-defined]\n"
        "c = f()  # type: ignore  # no code\n"
        "d = f()  # type: ignore[attr-defined]  # boto3 ships no stubs\n"
    )
    assert [f.split(":")[1] for f in unexplained_ignores(tmp_path)] == ["1", "2", "3"]
