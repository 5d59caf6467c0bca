"""desync's config file: store options by glob, units, credentials sections, the config verb."""

from __future__ import annotations

import json
import stat

import pytest

from desync_decl.errors import DesyncError
from desync_decl.stores.config import SENSITIVE, Config


def config_with(tmp_path, raw: dict) -> Config:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw))
    return Config.load(path)


def test_store_options_match_globs_that_stay_within_one_path_element(tmp_path):
    config = config_with(
        tmp_path,
        {"store-options": {"https://example.com/*/store/": {"uncompressed": True}}},
    )
    assert config.store_options("https://example.com/a/store").uncompressed
    assert not config.store_options("https://example.com/a/b/store").uncompressed
    assert not config.store_options("https://example.com/store").uncompressed


def test_durations_are_nanoseconds_and_a_negative_timeout_means_none(tmp_path):
    entry = {"timeout": 30_000_000_000, "error-retry-base-interval": 250_000_000}
    config = config_with(
        tmp_path, {"store-options": {"http://a/": entry, "http://b/": {"timeout": -1}}}
    )
    a = config.store_options("http://a")
    assert (a.timeout, a.error_retry_base_interval) == (30.0, 0.25)
    assert config.store_options("http://b").timeout is None
    assert config.store_options("http://c").timeout == 60.0  # desync's default: one minute


def test_local_store_keys_are_compared_as_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = config_with(tmp_path, {"store-options": {str(tmp_path / "s"): {"uncompressed": True}}})
    assert config.store_options("s/").uncompressed


def test_two_matching_keys_are_an_error_naming_both(tmp_path):
    config = config_with(tmp_path, {"store-options": {"http://h/*": {}, "http://h/x": {}}})
    with pytest.raises(DesyncError, match=r"more than one .*http://h/\*, http://h/x"):
        config.store_options("http://h/x")


def test_an_encryption_key_without_encryption_is_refused(tmp_path):
    config = config_with(tmp_path, {"store-options": {"http://h/": {"encryption-key": "00" * 32}}})
    with pytest.raises(DesyncError, match="encryption is not enabled"):
        config.store_options("http://h/")


def test_wrong_types_are_reported_with_the_key(tmp_path):
    config = config_with(tmp_path, {"store-options": {"http://h/": {"error-retry": "3"}}})
    with pytest.raises(DesyncError, match="store-options 'http://h/': error-retry"):
        config.store_options("http://h/")


def test_credential_sections_match_globs_unlike_desync(tmp_path):
    config = config_with(tmp_path, {"s3-credentials": {"http://127.0.0.1:*": {"access-key": "k"}}})
    assert config.section("s3-credentials", "http://127.0.0.1:9000") == {"access-key": "k"}
    assert config.section("s3-credentials", "http://10.0.0.1:9000") is None


def test_a_missing_default_file_is_fine_but_a_named_one_is_not(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Config.load().raw == {}
    with pytest.raises(DesyncError, match="no such file"):
        Config.load(tmp_path / "nope.json")


def test_invalid_json_names_line_and_column(tmp_path):
    path = tmp_path / "config.json"
    path.write_text('{\n  "store-options": {,}\n}')
    with pytest.raises(DesyncError, match=r"config.json:2:\d+: invalid JSON"):
        Config.load(path)


def test_the_config_verb_prints_options_for_a_store_without_secrets(cli, tmp_path):
    path = tmp_path / "config.json"
    entry = {"encryption": True, "encryption-key": "ab" * 32, "uncompressed": True}
    path.write_text(json.dumps({"store-options": {"/srv/*": entry}}))
    r = cli("--config", path, "config", "--store", "/srv/chunks")
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    assert shown["uncompressed"] is True and shown["encryption"] is True
    assert shown["encryption-key"] == SENSITIVE and "ab" * 32 not in r.out


def test_config_write_creates_a_private_file(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    source = tmp_path / "in.json"
    source.write_text(json.dumps({"store-options": {"/x": {"uncompressed": True}}}))
    assert cli("--config", source, "config").code == 0
    assert cli("--config", source, "config", "-w").code == 0
    assert stat.S_IMODE(source.stat().st_mode) == 0o600
    assert json.loads(source.read_text())["store-options"]["/x"] == {"uncompressed": True}
