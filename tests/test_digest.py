"""Chunk ids: each is the digest of its own bytes, whatever was hashed before or beside it."""

from __future__ import annotations

import hashlib
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from desync_decl.formats.digest import Digest


@pytest.mark.parametrize("digest", list(Digest))
def test_an_id_is_the_digest_of_its_bytes_alone(digest):
    pieces = [b"", b"abc", random.Random(1).randbytes(100_000), b"abc"]
    expected = [hashlib.new(digest.hashlib_name, p).digest() for p in pieces]
    assert [digest.hash(p) for p in pieces] == expected
    assert (
        digest.hash(memoryview(pieces[2])[10:20])
        == hashlib.new(digest.hashlib_name, pieces[2][10:20]).digest()
    )


@pytest.mark.parametrize("digest", list(Digest))
def test_threads_hashing_at_once_get_their_own_ids(digest):
    pieces = [random.Random(k).randbytes(70_000) for k in range(64)]
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(digest.hash, pieces))
    assert ids == [hashlib.new(digest.hashlib_name, p).digest() for p in pieces]
