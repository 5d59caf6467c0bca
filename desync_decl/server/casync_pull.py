"""One casync-protocol session serving a chunk store (``pull - - - STORE``, ``cli.pull``).

This is what ``ssh host casync pull - - - /path`` runs on the far side of an
``ssh://`` store, so clients (casync, desync, our ``ssh://`` store) can point
``CASYNC_REMOTE_PATH`` at ``desync-decl``. Both sides send HELLO; we offer a
readable store and require the client to want chunks. Every id of a REQUEST
is answered in order (desync answered only the first) with CHUNK
(zstd-compressed, flag COMPRESSED) or MISSING; a chunk the store cannot decode
counts as missing. GOODBYE or the end of input ends the session (exit 0); a
client's ABORT, a protocol violation or a failing store ends it with exit 1,
after telling the client with an ABORT. Chunks are not verified here: the
client does that.
"""

from __future__ import annotations

from collections.abc import Callable

from desync_decl.errors import DesyncError
from desync_decl.formats.digest import ChunkID
from desync_decl.stores import casync_protocol as proto
from desync_decl.stores.base import ChunkInvalid, ChunkMissing, Store


class ClientAborted(DesyncError):
    """The client sent ABORT: nothing to tell it back."""


def serve(
    store: Store,
    read: Callable[[int], bytes],
    write: Callable[[bytes], object],
    flush: Callable[[], object],
) -> None:
    """One session: HELLO, then answer REQUESTs until GOODBYE or the end of input."""
    write(proto.hello(proto.READABLE_STORE))
    flush()
    try:
        _answer_requests(store, read, write, flush)
    except ClientAborted:
        raise
    except proto.ProtocolError as e:
        write(proto.abort(f"protocol error: {e}"))
        flush()
        raise DesyncError(f"protocol error: {e}") from None
    except DesyncError as e:  # the store failed
        write(proto.abort(str(e)))
        flush()
        raise


def _answer_requests(
    store: Store,
    read: Callable[[int], bytes],
    write: Callable[[bytes], object],
    flush: Callable[[], object],
) -> None:
    hello = proto.read_message(read)
    if hello is None:
        return  # the client left before saying anything
    if not proto.parse_hello(hello) & proto.PULL_CHUNKS:
        raise proto.ProtocolError("the client does not want to pull chunks")
    while True:
        message = proto.read_message(read)
        if message is None or message.type == proto.GOODBYE:
            return
        if message.type == proto.ABORT:
            _, reason = proto.parse_abort(message)
            raise ClientAborted(f"the client aborted: {reason or 'no reason given'}")
        if message.type != proto.REQUEST:
            raise proto.ProtocolError(f"unexpected {message.name} from the client")
        _, ids = proto.parse_request(message)
        for id in ids:
            write(_answer(store, ChunkID(id)))
        flush()


def _answer(store: Store, id: ChunkID) -> bytes:
    try:
        return proto.chunk(id, store.get_chunk(id).stored(), compressed=True)
    except (ChunkMissing, ChunkInvalid):
        return proto.missing(id)
