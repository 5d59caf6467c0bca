"""Checks beyond the schema: names, cycles, duplicates, sizes, durations, option pairs."""

from __future__ import annotations

from tests.test_manifest_helpers import problems

HEAD = """version: 1
stores:
  origin: {url: "https://example.com/store"}
  local: {url: store}
"""


def test_unknown_store_lists_the_known_ones(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """tasks:
  - name: publish
    make: {source: a, index: a.caibx, store: orgin}
""",
    )
    assert found == [
        "m.yaml:7:46: unknown store 'orgin' in 'make.store' of task 'publish'"
        " (known: local, origin)"
    ]


def test_fetching_may_name_any_store_group_or_cache(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """groups:
  up: {failover: [origin, local]}
caches:
  fast: {store: up, cache: local}
tasks:
  - name: get
    extract: {index: a.caibx, path: a, stores: [fast, up, local, nope]}
""",
    )
    assert found == [
        "m.yaml:11:66: unknown store, group or cache 'nope' in 'extract.stores[3]' of task"
        " 'get' (known: stores local, origin; groups up; caches fast)"
    ]


def test_writing_needs_a_store_not_a_group(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """groups:
  up: {failover: [origin]}
caches:
  fast: {store: up, cache: up}
tasks:
  - name: fill
    cache: {indexes: [a.caibx], stores: [origin], cache: fast}
""",
    )
    assert found == [
        "m.yaml:8:28: 'cache' of cache 'fast' must name a store, but 'up' is a group"
        " (known: local, origin)",
        "m.yaml:11:58: 'cache.cache' of task 'fill' must name a store, but 'fast' is a cache"
        " (known: local, origin)",
    ]


def test_failover_cycles_are_found_through_groups_and_caches(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """groups:
  a: {failover: [origin, b]}
  b: {failover: [c]}
  self: {failover: [self]}
caches:
  c: {store: a, cache: local}
""",
    )
    assert found == [
        "m.yaml:8:21: reference cycle: group 'self' -> group 'self'",
        "m.yaml:10:14: reference cycle: group 'a' -> group 'b' -> cache 'c' -> group 'a'",
    ]


def test_names_are_unique_across_stores_groups_and_caches(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """groups:
  local: {failover: [origin]}
caches:
  origin: {store: origin, cache: local}
""",
    )
    assert found == [
        "m.yaml:6:3: name 'local' is both a store (4:3) and a group:"
        " stores, groups and caches need distinct names",
        "m.yaml:8:3: name 'origin' is both a store (3:3) and a cache:"
        " stores, groups and caches need distinct names",
    ]


def test_duplicate_task_names(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """tasks:
  - name: check
    verify: {store: local}
  - name: check
    verify: {store: origin}
""",
    )
    assert found == ["m.yaml:8:11: duplicate task name 'check' (first at 6:11)"]


def test_two_tasks_writing_one_file(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """tasks:
  - name: one
    extract: {index: a.caibx, path: out/a.img, stores: [local]}
  - name: two
    extract: {index: b.caibx, path: ./out/../out/a.img, stores: [local]}
""",
    )
    assert found == [
        "m.yaml:9:37: 'extract.path' of task 'two': ./out/../out/a.img is also written"
        " by task 'one' (7:37)"
    ]


def test_chunk_sizes_must_be_ordered(tmp_path):
    found = problems(
        tmp_path,
        HEAD.replace("version: 1\n", 'version: 1\ndefaults: {chunk_size: "64K:16K:1M"}\n')
        + """tasks:
  - name: publish
    make: {source: a, index: a.caibx, store: local, chunk_size: "16:64:200000"}
""",
    )
    assert found == [
        "m.yaml:2:24: 'defaults.chunk_size': invalid chunk size '64K:16K:1M':"
        " need 1 <= min <= avg <= max",
        "m.yaml:8:65: 'make.chunk_size' of task 'publish': invalid chunk size"
        " '16:64:200000': each must be at most 128 MiB",
    ]


def test_cache_size_and_timeout_must_be_positive(tmp_path):
    found = problems(
        tmp_path,
        """version: 1
stores:
  s:
    url: https://example.com/store
    options: {timeout: 0s}
  local: {url: x}
caches:
  c: {store: s, cache: local, max_size: 0G}
""",
    )
    assert found == [
        "m.yaml:5:24: 'options.timeout' of store 's': must be more than 0",
        "m.yaml:8:41: 'max_size' of cache 'c': must be more than 0 (or left out)",
    ]


def test_store_option_pairs_and_aliases(tmp_path):
    found = problems(
        tmp_path,
        """version: 1
stores:
  s:
    url: https://a.example/store|https://b.example/store
    options:
      retries: 3
      error_retry: 4
      encryption_key: secret
      client_cert: cert.pem
""",
    )
    assert found == [
        "m.yaml:4:10: 'url' of store 's': '|' is not allowed in a URL"
        " (list the stores in a group's failover instead)",
        "m.yaml:7:20: 'options.error_retry' of store 's': also set as 'retries'; keep one",
        "m.yaml:8:7: 'options.encryption_key' of store 's': set, but 'encryption: true'"
        " is not (chunks would be written in plaintext)",
        "m.yaml:9:7: 'options.client_cert' of store 's': client_cert and client_key go together",
    ]


def test_semantic_checks_survive_any_shape(tmp_path):
    """Wrong shapes are schema errors; the semantic pass must not trip over them."""
    found = problems(
        tmp_path,
        """version: 1
stores: [a]
groups: {g: 3, h: {failover: 5}, i: {failover: [[x]]}}
caches: {c: [1]}
defaults: 7
tasks:
  - name: [x]
    make: 4
  - name: y
    extract: {stores: {a: 1}, path: [], index: 3}
""",
    )
    assert len(found) >= 9
    assert all(line.startswith("m.yaml:") for line in found)


def test_tar_and_untar_name_stores_and_write_their_targets(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """tasks:
  - name: pack
    tar: {source: site, index: site.caidx, store: orgin, chunk_size: "64K:16K:1M"}
  - name: deploy
    untar: {index: site.caidx, path: out, stores: [nope]}
  - name: again
    extract: {index: a.caibx, path: out, stores: [local]}
""",
    )
    assert found == [
        "m.yaml:7:51: unknown store 'orgin' in 'tar.store' of task 'pack' (known: local, origin)",
        "m.yaml:7:70: 'tar.chunk_size' of task 'pack': invalid chunk size '64K:16K:1M':"
        " need 1 <= min <= avg <= max",
        "m.yaml:9:52: unknown store, group or cache 'nope' in 'untar.stores[0]' of task"
        " 'deploy' (known: stores local, origin)",
        "m.yaml:11:37: 'extract.path' of task 'again': out is also written by task 'deploy' (9:38)",
    ]


def test_a_tar_index_inside_its_source_would_never_converge(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """tasks:
  - name: pack
    tar: {source: site, index: site/../site/idx/site.caidx, store: local}
  - name: fine
    tar: {source: site, index: site.caidx, store: local}
""",
    )
    assert found == [
        "m.yaml:7:32: 'tar.index' of task 'pack': site/../site/idx/site.caidx is inside the"
        " source directory site (the index would change what it describes)"
    ]


def test_delete_extra_would_delete_what_another_task_writes_inside(tmp_path):
    found = problems(
        tmp_path,
        HEAD
        + """tasks:
  - name: config
    extract: {index: c.caibx, path: srv/app/config.img, stores: [local]}
  - name: deploy
    untar: {index: app.caidx, path: srv/app, stores: [local], delete_extra: true}
  - name: deploy keeping extras
    untar: {index: app.caidx, path: srv/other, stores: [local]}
  - name: config of the other
    extract: {index: c.caibx, path: srv/other/config.img, stores: [local]}
""",
    )
    assert found == [
        "m.yaml:9:77: 'untar.delete_extra' of task 'deploy': would delete srv/app/config.img,"
        " which task 'config' writes (7:37)"
    ]
