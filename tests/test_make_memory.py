"""make holds little per chunk: the ids it remembers are bounded, the table is compact.

Memory itself is measured by the benchmarks (bench/bench_blob.py reports peak RSS);
these tests pin the behaviour the bound relies on.
"""

from __future__ import annotations

import random

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, IndexTable, decode
from desync_decl.ops import make as make_module
from desync_decl.ops.make import ChunkStorer, make
from desync_decl.stores.local import LocalStore


def chunk(seed: int) -> Chunk:
    data = random.Random(seed).randbytes(1000)
    return Chunk(Digest.SHA512_256.hash(data), plain=data)


def test_a_repeat_beyond_what_the_storer_remembers_is_asked_again_but_stored_once(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(make_module, "SEEN_LIMIT", 3)
    asked: list[tuple[str, bytes]] = []  # spies on the real store's calls
    real_has, real_store = LocalStore.has_chunk, LocalStore.store_chunk
    monkeypatch.setattr(
        LocalStore, "has_chunk", lambda self, cid: asked.append(("has", cid)) or real_has(self, cid)
    )
    monkeypatch.setattr(
        LocalStore,
        "store_chunk",
        lambda self, c: asked.append(("store", c.id)) or real_store(self, c),
    )
    store = LocalStore(tmp_path / "store", create=True)
    first, others = chunk(0), [chunk(i) for i in range(1, 5)]
    with ChunkStorer(store, "make") as storer:
        storer.add(first)
        storer.add(first)  # remembered: not even asked
        for other in others:
            storer.add(other)
        storer.add(first)  # forgotten (4 others since): asked, found, not stored again
    assert asked.count(("has", first.id)) == 2
    assert asked.count(("store", first.id)) == 1
    assert storer.stored == 5


def test_the_growing_table_gives_the_index_from_pairs(tmp_path):
    pairs = [(1000 + i, chunk(i).id) for i in range(50)]
    table = IndexTable()
    for size, cid in pairs[:20]:
        table.add(size, cid)
    table.extend(pairs[20:])
    built = table.index(0, DEFAULT_CHUNK_SIZES)
    assert built.encode() == Index.from_chunks(0, DEFAULT_CHUNK_SIZES, pairs).encode()
    assert [(c.size, c.id) for c in decode(built.encode())] == pairs


def test_make_of_a_file_repeating_one_block_stores_each_chunk_once(tmp_path):
    block = random.Random(9).randbytes(300_000)
    source = tmp_path / "rep.bin"
    source.write_bytes(block * 40)
    result = make(source, store=LocalStore(tmp_path / "store", create=True))
    assert result.chunks_stored == len(result.index.unique_ids())
    assert result.chunks_total > result.chunks_stored


def test_a_run_of_one_id_is_the_same_table_as_its_chunks_one_by_one():
    zero, other = chunk(1).id, chunk(2).id
    by_run, one_by_one = IndexTable(), IndexTable()
    by_run.add(500, other)
    by_run.add_run(1000, zero, 10_000)  # more than one step of the run
    by_run.add(700, other)
    one_by_one.extend([(500, other), *[(1000, zero)] * 10_000, (700, other)])
    assert by_run.ends == one_by_one.ends
    assert (
        by_run.index(0, DEFAULT_CHUNK_SIZES).encode()
        == one_by_one.index(0, DEFAULT_CHUNK_SIZES).encode()
    )
