"""What ``index-server`` answers: index files by name over any index store.

The namespace is flat: a path is exactly ``/<name>``. desync served
``/a/x.caibx`` and ``/b/x.caibx`` as the same file (it used only the last
path element), so two clients could overwrite each other's index
without noticing; here a path with directories is refused. A name is
percent-decoded and must not be empty, ``.``, ``..``, or contain a slash, a
backslash or a control character (400). A PUT body must parse as an index
(415 otherwise) and is written atomically, as received. A GET sends the
stored file's exact bytes, checked to be a well-formed index (never a
re-encoding: a signature covers the bytes). A GET or HEAD of a file
that is not an index (any name, a directory, a FIFO) is 400, as desync answers:
the request named the wrong thing, the server did not fail; a store that fails
is 500, its details on the server's side only.

A name ending in ``.sig`` is the signature of the index named without it
(``signing.SIGNATURE_SUFFIX``), never an index: GET/HEAD serve it (404 when
there is none, 400 when what the store holds is not one armored SSHSIG), PUT
(with ``-w`` and its authorization, as an index) takes one armored SSHSIG of at
most ``signing.MAX_SIGNATURE_SIZE`` bytes: a larger announced body is refused
(413) without reading it, anything else that is not a signature 415; it is
written atomically beside the index.

A GET from a local index directory is never held whole either: the file is
sent as the client takes it (``IndexFile``, a streamed body; ``limits``),
each piece checked as it is read, and a file that turns out invalid half-way
cuts the connection, so a client never receives a broken index as if it
were whole. Building each answer in memory let 60 connections pipelining
GETs of an 11 MB index without reading take a server from 35 MB to 679 MB.

A PUT body is never held in memory (``upload``): into a local index
directory it streams straight into the final file's temp file (created 0600,
made 0644 once whole and valid, then renamed over the name), checked piece by
piece as it arrives (``index.Checker``), so a bad upload is refused (415) at
its first bad byte and a 1 GiB index costs a piece of memory, not 2 GiB. For
a remote index store it is spooled to a temp file and checked the same way,
and only a valid index is then read back for the store.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from urllib.parse import unquote

from desync_decl.errors import DesyncError, FormatError, IndexMissing
from desync_decl.formats import index as index_format
from desync_decl.fsutil import AtomicFile
from desync_decl.server import upload
from desync_decl.server.messages import OCTETS, Request, Response, failure, refusal
from desync_decl.signing import MAX_SIGNATURE_SIZE
from desync_decl.stores.base import StoreError
from desync_decl.stores.index_store import (
    IndexStore,
    LocalIndexStore,
    checked_index_name,
    index_of_signature,
)

DEFAULT_MAX_INDEX_SIZE = 1 << 30  # 40 bytes a chunk: about 27 million chunks
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")  # never in a name a server takes


class IndexService:
    def __init__(
        self,
        store: IndexStore,
        *,
        writable: bool = False,
        authorization: str | None = None,
        max_size: int = DEFAULT_MAX_INDEX_SIZE,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.store, self.writable, self.authorization = store, writable, authorization
        self.max_size, self.report = max_size, report

    def __call__(self, request: Request) -> Response:
        refused = refusal(request, self.authorization)
        if refused is not None:
            return refused
        name = index_name(request.path)
        if name is None:
            return Response.text(400, "invalid index name")
        signed = index_of_signature(name)
        if signed is not None:
            try:
                checked_index_name(signed)  # "..sig" would be the signature of ".."
            except StoreError:
                return Response.text(400, "invalid index name")
            return self._signature(name, signed, request)
        if request.method == "PUT":
            return self._put(name, request)
        if isinstance(self.store, LocalIndexStore):
            return self._get_local(name, request.method)
        data = self._get(name)
        if isinstance(data, Response):
            return data
        return Response(200, data if request.method == "GET" else b"", OCTETS)

    def _get(self, name: str) -> bytes | Response:
        """The index file as the remote store holds it (never re-encoded: a signature
        covers these bytes), checked to be an index."""
        try:
            return self.store.get_index_bytes(name)
        except FormatError as e:
            return self._not_an_index("GET", name, e)
        except StoreError as e:
            return failure(self.report, f"GET {name}: {e}")
        except DesyncError as e:
            if isinstance(e, IndexMissing):
                return Response.text(404, f"index {name} not found")
            return failure(self.report, f"GET {name}: {e}")

    def _signature(self, name: str, index: str, request: Request) -> Response:
        """``<index>.sig``: GET/HEAD what the store holds, PUT one armored SSHSIG.
        (``signing.sshsig`` loads cryptography: imported here, where a signature is
        served, not by every command that imports this module.)"""
        if request.method == "PUT":
            return self._put_signature(name, index, request)
        from desync_decl.signing.sshsig import decode_armored

        try:
            data = self.store.get_signature(index)
        except DesyncError as e:
            return failure(self.report, f"{request.method} {name}: {e}")
        if data is None:
            return Response.text(404, f"signature {name} not found")
        try:
            decode_armored(data)
        except DesyncError as e:  # served only as a PUT would have taken it
            self.report(f"{request.method} {name}: {e}")
            return Response.text(400, f"{name} is not a valid signature")
        return Response(200, data if request.method == "GET" else b"", OCTETS)

    def _put_signature(self, name: str, index: str, request: Request) -> Response:
        """A signature upload: refused unread past ``MAX_SIGNATURE_SIZE`` (413), and
        unless it is one armored SSHSIG (415); then written atomically beside the index."""
        from desync_decl.signing.sshsig import decode_armored  # see _signature

        if not self.writable:
            return Response.text(400, "writing to upstream index store is not enabled")
        if request.length is None:
            return Response.text(411, "a signature upload needs a Content-Length")
        if request.length > MAX_SIGNATURE_SIZE:
            return Response.text(
                413, f"a signature is at most {MAX_SIGNATURE_SIZE} bytes on this server"
            )
        data = bytearray()
        while len(data) < request.length:
            piece = request.body.read(request.length - len(data))
            if not piece:
                raise ConnectionError("the body ended before its announced length")
            data += piece
        try:
            decode_armored(bytes(data))
        except DesyncError as e:
            return Response.text(415, f"invalid signature: {e}")
        try:
            self.store.store_signature(index, bytes(data))
        except (DesyncError, OSError) as e:
            return failure(self.report, f"PUT {name}: {e}")
        return Response(200)

    def _get_local(self, name: str, method: str) -> Response:
        """The file itself, streamed (HEAD: checked whole here, nothing sent)."""
        assert isinstance(self.store, LocalIndexStore)
        try:
            body = IndexFile(self.store.path, name)
        except FileNotFoundError:
            return Response.text(404, f"index {name} not found")
        except FormatError as e:
            return self._not_an_index(method, name, e)
        except OSError as e:
            return failure(self.report, f"{method} {name}: {e}")
        if method == "GET":
            return Response(200, body, OCTETS)
        try:
            while body.next_piece():
                pass
        except FormatError as e:
            return self._not_an_index(method, name, e)
        except OSError as e:
            return failure(self.report, f"HEAD {name}: {e}")
        finally:
            body.close()
        return Response(200, b"", OCTETS)

    def _not_an_index(self, method: str, name: str, error: FormatError) -> Response:
        """400 for a name whose file is not an index; what is wrong with it is told
        to the server's report only (it may name where the store keeps its files)."""
        self.report(f"{method} {name}: {error}")
        return Response.text(400, f"{name} is not a valid index")

    def _put(self, name: str, request: Request) -> Response:
        if not self.writable:
            return Response.text(400, "writing to upstream index store is not enabled")
        if request.length is None:
            return Response.text(411, "an index upload needs a Content-Length")
        if request.length > self.max_size:
            return Response.text(413, f"an index is at most {self.max_size} bytes on this server")
        check = index_format.Checker(name)
        try:
            if isinstance(self.store, LocalIndexStore):
                self._receive_in_place(name, request, check)
            else:
                self._receive_and_store(name, request, check)
        except FormatError as e:
            return Response.text(415, f"invalid index: {e}")
        except ConnectionError:
            raise  # the body did not arrive: nobody to answer
        except (DesyncError, OSError) as e:
            return failure(self.report, f"PUT {name}: {e}")
        return Response(200)

    def _receive_in_place(self, name: str, request: Request, check: index_format.Checker) -> None:
        """Into the final file's temp file, renamed over ``name`` once whole and valid
        (AtomicFile keeps it 0600 until then, and makes it readable as it commits)."""
        assert isinstance(self.store, LocalIndexStore) and request.length is not None
        with AtomicFile(self.store.path / name) as target:
            upload.receive(request.body, request.length, target.fd, check.feed)
            check.finish()
            target.commit()

    def _receive_and_store(self, name: str, request: Request, check: index_format.Checker) -> None:
        assert request.length is not None
        with upload.spool(None) as spooled:
            upload.receive(request.body, request.length, spooled.fileno(), check.feed)
            check.finish()
            spooled.seek(0)
            data = spooled.read()
        self.store.store_index_bytes(name, data)  # as received: a signature covers these


def index_name(path: str) -> str | None:
    """The index a request path names, or None when the path names no valid index."""
    if not path.startswith("/") or "/" in path[1:]:
        return None
    try:
        name = unquote(path[1:], errors="strict")
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(name):
        return None
    try:
        return checked_index_name(name)
    except StoreError:
        return None


class IndexFile:
    """A local index file as an answer's body (``messages.Stream``): read a piece at a
    time as the client takes the answer, each piece checked (``index.Checker``), so
    that neither the file nor its decoded table is ever held whole. Opened without
    following a symbolic link, and only when it is a regular file (a FIFO planted in
    the directory would block the reader)."""

    PIECE = 256 * 1024

    def __init__(self, directory: os.PathLike[str], name: str) -> None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(os.path.join(directory, name), flags)
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                raise FormatError(f"{name} is not a regular file")
        except BaseException:
            os.close(fd)
            raise
        self.fd, self.name = fd, name
        self.length = self.left = info.st_size  # what is sent, even if the file grows
        self.check = index_format.Checker(name)
        try:  # before any answer: a file broken from its start (or small) is a 500
            self.first: bytes | None = self._read()
        except BaseException:
            self.close()
            raise

    def next_piece(self) -> bytes:
        if self.first is not None:
            piece, self.first = self.first, None
            return piece
        return self._read()

    def _read(self) -> bytes:
        if not self.left:
            return b""
        piece = os.read(self.fd, min(self.PIECE, self.left))
        if not piece:
            raise FormatError(f"{self.name}: the file shrank while it was sent")
        self.left -= len(piece)
        self.check.feed(piece)
        if not self.left:
            self.check.finish()  # before the last piece leaves: never a broken whole
        return piece

    def close(self) -> None:
        if self.fd >= 0:
            fd, self.fd = self.fd, -1
            os.close(fd)
