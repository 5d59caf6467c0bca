"""Security of the servers, transports and root-run ``apply``, as rows: the attack
tests of the suite (``tests/test_server_security.py``, the SSH store's injection
tests, and the hostile-client, hostile-store, hostile-manifest, hostile-archive and
local-attacker tests of issue 12), one row per test function with its
parametrized cases as runs.

The attacks themselves live in the test suite, where CI runs them on every
change; this module only runs them and counts, so RELIABILITY.md lists what
was tried.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

from reliability.verdicts import report_row

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {
    "test_server_security": "servers and store clients",
    "test_store_ssh": "ssh store",
    "test_server_hostile": "chunk-server, index-server (hostile clients)",
    "test_store_bounds": "store clients (hostile stores)",
    "test_location_hostile": "locations (malformed URLs, passwords)",
    "test_root_safety": "apply as root (local attacker as nobody)",
    "test_manifest_secrets": "plan/apply/validate (${env:...} values)",
    "test_manifest_bombs": "manifest loader (YAML aliases)",
    "test_untar_feature_flags": "untar/mtree as root (feature flags, vs casync)",
    "test_output_escaping": "terminal output (remote text)",
    "test_config_secrets": "config (secrets)",
    "test_server_hostile2": "chunk-server, index-server (hostile clients)",
    "test_location_hostile2": "locations (malformed URLs, passwords)",
    "test_store_gzip": "store clients (hostile stores)",
    "test_root_safety2": "apply as root (local attacker as nobody)",
    "test_root_safety_trees": "untar/tar/make/chop as root (local attacker as nobody)",
    "test_fsutil_walk": "paths walked from / (planted symlinks)",
    "test_manifest_secrets2": "plan/apply/validate (${env:...} values)",
    "test_manifest_bombs2": "manifest loader (size, values, problems)",
    "test_server_hostile3": "chunk-server (clients that never read)",
    "test_local_store_symlinks": "local store as root (planted prefix links)",
    "test_untar_update": "untar updating a tree (outside links, planted symlinks, others' files)",
}
NOTES = {
    "test_no_encoding_of_a_parent_directory_reaches_a_file_outside_the_store": (
        "each case: 33 request targets x GET, HEAD, PUT, raw on the socket"
    ),
    "test_any_path_reaches_the_remote_shell_as_one_word": "200 hypothesis paths",
}
TESTS = [
    "tests/test_server_security.py",
    "tests/test_server_hostile.py",
    "tests/test_store_bounds.py",
    "tests/test_location_hostile.py",
    "tests/test_root_safety.py",
    "tests/test_manifest_secrets.py",
    "tests/test_manifest_bombs.py",
    "tests/test_untar_feature_flags.py",
    "tests/test_output_escaping.py",
    "tests/test_config_secrets.py",
    "tests/test_server_hostile2.py",
    "tests/test_location_hostile2.py",
    "tests/test_store_gzip.py",
    "tests/test_root_safety2.py",
    "tests/test_root_safety_trees.py",
    "tests/test_fsutil_walk.py",
    "tests/test_manifest_secrets2.py",
    "tests/test_manifest_bombs2.py",
    "tests/test_server_hostile3.py",
    "tests/test_local_store_symlinks.py",
    "tests/test_store_ssh.py::test_a_host_or_user_ssh_would_read_as_an_option_is_refused",
    "tests/test_store_ssh.py::test_the_path_reaches_the_far_side_as_one_quoted_word",
    "tests/test_store_ssh.py::test_a_hostile_path_runs_nothing_on_the_far_side",
    "tests/test_untar_update.py::test_a_hard_link_from_outside_is_replaced_not_chmodded",
    "tests/test_untar_update.py::test_a_symlink_where_a_file_was_is_replaced_not_followed",
    "tests/test_untar_update.py::test_a_file_of_another_user_is_replaced_never_chowned_in_place",
]


def run(budget: str) -> list[dict]:
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             f"--junitxml={report}", *TESTS],
            cwd=ROOT, capture_output=True, text=True,
            env={k: v for k, v in os.environ.items() if k != "CI"},
        )  # fmt: skip
        cases = list(ET.parse(report).getroot().iter("testcase")) if report.exists() else []
    groups: dict[tuple[str, str], list[str]] = {}
    for case in cases:
        name = re.sub(r"\[.*\]$", "", case.get("name", "?"))
        outcome = "ok"
        if case.find("failure") is not None or case.find("error") is not None:
            outcome = "wrong"
        elif case.find("skipped") is not None:
            outcome = "skipped"
        groups.setdefault((case.get("classname", "?"), name), []).append(outcome)
    rows = []
    for (module, name), outcomes in groups.items():
        skipped = outcomes.count("skipped")
        rows.append(
            report_row(
                "security",
                name.removeprefix("test_").replace("_", " "),
                TARGETS.get(module.rsplit(".", 1)[-1], module),
                NOTES.get(name, "")
                + (f" {skipped} skipped (a server binary missing)" if skipped else ""),
                runs=len(outcomes) - skipped,
                ok=outcomes.count("ok"),
                wrong_output=outcomes.count("wrong"),
            )
        )
    if not rows:
        rows.append(
            report_row(
                "security", "(pytest did not report)", "tests", "no junit report", wrong_output=1
            )
        )
    return rows
