"""Rebuild the casync vectors in this directory with the installed casync.

    python -m tests.vectors.regenerate           rewrite blob/, tree/, casync-version.txt
    python -m tests.vectors.regenerate --check   rebuild in a temporary directory and
                                                 compare with the committed copy, byte
                                                 for byte (exit 1 listing what differs)

Every file under ``blob/`` and ``tree/`` is what casync wrote (indexes, archives,
stores, ``casync digest`` and ``casync mtree`` output) or a plain listing of an
index's chunk table; the inputs come from ``gen_input.py``. Needs root (the tree
cases record owners and device nodes) and casync (Debian package ``casync``).
Runs ``tests/test_vectors_regenerate.py`` too, so a vector nobody can rebuild fails.

Each case is checked before it is kept: casync make prints the digest ``casync
digest`` prints, and ``casync extract`` gives the input back.
"""

from __future__ import annotations

import argparse
import filecmp
import hashlib
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tests.vectors.gen_input import EDGE_SIZES, INPUTS, build_tree

HERE = Path(__file__).resolve().parent
COMPARED = ("blob", "tree")  # casync-version.txt only says where they came from
ENV = {**os.environ, "LC_ALL": "C", "TZ": "UTC"}

# casync's index layout (src/caformat.h): a 48-byte header, a 16-byte table
# header, 40-byte items (end offset, chunk id), a 40-byte tail.
INDEX_HEADER, TABLE_HEADER, ITEM, TAIL = 48, 16, 40, 40


@dataclass(frozen=True)
class BlobCase:
    name: str
    input: str  # a key of gen_input.INPUTS
    keep_store: bool
    options: tuple[str, ...] = ()


@dataclass(frozen=True)
class TreeCase:
    name: str
    special: bool  # with a fifo, device nodes and a socket
    options: tuple[str, ...] = ()


SMALL_SIZES = ("--chunk-size=1024:4096:16384",)
REDUCED = ("--with=permissions", "--with=symlinks")  # what a non-root user can reproduce
BLOB_CASES = [
    BlobCase("empty", "empty", False),
    BlobCase("one_byte", "one_byte", True),
    BlobCase("small_1000", "small_1000", True),
    *(BlobCase(name, name, False) for n in EDGE_SIZES for name in (f"rand_{n}", f"zeros_{n}")),
    BlobCase("rand_5m", "rand_5m", False),
    BlobCase("zeros_5m", "zeros_5m", True),
    BlobCase("repeated", "repeated", False),
    BlobCase("rand_20m", "rand_20m", False),
    BlobCase("rand_20m_cs1k4k16k", "rand_20m", False, SMALL_SIZES),
    BlobCase("rand_256k_cs1k4k16k", "rand_256k", True, SMALL_SIZES),
    BlobCase("rand_256k_avg4096", "rand_256k", False, ("--chunk-size=4096",)),
    BlobCase("rand_256k_fixed4096", "rand_256k", False, ("--chunk-size=4096:4096:4096",)),
    BlobCase("rand_256k_cs1000_3000_20000", "rand_256k", False, ("--chunk-size=1000:3000:20000",)),
    BlobCase("rand_16384_cs16_64_256", "rand_16384", False, ("--chunk-size=16:64:256",)),
    BlobCase("rand_5m_sha256", "rand_5m", False, ("--digest=sha256",)),
    BlobCase("small_1000_sha256", "small_1000", True, ("--digest=sha256",)),
    BlobCase("small_1000_xz", "small_1000", True, ("--compression=xz",)),
    BlobCase("small_1000_gzip", "small_1000", True, ("--compression=gzip",)),
]
TREE_CASES = [
    TreeCase("default", False),
    TreeCase("default_cs1k4k16k", False, SMALL_SIZES),
    TreeCase("reduced", False, (*REDUCED, "--with=nsec-time")),
    TreeCase("reduced_sectime", False, (*REDUCED, "--with=sec-time")),
    TreeCase("unix", False, ("--with=unix",)),
    TreeCase("special_default", True),
]
MTIME_TEXT = "2020-01-02 03:04:05.123456789 UTC"  # gen_input.VECTOR_MTIME_NS


def casync(*args: str | Path) -> bytes:
    """casync's stdout; a failure stops the rebuild with casync's message."""
    done = subprocess.run(["casync", *map(str, args)], capture_output=True, env=ENV)
    if done.returncode:
        raise SystemExit(f"casync {' '.join(map(str, args))}: {done.stderr.decode().strip()}")
    return done.stdout


def chunk_table(index: bytes) -> str:
    """``offset size id`` per chunk, read straight from the index bytes (not with
    the package's reader: the tests compare that reader with this listing)."""
    items = index[INDEX_HEADER + TABLE_HEADER : len(index) - TAIL]
    lines, start = [], 0
    for at in range(0, len(items), ITEM):
        (end,) = struct.unpack_from("<Q", items, at)
        lines.append(f"{start} {end - start} {items[at + 8 : at + ITEM].hex()}\n")
        start = end
    return "".join(lines)


def blob_case(case: BlobCase, out: Path, work: Path) -> None:
    d, source, store = out / "blob" / case.name, work / "input", work / "store"
    d.mkdir(parents=True)
    work.mkdir(parents=True)
    data = INPUTS[case.input]()
    source.write_bytes(data)
    opts = " ".join(case.options)
    digest_opts = [o for o in case.options if o.startswith("--digest=")]
    (d / "case.txt").write_text(
        f"input: {case.input} (gen_input.py {case.input})\n"
        f"input_size: {len(data)}\n"
        f"input_sha256: {hashlib.sha256(data).hexdigest()}\n"
        f"make: casync make {opts} --store=STORE index.caibx INPUT\n"
        f"digest: casync digest {' '.join(digest_opts)} INPUT\n"
    )
    made = casync("make", *case.options, f"--store={store}", d / "index.caibx", source)
    digest = casync("digest", *digest_opts, source)
    assert made == digest, (case.name, made, digest)
    (d / "digest.txt").write_bytes(digest)
    (d / "chunks.txt").write_text(chunk_table((d / "index.caibx").read_bytes()))
    casync("extract", f"--store={store}", d / "index.caibx", work / "extracted")
    assert (work / "extracted").read_bytes() == data, case.name
    if case.keep_store and store.is_dir():  # casync makes no store for an empty input
        shutil.copytree(store, d / "store")
    shutil.rmtree(work)


def tree_case(case: TreeCase, out: Path, work: Path) -> None:
    d, source, store = out / "tree" / case.name, work / "tree", work / "store"
    d.mkdir(parents=True)
    work.mkdir(parents=True)
    build_tree(source, special=case.special)
    opts = " ".join(case.options)
    (d / "case.txt").write_text(
        "input: gen_input.py tree DIR + user.comment xattr on hello.txt"
        " + chown 65534:65534 sub/a\n"
        + ("       + fifo, chardev (1:3), blockdev (7:0), socket\n" if case.special else "")
        + f"mtime: touch -h -d '{MTIME_TEXT}' on every node\n"
        f"make catar: casync make {opts} archive.catar DIR\n"
        f"make caidx: casync make {opts} --store=STORE archive.caidx DIR\n"
        f"digest: casync digest {opts} DIR\n"
    )
    catar = casync("make", *case.options, d / "archive.catar", source)
    caidx = casync("make", *case.options, f"--store={store}", d / "archive.caidx", source)
    digest = casync("digest", *case.options, source)
    archive = hashlib.new("sha512_256", (d / "archive.catar").read_bytes()).hexdigest()
    assert catar == caidx == digest == f"{archive}\n".encode(), case.name
    (d / "digest.txt").write_bytes(digest)
    (d / "chunks.txt").write_text(chunk_table((d / "archive.caidx").read_bytes()))
    (d / "mtree.txt").write_bytes(casync("mtree", d / "archive.catar"))
    shutil.rmtree(work)


def version() -> str:
    """casync's version and the Debian packages whose bytes the vectors hold
    (the chunk files' zstd frames depend on libzstd's version)."""
    lines = [casync("--version").decode()]
    for package, label in (("casync", "debian-package casync"), ("libzstd1", "libzstd")):
        query = ["dpkg-query", "-W", "-f=${Version}", package]
        found = subprocess.run(query, capture_output=True, text=True)
        if found.returncode == 0:
            lines.append(f"{label} {found.stdout}\n")
    return "".join(lines)


def regenerate(out: Path, work: Path) -> None:
    """Write every case into ``out`` (its blob/ and tree/ are replaced), using
    ``work`` for inputs and stores."""
    if os.geteuid() != 0:
        raise SystemExit("regenerate: must run as root (the tree cases chown and mknod)")
    for kind in ("blob", "tree"):
        shutil.rmtree(out / kind, ignore_errors=True)
    old_umask = os.umask(0o022)
    try:
        (out / "casync-version.txt").write_text(version())
        for blob in BLOB_CASES:
            blob_case(blob, out, work / blob.name)
        for tree in TREE_CASES:
            tree_case(tree, out, work / tree.name)
    finally:
        os.umask(old_umask)


def differences(expected: Path, actual: Path) -> list[str]:
    """Paths (relative) whose presence or bytes differ between the two copies."""

    def files(root: Path) -> set[str]:
        return {
            p.relative_to(root).as_posix()
            for name in COMPARED
            for p in (root / name).rglob("*")
            if p.is_file()
        }

    ours, theirs = files(expected), files(actual)
    return sorted(
        [f"only in {expected}: {p}" for p in ours - theirs]
        + [f"only in {actual}: {p}" for p in theirs - ours]
        + [
            f"differs: {p}"
            for p in ours & theirs
            if not filecmp.cmp(expected / p, actual / p, shallow=False)
        ]
    )


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare, do not rewrite")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="casync-vectors-") as temp:
        if not args.check:
            regenerate(HERE, Path(temp))
            return 0
        rebuilt = Path(temp) / "out"
        rebuilt.mkdir()
        regenerate(rebuilt, Path(temp) / "work")
        problems = differences(HERE, rebuilt)
    for line in problems:
        print(line)
    if problems:
        print(f"committed ones made by:\n{(HERE / 'casync-version.txt').read_text()}")
        print(f"this machine has:\n{version()}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
