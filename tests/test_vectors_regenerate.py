"""The committed casync vectors are what the installed casync makes of our inputs:
tests/vectors/regenerate.py rebuilds them all (a few seconds) and every file must
come out byte for byte as committed. A vector nobody can rebuild fails here."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.vectors import VECTORS
from tests.vectors.regenerate import BLOB_CASES, TREE_CASES, differences, regenerate

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the tree cases chown and mknod (CI runs as root)"
)


@pytest.fixture(scope="module")
def rebuilt(casync, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("vectors")
    regenerate(out, tmp_path_factory.mktemp("work"))
    return out


def test_casync_rebuilds_the_committed_vectors_byte_for_byte(rebuilt):
    assert differences(VECTORS, rebuilt) == []
    assert sorted(p.name for p in (VECTORS / "blob").iterdir()) == sorted(
        c.name for c in BLOB_CASES
    )
    assert sorted(p.name for p in (VECTORS / "tree").iterdir()) == sorted(
        c.name for c in TREE_CASES
    )


def test_the_comparison_names_a_changed_a_missing_and_an_extra_file(rebuilt, tmp_path):
    """The check above can fail: each kind of drift is reported by path."""
    copy = shutil.copytree(rebuilt, tmp_path / "copy")
    index = copy / "blob/small_1000/index.caibx"
    index.write_bytes(index.read_bytes()[:-1] + b"\0")
    (copy / "tree/unix/mtree.txt").unlink()
    (copy / "blob/empty/stray").write_bytes(b"")
    assert differences(rebuilt, copy) == [
        "differs: blob/small_1000/index.caibx",
        f"only in {copy}: blob/empty/stray",
        f"only in {rebuilt}: tree/unix/mtree.txt",
    ]
