"""What every kind gets: the manifest, its stores, the state records, the run's
options, and the ``Overlay`` of what earlier tasks of this run produce.

In ``plan`` and ``apply --check`` nothing is written, so a task whose input an
earlier task makes (an extract of the index a make writes) is planned against
what that task *would* write: its planned ``Effects``. ``apply`` records the
effects of the tasks that changed something, so facts are described the same
way in both, and a saved plan can be checked task by task.

A task under ``trust`` reads its index through ``Context.trusted_index``: the run's
``Signatures`` read each index and its ``.sig`` once and judge them once per trust,
and in a plan an index an earlier task writes and signs is judged by that task's key.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from desync_decl.errors import IndexMissing
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import Index
from desync_decl.manifest import Manifest, TrustDef
from desync_decl.manifest.convert import is_url
from desync_decl.parallel import ordered_map
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.reconcile.model import Effects, SignedBy
from desync_decl.reconcile.resolve import Resolver
from desync_decl.reconcile.signatures import Signatures, Trusted
from desync_decl.reconcile.state import StateStore
from desync_decl.stores.config import Config
from desync_decl.stores.location import Opener
from desync_decl.stores.store_lock import IMPATIENT, Patience
from desync_decl.stores.url import mask_credentials


class Overlay:
    """Effects of earlier tasks, latest last; safe to use from many threads."""

    def __init__(self) -> None:
        self._effects: list[tuple[str, Effects]] = []
        self._lock = threading.Lock()

    def add(self, task: str, effects: Effects) -> None:
        with self._lock:
            self._effects.append((task, effects))

    def _latest(self) -> list[tuple[str, Effects]]:
        with self._lock:
            return list(reversed(self._effects))

    def index(self, location: str) -> tuple[Index, str] | None:
        """The index an earlier task writes at ``location``, and that task's name."""
        for task, effects in self._latest():
            if location in effects.indexes:
                return effects.indexes[location], task
        return None

    def signing_key(self, location: str) -> str | None:
        """The public key the earlier task writing the index at ``location`` signs it
        with (None: it writes it unsigned, or no task writes it)."""
        for _, effects in self._latest():
            if location in effects.indexes:
                return effects.signed.get(location)
        return None

    def file(self, path: str | os.PathLike) -> tuple[Index, str] | None:
        """The content an earlier task gives the file at ``path``, and that task."""
        key = os.fspath(path)
        for task, effects in self._latest():
            if key in effects.files:
                return effects.files[key], task
        return None

    def index_locations(self) -> list[str]:
        return [loc for _, effects in self._latest() for loc in effects.indexes]

    def chunk(self, store: str, id: ChunkID) -> bool | None:
        """True if an earlier task adds the chunk to ``store``, False if it removes it."""
        for _, effects in self._latest():
            if id in effects.added.get(store, ()):
                return True
            if id in effects.removed.get(store, ()):
                return False
        return None

    def added(self, store: str) -> set[ChunkID]:
        out: set[ChunkID] = set()
        for _, effects in reversed(self._latest()):
            out |= effects.added.get(store, set())
            out -= effects.removed.get(store, set())
        return out


@dataclass
class Context:
    manifest: Manifest
    resolver: Resolver
    state: StateStore
    config: Config = field(default_factory=Config)
    overlay: Overlay = field(default_factory=Overlay)
    verify: bool = False  # ignore fast-path records: read everything again
    simulated: bool = False  # plan / check: earlier tasks' effects are planned, not done
    concurrency: int = 8
    digest: Digest = Digest.SHA512_256  # for indexes a make writes
    progress: Progress = NO_PROGRESS
    lock_patience: Patience = IMPATIENT  # waiting for a store lock (apply: its --lock-timeout)
    signatures: Signatures = field(default_factory=Signatures)  # the run's, shared by its tasks

    def read_index(self, location: str) -> tuple[Index, str | None]:
        """The index at ``location`` (as an earlier task leaves it) and that task, if any."""
        pending = self.overlay.index(location)
        if pending is not None:
            return pending
        return Opener(config=self.config).read_index(location), None

    def trusted_index(self, location: str, trust: TrustDef) -> tuple[Index, SignedBy]:
        """The index at ``location`` if ``trust`` accepts its signature, and whom as;
        else ``SignatureRefused`` (one line: the index, why), before any chunk of it is
        fetched. In a plan, an index an earlier task writes is judged by the key that
        task signs it with (unsigned: refused as having no signature)."""
        pending = self.overlay.index(location) if self.simulated else None
        if pending is not None:
            index, producer = pending
            judge, what = self.signatures.trust(trust), mask_credentials(location)
            key = self.overlay.signing_key(location)
            if key is None:
                signer = judge.verify(index.encode(), None, what)  # refused: no signature
            else:
                signer = judge.check_key(key, what)
            return index, SignedBy(location, str(signer), by_task=producer)
        found: Trusted = self.signatures.verified(location, trust, self.config)
        return found.index, SignedBy(location, str(found.signer))

    def find_index(self, location: str) -> tuple[Index, str | None] | None:
        """``read_index``, or None when there is no index at ``location`` (yet)."""
        local = not is_url(location)
        if local and self.overlay.index(location) is None and not Path(location).exists():
            return None
        try:
            return self.read_index(location)
        except IndexMissing:
            return None

    def has_chunk(self, store: str, id: ChunkID, digest: Digest) -> bool:
        """Whether the store definition ``store`` holds the chunk after earlier tasks."""
        pending = self.overlay.chunk(store, id)
        if pending is not None:
            return pending
        return self.resolver.store(store, digest).has_chunk(id)

    def present(self, store: str, ids: Iterable[ChunkID], digest: Digest) -> set[ChunkID]:
        """The ids ``store`` holds, asked on ``concurrency`` threads."""
        wanted = sorted(set(ids))
        self.progress.start("checking chunks", len(wanted), unit="chunks")

        def has(id: ChunkID) -> bool:
            found = self.has_chunk(store, id, digest)
            self.progress.advance(1)
            return found

        found = ordered_map(has, wanted, workers=self.concurrency)
        return {id for id, ok in zip(wanted, found, strict=True) if ok}

    def planned_chunk(self, store: object, id: ChunkID) -> bool | None:
        """Whether earlier tasks add (True) or remove (False) the chunk in an opened
        ``store``; None when they do not touch it (``compose.Known``)."""
        return self.overlay.chunk(self.resolver.name_of(store), id)
