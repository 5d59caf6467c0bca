"""Chunk files (.cacnk): one compressed stream of a chunk's bytes, nothing else.

We write what casync writes: one zstd frame at level 3 through the streaming
API, without content size or checksum. We read any valid zstd frame sequence
(desync and other zstd versions write different frames) and also the xz and
gzip streams a casync built with ``--compression=`` leaves behind, telling
them apart by magic as casync does.
"""

from __future__ import annotations

import gzip
import lzma
import threading
import zlib

import zstandard

COMPRESSED_SUFFIX = ".cacnk"
ZSTD_LEVEL = 3

_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_XZ_MAGIC = b"\xfd7zXZ\x00"
_GZIP_MAGIC = b"\x1f\x8b"

_local = threading.local()  # zstd contexts are not thread-safe: one per thread


class DecodeError(ValueError):
    """The stored bytes are not a valid compressed stream of an acceptable size."""


def _compressor() -> zstandard.ZstdCompressor:
    c = getattr(_local, "compressor", None)
    if c is None:
        c = _local.compressor = zstandard.ZstdCompressor(
            level=ZSTD_LEVEL, write_checksum=False, write_content_size=False
        )
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "decompressor", None)
    if d is None:
        d = _local.decompressor = zstandard.ZstdDecompressor()
    return d


def compress(data: bytes | bytearray | memoryview) -> bytes:
    """A chunk file's bytes for ``data``, framed like casync's (streaming, no size)."""
    obj = _compressor().compressobj()
    return obj.compress(data) + obj.flush()


def decompress(stored: bytes, limit: int) -> bytes:
    """The plain bytes of a chunk file; refuses output larger than ``limit``."""
    if stored.startswith(_ZSTD_MAGIC):
        return _zstd_frames(stored, limit)
    try:
        if stored.startswith(_XZ_MAGIC):
            out = lzma.LZMADecompressor().decompress(stored, max_length=limit + 1)
        elif stored.startswith(_GZIP_MAGIC):
            out = gzip.decompress(stored)
        else:
            raise DecodeError("unknown compression (no zstd, xz or gzip magic)")
    except (lzma.LZMAError, OSError, EOFError, zlib.error) as e:
        raise DecodeError(str(e)) from None
    if len(out) > limit:
        raise DecodeError(f"decompresses to more than {limit} bytes")
    return out


def _zstd_frames(stored: bytes, limit: int) -> bytes:
    size = zstandard.frame_content_size(stored)
    if size > limit:  # -1 when the frame does not say
        raise DecodeError(f"frame declares {size} bytes, more than {limit}")
    parts = []
    total = 0
    rest = stored
    try:
        while rest:
            obj = _decompressor().decompressobj()
            parts.append(obj.decompress(rest))
            total += len(parts[-1])
            if not obj.eof:
                raise DecodeError("zstd stream is truncated")
            if total > limit:
                raise DecodeError(f"decompresses to more than {limit} bytes")
            rest = obj.unused_data
            if rest and not rest.startswith(_ZSTD_MAGIC):
                raise DecodeError("data after the end of the zstd stream")
    except zstandard.ZstdError as e:
        raise DecodeError(f"zstd: {e}") from None
    return parts[0] if len(parts) == 1 else b"".join(parts)
