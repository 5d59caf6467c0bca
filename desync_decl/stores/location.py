"""Turns store and index locations into stores: the one place that knows URL schemes.

Backends are looked up by scheme in a registry of dotted names and imported
only when used, so a missing optional library is reported for the store that
needs it, not at start-up (fsspec's registry). ``a|b`` is a failover group.
Options for each store come from desync's config file, overridden by the flags
a command line actually gave.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index
from desync_decl.fsutil import open_directory, walk_error, write_atomic
from desync_decl.stores.base import Store, StoreError, WriteStore
from desync_decl.stores.config import Config
from desync_decl.stores.index_store import (
    IndexStore,
    LocalIndexStore,
    SignedIndex,
    read_local_index,
    read_local_signed_index,
    signature_name,
)
from desync_decl.stores.local import LocalStore
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.url import mask_credentials, url_scheme

# scheme -> "module:function"; each function is (location, options, opener) -> store
T = TypeVar("T")

_CHUNK_BACKENDS = {
    "http": "desync_decl.stores.http:open_chunk_store",
    "https": "desync_decl.stores.http:open_chunk_store",
    "s3+http": "desync_decl.stores.s3:open_chunk_store",
    "s3+https": "desync_decl.stores.s3:open_chunk_store",
    "gs": "desync_decl.stores.gcs:open_chunk_store",
    "sftp": "desync_decl.stores.sftp:open_chunk_store",
    "ssh": "desync_decl.stores.ssh:open_chunk_store",
    "oci+http": "desync_decl.stores.oci:open_chunk_store",
    "oci+https": "desync_decl.stores.oci:open_chunk_store",
}
_INDEX_BACKENDS = {
    "http": "desync_decl.stores.http:open_index_store",
    "https": "desync_decl.stores.http:open_index_store",
    "s3+http": "desync_decl.stores.s3:open_index_store",
    "s3+https": "desync_decl.stores.s3:open_index_store",
    "gs": "desync_decl.stores.gcs:open_index_store",
    "sftp": "desync_decl.stores.sftp:open_index_store",
    "oci+http": "desync_decl.stores.oci:open_index_store",
    "oci+https": "desync_decl.stores.oci:open_index_store",
}


@dataclass(frozen=True)
class Opener:
    """Everything needed to open stores: digest, config file, command-line overrides."""

    digest: Digest = Digest.SHA512_256
    config: Config = field(default_factory=Config)
    overrides: dict[str, Any] = field(default_factory=dict)  # StoreOptions fields given by flags
    # A store opened for one run (a manifest's plan and apply, one command) may remember
    # what it was told about each chunk, so the run never asks twice (``stores.oci``);
    # a long-lived server's stores must not: a chunk pushed meanwhile has to be found.
    remember: bool = False
    # Set by ``chunk_store(create=True)`` for the backend: the store is opened to be
    # written, so a container that writing creates (an OCI repository) may be absent.
    creating: bool = False

    def options(self, location: str) -> StoreOptions:
        url_scheme(location)  # a malformed URL is one clear error, here as everywhere
        base = self.config.store_options(location)
        return base.with_overrides(**self.overrides).checked(f"store {mask_credentials(location)}")

    @overload
    def chunk_store(
        self, location: str, *, create: Literal[True], make_missing: bool = True
    ) -> WriteStore: ...

    @overload
    def chunk_store(
        self, location: str, *, create: bool = False, make_missing: bool = True
    ) -> Store: ...

    def chunk_store(
        self, location: str, *, create: bool = False, make_missing: bool = True
    ) -> Store:
        """One store; ``a|b|c`` a failover group. With ``create``, a store to write to
        (a read-only one or a group is refused), and a missing local store is made
        unless ``make_missing`` is false (then it is an error, as in desync: a typo
        must not start a new store)."""
        if create and "|" in location:  # which member would a chunk go to?
            shown = mask_credentials(location)
            raise StoreError(f"{shown}: a failover group cannot be written to (use one store)")
        store = self._open_chunk_store(location, create and make_missing)
        if create and not isinstance(store, WriteStore):
            store.close()
            raise StoreError(f"{mask_credentials(location)}: this store is read-only")
        return store

    def _open_chunk_store(self, location: str, create: bool) -> Store:
        if "|" in location:
            members = [m for m in location.split("|") if m]
            from desync_decl.stores.compose import FailoverGroup  # only groups load it

            return FailoverGroup([self.chunk_store(m, create=create) for m in members])
        options = self.options(location)
        self.config.record(location, options, self.overrides)  # for config.key_warnings
        scheme = url_scheme(location)
        if scheme is None:
            return LocalStore(
                location,
                digest=self.digest,
                create=create,
                format=options.storage_format(),
                skip_verify=options.skip_verify,
            )
        opener = dataclasses.replace(self, creating=True) if create else self
        opened: Store = _backend(_CHUNK_BACKENDS, scheme, location, "chunk")(
            location, options, opener
        )
        return opened

    def index_store(self, location: str, *, create: bool = False) -> IndexStore:
        """The index store at ``location``: a local directory (made if missing with
        ``create``) or an index-store URL."""
        scheme = url_scheme(location)
        if scheme is None:
            if create:
                try:
                    os.close(open_directory(location, create=True))
                except OSError as e:
                    raise walk_error(location, e, "create") from None
            return LocalIndexStore(Path(location))
        options = self.options(location)
        if options.encryption:
            shown = mask_credentials(location)
            raise DesyncError(f"index store {shown}: indexes cannot be encrypted")
        return _backend(_INDEX_BACKENDS, scheme, location, "index")(location, options, self)

    def _at_index_store(self, location: str, use: Callable[[IndexStore, str], T]) -> T:
        """``use(store, name)`` for the index store and name of an index-store URL
        (``.../dir/x.caibx`` -> the store ``.../dir/``, the name ``x.caibx``), the store
        closed after."""
        base, name = _split_index_location(location)
        store = self.index_store(base)
        try:
            return use(store, name)
        finally:
            store.close()

    def read_index(self, location: str) -> Index:
        """An index from a local path or an index-store URL (``.../name.caibx``)."""
        if url_scheme(location) is None:
            return read_local_index(Path(location))
        return self._at_index_store(location, lambda store, name: store.get_index(name))

    def read_signed_index(self, location: str) -> SignedIndex:
        """``read_index`` with the file's bytes and the ``.sig`` beside it (a local
        path's ``<path>.sig``, or ``<name>.sig`` in the same index store)."""
        if url_scheme(location) is None:
            return read_local_signed_index(Path(location))
        return self._at_index_store(location, lambda store, name: store.get_signed_index(name))

    def write_signature(self, location: str, signature: bytes) -> None:
        """Write the signature of the index at ``location`` beside it (``<location>.sig``),
        atomically, as ``write_index`` writes the index."""
        if url_scheme(location) is None:
            _write_local(signature_name(location), signature)
            return
        self._at_index_store(location, lambda store, name: store.store_signature(name, signature))

    def write_index(self, location: str, index: Index, *, make_dirs: bool = False) -> None:
        """Write atomically to a local path (its directory made with ``make_dirs``) or an
        index-store URL. The directory is opened by ``fsutil.open_directory``: a symlink
        someone else planted on the way is refused, not written through."""
        if url_scheme(location) is None:
            _write_local(location, index.pieces(), make_dirs=make_dirs)
            return
        self._at_index_store(location, lambda store, name: store.store_index(name, index))


def _write_local(path: str, data: bytes | Iterable[bytes], *, make_dirs: bool = False) -> None:
    """``data`` as the file ``path``: a temp file in its directory, opened by walking from
    ``/`` (made with ``make_dirs``), renamed over the name once whole."""
    try:
        dir_fd = open_directory(os.path.dirname(os.path.abspath(path)), create=make_dirs)
        try:
            write_atomic(path, data, dir_fd=dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as e:
        raise walk_error(path, e, "write") from None


def index_name_of(location: str) -> str:
    """The file name an index location ends in: ``x.caibx`` of ``/srv/x.caibx`` or of
    ``s3+https://host/bucket/dir/x.caibx?region=...``."""
    if url_scheme(location) is not None:
        return _split_index_location(location)[1]
    name = os.path.basename(location)
    if not name or name in (".", ".."):
        raise DesyncError(f"index location {location}: names no file")
    return name


def _split_index_location(location: str) -> tuple[str, str]:
    """``.../dir/x.caibx?query`` -> store ``.../dir/?query`` and index name ``x.caibx``."""
    url, sep, query = location.partition("?")
    base, _, name = url.rstrip("/").rpartition("/")
    if not name or base.endswith(":/"):
        shown = mask_credentials(location)
        raise DesyncError(f"index location {shown}: no index name after the store URL")
    return base + "/" + sep + query, name


def _backend(
    registry: dict[str, str], scheme: str, location: str, kind: str
) -> Callable[[str, StoreOptions, Opener], Any]:
    target = registry.get(scheme)
    shown = mask_credentials(location)
    if target is None:
        known = ", ".join(sorted({s for s in registry}))
        raise StoreError(f"{shown}: '{scheme}' is not a {kind} store scheme (known: {known})")
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            raise StoreError(f"{shown}: '{scheme}' stores are not supported yet") from None
        raise StoreError(
            f"{shown}: '{scheme}' stores need the Python package '{e.name}' (pip install it)"
        ) from None
    return getattr(module, function)


@overload
def open_store(
    location: str, *, digest: Digest = Digest.SHA512_256, create: Literal[True]
) -> WriteStore: ...


@overload
def open_store(
    location: str, *, digest: Digest = Digest.SHA512_256, create: bool = False
) -> Store: ...


def open_store(location: str, *, digest: Digest = Digest.SHA512_256, create: bool = False) -> Store:
    """One store with default options and the default config file (library callers)."""
    return Opener(digest=digest, config=Config.load()).chunk_store(
        os.fspath(location), create=create
    )
