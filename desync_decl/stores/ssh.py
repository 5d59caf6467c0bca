"""A read-only chunk store that speaks casync's protocol over ssh (``ssh://[user@]host[:port]/path``).

Each session is one ``$CASYNC_SSH_PATH`` process (default ``ssh``) running
``$CASYNC_REMOTE_PATH pull - - - <path>`` (default ``casync``; ``desync`` or
``desync-decl`` serve the same) on the far side. The local command is an
argument list, never a shell line; the remote command is one string that the
remote shell parses, so the path in it is quoted and a host that ssh could take
for an option (``-oProxyCommand=...``, desync #351) is refused. ``-p`` carries
a URL port (desync passes ``host:port`` to ssh, which fails).

A pool keeps up to ``n`` sessions. Per chunk: REQUEST (one id) -> CHUNK, whose
data is checked against the id (always: the remote side does not verify), or
MISSING -> ``ChunkMissing``; an answer announcing more than a chunk of the size
being read can take is a protocol error, refused before its body is read.
casync's ``pull`` answers an id only once per
session (its request queue remembers ids), so an id asked for again goes to a
fresh session. ABORT, a protocol violation or a dead session is a
``StoreError``; a session that dies or stalls mid-way is retried on a new one.
The store cannot write, prune or hold indexes (desync's capability table).
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import select
import shlex
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Generic, TypeVar
from urllib.parse import unquote, urlsplit

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunkfile import stored_bound
from desync_decl.formats.digest import ChunkID, Digest
from desync_decl.stores import casync_protocol as proto
from desync_decl.stores.base import ChunkMissing, StoreError, chunk_size_limit, verify_chunk
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.retry import Retrying
from desync_decl.stores.url import mask_credentials

if TYPE_CHECKING:
    from desync_decl.stores.location import Opener

S = TypeVar("S")
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.%a-zA-Z]+\]|[A-Za-z0-9_.%-]+)$")
_USER = re.compile(r"^[A-Za-z0-9_.@+\\-]+$")
_CLOSE_WAIT = 5.0  # seconds a session gets to exit after GOODBYE
# casync's pull never answers an id twice in one session (its queue remembers every
# id it was asked for), so a session asks for each id once; after this many it is
# replaced, which bounds what both sides remember (casync: two symlinks per id).
_SESSION_REQUESTS = 16384


@dataclass(frozen=True)
class SshTarget:
    """Where an ``ssh://`` or ``sftp://`` location points."""

    user: str | None
    host: str
    port: int | None
    path: str

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host


def parse_location(location: str) -> SshTarget:
    """``scheme://[user@]host[:port]/path``; refuses what ssh would read as an option."""
    url = urlsplit(location)
    user, _, hostport = url.netloc.rpartition("@")
    if hostport.startswith("["):
        host, _, rest = hostport[1:].partition("]")
        host, port_text = f"[{host}]", rest.removeprefix(":")
    else:
        host, _, port_text = hostport.partition(":")
    login = unquote(user) or None
    if not host or host.startswith("-") or not _HOST.match(host):
        raise StoreError(f"{location}: invalid host {host!r}")
    if login is not None and ":" in login:  # never quoted: the rest is a password
        raise StoreError(f"{location}: no password in the URL (ssh uses keys or the agent)")
    if login is not None and (login.startswith("-") or not _USER.match(login)):
        raise StoreError(f"{location}: invalid user name {login!r}")
    if port_text and not (port_text.isdigit() and 0 < int(port_text) < 65536):
        raise StoreError(f"{location}: invalid port {port_text!r}")
    path = unquote(url.path)
    if not path or path == "/" or "\0" in path or url.query or url.fragment:
        raise StoreError(f"{location}: expected {url.scheme}://[user@]host[:port]/path")
    return SshTarget(login, host.strip("[]"), int(port_text) if port_text else None, path)


class SessionPool(Generic[S]):
    """Up to ``size`` sessions made on demand; a caller checks one out per call.

    An idle session whose connection died while it waited (``alive`` says so) is
    ended, not handed out: a dropped connection can leave several sessions idle in the
    pool, and a call retried on each of them in turn used all its attempts on dead
    sessions (the SFTP fault runs found it)."""

    def __init__(
        self,
        make: Callable[[], S],
        size: int,
        end: Callable[[S], None],
        alive: Callable[[S], bool] = lambda session: True,
    ) -> None:
        self._make, self._end, self._alive, self._size = make, end, alive, max(1, size)
        self._idle: list[S] = []
        self._count = 0
        self._closed = False
        self._cond = threading.Condition()

    def acquire(self) -> S:
        while (session := self._checked_out()) is not None:
            if self._alive(session):
                return session
            self.discard(session)
        try:
            return self._make()
        except BaseException:
            self._forget()
            raise

    def _checked_out(self) -> S | None:
        """An idle session, or None when the caller is to make one (its place taken)."""
        with self._cond:
            while not self._idle and self._count >= self._size:
                self._cond.wait()
            if self._idle:
                return self._idle.pop()
            self._count += 1
            return None

    def release(self, session: S) -> None:
        with self._cond:
            if not self._closed:
                self._idle.append(session)
                self._cond.notify()
                return
        self.discard(session)

    def discard(self, session: S, end: Callable[[S], None] | None = None) -> None:
        """End a session (broken, or done with: ``end`` says how); its place is free."""
        try:
            (end or self._end)(session)
        finally:
            self._forget()

    def close(self) -> list[S]:
        """Hand out no more sessions; returns the idle ones for the caller to end
        (one still checked out is ended when it comes back)."""
        with self._cond:
            self._closed = True
            idle, self._idle = self._idle, []
            self._count -= len(idle)
        return idle

    def _forget(self) -> None:
        with self._cond:
            self._count -= 1
            self._cond.notify()


class _SessionDied(Exception):
    """The ssh process ended or stopped answering: a new session may do better."""


class _Session:
    """One ``ssh ... pull`` process, after the HELLO exchange."""

    def __init__(self, argv: list[str], location: str, timeout: float | None) -> None:
        self.location, self.timeout = location, timeout
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in _close_pipes
        try:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr
            )
        except OSError as e:
            self._stderr.close()
            raise StoreError(f"{location}: cannot run {argv[0]}: {e.strerror or e}") from None
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None  # both asked for as pipes
        self._in, self._stdout = stdin, stdout
        self._out = stdout.fileno()
        self._buffer = bytearray()
        self._ended = False  # the session's output reached its end
        self.asked: set[bytes] = set()  # ids requested on this session
        try:
            self._send(proto.hello(proto.PULL_CHUNKS))
            reply = self.receive()
            if reply.type == proto.ABORT:
                raise StoreError(f"{location}: the remote side refused: {_abort_reason(reply)}")
            flags = proto.parse_hello(reply)
        except (_SessionDied, proto.ProtocolError) as e:
            why = self.describe(e)
            self.kill()
            raise StoreError(f"{location}: no casync session: {why}") from None
        except StoreError:
            self.kill()
            raise
        if not flags & proto.READABLE_STORE:
            self.kill()
            raise StoreError(f"{location}: the remote side serves no chunk store")

    def ask(self, message: bytes, max_size: int) -> proto.Message:
        self._send(message)
        return self.receive(max_size)

    def receive(self, max_size: int = proto.MAX_SIZE) -> proto.Message:
        message = proto.read_message(self._read, max_size)
        if message is None:
            raise _SessionDied("the session ended")
        return message

    def goodbye(self) -> None:
        """Say GOODBYE and let the remote side exit (``end`` waits for it)."""
        try:
            self._send(proto.goodbye())
            self._in.close()
        except (_SessionDied, OSError):
            pass

    def retire(self) -> None:
        self.goodbye()
        self.end()

    def end(self) -> None:
        try:
            self.process.wait(_CLOSE_WAIT)
        except subprocess.TimeoutExpired:
            self.kill()
        self._close_pipes()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._close_pipes()

    def describe(self, error: BaseException) -> str:
        """The error plus what ssh or the remote command said on stderr."""
        if self._ended:  # let it finish writing stderr and exit
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(1)
        try:
            self._stderr.seek(0)
            said = self._stderr.read()[-2000:].decode("utf-8", "replace").strip()
        except (OSError, ValueError):
            said = ""
        said = "; ".join(line.strip() for line in said.splitlines()[-3:] if line.strip())
        return f"{error}" + (f" ({said})" if said else "")

    def _send(self, data: bytes) -> None:
        try:
            self._in.write(data)
            self._in.flush()
        except (BrokenPipeError, ValueError, OSError):
            raise _SessionDied("the session ended") from None

    def _read(self, n: int) -> bytes:
        if not self._buffer:
            if self.timeout is not None:
                ready, _, _ = select.select([self._out], [], [], self.timeout)
                if not ready:
                    raise _SessionDied(f"no answer within {self.timeout:g} s")
            try:
                block = os.read(self._out, 1 << 20)
            except OSError as e:
                raise _SessionDied(f"reading from the session: {e.strerror}") from None
            if not block:
                self._ended = True
                return b""
            self._buffer += block
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out

    def _close_pipes(self) -> None:
        for pipe in (self._in, self._stdout, self._stderr):
            with contextlib.suppress(OSError):
                pipe.close()


class SshStore:
    """Chunks from a casync ``pull`` server over ssh; read-only."""

    fork_safe = False  # its ssh sessions belong to one process

    def __init__(
        self,
        location: str,
        *,
        digest: Digest = Digest.SHA512_256,
        options: StoreOptions | None = None,
    ) -> None:
        self.location = mask_credentials(location)
        self.target = parse_location(location)
        self.digest = digest
        self.options = options or StoreOptions()
        make = functools.partial(_Session, self.command(), self.location, self.options.timeout)
        self._pool: SessionPool[_Session] = SessionPool(make, self.options.n, _Session.kill)
        # a store dropped without close() (CLI verbs do) still says GOODBYE when collected
        self._finalizer = weakref.finalize(self, _say_goodbye, self._pool)

    def __str__(self) -> str:
        return self.location

    def command(self) -> list[str]:
        """The local argv of a session (no shell; the last item is the remote command),
        from the environment as it is when the store is opened."""
        ssh = os.environ.get("CASYNC_SSH_PATH") or "ssh"
        remote = os.environ.get("CASYNC_REMOTE_PATH") or "casync"
        port = ["-p", str(self.target.port)] if self.target.port else []
        line = f"{remote} pull - - - {shlex.quote(self.target.path)}"
        return [ssh, *port, "--", self.target.destination, line]

    def get_chunk(self, id: ChunkID) -> Chunk:
        reply = self._ask(id)
        if reply.type == proto.MISSING:
            raise ChunkMissing(id, self.location)
        compressed, _, data = proto.parse_chunk(reply)
        chunk = Chunk(id, stored=data) if compressed else Chunk(id, plain=data)
        return verify_chunk(chunk, self.digest, self)

    def has_chunk(self, id: ChunkID) -> bool:
        """The protocol has no "has": the chunk travels, but is not decoded."""
        return self._ask(id).type == proto.CHUNK

    def close(self) -> None:
        """GOODBYE on every idle session, then wait for them all to exit."""
        self._finalizer()

    def _ask(self, id: ChunkID) -> proto.Message:
        session = self._pool.acquire()
        while id in session.asked or len(session.asked) >= _SESSION_REQUESTS:
            self._pool.discard(session, _Session.retire)
            session = self._pool.acquire()
        session.asked.add(id)
        try:
            max_size = proto.chunk_message_size(stored_bound(chunk_size_limit()))
            reply = session.ask(proto.request([id]), max_size)
            if reply.type == proto.ABORT:
                raise StoreError(
                    f"{self.location}: the remote side aborted: {_abort_reason(reply)}"
                )
            if reply.type == proto.MISSING:
                answered = proto.parse_missing(reply)
            else:
                answered = proto.parse_chunk(reply)[1]
            if answered != id:
                raise proto.ProtocolError(f"asked for chunk {id.hex()}, got {answered.hex()}")
        except _SessionDied as e:
            why = session.describe(e)
            self._pool.discard(session)
            raise StoreError(f"{self.location}: {why}", transient=True) from None
        except proto.ProtocolError as e:
            self._pool.discard(session)
            raise StoreError(f"{self.location}: protocol error: {e}") from None
        except BaseException:
            self._pool.discard(session)
            raise
        self._pool.release(session)
        return reply


def _say_goodbye(pool: SessionPool[_Session]) -> None:
    sessions = pool.close()
    for session in sessions:
        session.goodbye()
    for session in sessions:
        session.end()


def _abort_reason(message: proto.Message) -> str:
    errno, reason = proto.parse_abort(message)
    if reason:
        return reason
    return os.strerror(errno) if errno else "no reason given"


def open_chunk_store(location: str, options: StoreOptions, opener: Opener) -> Retrying:
    """The store at ``location``, each read retried (``retry.Retrying``)."""
    if options.encryption:
        raise StoreError(f"{location}: ssh:// stores cannot be encrypted")
    return Retrying(SshStore(location, digest=opener.digest, options=options), options)
