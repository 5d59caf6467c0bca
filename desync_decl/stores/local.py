"""A chunk store in a local directory: ``<store>/<id[:4]>/<id>.cacnk``.

Compressed (``.cacnk``) and uncompressed (no suffix) chunk files may sit side
by side, as casync allows: the store writes its configured form and reads
either, preferring that form (with encryption, both carry the cipher's
suffix). A chunk is written as an unnamed file and linked in under its final
name (or, where the filesystem cannot, written to a temp file and renamed), so
concurrent writers and crashes never expose a partial chunk; ``flush()``
makes everything written durable at once.

Every operation below the store root acts relative to a prefix directory
opened with ``O_NOFOLLOW`` (chunk files are opened with ``O_NOFOLLOW``, stats,
``utime`` and ``unlink`` never follow a link): a symbolic link planted in the
store (as a chunk file or as a prefix directory) is never followed nor counted,
so a chunk-server does not serve a file from outside the store nor write an
upload through a link into another directory, and ``prune``, eviction and
``touch`` run as root never delete or touch a file outside it. Walks open each
prefix directory relative to the store root's descriptor and delete in the very
directory they listed, so swapping a prefix directory for a link between the
listing and the deletion redirects nothing (a link in the store's own path,
set up by whoever configured it, is followed as before).
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import re
import stat
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.fsutil import link_fd, syncfs, write_all
from desync_decl.stores.base import (
    ChunkInvalid,
    ChunkMissing,
    Hook,
    StoreError,
    no_hook,
    refuse_empty,
    verify_chunk,
)
from desync_decl.stores.converters import COMPRESSED, StorageFormat
from desync_decl.stores.keys import MissCheck
from desync_decl.stores.writeback import Writeback

if TYPE_CHECKING:  # loaded when a lock is first asked for: reading commands take none
    from desync_decl.stores.store_lock import LockKeeper

LOCKS = "locks"  # the directory of lock objects (store_lock); no prefix has 5 letters
TEMP_PREFIX = ".tmp-cacnk"  # desync's temp-file name: its prune cleans these up too
STALE_TEMP_SECONDS = 3600  # prune removes older leftovers only, never a write in progress
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
_ANONYMOUS_FLAGS = os.O_WRONLY | getattr(os, "O_TMPFILE", 0) | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_PATH: the directory is only a place to open files in (cheaper than opening it for reading)
_DIRECTORY_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# A directory to list (scandir cannot read an O_PATH descriptor); the root may be a link
_ROOT_LISTING_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_PREFIX_LISTING_FLAGS = _ROOT_LISTING_FLAGS | os.O_NOFOLLOW
# What opening a prefix directory with O_NOFOLLOW | O_DIRECTORY says about a link or a file there
_NOT_A_DIRECTORY = {errno.ELOOP, errno.ENOTDIR}
# Why a filesystem or kernel cannot make unnamed files or link them in (no
# O_TMPFILE support, linkat by fd not allowed): use named temp files instead.
_CANNOT_LINK_ANONYMOUS = {
    errno.EOPNOTSUPP,
    errno.EISDIR,
    errno.EINVAL,
    errno.ENOENT,
    errno.EPERM,
    errno.ENOSYS,
}
# Temp names: unique per process (random tag, pid) and per write (counter),
# without a getrandom() call for every chunk.
_TEMP_TAG = os.urandom(4).hex()
_READ_HINT = 320 * 1024  # a default-sized chunk file (<= 256 KiB + framing) in one read
_temp_counter = itertools.count()
_ANY_CHUNK = re.compile(r"[0-9a-f]{64}(\.[a-z0-9.-]+)?")  # a chunk file of any format
SAMPLED_PREFIXES = 4  # prefix directories whose names tell which keys a store holds


class LocalStore:
    fork_safe = True  # plain files only: forked workers may use it (desync_decl.forked)
    chunk_ages_known = True  # file mtimes

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        digest: Digest = Digest.SHA512_256,
        format: StorageFormat = COMPRESSED,
        skip_verify: bool = False,
        create: bool = False,
    ) -> None:
        self.path = Path(path)
        self._root = os.fspath(self.path)  # string joins: pathlib costs microseconds per chunk
        self._anonymous_files = hasattr(os, "O_TMPFILE")  # off once the filesystem refuses
        self.digest = digest
        self.format = format
        # the other compression form is read too, with the same encryption
        self._formats = {
            compressed: StorageFormat(compressed, format.cipher)
            for compressed in (format.compressed, not format.compressed)
        }
        cipher_suffix = re.escape(format.cipher.extension) if format.cipher else ""
        self._chunk_name = re.compile(rf"^([0-9a-f]{{64}})(\.cacnk)?{cipher_suffix}$")
        self.skip_verify = skip_verify
        self._misses = MissCheck(format)  # a miss under another key's suffix is WrongKey
        self._locks: LockKeeper | None = None
        self._locks_made = threading.Lock()
        self._writeback = Writeback(self._root)  # overlaps disk writes with the run
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"store {self.path} is not a directory")
        if not create and not self.path.exists():
            raise StoreError(f"store {self.path} does not exist")
        # With create, the directory appears with the first chunk written or at
        # flush(), so a run that fails before storing anything leaves nothing behind.

    def __str__(self) -> str:
        return str(self.path)

    def _mkdir(self, path: str | Path) -> None:
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create {path}: {e.strerror}") from e

    def _make_prefix_dir(self, directory: str) -> None:
        """One mkdir in the common case; the store root too when it is new."""
        try:
            os.mkdir(directory)
        except FileExistsError:
            pass  # another thread made it
        except FileNotFoundError:
            self._mkdir(directory)

    def _name(self, id: ChunkID, compressed: bool) -> str:
        """The chunk file's name in its prefix directory."""
        return id.hex() + self._formats[compressed].extension

    def _prefix_directory(self, prefix: str, create: bool) -> int:
        """A descriptor of the prefix directory, never opened through a symbolic link
        (ENOTDIR then); with ``create``, made when it is missing."""
        path = f"{self._root}/{prefix}"
        try:
            return os.open(path, _DIRECTORY_FLAGS)
        except FileNotFoundError:
            if not create:
                raise
        self._make_prefix_dir(path)
        return os.open(path, _DIRECTORY_FLAGS)

    def get_chunk(self, id: ChunkID) -> Chunk:
        h = id.hex()
        try:
            directory = self._prefix_directory(h[:4], create=False)
        except FileNotFoundError:
            raise ChunkMissing(id, str(self)) from None  # no chunk of that prefix, in any form
        except OSError as e:
            raise StoreError(f"cannot read chunk {h} from {self}: {e.strerror}") from e
        try:
            for form in self._formats.values():
                try:
                    data = _read_file(h + form.extension, directory)
                except FileNotFoundError:
                    continue
                except OSError as e:  # ELOOP: a symbolic link where the chunk file should be
                    raise StoreError(f"cannot read chunk {h} from {self}: {e.strerror}") from e
                try:
                    chunk = form.decode(id, data)
                except DecodeError as e:
                    raise ChunkInvalid(id, str(self), str(e)) from None
                return chunk if self.skip_verify else verify_chunk(chunk, self.digest, self)
            self._misses.after_miss(id, self, lambda: self._forms_in(directory, h))
        finally:
            os.close(directory)
        raise ChunkMissing(id, str(self))

    def has_chunk(self, id: ChunkID) -> bool:
        """Whether a chunk file is there: a regular file in a real prefix directory (a
        symbolic link is none, so a client uploads the chunk and the link is replaced)."""
        return self._chunk_stat(id, self._formats) is not None

    def store_chunk(self, chunk: Chunk) -> None:
        refuse_empty(chunk, self)
        h = chunk.id.hex()
        name = h + self.format.extension
        data = self.format.encode(chunk)
        try:
            directory = self._prefix_directory(h[:4], create=True)
            try:
                if not (self._anonymous_files and self._link_anonymous(directory, name, data)):
                    self._rename_temp(directory, name, data)
            finally:
                os.close(directory)
        except OSError as e:
            raise StoreError(f"cannot write chunk {h} to {self}: {e.strerror}") from e
        self._writeback.wrote(len(data))  # flush() then has little left to wait for

    def _link_anonymous(self, directory: int, name: str, data: bytes | memoryview) -> bool:
        """Write an unnamed file (O_TMPFILE) and link it in under its final name.

        The chunk appears complete or not at all, a crash leaves no temp file
        behind, and the directory changes once instead of twice (create +
        rename): measured, ``make`` of 1 GiB on ext4 spends a third less
        system time. False when the filesystem or kernel cannot, or when the
        chunk exists already (the caller then replaces it through a temp file).
        """
        try:
            fd = os.open(".", _ANONYMOUS_FLAGS, 0o644, dir_fd=directory)
        except OSError as e:
            if e.errno not in _CANNOT_LINK_ANONYMOUS:
                raise
            self._anonymous_files = False
            return False
        try:
            write_all(fd, data)
            link_fd(fd, name, directory)
        except FileExistsError:
            return False
        except OSError as e:
            if e.errno not in _CANNOT_LINK_ANONYMOUS:
                raise
            self._anonymous_files = False
            return False
        finally:
            os.close(fd)
        return True

    def _rename_temp(self, directory: int, name: str, data: bytes | memoryview) -> None:
        """Write a named temp file in the chunk's directory and rename it over ``name``."""
        temp = f"{TEMP_PREFIX}{_TEMP_TAG}-{os.getpid()}-{next(_temp_counter)}"
        try:
            fd = os.open(temp, _CREATE_FLAGS, 0o644, dir_fd=directory)
            try:
                write_all(fd, data)
            finally:
                os.close(fd)
            os.replace(temp, name, src_dir_fd=directory, dst_dir_fd=directory)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=directory)
            raise

    def probe(self, id: ChunkID) -> int | None:
        """The size of the chunk's file (either form), None when there is none
        (``compose.locate``)."""
        st = self._chunk_stat(id, self._formats)
        if st is None:
            if not self._misses.looking:  # the hot path of a cache's misses: no more calls
                return None
            with self._existing_prefix(id) as directory:
                if directory is not None:
                    self._misses.after_miss(id, self, lambda: self._forms_in(directory, id.hex()))
            return None
        return st.st_size

    def stored_size(self, id: ChunkID) -> int | None:
        """Size of the compressed chunk file, None when there is none (inspect-chunks)."""
        st = self._chunk_stat(id, (True,))
        return None if st is None else st.st_size

    def _chunk_stat(self, id: ChunkID, forms: Iterable[bool]) -> os.stat_result | None:
        """The status of the first of the chunk's file ``forms`` (compressed or not) that
        is a regular file in a real prefix directory; None when there is none (a
        symbolic link is neither followed nor counted)."""
        with self._existing_prefix(id) as directory:
            if directory is None:
                return None  # one lookup answers for every form
            for compressed in forms:
                try:
                    st = os.stat(
                        self._name(id, compressed), dir_fd=directory, follow_symlinks=False
                    )
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise StoreError(f"cannot stat chunk {id.hex()} in {self}: {e.strerror}") from e
                if stat.S_ISREG(st.st_mode):
                    return st
            return None

    @contextlib.contextmanager
    def _existing_prefix(self, id: ChunkID) -> Iterator[int | None]:
        """The chunk's prefix directory opened without following a link; None when it
        is missing or is not a directory (a link planted there is not followed)."""
        path = f"{self._root}/{id.hex()[:4]}"
        try:
            directory = self._prefix_directory(id.hex()[:4], create=False)
        except FileNotFoundError:
            directory = None
        except OSError as e:
            if e.errno not in _NOT_A_DIRECTORY or not _lies_in_a_directory(path):
                raise StoreError(f"cannot open {path}: {e.strerror}") from e
            directory = None  # a link or a file in the store: no chunk of ours
        try:
            yield directory
        finally:
            if directory is not None:
                os.close(directory)

    def _forms_in(self, directory: int, h: str) -> list[str]:
        """The extensions of the files of chunk ``h`` (hex) in its open prefix directory,
        whatever their format (``keys.MissCheck``)."""
        try:
            listing = os.open(".", _PREFIX_LISTING_FLAGS, dir_fd=directory)
        except OSError as e:
            raise StoreError(f"cannot list {self}/{h[:4]}: {e.strerror}") from e
        try:
            return [e.name[len(h) :] for e in os.scandir(listing) if e.name.startswith(h)]
        finally:
            os.close(listing)

    def sample_forms(self) -> set[str]:
        """The extensions of the chunk files in the first few prefix directories
        (``keys.KeyedStore``: which keys the store's chunks are under)."""
        forms: set[str] = set()
        with contextlib.closing(self._walk()) as prefixes:
            for count, (_, _, files) in enumerate(prefixes):
                names = (_ANY_CHUNK.fullmatch(entry.name) for entry, _ in files)
                forms |= {m.group(1) or "" for m in names if m}
                if count + 1 >= SAMPLED_PREFIXES:
                    break
        return forms

    def flush(self) -> None:
        """Make every chunk written so far durable (before an index refers to them)."""
        self._mkdir(self.path)  # a successful run leaves a store, even an empty one
        self._writeback.wait()
        try:
            syncfs(self.path)
        except OSError as e:
            raise StoreError(f"cannot sync {self}: {e.strerror}") from e

    def _walk(
        self,
    ) -> Generator[tuple[str, int, list[tuple[os.DirEntry, re.Match | None]]], None, None]:
        """Each prefix directory's name and descriptor (opened relative to the store root
        without following a link) with its regular files and their chunk-name matches
        (None if not a chunk).

        The descriptor stays open until the caller asks for the next prefix: whatever
        the caller deletes is deleted in the directory that was listed, even if that
        directory was renamed and replaced by a link in the meantime.
        """
        try:
            root = os.open(self._root, _ROOT_LISTING_FLAGS)
        except FileNotFoundError:
            return  # not made yet (a cache before its first chunk): it holds nothing
        except OSError as e:
            raise StoreError(f"cannot list {self}: {e.strerror}") from e
        try:
            for name in sorted(e.name for e in os.scandir(root) if len(e.name) == 4):
                try:
                    directory = os.open(name, _PREFIX_LISTING_FLAGS, dir_fd=root)
                except FileNotFoundError:
                    continue  # removed since the listing
                except OSError as e:
                    if e.errno in _NOT_A_DIRECTORY:
                        continue  # a file or a symbolic link: not a prefix of this store
                    raise
                try:
                    yield name, directory, self._chunk_files(name, directory)
                finally:
                    os.close(directory)
        except OSError as e:
            raise StoreError(f"cannot list {self}: {e.strerror}") from e
        finally:
            os.close(root)

    def _chunk_files(
        self, prefix: str, directory: int
    ) -> list[tuple[os.DirEntry, re.Match | None]]:
        """The regular files of an open prefix directory, by name (links are skipped)."""
        out = []
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            if not entry.is_file(follow_symlinks=False):
                continue
            m = self._chunk_name.match(entry.name)
            out.append((entry, m if m and m.group(1).startswith(prefix) else None))
        return out

    def touch(self, id: ChunkID) -> None:
        """Mark a chunk as just used (its mtime), for least-recently-used eviction; a
        symbolic link in place of the chunk or its prefix directory is not followed."""
        with self._existing_prefix(id) as directory:
            if directory is None:
                return
            for compressed in self._formats:
                with contextlib.suppress(FileNotFoundError):
                    os.utime(self._name(id, compressed), dir_fd=directory, follow_symlinks=False)
                    return

    def chunk_ages(self) -> Iterator[tuple[ChunkID, float | None]]:
        """Each chunk's id and modification time: of a chunk in both forms, the newer
        file's (``prune`` keeps both while either is young, so plan says what it does)."""
        for _, _, files in self._walk():  # both forms of a chunk share a prefix directory
            for hex_id, mtime in _newest_per_chunk(files).items():
                yield ChunkID(bytes.fromhex(hex_id)), mtime

    def usage(self) -> list[tuple[float, int, ChunkID]]:
        """(last use, bytes, id) of every chunk file, for eviction."""
        out = []
        for _, _, files in self._walk():
            for entry, m in files:
                if m is not None:
                    with contextlib.suppress(FileNotFoundError):
                        st = entry.stat(follow_symlinks=False)
                        out.append((st.st_mtime, st.st_size, ChunkID(bytes.fromhex(m.group(1)))))
        return out

    def iter_chunk_ids(self) -> Iterator[ChunkID]:
        last = None
        for _, _, files in self._walk():
            for _, m in files:
                if m is not None:
                    id = ChunkID(bytes.fromhex(m.group(1)))
                    if id != last:  # both forms of one chunk are listed one after the other
                        yield id
                    last = id

    def remove_chunk(self, id: ChunkID) -> None:
        """Delete both forms of a chunk in its prefix directory (already gone is fine;
        a link in place of the prefix directory is not followed)."""
        with self._existing_prefix(id) as directory:
            if directory is None:
                return
            for compressed in (True, False):
                try:
                    os.unlink(self._name(id, compressed), dir_fd=directory)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    raise StoreError(
                        f"cannot remove chunk {id.hex()} from {self}: {e.strerror}"
                    ) from e

    def prune(
        self, keep: set[ChunkID], *, older_than: float | None = None, before_delete: Hook = no_hook
    ) -> int:
        """Delete the chunks not in ``keep`` (only those modified before ``older_than``
        when it is given: both forms of a chunk, by the newer one's time) and stale
        temp files, each prefix directory listed and cleaned through one descriptor
        (see ``_walk``); ``before_delete`` runs before each chunk file's deletion."""
        removed = 0
        stale = time.time() - STALE_TEMP_SECONDS
        for prefix, directory, files in self._walk():
            newest = _newest_per_chunk(files) if older_than is not None else {}
            for entry, m in files:
                try:
                    if m is None:
                        if (
                            entry.name.startswith(TEMP_PREFIX)
                            and entry.stat(follow_symlinks=False).st_mtime < stale
                        ):
                            os.unlink(entry.name, dir_fd=directory)
                    elif ChunkID(bytes.fromhex(m.group(1))) not in keep and (
                        older_than is None or newest.get(m.group(1), older_than) < older_than
                    ):
                        before_delete()
                        os.unlink(entry.name, dir_fd=directory)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as e:
                    raise StoreError(
                        f"cannot prune {self._root}/{prefix}/{entry.name}: {e.strerror}"
                    ) from e
        return removed

    # --- lock objects (store_lock.LockSpace): files in <store>/locks -------------------

    def write_lock(self, name: str, data: bytes) -> None:
        path = f"{self._root}/{LOCKS}"
        try:
            self._make_prefix_dir(path)  # the store root too, for a store's first writer
            directory = os.open(path, _PREFIX_LISTING_FLAGS)
            try:
                self._rename_temp(directory, name, data)
            finally:
                os.close(directory)
        except OSError as e:
            raise StoreError(f"cannot write lock {name} in {self}: {e.strerror}") from e

    def read_lock(self, name: str) -> bytes | None:
        from desync_decl.stores.store_lock import MAX_LOCK_SIZE  # loaded by the lock asking

        try:
            with self._open_locks() as directory:
                if directory is None:
                    return None
                fd = os.open(name, _READ_FLAGS, dir_fd=directory)
                try:
                    return os.read(fd, MAX_LOCK_SIZE + 1)
                finally:
                    os.close(fd)
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read lock {name} in {self}: {e.strerror}") from e

    def list_locks(self) -> list[tuple[str, float]]:
        try:
            with self._open_locks() as directory:
                if directory is None:
                    return []
                return [
                    (entry.name, entry.stat(follow_symlinks=False).st_mtime)
                    for entry in os.scandir(directory)
                    if entry.is_file(follow_symlinks=False)
                ]
        except OSError as e:
            raise StoreError(f"cannot list the locks of {self}: {e.strerror}") from e

    def remove_lock(self, name: str) -> None:
        try:
            with self._open_locks() as directory:
                if directory is not None:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(name, dir_fd=directory)
        except OSError as e:
            raise StoreError(f"cannot remove lock {name} from {self}: {e.strerror}") from e

    @contextlib.contextmanager
    def _open_locks(self) -> Iterator[int | None]:
        """The locks directory, never opened through a symbolic link; None when missing."""
        try:
            directory = os.open(f"{self._root}/{LOCKS}", _PREFIX_LISTING_FLAGS)
        except FileNotFoundError:
            directory = None
        try:
            yield directory
        finally:
            if directory is not None:
                os.close(directory)

    @property
    def locks(self) -> LockKeeper:
        """The locks this store object holds (``store_lock.HoldsLocks``), made at the
        first ask: a command that only reads never loads ``store_lock``."""
        locks = self._locks
        if locks is None:
            with self._locks_made:  # writer threads ask at once: one keeper
                if self._locks is None:
                    from desync_decl.stores.store_lock import LockKeeper

                    self._locks = LockKeeper(self, str(self))
                locks = self._locks
        return locks

    def close(self) -> None:
        self._writeback.wait()
        if self._locks is not None:
            self._locks.release()


def _newest_per_chunk(files: list[tuple[os.DirEntry, re.Match | None]]) -> dict[str, float]:
    """The newer modification time of each chunk's files in one prefix directory (a
    chunk may be there compressed and not), by its id in hex."""
    newest: dict[str, float] = {}
    for entry, m in files:
        if m is not None:
            with contextlib.suppress(FileNotFoundError):
                mtime = entry.stat(follow_symlinks=False).st_mtime
                newest[m.group(1)] = max(mtime, newest.get(m.group(1), mtime))
    return newest


def _lies_in_a_directory(path: str) -> bool:
    """Whether something (a link, a file) is at ``path`` in a directory. An
    O_NOFOLLOW | O_DIRECTORY open fails with ENOTDIR both for a link planted as a prefix
    directory (no chunk there) and for a store root that is no directory (an error):
    only in the first case does ``lstat`` succeed."""
    try:
        os.lstat(path)
    except OSError:
        return False
    return True


def _read_file(name: str, directory: int) -> bytes:
    """A whole small file, usually in one read() (this runs once per chunk: no
    file object, no fstat; every system call is also a GIL hand-off)."""
    fd = os.open(name, _READ_FLAGS, dir_fd=directory)
    try:
        data = os.read(fd, _READ_HINT)
        if len(data) < _READ_HINT:
            return data
        parts = [data]
        while more := os.read(fd, 1 << 20):
            parts.append(more)
        return b"".join(parts)
    finally:
        os.close(fd)
