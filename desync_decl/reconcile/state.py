"""Fast-path records: what a task last left behind, so a converged target is
recognised without reading it again.

A file an ``extract`` wrote gets a ``FileRecord`` (index digest, size,
mtime_ns, inode) in its ``user.desync-decl.state`` extended attribute where
the filesystem takes one, else in the state folder keyed by its path (with
its ctime too: writing an xattr changes the ctime, so an xattr record cannot
hold it). Other tasks (make, chop, cache) keep small JSON records in the
state folder, keyed by what they converge. A record that does not match
means "look again", never "changed": only ``--verify`` ignores matching ones.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import stat
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.fsutil import write_atomic

XATTR = "user.desync-decl.state"
_NO_XATTR = {errno.ENOTSUP, errno.EPERM, errno.EACCES, errno.ENOSPC, errno.E2BIG, errno.EROFS}
_NO_XATTR |= {getattr(errno, "ENODATA", errno.ENOENT), errno.ENOENT}


def default_state_dir() -> Path:
    """``$XDG_STATE_HOME/desync-decl``, else ``~/.local/state/desync-decl``."""
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
    """Records in xattrs (``xattrs=True``, where supported) and under ``directory``."""

    def __init__(self, directory: Path, *, xattrs: bool = True) -> None:
        self.directory = directory
        self.xattrs = xattrs

    def __str__(self) -> str:
        return str(self.directory)

    # --- files an extract wrote --------------------------------------------------

    def file_record(self, path: Path) -> FileRecord | None:
        if self.xattrs:
            with contextlib.suppress(OSError):
                record = _file_record(json.loads(os.getxattr(path, XATTR)))
                if record is not None:
                    return record
        raw = self.get(_file_key(path))
        return _file_record(raw) if raw is not None else None

    def put_file_record(self, path: Path, index_digest: str) -> FileRecord:
        """Record ``path`` as it is now; the record that was kept."""
        if self.xattrs:
            record = FileRecord.of(index_digest, os.stat(path), ctime=False)
            try:
                os.setxattr(path, XATTR, json.dumps(asdict(record)).encode())
            except OSError as e:
                if e.errno not in _NO_XATTR:
                    raise DesyncError(f"cannot record state of {path}: {e.strerror}") from None
            else:
                self.drop(_file_key(path))  # an older folder record would only mislead
                return record
        record = FileRecord.of(index_digest, os.stat(path), ctime=True)
        self.put(_file_key(path), asdict(record))
        return record

    def drop_file_record(self, path: Path) -> None:
        if self.xattrs:
            with contextlib.suppress(OSError):
                os.removexattr(path, XATTR)
        self.drop(_file_key(path))

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
        try:
            doc = json.loads(self._file(key).read_text())
        except (OSError, ValueError):
            return None  # missing or damaged: look again
        if not isinstance(doc, dict) or doc.get("key") != key:
            return None
        record = doc.get("record")
        return record if isinstance(record, dict) else None

    def put(self, key: str, record: dict[str, Any]) -> None:
        file = self._file(key)
        try:
            file.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            write_atomic(file, json.dumps({"key": key, "record": record}).encode(), 0o600)
        except OSError as e:
            raise DesyncError(f"cannot write state {file}: {e.strerror}") from None

    def drop(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._file(key).unlink()

    def _file(self, key: str) -> Path:
        return self.directory / "records" / (hashlib.sha256(key.encode()).hexdigest() + ".json")


def _file_key(path: Path) -> str:
    return f"file\0{os.path.abspath(path)}"


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
