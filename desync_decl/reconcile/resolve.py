"""Stores from a manifest's definitions, and which of them would serve a chunk.

A store definition becomes one store (its URL through ``Opener``, with desync's
config file under the manifest's options), a group a ``FailoverGroup`` of its
members, a cache a ``Cache`` over its upstream (``SizeLimited`` with
``max_size``), a list of names a ``Router``. Each is opened once per chunk
digest and shared by every task of a run (stores are thread-safe).

``Routes.server`` answers, for a chunk, which store of the manifest an
extraction through these names would take it from, asking ``has_chunk`` as
the composed stores would ask ``get_chunk``: the plan's per-store numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import NamedTuple

from desync_decl.config import Config
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.manifest import CacheDef, GroupDef, Manifest, StoreDef
from desync_decl.manifest.convert import is_url
from desync_decl.stores.base import PruneStore, Store, StoreError, WriteStore
from desync_decl.stores.compose import Cache, FailoverGroup, single_or_router
from desync_decl.stores.location import Opener
from desync_decl.stores.lru import SizeLimited
from desync_decl.stores.url import mask_credentials


class Server(NamedTuple):
    """Where a chunk would come from: a store of the manifest, directly or through a cache."""

    store: str  # the store definition's name
    role: str  # "store", or "cache" for a cache's own copy
    via: str | None  # the cache or group it is reached through


class Resolver:
    def __init__(self, manifest: Manifest, config: Config) -> None:
        self.manifest = manifest
        self.config = config
        self._open: dict[tuple[str, Digest], Store] = {}
        self._lock = threading.Lock()

    def location(self, name: str) -> str:
        """A store's URL (any password masked: plans show it); for a group or cache,
        the composition in words."""
        source = self.manifest.source(name)
        if isinstance(source, StoreDef):
            return mask_credentials(source.url)
        if isinstance(source, GroupDef):
            return "|".join(self.location(m) for m in source.failover)
        return f"{self.location(source.store)} (cache {self.location(source.cache)})"

    def leaves(self, name: str) -> list[str]:
        """The store definitions behind a name (itself, a group's members, a cache's two sides)."""
        source = self.manifest.source(name)
        if isinstance(source, StoreDef):
            return [name]
        inner = source.failover if isinstance(source, GroupDef) else (source.store, source.cache)
        return [leaf for n in inner for leaf in self.leaves(n)]

    def caches_in(self, names: Sequence[str]) -> list[str]:
        """Stores that reading through ``names`` writes to: every cache's copy store."""
        out: list[str] = []
        for name in names:
            source = self.manifest.source(name)
            if isinstance(source, CacheDef):
                out += [source.cache, *self.caches_in([source.store])]
            elif isinstance(source, GroupDef):
                out += self.caches_in(source.failover)
        return out

    def store(self, name: str, digest: Digest) -> Store:
        """The store, group or cache called ``name``, opened once per digest."""
        with self._lock:
            store = self._open.get((name, digest))
        if store is None:
            built = self._build(name, digest)
            with self._lock:
                store = self._open.setdefault((name, digest), built)
            if store is not built:  # another task opened it meanwhile
                built.close()
        return store

    def route(self, names: Sequence[str], digest: Digest) -> Store:
        """Several names: tried in order for each chunk (a router)."""
        return single_or_router([self.store(n, digest) for n in names])

    def write_store(self, name: str, digest: Digest) -> WriteStore:
        store = self.store(name, digest)
        if not isinstance(store, WriteStore):
            raise StoreError(f"store '{name}' ({self.location(name)}) is read-only")
        return store

    def prune_store(self, name: str, digest: Digest) -> PruneStore:
        store = self.store(name, digest)
        if not isinstance(store, PruneStore):
            raise StoreError(
                f"store '{name}' ({self.location(name)}) cannot list and delete chunks"
            )
        return store

    def _build(self, name: str, digest: Digest) -> Store:
        source = self.manifest.source(name)
        if isinstance(source, StoreDef):
            opener = Opener(digest=digest, config=self.config, overrides=dict(source.options))
            # a local store that does not exist yet holds nothing; writing creates it
            return opener.chunk_store(source.url, create=not is_url(source.url))
        if isinstance(source, GroupDef):
            return FailoverGroup([self.store(m, digest) for m in source.failover])
        cache: Store = self.write_store(source.cache, digest)
        if source.max_size is not None:
            cache = SizeLimited(cache, source.max_size)
        return Cache(self.store(source.store, digest), cache, repair=source.repair)  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            stores, self._open = list(self._open.values()), {}
        for store in stores:
            store.close()


class Routes:
    """Which store of ``names`` would serve a chunk, as the composed stores would
    decide: names in order, a cache's copy before its upstream, a group's active
    (first) member, switching member only when a store fails."""

    def __init__(
        self,
        resolver: Resolver,
        names: Sequence[str],
        has: Callable[[str, ChunkID], bool],
    ) -> None:
        self.resolver, self.names, self.has = resolver, list(names), has

    def server(self, id: ChunkID) -> Server | None:
        for name in self.names:
            found = self._server(name, id, None)
            if found is not None:
                return found
        return None

    def _server(self, name: str, id: ChunkID, via: str | None) -> Server | None:
        source = self.resolver.manifest.source(name)
        if isinstance(source, StoreDef):
            return Server(name, "store", via) if self.has(name, id) else None
        if isinstance(source, CacheDef):
            if self.has(source.cache, id):
                return Server(source.cache, "cache", name)
            return self._server(source.store, id, via or name)
        last: DesyncError | None = None
        for member in source.failover:
            try:
                return self._server(member, id, via or name)
            except StoreError as e:
                last = e  # failover: the next member answers
        assert last is not None
        raise last
