"""Ports of desync's ``s3_test.go`` against the real S3 API server the suite runs (moto):
desync's ``blob1.store`` chunk is put in a bucket, and our S3 store reads it.

desync's test server broke the first object read on purpose: half the body then a
TCP reset, or a complete answer whose body (and Content-Length) is half the object.
moto cannot be made to do either, so the faults come from a ``Relay`` between the
store and moto that passes everything through except the first object read, which
it breaks that way; it also counts the requests.

desync's S3 ``ErrorRetry: 1`` is one retry (two reads); ours counts attempts in
every store (README, compatibility), so those cases use ``error_retry=2``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest, parse_id
from desync_decl.stores import s3
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests.desync_suite.relay import Relay
from tests.servers_http import serving

pytest_plugins = ["tests.servers_cloud"]

CHUNK = "dda036db05bc2b99b6b9303d28496000c34b246457ae4bbf00fe625b5cabd7cd"
ID = parse_id(CHUNK)
FAST = 0.001  # seconds: the retries' base interval


@pytest.fixture
def stored(moto_server, s3_bucket, cmd_data: Path) -> str:
    """desync's chunk ``dda036db…`` of blob1.store in a fresh bucket, under ``blob1.store/``."""
    key = f"blob1.store/{CHUNK[:4]}/{CHUNK}.cacnk"
    data = (cmd_data / key).read_bytes()
    moto_server.admin.put_object(Bucket=s3_bucket, Key=key, Body=data)
    return s3_bucket


def get_through(proxy: Relay, bucket: str, options: StoreOptions) -> Chunk:
    """Chunk ``dda036db…`` read by our S3 store through ``proxy`` (served meanwhile)."""
    with serving(proxy):
        location = f"s3+http://{proxy.hostport}/{bucket}/blob1.store/"
        store = s3.open_chunk_store(location, options, Opener(config=Config()))
        try:
            return store.get_chunk(ID)
        finally:
            store.close()


def attempts(n: int) -> StoreOptions:
    return StoreOptions(error_retry=n, error_retry_base_interval=FAST)


def test_a_chunk_is_read_from_a_well_behaved_server(moto_server, stored):
    """TestS3StoreGetChunk/no_error."""
    chunk = get_through(Relay(moto_server.hostport), stored, attempts(1))
    assert chunk.id == ID
    assert Digest.SHA512_256.hash(chunk.plain()) == ID


def test_a_connection_reset_mid_body_fails_without_retries(moto_server, stored):
    """TestS3StoreGetChunk/fail: a network failure (transient), never missing or invalid."""
    proxy = Relay(moto_server.hostport, breaks="reset", faults=1)
    with pytest.raises(StoreError) as failed:
        get_through(proxy, stored, attempts(1))
    assert failed.value.transient
    assert len(proxy.requests) == 1


def test_a_connection_reset_mid_body_is_retried(moto_server, stored):
    """TestS3StoreGetChunk/recover."""
    proxy = Relay(moto_server.hostport, breaks="reset", faults=1)
    assert get_through(proxy, stored, attempts(2)).id == ID
    assert len(proxy.requests) == 2


def test_a_short_body_without_retries_is_invalid_naming_the_decode_failure(moto_server, stored):
    """TestS3StoreGetChunk/corrupt_body_fail: ChunkInvalid that says why the data does
    not decode, not a hash mismatch against an id of zeros (desync #334)."""
    proxy = Relay(moto_server.hostport, breaks="truncate", faults=1)
    with pytest.raises(ChunkInvalid) as invalid:
        get_through(proxy, stored, attempts(1))
    assert invalid.value.id == ID
    assert "hashes to" not in invalid.value.why and "0" * 64 not in invalid.value.why
    assert invalid.value.why  # the decoder's reason
    assert len(proxy.requests) == 1


def test_a_short_body_is_read_again(moto_server, stored):
    """TestS3StoreGetChunk/corrupt_body_recover: an invalid read is made again under
    error-retry, and the second, whole answer is the chunk."""
    proxy = Relay(moto_server.hostport, breaks="truncate", faults=1)
    assert get_through(proxy, stored, attempts(2)).id == ID
    assert len(proxy.requests) == 2


def test_a_missing_chunk_is_missing_after_one_request(moto_server, s3_bucket):
    """TestS3StoreGetMissingChunk: a missing chunk is normal behind a router or a
    cache, so it is never retried. Beyond desync: the store's first miss also lists
    one page of the store, to tell a chunk stored under another encryption key from a
    missing one (issue 19); that is the only other request."""
    proxy = Relay(moto_server.hostport)
    with pytest.raises(ChunkMissing):
        get_through(proxy, s3_bucket, attempts(3))
    chunk_reads = [path for path in proxy.paths("GET") if path.endswith(".cacnk")]
    assert len(chunk_reads) == 1
    assert [path for path in proxy.paths("GET") if "list-type=2" in path] == [
        p for p in proxy.paths("GET") if p not in chunk_reads
    ]
    assert len(proxy.requests) == 2


def test_a_chunk_invalid_on_every_read_is_invalid_after_the_last_attempt(moto_server, stored):
    """How far the re-reading goes: ``error_retry`` reads in all, then ChunkInvalid
    (what a cache repairs, a router does not hide)."""
    proxy = Relay(moto_server.hostport, breaks="truncate", faults=10)
    with pytest.raises(ChunkInvalid):
        get_through(proxy, stored, attempts(3))
    assert len(proxy.requests) == 3
