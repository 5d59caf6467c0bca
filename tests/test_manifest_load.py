"""YAML loading: positions of keys and values, ${env:…} expansion, YAML-level errors."""

from __future__ import annotations

import pytest

from desync_decl.manifest import ManifestError, load_manifest
from desync_decl.manifest.loader import load_document
from tests.test_manifest_helpers import load, problems

OK = """
version: 1
stores:
  local: {url: store}
tasks:
  - name: verify
    verify: {store: local}
"""


def test_every_key_and_value_keeps_its_line_and_column():
    text = "a:\n  b: [x, {c: 1}]\n  d:\ne: 'q'\n"
    doc, found = load_document(text, "f.yaml", {})
    assert found == []
    assert str(doc.key_at(("a", "b"))) == "f.yaml:2:3"
    assert str(doc.at(("a", "b"))) == "f.yaml:2:6"
    assert str(doc.at(("a", "b", 1, "c"))) == "f.yaml:2:14"
    assert str(doc.key_at(("a", "b", 1, "c"))) == "f.yaml:2:11"
    assert str(doc.at(("a", "d"))) == "f.yaml:3:3"  # an empty value points at its key
    assert str(doc.at(("e",))) == "f.yaml:4:4"
    assert str(doc.at(("a", "nope", 3))) == "f.yaml:2:3"  # nearest known parent


def test_env_references_are_expanded_in_strings(tmp_path):
    m = load(
        tmp_path,
        """
        version: 1
        stores:
          local:
            url: "${env:ROOT}/store"
            options:
              http_auth: "Bearer ${env:TOKEN}"
              connections: ${env:CONNS}
        tasks:
          - name: install
            extract: {index: "${env:ROOT}/app.caibx", path: "${env:ROOT}/app.img", stores: [local]}
        """,
        env={"ROOT": "/srv", "TOKEN": "t0k", "CONNS": "4"},
    )
    store = m.stores["local"]
    assert store.url == "/srv/store"
    assert store.options == {"http_auth": "Bearer t0k", "n": 4}  # unquoted: typed as YAML would
    assert m.tasks[0].action.index == "/srv/app.caibx"
    assert str(m.tasks[0].action.path) == "/srv/app.img"


def test_quoted_reference_stays_a_string(tmp_path):
    found = problems(
        tmp_path,
        """
        version: 1
        defaults: {concurrency: "${env:JOBS}"}
        """,
        env={"JOBS": "8"},
    )
    # the value itself is never shown: it may be a secret
    assert found == [
        "m.yaml:2:25: 'defaults.concurrency': expected an integer, got '${env:JOBS}' (a string)"
    ]


def test_double_dollar_keeps_a_reference_literal(tmp_path):
    m = load(
        tmp_path,
        """
        version: 1
        tasks:
          - name: "cost $${env:HOME}"
            verify: {store: s}
        stores: {s: {url: x}}
        """,
    )
    assert m.tasks[0].name == "cost ${env:HOME}"


def test_unset_variable_is_named_at_its_own_column(tmp_path):
    found = problems(
        tmp_path,
        """
        version: 1
        stores:
          s:
            url: https://example.com/store
            options:
              encryption: true
              encryption_key: ${env:KEY}
              http_auth: "Bearer ${env:TOKEN}"
        """,
        env={"TOKEN": ""},
    )
    # at the reference itself; no second error for the empty value it leaves
    assert found == ["m.yaml:7:23: environment variable 'KEY' is not set"]


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\u2028", "\x85"], ids=repr)
def test_references_after_any_yaml_line_break_are_placed_by_yamls_lines(tmp_path, newline):
    """YAML also breaks lines at CR, NEL and U+2028: a reference after one is expanded
    and an error about it placed at YAML's line and column (found by the fuzz runs:
    an IndexError counting only newlines)."""
    text = newline.join(["version: 1", "stores:", '  s: {url: "${env:NOPE}"}', "tasks: []", ""])
    found = problems(tmp_path, text)
    assert found == ["m.yaml:3:13: environment variable 'NOPE' is not set"]  # as with \n
    assert problems(tmp_path, text.replace("NOPE", "D"), env={"D": "/srv/store"}) == []


def test_invalid_variable_name_is_an_error(tmp_path):
    found = problems(tmp_path, 'version: 1\nstores: {s: {url: "${env:1X}"}}\n')
    assert found == ["m.yaml:2:20: invalid environment variable name '1X' in ${env:…}"]


def test_duplicate_keys_are_errors_not_silently_dropped(tmp_path):
    found = problems(
        tmp_path,
        """
        version: 1
        stores:
          a: {url: x}
          a: {url: y}
        """,
    )
    assert found == ["m.yaml:4:3: duplicate key 'a' (first at 3:3)"]


def test_merge_keys_share_options_and_report_at_the_anchor(tmp_path):
    text = """
    version: 1
    stores:
      a: &remote {url: https://a.example/store, options: {timeout: 30s, retries: 3}}
      b:
        <<: *remote
        url: https://b.example/store
    """
    m = load(tmp_path, text)
    assert m.stores["b"].url == "https://b.example/store"
    assert m.stores["b"].options == {"timeout": 30.0, "error_retry": 3}
    found = problems(tmp_path, text.replace("retries: 3", "retries: many"))
    assert found == [
        "m.yaml:3:78: 'options.retries' of store 'a': expected an integer, got 'many'",
        "m.yaml:3:78: 'options.retries' of store 'b': expected an integer, got 'many'",
    ]


def test_yaml_syntax_error_gives_line_and_column(tmp_path):
    found = problems(tmp_path, "version: 1\nstores: {a: [\n")
    assert len(found) == 1
    assert found[0].startswith("m.yaml:3:1: invalid YAML: ")


def test_unsupported_tag_is_reported(tmp_path):
    found = problems(tmp_path, "version: 1\nstores: {a: {url: !vault abc}}\n")
    assert found == ["m.yaml:2:19: unsupported YAML tag '!vault'"]


def test_timestamps_stay_strings(tmp_path):
    m = load(tmp_path, OK.replace("name: verify", "name: 2024-06-01"))
    assert m.tasks[0].name == "2024-06-01"


def test_empty_file_missing_file_and_second_document(tmp_path):
    assert problems(tmp_path, "# nothing\n") == ["m.yaml: the manifest is empty"]
    with pytest.raises(ManifestError, match=r"nope\.yaml: no such file"):
        load_manifest(tmp_path / "nope.yaml")
    with pytest.raises(ManifestError, match=r": is a directory, not a file$"):
        load_manifest(tmp_path)
    (tmp_path / "latin1.yaml").write_bytes(b"version: 1 # caf\xe9\n")
    with pytest.raises(ManifestError, match=r"latin1\.yaml: not UTF-8 text: invalid"):
        load_manifest(tmp_path / "latin1.yaml")
    found = problems(tmp_path, "version: 1\n---\nversion: 1\n")
    assert found == [
        "m.yaml:2:1: invalid YAML: a manifest is one YAML document;"
        " found another (remove the extra '---')"
    ]


def test_manifest_error_is_a_desync_error_with_every_line(tmp_path):
    from desync_decl.errors import DesyncError

    path = tmp_path / "m.yaml"
    path.write_text("version: 1\ntasks: 3\nstores: 4\n")
    with pytest.raises(DesyncError) as raised:
        load_manifest(path)
    assert isinstance(raised.value, ManifestError)
    assert str(raised.value).splitlines() == [str(p) for p in raised.value.problems]
    assert len(raised.value.problems) == 2
