"""Store locks under faults (issue 13, round 2 review): a writer or prune whose lock
went stale stops, a failed writer lets go of the store, a busy lock is waited
for, plan says who holds a store, and a lock object tells no more than it must.

Real stores (a local directory and a moto S3 bucket), real processes; a stale
lock is made by moving the store's clock back (``Site.age``), as time does.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.ops.make import make
from desync_decl.ops.tar import TarInput, tar_index
from desync_decl.stores.base import StoreError
from desync_decl.stores.converters import StorageFormat
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import open_store
from desync_decl.stores.store_lock import LockLost, acquire
from tests.prune_sites import A_DAY, Site, backdate, random_bytes, site_fixture  # noqa: F401
from tests.servers_cloud import cloud_env, moto_server, s3_bucket  # noqa: F401  (fixtures)
from tests.test_prune_race import (
    finish,
    prepare_version,
    prune_manifest,
    publish_manifest,
    publish_the_first_version,
    published_indexes_are_whole,
    stopped,
    wait_until,
)
from tests.test_store_lock import (  # noqa: F401  (stopped_processes: a fixture)
    FOREIGN_LOCK,
    cli_run,
    holding,
    lock_names,
    made,
    plant_foreign_lock,
    present,
    stopped_processes,
)

SIZES = ChunkSizes.parse("16:64:256")


def lock_records(site: Site) -> list[dict]:
    store = site.open()
    try:
        return [json.loads(store.read_lock(name)) for name, _ in store.list_locks()]  # type: ignore[attr-defined]
    finally:
        store.close()


# --- H1: a lock that went stale -------------------------------------------------------


def test_a_make_whose_lock_went_stale_while_it_was_stopped_does_not_publish(site):
    """A make stops (a suspended VM) after it found the old build's chunks in the store;
    meanwhile its lock goes stale and another machine's prune removes the lock and
    those chunks. Resumed, the make must not publish an index lacking them."""
    publish_the_first_version(site)
    reused, first_new = prepare_version(site, 1)
    store = site.open()
    publisher = site.apply(publish_manifest(site, 1), "ci-1")
    try:
        wait_until("the make uploads", lambda: store.has_chunk(first_new), publisher)
        with stopped(publisher):
            site.age(A_DAY)  # the make's lock goes stale on the store's clock (and all ages)
            code, out = finish(site.apply(prune_manifest(site), "ci-2"))
            assert code == 0, out  # the make's lock was stale: the prune ran
            assert present(site, reused) == set()  # and deleted the old build
    finally:
        store.close()
        code, out = finish(publisher)
    assert code != 0, out
    assert f"our lock on store {site.store} was removed by another process" in out, out
    assert "a prune may have deleted chunks this run relies on; run it again" in out, out
    assert not (site.root / "rel" / "v1.caibx").exists()
    assert published_indexes_are_whole(site) == []
    code, out = finish(site.apply(publish_manifest(site, 1), "ci-1"))  # run again: it uploads
    assert code == 0, out
    assert published_indexes_are_whole(site) == []


@pytest.mark.parametrize("exclusive", [True, False])
def test_a_lock_not_refreshed_in_time_is_lost(site, exclusive):
    """A holder that could not refresh its lock for most of the stale time (by its
    own clock) stops: a prune before its next deletion, deleting nothing; a writer
    at its next chunk."""
    garbage = made(site, "garbage", 2)
    site.age()
    store = open_store(site.store)
    try:
        lock = acquire(
            store, site.store, "x", exclusive=exclusive, stale_after=0.6, refresh_every=3600
        )  # type: ignore[arg-type]
        time.sleep(0.6)  # no refresh happens in this time: the lock goes stale in the store
        with pytest.raises(
            LockLost, match=f"^our lock on store {re.escape(site.store)} went stale: "
        ):
            if exclusive:
                store.prune(set(), before_delete=lock.check)  # type: ignore[attr-defined]
            else:
                lock.refresh_if_due()
        lock.release()
    finally:
        store.close()
    assert present(site, garbage) == garbage
    assert lock_names(site) == []


# --- H2: a failed writer lets go of the store ----------------------------------------


def test_a_failed_chop_does_not_keep_the_store_locked_for_the_rest_of_the_apply(site):
    """The first task (chop) fails half-way; while the apply goes on with another task,
    a prune elsewhere is not held off by the failed task's lock."""
    kept = made(site, "kept", 1)
    site.age()
    image = site.root / "a.img"
    data = random_bytes(7, 2 << 20)
    image.write_bytes(data)
    r = cli_run(site, "make", "--chunk-size", "16:64:256", site.root / "a.caibx", image)
    assert r.returncode == 0, r.stderr
    (site.root / "bad.img").write_bytes(data[:-1000] + bytes(1000))  # its end changed
    (site.root / "big.img").write_bytes(random_bytes(8, 16 << 20))
    other = site.root / "other-store"
    manifest = site.root / "m.yaml"
    manifest.write_text(
        f"version: 1\nstores: {{s: {{url: '{site.store}'}}, o: {{url: '{other}'}}}}\ntasks:\n"
        "- {name: chop, chop: {index: a.caibx, source: bad.img, store: s}}\n"
        "- {name: other, make: {source: big.img, index: big.caibx, store: o,"
        " chunk_size: '16:64:256'}}\n"
    )
    first = make(site.root / "big.img", sizes=SIZES).index.chunk(0).id
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    applying = subprocess.Popen(
        [sys.executable, "-m", "desync_decl", "apply", manifest, "--state-dir", site.root / "st"],
        cwd=site.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        found = lambda: other.is_dir() and LocalStore(other).has_chunk(first)  # noqa: E731
        wait_until("the second task writes", found, applying)
        with stopped(applying):
            r = cli_run(
                site, "prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx"
            )
    finally:
        code, out = finish(applying)
    assert r.returncode == 0, r.stderr
    assert code != 0 and "do not match chunk" in out, out
    assert present(site, kept) == kept


def test_failed_make_and_tar_release_the_store_lock(tmp_path):
    """make and tar that fail on a store fault after taking the store's lock (the
    prefix directory of one of their chunks is a file) leave no lock object behind,
    the store still open (as it stays for the rest of an apply)."""
    data = random_bytes(9, 4 << 20)
    (tmp_path / "f.img").write_bytes(data)
    (tmp_path / "tree").mkdir()
    (tmp_path / "tree" / "f").write_bytes(data)
    scratch = LocalStore(tmp_path / "scratch", create=True)
    tree = TarInput(tmp_path / "tree")
    indexes = [make(tmp_path / "f.img", sizes=SIZES).index]
    indexes.append(tar_index(tree, scratch, sizes=SIZES).index)  # type: ignore[arg-type]
    ids = [list(index)[-1].id for index in indexes]  # a late chunk of each
    (tmp_path / "store").mkdir()
    for id in ids:
        (tmp_path / "store" / id.hex()[:4]).write_bytes(b"a file where a directory belongs")
    store = LocalStore(tmp_path / "store")
    try:
        with pytest.raises(StoreError):
            make(tmp_path / "f.img", sizes=SIZES, store=store)
        assert store.list_locks() == []
        with pytest.raises(StoreError):
            tar_index(tree, store, sizes=SIZES)
        assert store.list_locks() == []
    finally:
        store.close()


# --- M1: a busy store lock is waited for ----------------------------------------------


def test_an_apply_waits_for_a_store_lock_within_its_lock_timeout(site, stopped_processes):  # noqa: F811
    """A prune that meets a running make's lock says once that it waits, and runs
    when the make lets go (within ``--lock-timeout``) instead of failing at once."""
    kept = made(site, "kept", 1)
    garbage = made(site, "garbage", 2) - kept
    site.age()
    (site.root / "rel").mkdir()
    os.replace(site.root / "kept.caibx", site.root / "rel" / "kept.caibx")
    writer = holding(site, "make", "shared")
    stopped_processes.append(writer)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    command = ["apply", prune_manifest(site), "--lock-timeout", "300", "--state-dir", "st"]
    pruning = subprocess.Popen(
        [sys.executable, "-m", "desync_decl", *map(str, command)],
        cwd=site.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert pruning.stderr is not None
    line = pruning.stderr.readline()
    writer.communicate("")  # the make ends and releases its lock
    out, err = pruning.communicate(timeout=300)
    assert line.startswith(f"[prune] waiting for lock on store {site.store} held by make on host")
    assert f" pid {writer.pid} " in line
    assert pruning.returncode == 0, out + err
    assert "waiting for lock" not in err  # said once
    assert present(site, garbage) == set() and present(site, kept) == kept


# --- L1: a chunk in both forms ----------------------------------------------------------


def test_a_chunk_in_both_forms_is_as_young_as_its_newer_file(tmp_path):
    """Compressed a day ago and uncompressed just now: the chunk is young. Plan and
    prune agree: it stays, both files of it."""
    data = random_bytes(11, 100_000)
    chunk = Chunk(Digest.SHA512_256.hash(data), plain=data)
    root = tmp_path / "store"
    LocalStore(root, create=True).store_chunk(chunk)
    backdate(root)
    LocalStore(root, format=StorageFormat(compressed=False)).store_chunk(chunk)
    store = LocalStore(root)
    ages = list(store.chunk_ages())
    assert [id for id, _ in ages] == [chunk.id] and ages[0][1] > time.time() - 600
    keep = random_bytes(12, 100_000)
    store.store_chunk(Chunk(Digest.SHA512_256.hash(keep), plain=keep))
    (tmp_path / "keep.img").write_bytes(keep)
    site = Site(tmp_path, str(root), None)
    r = cli_run(site, "make", "keep.caibx", "keep.img")
    assert r.returncode == 0, r.stderr
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        f"version: 1\nstores: {{s: {{url: '{root}'}}}}\n"
        "tasks:\n- {name: prune, prune: {store: s, keep: [keep.caibx]}}\n"
    )
    r = cli_run(site, "plan", manifest, "--json", "--state-dir", tmp_path / "st")
    planned = json.loads(r.stdout)["tasks"][0]
    assert planned["action"] == "no-op", planned
    r = cli_run(site, "apply", manifest, "--state-dir", tmp_path / "st")
    assert r.returncode == 0, r.stdout + r.stderr
    assert sorted(p.name for p in root.glob("*/*")) == sorted(
        [chunk.id.hex(), chunk.id.hex() + ".cacnk", Digest.SHA512_256.hash(keep).hex() + ".cacnk"]
    )


# --- L2 and L5: what a lock object says -----------------------------------------------


def lock_record_of_a_holder(site: Site, stopped: list, **env: str) -> bytes:
    """The lock object a make of this host holds, started with ``env`` set."""
    made(site, "kept", 1)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        stopped.append(holding(site, "make", "shared"))
    store = site.open()
    try:
        names = [name for name, _ in store.list_locks()]  # type: ignore[attr-defined]
        return store.read_lock(names[0])  # type: ignore[attr-defined]
    finally:
        store.close()


def test_a_lock_object_names_the_real_user(site, stopped_processes):  # noqa: F811
    """The user is the effective uid's, whatever LOGNAME and USER say (as the state
    folder's locks say it)."""
    data = lock_record_of_a_holder(site, stopped_processes, LOGNAME="mallory", USER="mallory")
    assert json.loads(data)["user"] == pwd.getpwuid(os.geteuid()).pw_name


def test_a_lock_object_hides_the_boot_id(site, stopped_processes):  # noqa: F811
    """The boot id and pid namespace are in it only as a hash (a dead holder of this
    host is still recognised: test_store_lock's killed-process test)."""
    data = lock_record_of_a_holder(site, stopped_processes)
    boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    ns = str(os.stat("/proc/self/ns/pid").st_ino)
    assert boot.encode() not in data and boot.replace("-", "").encode() not in data
    assert ns not in json.loads(data)["pids"]


# --- L3: plan says who holds a store -------------------------------------------------


@pytest.mark.parametrize("exclusive", [False, True])
def test_plan_says_when_another_host_holds_a_store_a_task_writes(site, exclusive):
    """Another machine's make holds the store a prune task would prune; another machine's
    prune holds the store a make task would write: plan notes it, naming the holder."""
    kept = made(site, "kept", 1)
    made(site, "garbage", 2)
    site.age()
    (site.root / "rel").mkdir()
    os.replace(site.root / "kept.caibx", site.root / "rel" / "kept.caibx")
    (site.root / "build").mkdir()
    (site.root / "build" / "v1.img").write_bytes(random_bytes(3, 600_000))
    plant_foreign_lock(site, exclusive=exclusive)
    manifest = publish_manifest(site, 1) if exclusive else prune_manifest(site)
    if not exclusive:
        text = manifest.read_text().replace("]}}", "], min_age: 0}}")
        manifest.write_text(text)
    r = cli_run(site, "plan", manifest, "--state-dir", site.root / "st")
    holder = "prune" if exclusive else "make"
    note = f"note: store 's' is locked by {holder} on host ci-runner-7.example pid 4242 (user ci)"
    assert note in r.stdout, r.stdout + r.stderr
    assert lock_names(site) == [FOREIGN_LOCK]  # plan only looked
    assert present(site, kept) == kept
