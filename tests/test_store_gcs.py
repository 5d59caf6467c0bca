"""The GCS store on a real GCS JSON API server (gcp-storage-emulator): the contract,
failures, and the CLI verbs end to end."""

from __future__ import annotations

import pytest

from desync_decl.stores import gcs
from desync_decl.stores.base import StoreError
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import cloud_cases
from tests.cloud_cases import FAST_FAILURE
from tests.store_contract import ID_NEVER_STORED, ContractEnv, StoreContract, random_chunks

pytest_plugins = ["tests.servers_cloud"]
blob = cloud_cases.blob  # the fixture


def open_store(location: str, options: StoreOptions | None = None):
    return gcs.open_chunk_store(location, options or StoreOptions(), Opener())


def empty_and_delete(bucket) -> None:
    for blob in list(bucket.list_blobs()):
        blob.delete()
    bucket.delete()


class TestGCSStore(StoreContract):
    @pytest.fixture
    def env(self, gcs_server, gcs_bucket) -> ContractEnv:
        location = f"gs://{gcs_bucket}/store"
        bucket = gcs_server.client().bucket(gcs_bucket)

        def put_raw(key: str, data: bytes) -> None:
            bucket.blob(f"store/{key}").upload_from_string(data)

        def break_store() -> None:  # the bucket is gone: a failure, never "missing"
            empty_and_delete(bucket)

        return ContractEnv(
            location,
            lambda options: gcs.open_chunk_store(location, options, Opener()),
            put_raw,
            break_store,
        )


def test_a_location_names_bucket_and_prefix():
    assert gcs.parse_location("gs://bucket/a/b/") == ("bucket", "a/b/")
    assert gcs.parse_location("gs://bucket") == ("bucket", "")
    with pytest.raises(StoreError):
        gcs.parse_location("gs:///nobucket")


def test_chunks_are_stored_as_zstd_objects_under_the_prefix(gcs_server, gcs_bucket):
    store = open_store(f"gs://{gcs_bucket}/p")
    chunk = random_chunks(1, seed=21)[0]
    store.store_chunk(chunk)
    bucket = gcs_server.client().bucket(gcs_bucket)
    h = chunk.id.hex()
    assert bucket.get_blob(f"p/{h[:4]}/{h}.cacnk").content_type == "application/zstd"
    assert str(store) == f"gs://{gcs_bucket}/p"


def test_a_missing_bucket_is_an_error_not_a_missing_chunk(gcs_bucket):
    store = open_store("gs://no-such-bucket/p", FAST_FAILURE)
    cloud_cases.assert_every_call_fails_on_the_missing_bucket(store, "no-such-bucket")


def test_without_google_credentials_the_store_fails_to_open_with_one_clear_line(cloud_env):
    with pytest.raises(StoreError, match=r"^gs://b/p: no usable Google credentials: ") as e:
        open_store("gs://b/p")
    assert "\n" not in str(e.value)


def test_a_server_that_is_down_is_a_transient_store_error(cloud_env, closed_port, monkeypatch):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{closed_port}")
    store = open_store("gs://b/p", FAST_FAILURE)
    with pytest.raises(StoreError) as e:
        store.has_chunk(ID_NEVER_STORED)
    assert e.value.transient


def test_5xx_answers_are_retried_by_us_exactly_error_retry_times(
    cloud_env, unavailable_server, monkeypatch
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", unavailable_server.endpoint)
    cloud_cases.assert_5xx_is_retried_exactly_error_retry_times(
        lambda options: open_store("gs://b/p", options), unavailable_server
    )


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default_and_ca_cert_or_trust_insecure_let_it_through(
    cloud_env, unavailable_tls_server, monkeypatch
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", unavailable_tls_server.endpoint)
    cloud_cases.assert_tls_is_verified_unless_ca_cert_or_trust_insecure(
        lambda options: open_store("gs://b/p", options),
        unavailable_tls_server,
        "CERTIFICATE_VERIFY_FAILED",
    )


def stored_ids(gcs_server, bucket: str, prefix: str) -> set[str]:
    blobs = gcs_server.client().list_blobs(bucket, prefix=prefix)
    return {b.name.rsplit("/", 1)[1][:64] for b in blobs}


def test_make_extract_info_and_prune_through_the_cli(cli, tmp_path, blob, gcs_server, gcs_bucket):
    cloud_cases.assert_make_extract_info_and_prune_work(
        cli,
        tmp_path,
        blob,
        f"gs://{gcs_bucket}/store",
        lambda: stored_ids(gcs_server, gcs_bucket, "store/"),
    )


def test_an_index_is_written_to_and_read_from_a_gs_url(cli, tmp_path, blob, gcs_server, gcs_bucket):
    store = f"gs://{gcs_bucket}/store"
    index_url = f"gs://{gcs_bucket}/indexes/blob.caibx"
    r = cli("make", "-s", store, "-m", "4:16:64", index_url, blob)
    assert r.code == 0, r.err
    stored = gcs_server.client().bucket(gcs_bucket).get_blob("indexes/blob.caibx")
    assert stored.content_type == "application/octet-stream"
    cloud_cases.assert_the_index_at_url_extracts(cli, tmp_path, blob, store, index_url)
