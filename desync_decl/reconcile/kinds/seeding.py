"""The seeds of an extract task: the target itself, then the seeds the task names.

The target is always a seed when it is replaced by a new file (in place, what it
holds is kept where it lies already): with the index its record names while the
record matches it (the state folder's copy of that index, or the index of a
declared seed naming the target, when it has that digest), else chunked now, as
desync's ``--seed-file``. A declared seed naming the target is that seed: the
natural manifest seeds the target with the previous version's index, which stops
being true once the target is converged, rolled back or edited.

Declared seeds that do not exist yet (a machine's first install) are left out
with a note. Which seeds are believed without being read (``TaskSeeds.believed``):
the target with its recorded index or chunked just now, a seed file whose
matching record names its index, a seed an earlier task of the run writes. Every
other seed chunk a plan counts on is read and hashed as apply reads it
(``ops.extract.plan_with_valid_seeds``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from desync_decl.assemble.seeds import Seed, SeedSpec
from desync_decl.errors import DesyncError
from desync_decl.formats.index import Index
from desync_decl.manifest import ExtractAction
from desync_decl.manifest import Seed as ManifestSeed
from desync_decl.manifest.convert import is_url
from desync_decl.ops.seeding import open_seeds, reindex
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds.base import file_facts
from desync_decl.reconcile.state import FileRecord, open_to_read

TARGET = "target"  # the target's name as a seed, in plans and messages


@dataclass
class TaskSeeds:
    seeds: list[Seed] = field(default_factory=list)
    facts: list[dict[str, object]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    trusted: list[Seed] = field(default_factory=list)  # these very seeds, not equal ones

    def believed(self, seed: Seed) -> bool:
        """Whether ``seed`` holds what its index says without reading it (one made
        again from its file after it was found lying is read like any other)."""
        return any(seed is s for s in self.trusted)

    def trust(self, seed: Seed) -> None:
        self.trusted.append(seed)


@dataclass(frozen=True)
class LookedAt:
    """The target as ``observe`` opened it: its fd, status and matching record."""

    fd: int
    st: os.stat_result
    record: FileRecord | None  # None when there is none, it does not match, or --verify


def matching_record(ctx: Context, path: Path, fd: int, st: os.stat_result) -> FileRecord | None:
    """The record of the file ``path`` open as ``fd``, if it still describes it
    (never under ``--verify``)."""
    if ctx.verify:
        return None
    record = ctx.state.file_record(path, fd)
    return record if record is not None and record.unchanged(st) else None


def task_seeds(
    ctx: Context,
    a: ExtractAction,
    target: Index,
    st: os.stat_result | None,
    looked: LookedAt | None,
) -> TaskSeeds:
    """The seeds of the task: the target first (``looked``; None when it is not to be
    one, ``st`` its status or None when absent), then the declared ones that exist.
    A declared seed naming the target is the target seed, or none in place."""
    declared = list(a.seeds)
    naming_target: list[ManifestSeed] = []
    if st is not None:
        naming_target = [s for s in declared if _is_target(s.file, a.path, st)]
        declared = [s for s in declared if s not in naming_target]
    out = open_task_seeds(ctx, declared, target)
    if looked is None:
        for named in naming_target:
            why = "in place its data is kept where it lies" if a.in_place else "not a regular file"
            out.notes.append(f"seed {named.file} is the target itself, not used: {why}")
    else:
        seed, how = _target_seed(ctx, a.path, target, looked, naming_target)
        out.seeds.insert(0, seed)
        out.facts.insert(0, {"file": TARGET, "index": how})
        out.trust(seed)
    return out


def open_task_seeds(ctx: Context, seeds: Sequence[ManifestSeed], target: Index) -> TaskSeeds:
    """The seeds that exist, their facts, a note for each one left out, and which
    are believed without reading them."""
    out = TaskSeeds()
    for seed in seeds:
        identity = file_facts(ctx, seed.file)
        if identity.get("exists") is False:
            out.notes.append(f"seed {seed.file}: no such file, not used")
            continue
        found = ctx.find_index(seed.index)
        if found is None:
            out.notes.append(f"seed {seed.file}: no index {seed.index}, not used")
            continue
        index, producer = found
        if producer is None and not is_url(seed.index):
            (one,) = open_seeds([SeedSpec(seed.file, Path(seed.index))], target)
        else:  # written by an earlier task, or in an index store
            if index.digest is not target.digest:
                raise DesyncError(
                    f"seed index {seed.index} uses {index.digest.value} chunk ids, the index"
                    f" being extracted {target.digest.value}: no chunk could ever match"
                )
            one = Seed(seed.file, index, seed.index)
        out.seeds.append(one)
        out.facts.append({"file": identity, "index": index.file_digest()})
        if _vouched_for(ctx, seed.file, one.index):
            out.trust(one)
    return out


def _target_seed(
    ctx: Context,
    path: Path,
    like: Index,
    looked: LookedAt,
    naming_target: list[ManifestSeed],
) -> tuple[Seed, str]:
    """The target as a seed, read through its fd (a name someone could swap is never
    reopened), and how its index was found: the digest it is recorded with, or
    "chunked"."""
    through = Path(f"/proc/self/fd/{looked.fd}")
    record = looked.record
    if record is not None:
        index = ctx.state.kept_index(path, record.index_digest) or _declared_index(
            ctx, naming_target, record.index_digest
        )
        if index is not None and index.digest is like.digest and index.length == looked.st.st_size:
            return Seed(through, index, TARGET), record.index_digest
    return reindex(through, like, TARGET, ctx.concurrency, ctx.progress), "chunked"


def _declared_index(ctx: Context, seeds: list[ManifestSeed], digest: str) -> Index | None:
    """The index of a declared seed naming the target, if it is the one with ``digest``."""
    for seed in seeds:
        found = ctx.find_index(seed.index)
        if found is not None and found[0].file_digest() == digest:
            return found[0]
    return None


def _vouched_for(ctx: Context, file: Path, index: Index) -> bool:
    """Whether ``file`` holds ``index``'s content by the evidence the fast path
    trusts: an earlier task of this run writes it, or its record names that index
    and still matches it (never under ``--verify``)."""
    pending = ctx.overlay.file(file)
    if pending is not None:
        return pending[0].file_digest() == index.file_digest()
    try:
        with open_to_read(file) as fd:
            record = matching_record(ctx, file, fd, os.fstat(fd))
    except OSError:
        return False
    return record is not None and record.index_digest == index.file_digest()


def _is_target(file: Path, target: Path, st: os.stat_result) -> bool:
    """Whether the seed ``file`` is the target (by name, or the same file by another)."""
    if os.path.abspath(file) == os.path.abspath(target):
        return True
    try:
        other = os.stat(file)
    except OSError:
        return False
    return (other.st_dev, other.st_ino) == (st.st_dev, st.st_ino)


def named(seeds: Sequence[Seed], path: Path) -> tuple[Seed, ...]:
    """``seeds`` with the target seed named by ``path`` again (it was read through
    an fd while planning)."""
    return tuple(
        Seed(path, s.index, s.label) if s.label == TARGET and _through_fd(s.path) else s
        for s in seeds
    )


def through(seeds: Sequence[Seed], path: Path, fd: int | None) -> list[Seed]:
    """``seeds`` with the target seed (named ``path``) read through ``fd``, the target
    opened again and found to be the file planned on; without it (it changed since)
    the target seed is left out."""
    out = []
    for s in seeds:
        if s.label == TARGET and s.path == path:
            if fd is None:
                continue
            s = Seed(Path(f"/proc/self/fd/{fd}"), s.index, s.label)
        out.append(s)
    return out


def _through_fd(path: Path) -> bool:
    return str(path).startswith("/proc/self/fd/")
