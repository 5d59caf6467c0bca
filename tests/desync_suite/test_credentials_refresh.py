"""desync's ``cmd/desync/credentials_test.go``, the expiry cases: keys from an AWS shared
credentials file are read from it again once they are a minute old.

Ports TestNewRefreshableSharedCredentials and
TestRefreshableSharedCredentialsProviderIsExpired (the cases that read the file
once are in ``test_credentials.py``). desync's tests hand its provider a clock
function; ours is the ``clock`` of ``stores.s3.signing_credentials`` (and of
``S3Objects``), here a ``Clock`` the test moves. desync's fixture
``testdata/example.ini`` is copied to ``tmp_path`` before it is changed.

Then end to end on the suite's moto, checking signatures against IAM users: a store
opened with a credentials file keeps working across a refresh, and the requests
after it carry the new access key in their Authorization header (seen by a
``Relay`` between the store and moto) and are signed with the new secret (or moto
would refuse them).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.stores import s3
from desync_decl.stores.base import StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.objects import ListableObjectChunkStore
from desync_decl.stores.options import StoreOptions
from tests.desync_suite.relay import Relay
from tests.servers_http import serving
from tests.store_contract import random_chunks

pytest_plugins = ["tests.servers_cloud"]

ENDPOINT = "http://127.0.0.1:9000"
ORIGINAL = ("accessKey", "secret", "token")  # example.ini's [default]
ROTATED = ("rotatedKey", "r0tated-s3cr3t", None)


@dataclass
class Clock:
    """Seconds that pass only when the test says so."""

    now: float = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def example(cmd_data: Path, tmp_path: Path) -> Path:
    """A copy of desync's example.ini that the test may change."""
    return Path(shutil.copy(cmd_data / "example.ini", tmp_path / "example.ini"))


def write_profile(file: Path, key: str, secret: str, profile: str = "default") -> None:
    """Rotate: the file now holds only ``profile``, with these keys (written beside it
    and renamed over it, as a tool that rotates keys does)."""
    new = file.with_suffix(".new")
    new.write_text(f"[{profile}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    new.replace(file)


def rotate(file: Path) -> None:
    write_profile(file, *ROTATED[:2])


def config_naming(file: Path | None, **entry: str) -> Config:
    if file is not None:
        entry["aws-credentials-file"] = str(file)
    return Config(None, {"s3-credentials": {ENDPOINT: entry}})


def opened(config: Config, clock: Clock, environ: dict[str, str] | None = None):
    """What a store opened now with ``config`` signs with (the file read now)."""
    return s3.signing_credentials(s3.resolve_credentials(ENDPOINT, config, environ or {}), clock)


def keys(live) -> tuple[str, str, str | None]:
    frozen = live.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token


def test_new_refreshable_shared_credentials(example):
    """TestNewRefreshableSharedCredentials: with the clock two minutes on, the keys
    have expired; reading them (``Get``) reads the file and they have not any more.
    desync's credentials start expired and its first Get reads the file; ours read it
    when the store is opened, so they start fresh."""
    clock = Clock()
    live = opened(config_naming(example), clock)
    assert isinstance(live, s3.RefreshingCredentials)
    assert keys(live) == ORIGINAL and not live.expired
    clock.advance(120)
    assert live.expired
    assert keys(live) == ORIGINAL
    assert not live.expired


def test_refreshable_shared_credentials_provider_is_expired(example):
    """TestRefreshableSharedCredentialsProviderIsExpired: expired once the clock is
    past the read plus a minute (not at the minute: Go's ``After``), and not once the
    file has been read again, until a minute after that read."""
    clock = Clock()
    live = opened(config_naming(example), clock)
    clock.advance(60)
    assert not live.expired
    clock.advance(0.001)
    assert live.expired
    keys(live)
    assert not live.expired
    clock.advance(60)
    assert not live.expired
    clock.advance(0.001)
    assert live.expired


@pytest.mark.parametrize("named_by", ["aws-credentials-file", "AWS_SHARED_CREDENTIALS_FILE"])
def test_after_a_minute_the_keys_in_the_file_now_are_the_ones_used(example, named_by):
    """TestNewRefreshableSharedCredentials / ...IsExpired, what their ``Retrieve``
    does: the file is read again, so a key changed in it is what signs after the
    keys expire, and not before. Also when the file is named by
    AWS_SHARED_CREDENTIALS_FILE (read when the store was opened, as desync keeps it)."""
    clock = Clock()
    if named_by == "AWS_SHARED_CREDENTIALS_FILE":
        live = opened(
            config_naming(None, **{"aws-profile": "default"}),
            clock,
            {"AWS_SHARED_CREDENTIALS_FILE": str(example)},
        )
    else:
        live = opened(config_naming(example), clock)
    rotate(example)
    clock.advance(59)
    assert keys(live) == ORIGINAL
    clock.advance(2)
    assert keys(live) == ROTATED  # the token went with the old keys


@pytest.mark.parametrize(
    "source",
    [
        {"env": {"S3_ACCESS_KEY": "envKey", "S3_SECRET_KEY": "envSecret"}},
        {"env": {"AWS_ACCESS_KEY_ID": "envKey", "AWS_SECRET_ACCESS_KEY": "envSecret"}},
        {"entry": {"access-key": "envKey", "secret-key": "envSecret"}},
    ],
    ids=["S3_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "config access-key"],
)
def test_keys_not_from_a_file_stay_as_they_are(example, source):
    """Static keys (desync's StaticCredentialsProvider: never expired): an hour
    later, with a credentials file named in the config and changed meanwhile, the
    environment's or the config's own keys are still the ones used."""
    clock = Clock()
    entry = source.get("entry", {"aws-credentials-file": str(example)})
    live = opened(Config(None, {"s3-credentials": {ENDPOINT: entry}}), clock, source.get("env"))
    assert not isinstance(live, s3.RefreshingCredentials)
    rotate(example)
    clock.advance(3600)
    assert keys(live)[:2] == ("envKey", "envSecret")


def test_what_is_read_from_the_file_is_not_shown(example):
    """Secrets never reach output: the credentials' repr (a debugger, a log of the
    store) shows where they came from and the access key, not the secret or token."""
    shown = repr(s3.resolve_credentials(ENDPOINT, config_naming(example), {}))
    shown = shown.replace(str(example), "FILE")
    assert "accessKey" in shown and "secret" not in shown and "token" not in shown


def remove(file: Path) -> None:
    file.unlink()


def rename_profile(file: Path) -> None:
    write_profile(file, *ROTATED[:2], profile="other")


def drop_secret(file: Path) -> None:
    file.write_text(f"[default]\naws_access_key_id = {ROTATED[0]}\n")


def garble(file: Path) -> None:  # a line without "=": configparser would quote it
    file.write_text(f"[default]\naws_access_key_id = {ROTATED[0]}\n{ROTATED[1]}\n")


@pytest.mark.parametrize(
    "damage, says",
    [
        (remove, "cannot read AWS credentials file {file}: No such file or directory"),
        (rename_profile, "AWS credentials file {file}: no profile [default]"),
        (drop_secret, "AWS credentials file {file}: [default] has no aws_secret_access_key"),
        (garble, "AWS credentials file {file}: not key = value at line 3"),
    ],
    ids=["removed", "profile gone", "key gone", "garbled"],
)
def test_a_file_broken_at_refresh_is_a_store_error_naming_it(example, damage, says):
    """desync's Retrieve fails when the file cannot be loaded or lacks the profile or
    a key. Ours: a StoreError naming the file (transient: the file may be half-way
    through being rewritten, so a retry reads it again), with no key from the file;
    once the file is right again, the next request reads it."""
    clock = Clock()
    live = opened(config_naming(example), clock)
    damage(example)
    clock.advance(61)
    with pytest.raises(StoreError) as failed:
        keys(live)
    message = str(failed.value)
    assert message == says.format(file=example) and failed.value.transient
    rotate(example)
    assert keys(live) == ROTATED


def test_a_garbled_file_at_open_names_the_line_not_what_is_on_it(example):
    """The same message when the store is opened (not transient: nothing has read
    the file yet); configparser's own would quote the line, a secret with it."""
    garble(example)
    with pytest.raises(StoreError) as failed:
        s3.resolve_credentials(ENDPOINT, config_naming(example), {})
    assert str(failed.value) == f"AWS credentials file {example}: not key = value at line 3"
    assert not failed.value.transient


# --- end to end, against moto checking signatures -----------------------------------------


def iam_user_with_two_keys(moto_server, user: str) -> list[tuple[str, str]]:
    """An IAM user allowed everything on S3, with two access keys (made while moto
    still lets anyone in); then moto checks every request's signature."""
    iam = moto_server.client("iam")
    iam.create_user(UserName=user)
    policy = {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
    }
    iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))
    made = [iam.create_access_key(UserName=user)["AccessKey"] for _ in range(2)]
    moto_server.require_auth()
    return [(k["AccessKeyId"], k["SecretAccessKey"]) for k in made]


def signed_by(relay: Relay, since: int) -> set[str]:
    """The access keys in the Authorization headers of the requests from ``since`` on."""
    with relay.lock:
        headers = [h for _, _, h in relay.requests[since:]]
    return {h["Authorization"].split("Credential=", 1)[1].split("/", 1)[0] for h in headers}


def test_a_store_signs_with_rotated_keys_a_minute_after_reading_them(
    moto_server, s3_bucket, tmp_path, monkeypatch
):
    """TestNewRefreshableSharedCredentials end to end: a store opened with a
    credentials file keeps working across a refresh, and from then on signs with the
    keys the file holds now."""
    (old_key, old_secret), (new_key, new_secret) = iam_user_with_two_keys(
        moto_server, f"rotating-{s3_bucket}"
    )
    for name in ("S3_ACCESS_KEY", "S3_SECRET_KEY"):  # the fixture's keys would win
        monkeypatch.delenv(name)
    file = tmp_path / "credentials"
    write_profile(file, old_key, old_secret)
    config = Config(
        None, {"s3-credentials": {"http://127.0.0.1:*": {"aws-credentials-file": str(file)}}}
    )
    clock = Clock()
    chunks = random_chunks(4, seed=41)
    with serving(Relay(moto_server.hostport)) as relay:
        location = f"s3+http://{relay.hostport}/{s3_bucket}/store"
        options = StoreOptions(error_retry=1)
        store = ListableObjectChunkStore(s3.open_objects(location, options, config, clock=clock))
        store.store_chunk(chunks[0])
        write_profile(file, new_key, new_secret)
        clock.advance(30)
        store.store_chunk(chunks[1])
        assert signed_by(relay, 0) == {old_key}
        seen = len(relay.requests)
        clock.advance(31)
        store.store_chunk(chunks[2])
        store.store_chunk(chunks[3])
        assert all(store.has_chunk(c.id) for c in chunks)
        assert signed_by(relay, seen) == {new_key}

        remove(file)
        clock.advance(61)
        with pytest.raises(StoreError) as failed:  # the request fails, naming store and file
            store.has_chunk(chunks[0].id)
        message = str(failed.value)
        assert message.startswith("cannot check ") and location in message
        assert message.endswith(
            f": cannot read AWS credentials file {file}: No such file or directory"
        )
        store.close()
