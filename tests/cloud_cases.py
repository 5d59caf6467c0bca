"""What the S3 and GCS store tests share: the same failures and CLI round trips,
checked the same way for a store each backend's module opens its own way.

Each check takes what differs (how to open the store, how to list what the
bucket holds, what TLS refusal its client library reports) and asserts the rest.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from desync_decl.formats import index as fmt
from desync_decl.stores.base import ChunkMissing, StoreError
from desync_decl.stores.options import StoreOptions
from tests.store_contract import ID_NEVER_STORED, random_chunks

FAST_FAILURE = StoreOptions(error_retry=1, timeout=2.0)


@pytest.fixture
def blob(tmp_path):
    rng = random.Random(5)
    a = rng.randbytes(150_000)
    path = tmp_path / "blob.img"
    path.write_bytes(a + rng.randbytes(200_000) + a + bytes(100_000))
    return path


def assert_every_call_fails_on_the_missing_bucket(store: Any, bucket: str) -> None:
    """Each call on a store whose bucket does not exist is a permanent error naming the
    bucket, never a missing chunk."""
    for call in (
        lambda: store.get_chunk(ID_NEVER_STORED),
        lambda: store.has_chunk(ID_NEVER_STORED),
        lambda: store.store_chunk(random_chunks(1)[0]),
        lambda: list(store.iter_chunk_ids()),
    ):
        with pytest.raises(StoreError, match=re.escape(f"bucket {bucket} does not exist")) as e:
            call()
        assert not isinstance(e.value, ChunkMissing) and not e.value.transient


def assert_5xx_is_retried_exactly_error_retry_times(
    open_store: Callable[[StoreOptions], Any], unavailable_server: Any
) -> None:
    options = StoreOptions(error_retry=3, error_retry_base_interval=0.01, timeout=2.0)
    store = open_store(options)
    with pytest.raises(StoreError) as e:
        store.get_chunk(ID_NEVER_STORED)
    assert e.value.transient
    assert unavailable_server.requests == 3  # the client library's own retries are off


def assert_tls_is_verified_unless_ca_cert_or_trust_insecure(
    open_store: Callable[[StoreOptions], Any], unavailable_tls_server: Any, refusal: str
) -> None:
    """Without options the server's certificate is refused (``refusal``: how the client
    library says so) before any request; ``ca_cert`` or ``trust_insecure`` get through
    to the server's 503."""
    with pytest.raises(StoreError, match=refusal) as e:
        open_store(FAST_FAILURE).has_chunk(ID_NEVER_STORED)
    assert not e.value.transient and unavailable_tls_server.requests == 0
    for options in (
        StoreOptions(error_retry=1, ca_cert=unavailable_tls_server.ca_cert),
        StoreOptions(error_retry=1, trust_insecure=True),
    ):
        with pytest.raises(StoreError, match="503"):  # through TLS to the server's answer
            open_store(options).has_chunk(ID_NEVER_STORED)
    assert unavailable_tls_server.requests == 2


def assert_make_extract_info_and_prune_work(
    cli, tmp_path: Path, blob: Path, store: str, stored_ids: Callable[[], set[str]]
) -> None:
    """``make`` stores exactly the index's chunks, ``extract`` gives the blob back, ``info``
    counts them in the store, ``prune`` removes another file's chunks only, ``verify``
    reads the rest back and ``chop`` stores a file's chunks again."""
    r = cli("make", "-s", store, "-m", "4:16:64", tmp_path / "blob.caibx", blob)
    assert r.code == 0, r.err
    index = fmt.decode((tmp_path / "blob.caibx").read_bytes())
    unique = {i.hex() for i in index.unique_ids()}
    assert stored_ids() == unique
    r = cli("extract", "-s", store, tmp_path / "blob.caibx", tmp_path / "out.img")
    assert r.code == 0, r.err
    assert (tmp_path / "out.img").read_bytes() == blob.read_bytes()
    info = json.loads(cli("info", "--json", "-s", store, tmp_path / "blob.caibx").out)
    assert info["in-store"] == len(unique)
    other = tmp_path / "other.img"
    other.write_bytes(random.Random(6).randbytes(100_000))
    assert cli("make", "-s", store, "-m", "4:16:64", tmp_path / "other.caibx", other).code == 0
    assert len(stored_ids()) > len(unique)
    # the other file's chunks were just written: without a minimum age (they cannot be
    # backdated in a cloud store; tests/test_prune_race.py covers the minimum age)
    r = cli("prune", "-y", "--min-age", "0", "-s", store, tmp_path / "blob.caibx")
    assert r.code == 0, r.err
    assert stored_ids() == unique
    r = cli("verify", "-s", store)
    assert r.code == 0, r.err  # every remaining chunk read back and hashed
    assert cli("chop", "-s", store, tmp_path / "other.caibx", other).code == 0
    assert len(stored_ids()) > len(unique)  # chop stored the other file's chunks again


def assert_the_index_at_url_extracts(
    cli, tmp_path: Path, blob: Path, store: str, index_url: str
) -> None:
    """``extract`` reads the index from its URL; another name there is not found."""
    r = cli("extract", "-s", store, index_url, tmp_path / "out.img")
    assert r.code == 0, r.err
    assert (tmp_path / "out.img").read_bytes() == blob.read_bytes()
    r = cli("info", "--json", index_url.replace("blob.caibx", "nope.caibx"))
    assert r.code == 1 and "index nope.caibx not found in" in r.err
