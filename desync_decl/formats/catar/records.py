"""catar record framing: ``u64 size (header included) | u64 type | body``, little-endian.

A catar has no file header or trailer: it is the serialization of its root
node. This module holds the record types, the size limits a reader enforces
(so a hostile size field cannot make us allocate gigabytes), and builders for
the records that carry a node's content.
"""

from __future__ import annotations

import struct

ENTRY = 0x1396FABCEA5BBB51
USER = 0xF453131AAEEACCB3
GROUP = 0x25EB6AC969396A52
XATTR = 0xB8157091F80BC486
ACL_USER = 0x297DC88B2EF12FAF
ACL_GROUP = 0x36F2ACB56CB3DD0B
ACL_GROUP_OBJ = 0x23047110441F38F3
ACL_DEFAULT = 0xFE3EEDA6823C8CD0
ACL_DEFAULT_USER = 0xBDF03DF9BD010A91
ACL_DEFAULT_GROUP = 0xA0CB1168782D1F51
FCAPS = 0xF7267DB0AFED0629
QUOTA_PROJID = 0x161BAF2D8772A72B
SELINUX = 0x46FAF0602FD26C59
SYMLINK = 0x664A6FB6830E0D6C
DEVICE = 0xAC3DACE369DFE643
PAYLOAD = 0x8B9E1D93D6DCFFC9
FILENAME = 0x6DBB6EBCB3161F0B
GOODBYE = 0xDFD35C5E8327C403
GOODBYE_TAIL_MARKER = 0x57446FA533702943

NAMES = {
    ENTRY: "ENTRY",
    USER: "USER",
    GROUP: "GROUP",
    XATTR: "XATTR",
    ACL_USER: "ACL_USER",
    ACL_GROUP: "ACL_GROUP",
    ACL_GROUP_OBJ: "ACL_GROUP_OBJ",
    ACL_DEFAULT: "ACL_DEFAULT",
    ACL_DEFAULT_USER: "ACL_DEFAULT_USER",
    ACL_DEFAULT_GROUP: "ACL_DEFAULT_GROUP",
    FCAPS: "FCAPS",
    QUOTA_PROJID: "QUOTA_PROJID",
    SELINUX: "SELINUX",
    SYMLINK: "SYMLINK",
    DEVICE: "DEVICE",
    PAYLOAD: "PAYLOAD",
    FILENAME: "FILENAME",
    GOODBYE: "GOODBYE",
}

HEADER = struct.Struct("<2Q")
HEADER_SIZE = HEADER.size
ENTRY_SIZE = 64
DEVICE_SIZE = 32
NAME_MAX = 255  # bytes in one file name (Linux NAME_MAX)
PATH_MAX = 4096  # bytes in a symlink target

# Largest body a reader accepts for each record it reads into memory (PAYLOAD
# is streamed and GOODBYE is checked against the directory's child count).
MAX_BODY = {
    ENTRY: ENTRY_SIZE - HEADER_SIZE,
    USER: 256,
    GROUP: 256,
    XATTR: NAME_MAX + 1 + 65536,
    ACL_USER: 16 + 256,
    ACL_GROUP: 16 + 256,
    ACL_GROUP_OBJ: 8,
    ACL_DEFAULT: 32,
    ACL_DEFAULT_USER: 16 + 256,
    ACL_DEFAULT_GROUP: 16 + 256,
    FCAPS: 4096,
    QUOTA_PROJID: 8,
    SELINUX: 4096,
    SYMLINK: PATH_MAX + 1,
    DEVICE: DEVICE_SIZE - HEADER_SIZE,
    FILENAME: NAME_MAX + 1,
}


def header(typ: int, body_size: int) -> bytes:
    return HEADER.pack(HEADER_SIZE + body_size, typ)


def record(typ: int, body: bytes) -> bytes:
    return HEADER.pack(HEADER_SIZE + len(body), typ) + body


def filename(name: bytes) -> bytes:
    return record(FILENAME, name + b"\0")


def payload_header(size: int) -> bytes:
    return header(PAYLOAD, size)


def symlink(target: bytes) -> bytes:
    return record(SYMLINK, target + b"\0")


def device(major: int, minor: int) -> bytes:
    return HEADER.pack(DEVICE_SIZE, DEVICE) + struct.pack("<2Q", major, minor)


def name_problem(name: bytes) -> str | None:
    """Why ``name`` cannot be one file name in a directory, or None if it can."""
    if not name:
        return "empty name"
    if name in (b".", b".."):
        return f"name {name.decode()!r}"
    if b"/" in name:
        return "name contains '/'"
    if b"\0" in name:
        return "name contains a NUL byte"
    if len(name) > NAME_MAX:
        return f"name longer than {NAME_MAX} bytes"
    return None


def read_name_problem(name: bytes) -> str | None:
    """Why a reader refuses ``name``: ``name_problem``, and a backslash. A backslash is
    an ordinary byte of a Linux file name (casync and desync archive it, and so do
    we), but a path separator on Windows, so desync refuses it when reading an
    archive, whatever it writes to; we read as desync does."""
    if (problem := name_problem(name)) is not None:
        return problem
    if b"\\" in name:
        return "name containing a backslash (a path separator on Windows, refused as desync does)"
    return None
