"""Ports of desync's ``remotessh_test.go`` and ``sshcmd_test.go``: what an ssh://
location may name, and how its path reaches the far side, on a real sshd.

desync's ``TestShellQuote`` ran its quoting through a local ``sh``; here the path
goes the whole way: in the command line ssh hands to the far side's login shell,
which runs a script (as ``CASYNC_REMOTE_PATH``) that writes down the path it got.
"""

from __future__ import annotations

import os

import pytest

from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import StoreError
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.ssh import open_chunk_store, parse_location
from tests import servers_ssh, store_contract
from tests.desync_suite.desync_keys import TEST_KEY

ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd  # the fixtures
opened = store_contract.opened  # the fixture


def test_an_ssh_store_cannot_be_encrypted(sshd, tmp_path):
    """TestRemoteSSHStoreRejectsEncryption: casync's protocol carries no encryption, so
    asking for it is refused, not ignored."""
    options = StoreOptions(encryption=True, encryption_key=TEST_KEY)
    with pytest.raises(StoreError, match="cannot be encrypted"):
        open_chunk_store(sshd.url("ssh", tmp_path), options, Opener())


@pytest.mark.parametrize(
    ("host", "destination", "port"),
    [
        ("example.com", "example.com", None),
        ("user@example.com", "user@example.com", None),
        ("user@example.com:2222", "user@example.com", 2222),
        ("192.0.2.1", "192.0.2.1", None),
        ("a-b.example.com", "a-b.example.com", None),  # a dash inside is a host name
    ],
)
def test_host_names_ssh_takes_as_hosts_are_accepted(host, destination, port):
    """TestValidateSSHHost, the valid ones."""
    target = parse_location(f"ssh://{host}/store")
    assert (target.destination, target.port) == (destination, port)


@pytest.mark.parametrize(
    "host", ["-", "-x", "-oProxyCommand=touch${IFS}pwned", "-oProxyCommand=id@example.com"]
)
def test_a_host_ssh_would_read_as_an_option_is_refused(host, monkeypatch, tmp_path):
    """TestValidateSSHHost, the invalid ones: refused before anything runs."""
    ran = tmp_path / "ran"
    fake_ssh = tmp_path / "ssh"
    fake_ssh.write_text(f"#!/bin/sh\ntouch {ran}\n")
    fake_ssh.chmod(0o755)
    monkeypatch.setenv("CASYNC_SSH_PATH", str(fake_ssh))
    with pytest.raises(StoreError):
        open_chunk_store(f"ssh://{host}/store", StoreOptions(), Opener())
    assert not ran.exists()


@pytest.mark.parametrize(
    "name",
    ["", "plain", "o'brien", "a'; touch pwned; '", "'", "''", "back\\slash",
     '$VAR ${IFS} "dq" |&;<>'],
)  # fmt: skip
def test_the_path_reaches_the_far_side_as_it_was_written(sshd, tmp_path, opened, monkeypatch, name):
    """TestShellQuote: each path survives the far side's shell unchanged (as one word:
    had a quote broken out, ``$5`` would be something else)."""
    got = tmp_path / "got"
    remote = tmp_path / "remote"
    remote.write_text(f'#!/bin/sh\nprintf %s "$5" > {got}\n')  # pull - - - PATH
    remote.chmod(0o755)
    monkeypatch.setenv("CASYNC_REMOTE_PATH", str(remote))
    path = f"{tmp_path}/{name}"
    store = open_chunk_store(sshd.url("ssh", path), StoreOptions(error_retry=1, n=1), Opener())
    opened.append(store)
    with pytest.raises(StoreError):  # the script is no casync: the session ends at once
        store.has_chunk(ChunkID(bytes(32)))
    assert got.read_text() == os.path.abspath(path)  # one word, as written: nothing ran
