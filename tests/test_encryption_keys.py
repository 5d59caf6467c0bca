"""Encryption keys are never silent (issue 19), through the CLI, on a local store and
on an OCI registry (the real ``docker-registry``): a wrong key is said with both
fingerprints instead of "chunk missing"; a key set while encryption is off, or a
config entry that matches no store used, is a warning naming it; ``config --store``
shows where options and key come from; ``make``/``cache`` into a store holding
chunks under another key warn before uploading. A key itself never reaches output.
"""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.stores.compose import Cache, locate
from desync_decl.stores.local import LocalStore
from desync_decl.stores.options import StoreOptions
from tests import servers_http
from tests.servers_oci import fresh_repo

pytestmark = pytest.mark.usefixtures("no_ambient_credentials")
cli_server, nginx = servers_http.cli_server, servers_http.nginx  # the fixtures

KEY_A, KEY_B = "a1" * 32, "b2" * 32


def fingerprint(key: str) -> str:
    """What chunk names and messages show of a key (desync's key id)."""
    return hashlib.sha256(bytes.fromhex(key)).digest()[:4].hex()


ID_A, ID_B = fingerprint(KEY_A), fingerprint(KEY_B)


@pytest.fixture(params=["local", "oci"])
def store(request, tmp_path) -> str:
    """A fresh store location: a directory, or a new repository of the registry."""
    if request.param == "local":
        return str(tmp_path / "store")
    registry = request.getfixturevalue("registry")
    return registry.location(fresh_repo())


def config_file(tmp_path: Path, entries: dict[str, dict], name: str = "config.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps({"store-options": entries}))
    return str(path)


def keyed(tmp_path: Path, store: str, key: str) -> str:
    """A config file encrypting ``store`` with ``key``."""
    entry = {"encryption": True, "encryption-key": key}
    return config_file(tmp_path, {store: entry}, f"config-{fingerprint(key)}.json")


def blob(tmp_path: Path, seed: int, size: int = 300_000) -> Path:
    path = tmp_path / f"blob-{seed}"
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def no_secret(*texts: str) -> None:
    for text in texts:
        assert KEY_A not in text and KEY_B not in text


def test_a_chunk_under_another_key_is_a_wrong_key_not_a_missing_chunk(cli, tmp_path, store):
    source = blob(tmp_path, 1)
    made = cli(
        "--config", keyed(tmp_path, store, KEY_A), "make", "-s", store, tmp_path / "i", source
    )
    assert made.code == 0, made.err

    wrong = cli(
        "--config",
        keyed(tmp_path, store, KEY_B),
        "extract",
        "-s",
        store,
        tmp_path / "i",
        tmp_path / "out",
    )
    assert wrong.code == 1
    assert f"is encrypted with key {ID_A}, not the configured key {ID_B}" in wrong.err
    assert "missing" not in wrong.err and "Traceback" not in wrong.err
    assert len(wrong.err.strip().splitlines()) == 1

    plain = cli("extract", "-s", store, tmp_path / "i", tmp_path / "out")
    assert plain.code == 1
    assert f"is encrypted with key {ID_A}, but no key is configured" in plain.err
    no_secret(made.err, wrong.err, plain.err)

    right = cli(
        "--config",
        keyed(tmp_path, store, KEY_A),
        "extract",
        "-s",
        store,
        tmp_path / "i",
        tmp_path / "out",
    )
    assert right.code == 0, right.err
    assert (tmp_path / "out").read_bytes() == source.read_bytes()


def test_make_into_a_store_holding_another_keys_chunks_warns_before_uploading(cli, tmp_path, store):
    first = cli(
        "--config",
        keyed(tmp_path, store, KEY_A),
        "make",
        "-s",
        store,
        tmp_path / "a",
        blob(tmp_path, 2),
    )
    assert first.code == 0 and "warning" not in first.err

    second = cli(
        "--config",
        keyed(tmp_path, store, KEY_B),
        "make",
        "-s",
        store,
        tmp_path / "b",
        blob(tmp_path, 3),
    )
    assert second.code == 0, second.err
    assert (
        f"already holds chunks stored with key {ID_A}, not the configured key {ID_B}" in second.err
    )
    no_secret(second.err, second.out)

    again = cli(
        "--config",
        keyed(tmp_path, store, KEY_B),
        "make",
        "-s",
        store,
        tmp_path / "b",
        blob(tmp_path, 3),
    )
    assert again.code == 0 and "already holds" not in again.err  # nothing uploaded: nothing said


def test_cache_into_a_store_holding_another_keys_chunks_warns(cli, tmp_path, store):
    target_config = keyed(tmp_path, store, KEY_A)
    assert (
        cli("--config", target_config, "make", "-s", store, tmp_path / "a", blob(tmp_path, 4)).code
        == 0
    )
    source = str(tmp_path / "source")
    assert cli("make", "-s", source, tmp_path / "b", blob(tmp_path, 5)).code == 0

    entries = {store: {"encryption": True, "encryption-key": KEY_B}}
    copied = cli(
        "--config",
        config_file(tmp_path, entries, "b.json"),
        "cache",
        "-s",
        source,
        "-c",
        store,
        tmp_path / "b",
    )
    assert copied.code == 0, copied.err
    assert (
        f"already holds chunks stored with key {ID_A}, not the configured key {ID_B}" in copied.err
    )
    no_secret(copied.err)


def test_a_key_in_the_environment_while_encryption_is_off_is_a_warning(
    cli, tmp_path, store, monkeypatch
):
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", KEY_A)
    made = cli("make", "-s", store, tmp_path / "i", blob(tmp_path, 6))
    assert made.code == 0
    assert (
        f"$DESYNC_ENCRYPTION_KEY is set (key {ID_A}) but encryption is off for {store}" in made.err
    )
    no_secret(made.err)

    used = config_file(tmp_path, {store: {"encryption": True}})  # the variable is the key now
    silent = cli("--config", used, "make", "-s", store, tmp_path / "j", blob(tmp_path, 7))
    assert silent.code == 0 and "DESYNC_ENCRYPTION_KEY" not in silent.err


def test_a_config_key_that_matches_no_store_used_is_a_warning(cli, tmp_path, store):
    """The issue's case: ``oci+http://host:port/*`` does not match ``…/models/chunks``
    (``*`` stops at ``/``); a directory's ``/srv/*`` neither matches ``/srv/a/b``."""
    nested = store + "/models/chunks"
    pattern = store + "/*"
    config = config_file(tmp_path, {pattern: {"encryption": True, "encryption-key": KEY_A}})
    made = cli("--config", config, "make", "-s", nested, tmp_path / "i", blob(tmp_path, 8))
    assert made.code == 0
    assert (
        f"store-options '{pattern}' turns encryption on (key {ID_A}) but matches no store used"
        in made.err
    )
    assert f"{nested} is used without encryption" in made.err
    assert "'*' and '?' in a key do not match '/'" in made.err
    no_secret(made.err)

    shown = cli("--config", config, "config", "--store", nested)
    assert json.loads(shown.out)["config-key"] is None
    assert f"store-options '{pattern}'" in shown.err


def test_config_store_shows_the_matching_key_and_where_the_encryption_key_comes_from(
    cli, tmp_path, store, monkeypatch
):
    pattern = store.rsplit("/", 1)[0] + "/*"
    config = config_file(tmp_path, {pattern: {"encryption": True}})
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", KEY_B)
    shown = cli("--config", config, "config", "--store", store)
    assert shown.code == 0, shown.err
    options = json.loads(shown.out)
    assert options["config-key"] == pattern
    assert options["encryption"] is True
    assert options["encryption-key-from"] == "$DESYNC_ENCRYPTION_KEY"
    assert options["encryption-key-id"] == ID_B
    no_secret(shown.out, shown.err)

    direct = config_file(
        tmp_path, {store: {"encryption": True, "encryption-key": KEY_A}}, "direct.json"
    )
    options = json.loads(cli("--config", direct, "config", "--store", store).out)
    assert (options["config-key"], options["encryption-key-from"]) == (store, "config file")
    assert options["encryption-key-id"] == ID_A
    assert options["encryption-key"] == "(sensitive value)"


def manifest(tmp_path: Path, store: str, index: Path, options: str = "") -> list[str]:
    """A manifest extracting ``index`` from ``store`` (with store ``options``, YAML
    flow), and the arguments of plan/apply for it."""
    path = tmp_path / "site.yaml"
    opts = f"\n    options: {options}" if options else ""
    path.write_text(
        f"version: 1\nstores:\n  models:\n    url: {store}{opts}\n"
        f"tasks:\n  - name: model\n    extract:\n      index: {index}\n"
        f"      path: {tmp_path / 'model.bin'}\n      stores: [models]\n"
    )
    return [str(path), "--state-dir", str(tmp_path / "state")]


def test_plan_names_the_wrong_key_instead_of_chunks_in_none_of_its_stores(
    cli, tmp_path, store, monkeypatch
):
    made = cli(
        "--config",
        keyed(tmp_path, store, KEY_A),
        "make",
        "-s",
        store,
        tmp_path / "i",
        blob(tmp_path, 9),
    )
    assert made.code == 0, made.err
    monkeypatch.setenv("MODEL_KEY", KEY_B)
    site = manifest(
        tmp_path, store, tmp_path / "i", '{encryption: true, encryption_key: "${env:MODEL_KEY}"}'
    )

    planned = cli("plan", *site)
    assert planned.code == 1
    assert f"is encrypted with key {ID_A}, not the configured key {ID_B}" in planned.out
    assert "none of its stores" not in planned.out and "missing" not in planned.out
    no_secret(planned.out, planned.err)


def test_the_issues_case_a_key_in_the_environment_and_a_config_glob_that_stops_at_a_slash(
    cli, tmp_path, store, monkeypatch
):
    """``DESYNC_ENCRYPTION_KEY`` set, the config's ``<registry>/*`` meant for
    ``<registry>/…/models/chunks``: plan says both, and why the chunks are not found."""
    nested = store + "/models/chunks"
    made = cli(
        "--config",
        keyed(tmp_path, nested, KEY_A),
        "make",
        "-s",
        nested,
        tmp_path / "i",
        blob(tmp_path, 10),
    )
    assert made.code == 0, made.err
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", KEY_A)
    pattern = store + "/*"
    config = config_file(tmp_path, {pattern: {"encryption": True}}, "glob.json")

    planned = cli("--config", config, "plan", *manifest(tmp_path, nested, tmp_path / "i"))
    assert planned.code == 1
    assert f"is encrypted with key {ID_A}, but no key is configured" in planned.out
    assert (
        f"$DESYNC_ENCRYPTION_KEY is set (key {ID_A}) but encryption is off for {nested}"
        in planned.err
    )
    assert f"store-options '{pattern}' turns encryption on" in planned.err
    no_secret(planned.out, planned.err)


def test_a_chunk_server_says_at_once_that_the_key_in_its_environment_is_unused(
    cli_server, tmp_path
):
    """A server runs until stopped: the warning comes when its stores are open, and
    not when the variable is the key of its encryption on the wire."""
    store = tmp_path / "store"
    store.mkdir()
    unused = cli_server("chunk-server", "-s", store, env={"DESYNC_ENCRYPTION_KEY": KEY_A})
    assert any(f"$DESYNC_ENCRYPTION_KEY is set (key {ID_A})" in line for line in unused.stderr)
    unused.stop()
    no_secret(*unused.stderr)

    wire = cli_server(
        "chunk-server", "--encryption", "-s", store, env={"DESYNC_ENCRYPTION_KEY": KEY_A}
    )
    assert not any("DESYNC_ENCRYPTION_KEY" in line for line in wire.stderr)
    wire.stop()


def test_make_into_an_http_store_cannot_tell_its_keys_and_says_nothing(cli, tmp_path, nginx):
    """An HTTP store cannot list: which keys it holds is unknown, so no warning is
    guessed (its misses are still checked for the unencrypted names)."""
    store = nginx.url + "store"
    made = cli(
        "--config",
        keyed(tmp_path, store, KEY_A),
        "make",
        "-s",
        store,
        tmp_path / "i",
        blob(tmp_path, 11),
    )
    assert made.code == 0, made.err
    assert "warning" not in made.err


def test_a_cache_holding_another_keys_copy_fetches_the_chunk_again(tmp_path):
    """A cache is disposable: a copy under another key is no copy (not an error), the
    chunk comes from upstream and is cached under the cache's own key; a plan's
    ``locate`` says the same."""
    chunk = Chunk(Digest.SHA512_256.hash(b"model shard"), plain=b"model shard")
    upstream = LocalStore(tmp_path / "upstream", create=True)
    upstream.store_chunk(chunk)
    old = StoreOptions(encryption=True, encryption_key=KEY_A).storage_format()
    LocalStore(tmp_path / "cache", create=True, format=old).store_chunk(chunk)
    new = StoreOptions(encryption=True, encryption_key=KEY_B).storage_format()
    cache = LocalStore(tmp_path / "cache", format=new)

    assert locate(Cache(upstream, cache), chunk.id).leaf is upstream
    assert bytes(Cache(upstream, cache).get_chunk(chunk.id).plain()) == b"model shard"
    assert bytes(cache.get_chunk(chunk.id).plain()) == b"model shard"  # cached under key B
