"""Port of desync's ``sftp_test.go`` against the real SFTP server the suite runs (a
private OpenSSH ``sshd``): desync served SFTP from its own test binary through
``CASYNC_SSH_PATH``; here the store logs in to sshd as any user would.
"""

from __future__ import annotations

import threading

from desync_decl.stores import sftp
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import servers_ssh, store_contract
from tests.store_contract import chunk_of

ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd  # the fixtures
opened = store_contract.opened  # the fixture: a store's connections hold sshd processes


def test_prune_with_a_pool_of_one_connection_does_not_deadlock(sshd, tmp_path, opened):
    """TestSFTPStorePruneSingleConnection: removing a chunk must not wait for a second
    connection while the prune holds the only one."""
    store = sftp.open_chunk_store(sshd.url("sftp", tmp_path), StoreOptions(n=1), Opener())
    opened.append(store)
    keep, prune = chunk_of(b"chunk to keep"), chunk_of(b"chunk to prune")
    store.store_chunk(keep)
    store.store_chunk(prune)
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(store.prune({keep.id})), daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "prune deadlocked with a single connection"
    assert result == [1]
    assert store.has_chunk(keep.id), "chunk in the keep list was removed"
    assert not store.has_chunk(prune.id), "unreferenced chunk was not removed"
