"""find_repeats (C, ext/repeats.c) against the obvious dict, on ids as indexes hold them."""

from __future__ import annotations

import random

import pytest

from desync_decl.repeats import find_repeats

ID = 32


def expected(ids: list[bytes]) -> tuple[list[int], list[int]]:
    first_at: dict[bytes, int] = {}
    first = [first_at.setdefault(cid, j) for j, cid in enumerate(ids)]
    counts: dict[bytes, int] = {}
    for cid in ids:
        counts[cid] = counts.get(cid, 0) + 1
    return first, [int(counts[cid] > 1) for cid in ids]


@pytest.mark.parametrize("seed", range(5))
def test_first_positions_and_repeats_match_a_dict(seed):
    rng = random.Random(seed)
    pool = [rng.randbytes(ID) for _ in range(rng.randrange(1, 300))]
    ids = [rng.choice(pool) for _ in range(rng.randrange(1, 2000))]
    found = find_repeats(b"".join(ids), ID)
    first, repeated = expected(ids)
    assert list(found.first) == first
    assert list(found.repeated) == repeated


def test_ids_that_differ_only_at_the_end_are_told_apart():
    """Ids sharing 31 bytes (as a crafted index may hold) are distinct chunks."""
    ids = [bytes(31) + bytes([k]) for k in range(256)] * 2
    found = find_repeats(b"".join(ids), ID)
    assert list(found.first) == list(range(256)) * 2
    assert set(found.repeated) == {1}


def test_no_ids_and_one_id():
    assert len(find_repeats(b"", ID).first) == 0
    one = find_repeats(bytes(ID), ID)
    assert list(one.first) == [0] and one.repeated == b"\x00"


def test_many_distinct_ids_keep_every_answer():
    """Thousands of distinct ids, most of them once, some repeated."""
    rng = random.Random(9)
    pool = [rng.randbytes(ID) for _ in range(5000)]
    ids = pool + [rng.choice(pool) for _ in range(3000)]
    found = find_repeats(b"".join(ids), ID)
    first, repeated = expected(ids)
    assert list(found.first) == first
    assert list(found.repeated) == repeated
