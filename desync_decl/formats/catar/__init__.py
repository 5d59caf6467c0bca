"""The catar archive format (casync's directory-tree serialization).

- ``records``: record types, framing and size limits
- ``entry``: a node's metadata (ENTRY and the optional records after it)
- ``goodbye``: the table that closes each directory
- ``features``: what the feature flags ask for; casync's --with names
- ``encoder``: source nodes -> catar stream; ``decoder``: catar stream -> nodes

Written from casync's src/caformat.h (the record types and the GOODBYE table)
and src/caencoder.c (the stream order), and checked byte for byte against the
archives casync made in tests/vectors/tree.

The names below are loaded from their module at their first use: ``tar`` encodes
and never loads the decoder (and its C leaf decoder), ``untar`` the other way round.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from desync_decl.formats.catar.decoder import Decoder, DirEnd, Node
    from desync_decl.formats.catar.encoder import EncodeError, SourceNode, encode
    from desync_decl.formats.catar.entry import Acl, AclEntry, DefaultAcl, Entry

__all__ = [
    "Acl",
    "AclEntry",
    "Decoder",
    "DefaultAcl",
    "DirEnd",
    "EncodeError",
    "Entry",
    "Node",
    "SourceNode",
    "encode",
]

_MODULE_OF = {
    "Decoder": "decoder",
    "DirEnd": "decoder",
    "Node": "decoder",
    "EncodeError": "encoder",
    "SourceNode": "encoder",
    "encode": "encoder",
    "Acl": "entry",
    "AclEntry": "entry",
    "DefaultAcl": "entry",
    "Entry": "entry",
}


def __getattr__(name: str) -> object:
    """One of the names above, from its module (imported now)."""
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
