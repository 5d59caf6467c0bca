"""desync's ``cmd/desync/cache_test.go``: ``cache`` copies the chunks of indexes into a store.

desync's test checks that the cache is no longer empty; ours checks that it holds
exactly the chunks of the indexes given, read from one store or several.
"""

from __future__ import annotations

import pytest

from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener

CASES = {
    "singe store, single index": (["blob1.store"], ["blob1.caibx"]),
    "multiple store, single index": (["blob1.store", "blob2.store"], ["blob1.caibx"]),
    "multiple store, multiple index": (
        ["blob1.store", "blob2.store"],
        ["blob1.caibx", "blob2.caibx"],
    ),
}


@pytest.mark.parametrize(("stores", "indexes"), CASES.values(), ids=CASES.keys())
def test_cache_command(cli, cmd_data, tmp_path, stores, indexes):
    """TestCacheCommand."""
    cache = tmp_path / "cache"
    cache.mkdir()
    flags = [word for store in stores for word in ("--store", cmd_data / store)]
    r = cli("cache", *flags, *(cmd_data / index for index in indexes), "-c", cache)
    assert r.code == 0, r.err
    wanted = set().union(
        *(Opener().read_index(str(cmd_data / index)).unique_ids() for index in indexes)
    )
    assert set(LocalStore(cache).iter_chunk_ids()) == wanted
