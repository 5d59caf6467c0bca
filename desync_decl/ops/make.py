"""``make``: chunk a file, store the chunks a store lacks, and build its index.

One pass over the file: the main thread runs the C chunker over the mapped
file (and, if asked, the whole-file digest; both drop the GIL), workers hash
each chunk and compress and write the ones the store lacks: forked processes for a
regular file and a local store (``_forked``), threads otherwise. The index is
identical to ``casync make``'s. A sparse file's holes are neither read nor hashed:
their chunks are all zeros, whose id is computed once per size (``ZeroChunks``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, NamedTuple

from desync_decl.chunker import Piece, ZeroRun, iter_pieces
from desync_decl.errors import DesyncError
from desync_decl.forked import Done, can_fork, forked_map
from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import DEFAULT_CHUNK_SIZES, ChunkSizes
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.formats.index import (
    Index,
    IndexTable,
    IndexWriter,
    TableSink,
    Written,
    blob_flags,
)
from desync_decl.fsutil import AtomicFile, open_directory, walk_error, write_atomic
from desync_decl.ops.source import open_source
from desync_decl.parallel import batched_map, cpu_workers
from desync_decl.progress import NO_PROGRESS, Progress
from desync_decl.stores.base import Flushable, WriteStore
from desync_decl.stores.index_store import signature_name
from desync_decl.stores.keys import UploadCheck, say_upload_warning
from desync_decl.stores.store_lock import confirm, keeper_of

if TYPE_CHECKING:  # the signing modules load only to sign (tests/test_cli_startup.py)
    from desync_decl.signing import SigningKey


@dataclass(frozen=True)
class Made:
    """What a make did, whichever way its index went (``make``, ``make_into``)."""

    blob_digest: bytes | None  # digest of the whole file (what `casync make` prints), if asked
    chunks_total: int
    chunks_stored: int  # chunks written to the store by this run
    bytes_stored: int  # their size as stored (compressed unless the store is not)


@dataclass(frozen=True)
class MakeResult(Made):
    index: Index


SEEN_LIMIT = 4096  # ids a ChunkStorer remembers: 400 KiB


class ChunkStorer:
    """Writes each chunk a store lacks exactly once, from any number of threads.

    Remembers the last ``SEEN_LIMIT`` chunks this run handled, so a chunk repeated
    nearby in the input (or by every hole: ``ZeroChunks``) costs one ``has_chunk`` at
    most (desync's chunk-storing helper). Bounded, unlike desync's: a set of every id
    grew make's memory by ~1.6 MiB per GiB of input; a repeat from further back costs
    one more ``has_chunk``, which finds it stored. A context
    manager: its block is a ``store_lock.writing`` scope, ended however the block
    ends (a failed make must not keep the store locked for the rest of an apply).
    Before the first ``has_chunk`` it takes the store's shared lock for
    ``command``, held until the block ends or, when the caller opened a scope
    around it (make and tar do, to publish the index under it), until that ends:
    a prune elsewhere cannot delete a chunk this run found present or uploaded.
    """

    def __init__(self, store: WriteStore, command: str) -> None:
        self.store, self.command = store, command
        self._locks = keeper_of(store)
        self._keys = UploadCheck(store)  # chunks there under another key: said before uploading
        self._seen: OrderedDict[ChunkID, None] = OrderedDict()  # the oldest goes first
        self._lock = threading.Lock()
        self.stored = 0
        self.bytes_stored = 0

    def __enter__(self) -> ChunkStorer:
        if self._locks is not None:
            self._locks.begin_writing()
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._locks is not None:
            self._locks.end_writing(failed=kind is not None)

    def add(self, chunk: Chunk) -> None:
        if self._first_time(chunk.id):
            self.hold_lock()
            self.count(self._put(chunk, self._keys.before_upload))

    def hold_lock(self) -> None:
        """Take the store's shared lock (once), or refresh it when that is due."""
        if self._locks is not None:
            self._locks.hold_shared(self.command)

    def add_in_worker(self, chunk: Chunk, note: Callable[[str], None]) -> int:
        """``add`` in a forked worker (``_forked``): the parent holds the lock and
        counts, so the bytes written (0 if none) are returned, and the upload warning
        goes to ``note``, for the parent to say once for all its workers."""
        if not self._first_time(chunk.id):
            return 0

        def before_upload() -> None:
            warning = self._keys.first_warning()
            if warning:
                note(warning)

        return self._put(chunk, before_upload)

    def count(self, written: int) -> None:
        """Count a chunk written (``written`` bytes; 0: none was)."""
        if written:
            with self._lock:
                self.stored += 1
                self.bytes_stored += written

    def count_from_worker(self, id: ChunkID, written: int) -> None:
        """``count`` a chunk a forked worker wrote, once per id among the recent ones:
        each worker remembers only its own chunks, so two of them may both find a
        chunk repeated nearby missing and both write it (the second link replaces
        the first with the same bytes)."""
        if written and self._first_time(id):
            self.count(written)

    def _first_time(self, id: ChunkID) -> bool:
        with self._lock:
            if id in self._seen:
                return False
            self._seen[id] = None
            if len(self._seen) > SEEN_LIMIT:
                self._seen.popitem(last=False)
            return True

    def _put(self, chunk: Chunk, before_upload: Callable[[], None]) -> int:
        """Write the chunk unless the store has it; the bytes written (0: none)."""
        if self.store.has_chunk(chunk.id):
            return 0
        before_upload()
        self.store.store_chunk(chunk)
        return chunk.held_size()

    def flush(self) -> None:
        """Make the chunks durable, and make sure the store's lock held while they were
        written and found (``store_lock.confirm``): an index may refer to them now."""
        if isinstance(self.store, Flushable):
            self.store.flush()
        confirm(self.store)


class _Finished:
    """How many bytes of the input the workers are done with, counted as their
    results come back in order: the chunker drops the mapped input's pages behind
    it (``iter_pieces``' ``finished``), so make's memory holds only what is in
    flight (256 MiB: 64 -> ~40 MiB peak RSS)."""

    def __init__(self) -> None:
        self._bytes = 0

    def add(self, size: int) -> None:
        self._bytes += size

    def bytes(self) -> int:
        return self._bytes


class ZeroChunks:
    """The chunk of ``size`` zero bytes, per size: hashed (and compressed, when stored)
    once per run however many holes hold it. Thread-safe."""

    def __init__(self, digest: Digest) -> None:
        self.digest = digest
        self._chunks: dict[int, Chunk] = {}
        self._lock = threading.Lock()

    def chunk(self, size: int) -> Chunk:
        """The same ``Chunk`` object every time: it keeps its compressed form once made."""
        with self._lock:
            found = self._chunks.get(size)
            if found is None:
                zeros = bytes(size)
                found = self._chunks[size] = Chunk(self.digest.hash(zeros), plain=zeros)
            return found


class MakeOptions(NamedTuple):
    """How a make chunks, hashes and stores: what ``make``, ``make_into`` and
    ``make_file`` share, whichever way the index goes."""

    sizes: ChunkSizes = DEFAULT_CHUNK_SIZES
    digest: Digest = Digest.SHA512_256
    store: WriteStore | None = None
    concurrency: int = 10
    blob_digest: bool = False  # also hash the whole file (a full extra SHA pass)
    progress: Progress = NO_PROGRESS


def make(
    source: str | os.PathLike,
    *,
    sizes: ChunkSizes = DEFAULT_CHUNK_SIZES,
    digest: Digest = Digest.SHA512_256,
    store: WriteStore | None = None,
    concurrency: int = 10,
    blob_digest: bool = False,
    progress: Progress = NO_PROGRESS,
) -> MakeResult:
    """Chunk ``source``; ``blob_digest`` also hashes the whole file (a full extra
    SHA pass, about 1 s/GiB of CPU, so only when asked). The index is held
    (``IndexTable``, 40 bytes per chunk); ``make_file`` writes it as it goes."""
    return make_held(source, MakeOptions(sizes, digest, store, concurrency, blob_digest, progress))


def make_held(source: str | os.PathLike, options: MakeOptions) -> MakeResult:
    """``make`` with its options in one record."""
    table = IndexTable()
    made = make_into(table, source, options)
    index = table.index(blob_flags(options.digest), options.sizes)
    return MakeResult(
        made.blob_digest, made.chunks_total, made.chunks_stored, made.bytes_stored, index
    )


def make_into(table: TableSink, source: str | os.PathLike, options: MakeOptions) -> Made:
    """``make``, each chunk given to ``table`` in file order as its worker returns it
    (an ``IndexWriter``: an index of any size in the same memory). The store is
    flushed before this returns: the index may be published then."""
    store = options.store
    storing = ChunkStorer(store, "make") if store is not None else contextlib.nullcontext()
    with storing as storer:
        return _make(table, source, options, storer)


def make_file(
    index_path: str,
    source: str | os.PathLike,
    options: MakeOptions,
    key: SigningKey | None = None,
) -> tuple[Made, Written]:
    """``make_into`` the index file ``index_path``: written as the chunks come to a temp
    file beside it, renamed over the name once whole and once the store is flushed
    (atomically, as ``Opener.write_index`` writes one; its directory opened walking
    from ``/``), removed if the make fails. With ``key``, signed as
    ``ops.signing.write_signed_index`` signs: the bytes written (hashed on the way),
    the signature made before the index gets its name and written beside it after."""

    def failed(e: OSError) -> DesyncError:
        return walk_error(index_path, e, "write")

    signed = None
    if key is not None:
        from desync_decl.signing.sshsig import SIGN_HASH

        signed = hashlib.new(SIGN_HASH)

    try:
        dir_fd = open_directory(os.path.dirname(os.path.abspath(index_path)))
    except OSError as e:
        raise failed(e) from None
    try:
        with _atomic(index_path, dir_fd, failed) as out:

            def write(data: bytes) -> None:
                try:
                    out.write(data)
                except OSError as e:
                    raise failed(e) from None
                if signed is not None:
                    signed.update(data)

            writer = IndexWriter(write, blob_flags(options.digest), options.sizes)
            made = make_into(writer, source, options)
            written = writer.finish()
            signature = None
            if key is not None and signed is not None:
                signature = key.sign_digest(signed.digest())  # a key that cannot: no index
            try:
                out.commit()
                if signature is not None:
                    write_atomic(signature_name(index_path), signature, dir_fd=dir_fd)
            except OSError as e:
                raise failed(e) from None
    finally:
        os.close(dir_fd)
    return made, written


def _atomic(path: str, dir_fd: int, failed: Callable[[OSError], DesyncError]) -> AtomicFile:
    try:
        return AtomicFile(path, dir_fd=dir_fd)
    except OSError as e:
        raise failed(e) from None


def _make(
    table: TableSink, source: str | os.PathLike, options: MakeOptions, storer: ChunkStorer | None
) -> Made:
    """``make_into`` with the storer's writing scope open (if there is a store)."""
    sizes, digest, _, concurrency, blob_digest, progress = options
    zeros = ZeroChunks(digest)

    def zero_run(piece: ZeroRun) -> tuple[int, ChunkID, int]:
        """A run of zero chunks as one ``(size, id, how many)``, done here on either path."""
        chunk = zeros.chunk(piece.size)
        if storer is not None:
            storer.add(chunk)  # the same chunk each time: one has_chunk, then remembered
        progress.advance(piece.size * piece.count)
        return piece.size, chunk.id, piece.count

    def process(piece: Piece) -> tuple[int, ChunkID, int]:
        """A piece's chunks as ``(size, id, how many)``: a zero run is one triple."""
        if isinstance(piece, ZeroRun):
            return zero_run(piece)
        data = piece[1]
        cid = digest.hash(data)
        if storer is not None:
            storer.add(Chunk(cid, plain=data))
        progress.advance(len(data))
        return len(data), cid, 1

    whole = digest.hasher() if blob_digest else None
    chunks = 0
    with open_source(Path(source)) as (reader, size):
        progress.start("make", size)
        finished = _Finished()
        pieces: Iterable[Piece] = iter_pieces(reader, sizes, finished=finished.bytes)
        if whole is not None:
            pieces = _hashed(pieces, whole)
        workers = cpu_workers(concurrency)
        results: Iterable[tuple[int, ChunkID, int]]
        if storer is not None and _forkable(reader, storer, workers):
            results = _forked(
                pieces, reader.fileno(), sizes, digest, storer, zero_run, progress, workers
            )
        else:
            results = batched_map(process, pieces, workers=workers, weight=_weight)
        for length, cid, count in results:
            if count == 1:
                table.add(length, cid)
            else:
                table.add_run(length, cid, count)
            chunks += count
            finished.add(length * count)
    progress.finish()
    if storer is not None:
        storer.flush()  # chunks durable before any index refers to them
    return Made(
        blob_digest=whole.digest() if whole is not None else None,
        chunks_total=chunks,
        chunks_stored=storer.stored if storer else 0,
        bytes_stored=storer.bytes_stored if storer else 0,
    )


_AT = struct.Struct("<QI")  # a chunk's offset in the input and its size
IN_FLIGHT = 2 << 20  # bytes of chunks sent to forked workers and not yet back, per worker:
# the mapped input's pages are dropped only behind what came back
_SIZES = struct.Struct("<II")  # after its id: the chunk's size, the bytes written to the store


def _forkable(reader: BinaryIO, storer: ChunkStorer, workers: int) -> bool:
    """Whether to hash and store on forked workers: a regular file (the workers read
    their chunks from it themselves) and a store that can be written from them."""
    return stat.S_ISREG(os.fstat(reader.fileno()).st_mode) and can_fork(storer.store, workers)


def _forked(
    pieces: Iterable[Piece],
    fd: int,
    sizes: ChunkSizes,
    digest: Digest,
    storer: ChunkStorer,
    zero_run: Callable[[ZeroRun], tuple[int, ChunkID, int]],
    progress: Progress,
    workers: int,
) -> Iterator[tuple[int, ChunkID, int]]:
    """The pieces' ``(size, id, how many)`` in order, each chunk read from ``fd``,
    hashed and stored (if missing) by a forked worker: only the chunker and the index
    stay here. On threads, the GIL and the kernel's locks on one process's file table
    kept two workers to 1.3-1.4 cores (256 MiB to a local store on 2 vCPUs: 1.24-1.47 s
    with one worker, 1.14-1.22 s with two). A worker reads the chunk from the file
    again (the page cache has it) and stores the bytes it hashed, so a file changed
    during the make cannot put a chunk under another chunk's id. Zero runs are done
    here (``zero_run``), as on threads."""
    storer.hold_lock()  # taken before the workers exist; refreshed here while they run
    warned: list[str] = []

    def work(payload: bytes, note: Callable[[str], None]) -> bytes:
        offset, size = _AT.unpack(payload)
        data = os.pread(fd, size, offset)
        if len(data) != size:  # the file was cut short while being made
            raise DesyncError(f"input shrank during make: bytes {offset}..{offset + size} gone")
        cid = digest.hash(data)
        return cid + _SIZES.pack(size, storer.add_in_worker(Chunk(cid, plain=data), note))

    def note(warning: str) -> None:
        if not warned:  # each worker may find the same: said once
            warned.append(warning)
            say_upload_warning(warning)

    def items() -> Iterator[bytes | Done]:
        for piece in pieces:
            if isinstance(piece, ZeroRun):
                yield Done(zero_run(piece))
            else:
                yield _AT.pack(piece[0], len(piece[1]))

    in_flight = IN_FLIGHT * workers // sizes.avg  # of pieces: ~2 MiB per worker, as on threads
    for result in forked_map(work, items(), _AT.size, workers, note, in_flight):
        if isinstance(result, tuple):  # a zero run's, done here
            yield result
            continue
        assert isinstance(result, bytes)
        size, written = _SIZES.unpack_from(result, len(result) - _SIZES.size)
        cid = ChunkID(result[: -_SIZES.size])
        storer.count_from_worker(cid, written)
        storer.hold_lock()
        progress.advance(size)
        yield size, cid, 1


def _weight(piece: Piece) -> int:
    """Work a piece makes for a worker: a zero run costs one chunk's hash at most."""
    return piece.size if isinstance(piece, ZeroRun) else len(piece[1])


def _hashed(pieces: Iterable[Piece], whole: hashlib._Hash) -> Iterator[Piece]:
    """Pass pieces through, feeding them in order into the whole-file digest (a
    hole too: the digest is of every byte, so ``--blob-digest`` hashes its zeros)."""
    zero_block = memoryview(b"")
    for piece in pieces:
        if isinstance(piece, ZeroRun):
            if not zero_block:
                zero_block = memoryview(bytes(1 << 20))
            left = piece.size * piece.count
            while left:
                n = min(left, len(zero_block))
                whole.update(zero_block[:n])
                left -= n
        else:
            whole.update(piece[1])
        yield piece
