"""Directory trees and sources as root next to a hostile local user (``nobody``, via
setpriv): a symlink planted where the attacker can write, as an untar target, a
directory on the way to it, a ``make``/``chop``/``tar`` source or the directory of an
output, must never make root delete, chmod or fill a directory only root may write,
nor read a root-only file into a store (issue 12, H1 and M2 of the red team).

Real trees, real local stores, a real unprivileged process as the attacker.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from tests import test_root_safety
from tests.test_reconcile_kinds import apply, blob, make_index, manifest, store_ids, write
from tests.test_reconcile_tree import published, site
from tests.test_root_safety import PLANT_TARGET, SECRET, as_nobody

shared = test_root_safety.shared  # the fixture: a directory owned by nobody

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the attacks need root (the victim) and nobody (the attacker)"
)

REFUSED = "a symlink in a directory others can write"


@pytest.fixture
def rootonly(tmp_path) -> Path:
    """A directory only root may enter, holding a precious file."""
    dir = tmp_path / "root-only"
    dir.mkdir(mode=0o700)
    write(dir / "precious.conf", SECRET).chmod(0o600)
    return dir


def untouched(dir: Path) -> bool:
    st = dir.stat()
    return (
        stat.S_IMODE(st.st_mode) == 0o700
        and sorted(p.name for p in dir.iterdir()) == ["precious.conf"]
        and (dir / "precious.conf").read_bytes() == SECRET
    )


def plant(link: Path, to: Path) -> None:
    assert as_nobody(PLANT_TARGET, link, to).returncode == 0


@pytest.fixture
def archive(tmp_path) -> Path:
    """``site.caidx`` of a small tree, its chunks in ``store``."""
    published(site(tmp_path / "src"), tmp_path / "site.caidx", tmp_path / "store")
    return tmp_path / "site.caidx"


def untar_task(tmp_path: Path, path: Path) -> Path:
    return manifest(
        tmp_path,
        "stores: {s: {url: store}}\ntasks:\n- name: deploy\n"
        f'  untar: {{index: site.caidx, path: "{path}", stores: [s], delete_extra: true}}\n',
    )


# --- H1: untar -----------------------------------------------------------------------------


@pytest.mark.parametrize("planted", ["tree", "sub"], ids=["at-the-tree", "on-the-way"])
def test_untar_never_deletes_or_fills_through_a_planted_symlink(
    tmp_path, shared, rootonly, archive, planted
):
    """``tree -> /root-only`` (or ``sub -> /root-only`` on the way to ``sub/tree``): before,
    delete_extra deleted precious.conf, the directory became 0755 and got the archive."""
    if planted == "tree":
        plant(shared / "tree", rootonly)
        target = shared / "tree"
    else:
        plant(shared / "sub", tmp_path)  # sub/root-only/ is the directory above
        target = shared / "sub" / "root-only"
    (r,) = apply(untar_task(tmp_path, target), tmp_path / "state")
    assert r.status.value == "failed"
    assert r.msg == f"cannot untar to {target}: {shared / planted} is {REFUSED}"
    assert untouched(rootonly)


def test_the_untar_verb_refuses_a_planted_symlink_as_its_target(
    tmp_path, shared, rootonly, archive, cli
):
    plant(shared / "tree", rootonly)
    r = cli("untar", "-i", "-s", tmp_path / "store", archive, shared / "tree")
    assert (r.code, r.err) == (
        1,
        f"desync-decl: error: cannot extract to {shared / 'tree'}: "
        f"{shared / 'tree'} is {REFUSED}\n",
    )
    assert untouched(rootonly)


PLANT_BELOW = """
import os, sys
tree, victim = sys.argv[1], sys.argv[2]
os.mkdir(tree)
os.symlink(victim, os.path.join(tree, "doc"))  # the archive has doc/ (a directory)
os.symlink(victim, os.path.join(tree, "junk"))  # an extra: deleted with delete_extra
"""


def test_symlinks_planted_below_the_tree_are_replaced_never_followed(
    tmp_path, shared, rootonly, archive
):
    """The tree itself is the attacker's: below its root everything is done relative to
    directory fds without following a symlink (a guard: this held before too)."""
    assert as_nobody(PLANT_BELOW, shared / "tree", rootonly).returncode == 0
    (r,) = apply(untar_task(tmp_path, shared / "tree"), tmp_path / "state")
    assert r.status.value == "changed", r.msg
    assert untouched(rootonly)
    assert (shared / "tree" / "doc" / "readme.txt").is_file()
    assert not (shared / "tree" / "doc").is_symlink() and not os.path.lexists(
        shared / "tree" / "junk"
    )


def test_a_tree_below_a_directory_only_root_writes_is_reached_through_its_symlink(
    tmp_path, archive
):
    """``/lib -> usr/lib``: whoever made that symlink could as well have written the tree."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to("real")
    (r,) = apply(untar_task(tmp_path, tmp_path / "link" / "out"), tmp_path / "state")
    assert r.status.value == "changed", r.msg
    assert (tmp_path / "real" / "out" / "doc" / "readme.txt").is_file()


# --- M2: sources and outputs of make, chop and tar ------------------------------------------


@pytest.fixture
def secret(rootonly) -> Path:
    """A root-only image big enough for several chunks."""
    file = write(rootonly / "secret.img", blob(77, 100_000))
    file.chmod(0o600)
    return file


SOURCES = {  # kind: (the name planted, the task's fields, what failed)
    "make": ("src.img", '{source: "SRC", index: out.caibx, store: pub}', "open"),
    "chop": ("src.img", '{index: secret.caibx, source: "SRC", store: pub}', "open"),
    "tar": ("tree", '{source: "SRC", index: out.caidx, store: pub}', "read"),
}


@pytest.mark.parametrize("kind", SOURCES)
def test_a_planted_source_is_never_read_into_a_store(tmp_path, shared, secret, kind):
    """``src.img -> /root-only/secret.img`` (``tree -> /root-only`` for tar): before, the
    secret's chunks were published in the store, readable by all."""
    name, fields, action = SOURCES[kind]
    make_index(secret, tmp_path / "secret.caibx")  # chop's: an index of it, leaked or guessed
    source = shared / name
    plant(source, secret if kind != "tar" else secret.parent)
    task = fields.replace("SRC", str(source))
    m = manifest(
        tmp_path, f"stores: {{pub: {{url: pubstore}}}}\ntasks:\n- {{name: t, {kind}: {task}}}\n"
    )
    (r,) = apply(m, tmp_path / "state")
    assert r.status.value == "failed"
    assert r.msg == f"cannot {action} {source}: {source} is {REFUSED}"
    assert not store_ids(tmp_path / "pubstore") and not list(tmp_path.glob("out.*"))


@pytest.mark.parametrize("kind", ["make", "tar"])
def test_an_index_is_never_written_through_a_planted_directory(tmp_path, shared, rootonly, kind):
    write(tmp_path / "src" / "app.img", blob(78, 50_000))
    plant(shared / "sub", rootonly)
    index = shared / "sub" / "out.caibx"
    source = "src/app.img" if kind == "make" else "src"
    m = manifest(
        tmp_path,
        "stores: {s: {url: store}}\ntasks:\n"
        f'- {{name: w, {kind}: {{source: {source}, index: "{index}", store: s}}}}\n',
    )
    (r,) = apply(m, tmp_path / "state")
    assert r.status.value == "failed"
    assert r.msg == f"cannot write {index}: {shared / 'sub'} is {REFUSED}"
    assert untouched(rootonly)


def test_the_tar_verb_refuses_a_planted_source_and_output_directory(
    tmp_path, shared, rootonly, cli
):
    plant(shared / "tree", rootonly)
    r = cli("tar", tmp_path / "out.catar", shared / "tree")
    assert (r.code, r.err) == (
        1,
        f"desync-decl: error: cannot read {shared / 'tree'}: {shared / 'tree'} is {REFUSED}\n",
    )
    assert not (tmp_path / "out.catar").exists()
    site(tmp_path / "src")
    r = cli("tar", shared / "tree" / "out.catar", tmp_path / "src")
    assert (r.code, r.err) == (
        1,
        f"desync-decl: error: cannot write {shared / 'tree' / 'out.catar'}: "
        f"{shared / 'tree'} is {REFUSED}\n",
    )
    assert untouched(rootonly)
