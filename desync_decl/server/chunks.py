"""What ``chunk-server`` answers: desync's HTTP chunk protocol over any store.

Paths are exactly ``/<first 4 hex>/<64 hex id><ext>`` with the server's wire
extension (``.cacnk``, nothing with ``-u``, plus the cipher's with
encryption); anything else is 400 before any store is touched, so no request
can name a file outside the store. GET converts the upstream's form to the
wire form (never recompressing), HEAD asks ``has_chunk``, PUT (writable
servers only) decodes and hashes every upload and stores it only when it is
the chunk its path names. ``skip_verify_write`` (``--skip-verify-write``) stores
uploads as they come instead, decrypted when the wire is encrypted but neither
decompressed nor hashed, which saves the CPU of verifying. desync skips by
default (its flag defaults to true); here it is asked for: an unverified upload
can put any bytes under any id, for every client of the store to read.
A store failure is 500 with the details on the server's side only.

An upload is received into a spool file (``upload``) however slowly it comes;
only then is it read back to be verified and stored, by at most
``VERIFYING_AT_ONCE`` uploads at a time. So a chunk upload is in memory (its
body and its plain bytes, bounded by ``upload_limit`` and
``--max-chunk-size``) only while the CPU works on it, never while a client
trickles it, and no number of concurrent uploads holds more than that many.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable

from desync_decl.formats.chunk import MAX_PLAIN_SIZE, Chunk
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.server import upload
from desync_decl.server.messages import OCTETS, Request, Response, failure, refusal
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, Store, StoreError, WriteStore
from desync_decl.stores.converters import COMPRESSED, StorageFormat
from desync_decl.stores.local import LocalStore
from desync_decl.stores.single_flight import SingleFlight
from desync_decl.stores.swap import StoreStack

_PATH = re.compile(r"^/([0-9a-f]{4})/([0-9a-f]{64})(.*)$", re.DOTALL)
# Decompressing and hashing is CPU work: more at once than CPUs is not faster, only larger.
VERIFYING_AT_ONCE = min(4, os.cpu_count() or 1)


def upload_limit(max_chunk_size: int) -> int:
    """The largest body a chunk of ``max_chunk_size`` plain bytes can arrive as.

    zstd never grows data by more than 1/256 plus a few hundred bytes of
    framing; encryption adds a nonce and a tag. 1/64 + 4 KiB covers both."""
    return max_chunk_size + max_chunk_size // 64 + 4096


class ChunkService:
    def __init__(
        self,
        stack: StoreStack[Store],
        *,
        wire: StorageFormat = COMPRESSED,
        digest: Digest = Digest.SHA512_256,
        writable: bool = False,
        authorization: str | None = None,
        max_chunk_size: int = MAX_PLAIN_SIZE,
        skip_verify_write: bool = False,
        report: Callable[[str], None] = lambda message: None,
    ) -> None:
        self.stack, self.wire, self.digest = stack, wire, digest
        self.writable, self.authorization = writable, authorization
        self.max_chunk_size, self.skip_verify_write = max_chunk_size, skip_verify_write
        self.report = report
        self._verifying = threading.BoundedSemaphore(VERIFYING_AT_ONCE)

    def __call__(self, request: Request) -> Response:
        refused = refusal(request, self.authorization)
        if refused is not None:
            return refused
        id = self._chunk_id(request.path)
        if isinstance(id, Response):
            return id
        if request.method == "GET":
            return self._get(id)
        if request.method == "HEAD":
            return self._head(id)
        return self._put(id, request)

    def runs_inline(self, request: Request) -> bool:
        """Whether a request may be answered on the server's event loop: a read from a
        stack of local stores only (``fork_safe``: plain files), where a page-cache read
        costs less than handing the request to a thread."""
        return request.method in ("GET", "HEAD") and self.stack.current.fork_safe

    def _chunk_id(self, path: str) -> ChunkID | Response:
        m = _PATH.match(path)
        if m is None:
            return Response.text(400, "invalid chunk path: expected /xxxx/<64 hex digits><ext>")
        prefix, hex_id, extension = m.groups()
        if not hex_id.startswith(prefix):
            return Response.text(400, f"chunk {hex_id} does not belong in directory {prefix}")
        if extension != self.wire.extension:
            return Response.text(
                400, "invalid chunk extension, verify compression and encryption settings"
            )
        return ChunkID(bytes.fromhex(hex_id))

    def _get(self, id: ChunkID) -> Response:
        try:
            with self.stack.use() as store:
                chunk = store.get_chunk(id)
            data = self.wire.encode(chunk)
        except ChunkMissing:
            return Response.text(404, f"chunk {id.hex()} not found")
        except (ChunkInvalid, StoreError) as e:
            return failure(self.report, f"GET {id.hex()}: {e}")
        except DecodeError as e:  # the upstream's bytes do not convert to the wire form
            return failure(self.report, f"GET {id.hex()}: cannot convert the chunk: {e}")
        return Response(200, data, OCTETS)

    def _head(self, id: ChunkID) -> Response:
        try:
            with self.stack.use() as store:
                present = store.has_chunk(id)
        except StoreError as e:
            return failure(self.report, f"HEAD {id.hex()}: {e}")
        return Response(200) if present else Response(404)

    def _put(self, id: ChunkID, request: Request) -> Response:
        if not self.writable:
            return Response.text(400, "writing to upstream chunk store is not enabled")
        if request.length is None:
            return Response.text(411, "a chunk upload needs a Content-Length")
        limit = upload_limit(self.max_chunk_size)
        if request.length > limit:
            return Response.text(413, f"a chunk upload is at most {limit} bytes on this server")
        with self.stack.use() as store:
            try:
                with upload.spool(_spool_directory(store)) as spooled:
                    upload.receive(request.body, request.length, spooled.fileno())
                    with self._verifying:  # the only time an upload is in memory
                        spooled.seek(0)
                        return self._store(store, id, spooled.read())
            except ConnectionError:
                raise  # the body did not arrive: nobody to answer
            except OSError as e:
                return failure(self.report, f"PUT {id.hex()}: cannot spool the upload: {e}")

    def _store(self, store: Store, id: ChunkID, data: bytes) -> Response:
        """Store ``data`` when it is the chunk ``id`` within the size allowed (unless
        ``skip_verify_write``: then as it is, once decrypted)."""
        try:
            chunk = self.wire.decode(id, data)
            if not self.skip_verify_write:
                self._verify(chunk)
        except DecodeError as e:
            return Response.text(400, f"invalid chunk {id.hex()}: {e}")
        except _Refused as e:
            return e.response
        if not isinstance(store, WriteStore):  # a service made writable over a read-only store
            return failure(self.report, f"PUT {id.hex()}: {store} cannot be written to")
        try:
            store.store_chunk(chunk)
        except StoreError as e:
            return failure(self.report, f"PUT {id.hex()}: {e}")
        return Response(200)

    def _verify(self, chunk: Chunk) -> None:
        """Refuse (``_Refused``) a chunk larger than allowed or whose data is not its id."""
        plain = chunk.plain(self.max_chunk_size)
        if len(plain) > self.max_chunk_size:
            raise _Refused(413, f"a chunk is at most {self.max_chunk_size} bytes here")
        actual = self.digest.hash(plain)
        if actual != chunk.id:
            raise _Refused(
                400, f"invalid chunk {chunk.id.hex()}: its data hashes to {actual.hex()}"
            )


class _Refused(Exception):
    """An upload the server will not store, with the answer that says why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.response = Response.text(status, message)


def _spool_directory(store: Store) -> str | None:
    """A local store's own directory (an upload then waits on the store's disk), else
    None (the system's temp directory)."""
    inner = store.inner if isinstance(store, SingleFlight) else store
    if isinstance(inner, LocalStore) and inner.path.is_dir():
        return str(inner.path)
    return None
