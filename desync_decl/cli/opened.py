"""The stores a command opened, closed by ``main`` when its verb is done.

Connections, ssh sessions and server processes must not outlive the command.
Apart from ``common`` (which opens stores and needs the store modules) so that
``main`` closes them without importing any store module: ``--help`` opens none.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:  # for the annotations only: importing the store modules costs start-up
    from desync_decl.stores.base import Store

S = TypeVar("S", bound="Store")


def opened(args: argparse.Namespace, store: S) -> S:
    """Remember a store so that ``main`` closes it when the verb is done."""
    args.__dict__.setdefault("_opened", []).append(store)
    return store


def close_opened(args: argparse.Namespace) -> None:
    """Close every store ``opened`` remembered, the last opened first."""
    for store in reversed(args.__dict__.pop("_opened", [])):
        store.close()
