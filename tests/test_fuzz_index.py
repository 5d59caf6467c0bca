"""Hostile index files: mutations of casync's indexes and ours decode or fail with
``FormatError`` naming a byte offset; what decodes encodes back to the same bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.errors import FormatError
from desync_decl.formats import index as index_format
from reliability.fuzz import mutate, seeds, targets

SEEDS = seeds.index_seeds()


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)
@given(st.sampled_from(SEEDS), mutate.strategy(4))
def test_mutated_indexes_decode_or_fail_with_format_error(seed, mutation):
    targets.index(mutate.apply(seed, mutation))


@pytest.mark.parametrize("field", range(0, 48, 8))
@pytest.mark.parametrize("value", [0, 1, 1 << 32, 1 << 63, (1 << 64) - 1])
def test_every_header_field_at_an_edge_value_is_refused_or_kept(field, value):
    data = bytearray(SEEDS[0])
    data[field : field + 8] = value.to_bytes(8, "little")
    try:
        decoded = index_format.decode(bytes(data), "x.caibx")
    except FormatError as e:
        assert str(e).startswith("x.caibx: invalid index at byte ")
    else:
        assert decoded.encode() == bytes(data)


def test_the_seeds_hold_casyncs_indexes():
    assert len(SEEDS) > 30, "tests/vectors is incomplete"
