"""desync's ``cmd/desync/config_test.go``: the config file's store options and OCI credentials.

desync's ``Config.GetStoreOptionsFor`` is our ``Config.store_options`` (with the
file read by ``Config.load``, what ``--config`` and the default path go through);
its ``GetOCICredentialsFor`` is ``stores.oci_auth.credentials``, which answers
``(user, password)``, or None for anonymous access where desync answers empty ones.
"""

from __future__ import annotations

import json

import pytest

from desync_decl.errors import DesyncError
from desync_decl.stores.config import Config
from desync_decl.stores.oci_auth import credentials


def config_file(tmp_path, raw: dict) -> Config:
    path = tmp_path / "config"
    path.write_text(json.dumps(raw))
    return Config.load(path)


def test_config_file(tmp_path):
    """TestConfigFile: a key's options apply to its store, defaults to any other."""
    config = config_file(tmp_path, {"store-options": {"/path/to/store/": {"uncompressed": True}}})
    assert config.store_options("/path/to/store").uncompressed is True
    assert config.store_options("/path/other-store").uncompressed is False


def test_config_file_multiple_matches(tmp_path):
    """TestConfigFileMultipleMatches: ``/path/to/store/`` and ``/path/to/store`` both
    name the store: an error, not a guess."""
    config = config_file(
        tmp_path,
        {
            "store-options": {
                "/path/to/store/": {"uncompressed": True},
                "/path/to/store": {"uncompressed": False},
            }
        },
    )
    with pytest.raises(DesyncError, match="more than one"):
        config.store_options("/path/to/store")


@pytest.fixture
def no_credentials_around(monkeypatch, tmp_path):
    """Neither the environment nor the user's Docker config gives credentials."""
    monkeypatch.setenv("DESYNC_OCI_USERNAME", "")
    monkeypatch.setenv("DESYNC_OCI_PASSWORD", "")
    docker = tmp_path / "docker"
    docker.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    return docker


OCI_CONFIG = Config(
    None,
    {
        "oci-credentials": {
            "oci+https://ghcr.io/user/repo": {"username": "user", "secret": "secret"},
            "oci+https://registry.io/*/repo": {"username": "wildcard", "secret": "secret"},
            # a malformed glob never matches, and must not break the other lookups
            "oci+https://bad.example.com/[repo": {"username": "broken"},
        }
    },
)


@pytest.mark.parametrize(
    ("location", "user"),
    [
        ("oci+https://ghcr.io/user/repo", "user"),
        ("oci+https://registry.io/anything/repo", "wildcard"),
        ("oci+https://ghcr.io/user/repo/", "user"),
    ],
    ids=["exact match", "glob match", "trailing slash match"],
)
def test_get_oci_credentials_from_the_config(no_credentials_around, location, user):
    """TestGetOCICredentials: exact, glob and trailing-slash matches."""
    assert credentials(location, OCI_CONFIG) == (user, "secret")


def test_get_oci_credentials_without_a_match_falls_back_to_docker(no_credentials_around):
    """TestGetOCICredentials: no key matches, Docker's config has nothing: anonymous,
    no error."""
    assert credentials("oci+https://other.example.com/some/repo", OCI_CONFIG) is None


def test_get_oci_credentials_with_two_matching_keys_is_an_error(no_credentials_around):
    """TestGetOCICredentials: multiple matching entries are invalid."""
    multi = Config(
        None,
        {
            "oci-credentials": {
                "oci+https://ghcr.io/user/repo": {"username": "a"},
                "oci+https://ghcr.io/*/repo": {"username": "b"},
            }
        },
    )
    with pytest.raises(DesyncError, match="more than one"):
        credentials("oci+https://ghcr.io/user/repo", multi)


def test_get_oci_credentials_from_a_broken_docker_config_is_an_error(no_credentials_around):
    """TestGetOCICredentials: a Docker config that exists but does not parse is an
    error, not anonymous access."""
    (no_credentials_around / "config.json").write_text("not json")
    with pytest.raises(DesyncError, match=r"config\.json"):
        credentials("oci+https://other.example.com/some/repo", OCI_CONFIG)


def test_get_oci_credentials_from_the_environment_first(no_credentials_around, monkeypatch):
    """TestGetOCICredentials: DESYNC_OCI_USERNAME/PASSWORD win over the config."""
    monkeypatch.setenv("DESYNC_OCI_USERNAME", "envuser")
    monkeypatch.setenv("DESYNC_OCI_PASSWORD", "envpass")
    assert credentials("oci+https://ghcr.io/user/repo", OCI_CONFIG) == ("envuser", "envpass")


def test_get_oci_credentials_password_without_username(monkeypatch):
    """TestGetOCICredentialsPasswordWithoutUsername: a password alone is reported,
    naming the variable that is missing."""
    monkeypatch.setenv("DESYNC_OCI_USERNAME", "")
    monkeypatch.setenv("DESYNC_OCI_PASSWORD", "token")
    with pytest.raises(DesyncError, match="DESYNC_OCI_USERNAME"):
        credentials("oci+https://ghcr.io/user/repo", Config())


def test_get_oci_credentials_without_docker_config_path(monkeypatch):
    """TestGetOCICredentialsWithoutDockerConfigPath: no DOCKER_CONFIG and no HOME (a
    container, a systemd unit): anonymous access, not an error."""
    for name in ("DESYNC_OCI_USERNAME", "DESYNC_OCI_PASSWORD", "DOCKER_CONFIG", "HOME"):
        monkeypatch.setenv(name, "")
    assert credentials("oci+https://ghcr.io/public/repo", Config()) is None
