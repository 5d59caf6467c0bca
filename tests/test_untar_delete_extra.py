"""``untar --delete-extra`` (the verb) and ``delete_extra`` (the task) clear a target the
same way: the same hostile tree, extracted by each, loses the same entries, and
nothing outside it is touched (planted symlinks are deleted, never followed).

The trees, the archive and the store are real; what is deleted is read from the
disk before and after, never from the code under test.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from desync_decl.errors import DesyncError, UsageError
from desync_decl.formats.catar import features
from desync_decl.manifest import load_manifest
from desync_decl.ops.tar import TarInput, tar
from desync_decl.ops.untar import Clearing, untar
from desync_decl.reconcile.model import Status
from tests.test_reconcile_kinds import apply, manifest, write
from tests.test_reconcile_tree import published, site, snapshot


def hostile(out: Path, outside: Path) -> None:
    """Extras and entries of the wrong type in ``out``, symlinks into ``outside`` among them."""
    write(out / "doc" / "mine.txt", b"an extra file")
    write(out / "more" / "deeper" / "inside.txt", b"an extra tree")
    (out / "junk").symlink_to(outside)  # an extra symlink to a directory elsewhere
    (out / "doc" / "passwd").symlink_to(outside / "passwd")  # an extra symlink to a file
    (out / "more" / "escape").symlink_to(outside)  # inside an extra directory
    write(out / "empty", b"a file where the archive has a directory")
    write(out / "doc" / "readme.txt" / "x", b"a directory where the archive has a file")
    (out / "doc" / "deep").symlink_to(outside)  # where the archive has a directory
    os.mkfifo(out / "pipe")  # an extra of a type the archive may not hold


@pytest.fixture
def outside(tmp_path) -> Path:
    """What the planted symlinks point at: it must survive every case."""
    write(tmp_path / "outside" / "passwd", b"root:x:0:0\n")
    write(tmp_path / "outside" / "sub" / "keep.txt", b"keep")
    return tmp_path / "outside"


def entries(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def untouched(outside: Path) -> bool:
    return (
        entries(outside) == {"passwd", "sub", "sub/keep.txt"}
        and (outside / "passwd").read_bytes() == b"root:x:0:0\n"
    )


def test_the_verb_and_the_task_delete_the_same_entries_of_a_hostile_tree(cli, tmp_path, outside):
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", tmp_path / "store")
    by_verb, by_task = tmp_path / "verb" / "out", tmp_path / "task" / "out"
    for out in (by_verb, by_task):
        hostile(out, outside)
    before = entries(by_verb)

    r = cli(
        "untar", "-i", "-s", tmp_path / "store", "--delete-extra", tmp_path / "site.caidx", by_verb
    )
    assert r.code == 0, r.err
    m = manifest(
        tmp_path,
        "stores: {s: {url: store}}\ntasks:\n- name: deploy\n"
        f'  untar: {{index: site.caidx, path: "{by_task}", stores: [s], delete_extra: true}}\n',
    )
    (result,) = apply(m, tmp_path / "state")
    assert result.status is Status.CHANGED, result.msg

    gone = before - entries(by_verb)
    assert gone == before - entries(by_task)
    assert snapshot(by_verb) == snapshot(by_task)
    extras = {"doc/mine.txt", "doc/passwd", "junk", "more", "more/deeper"}
    extras |= {"more/deeper/inside.txt", "more/escape", "doc/readme.txt/x"}
    fifos = features.DESYNC_TAR & features.WITH_FIFOS
    assert gone == extras | ({"pipe"} if fifos else set())
    assert result.stats["deleted"] == 4 + bool(fifos)  # the topmost extras
    assert result.stats["replaced"] == 3  # empty, doc/readme.txt, doc/deep
    kept = {"pipe"} if not fifos else set()
    assert entries(by_verb) == entries(tmp_path / "v1") | kept
    assert untouched(outside)


def test_the_verb_clears_the_way_for_a_catar_file_and_refuses_a_stream(cli, tmp_path, outside):
    src = site(tmp_path / "v1")
    archive = tmp_path / "site.catar"
    with open(archive, "wb") as f:
        tar(TarInput(src), f)
    out = tmp_path / "out"
    hostile(out, outside)
    os.unlink(out / "pipe")

    plain = cli("untar", archive, out)  # without --delete-extra: refused, nothing deleted
    assert plain.code == 1 and len(plain.err.splitlines()) == 1, plain.err
    assert (out / "doc" / "mine.txt").exists() and (out / "empty").is_file()

    as_tar = cli("untar", "--delete-extra", "--output-format", "gnu-tar", archive, "-")
    assert as_tar.code == 1 and "needs a directory" in as_tar.err

    r = cli("untar", "--delete-extra", archive, out)
    assert r.code == 0, r.err
    assert snapshot(out) == snapshot(src)
    assert untouched(outside)


def test_clearing_refuses_an_archive_that_cannot_be_read_twice(tmp_path, outside):
    """The types are read before the extraction: a pipe would be consumed by that."""
    src = write(tmp_path / "small" / "note.txt", b"small enough for a pipe's buffer").parent
    out = tmp_path / "out"
    hostile(out, outside)
    read_end, write_end = os.pipe()
    with open(read_end, "rb") as pipe, open(write_end, "wb") as feed:
        tar(TarInput(src), feed)
        feed.close()
        with pytest.raises(UsageError, match="not a stream"):
            untar(pipe, out, clearing=Clearing.EXTRA)
    assert (out / "doc" / "mine.txt").exists()
    assert stat.S_ISFIFO((out / "pipe").lstat().st_mode)
    assert untouched(outside)


def entries_and_bytes(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in root.rglob("*")
    }


@pytest.mark.parametrize("inside", ["store", "cache", "symlinked store"])
def test_the_verb_refuses_to_delete_its_own_store_or_cache(cli, tmp_path, inside):
    """A local store or cache at or below the target is not in the archive: deleting
    extras would delete it, then miss its chunks. Refused before anything goes."""
    out = tmp_path / "out"
    store = out / "store"
    src = site(tmp_path / "v1")
    published(src, tmp_path / "site.caidx", store)
    write(out / "mine.txt", b"an extra file")
    stores = ["-s", store]
    if inside == "cache":
        published(src, tmp_path / "site.caidx", tmp_path / "upstream")
        stores = ["-s", tmp_path / "upstream", "-c", store]
    elif inside == "symlinked store":
        (tmp_path / "elsewhere").symlink_to(out)
        (tmp_path / "other").mkdir()  # an empty store, tried first
        stores = ["-s", f"{tmp_path / 'other'}|{tmp_path / 'elsewhere' / 'store'}"]
    before = entries_and_bytes(out)

    r = cli("untar", "-i", *stores, "--delete-extra", tmp_path / "site.caidx", out)

    assert r.code == 1 and len(r.err.splitlines()) == 1, r.err
    assert f"lies in {out}" in r.err and "would delete it" in r.err, r.err
    assert entries_and_bytes(out) == before


def test_the_task_refuses_to_delete_its_own_store(tmp_path):
    """Written inside the target: a validation error; reached through a symlink (known
    only when the paths are resolved): refused when applied, nothing deleted."""
    out = tmp_path / "out"
    published(site(tmp_path / "v1"), tmp_path / "site.caidx", out / "store")
    write(out / "mine.txt", b"an extra file")
    before = entries_and_bytes(out)
    task = "untar: {index: site.caidx, path: out, stores: [s], delete_extra: true}"

    m = manifest(tmp_path, f"stores: {{s: {{url: out/store}}}}\ntasks:\n- name: deploy\n  {task}\n")
    with pytest.raises(DesyncError) as refused:
        load_manifest(m)
    assert str(refused.value) == (
        f"{m}:6:68: 'untar.delete_extra' of task 'deploy': would delete out/store,"
        " the store 's' it reads through (3:19)"
    )

    (tmp_path / "link").symlink_to(out / "store")
    m = manifest(tmp_path, f"stores: {{s: {{url: link}}}}\ntasks:\n- name: deploy\n  {task}\n")
    (result,) = apply(m, tmp_path / "state")
    assert result.status is Status.FAILED, result.msg
    assert f"lies in {out}" in result.msg, result.msg
    assert entries_and_bytes(out) == before
