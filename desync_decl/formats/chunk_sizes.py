"""Chunk sizes as an index header stores them and as ``-m MIN:AVG:MAX`` gives them.

Pure data: reading an index needs them, and must not load the chunker's C extension
(``chunker`` imports them from here).
"""

from __future__ import annotations

from dataclasses import dataclass

from desync_decl.errors import UsageError
from desync_decl.units import KiB, MiB, parse_size

WINDOW_SIZE = 48  # bytes the rolling hash looks at: a hashed chunk is at least this long
MAX_CHUNK_SIZE = 128 * MiB  # casync's limit for each of min, avg and max


@dataclass(frozen=True)
class ChunkSizes:
    """Minimum, average and maximum chunk size in bytes (what an index header stores)."""

    min: int
    avg: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.avg <= self.max:
            raise UsageError(f"invalid chunk sizes {self}: need 1 <= min <= avg <= max")
        if self.max > MAX_CHUNK_SIZE:
            raise UsageError(f"invalid chunk sizes {self}: each must be at most 128 MiB")
        if not self.fixed and self.max < WINDOW_SIZE:
            raise UsageError(
                f"invalid chunk sizes {self}: max must be at least {WINDOW_SIZE} bytes"
                " (the hash window) unless min = avg = max"
            )

    def __str__(self) -> str:
        return f"{self.min}:{self.avg}:{self.max}"

    @property
    def fixed(self) -> bool:
        """casync cuts every ``avg`` bytes without hashing when all three are equal."""
        return self.min == self.avg == self.max

    @classmethod
    def parse(cls, text: str, default_unit: int = KiB) -> ChunkSizes:
        """Parse desync's ``-m MIN:AVG:MAX`` (plain numbers are KiB) or a single AVG.

        Suffixes B, K/KiB, M/MiB give explicit units, so casync's byte values
        (``1000B:3000B:20000B``) can be written too. A single value is the
        average; min = avg/4 and max = avg*4, as casync derives them.
        """
        parts = text.split(":")
        if len(parts) not in (1, 3):
            raise UsageError(f"invalid chunk size '{text}': expected MIN:AVG:MAX or AVG")
        values = [_parse_size(p, text, default_unit) for p in parts]
        if len(values) == 1:
            avg = values[0]
            return cls(max(1, avg // 4), avg, min(MAX_CHUNK_SIZE, avg * 4))
        try:
            return cls(*values)
        except UsageError as e:
            raise UsageError(f"invalid chunk size '{text}': {str(e).split(': ', 1)[1]}") from None


def _parse_size(part: str, text: str, default_unit: int) -> int:
    try:
        return parse_size(part, default_unit)
    except ValueError:
        raise UsageError(f"invalid chunk size '{text}': '{part}' is not a size") from None


DEFAULT_CHUNK_SIZES = ChunkSizes(16 * KiB, 64 * KiB, 256 * KiB)
