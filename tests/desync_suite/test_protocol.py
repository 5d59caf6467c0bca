"""Ports of desync's ``protocol_test.go`` and ``protocolserver_test.go``: casync's
protocol (HELLO with feature flags, REQUEST, CHUNK, MISSING) between our ssh://
store and a ``pull`` server on the far side of a real sshd.

desync tested its client against a peer written in the test, and its server
against its client, over pipes. Here our client talks to casync's own ``casync
pull`` (an implementation we did not write: ``TestProtocol``) and to our ``pull``
(``TestProtocolServer``).
"""

from __future__ import annotations

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import ChunkMissing
from desync_decl.stores.local import LocalStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.ssh import open_chunk_store
from tests import servers_ssh, store_contract
from tests.store_contract import chunk_of

ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd  # the fixtures
opened = store_contract.opened  # the fixture: a store's sessions are processes


def stored(tmp_path, data: bytes) -> tuple[str, Chunk]:
    """A local store holding the chunk of ``data`` (compressed, as casync keeps it)."""
    chunk = chunk_of(data)
    LocalStore(tmp_path / "store", create=True).store_chunk(chunk)
    return str(tmp_path / "store"), chunk


def test_our_client_pulls_a_compressed_chunk_from_casync(
    sshd, casync, tmp_path, opened, monkeypatch
):
    """TestProtocol: the client says it pulls chunks, the far side that it has a
    readable store; a requested chunk arrives compressed and decodes to its data.
    (``casync``: the fixture that needs the real casync installed.)"""
    monkeypatch.delenv("CASYNC_REMOTE_PATH", raising=False)  # casync's own pull
    root, chunk = stored(tmp_path, bytes([0, 0, 1, 1, 2, 2]))
    client = open_chunk_store(sshd.url("ssh", root), StoreOptions(n=1), Opener())
    opened.append(client)
    assert bytes(client.get_chunk(chunk.id).plain()) == bytes([0, 0, 1, 1, 2, 2])


def test_our_pull_serves_a_chunk_and_says_when_one_is_missing(sshd, tmp_path, opened, monkeypatch):
    """TestProtocolServer."""
    monkeypatch.setenv("CASYNC_REMOTE_PATH", str(sshd.remote_desync))
    root, chunk = stored(tmp_path, bytes([4, 3, 2, 1]))
    client = open_chunk_store(sshd.url("ssh", root), StoreOptions(n=1), Opener())
    opened.append(client)
    assert bytes(client.get_chunk(chunk.id).plain()) == bytes([4, 3, 2, 1])
    with pytest.raises(ChunkMissing):
        client.get_chunk(ChunkID(bytes(32)))
