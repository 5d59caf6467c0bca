"""Security of the servers and of the clients' transports, beyond tests/test_servers.py.

chunk-server and index-server: no request path reaches a file outside their
store, however it is encoded; with ``--authorization`` no write gets in
without it (nor is its body read); uploads larger than allowed are refused
before their body; invalid chunks (wrong key, bombs, truncated) are never
stored. Clients: TLS is verified unless ``trust-insecure`` for every HTTP-based
store through the command line and config file (a self-signed server gets no
request). The SSH store quotes every path into the remote command whatever it
holds, and refuses hosts and users that could be options or shell text.
"""

from __future__ import annotations

import json
import shlex
import tracemalloc
from pathlib import Path

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.server.chunks import ChunkService
from desync_decl.server.indexes import IndexService
from desync_decl.stores import http as http_store
from desync_decl.stores.base import ChunkInvalid, StoreError
from desync_decl.stores.converters import Cipher, StorageFormat
from desync_decl.stores.index_store import LocalIndexStore
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.single_flight import single_flight
from desync_decl.stores.ssh import SshStore, parse_location
from desync_decl.stores.swap import StoreStack
from tests import servers_cloud, servers_http
from tests.store_contract import random_chunks
from tests.test_servers import ask, chunk_path, connect, files_under

serve = servers_http.serve  # the fixtures
unavailable_tls_server, tls_certificate = (
    servers_cloud.unavailable_tls_server,
    servers_cloud.tls_certificate,
)
cloud_env = servers_cloud.cloud_env
SECRET = b"the secret outside every store\n"
TOKEN = "Bearer s3cr3t"
HEX = "ab" * 32

# Every way we know to say "the parent directory" in a request target.
TRAVERSALS = [
    "/../secret",
    "/../../secret",
    "/%2e%2e/secret",
    "/%2E%2E/secret",
    "/.%2e/secret",
    "/%2e./secret",
    "/%252e%252e/secret",  # encoded twice
    "/%c0%ae%c0%ae/secret",  # overlong UTF-8 dots
    "/%e0%80%ae%e0%80%ae/secret",
    "/%ef%bc%8e%ef%bc%8e/secret",  # fullwidth dots
    "/%u002e%u002e/secret",
    "/..%2fsecret",
    "/..%2Fsecret",
    "/..%252fsecret",
    "/..\\secret",
    "/..%5csecret",
    "/..%5Csecret",
    "/..;/secret",
    "/.../secret",
    "//secret",
    "/./secret",
    "/%2fsecret",
    "/secret%00.caibx",
    "/abcd/../../secret",
    f"/abab/{HEX}.cacnk/../../../secret",
    f"/abab/{HEX}%2ecacnk",
    f"/abab%2f{HEX}.cacnk",
    f"/abab/{HEX}.cacnk%00",
    f"/abab/{HEX}.cacnk/",
    f"/ABAB/{HEX.upper()}.cacnk",
    "http://127.0.0.1/../secret",
    "http://127.0.0.1/%2e%2e/secret",
    "/" + "../" * 200 + "secret",
]


@pytest.fixture
def layout(tmp_path):
    """A store and an index folder inside ``tmp_path``, and a secret beside them."""
    (tmp_path / "secret").write_bytes(SECRET)
    (tmp_path / "secret.caibx").write_bytes(SECRET)
    store = LocalStore(tmp_path / "srv" / "store", create=True)
    for chunk in random_chunks(2, seed=41):
        store.store_chunk(chunk)
    (tmp_path / "srv" / "idx").mkdir()
    return tmp_path


def start_chunks(serve, root: Path, skip_verify: bool = False, **kwargs) -> str:
    store = LocalStore(root / "srv" / "store", skip_verify=skip_verify)
    return serve(ChunkService(StoreStack(single_flight(store)), **kwargs)).url


def start_indexes(serve, root: Path, **kwargs) -> str:
    return serve(IndexService(LocalIndexStore(root / "srv" / "idx"), **kwargs)).url


def empty_index() -> bytes:
    return Index.from_chunks(blob_flags(Digest.SHA512_256), ChunkSizes(64, 256, 1024), []).encode()


def raw(url: str, request: bytes) -> bytes:
    with connect(url, timeout=3) as s:
        s.sendall(request)
        answer = b""
        try:
            while part := s.recv(65536):
                answer += part
        except TimeoutError:
            pass
    return answer


# --- path traversal ---------------------------------------------------------------------


@pytest.mark.parametrize("server", ["chunk-server", "index-server"])
def test_no_encoding_of_a_parent_directory_reaches_a_file_outside_the_store(serve, layout, server):
    start = start_chunks if server == "chunk-server" else start_indexes
    url = start(serve, layout, writable=True)
    before = files_under(layout)
    for target in TRAVERSALS:
        for method in ("GET", "HEAD", "PUT"):
            body = b"pwned" if method == "PUT" else b""
            request = f"{method} {target} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            answer = raw(url, request.encode() + b"Connection: close\r\n\r\n" + body)
            status = int(answer.split(b" ", 2)[1])
            # 415: "..%2fsecret" (encoded twice, decoded once) is a plain name in the
            # index folder; "pwned" is no index, so nothing is written even there
            assert status in (400, 404, 415), (method, target, answer[:200])
            assert SECRET not in answer and b"pwned" not in answer
    assert files_under(layout) == before  # nothing written, nothing replaced


def test_an_index_upload_replaces_a_planted_symlink_instead_of_writing_through_it(serve, layout):
    link = layout / "srv" / "idx" / "x.caibx"
    link.symlink_to(layout / "secret.caibx")
    url = start_indexes(serve, layout, writable=True)
    data = empty_index()
    assert ask(url, "PUT", "/x.caibx", data)[0] == 200
    assert (layout / "secret.caibx").read_bytes() == SECRET
    assert not link.is_symlink() and link.read_bytes() == data


# --- authorization ----------------------------------------------------------------------


def upload_for(server: str, layout: Path) -> tuple[str, bytes]:
    if server == "chunk-server":
        chunk = random_chunks(1, seed=42)[0]
        return chunk_path(chunk), chunk.stored()
    return "/new.caibx", empty_index()


@pytest.mark.parametrize("server", ["chunk-server", "index-server"])
@pytest.mark.parametrize(
    "given",
    [None, "", "Bearer wrong", "bearer s3cr3t", "Bearer s3cr3t!", "Bearer s3cr3", "Basic s3cr3t",
     "Bearer s3cr3t, Bearer s3cr3t"],
    ids=repr,
)  # fmt: skip
def test_a_write_without_the_expected_authorization_is_401_and_stores_nothing(
    serve, layout, server, given
):
    start = start_chunks if server == "chunk-server" else start_indexes
    url = start(serve, layout, writable=True, authorization=TOKEN)
    path, body = upload_for(server, layout)
    before = files_under(layout)
    headers = {} if given is None else {"Authorization": given}
    if given == "Bearer s3cr3t, Bearer s3cr3t":  # sent as two header lines
        request = (
            f"PUT {path} HTTP/1.1\r\nAuthorization: {TOKEN}\r\nAuthorization: {TOKEN}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        assert raw(url, request.encode() + body).startswith(b"HTTP/1.1 401 ")
    else:
        assert ask(url, "PUT", path, body, headers)[0] == 401
    assert files_under(layout) == before
    assert ask(url, "PUT", path, body, {"Authorization": TOKEN})[0] == 200


@pytest.mark.parametrize("server", ["chunk-server", "index-server"])
def test_an_unauthorized_upload_is_refused_before_its_body_is_read(serve, layout, server):
    start = start_chunks if server == "chunk-server" else start_indexes
    url = start(serve, layout, writable=True, authorization=TOKEN)
    path, _ = upload_for(server, layout)
    with connect(url) as s:
        s.sendall(
            f"PUT {path} HTTP/1.1\r\nContent-Length: 100000000\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        answer = s.recv(4096)
    assert answer.startswith(b"HTTP/1.1 401 ")  # no "100 Continue": the body is never read
    assert b"Connection: close" in answer


# --- oversize and invalid uploads -------------------------------------------------------


@pytest.mark.parametrize(
    ("length", "status"), [("999999999999999999", 413), ("9999999999999999999", 400)]
)
def test_an_index_upload_announcing_too_much_is_refused_before_its_body(
    serve, layout, length, status
):
    url = start_indexes(serve, layout, writable=True, max_size=1 << 20)
    with connect(url) as s:
        s.sendall(
            f"PUT /big.caibx HTTP/1.1\r\nContent-Length: {length}\r\n"
            "Expect: 100-continue\r\n\r\n".encode()
        )
        answer = s.recv(4096)
    assert answer.startswith(f"HTTP/1.1 {status} ".encode()) and b"Connection: close" in answer
    assert not (layout / "srv" / "idx" / "big.caibx").exists()


def test_a_compression_bomb_upload_is_refused_in_bounded_memory(serve, layout):
    """64 MiB of zeros in a few KiB of zstd, named by its real id, on a server taking
    chunks of at most 1 MiB: refused while decompressing, not after."""
    plain = bytes(64 << 20)
    chunk = Chunk(Digest.SHA512_256.hash(plain), stored=zstandard.ZstdCompressor(
        level=19, write_content_size=False).compress(plain))  # fmt: skip
    del plain
    url = start_chunks(serve, layout, writable=True, max_chunk_size=1 << 20)
    tracemalloc.start()
    try:
        status, body, _ = ask(url, "PUT", chunk_path(chunk), chunk.stored())
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert status == 400 and b"more than 1048576 bytes" in body
    assert peak < 16 << 20, f"{peak} bytes allocated"
    assert not LocalStore(layout / "srv" / "store").has_chunk(chunk.id)


KEY, OTHER_KEY = "11" * 32, "22" * 32


@pytest.mark.parametrize(
    "case",
    ["sealed with another key", "not sealed", "tag flipped", "truncated frame", "two frames"],
)
def test_an_invalid_chunk_is_never_stored_by_an_encrypting_server(serve, layout, case):
    wire = StorageFormat(cipher=Cipher("aes-256-gcm", KEY))
    other = StorageFormat(cipher=Cipher("aes-256-gcm", OTHER_KEY))
    chunk = random_chunks(1, seed=43)[0]
    stored = chunk.stored()
    sealed = bytes(wire.encode(chunk))  # one sealing: each has its own random nonce, so
    # the last byte of another sealing's tag, flipped, is this one's 1 time in 256
    body = {
        "sealed with another key": other.encode(chunk),
        "not sealed": stored,
        "tag flipped": sealed[:-1] + bytes([sealed[-1] ^ 1]),
        "truncated frame": wire.cipher.encrypt(stored[:-2]),  # type: ignore[union-attr]
        "two frames": wire.cipher.encrypt(stored + stored),  # type: ignore[union-attr]
    }[case]
    url = start_chunks(serve, layout, writable=True, wire=wire)
    before = files_under(layout)
    status, answer, _ = ask(url, "PUT", chunk_path(chunk, wire.extension), bytes(body))
    assert status == 400 and b"invalid chunk" in answer, answer
    assert files_under(layout) == before
    assert ask(url, "PUT", chunk_path(chunk, wire.extension), bytes(wire.encode(chunk)))[0] == 200


def test_a_chunk_server_does_not_serve_a_chunk_under_another_chunks_name_unnoticed(
    serve, layout, cli
):
    """The server does not hash what it serves (--skip-verify-read): the client does."""
    a, b = random_chunks(2, seed=41)
    store = layout / "srv" / "store"
    h = a.id.hex()
    (store / h[:4] / f"{h}.cacnk").write_bytes(b.stored())
    url = start_chunks(serve, layout, skip_verify=True)  # as chunk-server opens its stores
    assert ask(url, "GET", chunk_path(a))[:2] == (200, b.stored())
    client = http_store.open_chunk_store(url, StoreOptions(error_retry=1), Opener())
    with pytest.raises(ChunkInvalid, match="hashes to"):
        client.get_chunk(a.id)
    client.close()


# --- TLS on the client side -------------------------------------------------------------


def scheme_location(kind: str, endpoint: str, monkeypatch) -> str:
    host = endpoint.removeprefix("https://")
    if kind == "gs":
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
        monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "test")
        return "gs://bucket/prefix"
    if kind == "s3":
        monkeypatch.setenv("S3_ACCESS_KEY", "test")
        monkeypatch.setenv("S3_SECRET_KEY", "test")
        return f"s3+https://{host}/bucket/prefix"
    if kind == "oci":
        return f"oci+https://{host}/repo/chunks"
    return f"https://{host}/store/"


@pytest.fixture(scope="module")
def small_index(tmp_path_factory) -> Path:
    """An index of one chunk no store has (the client must ask the server for it)."""
    path = tmp_path_factory.mktemp("index") / "one.caibx"
    chunk = random_chunks(1, seed=44)[0]
    sizes = ChunkSizes(1, 4096, 1 << 20)
    flags = blob_flags(Digest.SHA512_256)
    path.write_bytes(Index.from_chunks(flags, sizes, [(len(chunk.plain()), chunk.id)]).encode())
    return path


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize("kind", ["https", "s3", "oci", "gs"])
def test_a_self_signed_server_is_refused_unless_trust_insecure(
    kind, unavailable_tls_server, cloud_env, small_index, tmp_path, cli, monkeypatch
):
    server = unavailable_tls_server
    location = scheme_location(kind, server.endpoint, monkeypatch)
    monkeypatch.setenv("CURL_CA_BUNDLE", "")  # an empty bundle must not turn verification off
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    out = tmp_path / "out"
    r = cli("extract", "-e", "1", "-s", location, small_index, out)
    assert r.code == 1 and "certif" in r.err.lower(), r.err
    assert server.requests == 0 and not out.exists()

    config = tmp_path / "config.json"
    config.write_text(json.dumps({"store-options": {location: {"trust-insecure": False}}}))
    r = cli("--config", config, "extract", "-e", "1", "-s", location, small_index, out)
    assert r.code == 1 and "certif" in r.err.lower() and server.requests == 0, r.err

    r = cli("extract", "-e", "1", "-t", "-s", location, small_index, out)
    assert r.code == 1 and "503" in r.err, r.err  # through TLS to the server's own answer
    assert server.requests >= 1
    seen = server.requests
    config.write_text(json.dumps({"store-options": {location: {"trust-insecure": True}}}))
    r = cli("--config", config, "extract", "-e", "1", "-s", location, small_index, out)
    assert r.code == 1 and "503" in r.err and server.requests > seen, r.err


def test_an_index_from_a_self_signed_server_is_refused_unless_trust_insecure(
    unavailable_tls_server, tmp_path, cli
):
    url = unavailable_tls_server.endpoint + "/idx/a.caibx"
    r = cli("extract", "-e", "1", "-s", tmp_path, url, tmp_path / "out")
    assert r.code == 1 and "certif" in r.err.lower() and unavailable_tls_server.requests == 0
    r = cli("extract", "-e", "1", "-t", "-s", tmp_path, url, tmp_path / "out")
    assert r.code == 1 and "503" in r.err and unavailable_tls_server.requests == 1, r.err


# --- the SSH store and the shell --------------------------------------------------------


@pytest.mark.parametrize(
    "location",
    [
        "ssh://a;b@host/x",
        "ssh://$(id)@host/x",
        "ssh://`id`@host/x",
        "ssh://a b@host/x",
        "ssh://host;id/x",
        "ssh://host$(id)/x",
        "ssh://host|id/x",
        "ssh://-F/etc/passwd@host/x",
        "ssh://%2DoProxyCommand=id/x",
        "ssh://-oProxyCommand%3Did/x",
        "ssh://host:22;id/x",
        "ssh://host:-1/x",
        "ssh://host/x\0y",
    ],
)
def test_a_host_user_or_port_that_is_not_plain_is_refused(location):
    with pytest.raises(StoreError):
        parse_location(location)


path_text = st.text(
    st.characters(blacklist_characters="\0", blacklist_categories=("Cs",)), min_size=1, max_size=40
)


@settings(max_examples=200, deadline=None, database=None)
@given(path_text)
def test_any_path_reaches_the_remote_shell_as_one_word(path):
    """Whatever the path holds (quotes, $(), backticks, ;, newlines, percent-escapes),
    the remote shell parses the command into exactly casync's five words."""
    from urllib.parse import quote

    store = SshStore(f"ssh://user@host:2222/{quote(path, safe='')}")
    argv = store.command()
    assert argv[-3:-1] == ["--", "user@host"] and argv[1:3] == ["-p", "2222"]
    remote = argv[-1]
    assert shlex.split(remote) == [remote.split(" ", 1)[0], "pull", "-", "-", "-",
                                   "/" + path]  # fmt: skip
    store.close()


def test_the_sftp_store_opens_only_the_sftp_subsystem():
    """paramiko's exec_command or invoke_shell would hand text to a shell: never used."""
    import desync_decl.stores.sftp as sftp

    source = Path(sftp.__file__).read_text()
    assert "exec_command" not in source and "invoke_shell" not in source
    assert "open_sftp" in source
