"""The S3 store on a real S3 API server (moto): the contract, credentials, addressing,
failures, and the CLI verbs end to end."""

from __future__ import annotations

from dataclasses import replace

import pytest

from desync_decl.stores import s3
from desync_decl.stores.base import StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.objects import ListableObjectChunkStore
from desync_decl.stores.options import StoreOptions
from tests import cloud_cases
from tests.cloud_cases import FAST_FAILURE
from tests.store_contract import ID_NEVER_STORED, ContractEnv, StoreContract, random_chunks

pytest_plugins = ["tests.servers_cloud"]
blob = cloud_cases.blob  # the fixture


def open_store(location: str, options: StoreOptions | None = None, config: Config | None = None):
    opener = Opener(config=config or Config())
    return s3.open_chunk_store(location, options or StoreOptions(), opener)


def empty_and_delete(admin, bucket: str) -> None:
    for page in admin.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for item in page.get("Contents", ()):
            admin.delete_object(Bucket=bucket, Key=item["Key"])
    admin.delete_bucket(Bucket=bucket)


class TestS3Store(StoreContract):
    @pytest.fixture
    def env(self, moto_server, s3_bucket) -> ContractEnv:
        location = f"s3+http://{moto_server.hostport}/{s3_bucket}/store"
        admin = moto_server.admin

        def put_raw(key: str, data: bytes) -> None:
            admin.put_object(Bucket=s3_bucket, Key=f"store/{key}", Body=data)

        def break_store() -> None:  # the bucket is gone: a failure, never "missing"
            empty_and_delete(admin, s3_bucket)

        # an invalid chunk is read again under error-retry (desync #334): at the default
        # 0.5 s interval each invalid-chunk case would wait 1.5 s for nothing
        return ContractEnv(
            location,
            lambda options: s3.open_chunk_store(
                location, replace(options, error_retry_base_interval=0.01), Opener()
            ),
            put_raw,
            break_store,
        )


# --- locations --------------------------------------------------------------------------


def test_a_location_names_endpoint_bucket_and_prefix():
    where = s3.parse_location("s3+http://127.0.0.1:9000/bucket/a/b/")
    assert where == s3.S3Location("http://127.0.0.1:9000", "bucket", "a/b/", "path")
    assert s3.parse_location("s3+https://h/bucket").prefix == ""


def test_auto_lookup_uses_virtual_hosts_only_for_aws_like_endpoints():
    assert s3.parse_location("s3+https://s3.us-west-2.amazonaws.com/b/p").addressing == "virtual"
    assert s3.parse_location("s3+https://s3.amazonaws.com/my.bucket/p").addressing == "path"
    assert s3.parse_location("s3+http://minio.local:9000/b/p").addressing == "path"
    assert s3.parse_location("s3+http://minio.local:9000/b/p?lookup=dns").addressing == "virtual"
    assert s3.parse_location("s3+https://s3.amazonaws.com/b?lookup=path").addressing == "path"


@pytest.mark.parametrize("bad", ["s3+http://host/", "s3+http://host/b?lookup=sideways"])
def test_a_location_without_bucket_or_with_an_unknown_lookup_is_refused(bad):
    with pytest.raises(StoreError, match=r"bucket|lookup"):
        s3.parse_location(bad)


def test_path_lookup_works_against_the_server(moto_server, s3_bucket):
    location = f"s3+http://{moto_server.hostport}/{s3_bucket}/p?lookup=path"
    store = open_store(location)
    chunk = random_chunks(1, seed=11)[0]
    store.store_chunk(chunk)
    assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
    assert str(store) == location
    key = f"p/{chunk.id.hex()[:4]}/{chunk.id.hex()}.cacnk"
    head = moto_server.admin.head_object(Bucket=s3_bucket, Key=key)
    assert head["ContentType"] == "application/zstd"


def test_listing_follows_continuation_tokens_across_pages(moto_server, s3_bucket):
    location = f"s3+http://{moto_server.hostport}/{s3_bucket}/p"
    where = s3.parse_location(location)
    credentials = s3.resolve_credentials(where.endpoint, Config())
    objects = s3.S3Objects(location, where, credentials, StoreOptions(), page_size=2)
    store = ListableObjectChunkStore(objects)
    chunks = random_chunks(5, seed=13)
    for c in chunks:
        store.store_chunk(c)
    assert sorted(store.iter_chunk_ids()) == sorted(c.id for c in chunks)


# --- failures -----------------------------------------------------------------------------


def test_a_missing_bucket_is_an_error_not_a_missing_chunk(moto_server, s3_bucket):
    store = open_store(f"s3+http://{moto_server.hostport}/no-such-bucket/p", FAST_FAILURE)
    cloud_cases.assert_every_call_fails_on_the_missing_bucket(store, "no-such-bucket")


def test_a_server_that_is_down_is_a_transient_store_error(closed_port, s3_bucket):
    store = open_store(f"s3+http://127.0.0.1:{closed_port}/b/p", FAST_FAILURE)
    with pytest.raises(StoreError) as e:
        store.has_chunk(ID_NEVER_STORED)
    assert e.value.transient


def test_5xx_answers_are_retried_by_us_exactly_error_retry_times(unavailable_server, s3_bucket):
    cloud_cases.assert_5xx_is_retried_exactly_error_retry_times(
        lambda options: open_store(f"s3+{unavailable_server.endpoint}/b/p", options),
        unavailable_server,
    )


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default_and_ca_cert_or_trust_insecure_let_it_through(
    unavailable_tls_server, s3_bucket
):
    location = f"s3+{unavailable_tls_server.endpoint}/b/p"
    cloud_cases.assert_tls_is_verified_unless_ca_cert_or_trust_insecure(
        lambda options: open_store(location, options),
        unavailable_tls_server,
        "certificate verify failed",
    )


# --- credentials --------------------------------------------------------------------------

ENDPOINT = "http://127.0.0.1:9000"


def config_with(entries: dict) -> Config:
    return Config(None, {"s3-credentials": entries})


def test_s3_environment_variables_beat_aws_ones_and_the_config():
    env = {
        "S3_ACCESS_KEY": "s3key",
        "S3_SECRET_KEY": "s3secret",
        "S3_SESSION_TOKEN": "tok",
        "S3_REGION": "eu-west-1",
        "AWS_ACCESS_KEY_ID": "awskey",
        "AWS_SECRET_ACCESS_KEY": "awssecret",
    }
    config = config_with({ENDPOINT: {"access-key": "cfg", "secret-key": "cfg"}})
    creds = s3.resolve_credentials(ENDPOINT, config, env)
    assert (creds.access_key, creds.secret_key, creds.session_token) == ("s3key", "s3secret", "tok")
    assert creds.region == "eu-west-1" and creds.source == "S3_ACCESS_KEY"


def test_aws_environment_variables_apply_when_both_s3_ones_are_empty():
    env = {"S3_ACCESS_KEY": "", "AWS_ACCESS_KEY_ID": "awskey", "AWS_SECRET_ACCESS_KEY": "awss"}
    creds = s3.resolve_credentials(ENDPOINT, Config(), env)
    assert (creds.access_key, creds.secret_key, creds.source) == (
        "awskey",
        "awss",
        "AWS_ACCESS_KEY_ID",
    )


def test_a_config_glob_key_matches_the_endpoint_and_only_it():
    config = config_with({"http://127.0.0.1:*": {"access-key": "k", "secret-key": "s"}})
    creds = s3.resolve_credentials(ENDPOINT, config, {})
    assert (creds.access_key, creds.secret_key) == ("k", "s")
    assert s3.resolve_credentials("http://127.0.0.2:9000", config, {}).anonymous


def test_config_credentials_can_come_from_an_aws_credentials_file(tmp_path):
    file = tmp_path / "credentials"
    file.write_text(
        "[default]\naws_access_key_id = dk\naws_secret_access_key = ds\n"
        "[ci]\naws_access_key_id = ck\naws_secret_access_key = cs\naws_session_token = ct\n"
    )
    entry = {"aws-credentials-file": str(file), "aws-profile": "ci", "aws-region": "ap-south-1"}
    creds = s3.resolve_credentials(ENDPOINT, config_with({ENDPOINT: entry}), {})
    assert (creds.access_key, creds.secret_key, creds.session_token) == ("ck", "cs", "ct")
    assert creds.region == "ap-south-1"
    entry = {"aws-credentials-file": str(file)}
    env = {"AWS_PROFILE": "nope"}
    with pytest.raises(StoreError, match=r"no profile \[nope\]"):
        s3.resolve_credentials(ENDPOINT, config_with({ENDPOINT: entry}), env)


def test_without_any_credentials_requests_go_unsigned():
    creds = s3.resolve_credentials(ENDPOINT, Config(), {})
    assert creds.anonymous and creds.region == s3.DEFAULT_REGION


def test_env_credentials_beat_the_config_on_a_server_that_checks_signatures(
    moto_server, s3_bucket, monkeypatch
):
    key, secret = moto_server.require_auth()
    config = config_with({"http://127.0.0.1:*": {"access-key": key, "secret-key": secret}})
    location = f"s3+http://{moto_server.hostport}/{s3_bucket}/p"
    with pytest.raises(StoreError, match=r"InvalidAccessKeyId.*credentials from S3_ACCESS_KEY"):
        open_store(location, config=config).has_chunk(ID_NEVER_STORED)  # the fixture's keys
    monkeypatch.delenv("S3_ACCESS_KEY")
    monkeypatch.delenv("S3_SECRET_KEY")
    store = open_store(location, config=config)  # now the config's glob entry applies
    chunk = random_chunks(1, seed=12)[0]
    store.store_chunk(chunk)
    assert store.has_chunk(chunk.id) and not store.has_chunk(ID_NEVER_STORED)


def test_a_wrong_secret_is_one_clear_error_never_a_missing_chunk(
    moto_server, s3_bucket, monkeypatch
):
    key, _ = moto_server.require_auth()
    monkeypatch.setenv("S3_ACCESS_KEY", key)
    monkeypatch.setenv("S3_SECRET_KEY", "wrong")
    location = f"s3+http://{moto_server.hostport}/{s3_bucket}/p"
    store = open_store(location)
    with pytest.raises(StoreError) as e:
        store.has_chunk(ID_NEVER_STORED)
    assert not e.value.transient
    assert str(e.value).startswith(f"cannot check {ID_NEVER_STORED.hex()[:4]}/")
    assert location in str(e.value) and "SignatureDoesNotMatch" in str(e.value)
    assert "\n" not in str(e.value)


# --- the CLI ------------------------------------------------------------------------------


def stored_ids(admin, bucket: str, prefix: str) -> set[str]:
    pages = admin.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {i["Key"].rsplit("/", 1)[1][:64] for p in pages for i in p.get("Contents", ())}


def test_make_extract_info_and_prune_through_the_cli(cli, tmp_path, blob, moto_server, s3_bucket):
    cloud_cases.assert_make_extract_info_and_prune_work(
        cli,
        tmp_path,
        blob,
        f"s3+http://{moto_server.hostport}/{s3_bucket}/store",
        lambda: stored_ids(moto_server.admin, s3_bucket, "store/"),
    )


def test_an_index_is_written_to_and_read_from_an_s3_url(
    cli, tmp_path, blob, moto_server, s3_bucket
):
    store = f"s3+http://{moto_server.hostport}/{s3_bucket}/store"
    index_url = f"s3+http://{moto_server.hostport}/{s3_bucket}/indexes/blob.caibx"
    r = cli("make", "-s", store, "-m", "4:16:64", index_url, blob)
    assert r.code == 0, r.err
    head = moto_server.admin.head_object(Bucket=s3_bucket, Key="indexes/blob.caibx")
    assert head["ContentType"] == "application/octet-stream"
    cloud_cases.assert_the_index_at_url_extracts(cli, tmp_path, blob, store, index_url)


def test_wrong_credentials_fail_the_cli_with_one_line_naming_the_store(
    cli, tmp_path, blob, moto_server, s3_bucket
):
    moto_server.require_auth()  # the environment's test/test keys are now unknown
    store = f"s3+http://{moto_server.hostport}/{s3_bucket}/store"
    r = cli("make", "-s", store, "-m", "4:16:64", tmp_path / "blob.caibx", blob)
    assert r.code == 1
    assert r.err.count("\n") == 1 and store in r.err and "InvalidAccessKeyId" in r.err
