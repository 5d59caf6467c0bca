"""The reconciler's kinds, one module each, listed here explicitly.

A manifest task's key (``make``, ``extract``, ...) picks its kind. A second
kind under a name already taken is refused, never silently replaces the first.
The registry holds kinds of every type (``AnyKind``): a task is only ever handed
to the kind its key names, whose action type is that key's.
"""

from __future__ import annotations

from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.reconcile.kinds.base import Kind, Resources
from desync_decl.reconcile.kinds.cache import CacheKind
from desync_decl.reconcile.kinds.chop import ChopKind
from desync_decl.reconcile.kinds.extract import ExtractKind
from desync_decl.reconcile.kinds.make import MakeKind
from desync_decl.reconcile.kinds.prune import PruneKind
from desync_decl.reconcile.kinds.tar import TarKind
from desync_decl.reconcile.kinds.untar import UntarKind
from desync_decl.reconcile.kinds.verify import VerifyKind

__all__ = ["KINDS", "AnyKind", "Kind", "Resources", "kind_for", "register"]

AnyKind = Kind[Any, Any, Any]  # the one place a kind's types are erased: dispatch by key
KINDS: dict[str, AnyKind] = {}


def register(kind: AnyKind, registry: dict[str, AnyKind] = KINDS) -> None:
    if kind.name in registry:
        raise ValueError(f"reconciler kind '{kind.name}' is registered twice")
    registry[kind.name] = kind


for _kind in (
    MakeKind(),
    ExtractKind(),
    ChopKind(),
    CacheKind(),
    PruneKind(),
    VerifyKind(),
    TarKind(),
    UntarKind(),
):
    register(_kind)


def kind_for(name: str) -> AnyKind:
    try:
        return KINDS[name]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise DesyncError(f"no reconciler for task kind '{name}' (known: {known})") from None
