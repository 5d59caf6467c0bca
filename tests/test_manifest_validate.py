"""Schema errors: one line each, at the YAML position of the offending key or value."""

from __future__ import annotations

from tests.test_manifest_helpers import problems

STORES = """
version: 1
stores:
  local: {url: store}
"""


def test_unknown_key_points_at_the_key_and_suggests_the_right_one(tmp_path):
    found = problems(
        tmp_path,
        STORES
        + """tasks:
  - name: publish
    make:
      source: app.img
      index: app.caibx
      stroe: local
""",
    )
    # no second "missing 'store'" error: the misspelling says it all
    assert found == [
        "m.yaml:9:7: unknown key 'stroe' in 'make' of task 'publish'"
        " (did you mean 'store'? expected one of: source, index, store, chunk_size, sign)"
    ]


def test_unknown_top_level_key(tmp_path):
    found = problems(tmp_path, "version: 1\nstore: {}\n")
    assert found == [
        "m.yaml:2:1: unknown key 'store' in the manifest (did you mean 'stores'?"
        " expected one of: version, defaults, stores, groups, caches, handlers, tasks)"
    ]


def test_wrong_type_points_at_the_value(tmp_path):
    found = problems(
        tmp_path,
        STORES
        + """tasks:
  - name: check
    verify: {store: local, repair: "yes please"}
""",
    )
    assert found == [
        "m.yaml:6:36: 'verify.repair' of task 'check': expected true or false, got 'yes please'"
    ]


def test_missing_key_points_at_the_mapping_that_lacks_it(tmp_path):
    found = problems(
        tmp_path,
        STORES
        + """tasks:
  - name: get
    extract:
      index: app.caibx
      stores: [local]
""",
    )
    assert found == ["m.yaml:6:5: missing required key 'path' in 'extract' of task 'get'"]


def test_version_is_required_and_other_versions_are_refused(tmp_path):
    assert problems(tmp_path, "stores: {}\n") == [
        "m.yaml:1:1: missing required key 'version' in the manifest"
    ]
    assert problems(tmp_path, "version: 2\nwhatever: 1\n") == [
        "m.yaml:1:10: unsupported manifest version 2 (this desync-decl reads 1)"
    ]


def test_a_task_has_exactly_one_action(tmp_path):
    found = problems(
        tmp_path,
        STORES
        + """tasks:
  - name: idle
    tags: [x]
  - name: busy
    verify: {store: local}
    prune: {store: local, keep: [a.caibx]}
""",
    )
    assert found == [
        "m.yaml:5:5: task 'idle' has no action"
        " (expected one of: make, extract, chop, cache, prune, verify, tar, untar)",
        "m.yaml:9:5: task 'busy' has more than one action (verify, prune): one per task",
    ]


def test_misspelt_action_is_one_unknown_key_error(tmp_path):
    found = problems(tmp_path, STORES + "tasks:\n  - name: x\n    extrct: {}\n")
    assert found == [
        "m.yaml:6:5: unknown key 'extrct' in task 'x' (did you mean 'extract'?"
        " expected one of: name, tags, notify, make, extract, chop, cache, prune, verify, tar,"
        " untar)"
    ]


def test_unquoted_mode_explains_the_octal_surprise(tmp_path):
    found = problems(
        tmp_path,
        STORES
        + """tasks:
  - name: get
    extract: {index: a.caibx, path: a, stores: [local], mode: 0644}
""",
    )
    assert found == [
        "m.yaml:6:63: 'extract.mode' of task 'get': expected an octal mode in quotes,"
        ' such as "0644", got the number 420 (YAML reads an unquoted 0644 as the octal number 420)'
    ]


def test_patterns_say_what_was_expected(tmp_path):
    found = problems(
        tmp_path,
        """
version: 1
stores:
  s:
    url: https://example.com/store
    options: {timeout: 30 seconds, encryption: true, encryption_algorithm: rot13}
caches:
  c: {store: s, cache: s, max_size: lots}
tasks:
  - name: get
    extract: {index: a.caibx, path: a, stores: [c], pin: "md5:abc", seeds: [{index: x}]}
""",
    )
    assert found == [
        "m.yaml:5:24: 'options.timeout' of store 's': expected a duration such as 30s, 1m30s"
        " or 500ms, got '30 seconds'",
        "m.yaml:5:76: 'options.encryption_algorithm' of store 's': expected one of:"
        " xchacha20-poly1305, aes-256-gcm; got 'rot13'",
        "m.yaml:7:37: 'max_size' of cache 'c': expected a size such as 20G, 512M or 1000B,"
        " got 'lots'",
        "m.yaml:10:58: 'extract.pin' of task 'get': expected an index digest such as"
        " sha512-256:<64 hex digits>, got 'md5:abc'",
        "m.yaml:10:77: missing required key 'file' in 'extract.seeds[0]' of task 'get'",
    ]


def test_bad_names_empty_lists_and_repeats(tmp_path):
    found = problems(
        tmp_path,
        """
version: 1
stores:
  "a|b": {url: x}
  ok: {url: y}
groups:
  g: {failover: [ok, ok]}
tasks:
  - name: prune
    prune: {store: ok, keep: []}
""",
    )
    assert found == [
        "m.yaml:3:3: invalid store name 'a|b': expected a name of letters, digits, '_', '.'"
        " and '-' (starting with a letter or digit)",
        "m.yaml:6:17: 'failover' of group 'g': lists 'ok' more than once",
        "m.yaml:9:30: 'prune.keep' of task 'prune': must not be empty",
    ]


def test_a_task_without_a_name_is_numbered(tmp_path):
    found = problems(tmp_path, STORES + "tasks:\n  - verify: {store: local}\n  - 7\n")
    assert found == [
        "m.yaml:5:5: missing required key 'name' in task #1",
        "m.yaml:6:5: task #2: expected a mapping, got the number 7",
    ]


def test_many_problems_are_reported_at_once_in_file_order(tmp_path):
    found = problems(
        tmp_path,
        """
version: 1
defaults: {chunk_size: "64K:16K:1M", concurrency: 0}
stores:
  origin: {url: "https://example.com/store", options: {tiemout: 30s}}
groups:
  up: {failover: [orgin]}
tasks:
  - name: a
    make: {source: a, index: a.caibx, store: origin, chunk_size: 8X}
  - name: a
    verify: {store: up}
""",
    )
    assert [line.split(": ", 1)[0] for line in found] == [
        "m.yaml:2:24",  # min > avg
        "m.yaml:2:51",  # concurrency 0
        "m.yaml:4:56",  # tiemout
        "m.yaml:6:19",  # unknown store
        "m.yaml:9:66",  # bad chunk size syntax
        "m.yaml:10:11",  # duplicate task name
        "m.yaml:11:21",  # verify needs a store, not a group
    ]


def test_a_list_is_not_a_manifest(tmp_path):
    assert problems(tmp_path, "- version: 1\n") == [
        "m.yaml:1:1: a manifest is a mapping (version, tasks, ...), got a list"
    ]


def test_unknown_tar_feature_gets_a_guess(tmp_path):
    found = problems(
        tmp_path,
        STORES
        + """tasks:
  - name: pack
    tar: {source: site, index: site.caidx, store: local, with: [bst], without: []}
""",
    )
    assert found == [
        "m.yaml:6:65: 'tar.with[0]' of task 'pack': expected a casync feature name or set,"
        " got 'bst' (did you mean 'best'?)",
        "m.yaml:6:80: 'tar.without' of task 'pack': must not be empty",
    ]
