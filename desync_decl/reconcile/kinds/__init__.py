"""The reconciler's kinds, one module each, listed here explicitly.

A manifest task's key (``make``, ``extract``, ...) picks its kind. A second
kind under a name already taken is refused, never silently replaces the first.
The registry holds kinds of every type (``AnyKind``): a task is only ever handed
to the kind its key names, whose action type is that key's.

A kind's module is imported when a task of that kind is first asked about (each
brings its operation: archives, the chunker, prune...): an apply of a manifest of
extracts loads the extract kind only.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, MutableMapping
from importlib import import_module
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.reconcile.kinds.base import Kind, Resources

__all__ = ["KINDS", "AnyKind", "Kind", "Resources", "kind_for", "register"]

AnyKind = Kind[Any, Any, Any]  # the one place a kind's types are erased: dispatch by key

# Each kind: "module:class" in this package, as the manifest's keys name them.
_BUILT_IN = {
    "make": "make:MakeKind",
    "extract": "extract:ExtractKind",
    "chop": "chop:ChopKind",
    "cache": "cache:CacheKind",
    "prune": "prune:PruneKind",
    "verify": "verify:VerifyKind",
    "tar": "tar:TarKind",
    "untar": "untar:UntarKind",
}


class _Registry(MutableMapping[str, AnyKind]):
    """The kinds by name: the built-in ones made at their first ask, and those
    registered. Names are known (``in``, iteration) without loading any kind."""

    def __init__(self, built_in: dict[str, str]) -> None:
        self._unloaded = dict(built_in)
        self._kinds: dict[str, AnyKind] = {}
        self._loading = threading.Lock()  # apply -j N asks from several threads

    def __getitem__(self, name: str) -> AnyKind:
        kind = self._kinds.get(name)
        if kind is not None:
            return kind
        with self._loading:
            if name not in self._kinds:
                module, _, cls = self._unloaded[name].partition(":")
                made: AnyKind = getattr(import_module(f"{__name__}.{module}"), cls)()
                assert made.name == name, f"{cls} is named {made.name!r}, listed as {name!r}"
                self._kinds[name] = made
                del self._unloaded[name]
            return self._kinds[name]

    def __setitem__(self, name: str, kind: AnyKind) -> None:
        self._unloaded.pop(name, None)
        self._kinds[name] = kind

    def __delitem__(self, name: str) -> None:
        if name in self._unloaded:
            del self._unloaded[name]
        else:
            del self._kinds[name]

    def __contains__(self, name: object) -> bool:
        return name in self._kinds or name in self._unloaded

    def __iter__(self) -> Iterator[str]:
        return iter([*self._kinds, *self._unloaded])

    def __len__(self) -> int:
        return len(self._kinds) + len(self._unloaded)


KINDS: MutableMapping[str, AnyKind] = _Registry(_BUILT_IN)


def register(kind: AnyKind, registry: MutableMapping[str, AnyKind] = KINDS) -> None:
    if kind.name in registry:
        raise ValueError(f"reconciler kind '{kind.name}' is registered twice")
    registry[kind.name] = kind


def kind_for(name: str) -> AnyKind:
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise DesyncError(f"no reconciler for task kind '{name}' (known: {known})") from None
