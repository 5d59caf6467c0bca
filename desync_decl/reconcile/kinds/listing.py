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

import os
from collections.abc import Iterable
from dataclasses import dataclass

from desync_decl.formats.index import Index
from desync_decl.ops.mtree import mtree, mtree_dir
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


def archive_listing(index: Index, store: Store, *, concurrency: int) -> Listing:
    return parse(mtree(index, store=store, digest=index.digest, concurrency=concurrency))


def tree_listing(root: str | os.PathLike, index: Index) -> Listing:
    return parse(mtree_dir(root, flags=index.flags, digest=index.digest))


@dataclass(frozen=True)
class Changes:
    create: tuple[str, ...]
    update: tuple[str, ...]
    delete: tuple[str, ...]  # extras the task deletes
    kept: tuple[str, ...]  # extras it keeps
    unchanged: int

    @property
    def any(self) -> bool:
        return bool(self.create or self.update or self.delete)

    def summary(self) -> str:
        """``2 to create, 1 to update, 40 unchanged, 1 extra kept``."""
        parts = [
            f"{n} {what}"
            for n, what in (
                (len(self.create), "to create"),
                (len(self.update), "to update"),
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
            "delete": len(self.delete),
            "unchanged": self.unchanged,
            "kept": len(self.kept),
        }


def compare(
    archive: Listing,
    tree: Listing,
    *,
    owners: bool,
    permissions: bool,
    delete_extra: bool,
) -> Changes:
    ignored = set() if owners else {"uid", "gid", "xattr"}
    if not permissions:
        ignored.add("mode")
    create, update, unchanged = [], [], 0
    for path, want in archive.items():
        have = tree.get(path)
        if have is None:
            create.append(path)
        elif have != want and _masked(have, ignored) != _masked(want, ignored):
            update.append(path)
        else:
            unchanged += 1
    extra = _topmost(p for p in tree if p not in archive)
    return Changes(
        tuple(create),
        tuple(update),
        tuple(extra) if delete_extra else (),
        () if delete_extra else tuple(extra),
        unchanged,
    )


def _masked(words: str, ignored: set[str]) -> Fields:
    """The fields but those ``ignored`` (``xattr`` stands for every ``xattr.*``)."""
    return {k: v for k, v in fields(words).items() if k.partition(".")[0] not in ignored}


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
    changed = [*changes.create, *changes.update, *changes.delete]
    for path in changed[:SHOWN]:
        before[path] = _describe(tree.get(path))
        after[path] = _describe(archive.get(path))
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
