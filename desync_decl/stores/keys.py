"""Which key a store's chunks are encrypted with, told from their names, and what
to say when it is not the key configured.

A chunk's name carries its key's fingerprint (``<id>.cacnk.xchacha20-poly1305-
572e1bef``: the first 4 bytes of SHA-256 of the key, ``converters.Cipher.key_id``),
so stores of different keys never see each other's chunks. That keeps a wrong key
from decrypting garbage, but it also made a wrong key look exactly like missing
chunks ("chunk 8c6a… missing"), and publishing with another key silently upload a
second copy under the other suffix. Here:

- ``MissCheck``: a store that misses a chunk asks whether it holds it under
  another key's suffix, and fails with ``WrongKey`` ("encrypted with key X, not
  the configured key Y") instead of saying "missing". It asks on misses until one
  miss finds no other form (a cache that is merely cold pays one look, once).
- ``warn_before_upload``: before the first chunk is written to a store that
  already holds chunks under another key (a sample: ``KeyedStore.sample_forms``),
  a warning naming both fingerprints.

Only fingerprints are ever shown, never a key.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol, runtime_checkable

from desync_decl.formats.digest import ChunkID
from desync_decl.lazy_logging import logger
from desync_decl.stores.base import StoreError
from desync_decl.stores.converters import ALGORITHMS, StorageFormat

Key = tuple[str, str] | None  # (algorithm, fingerprint); None: not encrypted


def key_of(extension: str) -> Key:
    """The algorithm and key fingerprint a chunk name's extension names
    (``.cacnk.aes-256-gcm-1a2b3c4d`` -> ``("aes-256-gcm", "1a2b3c4d")``); None when
    the chunk is not encrypted."""
    for algorithm in ALGORITHMS:
        _, marker, fingerprint = extension.partition(f".{algorithm}-")
        if marker:
            return algorithm, fingerprint
    return None


def configured_key(format: StorageFormat) -> Key:
    """The key a store's format writes and reads with (None: no encryption)."""
    return (format.cipher.algorithm, format.cipher.key_id) if format.cipher else None


def other_keys(extensions: Iterable[str], format: StorageFormat) -> list[Key]:
    """The keys of ``extensions`` other than ``format``'s, each once, in a stable order
    (encrypted ones by fingerprint, the unencrypted form last)."""
    ours = configured_key(format)
    found = {key_of(ext) for ext in extensions} - {ours}
    return sorted(found, key=lambda k: (k is None, k or ("", "")))


def described(key: Key, ours: Key) -> str:
    """``key`` for a person: ``key 572e1bef`` (with its algorithm when it differs from
    ``ours``'s), ``no key`` when unencrypted."""
    if key is None:
        return "no key"
    algorithm, fingerprint = key
    if ours is not None and ours[0] != algorithm:
        return f"{algorithm} key {fingerprint}"
    return f"key {fingerprint}"


class WrongKey(StoreError):
    """The store holds the chunk, but under another key's suffix (or unencrypted
    where a key is configured, or the reverse): a configuration error, never a
    missing chunk. Not transient: asking again finds the same."""

    def __init__(self, id: ChunkID, store: str, found: Key, format: StorageFormat) -> None:
        ours = configured_key(format)
        if found is None:
            what = f"is not encrypted, but the configured {described(ours, ours)} expects it to be"
        elif ours is None:
            what = (
                f"is encrypted with {described(found, ours)}, but no key is configured"
                " (encryption is off for this store)"
            )
        else:
            theirs, mine = described(found, ours), described(ours, found)
            what = f"is encrypted with {theirs}, not the configured {mine}"
        super().__init__(f"chunk {id.hex()} in {store} {what}")
        self.id, self.found, self.configured = id, found, ours


class MissCheck:
    """What a store does after a miss: look for the chunk under other keys' suffixes
    (``forms``: the extensions it holds the chunk under), and raise ``WrongKey`` when
    it is there. Looks on each miss until a look finds no other form: a store with
    the right key pays that one look, once (thread-safe: at worst two threads look)."""

    def __init__(self, format: StorageFormat) -> None:
        self.format = format
        self._looking = True

    @property
    def looking(self) -> bool:
        """Whether a miss is still looked into (a caller may skip preparing the look)."""
        return self._looking

    def after_miss(self, id: ChunkID, store: object, forms: Callable[[], Iterable[str]]) -> None:
        if not self._looking:
            return
        found = other_keys(forms(), self.format)
        if not found:
            self._looking = False
            return
        raise WrongKey(id, str(store), found[0], self.format)


@runtime_checkable
class KeyedStore(Protocol):
    """A store whose chunk names it can sample (local and object stores): which keys
    its chunks are under."""

    format: StorageFormat

    def sample_forms(self) -> set[str]:
        """The extensions of some of the chunks it holds (a directory or a listing
        page: enough to see the keys in use, not a full listing)."""
        ...


def upload_warning(store: object) -> str | None:
    """What to tell before writing to ``store`` when it holds chunks under other keys
    (None when it holds none, or cannot tell)."""
    if not isinstance(store, KeyedStore):
        return None
    found = other_keys(store.sample_forms(), store.format)
    if not found:
        return None
    ours = configured_key(store.format)
    others = " and ".join(described(k, ours) for k in found)
    mine = described(ours, ours)
    return (
        f"{store} already holds chunks stored with {others}, not the configured {mine}:"
        f" what is uploaded now is a second copy under {mine}, which readers with"
        f" {others} cannot read (check the key: config --store {store})"
    )


class UploadCheck:
    """``upload_warning`` logged once, before the first chunk is written (threads may
    call ``before_upload`` at once: one of them looks, the others wait for it)."""

    def __init__(self, store: object) -> None:
        self.store = store
        self._done = False
        self._lock = threading.Lock()

    def before_upload(self) -> None:
        warning = self.first_warning()
        if warning:
            say_upload_warning(warning)

    def first_warning(self) -> str | None:
        """The warning on the first call (None if there is none); None after that. A
        forked worker sends it to its parent, which says it (``say_upload_warning``)."""
        if self._done:
            return None
        with self._lock:
            if self._done:
                return None
            try:
                warning = upload_warning(self.store)
            except StoreError as e:  # the upload that follows reports a failing store itself
                logger(__name__).debug("cannot tell which keys %s holds: %s", self.store, e)
                warning = None
            self._done = True
        return warning


def say_upload_warning(warning: str) -> None:
    """Log ``UploadCheck``'s warning: here for threads, in the parent for forked workers."""
    logger(__name__).warning("warning: %s", warning)
