"""Sparse files: ``make`` and ``chop`` skip holes, and the index is still casync's.

A hole reads as zeros, and inside zeros the rolling hash is a constant, so the
chunker derives its cuts there instead of scanning (``Chunker.skip_zeros``), and
the chunks wholly inside a hole get the zero chunk's id, computed once per size.
Every test here compares with what the real ``casync make`` writes for the same
bytes: real sparse files (holes made by the filesystem, 4 KiB granular), and, for
holes at any byte offset (shorter than the window, than the minimum, at a cut),
zero ranges of a dense file declared as holes to the chunker.
"""

from __future__ import annotations

import itertools
import random
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from desync_decl._chunker_cffi import ffi, lib
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.chunker import Chunker, ZeroRun, discriminator, iter_chunks, iter_pieces
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import decode
from desync_decl.fsutil import find_holes, within_holes
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore

KiB, MiB = 1 << 10, 1 << 20
DEFAULT = (16 * KiB, 64 * KiB, 256 * KiB)
SMALL = (1 * KiB, 4 * KiB, 16 * KiB)  # desync's -m 1K:4K:16K
ZERO_CUTS = (3943, 3943, 16000)  # discriminator 3943 divides hash(48 zeros) + 1: zeros cut
FIXED = (64 * KiB, 64 * KiB, 64 * KiB)  # min = avg = max: a cut every max bytes


def zero_window_cuts(sizes: tuple[int, int, int]) -> bool:
    """Whether a window of zeros is a cut point for these sizes (casync's rule)."""
    h = lib.ca_chunker_window_hash(ffi.from_buffer("uint8_t[]", bytes(48)))
    d = discriminator(ChunkSizes(*sizes))
    return h % d == d - 1


def test_the_zero_cut_sizes_really_cut_in_zeros():
    """Both branches of the zero rule are exercised below."""
    assert zero_window_cuts(ZERO_CUTS)
    assert not any(zero_window_cuts(s) for s in (DEFAULT, SMALL))


# ---------------------------------------------------------------- helpers


def run_casync(casync: str, *argv: object) -> None:
    done = subprocess.run([casync, *map(str, argv)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr


def casync_make(casync: str, source: Path, sizes: tuple[int, int, int], tmp: Path) -> Path:
    """casync's index of ``source`` (and its store beside it, ``<index>.store``)."""
    index = tmp / f"{source.name}.casync.caibx"
    cs = ":".join(map(str, sizes))
    run_casync(casync, "make", f"--chunk-size={cs}", f"--store={index}.store", index, source)
    return index


def m_flag(sizes: tuple[int, int, int]) -> str:
    """desync's ``-m`` for exact byte sizes."""
    return ":".join(f"{v}B" for v in sizes)


@dataclass(frozen=True)
class Layout:
    """A sparse file: its size and its data extents (4 KiB aligned), the rest holes."""

    name: str
    size: int
    extents: tuple[tuple[int, int], ...]  # (offset, length)

    def write(self, path: Path, seed: int = 0) -> bytes:
        """Write it sparse at ``path``; its content, as a reader sees it."""
        rng = random.Random(seed)
        content = bytearray(self.size)
        with path.open("wb") as f:
            for offset, length in self.extents:
                assert offset + length <= self.size
                data = rng.randbytes(length)
                content[offset : offset + length] = data
                f.seek(offset)
                f.write(data)
            f.truncate(self.size)
        return bytes(content)

    def holes(self) -> list[tuple[int, int]]:
        """Where the holes are: everything between the extents."""
        found, pos = [], 0
        for offset, length in sorted(self.extents):
            if offset > pos:
                found.append((pos, offset))
            pos = offset + length
        if pos < self.size:
            found.append((pos, self.size))
        return found


LAYOUTS = [
    Layout("all_hole", 3 * 256 * KiB + 12345, ()),
    Layout("hole_at_start", 1 * MiB + 600 * KiB, ((1 * MiB, 600 * KiB),)),
    Layout("hole_at_end", 2 * MiB + 777, ((0, 600 * KiB),)),
    Layout("hole_shorter_than_min", 600 * KiB, ((0, 300 * KiB), (304 * KiB, 296 * KiB))),
    Layout("hole_ending_at_a_max_cut", 1 * MiB, ((512 * KiB, 512 * KiB),)),
    Layout(
        "many_small_holes",
        1 * MiB,
        tuple((o, 8 * KiB) for o in range(0, 1 * MiB - 8 * KiB, 20 * KiB)),
    ),
    Layout("one_block_of_data", 8 * MiB, ((4 * MiB + 4 * KiB, 4 * KiB),)),
    Layout(
        "big_hole_between_data",
        64 * MiB + 200 * KiB,
        ((0, 100 * KiB), (64 * MiB + 100 * KiB, 100 * KiB)),
    ),
]


@pytest.fixture
def hashed(monkeypatch) -> list[int]:
    """The sizes of everything hashed with a chunk digest from now on (all threads):
    a spy that counts and calls the real hash, so what is measured is what ran."""
    sizes: list[int] = []
    lock = threading.Lock()
    real = Digest.hash

    def counting(self: Digest, data: bytes | bytearray | memoryview) -> bytes:
        with lock:
            sizes.append(len(data))
        return real(self, data)

    monkeypatch.setattr(Digest, "hash", counting)
    return sizes


def store_names(store: Path) -> set[str]:
    return {p.name for p in store.rglob("*.cacnk")}


# ----------------------------------------------- real sparse files vs casync


SIZES = {"default": DEFAULT, "1K:4K:16K": SMALL, "zero_cuts": ZERO_CUTS, "fixed": FIXED}
MAKE_CASES = [
    pytest.param(layout, sizes, id=f"{layout.name}-{name}")
    for layout in LAYOUTS
    for name, sizes in SIZES.items()
    if layout.size <= 16 * MiB or sizes == DEFAULT  # a 64 MiB hole in small chunks: a long index
]


@pytest.mark.parametrize(("layout", "sizes"), MAKE_CASES)
def test_make_of_a_sparse_file_writes_casyncs_index(casync, cli, tmp_path, hashed, layout, sizes):
    sparse = tmp_path / "sparse.img"
    content = layout.write(sparse)
    assert find_holes_of(sparse) == layout.holes()  # the filesystem made the holes

    theirs = casync_make(casync, sparse, sizes, tmp_path)
    hashed.clear()
    store = LocalStore(tmp_path / "store", create=True)
    result = make(sparse, sizes=ChunkSizes(*sizes), store=store)
    hashed_by_make = sum(hashed)
    assert result.index.encode() == theirs.read_bytes()
    assert store_names(tmp_path / "store") == store_names(Path(f"{theirs}.store"))

    # The holes were not hashed byte by byte: what was hashed is the data, the
    # chunks that straddle a hole's edge (at most two max-size chunks per hole,
    # plus those cut in a hole's first window or first tested length), and one
    # zero chunk per size.
    data_bytes = sum(length for _, length in layout.extents)
    first_test = max(sizes[0], 48)
    edges = len(layout.holes()) * (2 * sizes[2] + 2 * first_test + 48)
    zero = {c.size for c in result.index if c.id == Digest.SHA512_256.hash(bytes(c.size))}
    assert hashed_by_make <= data_bytes + edges + sum(zero)

    # The command line with desync's -m makes the same index of the sparse file, and
    # of the same bytes written out (no holes).
    dense = tmp_path / "dense.img"
    dense.write_bytes(content)
    assert find_holes_of(dense) == []
    for name, source in (("sparse", sparse), ("dense", dense)):
        index = tmp_path / f"{name}.caibx"
        r = cli("make", "-m", m_flag(sizes), "-s", tmp_path / "store2", index, source)
        assert r.code == 0, r.err
        assert index.read_bytes() == theirs.read_bytes()

    r = cli("extract", "-s", tmp_path / "store", tmp_path / "dense.caibx", tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == content


def find_holes_of(path: Path) -> list[tuple[int, int]]:
    with path.open("rb") as f:
        return find_holes(f.fileno(), 0, path.stat().st_size)


def test_a_big_hole_is_one_zero_run_and_one_hash(tmp_path, hashed, monkeypatch):
    """A 1 GiB hole: a handful of pieces; the zero chunk hashed, looked up in the store
    and stored once, though the index names it thousands of times."""
    layout = Layout("gib", 1 << 30, ((0, 64 * KiB), ((1 << 30) - 64 * KiB, 64 * KiB)))
    path = tmp_path / "gib.img"
    layout.write(path)
    zero_id = Digest.SHA512_256.hash(bytes(256 * KiB))
    asked: list[bytes] = []  # ids the store was asked about or given (spies on the real calls)
    real_has, real_store = LocalStore.has_chunk, LocalStore.store_chunk
    monkeypatch.setattr(
        LocalStore, "has_chunk", lambda self, cid: asked.append(cid) or real_has(self, cid)
    )
    monkeypatch.setattr(
        LocalStore,
        "store_chunk",
        lambda self, chunk: asked.append(chunk.id) or real_store(self, chunk),
    )
    hashed.clear()
    result = make(path, store=LocalStore(tmp_path / "store", create=True))
    hashed_by_make = sum(hashed)
    assert result.index.length == 1 << 30
    assert hashed_by_make < 2 * MiB  # the data, two edge chunks, one zero chunk
    assert sum(1 for c in result.index if c.id == zero_id) > 4000
    assert asked.count(zero_id) == 2  # one has_chunk, one store_chunk
    with path.open("rb") as f:
        pieces = list(iter_pieces(f))
    assert len(pieces) < 10
    assert max(p.count for p in pieces if isinstance(p, ZeroRun)) > 4000


def test_make_with_blob_digest_hashes_the_holes_as_zeros(casync, tmp_path):
    """The whole-file digest (what ``casync make`` prints) covers the holes' zeros."""
    layout = LAYOUTS[2]  # hole at end
    sparse = tmp_path / "sparse.img"
    layout.write(sparse)
    result = make(sparse, blob_digest=True)
    done = subprocess.run(
        [casync, "make", "--store", tmp_path / "cs", tmp_path / "c.caibx", sparse],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.blob_digest is not None and result.blob_digest.hex() == done.stdout.strip()


# ------------------------------------------- chop of a sparse file vs casync


@pytest.mark.parametrize("sizes", [DEFAULT, ZERO_CUTS], ids=["default", "zero_cuts"])
@pytest.mark.parametrize("layout", [LAYOUTS[0], LAYOUTS[2], LAYOUTS[5]], ids=lambda lay: lay.name)
def test_chop_of_a_sparse_file_stores_casyncs_chunks_without_reading_holes(
    casync, cli, tmp_path, hashed, layout, sizes
):
    sparse = tmp_path / "sparse.img"
    layout.write(sparse)
    theirs = casync_make(casync, sparse, sizes, tmp_path)
    (tmp_path / "chopped").mkdir()
    hashed.clear()
    r = cli("chop", "-s", tmp_path / "chopped", theirs, sparse)
    hashed_by_chop = sum(hashed)
    assert r.code == 0, r.err
    assert store_names(tmp_path / "chopped") == store_names(Path(f"{theirs}.store"))
    index = decode(theirs.read_bytes())
    holes = layout.holes()
    in_data = [c for c in index if not within_holes(holes, c.start, c.end)]
    zero_sizes = {c.size for c in index if within_holes(holes, c.start, c.end)}
    # Hashed: each distinct chunk outside the holes once, the zero chunk once per size.
    distinct = {c.id: c.size for c in in_data}
    assert hashed_by_chop <= sum(distinct.values()) + sum(zero_sizes)


def test_chop_refuses_a_hole_where_the_index_has_data(cli, tmp_path):
    dense_layout = Layout("dense", 1 * MiB, ((0, 1 * MiB),))
    dense = tmp_path / "dense.img"
    dense_layout.write(dense)
    r = cli("make", "-s", tmp_path / "store", tmp_path / "dense.caibx", dense)
    assert r.code == 0, r.err
    holed = Layout("holed", 1 * MiB, ((0, 256 * KiB), (768 * KiB, 256 * KiB)))
    sparse = tmp_path / "sparse.img"
    holed.write(sparse)  # same seed: the same data where there is data, a hole between
    (tmp_path / "c").mkdir()
    r = cli("chop", "-s", tmp_path / "c", tmp_path / "dense.caibx", sparse)
    assert r.code == 1
    assert "do not match chunk" in r.err


# ------------------------------- holes at any offset: zeros declared as holes


def pieces_as_chunks(
    path: Path, sizes: ChunkSizes, holes: Sequence[tuple[int, int]]
) -> list[tuple[int, int, bytes]]:
    """(start, size, id) of every chunk ``iter_pieces`` finds, zero runs expanded.

    Also checks that of the holes only their edges were handed out to be read:
    the chunks cut while scanning a hole's first window and first tested length,
    at most two of ``max(min, 48)`` bytes or less per hole."""
    digest = Digest.SHA512_256
    chunks, read_in_holes = [], 0
    with path.open("rb") as f:
        for piece in iter_pieces(f, sizes, holes=holes, block_size=64 * KiB):
            if isinstance(piece, ZeroRun):
                cid = digest.hash(bytes(piece.size))
                chunks += [
                    (piece.offset + i * piece.size, piece.size, cid) for i in range(piece.count)
                ]
            else:
                start, data = piece
                if within_holes(holes, start, start + len(data)):
                    read_in_holes += len(data)
                chunks.append((start, len(data), digest.hash(data)))
    assert read_in_holes <= len(holes) * 2 * max(sizes.min, 48)
    return chunks


def casync_chunks(index: Path) -> list[tuple[int, int, bytes]]:
    return [(c.start, c.size, bytes(c.id)) for c in decode(index.read_bytes())]


def dense_cuts(data: bytes, sizes: ChunkSizes, tmp: Path) -> list[int]:
    path = tmp / "cuts.img"
    path.write_bytes(data)
    with path.open("rb") as f:
        return [o + len(d) for o, d in iter_chunks(f, sizes)]


@pytest.mark.parametrize(
    "sizes", [DEFAULT, SMALL, ZERO_CUTS], ids=["default", "1K:4K:16K", "zero_cuts"]
)
def test_holes_at_across_and_between_cuts(casync, tmp_path, sizes):
    """Zero ranges starting at a cut (and holding several max-size chunks), spanning
    one, between two, shorter than the window and than the minimum, declared as
    holes: casync's chunks. (Layouts above end holes at a max cut.)"""
    rng = random.Random(9)
    cs = ChunkSizes(*sizes)
    data = bytearray(rng.randbytes(40 * sizes[2]))
    cuts = dense_cuts(bytes(data), cs, tmp_path)
    holes = [
        (cuts[2], cuts[2] + 3 * sizes[2] + 17),  # starts at a cut, holds max-size chunks
        (cuts[20] - 100, cuts[20] + 100),  # across a cut
        (cuts[25] + 10, cuts[26] - 10),  # between two cuts
        (cuts[30] + 5, cuts[30] + 5 + 30),  # shorter than the window
        (cuts[35] + 7, cuts[35] + 7 + max(sizes[0] // 2, 60)),  # shorter than the minimum
    ]
    assert all(a[1] < b[0] for a, b in itertools.pairwise(holes))
    for first, stop in holes:
        data[first:stop] = bytes(stop - first)
    source = tmp_path / "zeros.img"
    source.write_bytes(bytes(data))
    theirs = casync_chunks(casync_make(casync, source, sizes, tmp_path))
    assert (pieces_as_chunks(source, cs, holes)) == theirs
    starts = {s for s, _, _ in theirs}
    assert holes[0][0] in starts  # a chunk begins where the first hole does
    assert any(holes[0][0] < s < holes[0][1] for s in starts)  # cuts inside it


@st.composite
def zero_layouts(draw) -> tuple[bytes, list[tuple[int, int]]]:
    """Random data with zero runs (lengths from 1 byte to several max chunks), some
    of them declared as holes, some left as written zeros."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    data, holes = bytearray(), []
    for _ in range(draw(st.integers(1, 7))):
        if draw(st.booleans()):
            n = draw(st.sampled_from([1, 47, 48, 49, 500, 3943, 4096, 16000, 70_000, 300_000]))
            n += draw(st.integers(0, 3))
            if draw(st.integers(0, 3)):  # mostly declared
                if holes and holes[-1][1] == len(data):
                    holes[-1] = (holes[-1][0], len(data) + n)
                else:
                    holes.append((len(data), len(data) + n))
            data += bytes(n)
        else:
            data += rng.randbytes(draw(st.integers(1, 120_000)))
    return bytes(data), holes


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(
    layout=zero_layouts(),
    sizes=st.sampled_from([DEFAULT, SMALL, ZERO_CUTS, (1, 1, 64), (48, 96, 300)]),
)
def test_declared_holes_give_casyncs_chunks(casync, tmp_path_factory, layout, sizes):
    data, holes = layout
    tmp = tmp_path_factory.mktemp("declared")
    source = tmp / "zeros.img"
    source.write_bytes(data)
    theirs = casync_chunks(casync_make(casync, source, sizes, tmp))
    assert (pieces_as_chunks(source, ChunkSizes(*sizes), holes)) == theirs


@pytest.mark.parametrize("sizes", [*SIZES.values(), (1, 1, 64)], ids=[*SIZES, "d=1"])
@pytest.mark.parametrize("lead", [0, 47, 48, 500, 20_000])
def test_skip_zeros_from_any_point_where_windows_are_zeros(sizes, lead):
    """``Chunker.skip_zeros`` called once ``lead`` zeros are scanned (the window tested
    next holding zeros only, whether the chunk has reached its first tested length
    or not) makes the cuts a full scan makes, and leaves the chunker where a scan
    of the zeros would have."""
    rng = random.Random(lead)
    cs = ChunkSizes(*sizes)
    before, after = rng.randbytes(3 * sizes[2] + 5), rng.randbytes(sizes[2])
    zeros = 5 * sizes[2] + 20_123  # longer than any lead
    data = before + bytes(zeros) + after
    full = Chunker(cs).scan(data)

    chunker = Chunker(cs)
    lead = max(lead, 47)  # the window after the first 47 zeros holds zeros only
    head = len(before) + lead
    cuts = chunker.scan(data[:head])
    start = cuts[-1] if cuts else 0
    first, step, count = chunker.skip_zeros(head - start, zeros - lead)
    cuts += [start + first + i * step for i in range(count)]
    start = cuts[-1] if cuts else 0
    cuts += [start + c for c in chunker.scan(data[start:])]
    assert cuts == full


@pytest.mark.parametrize("position", [0, 5000, 1 * MiB + 100, 1 * MiB + 700 * KiB])
def test_pieces_from_a_reader_position_inside_or_before_a_hole(tmp_path, position):
    """From wherever the reader stands (in data, in a hole), the pieces' offsets count
    from there and their chunks are ``iter_chunks``'s."""
    layout = Layout("mixed", 3 * MiB, ((0, 1 * MiB), (2 * MiB, 1 * MiB)))
    path = tmp_path / "mixed.img"
    layout.write(path)
    sizes = ChunkSizes(*SMALL)
    with path.open("rb") as f:
        f.seek(position)
        dense = [(o, len(d)) for o, d in iter_chunks(f, sizes)]
        f.seek(position)
        pieces = list(iter_pieces(f, sizes))
    expanded = []
    for piece in pieces:
        if isinstance(piece, ZeroRun):
            expanded += [(piece.offset + i * piece.size, piece.size) for i in range(piece.count)]
        else:
            expanded.append((piece[0], len(piece[1])))
    assert expanded == dense
    assert any(isinstance(p, ZeroRun) for p in pieces)
