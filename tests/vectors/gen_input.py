"""The inputs of the casync vectors, rebuilt bit for bit: no input file is stored.

Each blob case's ``case.txt`` names its input (a key of ``INPUTS``) with the
input's size and SHA-256; the tree cases archive the directory ``build_tree``
makes. ``regenerate.py`` feeds these to casync, the tests feed them to us.

Random bytes are ``random.Random(seed).randbytes(n)`` (CPython's Mersenne
Twister, stable across versions since 3.9), so the inputs never change.
"""

from __future__ import annotations

import os
import random
import socket
from collections.abc import Callable
from pathlib import Path

KiB = 1024
MiB = 1024 * KiB

# Around the default chunk limits (min 16 KiB, avg 64 KiB, max 256 KiB), +-1.
EDGE_SIZES = (16383, 16384, 16385, 65535, 65536, 65537, 262143, 262144, 262145)

# Every node of the vector trees gets this mtime: 2020-01-02 03:04:05.123456789 UTC.
VECTOR_MTIME_NS = 1577934245123456789


def rand(seed: int, n: int) -> bytes:
    return random.Random(seed).randbytes(n)


def repeated() -> bytes:
    """Two random blocks laid out A B A A B A: chunks repeat once the cuts resynchronise."""
    a, b = rand(101, 700000), rand(102, 300000)
    return a + b + a + a + b + a


INPUTS: dict[str, Callable[[], bytes]] = {
    "empty": lambda: b"",
    "one_byte": lambda: rand(1, 1),
    "small_1000": lambda: rand(2, 1000),
    **{f"rand_{n}": (lambda n=n: rand(3, n)) for n in EDGE_SIZES},
    # zeros never trigger a content-defined cut: only the max rule fires
    **{f"zeros_{n}": (lambda n=n: bytes(n)) for n in EDGE_SIZES},
    "rand_5m": lambda: rand(5, 5 * MiB),
    "zeros_5m": lambda: bytes(5 * MiB + 12345),
    "repeated": repeated,
    "rand_20m": lambda: rand(20, 20 * MiB),
    "rand_256k": lambda: rand(7, 256 * KiB + 777),
}


def tree(root: Path) -> None:
    """The plain tree: files of every mode, odd names, symlinks, nested and empty
    directories. Modes are set with chmod, so the umask does not matter."""
    root.mkdir()
    root.chmod(0o755)

    def file(rel: str, data: bytes, mode: int = 0o644) -> None:
        (root / rel).write_bytes(data)
        (root / rel).chmod(mode)

    def directory(rel: str, mode: int = 0o755) -> None:
        (root / rel).mkdir()
        (root / rel).chmod(mode)

    file("hello.txt", b"hello world\n")
    file("empty", b"")
    file("exec.sh", b"#!/bin/sh\necho hi\n", 0o755)
    file("readonly.txt", b"read only\n", 0o444)
    file("big.bin", rand(8, 200 * KiB))
    file("file with spaces.txt", b"spaces in name\n")
    file("\u00fcn\u00efc\u00f6d\u00e9-\u540d\u524d.txt", "unicode name \u00fc\n".encode())
    (root / "link").symlink_to("hello.txt")
    (root / "dangling").symlink_to("does/not/exist")
    directory("emptydir")
    directory("sub")
    file("sub/nested.bin", rand(9, 100 * KiB))
    file("sub/a", b"a\n")
    file("sub/B", b"B\n")
    file("sub/_underscore", b"_\n")
    directory("sub/deeper", 0o750)
    file("sub/deeper/deep file.txt", b"deep\n", 0o600)
    (root / "sub/deeper/uplink").symlink_to("../../hello.txt")


def build_tree(root: Path, *, special: bool = False) -> Path:
    """The input of the tree cases: ``tree`` plus what only casync's default
    feature flags record (a user xattr, a file owned by nobody:nogroup) and, with
    ``special``, a fifo, two device nodes and a socket; every mtime fixed.
    Needs root (chown, mknod)."""
    tree(root)
    os.setxattr(root / "hello.txt", "user.comment", b"casync vector")
    os.chown(root / "sub/a", 65534, 65534)
    if special:
        os.mkfifo(root / "fifo")
        os.chmod(root / "fifo", 0o640)
        os.mknod(root / "chardev", 0o20660, os.makedev(1, 3))
        os.chmod(root / "chardev", 0o660)
        os.mknod(root / "blockdev", 0o60660, os.makedev(7, 0))
        os.chmod(root / "blockdev", 0o660)
        with socket.socket(socket.AF_UNIX) as s:
            s.bind(str(root / "socket"))
        os.chmod(root / "socket", 0o755)
    for top, dirs, files in os.walk(root, topdown=False):
        for name in files + dirs:
            os.utime(os.path.join(top, name), ns=(VECTOR_MTIME_NS,) * 2, follow_symlinks=False)
    os.utime(root, ns=(VECTOR_MTIME_NS,) * 2)
    return root
