"""Each reconciler kind through observe -> plan -> apply, on real files and real local
stores: what it plans, that apply does exactly that, and that a second run is a no-op.

Expected numbers come from the indexes and files themselves, never from the
code under test. Helpers here are shared by the other test_reconcile_* files.
"""

from __future__ import annotations

import os
import random
import textwrap
from pathlib import Path

import pytest

from desync_decl.formats import index as index_format
from desync_decl.formats.digest import Digest
from desync_decl.manifest import load_manifest
from desync_decl.ops.make import make
from desync_decl.reconcile import ApplyOptions, apply_manifest, open_context, plan_manifest
from desync_decl.reconcile.kinds import KINDS, register
from desync_decl.reconcile.model import EntryState, Status, Verb
from desync_decl.stores.local import LocalStore
from tests.prune_sites import backdate

SIZES = "1K:4K:16K"


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def blob(seed: int, size: int = 200_000) -> bytes:
    return random.Random(seed).randbytes(size)


def manifest(dir: Path, body: str, name: str = "m.yaml") -> Path:
    head = f'version: 1\ndefaults: {{chunk_size: "{SIZES}"}}\n'
    path = dir / name
    path.write_text(head + textwrap.dedent(body))
    return path


def one_task(dir: Path, task: str) -> Path:
    """A manifest with store ``s`` (``store/``) and one task."""
    return manifest(dir, f"stores: {{s: {{url: store}}}}\ntasks:\n- {task}\n")


def plan(path: Path, state: Path, **kw):
    ctx = open_context(
        load_manifest(path), state_dir=state, concurrency=4, verify=kw.pop("verify", False)
    )
    try:
        return plan_manifest(ctx, **kw)
    finally:
        ctx.resolver.close()


def apply(path: Path, state: Path, *, verify: bool = False, tags=(), skip_tags=(), **options):
    ctx = open_context(load_manifest(path), state_dir=state, concurrency=4, verify=verify)
    try:
        return apply_manifest(ctx, ApplyOptions(**options), tags=tags, skip_tags=skip_tags)
    finally:
        ctx.resolver.close()


def statuses(results) -> list[str]:
    return [r.status.value for r in results]


def verbs(p) -> list[str]:
    return [e.action.verb.value if e.action else e.state.value for e in p.entries]


def index_of(path: Path):
    return index_format.decode(path.read_bytes())


def make_index(source: Path, index: Path, store: Path | None = None):
    """An index (and chunks) made directly by ops.make, independent of the reconciler."""
    from desync_decl.formats.chunk_sizes import ChunkSizes

    st = LocalStore(store, create=True) if store else None
    result = make(source, sizes=ChunkSizes.parse(SIZES), store=st)
    index.parent.mkdir(parents=True, exist_ok=True)
    index.write_bytes(result.index.encode())
    return result.index


def store_ids(store: Path) -> set[str]:
    return {p.name.split(".")[0] for p in store.rglob("*.cacnk")}


@pytest.fixture
def state(tmp_path) -> Path:
    return tmp_path / "state"


# --- make -----------------------------------------------------------------------------


def test_make_creates_then_is_a_recorded_no_op_then_updates_when_the_source_changes(
    tmp_path, state
):
    src = write(tmp_path / "app.img", blob(1))
    m = one_task(tmp_path, "{name: mk, make: {source: app.img, index: app.caibx, store: s}}")
    p = plan(m, state)
    (entry,) = p.entries
    assert entry.action.verb is Verb.CREATE
    expected = make_index(src, tmp_path / "expected.caibx")
    unique = expected.unique_ids()
    assert entry.action.travel.upload.chunks == len(unique)
    assert entry.action.travel.upload.bytes == sum({c.id: c.size for c in expected}.values())
    assert not (tmp_path / "app.caibx").exists() and not (tmp_path / "store").exists()

    (r,) = apply(m, state)
    assert r.status is Status.CHANGED and r.stats["chunks-stored"] == len(unique)
    assert (tmp_path / "app.caibx").read_bytes() == expected.encode()
    assert store_ids(tmp_path / "store") == {i.hex() for i in unique}

    assert verbs(plan(m, state)) == ["no-op"]
    assert plan(m, state).entries[0].action.reason == "index is current (recorded)"
    assert statuses(apply(m, state)) == ["ok"]

    src.write_bytes(blob(1)[:100_000] + b"new" + blob(1)[100_000:])
    (entry,) = plan(m, state).entries
    assert entry.action.verb is Verb.UPDATE and entry.action.reason == "the source changed"
    assert 0 < entry.action.travel.upload.chunks < len(unique)  # only the changed chunks
    assert statuses(apply(m, state)) == ["changed"]
    assert index_of(tmp_path / "app.caibx").length == 200_003


def test_make_verify_finds_chunks_missing_from_the_store(tmp_path, state):
    write(tmp_path / "app.img", blob(2))
    m = one_task(tmp_path, "{name: mk, make: {source: app.img, index: app.caibx, store: s}}")
    apply(m, state)
    victim = next((tmp_path / "store").rglob("*.cacnk"))
    victim.unlink()
    assert verbs(plan(m, state)) == ["no-op"]  # the fast path trusts its record
    (entry,) = plan(m, state, verify=True).entries
    assert entry.action.verb is Verb.UPDATE
    assert entry.action.reason == "store 's' lacks 1 of its chunks"
    assert statuses(apply(m, state, verify=True)) == ["changed"]
    assert victim.exists()


# --- extract --------------------------------------------------------------------------


@pytest.fixture
def two_versions(tmp_path):
    """v1 on the machine (with its index), v2 published: index + store."""
    old = blob(3, 300_000)
    new = old[:50_000] + blob(4, 20_000) + old[70_000:]
    v1 = write(tmp_path / "v1.img", old)
    v2 = write(tmp_path / "build" / "v2.img", new)
    make_index(v1, tmp_path / "v1.img.caibx")
    index = make_index(v2, tmp_path / "v2.caibx", tmp_path / "store")
    return v1, v2, index


def extract_manifest(tmp_path, extra: str = "", seeds: str = "[v1.img]") -> Path:
    return manifest(
        tmp_path,
        f"""\
        stores: {{s: {{url: store}}}}
        tasks:
        - name: install
          extract: {{index: v2.caibx, path: out/app.img, stores: [s], seeds: {seeds}{extra}}}
        """,
    )


def test_extract_plan_numbers_are_what_apply_does(tmp_path, state, two_versions):
    v1, v2, index = two_versions
    m = extract_manifest(tmp_path)
    (entry,) = plan(m, state).entries
    t = entry.action.travel
    assert entry.action.verb is Verb.CREATE and entry.action.reason == "absent"
    old_ids = index_of(tmp_path / "v1.img.caibx").unique_ids()
    fetched = {c.id: c.size for c in index if c.id not in old_ids}
    assert [(s.name, s.chunks, s.bytes) for s in t.stores] == [
        ("s", len(fetched), sum(fetched.values()))
    ]
    assert t.seeds[0].file == str(v1) and t.seeds[0].bytes > 250_000
    assert t.total.bytes == index.length
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED
    assert r.stats["bytes-from-store"] == t.stores[0].bytes
    assert r.stats["chunks-from-store"] == t.stores[0].chunks
    assert (
        r.stats["bytes-copied-from-seeds"] + r.stats["bytes-cloned-from-seeds"] == t.seeds[0].bytes
    )
    assert (tmp_path / "out" / "app.img").read_bytes() == v2.read_bytes()
    assert statuses(apply(m, state)) == ["ok"]
    assert plan(m, state).entries[0].action.reason == "converged (recorded)"


def test_extract_without_a_record_hashes_the_target_and_records_it(tmp_path, state, two_versions):
    _, v2, _ = two_versions
    write(tmp_path / "out" / "app.img", v2.read_bytes())
    m = extract_manifest(tmp_path)
    (entry,) = plan(m, state).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.NOOP, "converged")
    assert statuses(apply(m, state)) == ["ok"]  # records it
    assert plan(m, state).entries[0].action.reason == "converged (recorded)"


def test_extract_edited_behind_our_back_is_found_by_verify(tmp_path, state, two_versions):
    m = extract_manifest(tmp_path)
    apply(m, state)
    target = tmp_path / "out" / "app.img"
    st = target.stat()
    with open(target, "r+b") as f:  # same size, mtime put back: only reading tells
        f.seek(1000)
        f.write(b"drift")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert verbs(plan(m, state)) == ["no-op"]
    (entry,) = plan(m, state, verify=True).entries
    assert entry.action.verb is Verb.UPDATE
    assert entry.action.reason.startswith("content differs (")
    assert statuses(apply(m, state, verify=True)) == ["changed"]
    assert target.read_bytes() == (tmp_path / "build" / "v2.img").read_bytes()


def test_a_new_index_for_a_recorded_file_is_planned_without_reading_it(
    tmp_path, state, two_versions, monkeypatch
):
    _, v2, _ = two_versions
    old = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: install
          extract: {index: v1.img.caibx, path: out/app.img, stores: [s], seeds: [v1.img]}
        """,
        "old.yaml",
    )
    assert statuses(apply(old, state)) == ["changed"]
    m = extract_manifest(tmp_path)
    import desync_decl.reconcile.kinds.extract as kind

    real = kind.plan_extract

    def no_target_reads(index, path, *, in_place=False, **kw):
        assert not in_place  # in place is where the target would be read and hashed
        return real(index, path, in_place=in_place, **kw)

    monkeypatch.setattr(kind, "plan_extract", no_target_reads)
    (entry,) = plan(m, state).entries
    held = index_of(tmp_path / "v1.img.caibx").file_digest()
    assert entry.action.verb is Verb.UPDATE
    assert entry.action.reason == f"a new index (the file holds {held})"
    assert entry.action.diff.before["content"] == f"index {held}"
    assert statuses(apply(m, state)) == ["changed"]
    assert (tmp_path / "out" / "app.img").read_bytes() == v2.read_bytes()


def test_extract_mode_only_change_is_an_update_without_fetching(tmp_path, state, two_versions):
    m = extract_manifest(tmp_path, ', mode: "0640"')
    apply(m, state)
    target = tmp_path / "out" / "app.img"
    assert target.stat().st_mode & 0o777 == 0o640
    target.chmod(0o600)
    (entry,) = plan(m, state).entries
    assert (entry.action.verb, entry.action.reason) == (Verb.UPDATE, "mode 0600 -> 0640")
    assert entry.action.travel.stores == ()
    ino = target.stat().st_ino
    (r,) = apply(m, state, diff=True)
    assert r.status is Status.CHANGED and target.stat().st_ino == ino
    assert (r.diff.before["mode"], r.diff.after["mode"]) == ("0600", "0640")
    assert target.stat().st_mode & 0o777 == 0o640
    assert statuses(apply(m, state)) == ["ok"]


def test_the_diff_of_a_new_file_says_whose_it_will_be(tmp_path, state, two_versions):
    """A task that names no owner or group creates the file as this process's user:
    the diff's "after" says so (an Ansible ``--diff`` reader sees the owner)."""
    import grp
    import pwd

    (r,) = apply(extract_manifest(tmp_path, ""), state, diff=True)
    assert r.status is Status.CHANGED and r.diff.before == {"content": "absent"}
    assert r.diff.after["owner"] == pwd.getpwuid(os.geteuid()).pw_name
    assert r.diff.after["group"] == grp.getgrgid(os.getegid()).gr_name
    target = tmp_path / "out" / "app.img"
    assert (target.stat().st_uid, target.stat().st_gid) == (os.geteuid(), os.getegid())


def test_extract_owner_and_group_by_name_or_id_and_unknown_names(tmp_path, state, two_versions):
    import grp
    import pwd

    user, group = pwd.getpwuid(os.getuid()).pw_name, grp.getgrgid(os.getgid()).gr_name
    m = extract_manifest(tmp_path, f", owner: {user}, group: {os.getgid()}")
    (r,) = apply(m, state, diff=True)
    assert r.status is Status.CHANGED and r.diff.after["owner"] == user
    assert r.diff.after["group"] == group
    assert statuses(apply(m, state)) == ["ok"]
    m = extract_manifest(tmp_path, ", owner: no-such-user-here")
    (entry,) = plan(m, state).entries
    assert (entry.state, entry.message) == (EntryState.ERROR, "unknown user 'no-such-user-here'")


def test_extract_backup_keeps_the_previous_file(tmp_path, state, two_versions):
    v1, v2, _ = two_versions
    target = write(tmp_path / "out" / "app.img", v1.read_bytes())
    m = extract_manifest(tmp_path, ", backup: true")
    (r,) = apply(m, state)
    backup = Path(r.stats["backup"])
    assert backup.name.startswith("app.img.") and backup.name.endswith("~")
    assert backup.read_bytes() == v1.read_bytes()
    assert target.read_bytes() == v2.read_bytes()


def test_extract_pin_refuses_another_index(tmp_path, state, two_versions):
    _, _, index = two_versions
    right = index.file_digest()
    wrong = "sha512-256:" + "0" * 64
    m = extract_manifest(tmp_path, f', pin: "{wrong}"')
    (entry,) = plan(m, state).entries
    assert entry.state is EntryState.ERROR
    assert (
        entry.message == f"index {tmp_path / 'v2.caibx'} has digest {right}, the task pins {wrong}"
    )
    (r,) = apply(m, state)
    assert r.status is Status.FAILED and not (tmp_path / "out" / "app.img").exists()
    m = extract_manifest(tmp_path, f', pin: "{right}"')
    assert statuses(apply(m, state)) == ["changed"]


def test_extract_in_place_keeps_what_is_right(tmp_path, state, two_versions):
    v1, v2, index = two_versions
    target = write(tmp_path / "out" / "app.img", v1.read_bytes())
    m = extract_manifest(tmp_path, ", in_place: true", seeds="[]")
    (entry,) = plan(m, state).entries
    t = entry.action.travel
    old_ids = index_of(tmp_path / "v1.img.caibx").unique_ids()
    assert t.in_place.chunks > 0 and t.stores[0].chunks <= len(index.unique_ids() - old_ids) + 2
    ino = target.stat().st_ino
    (r,) = apply(m, state)
    assert r.stats["chunks-in-place"] == t.in_place.chunks
    assert target.stat().st_ino == ino and target.read_bytes() == v2.read_bytes()


def test_a_missing_seed_is_left_out_with_a_note(tmp_path, state, two_versions):
    m = extract_manifest(tmp_path, seeds="[nowhere.img]")
    (entry,) = plan(m, state).entries
    assert entry.action.notes == (f"seed {tmp_path / 'nowhere.img'}: no such file, not used",)
    assert statuses(apply(m, state)) == ["changed"]


def test_extract_of_an_index_a_make_writes_is_planned_from_the_would_be_index(tmp_path, state):
    src = write(tmp_path / "app.img", blob(5))
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - {name: mk, make: {source: app.img, index: app.caibx, store: s}}
        - {name: ex, extract: {index: app.caibx, path: out.img, stores: [s]}}
        """,
    )
    p = plan(m, state)
    assert verbs(p) == ["create", "create"]
    assert p.entries[1].depends_on == ("mk",)
    stores = p.entries[1].action.travel.stores
    results = apply(m, state)
    assert statuses(results) == ["changed", "changed"]
    assert results[1].stats["bytes-from-store"] == stores[0].bytes
    assert results[1].stats["chunks-from-store"] == stores[0].chunks
    assert p.entries[1].action.facts.digest == results[1].action.facts.digest
    assert (tmp_path / "out.img").read_bytes() == src.read_bytes()


# --- chop and cache ---------------------------------------------------------------------


def test_chop_stores_only_what_the_store_lacks(tmp_path, state):
    src = write(tmp_path / "app.img", blob(6))
    index = make_index(src, tmp_path / "app.caibx")
    m = one_task(tmp_path, "{name: c, chop: {index: app.caibx, source: app.img, store: s}}")
    (entry,) = plan(m, state).entries
    assert entry.action.verb is Verb.CREATE
    assert entry.action.travel.upload.chunks == len(index.unique_ids())
    (r,) = apply(m, state)
    assert r.stats["chunks-stored"] == len(index.unique_ids())
    assert statuses(apply(m, state)) == ["ok"]
    next((tmp_path / "store").rglob("*.cacnk")).unlink()
    (entry,) = plan(m, state, verify=True).entries
    assert (entry.action.verb, entry.action.travel.upload.chunks) == (Verb.UPDATE, 1)
    assert apply(m, state, verify=True)[0].stats["chunks-stored"] == 1


def test_cache_copies_the_missing_chunks_and_says_where_from(tmp_path, state):
    src = write(tmp_path / "app.img", blob(7))
    index = make_index(src, tmp_path / "app.caibx", tmp_path / "origin")
    m = manifest(
        tmp_path,
        """\
        stores: {origin: {url: origin}, near: {url: near}}
        tasks:
        - {name: warm, cache: {indexes: [app.caibx], stores: [origin], cache: near}}
        """,
    )
    (entry,) = plan(m, state).entries
    n = len(index.unique_ids())
    assert entry.action.travel.upload.chunks == n
    assert [(s.name, s.chunks) for s in entry.action.travel.stores] == [("origin", n)]
    assert apply(m, state)[0].stats["chunks-copied"] == n
    assert store_ids(tmp_path / "near") == store_ids(tmp_path / "origin")
    assert statuses(apply(m, state)) == ["ok"]


def test_extract_through_a_cache_counts_cache_hits_and_store_fetches(tmp_path, state):
    src = write(tmp_path / "app.img", blob(8))
    index = make_index(src, tmp_path / "app.caibx", tmp_path / "origin")
    first = index.chunk(0)
    near = LocalStore(tmp_path / "near", create=True)
    near.store_chunk(LocalStore(tmp_path / "origin").get_chunk(first.id))
    m = manifest(
        tmp_path,
        """\
        stores: {origin: {url: origin}, near: {url: near}}
        caches: {fast: {store: origin, cache: near}}
        tasks:
        - {name: ex, extract: {index: app.caibx, path: out.img, stores: [fast]}}
        """,
    )
    stores = plan(m, state).entries[0].action.travel.stores
    by = {(s.name, s.role, s.via): (s.chunks, s.bytes) for s in stores}
    n = len(index.unique_ids())
    rest = sum({c.id: c.size for c in index}.values()) - first.size
    assert by == {
        ("near", "cache", "fast"): (1, first.size),
        ("origin", "store", "fast"): (n - 1, rest),
    }
    apply(m, state)
    assert store_ids(tmp_path / "near") == store_ids(tmp_path / "origin")  # the cache filled


# --- prune and verify -------------------------------------------------------------------


def test_prune_lists_what_it_deletes_and_deletes_exactly_that(tmp_path, state):
    keep = make_index(
        write(tmp_path / "a.img", blob(9)), tmp_path / "rel" / "a.caibx", tmp_path / "store"
    )
    gone = make_index(
        write(tmp_path / "b.img", blob(10)), tmp_path / "old.caibx", tmp_path / "store"
    )
    backdate(tmp_path / "store")  # older than prune's minimum age
    m = one_task(tmp_path, '{name: p, prune: {store: s, keep: ["rel/*.caibx"]}}')
    (entry,) = plan(m, state).entries
    expected = sorted(i.hex() for i in gone.unique_ids() - keep.unique_ids())
    assert entry.action.verb is Verb.DELETE and list(entry.action.travel.delete.ids) == expected
    (r,) = apply(m, state, check=True)
    assert r.status is Status.CHANGED and r.msg.startswith("would delete:")
    assert store_ids(tmp_path / "store") >= set(expected)  # --check deleted nothing
    assert statuses(apply(m, state)) == ["changed"]
    assert store_ids(tmp_path / "store") == {i.hex() for i in keep.unique_ids()}
    assert verbs(plan(m, state)) == ["no-op"]


def test_prune_refuses_an_empty_keep_set(tmp_path, state):
    make_index(write(tmp_path / "a.img", blob(11)), tmp_path / "a.caibx", tmp_path / "store")
    m = one_task(tmp_path, '{name: p, prune: {store: s, keep: ["nothing/*.caibx"]}}')
    (entry,) = plan(m, state).entries
    assert entry.state is EntryState.ERROR
    assert entry.message.startswith(
        f"refusing to prune {tmp_path / 'store'}: the keep set is empty"
    )
    assert statuses(apply(m, state)) == ["failed"]
    assert len(store_ids(tmp_path / "store")) == len(index_of(tmp_path / "a.caibx").unique_ids())


def test_verify_reports_invalid_chunks_and_repairs_only_when_asked(tmp_path, state):
    index = make_index(
        write(tmp_path / "a.img", blob(12)), tmp_path / "a.caibx", tmp_path / "store"
    )
    bad = next((tmp_path / "store").rglob("*.cacnk"))
    bad.write_bytes(b"not zstd")
    body = "stores: {s: {url: store}}\ntasks:\n- {name: v, verify: {store: s%s}}\n"
    m = manifest(tmp_path, body % "")
    (entry,) = plan(m, state).entries
    assert entry.state is EntryState.ERROR and entry.message.startswith("1 invalid chunk in")
    m = manifest(tmp_path, body % ", repair: true")
    (entry,) = plan(m, state).entries
    assert entry.action.verb is Verb.DELETE
    assert entry.action.travel.delete.ids == (bad.name.split(".")[0],)
    assert entry.action.travel.checked.chunks == len(index.unique_ids())
    assert statuses(apply(m, state)) == ["changed"] and not bad.exists()
    assert statuses(apply(m, state)) == ["ok"]


def test_the_kind_registry_refuses_a_duplicate_name():
    assert sorted(KINDS) == [
        "cache",
        "chop",
        "extract",
        "make",
        "prune",
        "tar",
        "untar",
        "verify",
    ]
    with pytest.raises(ValueError, match="reconciler kind 'make' is registered twice"):
        register(KINDS["make"], dict(KINDS))
    assert Digest.SHA512_256  # (imported for the digests above)
