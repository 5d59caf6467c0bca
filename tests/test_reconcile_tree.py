"""The ``tar`` and ``untar`` kinds through observe -> plan -> apply, on real trees and
real local stores: what they plan, that apply does exactly that, that a second run
changes nothing and asks no store anything, drift, extras, seeds, masks and locks.

Expected indexes come from ``ops.tar.tar_index`` called directly and trees are
compared file by file (content, type, mode, owner, mtime), never through the
code under test.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from desync_decl.formats import flags as ff
from desync_decl.formats.catar import features
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.index import Index
from desync_decl.manifest import load_manifest
from desync_decl.manifest.model import TIME_FEATURES
from desync_decl.ops.tar import TarInput, tar_index
from desync_decl.reconcile.kinds import KINDS
from desync_decl.reconcile.lock import locked
from desync_decl.reconcile.model import EntryState, Status, Verb
from desync_decl.reconcile.resolve import Resolver
from desync_decl.stores.local import LocalStore
from tests.conftest import ROOT
from tests.test_reconcile_kinds import (
    SIZES,
    apply,
    blob,
    index_of,
    manifest,
    plan,
    statuses,
    store_ids,
    verbs,
    write,
)
from tests.test_reconcile_safety import counting

PLAN_SCHEMA = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())
MTIME = 1_700_000_000_000_000_000


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


def site(root: Path, version: int = 1) -> Path:
    """A small tree: a big file, text, a symlink, a private file, nested and empty
    directories (10 entries with the root);
    version 2 changes one file, adds one and removes one."""
    write(root / "big.bin", blob(50, 150_000))
    write(root / "doc" / "readme.txt", b"read me\n" * 200)
    write(root / "doc" / "deep" / "note.txt", b"note %d\n" % version)
    write(root / "secret.key", b"key")
    (root / "secret.key").chmod(0o600)
    (root / "link").symlink_to("big.bin")
    (root / "empty").mkdir()
    if version == 1:
        write(root / "old.txt", b"only in version 1\n")
    else:
        write(root / "new.txt", b"only in version 2\n")
        with open(root / "big.bin", "r+b") as f:
            f.seek(70_000)
            f.write(b"version two")
    for p in sorted(root.rglob("*"), reverse=True):
        os.utime(p, ns=(MTIME, MTIME), follow_symlinks=False)
    os.utime(root, ns=(MTIME, MTIME))
    return root


def published(src: Path, index: Path, store: Path, flags: int = features.DESYNC_TAR) -> Index:
    """``tar -i`` of ``src`` straight through the ops function (not the reconciler)."""
    full = features.archive_flags(flags & ff.WITH_MASK)
    result = tar_index(
        TarInput(src, flags=full), LocalStore(store, create=True), sizes=ChunkSizes.parse(SIZES)
    )
    assert result.index is not None
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(result.index.encode())
    return result.index


def snapshot(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: type, mode, owner, mtime, content or link target."""
    out = {}
    for p in sorted([root, *root.rglob("*")]):
        st = p.lstat()
        kind = stat.S_IFMT(st.st_mode)
        if stat.S_ISREG(st.st_mode):
            body: object = p.read_bytes()
        elif stat.S_ISLNK(st.st_mode):
            body = os.readlink(p)
        else:
            body = None
        mode = 0o777 if stat.S_ISLNK(st.st_mode) else stat.S_IMODE(st.st_mode)
        key = str(p.relative_to(root))
        out[key] = (kind, mode, st.st_uid, st.st_gid, st.st_mtime_ns, body)
    return out


def untar_manifest(tmp_path: Path, extra: str = "", name: str = "m.yaml") -> Path:
    return manifest(
        tmp_path,
        f"""\
        stores: {{s: {{url: store}}}}
        tasks:
        - name: deploy
          untar: {{index: site.caidx, path: out, stores: [s]{extra}}}
        """,
        name,
    )


def sizes_of(index: Index) -> dict:
    return {c.id: c.size for c in index}


# --- tar ------------------------------------------------------------------------------


def test_tar_creates_then_is_a_recorded_no_op_then_updates_when_a_file_changes(tmp_path, state):
    src = site(tmp_path / "src")
    m = manifest(
        tmp_path,
        "stores: {s: {url: store}}\ntasks:\n"
        "- {name: pack, tar: {source: src, index: out/site.caidx, store: s}}\n",
    )
    expected = published(src, tmp_path / "expected.caidx", tmp_path / "expected-store")
    (entry,) = plan(m, state).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.CREATE, "no index yet")
    upload = entry.action.travel.upload
    assert (upload.chunks, upload.bytes) == (
        len(expected.unique_ids()),
        sum(sizes_of(expected).values()),
    )
    (r,) = apply(m, state, check=True, diff=True)
    assert (r.status, r.msg) == (Status.CHANGED, "would create: no index yet")
    assert r.diff.after["index"] == expected.file_digest()
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()
    loaded = load_manifest(m)
    locks = KINDS["tar"].resources(loaded.tasks[0], Resolver(loaded, None)).locks()  # type: ignore[arg-type]
    index = tmp_path / "out" / "site.caidx"
    assert locks == {f"store:{tmp_path / 'store'}": False, f"file:{index}": True}

    (r,) = apply(m, state)
    assert r.status is Status.CHANGED and r.stats["chunks-stored"] == upload.chunks
    assert (tmp_path / "out" / "site.caidx").read_bytes() == expected.encode()
    assert store_ids(tmp_path / "store") == store_ids(tmp_path / "expected-store")

    (entry,) = plan(m, state).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.NOOP, "index is current (recorded)")
    assert statuses(apply(m, state)) == ["ok"]

    with open(src / "doc" / "readme.txt", "ab") as f:
        f.write(b"one more line\n")
    (entry,) = plan(m, state).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.UPDATE, "the directory changed")
    assert 0 < entry.action.travel.upload.chunks < len(expected.unique_ids())
    assert entry.action.diff.before["index"] == expected.file_digest()
    assert statuses(apply(m, state)) == ["changed"]
    again = published(src, tmp_path / "again.caidx", tmp_path / "expected-store")
    assert index_of(tmp_path / "out" / "site.caidx").encode() == again.encode()
    assert statuses(apply(m, state)) == ["ok"]


def test_tar_takes_feature_flags_and_chunk_size_from_the_task(tmp_path, state):
    site(tmp_path / "src")
    body = (
        "stores: {s: {url: store}}\ntasks:\n- name: pack\n  tar: {source: src,"
        " index: site.caidx, store: s, chunk_size: 8K, with: [unix], without: [symlinks]%s}\n"
    )
    m = manifest(tmp_path, body % "")
    assert statuses(apply(m, state)) == ["changed"]
    index = index_of(tmp_path / "site.caidx")
    unix = features.GROUPS["unix"] & ~features.NAMES["symlinks"]
    assert index.flags == features.archive_flags(unix)
    assert index.sizes == ChunkSizes.parse("8K")
    m = manifest(tmp_path, body % ", no_time: true")
    (entry,) = plan(m, state).entries
    no_time = features.archive_flags(unix & ~TIME_FEATURES)
    assert entry.action.verb is Verb.UPDATE
    assert entry.action.reason == (
        f"feature flags change from 0x{index.flags:016x} to 0x{no_time:016x}"
    )
    assert statuses(apply(m, state)) == ["changed"]
    assert index_of(tmp_path / "site.caidx").flags == no_time


def test_tar_verify_finds_chunks_missing_from_the_store(tmp_path, state):
    site(tmp_path / "src")
    m = manifest(
        tmp_path,
        "stores: {s: {url: store}}\ntasks:\n"
        "- {name: pack, tar: {source: src, index: site.caidx, store: s}}\n",
    )
    apply(m, state)
    victim = next((tmp_path / "store").rglob("*.cacnk"))
    victim.unlink()
    assert verbs(plan(m, state)) == ["no-op"]  # the record is trusted
    (entry,) = plan(m, state, verify=True).entries
    assert (entry.action.verb, entry.action.reason) == (
        Verb.UPDATE,
        "store 's' lacks 1 of its chunks",
    )
    assert statuses(apply(m, state, verify=True)) == ["changed"] and victim.exists()


def test_tar_of_a_missing_or_plain_file_source_fails_in_the_plan(tmp_path, state):
    write(tmp_path / "file", b"x")
    body = (
        "stores: {s: {url: store}}\ntasks:\n"
        "- {name: p, tar: {source: %s, index: i.caidx, store: s}}\n"
    )
    (entry,) = plan(manifest(tmp_path, body % "nowhere"), state).entries
    assert (entry.state, entry.message) == (
        EntryState.ERROR,
        f"{tmp_path / 'nowhere'}: no such directory",
    )
    (entry,) = plan(manifest(tmp_path, body % "file"), state).entries
    assert entry.message == f"{tmp_path / 'file'}: not a directory"


# --- untar ----------------------------------------------------------------------------


@pytest.fixture
def v1(tmp_path) -> Index:
    """Version 1 of the site published: site.caidx and its chunks in store/."""
    return published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")


def test_untar_plan_numbers_are_what_apply_does_and_a_second_apply_asks_nothing(
    tmp_path, state, v1, monkeypatch
):
    m = untar_manifest(tmp_path)
    (entry,) = plan(m, state).entries
    t = entry.action.travel
    assert (entry.action.verb, entry.action.reason) == (Verb.CREATE, "absent")
    assert (t.total.chunks, t.total.bytes) == (len(v1), v1.length)
    assert [(s.name, s.chunks, s.bytes) for s in t.stores] == [
        ("s", len(v1.unique_ids()), sum(sizes_of(v1).values()))
    ]
    assert not (tmp_path / "out").exists()

    calls = counting(monkeypatch)
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED, r.msg
    assert (r.stats["chunks-from-store"], r.stats["bytes-from-store"]) == (
        t.stores[0].chunks,
        t.stores[0].bytes,
    )
    assert calls["get_chunk"] == t.stores[0].chunks  # each chunk crossed once
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "v1")

    calls.update(dict.fromkeys(calls, 0))
    (r,) = apply(m, state)
    assert (r.status, r.msg) == (Status.OK, "converged (recorded)")
    assert calls == {"get_chunk": 0, "has_chunk": 0, "store_chunk": 0}


def test_untar_of_a_new_version_takes_the_tree_in_place_and_fetches_the_rest(tmp_path, state, v1):
    m = untar_manifest(tmp_path)
    apply(m, state)
    v2 = published(site(tmp_path / "v2", 2), tmp_path / "site.caidx", tmp_path / "store")
    (entry,) = plan(m, state).entries
    t = entry.action.travel
    assert entry.action.verb is Verb.UPDATE
    assert entry.action.reason == f"a new index (the tree holds {v1.file_digest()})"
    held = v1.unique_ids()
    in_place = [c for c in v2 if c.id in held]
    fetched = {c.id: c.size for c in v2 if c.id not in held}
    assert (t.in_place.chunks, t.in_place.bytes) == (
        len(in_place),
        sum(c.size for c in in_place),
    )
    assert [(s.chunks, s.bytes) for s in t.stores] == [(len(fetched), sum(fetched.values()))]
    assert 0 < len(fetched) < len(v2.unique_ids()) // 2
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED
    assert (r.stats["chunks-in-place"], r.stats["bytes-in-place"]) == (
        t.in_place.chunks,
        t.in_place.bytes,
    )
    assert (r.stats["chunks-from-store"], r.stats["bytes-from-store"]) == (
        t.stores[0].chunks,
        t.stores[0].bytes,
    )
    # the new version's tree; old.txt stays (desync keeps what the archive lacks)
    expected = snapshot(tmp_path / "v2")
    got = snapshot(tmp_path / "out")
    assert got.pop("old.txt")[-1] == b"only in version 1\n"
    assert {k: v for k, v in got.items() if k != "."} == {
        k: v for k, v in expected.items() if k != "."
    }
    assert statuses(apply(m, state)) == ["ok"]


def test_untar_with_a_seed_directory_reads_it_instead_of_fetching(tmp_path, state, v1):
    shutil.copytree(tmp_path / "v1", tmp_path / "prev", symlinks=True)
    v2 = published(site(tmp_path / "v2", 2), tmp_path / "site.caidx", tmp_path / "store")
    m = untar_manifest(tmp_path, ", seeds: [prev, gone]")
    (entry,) = plan(m, state).entries
    t = entry.action.travel
    assert entry.action.notes == (f"seed {tmp_path / 'gone'}: no such directory, not used",)
    (seed,) = t.seeds
    assert seed.file == str(tmp_path / "prev") and seed.bytes > v2.length // 2
    assert t.stores[0].chunks < len(v2.unique_ids()) // 2
    (r,) = apply(m, state)
    assert (r.stats["chunks-from-seeds"], r.stats["bytes-from-seeds"]) == (
        seed.chunks,
        seed.bytes,
    )
    assert r.stats["chunks-from-store"] == t.stores[0].chunks
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "v2")


def test_untar_drift_is_found_counted_with_verify_and_repaired(tmp_path, state, v1):
    m = untar_manifest(tmp_path)
    apply(m, state)
    note = tmp_path / "out" / "doc" / "readme.txt"
    st = note.stat()
    with open(note, "r+b") as f:  # same size, mtime put back: the ctime still moves
        f.write(b"R")
    os.utime(note, ns=(st.st_atime_ns, st.st_mtime_ns))
    (entry,) = plan(m, state).entries
    assert entry.action.verb is Verb.UPDATE
    # the chunk the tree lacks is in a local store: read, the entries are listed
    assert entry.action.reason == "1 to update, 9 unchanged"
    assert entry.action.notes == ()
    (entry,) = plan(m, state, verify=True).entries
    assert entry.action.reason == "1 to update, 9 unchanged"
    size = note.stat().st_size
    assert dict(entry.action.travel.entries) == {
        "create": 0,
        "update": 1,
        "metadata": 0,
        "delete": 0,
        "unchanged": 9,
        "kept": 0,
        "write-bytes": size,
        "keep-bytes": sum(
            p.lstat().st_size
            for p in (tmp_path / "v1").rglob("*")
            if stat.S_ISREG(p.lstat().st_mode)
        )
        - size,
        "delete-bytes": 0,
    }
    (change,) = entry.action.travel.changes
    assert change[:4] == ("doc/readme.txt", "update", "file", size)
    assert sum(n for _, n in change[4]) == size  # its bytes, by where they come from
    assert entry.action.diff.before["doc/readme.txt"].startswith("sha512256digest=")
    (r,) = apply(m, state, diff=True)
    assert r.status is Status.CHANGED  # listed from the local store: per entry
    assert r.diff.before["doc/readme.txt"].startswith("sha512256digest=")
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "v1")
    assert statuses(apply(m, state)) == ["ok"]
    assert statuses(apply(m, state, verify=True)) == ["ok"]


def test_extras_are_kept_unless_delete_extra(tmp_path, state, v1):
    m = untar_manifest(tmp_path)
    apply(m, state)
    out = tmp_path / "out"
    write(out / "doc" / "mine.txt", b"not in the archive")
    write(out / "more" / "inside.txt", b"nor this")
    (entry,) = plan(m, state, verify=True).entries
    # the root and doc/ got new entries, so their mtimes differ from the archive's: they
    # are put back; the extras are kept
    assert entry.action.reason == "2 metadata only, 8 unchanged, 2 extras kept"
    assert statuses(apply(m, state)) == ["changed"]
    assert (out / "doc" / "mine.txt").exists() and (out / "more" / "inside.txt").exists()
    assert statuses(apply(m, state)) == ["ok"]
    assert verbs(plan(m, state, verify=True)) == ["no-op"]

    m = untar_manifest(tmp_path, ", delete_extra: true")
    (entry,) = plan(m, state, verify=True).entries
    assert entry.action.reason == "2 to delete, 10 unchanged"
    assert entry.action.diff.after == {"doc/mine.txt": "absent", "more": "absent"}
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED and r.stats["deleted"] == 2
    assert snapshot(out) == snapshot(tmp_path / "v1")
    assert statuses(apply(m, state)) == ["ok"]
    assert statuses(apply(m, state, verify=True)) == ["ok"]


def test_untar_replaces_entries_of_another_type_without_following_symlinks(tmp_path, state, v1):
    outside = write(tmp_path / "outside" / "keep.txt", b"outside the target")
    out = tmp_path / "out"
    write(out / "empty", b"a file where the archive has a directory")
    write(out / "doc" / "readme.txt" / "x", b"a directory where the archive has a file")
    out.joinpath("doc", "deep").symlink_to(tmp_path / "outside")  # where it has a directory
    out.joinpath("big.bin").symlink_to(tmp_path / "outside" / "keep.txt")  # renamed over
    m = untar_manifest(tmp_path)
    (entry,) = plan(m, state).entries
    assert entry.action.verb is Verb.UPDATE
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED, r.msg
    assert r.stats["replaced"] == 3
    assert snapshot(out) == snapshot(tmp_path / "v1")
    assert outside.read_bytes() == b"outside the target"
    assert statuses(apply(m, state)) == ["ok"]


def test_no_same_owner_and_permissions_leave_those_aspects_out(tmp_path, state):
    src = site(tmp_path / "v1")
    os.chown(src / "doc" / "readme.txt", 65534, 65534)
    os.utime(src / "doc", ns=(MTIME, MTIME))
    published(src, tmp_path / "site.caidx", tmp_path / "store")
    loose = untar_manifest(tmp_path, ", no_same_owner: true, no_same_permissions: true")
    assert statuses(apply(loose, state)) == ["changed"]
    out = tmp_path / "out"
    assert out.joinpath("doc", "readme.txt").stat().st_uid == os.geteuid()
    assert stat.S_IMODE(out.joinpath("secret.key").stat().st_mode) == 0o666 & ~_umask()
    (entry,) = plan(loose, state, verify=True).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.NOOP, "converged")

    strict = untar_manifest(tmp_path)  # other options: the record does not hold
    (entry,) = plan(strict, state).entries
    assert entry.action.verb is Verb.UPDATE
    (entry,) = plan(strict, state, verify=True).entries
    assert entry.action.reason == "2 metadata only, 8 unchanged"  # readme's owner, the key's mode
    assert statuses(apply(strict, state)) == ["changed"]
    assert snapshot(out) == snapshot(src)
    assert statuses(apply(strict, state)) == ["ok"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_untar_check_writes_nothing_and_saved_plans_hold(cli, tmp_path, state, v1):
    m = untar_manifest(tmp_path)
    r = cli("apply", m, "--state-dir", state, "--check", "--diff")
    assert r.code == 0, r.err
    assert r.out.splitlines()[1] == "changed: [deploy] untar: would create: absent"
    assert not (tmp_path / "out").exists() and not state.exists()
    saved = tmp_path / "plan.json"
    assert cli("plan", m, "--state-dir", state, "--out", saved).code == 0
    Draft202012Validator(PLAN_SCHEMA).validate(json.loads(saved.read_text()))
    r = cli("apply", m, "--state-dir", state, "--plan", saved)
    assert r.code == 0, r.err + r.out
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "v1")

    write(tmp_path / "out" / "doc" / "readme.txt", b"edited")
    r = cli("plan", m, "--state-dir", state, "--verify", "--json", "--out", saved)
    doc = json.loads(r.out)
    Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert doc["tasks"][0]["kind"] == "untar"
    assert doc["tasks"][0]["travel"]["entries"]["update"] == 1
    write(tmp_path / "out" / "doc" / "readme.txt", b"edited again")
    r = cli("apply", m, "--state-dir", state, "--plan", saved)
    assert r.code == 1 and "its facts changed since the plan was made (target)" in r.err


def test_untar_pins_its_index_and_refuses_a_blob_index_or_a_file_target(tmp_path, state, v1):
    wrong = "sha512-256:" + "0" * 64
    (entry,) = plan(untar_manifest(tmp_path, f', pin: "{wrong}"'), state).entries
    assert entry.message == (
        f"index {tmp_path / 'site.caidx'} has digest {v1.file_digest()}, the task pins {wrong}"
    )
    assert statuses(apply(untar_manifest(tmp_path, f', pin: "{v1.file_digest()}"'), state)) == [
        "changed"
    ]
    from tests.test_reconcile_kinds import make_index

    make_index(write(tmp_path / "blob", blob(51)), tmp_path / "blob.caibx", tmp_path / "store")
    m = untar_manifest(tmp_path).read_text().replace("site.caidx", "blob.caibx")
    (entry,) = plan(manifest(tmp_path, m.split("\n", 2)[2], "b.yaml"), state).entries
    assert (
        entry.message
        == f"{tmp_path / 'blob.caibx'} indexes a blob, not a directory archive (.caidx)"
    )
    shutil.rmtree(tmp_path / "out")
    write(tmp_path / "out", b"a file")
    (entry,) = plan(untar_manifest(tmp_path), state).entries
    assert entry.message == f"cannot untar to {tmp_path / 'out'}: not a directory"


def test_tar_then_untar_in_one_manifest_is_planned_from_the_would_be_index(
    tmp_path, state, monkeypatch
):
    site(tmp_path / "src")
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - {name: pack, tar: {source: src, index: site.caidx, store: s}}
        - {name: deploy, untar: {index: site.caidx, path: out, stores: [s]}}
        """,
    )
    p = plan(m, state)
    assert verbs(p) == ["create", "create"] and p.entries[1].depends_on == ("pack",)
    upload = p.entries[0].action.travel.upload
    (fetch,) = p.entries[1].action.travel.stores
    assert (fetch.chunks, fetch.bytes) == (upload.chunks, upload.bytes)
    results = apply(m, state)
    assert statuses(results) == ["changed", "changed"]
    assert results[1].stats["bytes-from-store"] == fetch.bytes
    assert snapshot(tmp_path / "out") == snapshot(tmp_path / "src")
    calls = counting(monkeypatch)
    assert statuses(apply(m, state)) == ["ok", "ok"]
    assert calls == {"get_chunk": 0, "has_chunk": 0, "store_chunk": 0}


def test_untar_locks_its_target_and_adds_to_the_caches_it_reads_through(cli, tmp_path, v1):
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}, near: {url: near}}
        caches: {fast: {store: s, cache: near}}
        tasks:
        - {name: deploy, untar: {index: site.caidx, path: out, stores: [fast], seeds: [v1]}}
        """,
    )
    loaded = load_manifest(m)
    r = KINDS["untar"].resources(loaded.tasks[0], Resolver(loaded, None))  # type: ignore[arg-type]
    assert r.locks() == {f"store:{tmp_path / 'near'}": False, f"file:{tmp_path / 'out'}": True}
    assert f"file:{tmp_path / 'v1'}/*" in r.patterns
    target = tmp_path / "out"
    with locked(tmp_path / "state", {f"file:{target}": True}, timeout=1):
        r = cli("apply", m, "--state-dir", tmp_path / "state", "--lock-timeout", "0.1")
    assert r.code == 1
    assert r.out.splitlines()[0] == (
        f"failed: [deploy] untar: timed out waiting for lock on {target} held by pid {os.getpid()}"
    )
    assert not target.exists()


def test_the_tree_example_runs_on_a_fresh_clone_and_then_changes_nothing(cli, tmp_path):
    clone = tmp_path / "clone"
    (clone / "manifests").mkdir(parents=True)
    shutil.copy(ROOT / "manifests" / "tree.yaml", clone / "manifests")
    shutil.copytree(ROOT / "schemas", clone / "schemas")
    m = clone / "manifests" / "tree.yaml"
    assert [t.kind for t in load_manifest(m).tasks] == ["tar", "untar"]
    state = ["--state-dir", tmp_path / "state"]
    first = cli("apply", m, *state)
    assert first.out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0", first.out
    assert "0 B fetched" in first.out  # the seed served everything
    copy = clone / ".quickstart" / "schemas.copy"
    assert {p.name: p.read_bytes() for p in copy.iterdir()} == {
        p.name: p.read_bytes() for p in (clone / "schemas").iterdir()
    }
    for extra in ([], ["--verify"]):
        again = cli("apply", m, *state, *extra)
        assert again.out.splitlines()[-1] == "RECAP ok=2 changed=0 failed=0 skipped=0"


def test_a_tar_of_the_tree_an_untar_writes_waits_for_it(tmp_path, state, v1):
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}, mirror: {url: mirror}}
        tasks:
        - {name: deploy, untar: {index: site.caidx, path: out, stores: [s]}}
        - {name: repack, tar: {source: out, index: again.caidx, store: mirror}}
        """,
    )
    p = plan(m, state)
    assert verbs(p) == ["create", "create"]
    assert p.entries[1].action.reason == (
        "its source is written by task 'deploy': planned when that has run"
    )
    assert p.entries[1].depends_on == ("deploy",)
    assert statuses(apply(m, state)) == ["changed", "changed"]
    assert index_of(tmp_path / "again.caidx").encode() == v1.encode()  # the same tree
    assert statuses(apply(m, state)) == ["ok", "ok"]
