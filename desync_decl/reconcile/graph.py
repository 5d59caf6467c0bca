"""Which tasks run (tags) and in what order (what they touch).

Tags work as in Ansible: ``--tags`` picks tasks carrying one of them (``all``:
every task), ``--skip-tags`` drops tasks carrying one; a task tagged
``always`` runs unless skipped by name, one tagged ``never`` only when one of
its tags is asked for. A tag asked for that no task carries is an error naming
the tags there are: a typo (``--tags ap``) would otherwise select nothing and
end "successfully" having done nothing.

Two tasks are ordered (the later one waits) when they touch the same file or
store and at least one of them writes it: a write against anything, chunks
added to a store before it is read. Adding chunks commutes, so two tasks
that only add to a store run side by side, and so do a read followed by an
add. A prune's keep globs count as reading every index file they match.
A later task that uses a file an earlier one writes (an extract of the index
a make writes) *needs* it: if the earlier task fails, the later is skipped.
Ordering on a store alone does not skip: whatever the later task then lacks,
it reports itself.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from desync_decl.errors import UsageError
from desync_decl.manifest import Task, TaskAction
from desync_decl.reconcile.kinds.base import Resources


def selected(
    task: Task[TaskAction], tags: Iterable[str] = (), skip_tags: Iterable[str] = ()
) -> bool:
    mine, wanted, skipped = set(task.tags), set(tags), set(skip_tags)
    if mine & skipped:
        return False
    if not wanted:
        return "never" not in mine
    if "always" in mine:
        return True
    if "all" in wanted and "never" not in mine:
        return True
    return bool(mine & wanted)


def select(
    tasks: Sequence[Task[TaskAction]], tags: Iterable[str], skip_tags: Iterable[str]
) -> list[Task[TaskAction]]:
    """The tasks ``tags`` and ``skip_tags`` select; ``UsageError`` if either names a
    tag no task carries (``all`` is always known to ``--tags``)."""
    tags, skip_tags = list(tags), list(skip_tags)
    known = {tag for task in tasks for tag in task.tags}
    for option, asked, extra in (("--tags", tags, {"all"}), ("--skip-tags", skip_tags, set())):
        unknown = [tag for tag in dict.fromkeys(asked) if tag not in known | extra]
        if unknown:
            names = ", ".join(sorted(known | extra)) or "none"
            raise UsageError(
                f"{option}: no task is tagged {', '.join(map(repr, unknown))};"
                f" the tags of the manifest are: {names}"
            )
    return [t for t in tasks if selected(t, tags, skip_tags)]


@dataclass(frozen=True)
class Dependencies:
    """``after[i]``: earlier tasks task ``i`` waits for; ``needs[i]``: those of them whose
    output it uses (a file or index they write), so it is skipped if one of them fails."""

    after: list[list[int]]
    needs: list[list[int]]


def dependencies(resources: Sequence[Resources]) -> Dependencies:
    after: list[list[int]] = []
    needs: list[list[int]] = []
    for i, later in enumerate(resources):
        edges = [(j, edge(resources[j], later)) for j in range(i)]
        after.append([j for j, e in edges if e is not None])
        needs.append([j for j, e in edges if e == "needs"])
    return Dependencies(after, needs)


def edge(earlier: Resources, later: Resources) -> str | None:
    """ "needs" when ``later`` uses a file ``earlier`` writes; "after" when they only
    must not overlap (a store one adds to and the other reads, one writes a file the
    other reads); None when they can run side by side."""
    produced = earlier.writes & (later.reads | later.adds | later.writes)
    produced |= earlier.adds & later.reads
    if any(not key.startswith("store:") for key in produced):
        return "needs"
    if _matches(earlier.writes, later.patterns):
        return "needs"
    if produced or later.writes & (earlier.reads | earlier.adds):
        return "after"
    return "after" if _matches(later.writes, earlier.patterns) else None


def _matches(keys: Iterable[str], patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for key in keys for pattern in patterns)
