"""SipHash-2-4 in C against the paper's test vectors, casync's goodbye hashes and a
pure-Python reference written here from the paper."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_decl.siphash import CATAR_KEY, hash_names, siphash24

M64 = (1 << 64) - 1

# The reference implementation's vectors_sip64 (veorq/SipHash): key 00..0f,
# message 00 01 .. (n-1) for n = 0..63, results as little-endian bytes.
_OFFICIAL_HEX = (
    "310e0edd47db6f72fd67dc93c539f8745a4fa9d909806c0d2d7efbd796666785b7877127e09427cf"
    "8da699cd64557618cee3fe586e46c9cb37d1018bf50002ab6224939a79f5f593b0e4a90bdf82009e"
    "f3b9dd94c5bb5d7aa7ad6b22462fb3f4fbe50e86bc8f1e75903d84c02756ea14eef27a8e90ca23f7"
    "e545be4961ca29a1db9bc2577fcc2a3f9447be2cf5e99a699cd38d96f0b3c14bbd6179a71dc96dbb"
    "98eea21af25cd6bec7673b2eb0cbf2d0883ea3e395675393c8ce5ccd8c030ca894af49f6c650adb8"
    "eab8858ade92e1bcf315bb5bb835d817adcf6b0763612e2fa5c91da7acaa4dde716595876650a2a6"
    "28ef495c53a387ad42c341d8fa92d832ce7cf2722f512771e37859f94623f3a7381205bb1ab0e012"
    "ae97a10fd434e015b4a31508beff4d3181396229f09079024d0cf49ee5d4dcca5c73336a76d8bf9a"
    "d0a704536ba93e0e925958fcd6420cada915c29bc8067318952b79f3bc0aa6d4f21df2e41d4535f9"
    "87577519048f53a910a56cf5dfcd9adbeb75095ccd986cd051a9cb9ecba312e696afadfc2ce666c7"
    "72fe52975a4364ee5a1645b276d592a1b274cb8ebf87870a6f9bb4203de7b381eaecb2a30b22a87f"
    "9924a43cc1315724bd838d3aafbf8db70b1a2a3265d51aea135079a3231ce660932b2846e4d70666"
    "e1915f5cb1eca46cf325965ca16d629f575ff28e60381be5724506eb4c328a95"
)
OFFICIAL = [_OFFICIAL_HEX[i : i + 16] for i in range(0, len(_OFFICIAL_HEX), 16)]
KEY = bytes(range(16))

# Name hashes read from GOODBYE tables of casync-made archives (spec section 9.3).
CASYNC_NAMES = {
    b"d1": 0x84B397273EECC769,
    b"d2": 0x1BD2DE1E1BB52611,
    b"d3": 0x6AA9F3B8B27BDEC5,
    b"d4": 0x22A93F10CB9A5AD3,
    b"d5": 0x2A1B0CAC8CDB8A6B,
    b"device": 0x309704F71425CA96,
    b"file1.txt": 0xB2FE30E69D94CF21,
}


def reference_siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 as the paper defines it, one 64-bit word at a time."""
    k0, k1 = struct.unpack("<2Q", key)
    v = [k0 ^ 0x736F6D6570736575, k1 ^ 0x646F72616E646F6D]
    v += [k0 ^ 0x6C7967656E657261, k1 ^ 0x7465646279746573]

    def rotl(x: int, b: int) -> int:
        return ((x << b) | (x >> (64 - b))) & M64

    def rounds(n: int) -> None:
        for _ in range(n):
            v[0] = (v[0] + v[1]) & M64
            v[1] = rotl(v[1], 13) ^ v[0]
            v[0] = rotl(v[0], 32)
            v[2] = (v[2] + v[3]) & M64
            v[3] = rotl(v[3], 16) ^ v[2]
            v[0] = (v[0] + v[3]) & M64
            v[3] = rotl(v[3], 21) ^ v[0]
            v[2] = (v[2] + v[1]) & M64
            v[1] = rotl(v[1], 17) ^ v[2]
            v[2] = rotl(v[2], 32)

    padded = data + bytes(-(len(data) + 1) % 8) + bytes([len(data) & 0xFF])
    for (m,) in struct.iter_unpack("<Q", padded):
        v[3] ^= m
        rounds(2)
        v[0] ^= m
    v[2] ^= 0xFF
    rounds(4)
    return v[0] ^ v[1] ^ v[2] ^ v[3]


@pytest.mark.parametrize("n", range(64))
def test_c_siphash_matches_the_official_vectors(n):
    expected = int.from_bytes(bytes.fromhex(OFFICIAL[n]), "little")
    assert siphash24(bytes(range(n)), KEY) == expected
    assert reference_siphash24(KEY, bytes(range(n))) == expected


def test_goodbye_hashes_match_casync_archives():
    assert hash_names(list(CASYNC_NAMES)) == list(CASYNC_NAMES.values())
    for name, value in CASYNC_NAMES.items():
        assert siphash24(name) == value == reference_siphash24(CATAR_KEY, name)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(min_size=16, max_size=16))
def test_c_and_python_agree_on_any_input_and_key(data, key):
    assert siphash24(data, key) == reference_siphash24(key, data)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=40), max_size=30))
def test_hash_names_equals_one_call_per_name(names):
    assert hash_names(names) == [siphash24(n) for n in names]


def test_a_key_must_be_16_bytes():
    with pytest.raises(ValueError):
        siphash24(b"x", b"short")
    with pytest.raises(ValueError):
        hash_names([b"x"], b"short")
