"""The untar task's plan lists each entry it changes (create, update, metadata only,
delete) with sizes, in text, JSON and Markdown; ``plan --diff`` shows what differs per
file; and the apply reports the same counts in the same words (issue 19, item 1)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from jsonschema import Draft202012Validator

from desync_decl.reconcile.markdown import plan_markdown
from desync_decl.reconcile.model import Status, Verb
from desync_decl.reconcile.report import plan_json, plan_text
from tests.servers_http import cli_server  # noqa: F401 - fixture
from tests.test_reconcile_kinds import apply, manifest, plan, write
from tests.test_reconcile_tree import PLAN_SCHEMA, published, site, untar_manifest


def _roll(tmp_path: Path) -> Path:
    """v1 untarred at out/, then v2 published as site.caidx; v2's chunks stay in the
    store, so plan --verify lists the archive."""
    m = untar_manifest(tmp_path)
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    assert [r.status for r in apply(m, tmp_path / "state")] == [Status.CHANGED]
    published(site(tmp_path / "v2", 2), tmp_path / "site.caidx", tmp_path / "store")
    return m


def test_plan_lists_each_changed_entry_and_apply_does_exactly_that(tmp_path):
    m = _roll(tmp_path)
    state = tmp_path / "state"
    out = tmp_path / "out"
    inodes = {p: os.lstat(out / p).st_ino for p in ("doc/readme.txt", "secret.key")}
    os.chmod(out / "secret.key", 0o640)
    (entry,) = plan(m, state, verify=True).entries
    a = entry.action
    assert a.verb is Verb.UPDATE
    changes = {path: (change, kind) for path, change, kind, _, _ in a.travel.changes}
    # v2: big.bin and note.txt changed, new.txt added, old.txt gone (kept: no
    # delete_extra); secret.key's mode drifted
    assert changes == {
        "big.bin": ("update", "file"),
        "doc/deep/note.txt": ("update", "file"),
        "new.txt": ("create", "file"),
        "secret.key": ("metadata", "file"),
    }
    sizes = {path: size for path, _, _, size, _ in a.travel.changes}
    sources = {path: dict(f) for path, _, _, _, f in a.travel.changes}
    # big.bin: 150 000 bytes, one 4 KiB block rewritten: most of it is in the tree
    assert sum(sources["big.bin"].values()) == sizes["big.bin"]
    assert sources["big.bin"]["in place"] > sizes["big.bin"] // 2
    assert 0 < sources["big.bin"]["stores"] < sizes["big.bin"] // 2
    assert sources["new.txt"] == {"stores": 18}
    assert sizes["big.bin"] == (tmp_path / "v2" / "big.bin").stat().st_size
    e = a.travel.entries
    assert (e["create"], e["update"], e["metadata"], e["kept"]) == (1, 2, 1, 1)
    assert e["write-bytes"] == sizes["big.bin"] + sizes["doc/deep/note.txt"] + sizes["new.txt"]

    text = "\n".join(plan_text(plan(m, state, verify=True)))
    assert "entries: 1 to create, 2 to update, 1 metadata only," in text
    assert "  update   big.bin (file, 146.5 KiB: " in text
    assert "  create   new.txt (file, 18 B: 18 B from stores)" in text

    (r,) = apply(m, state)
    assert r.status is Status.CHANGED
    counts = (r.stats["created"], r.stats["updated"], r.stats["metadata"], r.stats["unchanged"])
    assert counts == (e["create"], e["update"], e["metadata"], e["unchanged"])
    assert r.stats["bytes-written"] == e["write-bytes"]
    assert r.stats["bytes-kept"] == e["keep-bytes"]
    assert "1 created, 2 updated, 1 metadata fixed" in r.msg
    assert {p: os.lstat(out / p).st_ino for p in inodes} == inodes


def test_plan_json_and_markdown_carry_the_entries(tmp_path):
    m = _roll(tmp_path)
    p = plan(m, tmp_path / "state", verify=True)
    doc = plan_json(p)
    Draft202012Validator(PLAN_SCHEMA).validate(json.loads(json.dumps(doc)))
    travel = doc["tasks"][0]["travel"]
    new = {"path": "new.txt", "change": "create", "type": "file", "bytes": 18}
    assert {**new, "from": {"stores": 18}} in travel["changes"]
    md = plan_markdown(p)
    assert "<summary>deploy: 3 entries change</summary>" in md
    assert "update   big.bin (file, " in md


def test_plan_diff_shows_what_differs_per_file(cli, tmp_path):
    m = _roll(tmp_path)
    os.chmod(tmp_path / "out" / "secret.key", 0o644)  # drift: metadata only
    r = cli("plan", "--verify", "--diff", "--state-dir", tmp_path / "state", m)
    assert r.code == 0, r.err
    assert "  metadata secret.key (file, 3 B)" in r.out
    assert "-secret.key: mode=0644" in r.out and "+secret.key: mode=0600" in r.out
    assert "-doc/deep/note.txt: size=7 time=" not in r.out  # same size: only the digest
    assert "-doc/deep/note.txt: sha512256digest=" in r.out
    plain = cli("plan", "--verify", "--state-dir", tmp_path / "state", m)
    assert "-secret.key" not in plain.out


def test_extras_are_listed_with_their_bytes_when_deleted(tmp_path):
    m = untar_manifest(tmp_path, ", delete_extra: true")
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    apply(m, tmp_path / "state")
    write(tmp_path / "out" / "stray" / "a.tmp", b"x" * 1000)
    write(tmp_path / "out" / "stray" / "b.tmp", b"y" * 24)
    (entry,) = plan(m, tmp_path / "state", verify=True).entries
    assert ("stray", "delete", "dir", 1024, ()) in entry.action.travel.changes
    assert entry.action.travel.entries["delete-bytes"] == 1024


def test_excluded_entries_are_no_change_in_plan_or_apply(tmp_path):
    m = untar_manifest(tmp_path, ', delete_extra: true, exclude: ["*.tmp", "doc/"]')
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    state = tmp_path / "state"
    apply(m, state)
    out = tmp_path / "out"
    assert not (out / "doc").exists()
    write(out / "scratch.tmp", b"mine")
    write(out / "doc" / "local.txt", b"mine too")
    write(out / "stray", b"extra")
    (entry,) = plan(m, state, verify=True).entries
    # the root's mtime moved with what was added; the excluded entries are no change
    changes = [(p, c) for p, c, _, _, _ in entry.action.travel.changes]
    assert changes == [(".", "metadata"), ("stray", "delete")]
    (r,) = apply(m, state)
    assert r.status is Status.CHANGED
    assert (out / "scratch.tmp").read_bytes() == b"mine"
    assert (out / "doc" / "local.txt").read_bytes() == b"mine too"
    assert not (out / "stray").exists()


def test_an_entry_of_another_type_is_one_update_in_plan_and_apply(tmp_path):
    m = untar_manifest(tmp_path)
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    state = tmp_path / "state"
    apply(m, state)
    out = tmp_path / "out"
    os.unlink(out / "secret.key")
    write(out / "secret.key" / "inside", b"a directory where a file was")
    (entry,) = plan(m, state, verify=True).entries
    e = entry.action.travel.entries
    assert ("secret.key", "update", "file", 3, (("stores", 3),)) in entry.action.travel.changes
    (r,) = apply(m, state)
    counts = (r.stats["created"], r.stats["updated"], r.stats["metadata"], r.stats["unchanged"])
    assert counts == (e["create"], e["update"], e["metadata"], e["unchanged"])
    assert (out / "secret.key").read_bytes() == b"key"


def test_a_stray_file_costs_a_directory_mtime_not_a_rewrite(tmp_path):
    """delete_extra off: the stray file stays, its directory's mtime is put back, and no
    file is written (the whole tree was, before)."""
    m = untar_manifest(tmp_path)
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    state = tmp_path / "state"
    apply(m, state)
    out = tmp_path / "out"
    inodes = {p: p.lstat().st_ino for p in out.rglob("*")}
    write(out / "doc" / "stray.tmp", b"left by someone")
    (entry,) = plan(m, state, verify=True).entries
    assert entry.action.reason == "1 metadata only, 9 unchanged, 1 extra kept"
    (r,) = apply(m, state)
    assert (r.stats["metadata"], r.stats["bytes-written"]) == (1, 0)
    assert {p: p.lstat().st_ino for p in inodes} == inodes
    assert (out / "doc" / "stray.tmp").exists()


def test_entries_behind_a_remote_store_are_listed_with_verify_only(tmp_path, cli_server):  # noqa: F811
    """Without --verify the plan fetches nothing from a remote store to list entries."""
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    log = tmp_path / "access.log"
    server = cli_server("chunk-server", "-s", tmp_path / "store", "--log", log)
    m = manifest(
        tmp_path,
        f"""\
        stores: {{remote: {{url: "{server.url}"}}}}
        tasks:
        - name: deploy
          untar: {{index: site.caidx, path: out, stores: [remote]}}
        """,
    )
    state = tmp_path / "state"
    apply(m, state)
    published(site(tmp_path / "v2", 2), tmp_path / "site.caidx", tmp_path / "store")
    before = log.read_text().count("Request: GET ")
    (entry,) = plan(m, state).entries
    assert entry.action.travel.changes == ()
    assert "entries are counted with --verify (the archive must be fetched)" in entry.action.notes
    assert log.read_text().count("Request: GET ") == before
    (entry,) = plan(m, state, verify=True).entries
    assert ("new.txt", "create", "file", 18, (("stores", 18),)) in entry.action.travel.changes
