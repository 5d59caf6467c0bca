"""Prune while another machine publishes (issue 13, item 4): no chunk of an index
published before or during a prune is lost.

Two ``apply`` processes with separate state directories stand for two CI
machines sharing one store (a local directory, or a moto S3 bucket): one
publishes new versions with a ``make`` task, the other runs a ``prune`` task
keeping ``rel/*.caibx``. Each new version starts with the chunks of an old,
unpublished build that sits in the store, a day old: the make finds them there
and does not upload them, and a prune that does not know the new index yet
would delete them (a minimum age cannot protect them; only the store lock can).

The interleavings are made, not hoped for: the test stops a process with
SIGSTOP at the moment that matters (the make while it uploads, the prune while
it holds its lock) and lets the other run. Afterwards every published index is
checked chunk by chunk against the store.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from desync_decl.formats import index as index_format
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.ops.make import make
from desync_decl.stores.location import open_store
from tests.prune_sites import Site, random_bytes, site_fixture  # noqa: F401  (fixture)
from tests.servers_cloud import cloud_env, moto_server, s3_bucket  # noqa: F401  (fixtures)

CHUNK_SIZE = "16:64:256"  # KiB, as the manifests say it
SIZES = ChunkSizes.parse(CHUNK_SIZE)
OLD_BUILD = 2 << 20  # the old build's bytes, at the start of every new version
NEW_DATA = 8 << 20  # new bytes after them: the make is uploading these when stopped
WAIT = 120.0  # the most a step may take before the test gives up (never expected)


def write_manifest(site: Site, name: str, task: str) -> Path:
    path = site.root / name
    head = f"version: 1\ndefaults: {{chunk_size: '{CHUNK_SIZE}'}}\n"
    path.write_text(f"{head}stores: {{s: {{url: '{site.store}'}}}}\ntasks:\n- {task}\n")
    return path


def publish_manifest(site: Site, version: int) -> Path:
    task = (
        f"{{name: publish v{version}, make: {{source: build/v{version}.img,"
        f" index: rel/v{version}.caibx, store: s}}}}"
    )
    return write_manifest(site, f"publish-v{version}.yaml", task)


def prune_manifest(site: Site) -> Path:
    task = "{name: prune, prune: {store: s, keep: ['rel/*.caibx']}}"
    return write_manifest(site, "prune.yaml", task)


def prepare_version(site: Site, version: int) -> tuple[set[ChunkID], ChunkID]:
    """An old, unpublished build in the store (a day old) and a new version that starts
    with it; returns the old build's chunks the new version reuses and the first chunk
    of its own (the make uploads it first)."""
    old = random_bytes(1000 + version, OLD_BUILD)
    build = site.root / "build"
    (build / f"old{version}.img").write_bytes(old)
    store = open_store(site.store, create=True)
    try:
        old_ids = make(build / f"old{version}.img", sizes=SIZES, store=store).index.unique_ids()
    finally:
        store.close()
    site.age()
    new = build / f"v{version}.img"
    new.write_bytes(old + random_bytes(2000 + version, NEW_DATA))
    index = make(new, sizes=SIZES).index
    first_new = next(c.id for c in index if c.id not in old_ids)
    return old_ids & index.unique_ids(), first_new


def add_garbage(site: Site, count: int) -> None:
    """``count`` small unreferenced chunks, a day old."""
    store = open_store(site.store)
    try:
        for n in range(count):
            data = random_bytes(n, 64)
            store.store_chunk(Chunk(Digest.SHA512_256.hash(data), plain=data))  # type: ignore[attr-defined]
    finally:
        store.close()
    site.age()


def publish_the_first_version(site: Site) -> None:
    """v0, published a day ago: what the prune keeps to begin with."""
    (site.root / "build").mkdir()
    (site.root / "build" / "v0.img").write_bytes(random_bytes(0, 1 << 20))
    code, out = finish(site.apply(publish_manifest(site, 0), "ci-1"))
    assert code == 0, out
    site.age()


def published_indexes_are_whole(site: Site) -> list[str]:
    """The chunks each index in rel/ references and the store lacks, as messages."""
    store = site.open()
    problems = []
    try:
        for path in sorted((site.root / "rel").glob("*.caibx")):
            index = index_format.decode(path.read_bytes())
            lacking = [id for id in index.unique_ids() if not store.has_chunk(id)]
            if lacking:
                problems.append(f"{path.name} lacks {len(lacking)} chunks")
    finally:
        store.close()
    return problems


def wait_until(what: str, condition: Callable[[], bool], process: subprocess.Popen[str]) -> None:
    """Poll ``condition`` while ``process`` runs."""
    deadline = time.monotonic() + WAIT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"ended before {what}: {process.communicate()[0]}")
        if time.monotonic() > deadline:
            pytest.fail(f"gave up waiting: {what}")
        time.sleep(0.005)


def finish(process: subprocess.Popen[str]) -> tuple[int, str]:
    out, _ = process.communicate(timeout=WAIT)
    return process.returncode, out


@contextlib.contextmanager
def stopped(process: subprocess.Popen[str]) -> Iterator[None]:
    """``process`` stopped (SIGSTOP) for the block, continued after it whatever happens."""
    os.kill(process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(process.pid, signal.SIGCONT)


def lock_objects(site: Site) -> list[tuple[str, float]]:
    store = site.open()
    try:
        return store.list_locks()  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_prune_while_a_make_uploads_deletes_none_of_the_chunks_it_publishes(site):
    """The make found the old build's chunks in the store and is uploading its own
    when the prune runs: the prune must not delete what the make is about to
    reference (it is refused, naming the make), in three versions one after the other."""
    publish_the_first_version(site)
    outcomes = []
    for version in (1, 2, 3):
        reused, first_new = prepare_version(site, version)
        assert reused, "the new version reuses chunks of the old build"
        store = site.open()
        publisher = site.apply(publish_manifest(site, version), "ci-1")
        try:
            uploading = functools.partial(store.has_chunk, first_new)
            wait_until("the make uploads", uploading, publisher)
            with stopped(publisher):
                assert not (site.root / "rel" / f"v{version}.caibx").exists()
                # refused at once (--lock-timeout 0): the make it waits for is stopped
                outcomes.append(finish(site.apply(prune_manifest(site), "ci-2", lock_timeout=0)))
        finally:
            store.close()
            published = finish(publisher)
        assert published[0] == 0, published[1]
        assert published_indexes_are_whole(site) == []
    for code, out in outcomes:  # each prune was held off by the make's lock, which it names
        assert code != 0 and "is locked by make on host " in out, out
    code, out = finish(site.apply(prune_manifest(site), "ci-2"))  # nothing writes now
    assert code == 0, out
    assert published_indexes_are_whole(site) == []
    assert lock_objects(site) == []


def test_a_make_while_a_prune_holds_its_lock_publishes_only_whole_indexes(site):
    """The reverse order: the prune holds its lock (stopped there) when the make starts:
    the make is refused, naming the prune, and publishes nothing; run again after the
    prune it uploads what the prune deleted."""
    publish_the_first_version(site)
    for version in (1, 2, 3):
        prepare_version(site, version)
        if site.bucket is None:  # unlinking is quick: enough to delete to catch it at
            add_garbage(site, 5000)
        pruner = site.apply(prune_manifest(site), "ci-2")
        try:
            wait_until("the prune holds its lock", lambda: lock_objects(site) != [], pruner)
            with stopped(pruner):
                publisher = site.apply(publish_manifest(site, version), "ci-1", lock_timeout=0)
                code, out = finish(publisher)  # refused at once: the prune is stopped
        finally:
            pruned = finish(pruner)
        assert pruned[0] == 0, pruned[1]
        assert published_indexes_are_whole(site) == []
        assert code != 0 and "is locked by prune on host " in out, out
        assert not (site.root / "rel" / f"v{version}.caibx").exists()
        code, out = finish(site.apply(publish_manifest(site, version), "ci-1"))
        assert code == 0, out
        assert published_indexes_are_whole(site) == []


def test_publish_and_prune_running_freely_lose_nothing(site):
    """No stopping: both started together, a few times. Each either runs or is refused
    by the other's lock; no published index ever lacks a chunk."""
    publish_the_first_version(site)
    for version in (1, 2, 3):
        prepare_version(site, version)
        publisher = site.apply(publish_manifest(site, version), "ci-1")
        pruner = site.apply(prune_manifest(site), "ci-2")
        for code, out in (finish(publisher), finish(pruner)):
            assert code == 0 or "is locked by " in out, out
        assert published_indexes_are_whole(site) == []
        if not (site.root / "rel" / f"v{version}.caibx").exists():
            code, out = finish(site.apply(publish_manifest(site, version), "ci-1"))
            assert code == 0, out
        assert published_indexes_are_whole(site) == []
