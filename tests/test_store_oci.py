"""The OCI registry store on a real registry (Debian's docker-registry, distribution 2.8).

The shared store contract runs through a TCP relay the test can cut; then what is
particular to OCI: the artifact layout, foreign artifacts under chunk tags, prune
across tag pages, basic and bearer auth, and the CLI round trip.
"""

from __future__ import annotations

import base64
import json
import socket
import time

import pytest
import requests
import zstandard

from desync_decl.stores import oci
from desync_decl.stores.base import ChunkMissing, StoreError
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests.servers_oci import (
    TcpRelay,
    TokenServer,
    fresh_repo,
    list_tags,
    push_artifact,
    start_registry_or_skip,
)
from tests.store_contract import ContractEnv, StoreContract, random_chunks

# Only the credentials a test gives: none from the environment or ~/.docker.
pytestmark = pytest.mark.usefixtures("no_ambient_credentials")

USER, PASSWORD = "alice", "wonder-land"


@pytest.fixture(scope="session")
def basic_registry(tmp_path_factory):
    r = start_registry_or_skip(tmp_path_factory, "oci-basic", htpasswd={USER: PASSWORD})
    yield r
    r.stop()


@pytest.fixture(scope="session")
def token_registry(tmp_path_factory):
    tokens = TokenServer(tmp_path_factory.mktemp("oci-tokens"), USER, PASSWORD)
    r = start_registry_or_skip(tmp_path_factory, "oci-token", token=tokens)
    yield r, tokens
    r.stop()
    tokens.stop()


def open_store(location: str, options: StoreOptions | None = None, config: Config | None = None):
    opener = Opener(config=config or Config())
    return oci.open_chunk_store(location, options or StoreOptions(), opener)


class TestOciStore(StoreContract):
    @pytest.fixture
    def env(self, registry):
        relay = TcpRelay(int(registry.url.rsplit(":", 1)[1]))
        repo = fresh_repo()
        location = f"oci+http://127.0.0.1:{relay.port}/{repo}"
        # the repository exists, as the local contract's directory does (an absent one
        # is not an empty store: test_oci_not_found.py)
        push_artifact(registry.url, repo, "latest", b"another artifact", artifact_type="x/y")

        def put_raw(key: str, data: bytes) -> None:  # "xxxx/<tag>": the artifact under <tag>
            push_artifact(registry.url, repo, key.rpartition("/")[2], data)

        yield ContractEnv(
            location, lambda options: open_store(location, options), put_raw, relay.stop
        )
        relay.stop()


def test_a_chunk_is_an_artifact_tagged_with_its_id_holding_the_stored_bytes(registry):
    repo = fresh_repo()
    store = open_store(registry.location(repo))
    chunk = random_chunks(1, seed=10)[0]
    store.store_chunk(chunk)
    tag = chunk.id.hex() + ".cacnk"
    assert list_tags(registry.url, repo) == [tag]
    manifest = requests.get(
        f"{registry.url}/v2/{repo}/manifests/{tag}",
        headers={"Accept": oci.MANIFEST_TYPE},
        timeout=10,
    ).json()
    assert manifest["mediaType"] == oci.MANIFEST_TYPE
    assert manifest["artifactType"] == "application/vnd.desync.chunk.v1"
    assert manifest["config"] == {
        "mediaType": "application/vnd.oci.empty.v1+json",
        "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
        "size": 2,
    }
    assert manifest["annotations"] == {"org.opencontainers.image.title": tag}
    [layer] = manifest["layers"]
    assert layer["mediaType"] == "application/octet-stream"
    blob = requests.get(f"{registry.url}/v2/{repo}/blobs/{layer['digest']}", timeout=10).content
    assert len(blob) == layer["size"]
    assert zstandard.ZstdDecompressor().decompressobj().decompress(blob) == chunk.plain()


def test_another_artifact_type_under_a_chunk_tag_reads_as_missing(registry):
    repo = fresh_repo()
    store = open_store(registry.location(repo), StoreOptions(uncompressed=True))
    chunk = random_chunks(1, seed=11)[0]
    push_artifact(
        registry.url, repo, chunk.id.hex(), chunk.plain(), artifact_type="application/x-other"
    )
    with pytest.raises(ChunkMissing):
        store.get_chunk(chunk.id)
    # has_chunk is a HEAD, which cannot see an artifact's type: a tag spelt as desync
    # names chunks counts as one there (the price of one bodiless request per check)


def test_prune_follows_tag_pages_and_deletes_only_desync_artifacts(registry, monkeypatch):
    monkeypatch.setattr(oci, "TAG_PAGE", 2)  # five chunks and two foreign tags: four pages
    repo = fresh_repo()
    store = open_store(registry.location(repo))
    chunks = random_chunks(6, seed=12)
    for c in chunks[:5]:
        store.store_chunk(c)
    foreign = chunks[5].id.hex() + ".cacnk"
    push_artifact(registry.url, repo, foreign, b"not ours", artifact_type="application/x-other")
    push_artifact(registry.url, repo, "latest", b"an image, say")
    assert store.prune({chunks[0].id, chunks[2].id}) == 3
    kept = sorted(c.id.hex() + ".cacnk" for c in (chunks[0], chunks[2]))
    assert list_tags(registry.url, repo) == sorted([*kept, foreign, "latest"])
    assert all(store.has_chunk(c.id) for c in (chunks[0], chunks[2]))


def test_prune_of_a_repository_that_does_not_exist_names_it_and_deletes_nothing(registry):
    with pytest.raises(StoreError, match="has no repository"):  # a typo, most likely
        open_store(registry.location(fresh_repo())).prune(set())
    writer = Opener(config=Config()).chunk_store(registry.location(fresh_repo()), create=True)
    assert writer.prune(set()) == 0  # one that writing would create: empty


def test_dropped_connections_are_retried_with_backoff(registry):
    relay = TcpRelay(int(registry.url.rsplit(":", 1)[1]), drop_first=2)
    location = f"oci+http://127.0.0.1:{relay.port}/{fresh_repo()}"
    store = open_store(location, StoreOptions(error_retry=3, error_retry_base_interval=0.1))
    started = time.monotonic()
    assert store.has_chunk(random_chunks(1, seed=18)[0].id) is False  # third attempt answers
    assert time.monotonic() - started >= 0.3  # waited 1 x 0.1 s, then 2 x 0.1 s
    relay.stop()
    with pytest.raises(StoreError) as failed:
        store.has_chunk(random_chunks(1, seed=18)[0].id)
    assert failed.value.transient


def test_a_registry_that_does_not_answer_times_out(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as silent:  # accepts, never answers
        location = f"oci+http://127.0.0.1:{silent.getsockname()[1]}/test/slow"
        store = open_store(location, StoreOptions(timeout=0.3, error_retry=1))
        started = time.monotonic()
        with pytest.raises(StoreError, match="timed out"):
            store.has_chunk(random_chunks(1, seed=19)[0].id)
        assert time.monotonic() - started < 2


class TestTls:
    def test_a_registry_certificate_is_verified_against_ca_cert(self, tls_registry):
        registry, cert = tls_registry
        round_trip(open_store(registry.location(fresh_repo()), StoreOptions(ca_cert=str(cert))))

    def test_an_unknown_certificate_fails_at_once_not_after_retries(self, tls_registry):
        registry, _ = tls_registry
        store = open_store(registry.location(fresh_repo()), StoreOptions(error_retry=5))
        started = time.monotonic()
        with pytest.raises(StoreError, match="certificate") as failed:
            store.has_chunk(random_chunks(1, seed=20)[0].id)
        assert not failed.value.transient and time.monotonic() - started < 0.5

    def test_trust_insecure_skips_verification(self, tls_registry):
        registry, _ = tls_registry
        round_trip(open_store(registry.location(fresh_repo()), StoreOptions(trust_insecure=True)))


def test_upper_case_repositories_are_refused_with_the_reason(registry):
    with pytest.raises(StoreError, match="lower case"):
        open_store(registry.location("Test/Chunks"))


class TestBasicAuth:
    def test_without_credentials_the_store_fails_it_does_not_lack_the_chunk(self, basic_registry):
        store = open_store(basic_registry.location(fresh_repo()), StoreOptions(error_retry=3))
        chunk = random_chunks(1, seed=13)[0]
        started = time.monotonic()
        with pytest.raises(StoreError, match=r"401.*authentication required") as failed:
            store.get_chunk(chunk.id)
        assert not failed.value.transient and time.monotonic() - started < 0.5  # no retries
        with pytest.raises(StoreError, match="401"):
            store.has_chunk(chunk.id)
        with pytest.raises(StoreError, match="401"):
            store.store_chunk(chunk)

    def test_a_wrong_password_is_an_authentication_failure(self, basic_registry, monkeypatch):
        monkeypatch.setenv("DESYNC_OCI_USERNAME", USER)
        monkeypatch.setenv("DESYNC_OCI_PASSWORD", "not-it")
        store = open_store(basic_registry.location(fresh_repo()))
        with pytest.raises(StoreError, match=r"401.*authentication failed"):
            store.has_chunk(random_chunks(1, seed=14)[0].id)

    def test_credentials_from_the_environment_work(self, basic_registry, monkeypatch):
        monkeypatch.setenv("DESYNC_OCI_USERNAME", USER)
        monkeypatch.setenv("DESYNC_OCI_PASSWORD", PASSWORD)
        round_trip(open_store(basic_registry.location(fresh_repo())))

    def test_credentials_from_the_config_file_work_by_glob(self, basic_registry):
        creds = {basic_registry.location("test/*"): {"username": USER, "secret": PASSWORD}}
        config = Config(None, {"oci-credentials": creds})
        round_trip(open_store(basic_registry.location(fresh_repo()), config=config))

    def test_credentials_from_dockers_config_work(self, basic_registry, monkeypatch, tmp_path):
        host = basic_registry.url.removeprefix("http://")
        docker = tmp_path / "docker"
        docker.mkdir()
        entry = {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}
        (docker / "config.json").write_text(json.dumps({"auths": {host: entry}}))
        monkeypatch.setenv("DOCKER_CONFIG", str(docker))
        round_trip(open_store(basic_registry.location(fresh_repo())))

    def test_a_password_without_a_user_name_is_an_error(self, basic_registry, monkeypatch):
        monkeypatch.setenv("DESYNC_OCI_PASSWORD", PASSWORD)
        with pytest.raises(StoreError, match="DESYNC_OCI_USERNAME"):
            open_store(basic_registry.location(fresh_repo()))


def test_bearer_tokens_are_fetched_from_the_realm_for_each_action(token_registry, monkeypatch):
    registry, tokens = token_registry
    monkeypatch.setenv("DESYNC_OCI_USERNAME", USER)
    monkeypatch.setenv("DESYNC_OCI_PASSWORD", PASSWORD)
    repo = fresh_repo()
    store = open_store(registry.location(repo))
    round_trip(store)
    assert store.prune(set()) == 1
    scopes = {q.split("scope=")[1] for q in tokens.requests}
    assert {f"repository%3A{repo.replace('/', '%2F')}%3A{a}" for a in ("pull", "delete")} <= scopes


def test_bearer_tokens_refused_by_the_realm_fail_the_store(token_registry):
    registry, _ = token_registry
    store = open_store(registry.location(fresh_repo()))
    with pytest.raises(StoreError, match=r"token from .*401"):
        store.has_chunk(random_chunks(1, seed=15)[0].id)


def round_trip(store) -> None:
    chunk = random_chunks(1, seed=16)[0]
    assert store.has_chunk(chunk.id) is False
    store.store_chunk(chunk)
    assert store.has_chunk(chunk.id)
    assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())


def test_make_extract_and_prune_through_the_registry(registry, cli, tmp_path):
    blob = tmp_path / "blob.bin"
    blob.write_bytes(random_chunks(1, seed=17)[0].plain() * 3 + bytes(range(256)) * 900)
    store = f"{registry.url.replace('http://', 'oci+http://')}/test/chunks{time.time_ns()}"
    index, out = tmp_path / "blob.caibx", tmp_path / "out.bin"
    made = cli("make", "-s", store, "-m", "1K:4K:16K", index, blob)
    assert made.code == 0, made.err
    extracted = cli("extract", "-s", store, index, out)
    assert extracted.code == 0, extracted.err
    assert out.read_bytes() == blob.read_bytes()
    # a registry reports no chunk ages: prune needs --min-age 0 (refused otherwise)
    refused = cli("prune", "-y", "-s", store, index)
    assert refused.code == 1 and "reports no modification time" in refused.err
    pruned = cli("prune", "-y", "--min-age", "0", "-s", store, index)
    assert pruned.code == 0, pruned.err
    assert cli("extract", "-s", store, index, tmp_path / "again.bin").code == 0
