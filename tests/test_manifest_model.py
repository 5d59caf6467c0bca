"""The typed model: resolved paths, parsed values, defaults, positions."""

from __future__ import annotations

import dataclasses
import os
import pickle
from pathlib import Path

import pytest

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.manifest import (
    CacheAction,
    ExtractAction,
    MakeAction,
    ManifestError,
    PruneAction,
    Seed,
    TarAction,
    UntarAction,
    VerifyAction,
    load_manifest,
)
from desync_decl.stores.options import StoreOptions
from tests.test_manifest_helpers import load, write

TEXT = """
version: 1
defaults: {chunk_size: "8K:32K:128K", concurrency: 4}
stores:
  origin:
    url: s3+https://s3.example.com/bucket/store
    options: {timeout: 1m30s, retry_interval: 250ms, connections: 2, ca_cert: ca.pem}
  local: {url: chunks}
groups:
  up: {failover: [origin]}
caches:
  fast: {store: up, cache: local, max_size: 2G, repair: true}
tasks:
  - name: publish
    tags: [ci, build]
    make: {source: app.img, index: out/app.caibx, store: local}
  - name: publish small
    make: {source: small.img, index: "https://i.example/s.caibx", store: local, chunk_size: 16K}
  - name: install
    extract:
      index: out/app.caibx
      path: ~/app.img
      stores: [fast, origin]
      seeds: [old.img, {file: /abs/prev.img, index: prev.caibx}]
      mode: "0640"
      owner: 1000
      group: app
      backup: true
      in_place: true
      pin: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
  - name: fill
    cache: {indexes: [out/app.caibx], stores: [up], cache: local}
  - name: prune
    prune: {store: local, keep: ["out/*.caibx"]}
  - name: verify
    verify: {store: local}
"""


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return load(tmp_path, TEXT)


def test_stores_groups_and_caches(manifest, tmp_path):
    origin = manifest.stores["origin"]
    assert origin.url == "s3+https://s3.example.com/bucket/store"
    assert dict(origin.options) == {
        "timeout": 90.0,
        "error_retry_base_interval": 0.25,
        "n": 2,
        "ca_cert": str(tmp_path / "ca.pem"),
    }
    assert manifest.stores["local"].url == str(tmp_path / "chunks")
    assert manifest.groups["up"].failover == ("origin",)
    fast = manifest.caches["fast"]
    assert (fast.store, fast.cache, fast.max_size, fast.repair) == ("up", "local", 2 << 30, True)
    assert manifest.source("fast") is fast
    with pytest.raises(KeyError):
        manifest.source("nope")


def test_store_options_go_over_the_config_files(manifest):
    base = StoreOptions(error_retry=7, http_auth="from-config")
    merged = manifest.stores["origin"].store_options(base)
    assert (merged.timeout, merged.n, merged.error_retry, merged.http_auth) == (
        90.0,
        2,
        7,
        "from-config",
    )


def test_store_options_check_what_only_the_merge_shows(tmp_path):
    m = load(
        tmp_path,
        "version: 1\nstores: {s: {url: x, options: {client_cert: c.pem, client_key: k.pem}}}\n",
    )
    assert m.stores["s"].store_options().client_key == str(tmp_path / "k.pem")
    m = load(tmp_path, "version: 1\nstores: {s: {url: x, options: {encryption: false}}}\n")
    with pytest.raises(DesyncError, match=r"m\.yaml:2:10: store 's': an encryption key"):
        m.stores["s"].store_options(StoreOptions(encryption_key="k"))


def test_tasks_have_typed_actions_with_resolved_paths(manifest, tmp_path):
    assert [t.kind for t in manifest.tasks] == [
        "make",
        "make",
        "extract",
        "cache",
        "prune",
        "verify",
    ]
    publish, small, install, fill, prune, verify = (t.action for t in manifest.tasks)
    assert manifest.defaults.concurrency == 4
    assert publish == MakeAction(
        tmp_path / "app.img",
        str(tmp_path / "out/app.caibx"),
        "local",
        ChunkSizes.parse("8K:32K:128K"),
    )
    assert manifest.tasks[0].tags == ("ci", "build")
    assert small.index == "https://i.example/s.caibx"
    assert small.chunk_size == ChunkSizes(4096, 16384, 65536)
    assert install == ExtractAction(
        index=str(tmp_path / "out/app.caibx"),
        path=tmp_path / "home" / "app.img",
        stores=("fast", "origin"),
        seeds=(
            Seed(tmp_path / "old.img", str(tmp_path / "old.img.caibx")),
            Seed(Path("/abs/prev.img"), str(tmp_path / "prev.caibx")),
        ),
        in_place=True,
        mode=0o640,
        owner=1000,
        group="app",
        backup=True,
        pin="sha256:" + "0" * 64,
    )
    assert fill == CacheAction((str(tmp_path / "out/app.caibx"),), ("up",), "local")
    assert prune == PruneAction("local", (str(tmp_path / "out/*.caibx"),))
    assert verify == VerifyAction("local", False)


def test_defaults_when_the_manifest_sets_none(tmp_path):
    m = load(
        tmp_path,
        "version: 1\nstores: {s: {url: x}}\n"
        "tasks: [{name: m, make: {source: a, index: b, store: s}}]\n",
    )
    assert m.defaults.concurrency == 8
    assert m.tasks[0].action.chunk_size == ChunkSizes.parse("16K:64K:256K")


def test_everything_keeps_its_position(manifest, tmp_path):
    file = str(tmp_path / "m.yaml")
    assert str(manifest.stores["origin"].position) == f"{file}:4:3"
    assert str(manifest.groups["up"].position) == f"{file}:9:3"
    assert str(manifest.caches["fast"].position) == f"{file}:11:3"
    install = manifest.tasks[2]
    assert str(install.position) == f"{file}:18:5"
    assert str(manifest.field_position(install, "path")) == f"{file}:21:13"
    assert str(manifest.key_position_of(("tasks", 2, "extract", "path"))) == f"{file}:21:7"
    assert str(manifest.field_position(install, "seeds", 1, "file")) == f"{file}:23:31"
    assert str(manifest.position_of(("tasks", 2, "extract", "nope"))) == f"{file}:20:7"


def test_the_model_is_frozen_and_errors_pickle(manifest, tmp_path):
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.tasks[0].name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        manifest.stores["x"] = manifest.stores["local"]  # type: ignore[index]
    path = write(tmp_path, "version: 1\nstores: 3\n", "bad.yaml")
    with pytest.raises(ManifestError) as raised:
        load_manifest(path)
    again = pickle.loads(pickle.dumps(raised.value))
    assert again.problems == raised.value.problems and str(again) == str(raised.value)


def test_secrets_stay_out_of_reprs(tmp_path):
    m = load(
        tmp_path,
        "version: 1\nstores:\n  s:\n    url: x\n    options:\n      http_auth: ${env:T}\n",
        env={"T": "hunter2"},
    )
    assert m.stores["s"].options["http_auth"] == "hunter2"
    assert "hunter2" not in repr(m)


def test_tar_and_untar_tasks_are_typed_with_feature_bits_and_defaults(tmp_path):
    from desync_decl.formats import flags as ff
    from desync_decl.formats.catar import features

    m = load(
        tmp_path,
        """
version: 1
defaults: {chunk_size: "8K:32K:128K"}
stores: {local: {url: chunks}}
tasks:
  - name: pack
    tar: {source: site, index: out/site.caidx, store: local}
  - name: pack exactly
    tar:
      source: /srv/site
      index: "https://i.example/site.caidx"
      store: local
      chunk_size: 16K
      with: [unix, xattrs]
      without: [symlinks]
      no_time: true
      one_file_system: true
  - name: deploy
    untar: {index: out/site.caidx, path: ~/site, stores: [local]}
  - name: deploy loosely
    untar:
      index: out/site.caidx
      path: /srv/copy
      stores: [local]
      seeds: [/srv/site, old]
      no_same_owner: true
      no_same_permissions: true
      delete_extra: true
      pin: "sha512-256:0000000000000000000000000000000000000000000000000000000000000000"
""",
        env={},
    )
    pack, exact, deploy, loose = (t.action for t in m.tasks)
    assert [t.kind for t in m.tasks] == ["tar", "tar", "untar", "untar"]
    assert pack == TarAction(
        tmp_path / "site",
        str(tmp_path / "out/site.caidx"),
        "local",
        ChunkSizes.parse("8K:32K:128K"),
        features.DESYNC_TAR & ff.WITH_MASK,
    )
    unix = features.GROUPS["unix"] | features.NAMES["xattrs"]
    assert exact == TarAction(
        Path("/srv/site"),
        "https://i.example/site.caidx",
        "local",
        ChunkSizes.parse("16K"),
        unix & ~features.NAMES["symlinks"] & ~features.NAMES["sec-time"],
        one_file_system=True,
    )
    home = Path(os.path.expanduser("~"))
    assert deploy == UntarAction(str(tmp_path / "out/site.caidx"), home / "site", ("local",))
    assert loose == UntarAction(
        index=str(tmp_path / "out/site.caidx"),
        path=Path("/srv/copy"),
        stores=("local",),
        seeds=(Path("/srv/site"), tmp_path / "old"),
        no_same_owner=True,
        no_same_permissions=True,
        delete_extra=True,
        pin="sha512-256:" + "0" * 64,
    )
