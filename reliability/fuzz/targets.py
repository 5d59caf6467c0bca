"""The fuzz targets: what each parser is fed and what must hold afterwards.

Shared by the hypothesis tests (``tests/test_fuzz_*.py``) and the atheris
harness (``reliability/fuzz/harness.py``). A target returns True when the input
was accepted and False when it was refused with the parser's documented
error; any other exception, or a broken property, is a finding:

- index: ``formats.index.decode`` raises only ``FormatError``; what it accepts
  encodes back to the same bytes.
- chunk: ``chunkfile.decompress`` raises only ``DecodeError`` and never returns
  more than its limit; so does a store's encrypted format (``converters``), on
  raw bytes and on mutated plaintext sealed with the right key.
- catar: ``catar.Decoder`` raises only ``FormatError`` and never yields more
  payload than the stream holds.
- manifest: ``load_manifest`` raises only ``ManifestError``.
"""

from __future__ import annotations

import io
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from desync_decl.errors import FormatError
from desync_decl.formats import chunkfile
from desync_decl.formats import index as index_format
from desync_decl.formats.catar import Decoder, Node
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import ChunkID
from desync_decl.manifest import ManifestError, load_manifest
from desync_decl.stores.converters import Cipher, StorageFormat

ROOT = Path(__file__).resolve().parents[2]
CHUNK_LIMIT = 1 << 20  # what an index entry of this size would allow
KEY = "5a" * 32
FORMATS = [
    StorageFormat(compressed=True, cipher=Cipher("xchacha20-poly1305", KEY)),
    StorageFormat(compressed=True, cipher=Cipher("aes-256-gcm", KEY)),
    StorageFormat(compressed=False, cipher=Cipher("aes-256-gcm", KEY)),
]
_ID = ChunkID(bytes(32))
_ENV = {"TOKEN": "t", "JOBS": "4", "EMPTY": ""}


def index(data: bytes) -> bool:
    try:
        decoded = index_format.decode(data, "fuzz")
    except FormatError:
        return False
    assert decoded.encode() == data, "an accepted index does not encode back to its bytes"
    assert all(c.size <= decoded.sizes.max for c in decoded)
    return True


def chunk(data: bytes, limit: int = CHUNK_LIMIT) -> bool:
    try:
        out = chunkfile.decompress(data, limit)
    except DecodeError:
        return False
    assert len(out) <= limit, f"{len(out)} bytes out with a limit of {limit}"
    return True


def encrypted_chunk(data: bytes, limit: int = CHUNK_LIMIT) -> bool:
    """The bytes as a stored chunk, then sealed with the key (so the layers below the
    cipher see them too); accepted when any format reads them."""
    accepted = False
    for form in FORMATS:
        assert form.cipher is not None
        for stored in (data, form.cipher.encrypt(data)):
            try:
                out = form.decode(_ID, stored).plain(limit)
            except DecodeError:
                continue
            assert len(out) <= limit or not form.compressed
            accepted = True
    return accepted


def catar(data: bytes) -> bool:
    decoder = Decoder(io.BytesIO(data), "fuzz")
    read = 0
    try:
        for item in decoder:
            if isinstance(item, Node) and stat.S_ISREG(item.entry.mode) and item.size:
                read += sum(len(block) for block in decoder.payload(1 << 16))
    except FormatError:
        return False
    finally:
        assert read <= len(data), "more payload than the stream holds"
    return True


def manifest(data: bytes) -> bool:
    with tempfile.TemporaryDirectory(prefix="fuzz-manifest-") as folder:
        path = Path(folder) / "m.yaml"
        path.write_bytes(data)
        try:
            load_manifest(path, env=_ENV)
        except ManifestError:
            return False
    return True


TARGETS: dict[str, Callable[[bytes], bool]] = {
    "index": index,
    "chunk": chunk,
    "encrypted_chunk": encrypted_chunk,
    "catar": catar,
    "manifest": manifest,
}
