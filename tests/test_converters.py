"""Chunk storage formats: desync's encryption layout, extensions and failure modes."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from nacl.bindings import crypto_aead_xchacha20poly1305_ietf_decrypt

from desync_decl.errors import DesyncError
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import DecodeError, decompress
from desync_decl.formats.digest import Digest
from desync_decl.stores.converters import Cipher, StorageFormat

KEY = bytes(range(32))
DATA = b"chunk data " * 500


def chunk() -> Chunk:
    return Chunk(Digest.SHA512_256.hash(DATA), plain=DATA)


def test_extensions_name_every_layer_with_the_key_id():
    key_id = hashlib.sha256(KEY).digest()[:4].hex()
    aes = Cipher("aes-256-gcm", KEY.hex())
    assert StorageFormat().extension == ".cacnk"
    assert StorageFormat(compressed=False).extension == ""
    assert StorageFormat(cipher=aes).extension == f".cacnk.aes-256-gcm-{key_id}"
    x = Cipher("xchacha20-poly1305", KEY.hex())
    assert StorageFormat(compressed=False, cipher=x).extension == f".xchacha20-poly1305-{key_id}"


def test_aes_gcm_bytes_are_nonce_then_ciphertext_and_tag_of_the_compressed_chunk():
    stored = bytes(StorageFormat(cipher=Cipher("aes-256-gcm", KEY.hex())).encode(chunk()))
    compressed = AESGCM(KEY).decrypt(stored[:12], stored[12:], None)  # desync's layout
    assert decompress(compressed, len(DATA)) == DATA


def test_xchacha20_bytes_are_a_24_byte_nonce_then_ciphertext_and_tag():
    form = StorageFormat(compressed=False, cipher=Cipher("xchacha20-poly1305", KEY.hex()))
    stored = bytes(form.encode(chunk()))
    assert crypto_aead_xchacha20poly1305_ietf_decrypt(stored[24:], None, stored[:24], KEY) == DATA
    assert len(stored) == 24 + len(DATA) + 16


def test_each_write_uses_a_fresh_nonce():
    form = StorageFormat(cipher=Cipher("xchacha20-poly1305", KEY.hex()))
    assert form.encode(chunk()) != form.encode(chunk())


def test_tampered_or_foreign_data_does_not_decode():
    form = StorageFormat(cipher=Cipher("aes-256-gcm", KEY.hex()))
    stored = bytearray(form.encode(chunk()))
    stored[20] ^= 1
    with pytest.raises(DecodeError):
        form.decode(chunk().id, bytes(stored))
    with pytest.raises(DecodeError, match="too short"):
        form.decode(chunk().id, b"short")


@pytest.mark.parametrize(
    ("algorithm", "key", "message"),
    [
        ("rot13", KEY.hex(), "unknown encryption algorithm"),
        ("aes-256-gcm", "abcd", "64 hex characters"),
        ("aes-256-gcm", "zz" * 32, "64 hex characters"),
    ],
)
def test_bad_algorithms_and_keys_are_clear_errors(algorithm, key, message):
    with pytest.raises(DesyncError, match=message):
        Cipher(algorithm, key)
