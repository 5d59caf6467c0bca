"""Fast-path records: what a task last left behind, so a converged target is
recognised without reading it again.

A file an ``extract`` wrote gets a ``FileRecord`` (index digest, size,
mtime_ns, inode) in its ``user.desync-decl.state`` extended attribute where
the filesystem takes one and the file is ours, else in the state folder keyed
by its path (with its ctime too: writing an xattr changes the ctime, so an
xattr record cannot hold it; a file's owner can write any xattr, so one owned by
someone else gets a folder record). Beside a file's record the state folder keeps
a copy of the index the file was extracted from (``indexes/``, one per target path,
replaced with the record): while the record matches, the file is a seed of the
next extract with that index, without being read to chunk it. Other tasks (make,
chop, cache) keep small JSON records in the state folder, keyed by what they
converge; that folder must be ours alone. A record that does not match means
"look again", never "changed": only ``--verify`` ignores matching ones.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.formats import index as index_format
from desync_decl.formats.index import Index
from desync_decl.fsutil import open_private_dir, write_atomic

XATTR = "user.desync-decl.state"
_NO_XATTR = {errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.ENOSPC, errno.E2BIG, errno.EROFS}
_NO_XATTR |= {getattr(errno, "ENODATA", errno.ENOENT), errno.ENOENT}


SYSTEM_STATE_DIR = Path("/var/lib/desync-decl")
STATE_DIR_VARIABLE = "DESYNC_DECL_STATE_DIR"


def default_state_dir() -> Path:
    """``$DESYNC_DECL_STATE_DIR`` when set (a service unit or a test chooses), else
    ``/var/lib/desync-decl`` for root (apply on a fleet host runs as root, and its
    records belong to the machine, not to root's home), else
    ``$XDG_STATE_HOME/desync-decl``, else ``~/.local/state/desync-decl``."""
    if os.environ.get(STATE_DIR_VARIABLE):
        return Path(os.environ[STATE_DIR_VARIABLE])
    if os.geteuid() == 0:
        return SYSTEM_STATE_DIR
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.environ.get("HOME", "~"), ".local", "state"
    )
    return Path(os.path.expanduser(base)) / "desync-decl"


@dataclass(frozen=True)
class FileRecord:
    index_digest: str  # ``sha512-256:<hex>`` of the index the file was extracted from
    size: int
    mtime_ns: int
    ino: int
    ctime_ns: int | None = None  # None when kept in an xattr

    @classmethod
    def of(cls, index_digest: str, st: os.stat_result, *, ctime: bool) -> FileRecord:
        ctime_ns = st.st_ctime_ns if ctime else None
        return cls(index_digest, st.st_size, st.st_mtime_ns, st.st_ino, ctime_ns)

    def matches(self, index_digest: str, st: os.stat_result) -> bool:
        """The file is as this record left it, holding ``index_digest``'s content."""
        return self.index_digest == index_digest and self.unchanged(st)

    def unchanged(self, st: os.stat_result) -> bool:
        """The file is as this record left it (holding the record's index's content)."""
        return (
            stat.S_ISREG(st.st_mode)
            and (self.size, self.mtime_ns, self.ino) == (st.st_size, st.st_mtime_ns, st.st_ino)
            and (self.ctime_ns is None or self.ctime_ns == st.st_ctime_ns)
        )


class StateStore:
    """Records in xattrs (``xattrs=True``, where supported) and under ``directory``.

    The folder and its ``records`` folder must be ours alone (``open_private_dir``:
    a record another user could write would be a lie we act on); records are read
    and written relative to the folder's fd, never through a symlink. An xattr
    record is kept and believed only on a file we own: its owner can write any
    xattr, and a forged "converged" would leave their content in place.
    """

    def __init__(self, directory: Path, *, xattrs: bool = True) -> None:
        self.directory = directory
        self.xattrs = xattrs
        fd = open_private_dir(directory, create=False)  # refused now, not once per task
        if fd is not None:
            os.close(fd)

    def __str__(self) -> str:
        return str(self.directory)

    # --- files an extract wrote --------------------------------------------------

    def file_record(self, path: Path, fd: int | None = None) -> FileRecord | None:
        """The record of the file ``path`` (its xattr, else the folder's record for
        that path); ``fd``: the file open under that name, else opened without
        following a symlink."""
        if fd is None:
            try:
                with open_to_read(path) as opened:
                    return self.file_record(path, opened)
            except OSError:
                return self._folder_file_record(path)
        if self.xattrs and os.fstat(fd).st_uid == os.geteuid():
            with contextlib.suppress(OSError, ValueError):
                record = _file_record(json.loads(os.getxattr(fd, XATTR)))
                if record is not None:
                    return record
        return self._folder_file_record(path)

    def _folder_file_record(self, path: Path) -> FileRecord | None:
        raw = self.get(_file_key(path))
        return _file_record(raw) if raw is not None else None

    def put_file_record(self, path: Path, index_digest: str, fd: int | None = None) -> FileRecord:
        """Record the file ``path`` as it is now (``fd``: the file open under that name,
        else opened without following a symlink); the record that was kept."""
        if fd is None:
            try:
                with open_to_read(path) as opened:
                    return self.put_file_record(path, index_digest, opened)
            except OSError as e:
                raise DesyncError(f"cannot record state of {path}: {e.strerror}") from None
        return self.name_file(path, os.fstat(fd), index_digest, self.mark_file(fd, index_digest))

    def mark_file(self, fd: int, index_digest: str) -> FileRecord | None:
        """Record the open file ``fd`` in its xattr (before it gets its name: nothing
        is ever set by path); None where it holds none (not a regular file, xattrs
        off or unsupported, or the file is not ours): then ``name_file`` records it in
        the state folder."""
        st = os.fstat(fd)
        if not self.xattrs or st.st_uid != os.geteuid() or not stat.S_ISREG(st.st_mode):
            return None
        record = FileRecord.of(index_digest, st, ctime=False)
        try:
            os.setxattr(fd, XATTR, json.dumps(asdict(record)).encode())
        except OSError as e:
            if e.errno not in _NO_XATTR:
                raise DesyncError(f"cannot record state: {e.strerror}") from None
            return None
        return record

    def name_file(
        self, path: Path, st: os.stat_result, index_digest: str, marked: FileRecord | None
    ) -> FileRecord:
        """The file ``mark_file`` saw now has the name ``path`` and the status ``st``
        (its ``fstat``, not whatever the name holds now): without an xattr record it
        gets a folder record (with its ctime); with one, an older folder record goes."""
        if marked is not None:
            self.drop(_file_key(path))  # an older folder record would only mislead
            return marked
        record = FileRecord.of(index_digest, st, ctime=True)
        self.put(_file_key(path), asdict(record))
        return record

    def forget_file(self, path: Path) -> None:
        """The file ``path`` is gone: its folder record and its index copy go too
        (an xattr record went with the file)."""
        self.drop(_file_key(path))
        with self._folder("indexes", create=False) as indexes:
            if indexes is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_index_name(path), dir_fd=indexes)

    # --- the index a recorded file holds ----------------------------------------------

    def keep_index(self, path: Path, index: Index) -> None:
        """Keep a copy of ``index``, the content the file ``path`` now holds (it
        replaces the copy kept for that path)."""
        with self._folder("indexes", create=True) as indexes:
            try:
                write_atomic(_index_name(path), index.encode(), 0o600, dir_fd=indexes)
            except OSError as e:
                file = self.directory / "indexes" / _index_name(path)
                raise DesyncError(f"cannot write state {file}: {e.strerror}") from None

    def kept_index(self, path: Path, index_digest: str) -> Index | None:
        """The copy of the index ``path`` was extracted from, if it is the one with
        ``index_digest`` (the digest its matching record names); None otherwise."""
        data = self._read("indexes", _index_name(path))
        try:
            index = index_format.decode(data, _index_name(path)) if data is not None else None
        except DesyncError:
            return None  # damaged: the file is chunked instead
        return index if index is not None and index.file_digest() == index_digest else None

    # --- stores ----------------------------------------------------------------------

    def generation(self, store: str) -> int:
        """Bumped whenever a task deletes chunks from ``store``: records that say
        "the store holds these chunks" carry it, and a prune makes them stale."""
        record = self.get(f"store\0{store}") or {}
        value = record.get("generation", 0)
        return value if isinstance(value, int) else 0

    def bump_generation(self, store: str) -> None:
        self.put(f"store\0{store}", {"generation": self.generation(store) + 1})

    # --- keyed JSON records --------------------------------------------------------

    def get(self, key: str) -> dict[str, Any] | None:
        data = self._read("records", _name(key))
        try:
            doc = json.loads(data) if data is not None else None
        except ValueError:
            return None  # damaged: look again
        if not isinstance(doc, dict) or doc.get("key") != key:
            return None
        record = doc.get("record")
        return record if isinstance(record, dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        with self._folder("records", create=True) as records:
            data = json.dumps({"key": key, "record": record}).encode()
            try:
                write_atomic(_name(key), data, 0o600, dir_fd=records)
            except OSError as e:
                file = self.directory / "records" / _name(key)
                raise DesyncError(f"cannot write state {file}: {e.strerror}") from None

    def drop(self, key: str) -> None:
        with self._folder("records", create=False) as records:
            if records is not None:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_name(key), dir_fd=records)

    def _read(self, folder: str, name: str) -> bytes | None:
        """The file ``name`` in ``<directory>/<folder>``; None when it is missing or
        cannot be read (never through a symlink)."""
        with self._folder(folder, create=False) as fd:
            if fd is None:
                return None
            try:
                opened = os.open(name, _O_READ, dir_fd=fd)
                with os.fdopen(opened, "rb") as f:
                    return f.read()
            except OSError:
                return None

    @contextlib.contextmanager
    def _folder(self, name: str, *, create: bool) -> Iterator[int | None]:
        """An fd of ``<directory>/<name>`` (None if missing and not ``create``)."""
        top = open_private_dir(self.directory, create=create)
        if top is None:
            yield None
            return
        try:
            folder = open_private_dir(self.directory / name, create=create, parent_fd=top)
        finally:
            os.close(top)
        try:
            yield folder
        finally:
            if folder is not None:
                os.close(folder)


@contextlib.contextmanager
def after_change(warnings: list[str], target: Path) -> Iterator[None]:
    """Bookkeeping once ``target`` has changed (its record, the index copy kept beside
    it): a failure (the state folder's disk full) is a warning in ``warnings``, never
    the task's failure. The change happened: the task must report it and notify its
    handlers, and a record missing or stale only makes the next run look again."""
    try:
        yield
    except DesyncError as e:
        warnings.append(f"{target} changed but its state was not kept: {e}")
    except OSError as e:
        why = f"{e.filename}: {e.strerror}" if e.filename else str(e.strerror or e)
        warnings.append(f"{target} changed but its state was not kept: {why}")


_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


@contextlib.contextmanager
def open_to_read(path: Path) -> Iterator[int]:
    """``path`` opened to read, never through a symlink (nor blocking on a FIFO): how
    a file whose record is looked at is opened (here and for seeds)."""
    fd = os.open(path, _O_READ)
    try:
        yield fd
    finally:
        os.close(fd)


def _name(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest() + ".json"


def _file_key(path: Path) -> str:
    return f"file\0{os.path.abspath(path)}"


def _index_name(path: Path) -> str:
    return hashlib.sha256(_file_key(path).encode()).hexdigest() + ".caibx"


def _file_record(raw: object) -> FileRecord | None:
    if not isinstance(raw, dict):
        return None
    try:
        return FileRecord(
            str(raw["index_digest"]),
            int(raw["size"]),
            int(raw["mtime_ns"]),
            int(raw["ino"]),
            None if raw.get("ctime_ns") is None else int(raw["ctime_ns"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
