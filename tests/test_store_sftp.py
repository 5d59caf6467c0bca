"""The SFTP store on a real OpenSSH server (a private ``sshd`` on 127.0.0.1).

The shared store contract first (the server is killed to break the store),
then what is particular to SFTP: host keys (unknown, changed, accept-new), the
user's ~/.ssh/config, logins that fail, reconnecting after a restart, atomic
writes, a pool of one, and the CLI round trip with chunks and index on SFTP.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.stores import sftp
from desync_decl.stores.base import ChunkMissing, StoreError
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import servers_ssh, store_contract
from tests.prune_sites import backdate
from tests.servers_ssh import SshServer
from tests.store_contract import (
    ID_NEVER_STORED,
    ContractEnv,
    StoreContract,
    in_eight_threads,
    put_file,
    random_chunks,
)

ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd  # the fixtures
opened = store_contract.opened  # the fixture: their connections hold sshd processes
FAST_RETRY = StoreOptions(error_retry=3, error_retry_base_interval=0.05, timeout=5.0)


def open_store(location: str, options: StoreOptions, opened: list):
    store = sftp.open_chunk_store(location, options, Opener())
    opened.append(store)
    return store


class TestSftpStore(StoreContract):
    @pytest.fixture
    def env(self, sshd: SshServer, tmp_path, opened) -> ContractEnv:
        root = tmp_path / "store"
        root.mkdir()
        location = sshd.url("sftp", root)
        put_raw = put_file(root)  # the server's disk is this machine's
        return ContractEnv(
            location, lambda options: open_store(location, options, opened), put_raw, sshd.kill
        )


def test_a_chunk_goes_to_its_prefix_directory_with_no_temp_file_left(sshd, tmp_path, opened):
    store = open_store(sshd.url("sftp", tmp_path), StoreOptions(), opened)
    chunks = random_chunks(3, seed=20)
    for chunk in chunks:
        store.store_chunk(chunk)
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    h = sorted(c.id.hex() for c in chunks)
    assert files == [f"{x[:4]}/{x}.cacnk" for x in h]


def test_the_store_reconnects_when_the_server_comes_back(sshd, tmp_path, opened):
    store = open_store(sshd.url("sftp", tmp_path), FAST_RETRY, opened)
    chunk = random_chunks(1, seed=21)[0]
    store.store_chunk(chunk)
    sshd.kill()
    sshd.ensure_running()
    assert bytes(store.get_chunk(chunk.id).plain()) == bytes(chunk.plain())
    assert store.has_chunk(chunk.id)


def test_a_stopped_server_is_a_store_error_after_the_retries(sshd, tmp_path, opened):
    store = open_store(sshd.url("sftp", tmp_path), FAST_RETRY, opened)
    sshd.kill()
    with pytest.raises(StoreError, match="cannot connect") as e:
        store.has_chunk(ID_NEVER_STORED)
    assert e.value.transient


def test_an_unknown_host_is_refused_with_how_to_trust_it(sshd, tmp_path, monkeypatch, opened):
    monkeypatch.setenv("HOME", str(sshd.make_home(tmp_path / "home", known_hosts="")))
    store = open_store(sshd.url("sftp", tmp_path), StoreOptions(), opened)
    with pytest.raises(StoreError, match=r"not in .*known_hosts.*ssh-keyscan -p") as e:
        store.has_chunk(ID_NEVER_STORED)
    assert not e.value.transient


def test_a_changed_host_key_is_refused(sshd, tmp_path, monkeypatch, opened):
    other = tmp_path / "other_host_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", other], check=True)
    kind, key = Path(f"{other}.pub").read_text().split()[:2]
    home = sshd.make_home(tmp_path / "home", known_hosts=f"[127.0.0.1]:{sshd.port} {kind} {key}\n")
    monkeypatch.setenv("HOME", str(home))
    store = open_store(sshd.url("sftp", tmp_path), StoreOptions(), opened)
    with pytest.raises(StoreError, match="does not match"):
        store.has_chunk(ID_NEVER_STORED)


def test_accept_new_trusts_a_new_host_once_and_records_its_key(sshd, tmp_path, monkeypatch, opened):
    home = sshd.make_home(tmp_path / "home", known_hosts="", strict="accept-new")
    monkeypatch.setenv("HOME", str(home))
    store = open_store(sshd.url("sftp", tmp_path), StoreOptions(), opened)
    assert store.has_chunk(ID_NEVER_STORED) is False
    assert (home / ".ssh" / "known_hosts").read_text().split() == sshd.host_key_line.split()


def test_port_and_user_may_come_from_the_ssh_config(sshd, tmp_path, opened):
    location = f"sftp://127.0.0.1{tmp_path}"  # ~/.ssh/config has Host 127.0.0.1 -> User, Port
    store = open_store(location, StoreOptions(), opened)
    assert store.has_chunk(ID_NEVER_STORED) is False


def test_a_refused_login_is_one_clear_permanent_error(sshd, tmp_path, monkeypatch, opened):
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", stranger], check=True)
    monkeypatch.setenv("HOME", str(sshd.make_home(tmp_path / "home", identity=stranger)))
    store = open_store(sshd.url("sftp", tmp_path), FAST_RETRY, opened)
    with pytest.raises(StoreError, match=f"login as {sshd.user} failed") as e:
        store.get_chunk(ID_NEVER_STORED)
    assert not e.value.transient


def test_a_store_directory_that_does_not_exist_is_an_error_not_missing(sshd, tmp_path, opened):
    store = open_store(sshd.url("sftp", tmp_path / "nowhere"), StoreOptions(), opened)
    with pytest.raises(StoreError, match="does not exist"):
        store.get_chunk(ID_NEVER_STORED)


def test_a_pool_of_one_serves_eight_threads_and_prunes_without_deadlock(sshd, tmp_path, opened):
    store = open_store(sshd.url("sftp", tmp_path), StoreOptions(n=1), opened)
    chunks = random_chunks(16, seed=22)

    def store_and_check(c: Chunk) -> None:
        store.store_chunk(c)
        assert store.has_chunk(c.id)

    in_eight_threads(store_and_check, chunks, timeout=30)
    assert store.prune({chunks[0].id}) == 15  # lists while deleting, with one session
    with pytest.raises(ChunkMissing):
        store.get_chunk(chunks[1].id)


def test_make_extract_prune_and_info_with_chunks_and_index_on_sftp(sshd, tmp_path, cli):
    source = tmp_path / "blob.bin"
    source.write_bytes(os.urandom(1_500_000) + bytes(600_000))
    (tmp_path / "store").mkdir()
    store = sshd.url("sftp", tmp_path / "store")
    index_url = sshd.url("sftp", tmp_path / "blob.caibx")
    made = cli("make", "-s", store, index_url, source)
    assert made.code == 0, made.err
    assert (tmp_path / "blob.caibx").is_file()

    out = tmp_path / "out.bin"
    extracted = cli("extract", "-n", "4", "-s", store, index_url, out)
    assert extracted.code == 0, extracted.err
    assert out.read_bytes() == source.read_bytes()

    info = cli("info", "-s", store, index_url)
    assert info.code == 0, info.err

    stray = random_chunks(1, seed=23)[0]
    sftp.open_chunk_store(store, StoreOptions(), Opener()).store_chunk(stray)
    backdate(tmp_path / "store")  # the server's mtimes: older than prune's minimum age
    pruned = cli("prune", "-y", "-s", store, index_url)
    assert pruned.code == 0, pruned.err
    assert "removed 1 " in pruned.out
    again = cli("extract", "-s", store, index_url, tmp_path / "again.bin")
    assert again.code == 0 and (tmp_path / "again.bin").read_bytes() == source.read_bytes()


def test_the_store_uses_the_digest_it_is_opened_with(sshd, tmp_path, opened):
    store = sftp.open_chunk_store(
        sshd.url("sftp", tmp_path), StoreOptions(), Opener(digest=Digest.SHA256)
    )
    opened.append(store)
    data = b"sha256 chunk"
    chunk = Chunk(Digest.SHA256.hash(data), plain=data)
    store.store_chunk(chunk)
    assert bytes(store.get_chunk(chunk.id).plain()) == data
