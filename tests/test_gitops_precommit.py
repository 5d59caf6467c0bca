"""The pre-commit hook ``desync-decl-validate`` (``.pre-commit-hooks.yaml``; issue 16,
item 2), run as a user's repository runs it: the real ``pre-commit try-repo`` on this
repository, over a git repository of manifests in a temp dir.

``try-repo`` clones this repository at HEAD (with the changes to files git tracks,
not new untracked ones) and pip-installs the clone into a virtualenv of its own, so
the hook runs the package as installed, built from the clone. "This repository" is
the clone the tests run from (``ROOT``, as CI's fresh clone is).

Offline and quick: the virtualenv sees this interpreter's site-packages, where the
package's dependencies are installed (``pip install -e '.[test]'``), pip asks no
index and builds without an isolated build environment (virtualenv seeds setuptools
from its own wheels, cffi is a dependency). Every cache and temp dir is in tmp_path.
When the tests run inside a virtualenv, a new virtualenv cannot see its packages:
pip then fetches the dependencies and the build's from the index.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytest.importorskip("pre_commit", reason="pre-commit is not installed (the test extra has it)")
GIT = shutil.which("git")
pytestmark = pytest.mark.skipif(GIT is None, reason="git is not installed")
HOOK = "desync-decl-validate"
GOOD = """\
version: 1
stores: {s: {url: store}}
tasks:
  - name: install
    extract: {index: a.caibx, path: out/a.img, stores: [s]}
"""
BAD = GOOD.replace("stores: [s]", "stores: [nope]")
# where the unknown store's name stands: line and column, from 1
BAD_AT = next(
    f"{n}:{line.index('nope') + 1}" for n, line in enumerate(BAD.splitlines(), 1) if "nope" in line
)


def git(cwd: Path, *argv: str) -> str:
    identity = ("-c", "user.name=t", "-c", "user.email=t@example.com")
    done = subprocess.run(
        [GIT or "git", *identity, *argv], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def hook_env(tmp: Path) -> dict[str, str]:
    """pre-commit, virtualenv and pip with their homes, caches and temp files in ``tmp``,
    offline when this interpreter is not itself a virtualenv's."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PIP_", "VIRTUALENV_", "PRE_COMMIT", "PYTHON", "GIT_"))
    }
    for name in ("home", "tmp", "cache"):
        (tmp / name).mkdir()
    env |= {
        "HOME": str(tmp / "home"),
        "TMPDIR": str(tmp / "tmp"),  # try-repo keeps its clone and virtualenv here
        "XDG_CACHE_HOME": str(tmp / "cache"),
        "PRE_COMMIT_HOME": str(tmp / "cache" / "pre-commit"),
        "VIRTUALENV_OVERRIDE_APP_DATA": str(tmp / "cache" / "virtualenv"),
        "VIRTUALENV_NO_PERIODIC_UPDATE": "1",
        "VIRTUALENV_SYSTEM_SITE_PACKAGES": "1",  # the dependencies, as installed here
        "VIRTUALENV_SETUPTOOLS": "bundle",  # to build with: seeded from virtualenv's wheels
        "PIP_CACHE_DIR": str(tmp / "cache" / "pip"),
        "PIP_DISABLE_PIP_VERSION_CHECK": "1",
        # git refuses a repository another user owns; this one is what the test is about
        "GIT_CONFIG_COUNT": "1",
        "GIT_CONFIG_KEY_0": "safe.directory",
        "GIT_CONFIG_VALUE_0": str(ROOT),
    }
    if sys.prefix == sys.base_prefix:  # the dependencies are visible: no index, no download
        env["PIP_NO_INDEX"] = "1"
        env["PIP_NO_BUILD_ISOLATION"] = "0"  # pip reads this switch inverted: 0 turns it off
    return env


def try_repo(repo: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``pre-commit try-repo ROOT desync-decl-validate --all-files`` in ``repo``."""
    return subprocess.run(
        [sys.executable, "-m", "pre_commit", "try-repo", str(ROOT), HOOK, "--all-files"],
        cwd=repo,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_hook_passes_good_manifests_and_fails_a_bad_one_at_its_line(tmp_path):
    tracked = subprocess.run(
        [GIT or "git", "-C", str(ROOT), "ls-files", "--error-unmatch", ".pre-commit-hooks.yaml"],
        capture_output=True,
        check=False,
    )
    assert tracked.returncode == 0, "try-repo needs a git clone of desync-decl with the hook"
    env = hook_env(tmp_path)
    repo = tmp_path / "manifests-repo"
    (repo / "manifests" / "prod").mkdir(parents=True)
    (repo / "manifests" / "good.yaml").write_text(GOOD)
    (repo / "manifests" / "prod" / "also-good.yml").write_text(GOOD)
    (repo / "ci.yaml").write_text(BAD)  # YAML, but not a manifest: not checked
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "manifests")

    passed = try_repo(repo, env)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert "desync-decl validate...." in passed.stdout and "Passed" in passed.stdout

    (repo / "manifests" / "bad.yaml").write_text(BAD)
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "a bad one")
    failed = try_repo(repo, env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    lines = failed.stdout.splitlines()
    assert f"manifests/bad.yaml:{BAD_AT}: unknown store, group or cache 'nope'" in "\n".join(lines)
    assert "manifests/good.yaml: ok" in lines and "manifests/prod/also-good.yml: ok" in lines
    assert not any(line.startswith("ci.yaml") for line in lines)
