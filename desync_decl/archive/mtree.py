"""Decoded catar nodes as an mtree v1.0 listing (``desync mtree``).

One line per node: its path (``.`` for the root), type, mode, owner, time and,
for files, size and content digest; then one ``xattr.NAME=BASE64`` field (go-mtree's
keyword; casync's mtree shows no extended attributes) for each extended attribute
``untar`` sets from the node: file capabilities, SELinux labels and XATTRs, as far
as the archive's feature flags cover them. Names escape everything outside
printable ASCII (and ``\\``, ``#``, space) as ``\\ooo``. Unlike desync,
nanoseconds are always zero-padded (desync pads with spaces for non-files).
"""

from __future__ import annotations

import base64
import stat
from collections.abc import Iterator

from desync_decl.formats.catar.decoder import Decoder, DirEnd, Node
from desync_decl.formats.catar.feature_gates import applied_xattrs
from desync_decl.formats.digest import Digest

_TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "link",
    stat.S_IFCHR: "char",
    stat.S_IFBLK: "block",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}
_SAFE = frozenset(range(33, 127)) - {ord("\\"), ord("#")}


def escape(name: bytes) -> str:
    return "".join(chr(c) if c in _SAFE else f"\\{c:03o}" for c in name)


def mtree_lines(
    decoder: Decoder,
    digest: Digest = Digest.SHA512_256,
    payloads: dict[str, tuple[int, int]] | None = None,
) -> Iterator[str]:
    """The listing; with ``payloads``, each file's payload is also recorded there as
    (offset in the archive stream, size) under its listed path (where its bytes come
    from, for a plan)."""
    yield "#mtree v1.0"
    for ev in decoder:
        if not isinstance(ev, DirEnd):
            yield _line(ev, decoder, digest, payloads)


def _line(
    node: Node,
    decoder: Decoder,
    digest: Digest,
    payloads: dict[str, tuple[int, int]] | None = None,
) -> str:
    e = node.entry
    fmt = stat.S_IFMT(e.mode)
    name = escape(b"/".join(node.path)) if node.path else "."
    if payloads is not None and fmt == stat.S_IFREG:
        payloads[name] = (decoder.pos, node.size)
    fields = [name, f"type={_TYPES[fmt]}", f"mode={e.mode & 0o7777:04o}"]
    if fmt == stat.S_IFLNK:
        fields.append(f"target={escape(node.target)}")
    fields += [f"uid={e.uid}", f"gid={e.gid}"]
    if fmt == stat.S_IFREG:
        fields.append(f"size={node.size}")
    fields.append(f"time={e.mtime // 10**9}.{e.mtime % 10**9:09d}")
    if fmt == stat.S_IFREG:
        h = digest.hasher()
        for block in decoder.payload():
            h.update(block)
        label = "sha512256digest" if digest is Digest.SHA512_256 else "sha256digest"
        fields.append(f"{label}={h.hexdigest()}")
    for xname, value in applied_xattrs(e):
        fields.append(f"xattr.{escape(xname)}={base64.b64encode(value).decode()}")
    return " ".join(fields)
