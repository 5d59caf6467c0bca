"""desync's ``cmd/desync/credentials_test.go``: S3 keys from an AWS shared credentials file.

desync reads the file through its RefreshableSharedCredentialsProvider when a
config file's ``s3-credentials`` entry names one (``aws-credentials-file``,
``aws-profile``); ours is ``stores.s3.resolve_credentials``, asked here with such
an entry and desync's ``testdata/example.ini``. Its environment is given whole,
as desync's tests clear theirs (``os.Clearenv``), so nothing of the tester's leaks
in. The expiry cases (TestNewRefreshableSharedCredentials,
TestRefreshableSharedCredentialsProviderIsExpired: the file is read again a
minute later) are in ``test_credentials_refresh.py``.
"""

from __future__ import annotations

import shutil

import pytest

from desync_decl.stores.config import Config
from desync_decl.stores.s3 import S3Credentials, resolve_credentials

ENDPOINT = "http://127.0.0.1:9000"


def resolved(entry: dict[str, str], environ: dict[str, str] | None = None) -> S3Credentials:
    config = Config(None, {"s3-credentials": {ENDPOINT: entry}})
    return resolve_credentials(ENDPOINT, config, environ or {})


def keys(c: S3Credentials) -> tuple[str, str, str | None]:
    return c.access_key, c.secret_key, c.session_token


WITH_TOKEN = ("accessKey", "secret", "token")
WITHOUT_TOKEN = ("accessKey", "secret", None)


def test_refreshable_shared_credentials_provider(cmd_data):
    """TestRefreshableSharedCredentialsProvider: the file named, no profile: ``default``."""
    assert keys(resolved({"aws-credentials-file": str(cmd_data / "example.ini")})) == WITH_TOKEN


@pytest.mark.parametrize("absolute", [False, True], ids=["relative", "AbsPath"])
def test_with_aws_shared_credentials_file(cmd_data, monkeypatch, absolute):
    """TestRefreshableSharedCredentialsProviderWithAWS_SHARED_CREDENTIALS_FILE (and
    ...AbsPath): no file named, the one AWS_SHARED_CREDENTIALS_FILE names (relative
    to the working directory, or absolute)."""
    monkeypatch.chdir(cmd_data.parent)
    file = str(cmd_data / "example.ini") if absolute else "testdata/example.ini"
    found = resolved({"aws-profile": "default"}, {"AWS_SHARED_CREDENTIALS_FILE": file})
    assert keys(found) == WITH_TOKEN


def test_with_aws_profile(cmd_data):
    """TestRefreshableSharedCredentialsProviderWithAWS_PROFILE: no profile named, the
    one AWS_PROFILE names."""
    entry = {"aws-credentials-file": str(cmd_data / "example.ini")}
    assert keys(resolved(entry, {"AWS_PROFILE": "no_token"})) == WITHOUT_TOKEN


def test_without_token_from_profile(cmd_data):
    """TestRefreshableSharedCredentialsProviderWithoutTokenFromProfile."""
    entry = {"aws-credentials-file": str(cmd_data / "example.ini"), "aws-profile": "no_token"}
    assert keys(resolved(entry)) == WITHOUT_TOKEN


def test_colon_in_cred_file(cmd_data):
    """TestRefreshableSharedCredentialsProviderColonInCredFile: ``key: value`` lines."""
    entry = {"aws-credentials-file": str(cmd_data / "example.ini"), "aws-profile": "with_colon"}
    assert keys(resolved(entry)) == WITHOUT_TOKEN


def test_default_filename(cmd_data, tmp_path, monkeypatch):
    """TestRefreshableSharedCredentialsProvider_DefaultFilename: no file named and no
    AWS_SHARED_CREDENTIALS_FILE: ``$HOME/.aws/credentials``."""
    home = tmp_path / "home_dir"
    (home / ".aws").mkdir(parents=True)
    shutil.copy(cmd_data / "example.ini", home / ".aws" / "credentials")
    monkeypatch.setenv("HOME", str(home))
    assert keys(resolved({"aws-profile": "default"})) == WITH_TOKEN
