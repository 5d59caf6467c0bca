"""The assembly planner on synthetic indexes: which source each target range gets."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from desync_decl.assemble.plan import Source, null_chunk_id, plan_assembly
from desync_decl.assemble.seeds import Seed
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags

SIZES = ChunkSizes(16, 64, 256)
NULL = null_chunk_id(Index(blob_flags(Digest.SHA512_256), SIZES))


def cid(name: str) -> bytes:
    return Digest.SHA512_256.hash(name.encode())


def index_of(*names: str, size: int = 100) -> Index:
    """An index of chunks named by letters ("0" is the null chunk, SIZES.max bytes)."""
    chunks = [(SIZES.max, NULL) if n == "0" else (size, cid(n)) for n in names]
    return Index.from_chunks(blob_flags(Digest.SHA512_256), SIZES, chunks)


def seed_of(*names: str, label: str = "seed") -> Seed:
    return Seed(Path(label), index_of(*names), label)


def sources(plan) -> list[tuple[str, int]]:
    return [(s.source.value, s.count) for s in plan.segments]


def test_without_seeds_distinct_chunks_come_from_the_store_in_one_segment():
    plan = plan_assembly(index_of("a", "b", "c"))
    assert sources(plan) == [("store", 3)]
    assert plan.by_source()[Source.STORE].bytes == 300


def test_a_repeated_chunk_is_fetched_once_and_copied_from_its_first_offset():
    plan = plan_assembly(index_of("a", "b", "a"))
    assert sources(plan) == [("store", 2), ("self", 1)]
    assert plan.segments[1].source_offset == 0
    assert plan.by_source()[Source.STORE].chunks == 2


def test_runs_of_null_chunks_come_from_the_null_seed():
    plan = plan_assembly(index_of("a", "0", "0", "0", "b"))
    assert sources(plan) == [("store", 1), ("null", 3), ("store", 1)]
    assert plan.by_source()[Source.NULL].bytes == 3 * SIZES.max


def test_the_longest_seed_run_wins_and_points_into_that_seed():
    short = seed_of("a", "b", "x", label="short")
    long = seed_of("y", "a", "b", "c", "d", label="long")
    plan = plan_assembly(index_of("a", "b", "c", "d", "e"), [short, long])
    assert sources(plan) == [("seed", 4), ("store", 1)]
    first = plan.segments[0]
    assert first.seed == 1 and first.source_offset == 100


def test_equal_runs_go_to_the_earlier_seed_and_null_beats_a_seed_of_zeros():
    one, two = seed_of("a", "b", label="one"), seed_of("a", "b", label="two")
    assert plan_assembly(index_of("a", "b"), [one, two]).segments[0].seed == 0
    zeros = seed_of("0", "0", label="zeros")
    assert sources(plan_assembly(index_of("0", "0"), [zeros])) == [("null", 2)]


def test_a_seed_run_stops_where_the_seed_order_differs():
    plan = plan_assembly(index_of("a", "b", "c", "d"), [seed_of("a", "b", "d", "c")])
    assert sources(plan) == [("seed", 2), ("seed", 1), ("seed", 1)]
    assert [s.source_offset for s in plan.segments] == [0, 300, 200]


def test_a_seed_chunk_of_another_size_does_not_match():
    odd = Seed(Path("odd"), index_of("a", size=99), "odd")
    assert sources(plan_assembly(index_of("a"), [odd])) == [("store", 1)]


def test_chunks_in_place_are_kept_and_end_seed_runs():
    target = index_of("a", "b", "c", "d")
    plan = plan_assembly(target, [seed_of("a", "b", "c", "d")], in_place=[False, True, True, False])
    assert sources(plan) == [("seed", 1), ("in-place", 2), ("seed", 1)]
    assert plan.by_source()[Source.IN_PLACE].bytes == 200


def test_a_chunk_first_held_in_place_is_the_self_source_of_its_repeats():
    plan = plan_assembly(index_of("a", "b", "a"), in_place=[True, False, False])
    assert sources(plan) == [("in-place", 1), ("store", 1), ("self", 1)]
    assert plan.segments[2].source_offset == 0


def test_repetitive_seeds_still_find_the_run():
    names = ["r"] * 2000 + ["s"]
    plan = plan_assembly(index_of(*names), [seed_of(*names)])
    assert sources(plan) == [("seed", 2001)]


def test_per_seed_totals_and_json_agree_with_the_segments():
    plan = plan_assembly(
        index_of("a", "b", "0", "c", "a"), [seed_of("b", label="s1"), seed_of("c", label="s2")]
    )
    data = plan.to_json()
    assert data["bytes-total"] == 4 * 100 + SIZES.max
    assert [s["bytes"] for s in data["seeds"]] == [100, 100]
    assert data["sources"]["seed"] == {"chunks": 2, "bytes": 200}
    assert sum(s["length"] for s in data["segments"]) == data["bytes-total"]


names = st.sampled_from("abcde0")


@settings(max_examples=200, deadline=None)
@given(
    target=st.lists(names, max_size=40),
    seeds=st.lists(st.lists(names, max_size=30), max_size=3),
    in_place=st.lists(st.booleans(), min_size=40, max_size=40),
)
def test_every_plan_tiles_the_target_with_sources_that_hold_the_right_chunks(
    target, seeds, in_place
):
    index = index_of(*target)
    seed_objs = [seed_of(*s, label=f"s{k}") for k, s in enumerate(seeds)]
    plan = plan_assembly(index, seed_objs, in_place=in_place[: len(target)])
    ids = [index.id(i) for i in range(len(index))]
    offset = position = 0
    first_offset: dict[bytes, int] = {}
    for seg in plan.segments:
        assert (seg.first, seg.offset) == (position, offset)
        chunk_ids = ids[seg.first : seg.first + seg.count]
        if seg.source is Source.SEED:
            seed = seed_objs[seg.seed].index
            k = list(seed.ends).index(seg.source_offset) + 1 if seg.source_offset else 0
            assert [seed.id(k + j) for j in range(seg.count)] == chunk_ids
        elif seg.source is Source.NULL:
            assert set(chunk_ids) == {NULL}
        elif seg.source is Source.IN_PLACE:
            assert all(in_place[seg.first : seg.first + seg.count])
        elif seg.source is Source.SELF:
            assert first_offset[chunk_ids[0]] == seg.source_offset < seg.offset
        else:  # store: each distinct chunk fetched once
            assert not set(chunk_ids) & set(first_offset)
            assert len(set(chunk_ids)) == len(chunk_ids)
        if seg.source in (Source.STORE, Source.IN_PLACE):
            for j, c in enumerate(chunk_ids):
                first_offset.setdefault(c, index.chunk(seg.first + j).start)
        position, offset = position + seg.count, offset + seg.length
    assert (position, offset) == (len(index), index.length)
