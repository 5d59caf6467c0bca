"""The ssh:// store (casync's protocol) and the ``pull`` verb, on a real sshd.

Interop both ways: our client against the real ``casync pull`` on the far
side, our client against our own ``pull``, and ``casync extract`` against our
``pull``; each must give the same bytes as the source. Then what goes wrong:
a missing chunk is missing, an ABORT or a dead server is a store error, a
hostile host or path cannot run anything. ``pull`` itself is also driven
directly through stdin/stdout, message by message.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.stores import casync_protocol as proto
from desync_decl.stores.base import ChunkMissing, StoreError, WriteStore
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.ssh import SessionPool, SshStore, open_chunk_store, parse_location
from tests import servers_ssh, store_contract
from tests.servers_ssh import SshServer
from tests.store_contract import ID_NEVER_STORED, random_chunks

ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd  # the fixtures
opened = store_contract.opened  # the fixture
REMOTES = ["casync", "desync-decl"]  # what runs on the far side


@pytest.fixture(scope="module")
def casync_made(tmp_path_factory, casync):
    """A blob, its index and a store, all made by the real ``casync make``."""
    root = tmp_path_factory.mktemp("casync-made")
    blob = root / "blob.bin"
    again = os.urandom(500_000)  # twice: the index names some chunks twice
    blob.write_bytes(again + bytes(300_000) + again + os.urandom(200_000))
    store, index = root / "store", root / "blob.caibx"
    subprocess.run(
        [casync, "make", f"--store={store}", str(index), str(blob)],
        check=True,
        capture_output=True,
    )
    return blob, index, store


@pytest.fixture
def remote(request, sshd: SshServer, monkeypatch) -> str:
    """``CASYNC_REMOTE_PATH`` for the far side: casync (the default) or our pull."""
    if request.param == "casync":
        monkeypatch.delenv("CASYNC_REMOTE_PATH", raising=False)
    else:
        monkeypatch.setenv("CASYNC_REMOTE_PATH", str(sshd.remote_desync))
    return request.param


def ssh_store(location: str, opened: list, **options) -> SshStore:
    store = open_chunk_store(location, StoreOptions(**options), Opener())
    opened.append(store)
    return store


# --- interop ------------------------------------------------------------------------


@pytest.mark.parametrize("remote", REMOTES, indirect=True)
def test_extract_through_ssh_gives_the_source_bytes(remote, sshd, casync_made, cli, tmp_path):
    blob, index, store = casync_made
    out = tmp_path / "out.bin"
    result = cli("extract", "-n", "3", "-s", sshd.url("ssh", store), index, out)
    assert result.code == 0, result.err
    assert out.read_bytes() == blob.read_bytes()


def test_casync_extracts_through_our_pull(sshd, casync, casync_made, tmp_path):
    """casync batches many ids into one REQUEST: every one must be answered."""
    blob, index, store = casync_made
    out = tmp_path / "out.bin"
    env = dict(os.environ, CASYNC_REMOTE_PATH=str(sshd.remote_desync))
    result = subprocess.run(
        [casync, "extract", f"--store={sshd.user}@127.0.0.1:{store}", str(index), str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == blob.read_bytes()


# --- what goes wrong ----------------------------------------------------------------


@pytest.mark.parametrize("remote", REMOTES, indirect=True)
def test_a_chunk_the_far_side_lacks_is_missing(remote, sshd, casync_made, opened):
    _, _, store = casync_made
    client = ssh_store(sshd.url("ssh", store), opened, n=1)
    with pytest.raises(ChunkMissing):
        client.get_chunk(ID_NEVER_STORED)
    assert client.has_chunk(ID_NEVER_STORED) is False
    present = next(store.rglob("*.cacnk")).name.removesuffix(".cacnk")
    assert client.has_chunk(bytes.fromhex(present))  # the same session goes on


def test_a_server_that_dies_is_a_store_error_not_missing(sshd, casync_made, opened):
    _, _, store = casync_made
    client = ssh_store(sshd.url("ssh", store), opened, n=1, error_retry=2)
    client.has_chunk(ID_NEVER_STORED)  # a session is up
    sshd.kill()
    with pytest.raises(StoreError):
        client.get_chunk(ID_NEVER_STORED)


def test_the_far_side_refusing_is_a_store_error_with_its_reason(
    sshd, tmp_path, opened, monkeypatch
):
    monkeypatch.setenv("CASYNC_REMOTE_PATH", str(sshd.remote_desync))
    client = ssh_store(sshd.url("ssh", tmp_path / "no-such-store"), opened)
    with pytest.raises(StoreError, match=r"refused: .*no-such-store"):
        client.get_chunk(ID_NEVER_STORED)


def test_a_remote_command_that_does_not_exist_is_a_store_error(sshd, tmp_path, opened, monkeypatch):
    monkeypatch.setenv("CASYNC_REMOTE_PATH", "/nonexistent/casync")
    client = ssh_store(sshd.url("ssh", tmp_path), opened)
    with pytest.raises(StoreError, match=r"no casync session.*No such file"):
        client.has_chunk(ID_NEVER_STORED)


def test_the_store_is_read_only_and_cannot_be_encrypted(sshd, tmp_path, opened):
    client = ssh_store(sshd.url("ssh", tmp_path), opened)
    assert not isinstance(client, WriteStore) and not hasattr(client, "prune")
    assert str(client) == sshd.url("ssh", tmp_path)
    with pytest.raises(StoreError, match="cannot be encrypted"):
        open_chunk_store(
            sshd.url("ssh", tmp_path), StoreOptions(encryption=True, encryption_key="1" * 64), None
        )


# --- no injection (desync #351) -----------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "ssh://-oProxyCommand=touch${IFS}pwned/store",
        "ssh://-oProxyCommand=x@host/store",
        "ssh://host name/store",
        "ssh://host/",
    ],
)
def test_a_host_or_user_ssh_would_read_as_an_option_is_refused(location):
    with pytest.raises(StoreError):
        parse_location(location)


def test_the_path_reaches_the_far_side_as_one_quoted_word(monkeypatch):
    monkeypatch.setenv("CASYNC_SSH_PATH", "/usr/bin/ssh")
    monkeypatch.delenv("CASYNC_REMOTE_PATH", raising=False)
    store = SshStore("ssh://alice@example.org:2222/srv/a b;touch x")
    assert store.command() == [
        "/usr/bin/ssh",
        "-p",
        "2222",
        "--",
        "alice@example.org",
        "casync pull - - - '/srv/a b;touch x'",
    ]


def test_a_hostile_path_runs_nothing_on_the_far_side(sshd, tmp_path, opened, monkeypatch):
    monkeypatch.setenv("CASYNC_REMOTE_PATH", str(sshd.remote_desync))
    marker = tmp_path / "pwned"
    hostile = f"{tmp_path}/x'; touch {marker}; echo '$(touch {marker})`touch {marker}`"
    client = ssh_store(sshd.url("ssh", hostile), opened)
    with pytest.raises(StoreError, match="refused"):
        client.get_chunk(ID_NEVER_STORED)
    assert not marker.exists()


# --- pull, message by message -------------------------------------------------------


@pytest.fixture
def served(tmp_path) -> tuple[Path, list[Chunk]]:
    """A local store with two chunks, one kept uncompressed."""
    root = tmp_path / "served"
    chunks = random_chunks(2, seed=30)
    LocalStore(root, create=True).store_chunk(chunks[0])
    LocalStore(root, format=StoreOptions(uncompressed=True).storage_format()).store_chunk(chunks[1])
    return root, chunks


def replies(data: bytes) -> list[proto.Message]:
    stream = memoryview(data)
    pos = 0

    def read(n: int) -> bytes:
        nonlocal pos
        pos += n
        return bytes(stream[pos - n : pos])

    out = []
    while (m := proto.read_message(read)) is not None:
        out.append(m)
    return out


def test_pull_answers_every_id_of_a_request_in_order(cli, served):
    root, (a, b) = served
    ids = [a.id, ID_NEVER_STORED, b.id]
    stdin = proto.hello(proto.PULL_CHUNKS) + proto.request(ids) + proto.goodbye()
    result = cli("pull", "-", "-", "-", root, stdin=stdin)
    assert result.code == 0, result.err
    hello, *answers = replies(result.data)
    assert proto.parse_hello(hello) == proto.READABLE_STORE
    assert [m.name for m in answers] == ["CHUNK", "MISSING", "CHUNK"]
    for chunk, m in ((a, answers[0]), (b, answers[2])):
        compressed, id, data = proto.parse_chunk(m)
        assert compressed and id == chunk.id  # the uncompressed file travels compressed
        assert Chunk(id, stored=data).plain() == bytes(chunk.plain())
    assert proto.parse_missing(answers[1]) == ID_NEVER_STORED


def test_pull_ends_cleanly_when_the_input_ends(cli, served):
    result = cli("pull", "-", "-", "-", served[0], stdin=proto.hello(proto.PULL_CHUNKS))
    assert result.code == 0
    assert [m.name for m in replies(result.data)] == ["HELLO"]


def test_pull_aborts_a_client_that_does_not_want_chunks(cli, served):
    result = cli("pull", "-", "-", "-", served[0], stdin=proto.hello(proto.PULL_INDEX))
    assert result.code == 1
    assert "does not want to pull chunks" in result.err
    assert [m.name for m in replies(result.data)] == ["HELLO", "ABORT"]


def test_pull_exits_1_when_the_client_aborts(cli, served):
    stdin = proto.hello(proto.PULL_CHUNKS) + proto.abort("user gave up", 4)
    result = cli("pull", "-", "-", "-", served[0], stdin=stdin)
    assert result.code == 1
    assert "the client aborted: user gave up" in result.err
    assert [m.name for m in replies(result.data)] == ["HELLO"]


def test_pull_aborts_on_a_broken_request(cli, served):
    bad = proto.encode(proto.REQUEST, proto.U64.pack(0) + b"short id")
    result = cli("pull", "-", "-", "-", served[0], stdin=proto.hello(proto.PULL_CHUNKS) + bad)
    assert result.code == 1 and "protocol error" in result.err
    abort = replies(result.data)[-1]
    assert abort.name == "ABORT" and abort.body.endswith(b"\0")  # casync wants the NUL


def test_pull_of_a_missing_store_sends_abort_and_fails(cli, tmp_path):
    result = cli("pull", "-", "-", "-", tmp_path / "nope", stdin=proto.hello(proto.PULL_CHUNKS))
    assert result.code == 1
    [abort] = replies(result.data)
    assert "nope" in proto.parse_abort(abort)[1]


def test_pull_serves_only_chunk_stores(cli, served):
    result = cli("pull", "-", "-", "x.caibx", served[0], stdin=b"")
    assert result.code == 1 and "only a chunk store" in result.err


# --- framing ------------------------------------------------------------------------


def test_messages_keep_to_casyncs_shapes():
    assert proto.hello(proto.PULL_CHUNKS) == proto.HEADER.pack(24, proto.HELLO) + bytes(
        [0x40, 0, 0, 0, 0, 0, 0, 0]
    )
    assert proto.parse_abort(replies(proto.abort("a\nb", 5))[0]) == (5, "a b")
    with pytest.raises(proto.ProtocolError):
        replies(proto.HEADER.pack(proto.MAX_SIZE + 1, proto.CHUNK))
    with pytest.raises(proto.ProtocolError):
        proto.parse_hello(proto.Message(proto.HELLO, proto.U64.pack(0)))
    with pytest.raises(proto.ProtocolError):
        proto.parse_chunk(proto.Message(proto.CHUNK, proto.U64.pack(2) + bytes(33)))
    sha = Digest.SHA256.hash(b"x")
    assert proto.parse_request(replies(proto.request([sha, sha]))[0]) == (1, [sha, sha])


def test_the_pool_ends_idle_sessions_that_died_instead_of_handing_them_out():
    """A dropped connection left its sessions idle in the pool; a call retried on each
    of them in turn failed every attempt ("Socket is closed") while a new session would
    have worked (the SFTP fault runs found it). Plain objects stand for sessions: what
    is tested is the pool's bookkeeping."""
    made, ended = [], []

    def make() -> dict:
        made.append({"alive": True, "n": len(made)})
        return made[-1]

    pool = SessionPool(make, 3, ended.append, lambda session: session["alive"])
    first, second, third = pool.acquire(), pool.acquire(), pool.acquire()
    for session in (first, second, third):
        pool.release(session)
    first["alive"] = third["alive"] = False  # their connection dropped while idle
    assert pool.acquire() is second
    fresh = pool.acquire()  # the dead ones were ended and their places freed
    assert fresh["n"] == 3 and fresh["alive"]
    assert ended == [third, first]
    pool.release(fresh)
    pool.release(second)
    assert {id(pool.acquire()), id(pool.acquire())} == {id(fresh), id(second)}
