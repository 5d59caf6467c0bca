"""Ports of desync's ``cmd/desync/chunkserver_test.go``: our ``chunk-server`` run as a
real process (``cli_server``) over desync's fixture stores, with desync's own TLS
certificates (``ca.crt``, ``server.crt``/``server.key``, ``client.crt``/``client.key``),
and our CLI as its client.

Beyond desync's cases, each fix of issue 15 to the chunk-server has its test here:
``--skip-verify-write`` (missing before), and ``--encryption-key`` /
``--encryption-algorithm`` implying ``--encryption`` (refused before).
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
import zstandard

from desync_decl.formats.digest import Digest
from tests import servers_http
from tests.desync_suite.raw_http import ask

cli_server = servers_http.cli_server  # the fixture

ABSENT_CHUNK = "/0000/" + "0" * 64 + ".cacnk"


def random_key() -> str:
    """A hex-encoded 256-bit chunk encryption key (desync's ``randomEncryptionKey``)."""
    return secrets.token_hex(32)


def on_localhost(url: str) -> str:
    """The server's URL by the name desync's ``server.crt`` is issued for."""
    return url.replace("127.0.0.1", "localhost")


def chunk_files(store: Path) -> list[str]:
    return sorted(p.name for p in store.glob("*/*"))


# --- TestChunkServerReadCommand ---------------------------------------------------------


def test_a_read_only_server_serves_chunks_refuses_other_paths_and_writes(
    cli, cli_server, cmd_data, tmp_path
):
    """TestChunkServerReadCommand."""
    url = cli_server("chunk-server", "-s", cmd_data / "blob1.store").url
    out = tmp_path / "blob"
    r = cli("extract", "-s", url, cmd_data / "blob1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()
    # no arbitrary file from the disk: 400; a chunk it does not have: 404
    assert ask(url, "GET", "/somefile")[0] == 400
    assert ask(url, "GET", ABSENT_CHUNK)[0] == 404
    r = cli("chop", "-s", url, cmd_data / "blob2.caibx", cmd_data / "blob2")
    assert r.code != 0
    assert "writing to upstream" in r.err


# --- TestChunkServerWriteCommand --------------------------------------------------------


def test_a_writable_server_takes_chunks_and_refuses_other_files(
    cli, cli_server, cmd_data, tmp_path
):
    """TestChunkServerWriteCommand."""
    store = tmp_path / "store"
    store.mkdir()
    url = cli_server("chunk-server", "-s", store, "-w").url
    r = cli("chop", "-s", url, cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 0, r.err
    assert chunk_files(store) == chunk_files(cmd_data / "blob1.store")
    assert ask(url, "PUT", "/somefile", b"invalid")[0] == 400


# --- TLS --------------------------------------------------------------------------------


def tls_server(cli_server, cmd_data: Path, *extra: object) -> str:
    """An HTTPS chunk-server over blob1.store with desync's server certificate."""
    server = cli_server(
        "chunk-server",
        "-s",
        cmd_data / "blob1.store",
        "--key",
        cmd_data / "server.key",
        "--cert",
        cmd_data / "server.crt",
        *extra,
    )
    assert server.url.startswith("https://")
    return on_localhost(server.url)


def test_extract_from_a_tls_server_whose_ca_is_given(cli, cli_server, cmd_data, tmp_path):
    """TestChunkServerVerifiedTLS."""
    url = tls_server(cli_server, cmd_data)
    out = tmp_path / "blob1"
    r = cli("extract", "--ca-cert", cmd_data / "ca.crt", "-s", url, cmd_data / "blob1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()


def test_trust_insecure_accepts_the_server_and_without_it_extract_fails(
    cli, cli_server, cmd_data, tmp_path
):
    """TestChunkServerInsecureTLS."""
    url = tls_server(cli_server, cmd_data)
    out = tmp_path / "blob1"
    r = cli("extract", "-t", "-s", url, cmd_data / "blob1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()
    r = cli("extract", "-s", url, cmd_data / "blob1.caibx", tmp_path / "again")
    assert r.code != 0
    assert not (tmp_path / "again").exists()


def test_mutual_tls_needs_the_clients_certificate(cli, cli_server, cmd_data, tmp_path):
    """TestChunkServerMutualTLS."""
    url = tls_server(cli_server, cmd_data, "--mutual-tls", "--client-ca", cmd_data / "ca.crt")
    index, out = cmd_data / "blob1.caibx", tmp_path / "blob1"
    r = cli(
        "extract",
        "--client-key",
        cmd_data / "client.key",
        "--client-cert",
        cmd_data / "client.crt",
        "--ca-cert",
        cmd_data / "ca.crt",
        "-s",
        url,
        index,
        out,
    )
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()
    r = cli("extract", "--ca-cert", cmd_data / "ca.crt", "-s", url, index, tmp_path / "again")
    assert r.code != 0
    assert not (tmp_path / "again").exists()


# --- encryption -------------------------------------------------------------------------


def test_encryption_key_alone_serves_and_takes_encrypted_chunks(
    cli, cli_server, cmd_data, tmp_path
):
    """TestChunkServerEncryption: ``--encryption-key`` without ``--encryption`` (issue 15:
    it implies encryption, as in desync); chunks travel compressed and encrypted and
    are stored only compressed; the client's options come from the config file."""
    key = random_key()
    store = tmp_path / "store"
    store.mkdir()
    server = cli_server(
        "chunk-server",
        "-s",
        store,
        "-w",
        "--skip-verify-read=false",
        "--skip-verify-write=false",
        "--encryption-key",
        key,
    )
    config = tmp_path / "config.json"
    options = {server.url: {"encryption": True, "encryption-key": key}}
    config.write_text(json.dumps({"store-options": options}))
    r = cli(
        "--config", config, "chop", "-s", server.url, cmd_data / "blob1.caibx", cmd_data / "blob1"
    )
    assert r.code == 0, r.err
    assert chunk_files(store) == chunk_files(cmd_data / "blob1.store")  # stored unencrypted
    out = tmp_path / "blob1"
    r = cli("--config", config, "extract", "-s", server.url, cmd_data / "blob1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()


def test_encryption_algorithm_alone_implies_encryption_with_the_key_from_the_environment(
    cli, cli_server, cmd_data, tmp_path
):
    """Issue 15: ``--encryption-algorithm`` implies ``--encryption`` (desync's
    ``EncryptionConfigured``); the key then comes from $DESYNC_ENCRYPTION_KEY."""
    key = random_key()
    server = cli_server(
        "chunk-server",
        "-s",
        cmd_data / "blob1.store",
        "--encryption-algorithm",
        "aes-256-gcm",
        env={"DESYNC_ENCRYPTION_KEY": key},
    )
    config = tmp_path / "config.json"
    options = {"encryption": True, "encryption-key": key, "encryption-algorithm": "aes-256-gcm"}
    config.write_text(json.dumps({"store-options": {server.url: options}}))
    out = tmp_path / "blob1"
    r = cli("--config", config, "extract", "-s", server.url, cmd_data / "blob1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == (cmd_data / "blob1").read_bytes()
    # a client that does not encrypt asks for .cacnk: this server serves no such thing
    r = cli("extract", "-s", server.url, cmd_data / "blob1.caibx", tmp_path / "plain")
    assert r.code != 0 and "compression and encryption settings" in r.err


def test_a_key_in_the_environment_alone_does_not_enable_encryption(
    cli, cli_server, cmd_data, tmp_path, monkeypatch
):
    """TestChunkServerEnvKeyDoesNotEnableEncryption."""
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", random_key())
    store = tmp_path / "store"
    store.mkdir()
    url = cli_server("chunk-server", "-s", store, "-w").url
    r = cli("chop", "-s", url, cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 0, r.err
    names = chunk_files(store)
    assert names and all(n.endswith(".cacnk") for n in names)


@pytest.mark.parametrize("flags", [["--encryption"], ["--encryption-algorithm", "aes-256-gcm"]])
def test_encryption_without_a_key_is_refused_at_start(cli, tmp_path, monkeypatch, flags):
    """TestChunkServerEncryptionMissingKey."""
    monkeypatch.setenv("DESYNC_ENCRYPTION_KEY", "")
    r = cli("chunk-server", *flags, "-s", tmp_path, "-l", "127.0.0.1:0")
    assert r.code == 1
    assert "no encryption key configured" in r.err
    assert "Traceback" not in r.err


# --- --skip-verify-write (issue 15: the flag was missing) -------------------------------


def forged_upload() -> tuple[str, bytes]:
    """A well-formed compressed chunk under the path of an id its data does not hash to."""
    claimed = Digest.SHA512_256.hash(b"what the path claims")
    data = zstandard.ZstdCompressor(level=3).compress(b"something else entirely")
    h = claimed.hex()
    return f"/{h[:4]}/{h}.cacnk", data


@pytest.mark.parametrize(
    ("flags", "verified"),
    [([], True), (["--skip-verify-write=false"], True), (["--skip-verify-write"], False),
     (["--skip-verify-write=true"], False)],
)  # fmt: skip
def test_skip_verify_write_stores_uploads_without_hashing_them(
    cli_server, tmp_path, flags, verified
):
    """desync's ``--skip-verify-write``: chunks written to the server are stored without
    being decompressed and hashed. Ours verifies unless the flag asks it not to (desync
    skips by default: see the README's compatibility section)."""
    store = tmp_path / "store"
    store.mkdir()
    url = cli_server("chunk-server", "-s", store, "-w", *flags).url
    path, data = forged_upload()
    status, body = ask(url, "PUT", path, data)
    if verified:
        assert status == 400 and b"hashes to" in body
        assert chunk_files(store) == []
    else:
        assert status == 200, body
        assert (store / path.lstrip("/")).read_bytes() == data  # as sent, not recompressed


def test_skip_verify_write_is_refused_on_a_read_only_server_the_same_way(cli_server, tmp_path):
    """The flag changes nothing about who may write: a read-only server refuses the PUT."""
    store = tmp_path / "store"
    store.mkdir()
    url = cli_server("chunk-server", "-s", store, "--skip-verify-write").url
    path, data = forged_upload()
    status, body = ask(url, "PUT", path, data)
    assert status == 400 and b"not enabled" in body
    assert chunk_files(store) == []


@pytest.mark.parametrize(
    ("flags", "writable"),
    [(["-w=false"], False), (["-w=true"], True), (["--writable=false"], False),
     (["--writeable"], True)],
)  # fmt: skip
def test_boolean_flags_take_true_or_false_as_desync_spells_them(
    cli_server, tmp_path, flags, writable
):
    """Issue 15: ``--flag=false`` for every boolean flag (Go's pflag spelling)."""
    store = tmp_path / "store"
    store.mkdir()
    url = cli_server("chunk-server", "-s", store, *flags).url
    chunk = zstandard.ZstdCompressor().compress(b"a chunk")
    h = Digest.SHA512_256.hash(b"a chunk").hex()
    status, body = ask(url, "PUT", f"/{h[:4]}/{h}.cacnk", chunk)
    assert (status == 200) is writable, body


def test_uncompressed_and_encryption_flags_take_false(cli_server, cmd_data):
    """``-u=false`` serves compressed chunks; ``--encryption=false`` without a key starts
    a server that does not encrypt (the key alone would turn it on)."""
    url = cli_server("chunk-server", "-s", cmd_data / "blob1.store", "-u=false",
                     "--encryption=false").url  # fmt: skip
    h = next((cmd_data / "blob1.store").glob("*/*.cacnk")).name.removesuffix(".cacnk")
    status, body = ask(url, "GET", f"/{h[:4]}/{h}.cacnk")
    assert status == 200 and body == (cmd_data / "blob1.store" / h[:4] / f"{h}.cacnk").read_bytes()
