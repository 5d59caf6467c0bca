"""Turns a store location string into a store object.

The one place that knows URL schemes. Local directories are built in; remote
backends (http, s3, sftp, ssh, gs, oci) are registered here as they land.
"""

from __future__ import annotations

import re

from desync_decl.formats.digest import Digest
from desync_decl.stores.base import Store, StoreError
from desync_decl.stores.local import LocalStore

_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")


def open_store(location: str, *, digest: Digest = Digest.SHA512_256, create: bool = False) -> Store:
    """Open one store; ``create`` makes a missing local store directory (for writers)."""
    m = _SCHEME.match(location)
    if m:
        raise StoreError(f"store {location}: '{m.group(1)}' stores are not supported yet")
    return LocalStore(location, digest=digest, create=create)
