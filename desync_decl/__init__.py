"""desync-decl: declarative, casync/desync-compatible distribution of big binaries.

The engine re-implements casync's formats (chunker, .caibx/.caidx indexes,
.cacnk chunk files) byte for byte and desync's stores and verbs; the package
layers and what each may import are in ARCHITECTURE.md.
"""

__version__ = "0.1.0"
