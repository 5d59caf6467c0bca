"""Hostile manifests: deep nesting, alias bombs and merge loops are problems with a
place, not crashes; mutations of real manifests fail only with ``ManifestError``."""

from __future__ import annotations

import subprocess
import sys
import time
import tracemalloc

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.manifest import ManifestError, load_manifest
from desync_decl.manifest.loader import MAX_ALIAS_VALUES, MAX_DEPTH
from reliability.fuzz import mutate, seeds, targets


def problems(tmp_path, text: str) -> list[str]:
    path = tmp_path / "m.yaml"
    path.write_text(text)
    with pytest.raises(ManifestError) as e:
        load_manifest(path, env={})
    return [f"{p.position.short()}: {p.message}" for p in e.value.problems]


def test_deep_nesting_is_refused_before_libyaml_builds_it(tmp_path):
    """libyaml's composer recurses in C: a million '[' crashed the interpreter."""
    path = tmp_path / "m.yaml"
    path.write_text("[" * 1_000_000 + "]" * 1_000_000)
    code = f"""
from desync_decl.manifest import ManifestError, load_manifest
try:
    load_manifest({str(path)!r})
except ManifestError as e:
    print(e.problems[0].message)
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-500:]  # a clean refusal, no crash
    # ours, or newer PyYAML's own limit ("exceeded maximum nesting depth"), whichever is first
    assert run.stdout in (
        f"nested deeper than {MAX_DEPTH} levels\n",
        "invalid YAML: exceeded maximum nesting depth\n",
    )


def test_nesting_is_limited_through_aliases_too(tmp_path):
    inner = "[" * 40 + "x" + "]" * 40
    text = f"a: &a {inner}\nb: &b {'[' * 40}*a{']' * 40}\n"
    assert any(f"nested deeper than {MAX_DEPTH} levels" in p for p in problems(tmp_path, text))
    assert problems(tmp_path, "[" * 70 + "]" * 70) == ["1:65: nested deeper than 64 levels"]


def test_a_billion_laughs_is_refused_quickly_and_in_little_memory(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    started = time.monotonic()
    tracemalloc.start()
    try:
        found = problems(tmp_path, "\n".join(lines))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found[0].endswith(f"aliases expand the manifest by more than {MAX_ALIAS_VALUES} values")
    assert time.monotonic() - started < 10 and peak < 200 << 20


@pytest.mark.parametrize(
    "text",
    ["a: &a\n  <<: *a\n  x: 1\n", "a: &a {<<: *b}\nb: &b {<<: *a}\n", "a: &a [*a]\n"],
    ids=["merge itself", "merge each other", "contain itself"],
)
def test_an_alias_loop_is_a_problem_not_a_recursion_error(tmp_path, text):
    assert any(
        "may not contain itself" in p or "undefined alias" in p for p in problems(tmp_path, text)
    )


SEEDS = seeds.manifest_seeds()
ops = mutate.strategy(6)


@settings(
    max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(st.sampled_from(SEEDS), ops)
def test_mutated_manifests_load_or_fail_with_manifest_error(seed, mutation):
    targets.manifest(mutate.apply(seed, mutation))


def test_deeply_nested_json_in_the_config_and_store_files_is_a_clean_error(tmp_path, cli):
    """json recurses per level: RecursionError escaped, and on SIGHUP it ended the server."""
    from desync_decl.errors import DesyncError
    from desync_decl.server import storefile

    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DesyncError, match="nested too deeply"):
        storefile.load(str(deep))
    r = cli("--config", deep, "config")
    assert r.code == 1 and r.err == f"desync-decl: error: {deep}: invalid JSON: nested too deeply\n"


def test_an_impossible_date_is_a_problem_not_a_value_error(tmp_path):
    """Found by atheris: PyYAML's timestamp constructor raises ValueError for month 13."""
    found = problems(tmp_path, "version: 1\nwhen: 2001-13-14\n")
    assert any("2001-13-14" in p or "month" in p for p in found), found
