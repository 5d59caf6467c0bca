"""The contract every kind meets, and the small helpers kinds share.

A kind is ansible-core's module contract in three steps: ``observe`` reads the
world (never writes), ``plan`` decides from those facts alone (pure: verb,
what travels, diff, facts digest), ``apply`` carries the action out through
the ``ops`` functions and is the only step that writes. ``plan`` and
``apply --check`` run the first two; a kind that cannot do that safely says
``supports_check = False`` and is skipped in check mode. ``resources`` names
the files and stores a task touches, for ordering and locking.

A kind is typed by its manifest action (``A``: ``MakeAction``, ...), what its
``observe`` hands to ``plan`` (``F``, ``Facts.data``) and what its ``plan`` hands
to ``apply`` (``D``, ``Action.detail``): each step gets its own kind's data.
"""

from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, TypeVar

from desync_decl.errors import file_error
from desync_decl.formats.digest import ChunkID
from desync_decl.formats.index import Index
from desync_decl.manifest import Task, TaskAction, TrustDef
from desync_decl.manifest.convert import is_url
from desync_decl.progress import Progress
from desync_decl.reconcile.context import Context
from desync_decl.reconcile.model import Action, AnyAction, Facts, SignedBy, TaskResult, Verb
from desync_decl.reconcile.resolve import Resolver


@dataclass(frozen=True)
class Resources:
    """Keys (``file:PATH``, ``index:URL``, ``store:LOCATION``) a task reads, adds
    chunks to (adds commute with each other) or writes; ``patterns`` are globs
    of files it reads (a prune's keep list)."""

    reads: frozenset[str] = frozenset()
    adds: frozenset[str] = frozenset()
    writes: frozenset[str] = frozenset()
    patterns: frozenset[str] = frozenset()

    def locks(self) -> dict[str, bool]:
        """Lock key -> exclusive: written things exclusively, stores added to shared."""
        return {key: False for key in self.adds} | {key: True for key in self.writes}


A = TypeVar("A", bound=TaskAction)
F = TypeVar("F")
D = TypeVar("D")


class Kind(Protocol[A, F, D]):
    name: ClassVar[str]  # the manifest key, e.g. "extract"
    supports_check: ClassVar[bool]
    supports_diff: ClassVar[bool]

    def resources(self, task: Task[A], resolver: Resolver) -> Resources: ...

    def observe(self, task: Task[A], ctx: Context) -> Facts[F]: ...

    def plan(self, task: Task[A], facts: Facts[F], ctx: Context) -> Action[A, D]: ...

    def apply(self, action: Action[A, D], ctx: Context, progress: Progress) -> TaskResult: ...


FF = TypeVar("FF")


def with_signatures(facts: Facts[FF], signed: Sequence[SignedBy]) -> Facts[FF]:
    """``facts`` with the signatures a task read or writes: shown by the plan, and part
    of the facts digest (a saved plan made when another key signed is refused)."""
    if not signed:
        return facts
    fields = {**facts.digest_fields, "signed-by": {s.index: s.signer for s in signed}}
    return dataclasses.replace(facts, digest_fields=fields, signatures=tuple(signed))


def judged_first(
    ctx: Context,
    index: str,
    trust: TrustDef | None,
    observe: Callable[[Index | None], Facts[FF]],
) -> Facts[FF]:
    """``observe(None)``, or under ``trust`` the index at ``index`` judged first —
    every run, a converged target too — then ``observe(the index as judged)``, with
    its signer in the facts (``with_signatures``). A refusal raises before anything
    is observed, so nothing is fetched for an index the trust refuses."""
    if trust is None:
        return observe(None)
    trusted, signed = ctx.trusted_index(index, trust)
    return with_signatures(observe(trusted), [signed])


def location_key(location: str) -> str:
    """The resource key of an index or file location."""
    return f"index:{location}" if is_url(location) else f"file:{os.path.abspath(location)}"


def store_keys(resolver: Resolver, names: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The resource keys of the store definitions behind ``names``."""
    leaves = [leaf for name in names for leaf in resolver.leaves(name)]
    return frozenset(f"store:{resolver.location(leaf)}" for leaf in leaves)


def file_facts(ctx: Context, path: Path) -> dict[str, object]:
    """A file's identity for the facts digest: what an earlier task of the run
    gives it, or its stat (absent files say so)."""
    pending = ctx.overlay.file(path)
    if pending is not None:
        return {"produced-by": pending[1], "content": pending[0].file_digest()}
    return stat_fields(path) or {"exists": False}


def stat_fields(path: Path) -> dict[str, object] | None:
    """Size, mtime, inode and ctime of a file as it is now; None if it does not exist."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise file_error(path, e, "stat") from None
    out: dict[str, object] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "ino": st.st_ino}
    out["ctime_ns"] = st.st_ctime_ns
    if stat.S_ISBLK(st.st_mode):
        out["device"] = True
    return out


def size_of(indexes: Iterable[Index], ids: Iterable[ChunkID]) -> int:
    """Bytes of the distinct chunks ``ids``, sizes taken from ``indexes``."""
    sizes = {c.id: c.size for index in indexes for c in index}
    return sum(sizes[i] for i in set(ids))


def why_words(action: AnyAction) -> str:
    """The reason after a result's verb ("extracted, content differs …"): none for a
    target that was absent, where "extracted, absent" reads as if nothing was there
    afterwards."""
    return "" if action.verb is Verb.CREATE else f", {action.reason}"
