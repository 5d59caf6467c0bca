"""The schema file, the ``schema`` and ``validate`` verbs, and the shipped examples."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from desync_decl.manifest import ManifestError, load_manifest, schema_text
from tests.conftest import ROOT

SCHEMA = ROOT / "schemas" / "manifest.schema.json"
EXAMPLES = sorted((ROOT / "manifests").glob("*.yaml"))
EXAMPLE_ENV = {  # what the examples reference
    "MIRROR_TOKEN": "example-token",
    "SIGNING_KEY": "/nonexistent/ci_key",
    "ALLOWED_SIGNERS": "/nonexistent/allowed_signers",
}


def test_schema_is_valid_json_schema_2020_12():
    schema = json.loads(SCHEMA.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] and schema["title"] and schema["description"]


def test_every_object_in_the_schema_refuses_unknown_keys():
    def objects(node, where="#"):
        if isinstance(node, dict):
            if "properties" in node:
                yield where, node
            for key, value in node.items():
                yield from objects(value, f"{where}/{key}")
        elif isinstance(node, list):
            for i, value in enumerate(node):
                yield from objects(value, f"{where}/{i}")

    schema = json.loads(SCHEMA.read_text())
    loose = [
        where for where, node in objects(schema) if node.get("additionalProperties") is not False
    ]
    assert loose == []


def test_the_package_ships_the_same_schema():
    assert schema_text() == SCHEMA.read_text()


def test_schema_verb_prints_the_schema_file(cli):
    r = cli("schema")
    assert r.code == 0
    assert json.loads(r.out) == json.loads(SCHEMA.read_text())


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_validate_and_carry_the_schema_modeline(example, cli, monkeypatch):
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    first = example.read_text().splitlines()[0]
    assert first == "# yaml-language-server: $schema=../schemas/manifest.schema.json"
    r = cli("validate", example)
    assert (r.code, r.out, r.err) == (0, f"{example}: ok\n", "")


def test_the_examples_cover_the_issue(monkeypatch):
    names = {p.name for p in EXAMPLES}
    assert {"quickstart.yaml", "fleet.yaml", "publish.yaml"} <= names
    quick = load_manifest(ROOT / "manifests" / "quickstart.yaml", env={})
    assert [t.kind for t in quick.tasks] == ["make", "extract"]
    assert quick.stores["local"].url == str(ROOT / ".quickstart" / "store")
    assert quick.tasks[0].action.source == ROOT / "README.md"
    assert quick.tasks[1].action.seeds  # extracted with a seed


def test_validate_prints_every_problem_on_stderr_and_exits_1(cli, tmp_path):
    good = tmp_path / "good.yaml"
    good.write_text("version: 1\n")
    bad = tmp_path / "bad.yaml"
    bad.write_text("version: 1\nstores: {a: {url: x, tiemout: 1}}\ntasks: [{name: x}]\n")
    r = cli("validate", good, bad, tmp_path / "missing.yaml")
    assert r.code == 1
    assert r.out == f"{good}: ok\n"
    assert r.err.splitlines() == [
        f"{bad}:2:22: unknown key 'tiemout' in store 'a' (expected one of: url, options)",
        f"{bad}:3:9: task 'x' has no action"
        " (expected one of: make, extract, chop, cache, prune, verify, tar, untar)",
        f"{tmp_path / 'missing.yaml'}: no such file",
    ]
    assert "Traceback" not in r.err


def test_validate_names_the_unset_variable(cli, tmp_path, monkeypatch):
    monkeypatch.delenv("DESYNC_DECL_TEST_UNSET", raising=False)
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\nstores:\n  s: {url: '${env:DESYNC_DECL_TEST_UNSET}'}\n")
    r = cli("validate", path)
    assert r.code == 1
    assert r.err == f"{path}:3:13: environment variable 'DESYNC_DECL_TEST_UNSET' is not set\n"


KEYS = sorted(
    set(json.loads(schema_text())["properties"])
    | {k for d in json.loads(schema_text())["$defs"].values() for k in d.get("properties", {})}
)
LEAVES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 3), st.sampled_from(["a", "64K", "30s", "0644"])
)
VALUES = st.recursive(
    LEAVES,
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.sampled_from([*KEYS, "a", "b"]), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=6))
def test_any_shape_gives_problems_never_a_crash(tmp_path_factory, data):
    data = {"version": 1, **data}
    path: Path = tmp_path_factory.mktemp("fuzz") / "m.yaml"
    path.write_text(json.dumps(data))  # JSON is YAML
    try:
        load_manifest(path, env={})
    except ManifestError as e:
        assert e.problems
        assert all(str(p).startswith(f"{path}:") for p in e.problems)


def test_tar_features_in_the_schema_are_casyncs_names():
    from desync_decl.formats.catar import features

    enum = json.loads(SCHEMA.read_text())["$defs"]["feature"]["enum"]
    assert enum == [*features.GROUPS, *features.NAMES]
