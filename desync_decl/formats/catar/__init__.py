"""The catar archive format (casync's directory-tree serialization).

- ``records``: record types, framing and size limits
- ``entry``: a node's metadata (ENTRY and the optional records after it)
- ``goodbye``: the table that closes each directory
- ``features``: what the feature flags ask for; casync's --with names
- ``encoder``: source nodes -> catar stream; ``decoder``: catar stream -> nodes

Written from casync's src/caformat.h (the record types and the GOODBYE table)
and src/caencoder.c (the stream order), and checked byte for byte against the
archives casync made in tests/vectors/tree.
"""

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
