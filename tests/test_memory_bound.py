"""make's (and extract's) memory does not grow with the size of the input.

Each verb runs as its own process on a sparse image of 64 MiB and of 64 GiB holding
the same 4 MiB of data (the 64 GiB image's index is 262,144 chunks, 10 MiB of table
held whole), and reports its own peak RSS (VmHWM of its own address space) as it
exits: the large run may take only a little more than the small one.
"""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, IndexTable, IndexWriter, blob_flags, decode
from tests import ssh_keys
from tests.peak_rss import run_measured
from tests.ssh_keys import allowed_signers

GROWTH_LIMIT_MIB = 4.0  # what the 64 GiB run may take beyond the 64 MiB run's peak
MiB, GiB = 1 << 20, 1 << 30
ssh = ssh_keys.ssh


def peak_mib(*argv: object) -> float:
    """Peak RSS of ``desync-decl ARGV`` run as a child process (which must succeed)."""
    run = run_measured(*argv)
    assert run.code == 0, run.err
    return run.peak_mib


def sparse_image(path: Path, size: int) -> Path:
    """``size`` bytes, holes but for 4 MiB of random data in four extents."""
    data = random.Random(7).randbytes(4 * MiB)
    with path.open("wb") as f:
        f.truncate(size)
        for k in range(4):
            f.seek(k * (size // 4))
            f.write(data[k * MiB : (k + 1) * MiB])
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("memory")
    return {
        "small": sparse_image(work / "small.img", 64 * MiB),
        "large": sparse_image(work / "large.img", 64 * GiB),
    }


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_make_of_a_64_gib_image_takes_no_more_memory_than_of_64_mib(images, tmp_path, ssh, signed):
    key = ssh.key("maker")
    signing = ["--sign-key", key.path] if signed else []
    peaks = {}
    for name, image in images.items():
        store = tmp_path / f"store-{name}"
        peaks[name] = peak_mib("make", "-s", store, *signing, tmp_path / f"{name}.caibx", image)
    growth = peaks["large"] - peaks["small"]
    assert growth < GROWTH_LIMIT_MIB, f"peak RSS {peaks}: grew {growth:.1f} MiB with the input"
    large = tmp_path / "large.caibx"
    assert len(decode(large.read_bytes())) > 262_144  # all of them
    if signed:
        signers = allowed_signers(tmp_path / "allowed_signers", f"maker@example {key.public}")
        verified = ssh.verify(signers, "maker@example", large.read_bytes(), Path(f"{large}.sig"))
        assert verified.code == 0, verified


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_extract_of_a_64_gib_image_takes_no_more_memory_than_of_64_mib(
    images, tmp_path, ssh, signed
):
    """The index is read back in windows; signed, its signature checked as it is read."""
    key = ssh.key("maker")
    signing = ["--sign-key", key.path] if signed else []
    signers = allowed_signers(tmp_path / "allowed_signers", f"maker@example {key.public}")
    trust = ["--allowed-signers", signers] if signed else []
    peaks = {}
    for name, image in images.items():
        store, index = tmp_path / f"store-{name}", tmp_path / f"{name}.caibx"
        peak_mib("make", "-s", store, *signing, index, image)
        out = tmp_path / f"{name}.out"
        peaks[name] = peak_mib("extract", "-s", store, *trust, index, out)
        assert out.stat().st_size == image.stat().st_size
    growth = peaks["large"] - peaks["small"]
    assert growth < GROWTH_LIMIT_MIB, f"peak RSS {peaks}: grew {growth:.1f} MiB with the input"


def written(chunks: list[tuple[int, bytes, int]]) -> tuple[bytes, str]:
    """The bytes and digest an ``IndexWriter`` writes for ``(size, id, count)`` chunks."""
    out: list[bytes] = []
    writer = IndexWriter(out.append, blob_flags(Digest.SHA512_256), DEFAULT_CHUNK_SIZES)
    for size, cid, count in chunks:
        if count == 1:
            writer.add(size, cid)
        else:
            writer.add_run(size, cid, count)
    done = writer.finish()
    assert (done.chunks, done.length) == (
        sum(count for _, _, count in chunks),
        sum(size * count for size, _, count in chunks),
    )
    return b"".join(map(bytes, out)), done.file_digest


def held(chunks: list[tuple[int, bytes, int]]) -> Index:
    table = IndexTable()
    for size, cid, count in chunks:
        for _ in range(count):
            table.add(size, cid)
    return table.index(blob_flags(Digest.SHA512_256), DEFAULT_CHUNK_SIZES)


@pytest.mark.parametrize(
    "chunks",
    [
        [],
        [(1000, b"a" * 32, 1)],
        [(700, b"a" * 32, 1), (65536, b"z" * 32, 10_000), (900, b"b" * 32, 1)],
        [(500 + i, i.to_bytes(32, "little"), 1) for i in range(3000)],  # several pieces of 64 KiB
    ],
    ids=["empty", "one", "runs", "many"],
)
def test_the_written_index_is_the_held_one(chunks):
    data, digest = written(chunks)
    index = held(chunks)
    assert data == index.encode()
    assert digest == index.file_digest()
