"""Ports of desync's ``fileseed_test.go`` and ``nullseed_test.go``: a seed range put
into the target when cloning is not possible, and the null seed's runs of zeros.

desync swaps its clone function for one that fails; ours fail for real: the
filesystems under ``tmp_path`` (ext4) cannot clone, and on XFS/Btrfs (``reflink_dir``)
a range smaller than a block has nothing to clone. Our null seed never clones: a null
run is a hole on a new target and a punched hole (or zeros written) over old data, so
desync's "clone fails half-way through a null section" has no counterpart.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.assemble.transfer import transfer
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.ops.extract import extract
from desync_decl.stores.local import LocalStore
from tests.loopfs import fs_type


def open_rw(path: Path) -> int:
    return os.open(path, os.O_RDWR)


def test_file_seed_segment_clone_fallback(tmp_path):
    """TestFileSeedSegmentCloneFallback: asked to clone 3 blocks + 100 bytes where the
    filesystem cannot, the range is copied: nothing cloned, every byte there."""
    assert fs_type(tmp_path) not in ("xfs", "btrfs"), "tmp_path is meant to be unable to clone"
    size = 3 * 4096 + 100
    data = bytes(i % 256 for i in range(size))
    (tmp_path / "seed").write_bytes(data)
    (tmp_path / "out").write_bytes(b"")
    os.truncate(tmp_path / "out", size)
    src, dst = os.open(tmp_path / "seed", os.O_RDONLY), open_rw(tmp_path / "out")
    try:
        cloned = transfer(src, 0, dst, 0, size, blocksize=4096, clone=True)
    finally:
        os.close(src)
        os.close(dst)
    assert cloned == 0
    assert (tmp_path / "out").read_bytes() == data


def test_file_seed_segment_smaller_than_block(reflink_dir):
    """TestFileSeedSegmentSmallerThanBlock: on a filesystem that clones, a 4 KiB range
    with 128 KiB blocks (ZFS's record size) holds no whole block: it is copied (not
    cloned, though the kernel's copy may share a 4 KiB filesystem block), and nothing
    outside it changes."""
    block, size = 131072, 4096
    data = bytes((i + 1) % 256 for i in range(size))
    (reflink_dir / "seed").write_bytes(data)
    (reflink_dir / "out").write_bytes(b"\xff" * (3 * block))
    src, dst = os.open(reflink_dir / "seed", os.O_RDONLY), open_rw(reflink_dir / "out")
    try:
        cloned = transfer(src, 0, dst, 0, size, blocksize=block, clone=True)
        os.fsync(dst)
    finally:
        os.close(src)
        os.close(dst)
    assert cloned == 0
    out = (reflink_dir / "out").read_bytes()
    assert out[:size] == data and out[size:] == b"\xff" * (3 * block - size)


# --- nullseed_test.go: TestNullChunkSectionCloneFallback ------------------------------------


def null_index(pieces: list[tuple[int, bytes]], max_size: int) -> Index:
    """An index of ``(size, id)`` chunks whose largest chunk (the null chunk) is ``max_size``."""
    sizes = ChunkSizes(min(1024, max_size), min(4096, max_size), max_size)
    return Index.from_chunks(blob_flags(Digest.SHA512_256), sizes, pieces)


def zeros_id(size: int) -> bytes:
    return Digest.SHA512_256.hash(bytes(size))


LENGTH = 3 * 4096 + 100  # desync's section: three blocks and a bit


def test_null_section_over_old_data_is_zeros(tmp_path):
    """copies zeros when cloning fails: a null run written over a file of 0xff (in
    place) reads as zeros, and counts as copied from seeds, as desync counts it."""
    index = null_index([(LENGTH, zeros_id(LENGTH))], LENGTH)
    assert index.id(0) == null_chunk_id(index)
    out = tmp_path / "out"
    out.write_bytes(b"\xff" * LENGTH)
    result = extract(index, out, LocalStore(tmp_path / "empty", create=True), in_place=True)
    assert out.read_bytes() == bytes(LENGTH)
    stats = result.stats()
    assert stats["chunks-from-seeds"] == 1
    assert stats["bytes-copied-from-seeds"] + stats["bytes-cloned-from-seeds"] == LENGTH


def test_null_section_on_a_new_target_is_left_blank(tmp_path):
    """leaves blank target untouched when cloning fails: on a new target the null run
    is not written at all (a hole, no data), and reads as zeros."""
    index = null_index([(LENGTH, zeros_id(LENGTH))], LENGTH)
    out = tmp_path / "out"
    result = extract(index, out, LocalStore(tmp_path / "empty", create=True))
    assert out.read_bytes() == bytes(LENGTH)
    assert result.stats()["bytes-copied-from-seeds"] == 0
    fd = os.open(out, os.O_RDONLY)
    try:
        with pytest.raises(OSError) as caught:
            os.lseek(fd, 0, os.SEEK_DATA)  # ENXIO: no data after offset 0
        assert caught.value.errno == errno.ENXIO
    finally:
        os.close(fd)


def test_null_section_smaller_than_a_block_writes_only_its_range(tmp_path):
    """section smaller than a block writes only within its range: 5000 zeros at
    offset 1000 of a 384 KiB file of 0xff (desync's 128 KiB blocks), everything else
    in place; only the section changes."""
    file_length, start, section = 3 * 131072, 1000, 5000
    ff = b"\xff" * section
    chunks = [(start, Digest.SHA512_256.hash(b"\xff" * start)), (section, zeros_id(section))]
    rest = file_length - start - section
    while rest:
        n = min(rest, section)
        chunks.append((n, Digest.SHA512_256.hash(ff[:n])))
        rest -= n
    index = null_index(chunks, section)
    out = tmp_path / "out"
    out.write_bytes(b"\xff" * file_length)
    result = extract(index, out, LocalStore(tmp_path / "empty", create=True), in_place=True)
    got = out.read_bytes()
    assert got[:start] == b"\xff" * start
    assert got[start : start + section] == bytes(section)
    assert got[start + section :] == b"\xff" * (file_length - start - section)
    assert result.stats()["chunks-in-place"] == len(index) - 1
