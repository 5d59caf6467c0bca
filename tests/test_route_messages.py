"""Issue 13, item 6: messages about stores are one plain sentence, never parentheses
inside parentheses. A cause follows a colon; a cache is "X, cached in Y".

Each case is the real path a user meets: a manifest's cache named in a store error,
a verify task over an encrypted store with a broken chunk file, an S3 endpoint (a
scripted HTTP server, the only way to get a 403 with a chosen message) refusing a
read.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.manifest import load_manifest
from desync_decl.reconcile import open_context
from desync_decl.stores.base import StoreError
from desync_decl.stores.location import Opener
from tests import servers_http
from tests.fleet_routing_helpers import nested_parentheses
from tests.servers_http import Step

scripted = servers_http.scripted
KEY = "ab" * 32


def write_manifest(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text("version: 1\n" + textwrap.dedent(body))
    return path


def test_a_cache_in_a_store_error_is_said_without_parentheses(tmp_path):
    path = write_manifest(
        tmp_path,
        """\
        stores: {up: {url: up}, near: {url: near}}
        caches: {fast: {store: up, cache: near, max_size: 1M}}
        tasks: []
        """,
    )
    ctx = open_context(load_manifest(path), state_dir=tmp_path / "state", concurrency=1)
    try:
        assert ctx.resolver.location("fast") == f"{tmp_path / 'up'}, cached in {tmp_path / 'near'}"
        with pytest.raises(StoreError) as refused:
            ctx.resolver.prune_store("fast", Digest.SHA512_256)
        assert str(refused.value) == (
            f"store 'fast' cannot list and delete chunks: {tmp_path / 'up'},"
            f" cached in {tmp_path / 'near'}"
        )
        store = ctx.resolver.store("fast", Digest.SHA512_256)
        assert not nested_parentheses(str(store)), store
    finally:
        ctx.resolver.close()


@pytest.mark.parametrize("damage", ["short", "other key"])
def test_verify_over_an_encrypted_store_names_the_first_bad_chunk_in_one_sentence(
    cli, tmp_path, damage
):
    options = {"encryption": True, "encryption_key": KEY}
    opener = Opener(digest=Digest.SHA512_256, overrides=options)
    store = opener.chunk_store(str(tmp_path / "store"), create=True)
    data = b"data" * 5000
    chunk = Chunk(Digest.SHA512_256.hash(data), plain=data)
    store.store_chunk(chunk)
    (path,) = (tmp_path / "store").rglob("*.cacnk*")
    if damage == "short":
        path.write_bytes(b"abc")
    else:  # the same data, sealed with another key
        other = Opener(digest=Digest.SHA512_256, overrides={**options, "encryption_key": "cd" * 32})
        other.chunk_store(str(tmp_path / "other"), create=True).store_chunk(chunk)
        path.write_bytes(next((tmp_path / "other").rglob("*.cacnk*")).read_bytes())
    manifest = write_manifest(
        tmp_path,
        f"""\
        stores:
          s: {{url: store, options: {{encryption: true, encryption_key: "{KEY}"}}}}
        tasks:
          - {{name: check, verify: {{store: s}}}}
        """,
    )
    planned = cli("plan", manifest, "--state-dir", tmp_path / "state")
    assert planned.code == 1, planned.out + planned.err
    (line,) = [line for line in planned.out.splitlines() if "invalid chunk" in line]
    assert not nested_parentheses(line), line
    why = "encrypted chunk too short: 3 bytes" if damage == "short" else "cannot decrypt: "
    assert f", the first {chunk.id.hex()}: " in line and why in line, line


def test_an_s3_refusal_says_the_servers_code_and_message_after_colons(scripted, monkeypatch):
    body = (
        b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code>"
        b"<Message>Access Denied (by the bucket policy)</Message></Error>"
    )
    server = scripted(Step(403, body))
    monkeypatch.setenv("S3_ACCESS_KEY", "test")
    monkeypatch.setenv("S3_SECRET_KEY", "test")
    url = f"s3+{server.url}bucket/store"
    store = Opener(digest=Digest.SHA512_256).chunk_store(url)
    with pytest.raises(StoreError) as refused:
        store.get_chunk(Digest.SHA512_256.hash(b"x"))
    message = str(refused.value)
    assert "access denied: AccessDenied: Access Denied (by the bucket policy);" in message
    assert not nested_parentheses(message), message
