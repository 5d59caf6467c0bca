"""How a store holds a chunk: zstd-compressed or not, then encrypted or not.

Plain bytes -> [zstd, unless uncompressed] -> [AEAD, if encrypted] -> stored
bytes, and the reverse on reading. The file extension names the layers
(``.cacnk``, ``.cacnk.xchacha20-poly1305-<keyid>``, ``.aes-256-gcm-<keyid>``,
or nothing), so stores in different formats never see each other's chunks.
Encryption is desync's byte layout: ``nonce || ciphertext || 16-byte tag``, a
random nonce per write, no associated data, ``keyid`` = the first 4 bytes of
SHA-256(key) in hex.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import COMPRESSED_SUFFIX, DecodeError, stored_bound
from desync_decl.formats.digest import ChunkID

ALGORITHMS = ("xchacha20-poly1305", "aes-256-gcm")
DEFAULT_ALGORITHM = ALGORITHMS[0]
_NONCE_SIZES = {"xchacha20-poly1305": 24, "aes-256-gcm": 12}
_TAG_SIZE = 16


def key_id(key: bytes) -> str:
    """A key's fingerprint, as desync names it in chunk names: the first 4 bytes of
    its SHA-256, in hex. What messages show of a key (never the key itself)."""
    return hashlib.sha256(key).digest()[:4].hex()


def fingerprint(key_hex: str) -> str:
    """The fingerprint of a key as configured (64 hex digits), or ``not a valid key``."""
    try:
        key = bytes.fromhex(key_hex)
    except ValueError:
        key = b""
    return key_id(key) if len(key) == 32 else "not a valid key"


class Cipher:
    """An AEAD cipher with one key, safe to share between threads."""

    def __init__(self, algorithm: str, key_hex: str) -> None:
        if algorithm not in ALGORITHMS:
            raise DesyncError(
                f"unknown encryption algorithm '{algorithm}' (known: {', '.join(ALGORITHMS)})"
            )
        try:
            key = bytes.fromhex(key_hex)
        except ValueError:
            key = b""
        if len(key) != 32:
            raise DesyncError("an encryption key must be 64 hex characters (256 bits)")
        self.algorithm = algorithm
        self.key_id = key_id(key)
        self._nonce_size = _NONCE_SIZES[algorithm]
        self._key = key
        if algorithm == "aes-256-gcm":
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            self._aes = AESGCM(key)

    @property
    def extension(self) -> str:
        return f".{self.algorithm}-{self.key_id}"

    @property
    def overhead(self) -> int:
        """Bytes encryption adds: the nonce in front, the tag at the end."""
        return self._nonce_size + _TAG_SIZE

    def encrypt(self, data: bytes | memoryview) -> bytes:
        nonce = os.urandom(self._nonce_size)
        if self.algorithm == "aes-256-gcm":
            return nonce + self._aes.encrypt(nonce, bytes(data), None)
        from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_encrypt

        sealed = crypto_aead_xchacha20poly1305_ietf_encrypt(bytes(data), None, nonce, self._key)
        return nonce + sealed

    def decrypt(self, data: bytes) -> bytes:
        """The plain bytes; ``DecodeError`` when the data was not encrypted with this key."""
        if len(data) < self._nonce_size + _TAG_SIZE:
            raise DecodeError(f"encrypted chunk too short: {len(data)} bytes")
        nonce, sealed = data[: self._nonce_size], data[self._nonce_size :]
        try:
            if self.algorithm == "aes-256-gcm":
                return self._aes.decrypt(nonce, sealed, None)
            from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

            return crypto_aead_xchacha20poly1305_ietf_decrypt(sealed, None, nonce, self._key)
        except Exception as e:  # InvalidTag / CryptoError: wrong key or tampered data
            raise DecodeError(f"cannot decrypt: {type(e).__name__}") from None


@dataclass(frozen=True)
class StorageFormat:
    compressed: bool = True
    cipher: Cipher | None = None

    @property
    def extension(self) -> str:
        suffix = COMPRESSED_SUFFIX if self.compressed else ""
        return suffix + (self.cipher.extension if self.cipher else "")

    def max_stored_size(self, plain_size: int) -> int:
        """The most bytes a stored chunk of up to ``plain_size`` plain bytes can take:
        a store reading more is broken or hostile (it could send gigabytes)."""
        size = stored_bound(plain_size) if self.compressed else plain_size
        return size + (self.cipher.overhead if self.cipher else 0)

    def encode(self, chunk: Chunk) -> bytes | memoryview:
        """The bytes to store (the chunk's compressed form is reused, never redone)."""
        data = chunk.stored() if self.compressed else chunk.plain()
        return self.cipher.encrypt(data) if self.cipher else data

    def decode(self, id: ChunkID, data: bytes) -> Chunk:
        """A chunk from stored bytes (``DecodeError`` if they cannot be decrypted;
        decompression happens lazily, when the plain bytes are needed)."""
        if self.cipher:
            data = self.cipher.decrypt(data)
        return Chunk(id, stored=data) if self.compressed else Chunk(id, plain=data)


COMPRESSED = StorageFormat()  # the default: .cacnk files, no encryption


@runtime_checkable
class Formatted(Protocol):
    """A store that holds chunks in a ``StorageFormat`` it knows (local and object
    stores; a server's own format is not known here)."""

    format: StorageFormat
