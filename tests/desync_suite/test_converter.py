"""Ports of desync's ``converter_test.go``: a chunk converted between storage formats
that share the compression layer is never decompressed and compressed again, only
the encryption layer is added, removed or swapped. As in desync's test, the
"compressed" bytes are not zstd at all, so any attempt to undo that layer fails.

One difference: desync hands back the stored bytes as they are when the formats are
the same, also encrypted ones; ours decrypts and encrypts again with a fresh nonce
(README, compatibility), so the same format gives other bytes that decrypt to the
same compressed data.
"""

from __future__ import annotations

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.converters import COMPRESSED, Cipher, StorageFormat
from tests.desync_suite.desync_keys import OTHER_KEY, TEST_KEY

NOT_ZSTD = b"not valid zstd data"
ID = ChunkID(bytes(32))


def test_only_the_encryption_layer_is_converted():
    """TestChunkStorageSharedLayers."""
    cipher = Cipher("xchacha20-poly1305", TEST_KEY)
    encrypted_format = StorageFormat(cipher=cipher)
    # from a compressed store to a compressed+encrypted wire (chunk-server --encryption)
    from_store = COMPRESSED.decode(ID, NOT_ZSTD)
    encrypted = bytes(encrypted_format.encode(from_store))
    assert cipher.decrypt(encrypted) == NOT_ZSTD
    # the reverse: a compressed+encrypted upload into a compressed store
    uploaded = encrypted_format.decode(ID, encrypted)
    assert COMPRESSED.encode(uploaded) == NOT_ZSTD
    # the same format: the same compressed data, sealed again
    again = bytes(encrypted_format.encode(uploaded))
    assert again != encrypted and cipher.decrypt(again) == NOT_ZSTD
    # key rotation: the encryption layer swapped
    other = Cipher("xchacha20-poly1305", OTHER_KEY)
    rotated = bytes(StorageFormat(cipher=other).encode(uploaded))
    assert other.decrypt(rotated) == NOT_ZSTD


def test_converting_to_the_plain_form_keeps_the_plain_bytes_on_the_chunk():
    """TestChunkStoragePlainCached: what was decompressed once is not decompressed
    again by the next reader of the same chunk."""
    chunk = Chunk(ID, plain=b"some data")
    stored = chunk.stored()
    from_store = COMPRESSED.decode(ID, stored)
    plain = StorageFormat(compressed=False).encode(from_store)
    assert plain == b"some data"
    assert from_store.plain() is plain
