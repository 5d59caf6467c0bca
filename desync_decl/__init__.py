"""desync-decl: declarative, casync/desync-compatible distribution of big binaries.

The engine re-implements casync's formats (chunker, .caibx/.caidx indexes,
.cacnk chunk files) byte for byte and desync's stores and verbs; the package
layout follows shared/DESIGN.md (formats -> stores -> ops -> cli).
"""

__version__ = "0.1.0"
