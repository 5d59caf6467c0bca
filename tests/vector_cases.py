"""The blob cases of tests/vectors, parsed from their case.txt files."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.formats.digest import Digest
from tests.vectors import VECTORS


@dataclass(frozen=True)
class BlobCase:
    name: str
    dir: Path
    input: str  # gen_input.py name
    sizes: ChunkSizes
    digest: Digest
    options: tuple[str, ...]  # casync make options

    @property
    def has_store(self) -> bool:
        return (self.dir / "store").is_dir()


def blob_cases() -> list[BlobCase]:
    return [_case(d) for d in sorted((VECTORS / "blob").iterdir())]


def _case(d: Path) -> BlobCase:
    meta = dict(
        line.split(": ", 1) for line in (d / "case.txt").read_text().splitlines() if ": " in line
    )
    options = tuple(o for o in meta["make"].split() if o.startswith("--") and "store" not in o)
    sizes = DEFAULT_CHUNK_SIZES
    digest = Digest.SHA512_256
    for o in options:
        if m := re.match(r"--chunk-size=(.*)", o):
            sizes = ChunkSizes.parse(m.group(1), default_unit=1)
        if m := re.match(r"--digest=(.*)", o):
            digest = Digest.parse(m.group(1))
    return BlobCase(d.name, d, meta["input"].split()[0], sizes, digest, options)
