"""desync's ``cmd/desync/prune_test.go``: ``prune`` after ``chop``, with another index.

desync's test chops blob1 into a new store, prunes it keeping blob2's chunks
(``--yes``), and checks that the prune succeeds. Ours checks what is left too.
Unlike desync, prune keeps chunks younger than ``--min-age`` (default 1h: another
machine may be publishing an index that uses them), so desync's command line
removes nothing from a store just filled; with ``--min-age 0`` it removes what
desync removes.
"""

from __future__ import annotations

import pytest

from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener


@pytest.mark.parametrize("min_age", [None, "0"], ids=["desync's command line", "--min-age 0"])
def test_prune_command(cli, cmd_data, tmp_path, min_age):
    """TestPruneCommand."""
    store = tmp_path / "store"
    store.mkdir()
    r = cli("chop", "-s", store, cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 0, r.err
    blob1 = Opener().read_index(str(cmd_data / "blob1.caibx")).unique_ids()
    blob2 = Opener().read_index(str(cmd_data / "blob2.caibx")).unique_ids()
    assert blob1 - blob2 and blob1 & blob2  # some chunks go, some stay

    flags = ["--min-age", min_age] if min_age else []
    r = cli("prune", "-s", store, cmd_data / "blob2.caibx", "--yes", *flags)
    assert r.code == 0, r.err
    left = set(LocalStore(store).iter_chunk_ids())
    assert left == (blob1 & blob2 if min_age == "0" else blob1)
