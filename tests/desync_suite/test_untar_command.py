"""Ports of desync's cmd/desync/untar_test.go: ``untar`` of its tree.catar, of tree.caidx
from tree.store, and the repair of an invalid chunk in a cache.

desync's tests only ask that the command succeeds; ours also compare what was extracted
with desync's ``cmd/desync/testdata/tree``, the directory those archives were made from.

tree.catar (and the archive tree.caidx indexes) was written by an older desync: its
root's GOODBYE table holds the right items in name order, not casync's search-tree
order. casync and desync read it (neither checks the order); so do we
(test_format_codec.py has the decoder's side of that fix).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

CHUNK = "0589328ff916d08f5fe59a9aa0731571448e91341f37ca5484a85b9f0af14de3"  # in tree.store
OTHER = "0b2a199263ffb2600b6f8be2e03b7439ffb0ad05a00b867f427a716e3e386c2d"  # in blob1.store
UNPRIVILEGED = ("--no-same-owner", "--no-same-permissions")


def snapshot(root: Path) -> dict[str, str | bytes]:
    """Each path below ``root``: a file's bytes, a symlink's target, or "dir"."""
    out: dict[str, str | bytes] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "-> " + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = path.read_bytes()
    return out


def test_untar_command_archive(cli, cmd_data, tmp_path):
    """TestUntarCommandArchive: ``untar --no-same-owner --no-same-permissions tree.catar``."""
    r = cli("untar", *UNPRIVILEGED, cmd_data / "tree.catar", tmp_path / "out")
    assert (r.code, r.err) == (0, "")
    assert snapshot(tmp_path / "out") == snapshot(cmd_data / "tree")


def test_untar_command_index(cli, cmd_data, tmp_path):
    """TestUntarCommandIndex: ``untar -s tree.store -i tree.caidx``."""
    r = cli(
        "untar", "-s", cmd_data / "tree.store", "-i", *UNPRIVILEGED, cmd_data / "tree.caidx",
        tmp_path / "out",
    )  # fmt: skip
    assert (r.code, r.err) == (0, "")
    assert snapshot(tmp_path / "out") == snapshot(cmd_data / "tree")


def test_untar_command_repair(cli, cmd_data, tmp_path):
    """TestUntarCommandRepair: a cache holding another chunk's data under CHUNK's name
    fails the run with --cache-repair=false, naming both ids; with --cache-repair=true
    the chunk is fetched again from the store and the run succeeds."""
    cache = tmp_path / "cache"
    (cache / CHUNK[:4]).mkdir(parents=True)
    shutil.copyfile(
        cmd_data / "blob1.store" / OTHER[:4] / f"{OTHER}.cacnk",
        cache / CHUNK[:4] / f"{CHUNK}.cacnk",
    )
    argv = ["untar", "-s", cmd_data / "tree.store", "-c", cache]
    failed = cli(*argv, "--cache-repair=false", "-i", *UNPRIVILEGED, cmd_data / "tree.caidx",
                 tmp_path / "out1")  # fmt: skip
    assert failed.code == 1
    assert len(failed.err.splitlines()) == 1 and CHUNK in failed.err and OTHER in failed.err
    repaired = cli(*argv, "--cache-repair=true", "-i", *UNPRIVILEGED, cmd_data / "tree.caidx",
                   tmp_path / "out2")  # fmt: skip
    assert (repaired.code, repaired.err) == (0, "")
    assert snapshot(tmp_path / "out2") == snapshot(cmd_data / "tree")
    assert (cache / CHUNK[:4] / f"{CHUNK}.cacnk").read_bytes() == (
        cmd_data / "tree.store" / CHUNK[:4] / f"{CHUNK}.cacnk"
    ).read_bytes()
