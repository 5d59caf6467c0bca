"""Checks a schema cannot express: names that must exist, cycles, uniqueness, value ranges.

They run on whatever parts of the data have the right shape, next to the
schema check, so one run reports everything. Stores, groups and caches share
one namespace: a task's ``stores`` and a group's ``failover`` may name any of
them; ``make``, ``chop``, ``tar``, ``prune`` and ``verify`` write or list
chunks, and a cache keeps its copies, so those need a store.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.globs import filter_pattern, includes_alone
from desync_decl.manifest.convert import is_url, local_path, parse_duration
from desync_decl.manifest.loader import Document
from desync_decl.manifest.places import SECTIONS, where
from desync_decl.manifest.problems import DataPath, Problem
from desync_decl.stores.url import url_scheme
from desync_decl.units import parse_size

ANY = ("stores", "groups", "caches")
STORE = ("stores",)
# task kind -> (field, kinds it may name, whether it is a list)
TASK_REFS: dict[str, list[tuple[str, tuple[str, ...], bool]]] = {
    "make": [("store", STORE, False)],
    "extract": [("stores", ANY, True)],
    "chop": [("store", STORE, False)],
    "cache": [("stores", ANY, True), ("cache", STORE, False)],
    "prune": [("store", STORE, False)],
    "verify": [("store", STORE, False)],
    "tar": [("store", STORE, False)],
    "untar": [("stores", ANY, True)],
}
# task kind -> field naming a local file (or directory) it writes
TASK_TARGETS = {"make": "index", "extract": "path", "tar": "index", "untar": "path"}
OPTION_ALIASES = (("retries", "error_retry"), ("retry_interval", "error_retry_base_interval"))
DURATIONS = ("timeout", "retry_interval", "error_retry_base_interval")


def semantic_problems(doc: Document, base_dir: Path) -> list[Problem]:
    checker = _Checker(doc, base_dir)
    checker.run()
    return checker.problems


def _alternatives(words: list[str]) -> str:
    """``store``, ``store or group``, ``store, group or cache``."""
    return " or ".join([", ".join(words[:-1]), words[-1]]) if len(words) > 1 else words[0]


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    """A string as written; anything else (reported by the schema) as none."""
    return value if isinstance(value, str) else ""


class _Checker:
    def __init__(self, doc: Document, base_dir: Path) -> None:
        self.doc = doc
        self.data = _mapping(doc.data)
        self.base_dir = base_dir
        self.problems: list[Problem] = []
        self.sections = {s: _mapping(self.data.get(s)) for s in ANY}
        self.kind_of: dict[str, str] = {}  # name -> section, first definition wins
        tasks = self.data.get("tasks")
        tasks = tasks if isinstance(tasks, list) else []
        self.tasks = [(i, t) for i, t in enumerate(tasks) if isinstance(t, dict)]

    def add(self, path: DataPath, message: str, *, at_key: bool = False) -> None:
        position = self.doc.key_at(path) if at_key else self.doc.at(path)
        self.problems.append(Problem(position, message, path))

    def run(self) -> None:
        self.names()
        self.references()
        self.cycles()
        self.task_names()
        self.present_needs()
        self.targets()
        self.trees()
        self.patterns()
        self.sizes()
        self.store_options()
        self.locations()
        self.handlers()
        self.trusts()

    def names(self) -> None:
        for section in ANY:
            for name in self.sections[section]:
                first = self.kind_of.setdefault(name, section)
                if first != section:
                    at = self.doc.key_at((first, name)).short()
                    message = (
                        f"name '{name}' is both a {SECTIONS[first]} ({at}) and a"
                        f" {SECTIONS[section]}: stores, groups and caches need distinct names"
                    )
                    self.add((section, name), message, at_key=True)

    def references(self) -> None:
        for name, group in self.sections["groups"].items():
            self.ref_list(("groups", name, "failover"), _mapping(group).get("failover"), ANY)
        for name, cache in self.sections["caches"].items():
            cache = _mapping(cache)
            self.ref(("caches", name, "store"), cache.get("store"), ANY)
            self.ref(("caches", name, "cache"), cache.get("cache"), STORE)
        for i, task in self.tasks:
            for kind, fields in TASK_REFS.items():
                action = _mapping(task.get(kind))
                for field, kinds, many in fields:
                    path = ("tasks", i, kind, field)
                    if many:
                        self.ref_list(path, action.get(field), kinds)
                    else:
                        self.ref(path, action.get(field), kinds)

    def ref_list(self, path: DataPath, names: Any, kinds: tuple[str, ...]) -> None:
        for j, name in enumerate(names if isinstance(names, list) else []):
            self.ref((*path, j), name, kinds)

    def ref(self, path: DataPath, name: Any, kinds: tuple[str, ...]) -> None:
        if not isinstance(name, str):
            return
        found = self.kind_of.get(name)
        what = _alternatives([SECTIONS[k] for k in kinds])
        if found is None:
            self.add(path, f"unknown {what} '{name}' in {self.where(path)} ({self.known(kinds)})")
        elif found not in kinds:
            self.add(
                path,
                f"{self.where(path)} must name a {what}, but '{name}' is a {SECTIONS[found]}"
                f" ({self.known(kinds)})",
            )

    def known(self, kinds: tuple[str, ...]) -> str:
        lists = [(k, sorted(n for n, s in self.kind_of.items() if s == k)) for k in kinds]
        if len(kinds) == 1:
            return f"known: {', '.join(lists[0][1]) or 'none'}"
        shown = [f"{k} {', '.join(names)}" for k, names in lists if names]
        return f"known: {'; '.join(shown) or 'none'}"

    def where(self, path: DataPath) -> str:
        return where(path, self.data)

    def cycles(self) -> None:
        """Groups and caches refer to each other; a loop would never find a chunk."""
        edges: dict[str, list[tuple[object, DataPath]]] = {}  # targets as written
        for name, group in self.sections["groups"].items():
            if self.kind_of.get(name) != "groups":
                continue  # a duplicate name, reported already
            members = _mapping(group).get("failover")
            for j, member in enumerate(members if isinstance(members, list) else []):
                edges.setdefault(name, []).append((member, ("groups", name, "failover", j)))
        for name, cache in self.sections["caches"].items():
            if self.kind_of.get(name) != "caches":
                continue
            edges.setdefault(name, []).append(
                (_mapping(cache).get("store"), ("caches", name, "store"))
            )
        state: dict[str, int] = {}  # 1 = on the current path, 2 = done
        for start in edges:
            self._visit(start, [start], edges, state)

    def _visit(
        self,
        name: str,
        trail: list[str],
        edges: dict[str, list[tuple[object, DataPath]]],
        state: dict[str, int],
    ) -> None:
        if state.get(name):
            return
        state[name] = 1
        for target, path in edges.get(name, []):
            if not isinstance(target, str) or target not in edges:
                continue
            if state.get(target) == 1:
                loop = [*trail[trail.index(target) :], target]
                kinds = [f"{SECTIONS[self.kind_of.get(n, 'stores')]} '{n}'" for n in loop]
                self.add(path, f"reference cycle: {' -> '.join(kinds)}")
            else:
                self._visit(target, [*trail, target], edges, state)
        state[name] = 2

    def task_names(self) -> None:
        first: dict[str, DataPath] = {}
        for i, task in self.tasks:
            name = task.get("name")
            if not isinstance(name, str):
                continue
            path = ("tasks", i, "name")
            if name in first:
                at = self.doc.at(first[name]).short()
                self.add(path, f"duplicate task name '{name}' (first at {at})")
            else:
                first[name] = path

    def present_needs(self) -> None:
        """An extract or untar needs an index and stores unless its target is to be
        absent (a key misspelt is reported by the schema as unknown already)."""
        for i, task in self.tasks:
            for kind in ("extract", "untar"):
                action = task.get(kind)
                if not isinstance(action, dict) or action.get("state") == "absent":
                    continue
                for key in ("index", "stores"):
                    others = [k for k in action if k != key]
                    if key in action or difflib.get_close_matches(key, others, n=1, cutoff=0.8):
                        continue
                    path = ("tasks", i, kind)
                    self.add(
                        path, f"missing required key '{key}' in {self.where(path)}", at_key=True
                    )

    def targets(self) -> None:
        """Two tasks writing one file would undo each other on every apply."""
        writers: dict[Path, DataPath] = {}
        for i, task in self.tasks:
            for kind, field in TASK_TARGETS.items():
                target = _mapping(task.get(kind)).get(field)
                if not isinstance(target, str) or not target or is_url(target):
                    continue
                path = ("tasks", i, kind, field)
                resolved = local_path(target, self.base_dir)
                if resolved in writers:
                    other = writers[resolved]
                    self.add(
                        path,
                        f"{self.where(path)}: {self.doc.as_written(path, target)} is also"
                        f" written by {self.where(other[:2])} ({self.doc.at(other).short()})",
                    )
                else:
                    writers[resolved] = path

    def trees(self) -> None:
        """A tar whose index lies in its source would find it changed on every run; an
        untar deleting extra entries would delete what another task writes inside it."""
        for i, task in self.tasks:
            tar = _mapping(task.get("tar"))
            source, index = _text(tar.get("source")), _text(tar.get("index"))
            if source and index and not is_url(index) and self.inside(index, source):
                path: DataPath = ("tasks", i, "tar", "index")
                source = self.doc.as_written(("tasks", i, "tar", "source"), source)
                self.add(
                    path,
                    f"{self.where(path)}: {self.doc.as_written(path, index)} is inside the"
                    f" source directory {source} (the index would change what it describes)",
                )
            untar = _mapping(task.get("untar"))
            target = untar.get("path")
            if untar.get("delete_extra") is True and isinstance(target, str) and target:
                self.written_inside(i, target)
                self.stores_inside(i, _list(untar.get("stores")), target)

    def stores_inside(self, i: int, names: list[Any], directory: str) -> None:
        """An untar deleting extra entries would delete a local store or cache it reads
        through that lies at or in its target (symlinks are resolved when it runs)."""
        path: DataPath = ("tasks", i, "untar", "delete_extra")
        for name in dict.fromkeys(n for n in names if isinstance(n, str)):
            for leaf in self.store_leaves(name, set()):
                url = _text(_mapping(self.sections["stores"].get(leaf)).get("url"))
                if url and not is_url(url) and self.at_or_inside(url, directory):
                    store = ("stores", leaf, "url")
                    self.add(
                        path,
                        f"{self.where(path)}: would delete {self.doc.as_written(store, url)},"
                        f" the store '{leaf}' it reads through ({self.doc.at(store).short()})",
                    )

    def store_leaves(self, name: str, seen: set[str]) -> list[str]:
        """The store definitions a store, group or cache name stands for (a cycle,
        reported by ``cycles``, ends the walk)."""
        if name in seen:
            return []
        seen.add(name)
        if name in self.sections["stores"]:
            return [name]
        group = _mapping(self.sections["groups"].get(name))
        cache = _mapping(self.sections["caches"].get(name))
        inner = [*_list(group.get("failover")), cache.get("store"), cache.get("cache")]
        return [leaf for n in inner if isinstance(n, str) for leaf in self.store_leaves(n, seen)]

    def at_or_inside(self, path: str, directory: str) -> bool:
        """Whether ``path`` is ``directory`` or lies below it (as the manifest resolves them)."""
        return local_path(path, self.base_dir) == local_path(directory, self.base_dir) or (
            self.inside(path, directory)
        )

    def written_inside(self, i: int, directory: str) -> None:
        for j, task in self.tasks:
            for kind, field in TASK_TARGETS.items():
                written = _mapping(task.get(kind)).get(field)
                if j == i or not isinstance(written, str) or not written or is_url(written):
                    continue
                if self.inside(written, directory):
                    path = ("tasks", i, "untar", "delete_extra")
                    other = ("tasks", j, kind, field)
                    self.add(
                        path,
                        f"{self.where(path)}: would delete {self.doc.as_written(other, written)},"
                        f" which {self.where(other[:2])} writes ({self.doc.at(other).short()})",
                    )

    def inside(self, path: str, directory: str) -> bool:
        """Whether ``path`` lies below ``directory`` (both as the manifest resolves them)."""
        parent = local_path(directory, self.base_dir)
        return parent in local_path(path, self.base_dir).parents

    def patterns(self) -> None:
        """tar's and untar's include/exclude patterns parse (``globs.filter_pattern``),
        and include patterns come with an exclude pattern (``globs.includes_alone``)."""
        for i, task in self.tasks:
            for kind in ("tar", "untar"):
                action = _mapping(task.get(kind))
                lists = {key: _list(action.get(key)) for key in ("include", "exclude")}
                for key, patterns in lists.items():
                    for j, text in enumerate(patterns):
                        if not isinstance(text, str) or not text:
                            continue  # the schema reports it
                        try:
                            filter_pattern(text)
                        except ValueError as e:
                            path: DataPath = ("tasks", i, kind, key, j)
                            self.add(path, f"{self.where(path)}: bad pattern {text!r}: {e}")
                why = includes_alone([str(p) for p in lists["include"]], lists["exclude"])
                if why is not None:
                    path = ("tasks", i, kind, "include")
                    self.add(path, f"{self.where(path)}: {why}")

    def sizes(self) -> None:
        self.chunk_size(("defaults", "chunk_size"), _mapping(self.data.get("defaults")))
        for i, task in self.tasks:
            for kind in ("make", "tar"):
                path: DataPath = ("tasks", i, kind, "chunk_size")
                self.chunk_size(path, _mapping(task.get(kind)))
        for name, cache in self.sections["caches"].items():
            size = _mapping(cache).get("max_size")
            if not isinstance(size, str):
                continue
            path = ("caches", name, "max_size")
            try:
                if parse_size(size) == 0:
                    self.add(path, f"{self.where(path)}: must be more than 0 (or left out)")
            except ValueError:
                pass  # the schema reports the syntax

    def chunk_size(self, path: DataPath, parent: dict[str, Any]) -> None:
        text = parent.get(str(path[-1]))
        if not isinstance(text, str):
            return
        try:
            ChunkSizes.parse(text)
        except DesyncError as e:
            self.add(path, f"{self.where(path)}: {e}")

    def store_options(self) -> None:
        for name, store in self.sections["stores"].items():
            store = _mapping(store)
            url = store.get("url")
            if isinstance(url, str) and "|" in url:
                self.add(
                    ("stores", name, "url"),
                    f"{self.where(('stores', name, 'url'))}: '|' is not allowed in a URL"
                    " (list the stores in a group's failover instead)",
                )
            self.options(("stores", name, "options"), _mapping(store.get("options")))

    def locations(self) -> None:
        """Store URLs and index locations parse as the stores will parse them."""
        for path, text in self.location_values():
            if isinstance(text, str):
                try:
                    url_scheme(text)
                except DesyncError as e:
                    self.add(path, f"{self.where(path)}: {e}")

    def location_values(self) -> Iterator[tuple[DataPath, Any]]:
        for name, store in self.sections["stores"].items():
            yield ("stores", name, "url"), _mapping(store).get("url")
        for i, task in self.tasks:
            for kind, action in task.items():
                action = _mapping(action)
                yield ("tasks", i, kind, "index"), action.get("index")
                for j, index in enumerate(_list(action.get("indexes"))):
                    yield ("tasks", i, kind, "indexes", j), index
                for j, seed in enumerate(_list(action.get("seeds"))):
                    yield ("tasks", i, kind, "seeds", j, "index"), _mapping(seed).get("index")

    def options(self, path: DataPath, options: dict[str, Any]) -> None:
        for a, b in OPTION_ALIASES:
            if a in options and b in options:
                self.add((*path, b), f"{self.where((*path, b))}: also set as '{a}'; keep one")
        for key in DURATIONS:
            value = options.get(key)
            if value is None or isinstance(value, bool):
                continue
            try:
                seconds = parse_duration(value)
            except ValueError:
                continue  # the schema reports the syntax
            if key == "timeout" and seconds <= 0:
                self.add((*path, key), f"{self.where((*path, key))}: must be more than 0")
        if not options.get("encryption"):
            for key in ("encryption_key", "encryption_algorithm"):
                if key in options:
                    self.add(
                        (*path, key),
                        f"{self.where((*path, key))}: set, but 'encryption: true' is not"
                        " (chunks would be written in plaintext)",
                        at_key=True,
                    )
        if ("client_cert" in options) != ("client_key" in options):
            key = "client_cert" if "client_cert" in options else "client_key"
            self.add(
                (*path, key),
                f"{self.where((*path, key))}: client_cert and client_key go together",
                at_key=True,
            )

    def handlers(self) -> None:
        """A task notifies handlers that exist; a handler's command can be run (no NUL
        in an argument) and its timeout is more than 0."""
        handlers = _mapping(self.data.get("handlers"))
        for i, task in self.tasks:
            for j, name in enumerate(_list(task.get("notify"))):
                if isinstance(name, str) and name not in handlers:
                    path: DataPath = ("tasks", i, "notify", j)
                    known = ", ".join(sorted(handlers)) or "none"
                    self.add(
                        path, f"unknown handler '{name}' in {self.where(path)}; known: {known}"
                    )
        for name, handler in handlers.items():
            for j, arg in enumerate(_list(_mapping(handler).get("command"))):
                if isinstance(arg, str) and "\0" in arg:
                    path = ("handlers", name, "command", j)
                    self.add(path, f"{self.where(path)}: a NUL character cannot be passed")
            value = _mapping(handler).get("timeout")
            path = ("handlers", name, "timeout")
            try:
                too_short = value is not None and parse_duration(value) <= 0
            except ValueError:
                continue  # the schema reports the syntax
            if too_short:
                self.add(path, f"{self.where(path)}: must be more than 0")

    def trusts(self) -> None:
        """An allowed_signers (or revoked_keys) file a trust names parses: a line it
        cannot read is reported as its own ``FILE:LINE`` at the trust that names it. A
        file not there is left to plan and apply (the host's file, on a host), which
        fail the task saying so."""
        defaults = _mapping(self.data.get("defaults"))
        found: list[tuple[DataPath, Any]] = [(("defaults", "trust"), defaults.get("trust"))]
        for i, task in self.tasks:
            for kind, action in task.items():
                found.append((("tasks", i, kind, "trust"), _mapping(action).get("trust")))
        for path, trust in found:
            if isinstance(trust, dict):
                self.trust(path, trust)

    def trust(self, path: DataPath, trust: dict[str, Any]) -> None:
        files = {k: _text(trust.get(k)) for k in ("allowed_signers", "revoked_keys")}
        allowed, revoked = files["allowed_signers"], files["revoked_keys"]
        if not allowed or not local_path(allowed, self.base_dir).is_file():
            return
        if revoked and not local_path(revoked, self.base_dir).is_file():
            return
        signers = [s for s in _list(trust.get("signers")) if isinstance(s, str)]
        from desync_decl.signing import load_trust  # its crypto: only for a manifest with trust

        try:
            load_trust(
                local_path(allowed, self.base_dir),
                signers,
                local_path(revoked, self.base_dir) if revoked else None,
            )
        except DesyncError as e:
            key = "allowed_signers"
            if revoked and str(e).startswith(str(local_path(revoked, self.base_dir))):
                key = "revoked_keys"
            self.add((*path, key), f"{self.where((*path, key))}: {e}")
