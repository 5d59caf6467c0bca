"""desync's ``cmd/desync/chop_test.go``: ``chop`` stores a file's chunks where its index cuts.

desync's test checks that the store is no longer empty; ours checks which chunks
it holds: every chunk of the index, less those ``--ignore`` names.
"""

from __future__ import annotations

import pytest

from desync_decl.formats.index import Index
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener


def read(path) -> Index:
    return Opener().read_index(str(path))


def stored_ids(store) -> set:
    return set(LocalStore(store).iter_chunk_ids())


@pytest.mark.parametrize("ignore", [False, True], ids=["simple chop", "chop with ignore"])
def test_chop_command(cli, cmd_data, tmp_path, ignore):
    """TestChopCommand: "simple chop" and "chop with ignore" into an empty store."""
    store = tmp_path / "store"
    store.mkdir()
    flags = ["--ignore", cmd_data / "blob2.caibx"] if ignore else []
    r = cli("chop", "-s", store, *flags, cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 0, r.err
    wanted = read(cmd_data / "blob1.caibx").unique_ids()
    if ignore:
        wanted -= read(cmd_data / "blob2.caibx").unique_ids()
    assert wanted  # blob1 has chunks blob2 lacks: the ignore case stores some
    assert stored_ids(store) == wanted


def test_chop_without_a_store_is_a_usage_error(cli, cmd_data, capsys):
    """TestChopErrors, "without store"."""
    r = cli("chop", cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 1
    assert "-s" in capsys.readouterr().err


def test_chop_into_a_store_that_does_not_exist_is_an_error_and_creates_nothing(
    cli, cmd_data, tmp_path
):
    """TestChopErrors, "invalid store": a local store directory that does not exist
    is an error, not a new store (a typo in the path must not start a new store)."""
    store = tmp_path / "desync"
    r = cli("chop", "-s", store, cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 1
    assert len(r.err.splitlines()) == 1 and str(store) in r.err, r.err
    assert "does not exist" in r.err
    assert not store.exists()
    assert list(tmp_path.iterdir()) == []
