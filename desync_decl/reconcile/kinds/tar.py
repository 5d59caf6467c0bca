"""``tar``: the ``.caidx`` at ``index`` describes the directory ``source`` as it is
now (with the task's feature flags and chunk sizes), and ``store`` holds its chunks.

Fast path: a record of the tree's fingerprint (one ``lstat`` per entry, see
``trees.py``), the index's digest, the flags, chunk sizes and store, written
when the task last converged; while it matches, nothing is read but the
tree's metadata and the (small) index. Otherwise the tree is archived and
chunked without storing anything (the index it would get), and the store is
asked which chunks it lacks: the plan's upload count.
"""

from __future__ import annotations

import glob
import os
from typing import TYPE_CHECKING, ClassVar

from desync_decl.archive.patterns import Patterns
from desync_decl.errors import DesyncError
from desync_decl.formats.digest import Digest
from desync_decl.manifest import TarAction, Task
from desync_decl.ops.tar import TarInput, tar_index
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.kinds import publish
from desync_decl.reconcile.kinds.base import Kind, Resources, location_key, store_keys
from desync_decl.reconcile.kinds.publish import Cut, Publication, Seen
from desync_decl.reconcile.kinds.trees import fingerprint, tree_index
from desync_decl.reconcile.model import Action, Facts, TaskResult
from desync_decl.reconcile.resolve import Resolver
from desync_decl.stores.base import WriteStore


def archive_flags(a: TarAction, digest: Digest) -> int:
    """The full feature flags of the archive the task writes (as ``tar`` computes them)."""
    from desync_decl.formats.catar import features

    return features.archive_flags(
        a.features,
        sha512_256=digest is Digest.SHA512_256,
        exclude_submounts=a.one_file_system,
    )


class TarKind:
    name: ClassVar[str] = "tar"
    supports_check: ClassVar[bool] = True
    supports_diff: ClassVar[bool] = True

    def resources(self, task: Task[TarAction], resolver: Resolver) -> Resources:
        a = task.action
        source = os.path.abspath(a.source)
        return Resources(
            reads=frozenset({location_key(source)}),
            adds=store_keys(resolver, [a.store]),
            writes=frozenset({location_key(a.index)}),
            patterns=frozenset({f"file:{glob.escape(source)}/*"}),
        )

    def observe(self, task: Task[TarAction], ctx: Context) -> Facts[Seen]:
        return publish.signing(ctx, _publication(task.action), self._observe(task.action, ctx))

    def _observe(self, a: TarAction, ctx: Context) -> Facts[Seen]:
        flags = archive_flags(a, ctx.digest)
        found = ctx.find_index(a.index)
        current = found[0] if found is not None else None
        pending = ctx.overlay.file(a.source) if ctx.simulated else None
        tree = _tree(a) if pending is None else None
        fields: dict[str, object] = {
            "source": tree if pending is None else {"produced-by": pending[1]},
            "index": current.file_digest() if current is not None else None,
            "flags": f"0x{flags:016x}",
            "chunk-size": str(a.chunk_size),
            "store": ctx.resolver.location(a.store),
        }
        patterns = _patterns(a)
        if patterns is not None:  # only then: records written before patterns still match
            fields["patterns"] = patterns.as_json()
        if pending is not None:
            return Facts(fields, Seen(current, None, frozenset(), None, False, pending[1]))
        generation = ctx.state.generation(str(fields["store"]))
        record = {**fields, "generation": generation}
        recorded = ctx.state.get(_key(a)) == record
        if recorded and current is not None and not ctx.verify:
            return Facts(fields, Seen(current, None, frozenset(), record, True, None))
        new = tree_index(
            a.source,
            flags,
            a.chunk_size,
            concurrency=ctx.concurrency,
            progress=ctx.progress,
            patterns=patterns,
        )
        return Facts(fields, publish.compared(ctx, a.store, current, new, record, recorded))

    def plan(
        self, task: Task[TarAction], facts: Facts[Seen], ctx: Context
    ) -> Action[TarAction, Seen | None]:
        return publish.plan(task, facts, ctx, _publication(task.action))

    def apply(
        self, action: Action[TarAction, Seen | None], ctx: Context, progress: Progress
    ) -> TaskResult:
        a = action.task.action
        flags = archive_flags(a, ctx.digest)

        def cut(store: WriteStore) -> Cut:
            result = tar_index(
                TarInput(
                    a.source,
                    flags=flags,
                    one_file_system=a.one_file_system,
                    patterns=_patterns(a),
                ),
                store,
                sizes=a.chunk_size,
                concurrency=ctx.concurrency,
                progress=progress,
            )
            assert result.index is not None  # tar_index always returns one
            return Cut(result.index, result.chunks_stored, result.bytes_stored)

        return publish.apply(
            action,
            ctx,
            _publication(a),
            key=_key(a),
            digest=Digest.from_flags(flags),
            cut=cut,
            source_now=lambda: _tree(a),
        )


def _patterns(a: TarAction) -> Patterns | None:
    """The task's include/exclude patterns (checked when the manifest was loaded)."""
    return Patterns.given(a.include, a.exclude, f"tar task of {a.source}")


def _publication(a: TarAction) -> Publication:
    return Publication(a.source, a.index, a.store, tree=True, sign=a.sign)


def _tree(a: TarAction) -> str:
    """The source's fingerprint; it must be a directory, reached through no symlink
    someone else could have planted (``archive.tree_walk.open_tree``)."""
    found = fingerprint(a.source, one_file_system=a.one_file_system)
    if found is None:
        raise DesyncError(f"{a.source}: no such directory")
    return found


def _key(a: TarAction) -> str:
    return f"tar\0{a.index}"


if TYPE_CHECKING:  # the kind's steps agree on its types (observe -> plan -> apply)
    _typed: Kind[TarAction, Seen, Seen | None] = TarKind()
