"""Stores from a manifest's definitions, and the manifest's names for them.

A store definition becomes one store (its URL through ``Opener``, with desync's
config file under the manifest's options), a group a ``FailoverGroup`` of its
members, a cache a ``Cache`` over its upstream (``SizeLimited`` with
``max_size``), a list of names a ``Router``. Each is opened once per chunk
digest and shared by every task of a run (stores are thread-safe), by plan and
apply alike: which store would serve a chunk is asked of these very objects
(``compose.locate``), and a failover group that moved to another member while
planning stays there. ``name_of`` maps a store object back to its manifest name,
for the plan's per-store numbers and the run's warnings and counts.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from desync_decl.formats.digest import Digest
from desync_decl.manifest import CacheDef, GroupDef, Manifest, StoreDef
from desync_decl.manifest.convert import is_url
from desync_decl.stores.base import PruneStore, Store, StoreError, WriteStore
from desync_decl.stores.compose import Cache, FailoverGroup, single_or_router
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.lru import SizeLimited
from desync_decl.stores.tally import observed
from desync_decl.stores.url import mask_credentials


class Resolver:
    def __init__(self, manifest: Manifest, config: Config) -> None:
        self.manifest = manifest
        self.config = config
        self._open: dict[tuple[str, Digest], Store] = {}
        self._names: dict[int, str] = {}  # id() of an opened store -> its manifest name
        self._lock = threading.Lock()

    def name_of(self, store: object) -> str:
        """The manifest's name of a store, group or cache this opened (its location
        for anything else)."""
        return self.opened_name(store) or str(store)

    def opened_name(self, store: object) -> str | None:
        """The manifest's name of a store this opened; None for any other object (a
        seed or spool a kind puts in front of the stores)."""
        with self._lock:
            return self._names.get(id(store))

    def is_local(self, name: str) -> bool:
        """A store definition for a directory on this machine (its reads cross no wire)."""
        source = self.manifest.stores.get(name)
        return source is not None and not is_url(source.url)

    def location(self, name: str) -> str:
        """A store's URL (any password masked: plans show it); for a group or cache,
        the composition in words."""
        source = self.manifest.source(name)
        if isinstance(source, StoreDef):
            return mask_credentials(source.url)
        if isinstance(source, GroupDef):
            return "|".join(self.location(m) for m in source.failover)
        return f"{self.location(source.store)}, cached in {self.location(source.cache)}"

    def leaves(self, name: str) -> list[str]:
        """The store definitions behind a name (itself, a group's members, a cache's two sides)."""
        source = self.manifest.source(name)
        if isinstance(source, StoreDef):
            return [name]
        inner = source.failover if isinstance(source, GroupDef) else (source.store, source.cache)
        return [leaf for n in inner for leaf in self.leaves(n)]

    def local_paths(self, names: Sequence[str]) -> list[str]:
        """The directories of the local store definitions behind ``names`` (members,
        caches and their upstreams): what reading through them keeps on this machine."""
        leaves = [self.manifest.stores[leaf] for n in names for leaf in self.leaves(n)]
        return [leaf.url for leaf in leaves if not is_url(leaf.url)]

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
                self._names.setdefault(id(store), name)
            if store is not built:  # another task opened it meanwhile
                built.close()
        return store

    def route(self, names: Sequence[str], digest: Digest) -> Store:
        """Several names: tried in order for each chunk (a router); its reads counted
        in the current task's tally (``tally.observing``), if any."""
        return observed(self.stack(names, digest))

    def stack(self, names: Sequence[str], digest: Digest) -> Store:
        """The stores ``names`` compose, as ``route`` reads through them."""
        return single_or_router([self.store(n, digest) for n in names])

    def write_store(self, name: str, digest: Digest) -> WriteStore:
        store = self.store(name, digest)
        if not isinstance(store, WriteStore):
            raise StoreError(f"store '{name}' is read-only: {self.location(name)}")
        return store

    def prune_store(self, name: str, digest: Digest) -> PruneStore:
        store = self.store(name, digest)
        if not isinstance(store, PruneStore):
            raise StoreError(f"store '{name}' cannot list and delete chunks: {self.location(name)}")
        return store

    def _build(self, name: str, digest: Digest) -> Store:
        source = self.manifest.source(name)
        if isinstance(source, StoreDef):
            overrides = dict(source.options)
            if "n" not in overrides:  # a pool smaller than the threads reading it churns
                configured = self.config.store_options(source.url).n
                overrides["n"] = max(configured, self.manifest.defaults.concurrency)
            # a run's store: what it is told of a chunk holds for the run (plan and apply)
            opener = Opener(digest=digest, config=self.config, overrides=overrides, remember=True)
            # a local store, or a cache's copy, that does not exist yet holds nothing;
            # writing creates it (an OCI repository too)
            copy = any(c.cache == name for c in self.manifest.caches.values())
            return opener.chunk_store(source.url, create=copy or not is_url(source.url))
        if isinstance(source, GroupDef):
            return FailoverGroup([self.store(m, digest) for m in source.failover])
        cache: WriteStore = self.write_store(source.cache, digest)
        if source.max_size is not None:
            cache = SizeLimited(cache, source.max_size)
            with self._lock:
                self._names[id(cache)] = source.cache
        return Cache(self.store(source.store, digest), cache, repair=source.repair)

    def close(self) -> None:
        with self._lock:
            stores, self._open = list(self._open.values()), {}
        for store in stores:
            store.close()
