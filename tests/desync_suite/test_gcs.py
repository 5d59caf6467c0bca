"""Port of desync's ``gcs_test.go`` (``TestNormalizeGCPrefix``) against the real GCS
API server the suite runs (gcp-storage-emulator): for each way of writing the path
of a ``gs://`` location, a chunk stored through it lands under the prefix desync
normalizes that path to (no leading slash, one trailing slash, nothing for an empty
path), and is read back through the same location.

desync's table also has paths without a leading slash (``path``, ``path1/path2/``):
in a ``gs://bucket...`` URL the path always starts with the slash, so those are
the same locations as their ``/path`` twins and are checked through them.
"""

from __future__ import annotations

import pytest

from desync_decl.stores import gcs
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests.store_contract import random_chunks

pytest_plugins = ["tests.servers_cloud"]


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("", ""),
        ("/", ""),
        ("/path", "path/"),
        ("/path/", "path/"),
        ("/path1/path2", "path1/path2/"),
        ("/path1/path2/", "path1/path2/"),
    ],
    ids=[
        "blank path",
        "slash only",
        "path with leading slash",
        "path with trailing slash",
        "paths with leading slash",
        "paths with leading and trailing slashes",
    ],
)
def test_the_location_path_becomes_the_key_prefix(gcs_server, gcs_bucket, path, prefix):
    """TestNormalizeGCPrefix."""
    store = gcs.open_chunk_store(f"gs://{gcs_bucket}{path}", StoreOptions(), Opener())
    try:
        chunk = random_chunks(1, seed=15)[0]
        store.store_chunk(chunk)
        h = chunk.id.hex()
        names = [b.name for b in gcs_server.client().list_blobs(gcs_bucket)]
        assert names == [f"{prefix}{h[:4]}/{h}.cacnk"]
        assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
        assert list(store.iter_chunk_ids()) == [chunk.id]
    finally:
        store.close()
