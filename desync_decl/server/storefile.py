"""``--store-file``: the chunk-server's stores in a JSON file, re-read on SIGHUP.

``{"stores": ["/srv/store", "https://a/store|https://b/store"], "cache": "/var/cache/x"}``
as desync reads it; ``cache`` may be missing or empty. Unknown keys are
ignored (desync ignores them too). Any problem is one ``DesyncError`` naming
the file, so a bad edit can be reported while the server keeps its stores.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from desync_decl.errors import DesyncError


@dataclass(frozen=True)
class StoreFile:
    stores: list[str]
    cache: str | None


def load(path: str) -> StoreFile:
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except FileNotFoundError:
        raise DesyncError(f"store file {path}: no such file") from None
    except OSError as e:
        raise DesyncError(f"cannot read store file {path}: {e.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DesyncError(f"store file {path}: invalid JSON: {e}") from None
    except RecursionError:  # json recurses once per level of nesting
        raise DesyncError(f"store file {path}: invalid JSON: nested too deeply") from None
    if not isinstance(raw, dict):
        raise DesyncError(f"store file {path}: expected a JSON object")
    stores, cache = raw.get("stores"), raw.get("cache") or None
    if (
        not isinstance(stores, list)
        or not stores
        or not all(isinstance(s, str) and s for s in stores)
    ):
        raise DesyncError(f"store file {path}: 'stores' must be a non-empty list of locations")
    if cache is not None and not isinstance(cache, str):
        raise DesyncError(f"store file {path}: 'cache' must be a location")
    return StoreFile(stores, cache)
