"""Our ``make`` writes exactly the index casync wrote for every blob vector, and the
chunk files casync would: same names, same contents, zstd frames framed like casync's."""

from __future__ import annotations

import pytest
import zstandard

from desync_decl.formats import chunkfile
from desync_decl.formats.index import decode
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore
from tests.vector_cases import blob_cases
from tests.vectors import VECTORS
from tests.vectors.gen_input import INPUTS

CASES = blob_cases()


def store_files(root) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_make_writes_casyncs_index_and_digest(case, tmp_path):
    source = tmp_path / "input"
    source.write_bytes(INPUTS[case.input]())
    store = LocalStore(tmp_path / "store", digest=case.digest, create=True)
    result = make(
        source, sizes=case.sizes, digest=case.digest, store=store, concurrency=4, blob_digest=True
    )
    assert result.index.encode() == (case.dir / "index.caibx").read_bytes()
    assert result.blob_digest.hex() == (case.dir / "digest.txt").read_text().strip()
    ids = {c.id.hex() for c in decode((case.dir / "index.caibx").read_bytes())}
    ours = store_files(tmp_path / "store")
    assert sorted(ours) == sorted(f"{i[:4]}/{i}.cacnk" for i in ids)
    if case.has_store:
        theirs = store_files(case.dir / "store")
        assert sorted(ours) == sorted(theirs)
        for name, data in ours.items():
            limit = 1 << 20
            assert chunkfile.decompress(data, limit) == chunkfile.decompress(theirs[name], limit)


def test_chunk_files_are_one_zstd_frame_without_size_or_checksum():
    data = bytes(range(256)) * 300
    stored = chunkfile.compress(data)
    params = zstandard.get_frame_parameters(stored)
    assert params.content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert not params.has_checksum
    assert params.dict_id == 0
    assert stored[4] == 0x00  # frame header descriptor: no size, no checksum, no dict
    assert chunkfile.decompress(stored, len(data)) == data


def test_reader_accepts_frames_with_size_and_checksum_and_concatenated_frames():
    data = b"abc" * 5000
    c = zstandard.ZstdCompressor(level=19, write_checksum=True, write_content_size=True)
    assert chunkfile.decompress(c.compress(data), len(data)) == data
    two = chunkfile.compress(data[:7000]) + chunkfile.compress(data[7000:])
    assert chunkfile.decompress(two, len(data)) == data


@pytest.mark.parametrize("case", ["small_1000_xz", "small_1000_gzip"])
def test_reader_accepts_casyncs_xz_and_gzip_chunk_files(case):
    files = list((VECTORS / "blob" / case / "store").rglob("*.cacnk"))
    assert len(files) == 1
    assert chunkfile.decompress(files[0].read_bytes(), 1000) == INPUTS["small_1000"]()


@pytest.mark.parametrize(
    ("stored", "why"),
    [
        (b"not compressed at all", "unknown compression"),
        (chunkfile.compress(b"x" * 100) + b"junk", "after the end"),
        (chunkfile.compress(b"x" * 100)[:-3], "truncated|zstd"),
        (chunkfile.compress(b"x" * 5000), "more than 4000"),
    ],
)
def test_reader_refuses_bad_chunk_files(stored, why):
    with pytest.raises(chunkfile.DecodeError, match=why):
        chunkfile.decompress(stored, 4000)
