"""``config`` never prints a secret unless asked to (issue 12, item 16).

Each kind of secret the config file can hold is shown as ``(sensitive value)``;
``--show-secrets`` shows the file as it is; ``-w`` still writes the real values.
"""

from __future__ import annotations

import json

import pytest

from desync_decl.stores.config import SENSITIVE
from desync_decl.stores.url import MASK

# One of each kind, every value distinct so that a leak names its kind.
HTTP_STORE = "https://cache.example.com/store"
URL_PASSWORD = "url-pass-7c1e"
URL_KEY = f"s3+http://AKIAURLUSER:{URL_PASSWORD}@minio.example.com:9000/bucket"
SECRETS = {
    ("store-options", HTTP_STORE, "encryption-key"): "enc-key-5f0c2a",
    ("store-options", HTTP_STORE, "http-auth"): "Bearer http-auth-91b7",
    ("store-options", HTTP_STORE, "http-cookie"): "session=cookie-3d44",
    ("s3-credentials", "http://minio.example.com:9000", "access-key"): "AKIA-access-8e21",
    ("s3-credentials", "http://minio.example.com:9000", "secret-key"): "s3-secret-0a9f",
    ("oci-credentials", "oci+https://registry.example.com/chunks", "secret"): "oci-secret-66d2",
}
NOT_SECRET = {  # shown as they are: they say where secrets are, not what they are
    ("store-options", HTTP_STORE, "client-cert"): "/etc/desync/client.pem",
    ("store-options", HTTP_STORE, "client-key"): "/etc/desync/client.key",
    ("store-options", HTTP_STORE, "error-retry"): 5,
    ("s3-credentials", "http://other.example.com", "aws-credentials-file"): "/root/.aws/creds",
    ("s3-credentials", "http://other.example.com", "aws-profile"): "ci",
    ("oci-credentials", "oci+https://registry.example.com/chunks", "username"): "robot",
}


def raw_config() -> dict:
    raw: dict = {"store-options": {URL_KEY: {"uncompressed": True}}}
    for (section, key, name), value in {**SECRETS, **NOT_SECRET}.items():
        raw.setdefault(section, {}).setdefault(key, {})[name] = value
    raw["store-options"][HTTP_STORE]["encryption"] = True
    return raw


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(raw_config()))
    return path


def test_config_masks_every_kind_of_secret(cli, config_file):
    r = cli("--config", config_file, "config")
    assert r.code == 0, r.err
    for secret in [*SECRETS.values(), URL_PASSWORD]:
        assert secret not in r.out + r.err
    shown = json.loads(r.out)
    for section, key, name in SECRETS:
        assert shown[section][key][name] == SENSITIVE, (section, name)
    for (section, key, name), value in NOT_SECRET.items():
        assert shown[section][key][name] == value, (section, name)
    masked_key = URL_KEY.replace(URL_PASSWORD, MASK)
    assert shown["store-options"][masked_key] == {"uncompressed": True}


def test_show_secrets_prints_the_file_as_it_is(cli, config_file):
    r = cli("--config", config_file, "config", "--show-secrets")
    assert r.code == 0, r.err
    assert json.loads(r.out) == raw_config()


@pytest.mark.parametrize("show", [False, True], ids=["masked", "shown"])
def test_config_store_masks_the_options_secrets_unless_asked(cli, config_file, show):
    r = cli("--config", config_file, "config", "--store", HTTP_STORE, *["--show-secrets"] * show)
    assert r.code == 0, r.err
    shown = json.loads(r.out)
    for (section, key, name), value in SECRETS.items():
        if (section, key) == ("store-options", HTTP_STORE):
            assert shown[name] == (value if show else SENSITIVE), name
    assert shown["client-key"] == NOT_SECRET[("store-options", HTTP_STORE, "client-key")]
    assert shown["error-retry"] == 5


def test_config_write_keeps_the_real_secrets(cli, config_file):
    assert cli("--config", config_file, "config", "-w").code == 0
    assert json.loads(config_file.read_text()) == raw_config()


ENVIRONMENT_SECRETS = {
    "DESYNC_ENCRYPTION_KEY": "env-enc-key-41aa",
    "S3_ACCESS_KEY": "env-s3-access-17",
    "S3_SECRET_KEY": "env-s3-secret-92",
    "AWS_ACCESS_KEY_ID": "env-aws-access-3c",
    "AWS_SECRET_ACCESS_KEY": "env-aws-secret-d8",
    "AWS_SESSION_TOKEN": "env-aws-token-5e",
    "DESYNC_OCI_USERNAME": "env-oci-user",
    "DESYNC_OCI_PASSWORD": "env-oci-password-b2",
    "DESYNC_HTTP_AUTH": "Bearer env-http-auth-77",
}


@pytest.mark.parametrize(
    "store", [None, HTTP_STORE, "s3+http://minio.example.com:9000/b", "oci+https://r.example/c"]
)
def test_secrets_from_the_environment_are_never_printed(cli, config_file, monkeypatch, store):
    """``config`` shows the file: what the environment holds is not printed at all."""
    for name, value in ENVIRONMENT_SECRETS.items():
        monkeypatch.setenv(name, value)
    r = cli("--config", config_file, "config", *(["--store", store] if store else []))
    assert r.code == 0, r.err
    for value in ENVIRONMENT_SECRETS.values():
        assert value not in r.out + r.err
