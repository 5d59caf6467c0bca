"""What a registry is asked: every request counted at a relay in front of a real
registry (Debian's docker-registry), each recorded before the registry sees it.

An existence check is one HEAD; a run asks the registry once about each chunk
(the plan's answers serve its apply: a fetch is one manifest GET and one blob GET,
an upload one HEAD and its push); ``plan --verify`` keeps what it fetched in a
declared cache, so the apply after it fetches nothing.
"""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from tests.servers_oci import TcpRelay, fresh_repo, list_tags, push_artifact
from tests.store_contract import random_chunks
from tests.test_reconcile_kinds import SIZES, apply, blob, index_of, manifest, plan, write

pytestmark = pytest.mark.usefixtures("no_ambient_credentials")


@pytest.fixture
def relay(registry):
    r = TcpRelay(int(registry.url.rsplit(":", 1)[1]))
    yield r
    r.stop()


def at(relay: TcpRelay, repo: str) -> str:
    return f"oci+http://127.0.0.1:{relay.port}/{repo}"


def kinds(requests: list[tuple[str, str]]) -> dict[str, int]:
    """Requests by method and what they ask for: ``GET manifest``, ``HEAD blob``,
    ``POST upload``, ``GET tags``."""
    out: collections.Counter[str] = collections.Counter()
    for method, path in requests:
        what = path.split("/")[-2] if "/blobs/uploads" not in path else "uploads"
        out[f"{method} {what}"] += 1
    return dict(out)


def test_an_existence_check_is_one_head_of_the_manifest(registry, relay):
    repo = fresh_repo()
    store = Opener(config=Config()).chunk_store(at(relay, repo), create=True)
    chunk = random_chunks(1, seed=30)[0]
    assert store.has_chunk(chunk.id) is False
    tag = chunk.id.hex() + ".cacnk"
    assert relay.requests == [("HEAD", f"/v2/{repo}/manifests/{tag}")]
    store.store_chunk(chunk)
    relay.requests.clear()
    assert Opener(config=Config()).chunk_store(at(relay, repo)).has_chunk(chunk.id) is True
    assert relay.requests == [("HEAD", f"/v2/{repo}/manifests/{tag}")]


def published(cli, registry, tmp_path: Path, seed: int) -> tuple[str, Path, int]:
    """A file cut into a fresh repository (straight to the registry, not counted):
    the repository, the index, its distinct chunks."""
    repo = fresh_repo()
    source = write(tmp_path / f"src{seed}.img", blob(seed, 300_000))
    index = tmp_path / f"v{seed}.caibx"
    done = cli("make", "-m", SIZES.replace("K", "k"), "-s", registry.location(repo), index, source)
    assert done.code == 0, done.err
    return repo, index, len(index_of(index).unique_ids())


def test_an_apply_fetches_each_chunk_with_one_manifest_get_and_one_blob_get(
    cli, registry, relay, tmp_path
):
    repo, index, n = published(cli, registry, tmp_path, 31)
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{at(relay, repo)}"}}}}
        tasks:
        - {{name: ex, extract: {{index: {index}, path: out.img, stores: [r]}}}}
        """,
    )
    results = apply(m, tmp_path / "state")
    assert [r.status.value for r in results] == ["changed"]
    assert (tmp_path / "out.img").read_bytes() == (tmp_path / "src31.img").read_bytes()
    # the plan's manifest GET (its stored size, its blob) serves the apply: no HEAD, no
    # second manifest GET, no tag list (the repository was found)
    assert kinds(relay.requests) == {"GET manifests": n, "GET blobs": n}


def test_a_plan_counts_stored_bytes_from_the_manifests(cli, registry, relay, tmp_path):
    repo, index, n = published(cli, registry, tmp_path, 32)
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{at(relay, repo)}"}}}}
        tasks:
        - {{name: ex, extract: {{index: {index}, path: out.img, stores: [r]}}}}
        """,
    )
    [entry] = plan(m, tmp_path / "state").entries
    [fetched] = entry.action.travel.stores
    assert fetched.chunks == n and not fetched.stored_estimated
    # random data does not compress: zstd's frames make each stored chunk a bit bigger
    assert fetched.bytes < fetched.stored_bytes < fetched.bytes + 64 * n
    assert kinds(relay.requests) == {"GET manifests": n}


def test_a_publish_asks_once_per_chunk_and_pushes_each_once(registry, relay, tmp_path):
    repo = fresh_repo()
    write(tmp_path / "app.img", blob(33, 300_000))
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{at(relay, repo)}"}}}}
        tasks:
        - {{name: mk, make: {{source: app.img, index: app.caibx, store: r}}}}
        """,
    )
    results = apply(m, tmp_path / "state")
    assert [r.status.value for r in results] == ["changed"]
    n = len(index_of(tmp_path / "app.caibx").unique_ids())
    assert len(list_tags(registry.url, repo)) == n
    # per chunk: the plan's HEAD (apply's upload trusts it), then the push: POST, PUT
    # of the blob, PUT of its manifest; once per store: HEAD and push of the config blob
    # (and at most one page of tags: which keys the store's chunks are under)
    asked = kinds(relay.requests)
    assert asked.pop("GET tags", 0) <= 1
    assert asked == {
        "HEAD manifests": n,
        "HEAD blobs": 1,
        "POST uploads": n + 1,
        "PUT uploads": n + 1,
        "PUT manifests": n,
    }
    relay.requests.clear()
    assert [r.status.value for r in apply(m, tmp_path / "state")] == ["ok"]
    assert relay.requests == []  # converged by its record: the registry is not asked


def test_plan_verify_keeps_what_it_fetched_in_the_declared_cache(cli, registry, relay, tmp_path):
    """An untar target that differs is listed entry by entry under --verify, which
    fetches the chunks the tree lacks: kept in the cache, apply fetches none again."""
    repo = fresh_repo()
    tree = tmp_path / "tree"
    for i in range(4):
        write(tree / f"shard{i}.bin", blob(40 + i, 120_000))
    index = tmp_path / "site.caidx"
    done = cli("tar", "-i", "-m", "1k:4k:16k", "-s", registry.location(repo), index, tree)
    assert done.code == 0, done.err
    out = tmp_path / "out"
    assert cli("untar", "-i", "-s", registry.location(repo), index, out).code == 0
    (out / "shard2.bin").write_bytes(blob(99, 120_000))  # drift: one shard's content
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{at(relay, repo)}"}}, near: {{url: near}}}}
        caches: {{fast: {{store: r, cache: near}}}}
        tasks:
        - {{name: deploy, untar: {{index: {index}, path: out, stores: [fast]}}}}
        """,
    )
    [entry] = plan(m, tmp_path / "state", verify=True).entries
    [fetched] = entry.action.travel.stores
    assert fetched.chunks > 0
    kept = list((tmp_path / "near").rglob("*.cacnk"))
    assert len(kept) == fetched.chunks  # what the plan fetched, kept
    assert kinds(relay.requests)["GET blobs"] == fetched.chunks
    relay.requests.clear()
    results = apply(m, tmp_path / "state")
    assert [r.status.value for r in results] == ["changed"]
    assert (out / "shard2.bin").read_bytes() == (tree / "shard2.bin").read_bytes()
    assert "GET blobs" not in kinds(relay.requests)  # every chunk from the cache
    assert os.path.isdir(tmp_path / "near")


def test_a_long_lived_store_does_not_remember_a_missing_chunk(registry, relay):
    """A chunk server's store must find a chunk pushed after it was asked for it."""
    repo = fresh_repo()
    reader = Opener(config=Config()).chunk_store(at(relay, repo), create=True)
    chunk = random_chunks(1, seed=34)[0]
    assert reader.has_chunk(chunk.id) is False
    Opener(config=Config()).chunk_store(registry.location(repo), create=True).store_chunk(chunk)
    assert reader.has_chunk(chunk.id) is True
    assert bytes(reader.get_chunk(chunk.id).plain()) == bytes(chunk.plain())


def test_a_run_store_remembers_what_it_pushed(registry, relay):
    repo = fresh_repo()
    opener = Opener(config=Config(), remember=True, overrides={"n": 2})
    store = opener.chunk_store(at(relay, repo), create=True)
    chunk = random_chunks(1, seed=35)[0]
    assert store.has_chunk(chunk.id) is False
    store.store_chunk(chunk)
    relay.requests.clear()
    assert store.has_chunk(chunk.id) is True
    assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
    assert kinds(relay.requests) == {"GET blobs": 1}  # the manifest it pushed is known


def test_a_verify_with_repair_reads_each_chunk_once_and_the_bad_one_again(
    cli, registry, relay, tmp_path
):
    repo, index, n = published(cli, registry, tmp_path, 36)
    victim = sorted(index_of(index).unique_ids())[0].hex() + ".cacnk"
    push_artifact(registry.url, repo, victim, b"not the chunk")  # a desync artifact, bad bytes
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{at(relay, repo)}"}}}}
        tasks:
        - {{name: check, verify: {{store: r, repair: true}}}}
        """,
    )
    [result] = apply(m, tmp_path / "state")
    assert result.status.value == "changed"
    assert sorted(list_tags(registry.url, repo)) == sorted(
        id.hex() + ".cacnk" for id in index_of(index).unique_ids() if id.hex() + ".cacnk" != victim
    )
    asked = kinds(relay.requests)
    assert asked["GET blobs"] == n + 1  # every chunk once; the bad one again before deleting
    assert asked["GET manifests"] == n and asked["DELETE manifests"] == 1
