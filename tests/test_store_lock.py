"""The store lock and the minimum age (issue 13, item 4), through the CLI, on a local
store and a moto S3 bucket.

Other holders are real processes: a small Python process that takes a lock the
way make or prune does and keeps it until its stdin closes, or is killed. A lock
of another machine is a lock object written into the store as that machine
would write it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from desync_decl.formats import index as index_format
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.location import open_store
from tests.prune_sites import A_DAY, Site, random_bytes, site_fixture  # noqa: F401
from tests.servers_cloud import (  # noqa: F401  (fixtures)
    cloud_env,
    gcs_bucket,
    gcs_server,
    moto_server,
    s3_bucket,
)
from tests.servers_ssh import ssh_server, sshd  # noqa: F401  (fixtures)

HOLDER = """\
import sys
from desync_decl.stores.location import open_store
from desync_decl.stores.store_lock import acquire
store = open_store(sys.argv[1])
lock = acquire(store, sys.argv[1], sys.argv[2], exclusive=sys.argv[3] == "exclusive")
print("held", flush=True)
sys.stdin.read()
lock.release()
"""
FOREIGN_LOCK = "0123456789abcdef0123456789abcdef"
STALE_AFTER = 30 * 60  # restic's, and store_lock's: a lock not refreshed this long is stale


def holding(site: Site, command: str, kind: str) -> subprocess.Popen[str]:
    """A process of this host holding a lock on the store until its stdin closes."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, site.store, command, kind],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line == "held\n", line + process.stdout.read()
    return process


LOCKING_VERBS = ("make", "tar", "chop", "cache", "prune")


def cli_run(site: Site, *args: object) -> subprocess.CompletedProcess[str]:
    """The CLI; a verb that takes the store's lock gives up at once on a held one
    (``--lock-timeout 0``) unless the test says how long it waits."""
    if args and args[0] in LOCKING_VERBS and "--lock-timeout" not in args:
        args = (args[0], "--lock-timeout", "0", *args[1:])
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    return subprocess.run(
        [sys.executable, "-m", "desync_decl", *map(str, args)],
        cwd=site.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def made(site: Site, name: str, seed: int) -> set[ChunkID]:
    """``name``.img chunked into the store by ``make`` (index ``name``.caibx)."""
    image = site.root / f"{name}.img"
    image.write_bytes(random_bytes(seed, 600_000))
    r = cli_run(site, "make", "-s", site.store, site.root / f"{name}.caibx", image)
    assert r.returncode == 0, r.stderr
    return index_of(site, name)


def index_of(site: Site, name: str) -> set[ChunkID]:
    return index_format.decode((site.root / f"{name}.caibx").read_bytes()).unique_ids()


def present(site: Site, ids: set[ChunkID]) -> set[ChunkID]:
    store = site.open()
    try:
        return {id for id in ids if store.has_chunk(id)}
    finally:
        store.close()


def lock_names(site: Site) -> list[str]:
    store = site.open()
    try:
        return sorted(name for name, _ in store.list_locks())  # type: ignore[attr-defined]
    finally:
        store.close()


def plant_foreign_lock(
    site: Site, *, exclusive: bool, host: str = "ci-runner-7.example", pid: int = 4242
) -> None:
    """A lock another machine holds, as its desync-decl writes it."""
    record = {
        "command": "prune" if exclusive else "make",
        "exclusive": exclusive,
        "host": host,
        "pid": pid,
        "started": 1234,
        "pids": "another-boot-id:4026531836",
        "user": "ci",
        "since": time.time(),
    }
    store = site.open()
    try:
        store.write_lock(FOREIGN_LOCK, json.dumps(record).encode())  # type: ignore[attr-defined]
    finally:
        store.close()


@pytest.fixture
def kept(site) -> set[ChunkID]:
    """A published index in the store, a day old."""
    ids = made(site, "kept", 1)
    site.age(A_DAY)
    return ids


@pytest.fixture
def stopped_processes() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_prune_keeps_chunks_younger_than_its_minimum_age(site, kept):
    """A chunk written just now survives a prune whose keep set lacks it (the
    default minimum age, an hour, by the store's own clock); ``--min-age 0``, with
    no writer running, deletes it."""
    fresh = made(site, "fresh", 2) - kept
    r = cli_run(site, "prune", "-y", "-s", site.store, site.root / "kept.caibx")
    assert r.returncode == 0, r.stderr
    assert present(site, fresh) == fresh and present(site, kept) == kept
    r = cli_run(site, "prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx")
    assert r.returncode == 0, r.stderr
    assert present(site, fresh) == set() and present(site, kept) == kept
    assert lock_names(site) == []  # prune's own lock went with it


def test_a_manifest_prune_keeps_young_chunks_by_default(site, kept):
    fresh = made(site, "fresh", 2) - kept
    (site.root / "rel").mkdir()
    os.replace(site.root / "kept.caibx", site.root / "rel" / "kept.caibx")
    manifest = site.root / "prune.yaml"
    task = "{name: prune, prune: {store: s, keep: ['rel/*.caibx']%s}}"
    body = f"version: 1\nstores: {{s: {{url: '{site.store}'}}}}\ntasks:\n- {task}\n"
    manifest.write_text(body % "")
    r = cli_run(site, "apply", manifest, "--state-dir", site.root / "state")
    assert r.returncode == 0, r.stdout + r.stderr
    assert present(site, fresh) == fresh
    manifest.write_text(body % ", min_age: 0")
    r = cli_run(site, "apply", manifest, "--state-dir", site.root / "state")
    assert r.returncode == 0, r.stdout + r.stderr
    assert present(site, fresh) == set() and present(site, kept) == kept


def test_with_no_minimum_age_the_lock_of_a_running_make_protects_its_chunks(
    site, kept, stopped_processes
):
    """min-age 0: what protects a writer's chunks is its shared lock, which the prune
    respects and names; once the writer has gone the prune runs."""
    fresh = made(site, "fresh", 2) - kept
    writer = holding(site, "make", "shared")
    stopped_processes.append(writer)
    r = cli_run(site, "prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.startswith(f"desync-decl: error: store {site.store} is locked by make on host ")
    assert f" pid {writer.pid} " in r.stderr and len(r.stderr.splitlines()) == 1
    assert present(site, fresh) == fresh
    writer.communicate("")  # the writer ends and releases its lock
    r = cli_run(site, "prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx")
    assert r.returncode == 0, r.stderr
    assert present(site, fresh) == set() and present(site, kept) == kept


def test_a_writer_is_refused_while_a_prune_holds_the_store(site, kept, stopped_processes):
    pruner = holding(site, "prune", "exclusive")
    stopped_processes.append(pruner)
    image = site.root / "new.img"
    image.write_bytes(random_bytes(3, 600_000))
    r = cli_run(site, "make", "-s", site.store, site.root / "new.caibx", image)
    assert r.returncode == 1
    assert r.stderr.startswith(
        f"desync-decl: error: store {site.store} is locked by prune on host "
    )
    assert f" pid {pruner.pid} " in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (site.root / "new.caibx").exists()
    pruner.communicate("")
    r = cli_run(site, "make", "-s", site.store, site.root / "new.caibx", image)
    assert r.returncode == 0, r.stderr
    assert present(site, index_of(site, "new")) == index_of(site, "new")


def test_a_verb_waits_for_a_held_lock_as_long_as_its_lock_timeout_says(
    site, kept, stopped_processes
):
    """A CI publish that meets a nightly prune waits for it (saying so once) instead of
    failing the release: the prune ends within the make's --lock-timeout."""
    pruner = holding(site, "prune", "exclusive")
    stopped_processes.append(pruner)
    image = site.root / "new.img"
    image.write_bytes(random_bytes(4, 600_000))
    threading.Timer(1.5, pruner.communicate, [""]).start()  # the prune ends meanwhile
    args = ("make", "--lock-timeout", "60", "-s", site.store, site.root / "new.caibx", image)
    r = cli_run(site, *args)
    assert r.returncode == 0, r.stderr
    (waiting,) = r.stderr.splitlines()
    assert waiting.startswith(f"desync-decl: waiting for lock on store {site.store} held by ")
    assert present(site, index_of(site, "new")) == index_of(site, "new")


def test_a_lock_of_a_killed_process_on_this_host_does_not_block(site, kept, stopped_processes):
    garbage = made(site, "garbage", 2) - kept
    writer = holding(site, "make", "shared")
    stopped_processes.append(writer)
    writer.send_signal(signal.SIGKILL)  # no chance to release its lock
    writer.wait()
    assert len(lock_names(site)) == 1
    r = cli_run(site, "prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx")
    assert r.returncode == 0, r.stderr
    assert present(site, garbage) == set()
    assert lock_names(site) == []  # the dead process's lock was removed


@pytest.mark.parametrize("exclusive", [False, True])
def test_a_lock_of_another_host_blocks_prune_until_it_is_stale(site, kept, exclusive):
    """Another machine's lock (shared: a make; exclusive: a prune) holds prune off while
    it is fresh, by the store's clock, whatever its pid means here; not refreshed
    for half an hour it is stale, and prune removes it."""
    garbage = made(site, "garbage", 2) - kept
    plant_foreign_lock(site, exclusive=exclusive)
    args = ("prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx")
    r = cli_run(site, *args)
    assert r.returncode == 1
    holder = "prune" if exclusive else "make"
    assert f"is locked by {holder} on host ci-runner-7.example pid 4242 (user ci)" in r.stderr
    assert present(site, garbage) == garbage
    site.age(STALE_AFTER + 60)  # the other machine died: its lock is no longer refreshed
    r = cli_run(site, *args)
    assert r.returncode == 0, r.stderr
    assert present(site, garbage) == set() and lock_names(site) == []


def test_a_stale_exclusive_lock_does_not_hold_writers_off(site, kept):
    plant_foreign_lock(site, exclusive=True)
    site.age(STALE_AFTER + 60)
    new = made(site, "new", 4)
    assert present(site, new) == new
    assert lock_names(site) == [FOREIGN_LOCK]  # a writer leaves it: prune cleans up


def test_a_held_lock_is_refreshed_and_released(site):
    from desync_decl.stores.store_lock import acquire

    store = open_store(site.store, create=True)
    try:
        lock = acquire(store, site.store, "prune", exclusive=True, refresh_every=0.2)  # type: ignore[arg-type]
        taken = dict(store.list_locks())[lock.name]  # type: ignore[attr-defined]
        site.age(60)  # so that a rewrite shows even at S3's one-second resolution
        deadline = time.monotonic() + 30
        while dict(store.list_locks())[lock.name] <= taken - 30:  # type: ignore[attr-defined]
            assert time.monotonic() < deadline, "the lock was never refreshed"
            time.sleep(0.05)
        lock.release()
        assert store.list_locks() == []  # type: ignore[attr-defined]
    finally:
        store.close()


def test_locks_of_one_apply_do_not_conflict_with_each_other(site, kept):
    """A make and a prune of the same store in one apply: the prune's exclusive lock
    is not refused because of the make's shared one (the same process)."""
    (site.root / "rel").mkdir()
    os.replace(site.root / "kept.caibx", site.root / "rel" / "kept.caibx")
    (site.root / "v2.img").write_bytes(random_bytes(5, 600_000))
    manifest = site.root / "m.yaml"
    manifest.write_text(
        f"version: 1\nstores: {{s: {{url: '{site.store}'}}}}\ntasks:\n"
        "- {name: publish, make: {source: v2.img, index: rel/v2.caibx, store: s}}\n"
        "- {name: prune, prune: {store: s, keep: ['rel/*.caibx'], min_age: 0}}\n"
    )
    r = cli_run(site, "apply", manifest, "--state-dir", site.root / "state")
    assert r.returncode == 0, r.stdout + r.stderr
    v2 = index_format.decode((site.root / "rel" / "v2.caibx").read_bytes()).unique_ids()
    assert present(site, v2 | kept) == v2 | kept
    assert lock_names(site) == []


@pytest.mark.parametrize("backend", ["gcs", "sftp"])
def test_locks_and_ages_on_gcs_and_sftp(request, tmp_path, backend, stopped_processes):
    """The same lock objects and modification times on the other listable stores:
    each side is refused naming the other; fresh chunks stay (GCS ``updated``, SFTP
    mtime) until ``--min-age 0``."""
    if backend == "gcs":
        store = f"gs://{request.getfixturevalue('gcs_bucket')}/store"
    else:
        (tmp_path / "store").mkdir()
        store = request.getfixturevalue("sshd").url("sftp", tmp_path / "store")
    site = Site(tmp_path, store, None)
    kept = made(site, "kept", 1)
    prune = ("prune", "-y", "-s", store, tmp_path / "kept.caibx")
    pruner = holding(site, "prune", "exclusive")
    stopped_processes.append(pruner)
    image = tmp_path / "new.img"
    image.write_bytes(random_bytes(3, 600_000))
    r = cli_run(site, "make", "-s", store, tmp_path / "new.caibx", image)
    assert r.returncode == 1 and "is locked by prune on host " in r.stderr, r.stderr
    pruner.communicate("")
    writer = holding(site, "make", "shared")
    stopped_processes.append(writer)
    r = cli_run(site, *prune[:2], "--min-age", "0", *prune[2:])
    assert r.returncode == 1 and "is locked by make on host " in r.stderr, r.stderr
    writer.communicate("")
    garbage = made(site, "garbage", 2) - kept
    r = cli_run(site, *prune)
    assert r.returncode == 0, r.stderr
    assert present(site, garbage) == garbage
    r = cli_run(site, *prune[:2], "--min-age", "0", *prune[2:])
    assert r.returncode == 0, r.stderr
    assert present(site, garbage) == set() and present(site, kept) == kept
    assert lock_names(site) == []


def test_a_lock_from_another_container_with_this_host_name_is_not_judged_by_local_pids(site, kept):
    """Two containers may share a host name (host networking) but not their pids: a
    lock whose pid is free here is still fresh when it comes from another pid
    namespace."""
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    plant_foreign_lock(site, exclusive=False, host=socket.gethostname(), pid=int(dead.stdout))
    r = cli_run(site, "prune", "-y", "--min-age", "0", "-s", site.store, site.root / "kept.caibx")
    assert r.returncode == 1 and f"is locked by make on host {socket.gethostname()} " in r.stderr
