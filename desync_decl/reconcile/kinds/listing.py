"""What an ``untar`` would change in a directory, entry by entry.

Both sides are mtree listings (``ops.mtree``): the archive's, decoded from its
chunks, and the directory's, encoded with the archive's feature flags, so
both say exactly what the archive can hold. Aspects the task does not
restore are left out of the comparison: owners unless they are restored (as
root, without ``no_same_owner``), modes with ``no_same_permissions``.
Entries only the directory has are extras: deleted with ``delete_extra``,
else kept. The xattrs untar sets (``xattr.*`` fields) are compared where it
restores them, as owners are. (ACLs and chattr flags are not in a listing: a
tree that differs only in those is caught by the byte comparison of the kind.)
"""

from __future__ import annotations

import bisect
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from desync_decl.archive.mtree import mtree_lines
from desync_decl.archive.patterns import Patterns
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.ops.mtree import mtree_dir
from desync_decl.ops.untar import catar_decoder
from desync_decl.stores.base import Store

Fields = dict[str, str]
Listing = dict[str, str]  # path (as mtree escapes it) -> the rest of its mtree line
SHOWN = 40  # entries a diff lists


def parse(lines: Iterable[str]) -> Listing:
    out: Listing = {}
    for line in lines:
        if not line.startswith("#"):
            name, _, words = line.partition(" ")
            out[name] = words
    return out


def fields(words: str) -> Fields:
    return dict(w.split("=", 1) for w in words.split(" ") if w)


def archive_listing(
    index: Index,
    store: Store,
    *,
    concurrency: int,
    payloads: dict[str, tuple[int, int]] | None = None,
) -> Listing:
    """The archive's listing; each file's payload (offset in the archive, size) into
    ``payloads`` if given (``payload_sources``)."""
    decoder = catar_decoder(index, store, source="archive", concurrency=concurrency)
    return parse(mtree_lines(decoder, index.digest, payloads))


def payload_sources(
    index: Index,
    payloads: Mapping[str, tuple[int, int]],
    paths: Iterable[str],
    holders: Sequence[tuple[str, set[ChunkID]]],
) -> dict[str, tuple[tuple[str, int], ...]]:
    """Where the bytes of each file of ``paths`` come from: per chunk its payload
    overlaps, the first of ``holders`` (``(label, chunk ids)``: the tree, seeds) that
    holds it, else ``stores``; ``(label, bytes)`` in the order of ``holders``."""
    ends = index.ends
    labels = [label for label, _ in holders] + ["stores"]
    out: dict[str, tuple[tuple[str, int], ...]] = {}
    for path in paths:
        at = payloads.get(path)
        if at is None or not at[1]:
            continue
        start, end = at[0], at[0] + at[1]
        by = dict.fromkeys(labels, 0)
        k = bisect.bisect_right(ends, start)  # the chunk holding the payload's first byte
        while k < len(ends) and index.start(k) < end:
            overlap = min(end, ends[k]) - max(start, index.start(k))
            cid = index.id(k)
            label = next((name for name, ids in holders if cid in ids), "stores")
            by[label] += max(0, overlap)
            k += 1
        out[path] = tuple((label, n) for label, n in by.items() if n)
    return out


def tree_listing(root: str | os.PathLike, index: Index) -> Listing:
    return parse(mtree_dir(root, flags=index.flags, digest=index.digest))


# The fields that say what an entry holds; a difference in any other field (mode,
# owners, time, xattrs) is fixed on the entry in place, its data kept.
_CONTENT = frozenset({"type", "size", "target"})


@dataclass(frozen=True)
class Changes:
    """Entry by entry, what an untar does, in the words its apply reports
    (``disk_writer.Writer``: created, updated, metadata fixed, unchanged)."""

    create: tuple[str, ...]
    update: tuple[str, ...]  # contents (or type) replaced: a new file written
    delete: tuple[str, ...]  # extras the task deletes
    kept: tuple[str, ...]  # extras it keeps
    unchanged: int
    metadata: tuple[str, ...] = ()  # only mode, owners, time or xattrs differ: fixed in place
    sizes: Mapping[str, int] = field(default_factory=dict)  # file bytes per changed path
    types: Mapping[str, str] = field(default_factory=dict)  # mtree type per changed path
    kept_bytes: int = 0  # file bytes that stay (unchanged and metadata-only files)
    # where a written file's bytes come from: (label, bytes) (``payload_sources``)
    sources: Mapping[str, tuple[tuple[str, int], ...]] = field(default_factory=dict)

    @property
    def any(self) -> bool:
        return bool(self.create or self.update or self.delete or self.metadata)

    def bytes_of(self, paths: Iterable[str]) -> int:
        return sum(self.sizes.get(p, 0) for p in paths)

    def summary(self) -> str:
        """``2 to create, 1 to update, 3 metadata only, 40 unchanged, 1 extra kept``."""
        parts = [
            f"{n} {what}"
            for n, what in (
                (len(self.create), "to create"),
                (len(self.update), "to update"),
                (len(self.metadata), "metadata only"),
                (len(self.delete), "to delete"),
                (self.unchanged, "unchanged"),
                (len(self.kept), "extra kept" if len(self.kept) == 1 else "extras kept"),
            )
            if n
        ]
        return ", ".join(parts) or "nothing"

    def to_json(self) -> dict[str, int]:
        return {
            "create": len(self.create),
            "update": len(self.update),
            "metadata": len(self.metadata),
            "delete": len(self.delete),
            "unchanged": self.unchanged,
            "kept": len(self.kept),
            "write-bytes": self.bytes_of((*self.create, *self.update)),
            "keep-bytes": self.kept_bytes,
            "delete-bytes": self.bytes_of(self.delete),
        }

    def listed(self) -> list[tuple[str, str, str, int, tuple[tuple[str, int], ...]]]:
        """``(path, change, type, file bytes, sources)`` of every changed entry, in order
        of change: create, update, metadata, delete."""
        return [
            (
                path,
                change,
                self.types.get(path, ""),
                self.sizes.get(path, 0),
                self.sources.get(path, ()),
            )
            for change, paths in (
                ("create", self.create),
                ("update", self.update),
                ("metadata", self.metadata),
                ("delete", self.delete),
            )
            for path in paths
        ]


def compare(
    archive: Listing,
    tree: Listing,
    *,
    owners: bool,
    permissions: bool,
    delete_extra: bool,
    patterns: Patterns | None = None,
) -> Changes:
    """What an untar changes; an entry ``patterns`` leave out is never one (neither
    written nor deleted), on either side."""
    if patterns is not None and not patterns.empty:
        archive = _allowed(archive, patterns)
        tree = _allowed(tree, patterns)
    ignored = set() if owners else {"uid", "gid", "xattr"}
    if not permissions:
        ignored.add("mode")
    create, update, metadata, unchanged = [], [], [], 0
    sizes: dict[str, int] = {}
    types: dict[str, str] = {}
    kept_bytes = 0
    for path, want in archive.items():
        have = tree.get(path)
        wanted = fields(want)
        if have is None:
            create.append(path)
        elif have != want and (held := _masked(have, ignored)) != (
            masked := _masked(want, ignored)
        ):
            if _content(held) != _content(masked):
                update.append(path)
            else:
                metadata.append(path)
                kept_bytes += int(wanted.get("size", 0))
        else:
            unchanged += 1
            kept_bytes += int(wanted.get("size", 0))
            continue
        sizes[path] = int(wanted.get("size", 0))
        types[path] = wanted.get("type", "")
    extra = _topmost(p for p in tree if p not in archive)
    tops = set(extra)
    for top in extra:
        types[top], sizes[top] = fields(tree[top]).get("type", ""), 0
    for p, words in tree.items():  # an extra directory's bytes: every file below it
        if (holder := _within(p, tops)) is not None:
            sizes[holder] += int(fields(words).get("size", 0))
    return Changes(
        tuple(create),
        tuple(update),
        tuple(extra) if delete_extra else (),
        () if delete_extra else tuple(extra),
        unchanged,
        tuple(metadata),
        sizes,
        types,
        kept_bytes,
    )


def _allowed(listing: Listing, patterns: Patterns) -> Listing:
    """The entries of ``listing`` the patterns keep (paths as mtree escapes them)."""
    return {
        path: words
        for path, words in listing.items()
        if path == "." or patterns.allows(_unescape(path), fields(words).get("type") == "dir")
    }


def _unescape(path: str) -> str:
    """A path as mtree wrote it (``\\ooo`` per byte outside printable ASCII) back."""
    raw = re.sub(rb"\\([0-7]{3})", lambda m: bytes([int(m[1], 8)]), path.encode())
    return os.fsdecode(raw)


def _content(f: Fields) -> Fields:
    """The fields that say what an entry holds (its type, size, digest, link target)."""
    return {k: v for k, v in f.items() if k in _CONTENT or k.endswith("digest")}


def _masked(words: str, ignored: set[str]) -> Fields:
    """The fields but those ``ignored`` (``xattr`` stands for every ``xattr.*``)."""
    return {k: v for k, v in fields(words).items() if k.partition(".")[0] not in ignored}


def _within(path: str, tops: set[str]) -> str | None:
    """``path`` itself or the ancestor of it that is in ``tops``, if any (one pass over
    a tree, not one per extra directory)."""
    while path not in tops:
        path, slash, _ = path.rpartition("/")
        if not slash:
            return None
    return path


def _topmost(paths: Iterable[str]) -> list[str]:
    """Paths without their descendants (listing order puts a directory first)."""
    out: list[str] = []
    for p in paths:
        if not out or not p.startswith(out[-1] + "/"):
            out.append(p)
    return out


def diff_sides(
    changes: Changes, archive: Listing, tree: Listing
) -> tuple[dict[str, str], dict[str, str]]:
    """Before and after, per changed entry (the first ``SHOWN``)."""
    before: dict[str, str] = {}
    after: dict[str, str] = {}
    changed = [path for path, *_ in changes.listed()]
    for path in changed[:SHOWN]:
        had, has = tree.get(path), archive.get(path)
        if had is not None and has is not None:  # only what changes
            old, new = fields(had), fields(has)
            keys = [k for k in dict.fromkeys([*old, *new]) if old.get(k) != new.get(k)]
            had = " ".join(f"{k}={old[k]}" for k in keys if k in old)
            has = " ".join(f"{k}={new[k]}" for k in keys if k in new)
        before[path] = _describe(had)
        after[path] = _describe(has)
    if len(changed) > SHOWN:
        before["…"] = after["…"] = f"{len(changed) - SHOWN} more entries"
    return before, after


def _describe(words: str | None) -> str:
    if words is None:
        return "absent"
    out = []
    for key, value in fields(words).items():
        if key.endswith("digest"):
            value = value[:16] + "…"
        out.append(f"{key}={value}")
    return " ".join(out)
