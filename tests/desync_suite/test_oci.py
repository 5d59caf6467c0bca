"""Ports of desync's ``oci_test.go`` against the real registry the suite runs (Debian's
docker-registry, distribution 2.8), where desync had a fake one in its test.

What the fake registry let desync's tests look at (manifests, tags, blobs) is read
here from the registry's own API. Two of desync's fakes are not a registry's
behaviour and come from a relay in front of the real one instead (``Relay``,
``TcpRelay``): a first connection dropped without an answer, and tag lists in
pages of two (this registry ignores the page size a client asks for and answers
every tag at once, so a client's paging would go unexercised).

desync's ``RemoveChunk`` of a chunk that is not there reports it missing; ours
removes nothing and succeeds (removal is idempotent in every store: README,
compatibility), which these ports assert instead.
"""

from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import parse_qs, urlsplit

import pytest
import requests

from desync_decl.formats.digest import ChunkID
from desync_decl.stores import oci
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import store_contract
from tests.desync_suite.desync_keys import TEST_KEY
from tests.desync_suite.relay import Answer, Relay
from tests.servers_http import serving
from tests.servers_oci import (
    Registry,
    TcpRelay,
    fresh_repo,
    list_tags,
    push_artifact,
)
from tests.store_contract import chunk_of

# Only the credentials a test gives: none from the environment or ~/.docker.
pytestmark = pytest.mark.usefixtures("no_ambient_credentials")

opened = store_contract.opened  # the fixture: stores closed after the test
FOREIGN_TYPE = "application/vnd.example.image"  # some other kind of artifact


def open_store(location: str, opened: list, **options) -> oci.OciChunkStore:
    store = oci.open_chunk_store(location, StoreOptions(**options), Opener(config=Config()))
    opened.append(store)
    return store


def oci_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def has_blob(registry: Registry, repo: str, data: bytes) -> bool:
    answer = requests.head(f"{registry.url}/v2/{repo}/blobs/{oci_digest(data)}", timeout=10)
    return answer.status_code == 200


# --- TestOCIStoreScheme -----------------------------------------------------------------


def test_only_oci_schemes_are_registries_and_they_choose_http_or_https(
    registry, tls_registry, opened
):
    """TestOCIStoreScheme: ``https://`` is no OCI location; ``oci+http`` speaks plain
    HTTP, ``oci+https`` TLS (asked of a plain registry it fails); a trailing slash
    names the same repository."""
    host = registry.url.removeprefix("http://")
    with pytest.raises(StoreError):
        open_store(f"https://{host}/user/repo", opened)
    repo = fresh_repo()
    chunk = chunk_of(b"some chunk data")
    open_store(f"oci+http://{host}/{repo}", opened).store_chunk(chunk)
    assert open_store(f"oci+http://{host}/{repo}/", opened).has_chunk(chunk.id)
    with pytest.raises(StoreError):
        open_store(f"oci+https://{host}/{repo}", opened, error_retry=1).has_chunk(chunk.id)
    secure, cert = tls_registry
    ca = str(cert)
    over_tls = open_store(f"oci+{secure.url}/{repo}/", opened, ca_cert=ca)
    over_tls.store_chunk(chunk)
    assert list_tags_tls(secure, repo, ca) == [chunk.id.hex() + ".cacnk"]


def list_tags_tls(registry: Registry, repo: str, ca: str) -> list[str]:
    answer = requests.get(f"{registry.url}/v2/{repo}/tags/list", verify=ca, timeout=10)
    return sorted(answer.json()["tags"])


# --- round trips ------------------------------------------------------------------------


def test_a_chunk_round_trips_tagged_by_its_id_and_stored_compressed(registry, opened):
    """TestOCIStoreRoundtrip."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened)
    data = b"some chunk data"
    chunk = chunk_of(data)
    # beyond desync: a repository nothing was pushed to is an error, not a missing chunk
    # (issue 19), so the repository gets another chunk first
    store.store_chunk(chunk_of(b"another chunk"))
    assert store.has_chunk(chunk.id) is False
    with pytest.raises(ChunkMissing):
        store.get_chunk(chunk.id)
    store.store_chunk(chunk)
    assert store.has_chunk(chunk.id) is True
    assert bytes(store.get_chunk(chunk.id).plain()) == data
    assert chunk.id.hex() + ".cacnk" in list_tags(registry.url, repo)
    assert not has_blob(registry, repo, data), "the chunk blob should be compressed"
    assert has_blob(registry, repo, chunk.stored())


def test_an_encrypted_chunk_is_tagged_with_algorithm_and_key_id(registry, opened):
    """TestOCIStoreEncrypted."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened, encryption=True, encryption_key=TEST_KEY)
    chunk = chunk_of(b"some chunk data")
    store.store_chunk(chunk)
    assert bytes(store.get_chunk(chunk.id).plain()) == b"some chunk data"
    [tag] = [t for t in list_tags(registry.url, repo) if t.startswith(chunk.id.hex())]
    assert re.search(r"\.cacnk\.xchacha20-poly1305-[0-9a-f]{8}$", tag)


def test_an_uncompressed_chunk_is_its_data_as_is(registry, opened):
    """TestOCIStoreUncompressed."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened, uncompressed=True)
    data = b"some uncompressed chunk data"
    chunk = chunk_of(data)
    store.store_chunk(chunk)
    assert bytes(store.get_chunk(chunk.id).plain()) == data
    assert has_blob(registry, repo, data)


def test_a_removed_chunk_is_gone_and_removing_it_again_changes_nothing(registry, opened):
    """TestOCIStoreRemoveChunk (desync: the second removal reports the chunk missing)."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened)
    chunk = chunk_of(b"some chunk data")
    store.store_chunk(chunk)
    store.remove_chunk(chunk.id)
    assert store.has_chunk(chunk.id) is False
    store.remove_chunk(chunk.id)
    assert list_tags(registry.url, repo) == []


# --- prune ------------------------------------------------------------------------------


def test_prune_leaves_other_artifacts_and_chunks_of_other_formats(registry, opened):
    """TestOCIStorePrune."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened)
    chunks = [chunk_of(f"chunk data {i}".encode()) for i in range(3)]
    for c in chunks:
        store.store_chunk(c)
    push_artifact(registry.url, repo, "latest", b'{"schemaVersion":2}', artifact_type=FOREIGN_TYPE)
    other_format = chunk_of(b"other format chunk")  # a bare id tag: uncompressed, unencrypted
    push_artifact(registry.url, repo, other_format.id.hex(), b"x", artifact_type=FOREIGN_TYPE)
    assert store.prune({chunks[0].id}) == 2
    assert store.has_chunk(chunks[0].id)
    assert not any(store.has_chunk(c.id) for c in chunks[1:])
    tags = list_tags(registry.url, repo)
    assert "latest" in tags
    assert other_format.id.hex() in tags, "a chunk in a different storage format was pruned"


def tags_in_pages_of(size: int):
    """A ``Relay`` rewrite: tag lists cut into pages of ``size`` with a ``Link`` to the
    next (the distribution spec's paging), whatever page size the client asked for."""

    def rewrite(method: str, path: str, answer: Answer) -> Answer:
        url = urlsplit(path)
        if method != "GET" or not url.path.endswith("/tags/list") or answer.status != 200:
            return answer
        listing = json.loads(answer.body)
        query = parse_qs(url.query)
        last = query.get("last", [""])[0]
        tags = [t for t in sorted(listing.get("tags") or []) if t > last]
        page = tags[:size]
        headers = [(k, v) for k, v in answer.headers if k.lower() != "link"]
        if len(tags) > size:
            n = query.get("n", [""])[0]
            headers.append(("Link", f'<{url.path}?n={n}&last={page[-1]}>; rel="next"'))
        return Answer(200, headers, json.dumps({"name": listing["name"], "tags": page}).encode())

    return rewrite


def test_prune_asks_for_bounded_tag_pages_and_follows_them(registry, opened):
    """TestOCIStorePruneTagPagination: six chunks over tag pages of two; every listing
    asks for a bounded page (never the whole list at once)."""
    repo = fresh_repo()
    relay = Relay(registry.url.removeprefix("http://"), rewrite=tags_in_pages_of(2))
    with serving(relay):
        store = open_store(f"oci+http://{relay.hostport}/{repo}", opened)
        chunks = [chunk_of(f"paginated chunk data {i}".encode()) for i in range(6)]
        for c in chunks:
            store.store_chunk(c)
        assert store.prune({chunks[0].id}) == 5
        listings = [p for p in relay.paths("GET") if "/tags/list" in p]
        assert len(listings) > 1, "the tag listing was not paginated"
        for path in listings:
            assert parse_qs(urlsplit(path).query)["n"] == [str(oci.TAG_PAGE)], path
        assert store.has_chunk(chunks[0].id)
        assert not any(store.has_chunk(c.id) for c in chunks[1:])


def test_a_foreign_artifact_under_a_chunk_shaped_tag_is_never_a_chunk(registry, opened):
    """TestOCIStorePruneForeignArtifact: with no extension (uncompressed, unencrypted)
    any 64-hex tag looks like a chunk id; reads, removal and prune tell them apart by
    the artifact type and leave the foreign one alone."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened, uncompressed=True)
    keep, drop = chunk_of(b"chunk to keep"), chunk_of(b"chunk to prune")
    store.store_chunk(keep)
    store.store_chunk(drop)
    hex_tag = "0123" * 16
    foreign_id = ChunkID(bytes.fromhex(hex_tag))
    push_artifact(registry.url, repo, hex_tag, b'{"schemaVersion":2}', artifact_type=FOREIGN_TYPE)
    with pytest.raises(ChunkMissing):
        store.get_chunk(foreign_id)
    store.remove_chunk(foreign_id)
    assert hex_tag in list_tags(registry.url, repo)
    assert store.prune({keep.id}) == 1
    assert store.has_chunk(keep.id) and not store.has_chunk(drop.id)
    assert hex_tag in list_tags(registry.url, repo), "a foreign artifact was pruned"


# --- broken registries ------------------------------------------------------------------


def test_a_chunk_whose_blob_was_replaced_is_invalid(registry, opened):
    """TestOCIStoreInvalidChunk: the chunk's tag now names a blob of the same size
    with other bytes."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened, uncompressed=True)
    data = b"some chunk data"
    chunk = chunk_of(data)
    store.store_chunk(chunk)
    push_artifact(registry.url, repo, chunk.id.hex(), data.upper(), artifact_type=oci.ARTIFACT_TYPE)
    with pytest.raises(ChunkInvalid):
        store.get_chunk(chunk.id)


@pytest.mark.parametrize("size", [-1, 1 << 60], ids=["negative", "huge"])
def test_a_manifest_naming_an_absurd_blob_size_is_an_error_not_an_allocation(
    registry, opened, size
):
    """TestOCIStoreInvalidBlobSize: the registry takes a manifest whose layer size is
    negative or absurd; reading the chunk fails with an error about the size before
    the blob is asked for."""
    repo = fresh_repo()
    store = open_store(registry.location(repo), opened, uncompressed=True, error_retry=1)
    chunk = chunk_of(b"some chunk data")
    store.store_chunk(chunk)
    tag = chunk.id.hex()
    url = f"{registry.url}/v2/{repo}/manifests/{tag}"
    manifest = requests.get(url, headers={"Accept": oci.MANIFEST_TYPE}, timeout=10).json()
    manifest["layers"][0]["size"] = size
    put = requests.put(
        url, data=json.dumps(manifest), headers={"Content-Type": oci.MANIFEST_TYPE}, timeout=10
    )
    assert put.status_code == 201, put.text
    with pytest.raises(StoreError, match=r"size|bytes") as failed:
        store.get_chunk(chunk.id)
    assert not isinstance(failed.value, ChunkMissing | ChunkInvalid)


def test_a_dropped_connection_is_retried(registry, opened):
    """TestOCIStoreRetry: the first connection is closed without an answer."""
    relay = TcpRelay(int(registry.url.rsplit(":", 1)[1]), drop_first=1)
    try:
        location = f"oci+http://127.0.0.1:{relay.port}/{fresh_repo()}"
        store = open_store(location, opened, error_retry=2, error_retry_base_interval=0.001)
        assert store.has_chunk(chunk_of(b"some chunk data").id) is False
        assert relay.drop_first == 0  # the first connection was dropped
    finally:
        relay.stop()
