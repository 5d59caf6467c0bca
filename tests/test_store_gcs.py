"""The GCS store on a real GCS JSON API server (gcp-storage-emulator): the contract,
failures, and the CLI verbs end to end."""

from __future__ import annotations

import json
import random

import pytest

from desync_decl.formats import index as fmt
from desync_decl.stores import gcs
from desync_decl.stores.base import ChunkMissing, StoreError
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests.store_contract import ID_NEVER_STORED, ContractEnv, StoreContract, random_chunks

pytest_plugins = ["tests.servers_cloud"]

FAST_FAILURE = StoreOptions(error_retry=1, timeout=2.0)


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
    for call in (
        lambda: store.get_chunk(ID_NEVER_STORED),
        lambda: store.has_chunk(ID_NEVER_STORED),
        lambda: store.store_chunk(random_chunks(1)[0]),
        lambda: list(store.iter_chunk_ids()),
    ):
        with pytest.raises(StoreError, match="bucket no-such-bucket does not exist") as e:
            call()
        assert not isinstance(e.value, ChunkMissing) and not e.value.transient


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
    options = StoreOptions(error_retry=3, error_retry_base_interval=0.01, timeout=2.0)
    store = open_store("gs://b/p", options)
    with pytest.raises(StoreError) as e:
        store.get_chunk(ID_NEVER_STORED)
    assert e.value.transient
    assert unavailable_server.requests == 3  # the library's own retries are off


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
def test_tls_is_verified_by_default_and_ca_cert_or_trust_insecure_let_it_through(
    cloud_env, unavailable_tls_server, monkeypatch
):
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", unavailable_tls_server.endpoint)
    with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED") as e:
        open_store("gs://b/p", FAST_FAILURE).has_chunk(ID_NEVER_STORED)
    assert not e.value.transient and unavailable_tls_server.requests == 0
    for options in (
        StoreOptions(error_retry=1, ca_cert=unavailable_tls_server.ca_cert),
        StoreOptions(error_retry=1, trust_insecure=True),
    ):
        with pytest.raises(StoreError, match="503"):  # through TLS to the server's answer
            open_store("gs://b/p", options).has_chunk(ID_NEVER_STORED)
    assert unavailable_tls_server.requests == 2


@pytest.fixture
def blob(tmp_path):
    rng = random.Random(5)
    a = rng.randbytes(150_000)
    path = tmp_path / "blob.img"
    path.write_bytes(a + rng.randbytes(200_000) + a + bytes(100_000))
    return path


def stored_ids(gcs_server, bucket: str, prefix: str) -> set[str]:
    blobs = gcs_server.client().list_blobs(bucket, prefix=prefix)
    return {b.name.rsplit("/", 1)[1][:64] for b in blobs}


def test_make_extract_info_and_prune_through_the_cli(cli, tmp_path, blob, gcs_server, gcs_bucket):
    store = f"gs://{gcs_bucket}/store"
    r = cli("make", "-s", store, "-m", "4:16:64", tmp_path / "blob.caibx", blob)
    assert r.code == 0, r.err
    index = fmt.decode((tmp_path / "blob.caibx").read_bytes())
    unique = {i.hex() for i in index.unique_ids()}
    assert stored_ids(gcs_server, gcs_bucket, "store/") == unique
    r = cli("extract", "-s", store, tmp_path / "blob.caibx", tmp_path / "out.img")
    assert r.code == 0, r.err
    assert (tmp_path / "out.img").read_bytes() == blob.read_bytes()
    info = json.loads(cli("info", "--json", "-s", store, tmp_path / "blob.caibx").out)
    assert info["in-store"] == len(unique)
    other = tmp_path / "other.img"
    other.write_bytes(random.Random(6).randbytes(100_000))
    assert cli("make", "-s", store, "-m", "4:16:64", tmp_path / "other.caibx", other).code == 0
    assert len(stored_ids(gcs_server, gcs_bucket, "store/")) > len(unique)
    r = cli("prune", "-y", "-s", store, tmp_path / "blob.caibx")
    assert r.code == 0, r.err
    assert stored_ids(gcs_server, gcs_bucket, "store/") == unique


def test_an_index_is_written_to_and_read_from_a_gs_url(cli, tmp_path, blob, gcs_server, gcs_bucket):
    store = f"gs://{gcs_bucket}/store"
    index_url = f"gs://{gcs_bucket}/indexes/blob.caibx"
    r = cli("make", "-s", store, "-m", "4:16:64", index_url, blob)
    assert r.code == 0, r.err
    stored = gcs_server.client().bucket(gcs_bucket).get_blob("indexes/blob.caibx")
    assert stored.content_type == "application/octet-stream"
    r = cli("extract", "-s", store, index_url, tmp_path / "out.img")
    assert r.code == 0, r.err
    assert (tmp_path / "out.img").read_bytes() == blob.read_bytes()
    r = cli("info", "--json", index_url.replace("blob.caibx", "nope.caibx"))
    assert r.code == 1 and "index nope.caibx not found in" in r.err
