"""Ports of desync's ``cmd/desync/indexserver_test.go``: our ``index-server`` run as a
real process (``cli_server``), read-only over desync's ``cmd/desync/testdata`` or
writable over an empty directory, with our CLI and plain HTTP requests as clients.

Issue 15: a GET of a file that is not an index was answered 500; desync answers
400 (``test_a_file_that_is_not_an_index_is_400_for_get_and_head``).
"""

from __future__ import annotations

from tests import servers_http
from tests.desync_suite.raw_http import ask

cli_server = servers_http.cli_server  # the fixture


def test_a_read_only_server_serves_indexes_only_and_refuses_writes(cli, cli_server, cmd_data):
    """TestIndexServerReadCommand."""
    url = cli_server("index-server", "-s", cmd_data).url
    r = cli("list-chunks", url + "blob1.caibx")
    assert r.code == 0, r.err
    assert len(r.out.split()) == 161  # desync's blob1.caibx has 161 chunks
    # no arbitrary file of the store's directory: 400
    assert ask(url, "GET", "/blob1")[0] == 400
    r = cli("make", url + "new.caibx", cmd_data / "blob1")
    assert r.code != 0
    assert "writing to upstream" in r.err
    assert not (cmd_data / "new.caibx").exists()


def test_a_writable_server_takes_indexes_and_refuses_what_is_not_one(
    cli, cli_server, cmd_data, tmp_path
):
    """TestIndexServerWriteCommand."""
    store = tmp_path / "indexes"
    store.mkdir()
    url = cli_server("index-server", "-s", store, "-w").url
    r = cli("make", url + "new.caibx", cmd_data / "blob1")
    assert r.code == 0, r.err
    assert cli("make", tmp_path / "local.caibx", cmd_data / "blob1").code == 0
    assert (store / "new.caibx").read_bytes() == (tmp_path / "local.caibx").read_bytes()
    assert ask(url, "PUT", "/invalid.caibx", b"invalid")[0] == 415
    assert not (store / "invalid.caibx").exists()


def test_a_name_with_a_backslash_is_400_for_every_method_and_writes_nothing(cli_server, tmp_path):
    """TestIndexServerPathTraversal: ``..\\..\\evil.caibx`` percent-encoded is a flat 400
    for PUT, GET and HEAD (no 404-or-400 answer telling whether a file exists)."""
    store = tmp_path / "store"
    store.mkdir()
    url = cli_server("index-server", "-s", store, "-w").url
    traversal = "/..%5C..%5Cevil.caibx"
    assert ask(url, "PUT", traversal, b"not-a-real-index")[0] == 400
    assert not (tmp_path / "evil.caibx").exists()
    assert list(tmp_path.rglob("*evil*")) == []
    assert ask(url, "GET", traversal)[0] == 400
    assert ask(url, "HEAD", traversal)[0] == 400


def test_head_tells_whether_an_index_exists(cli_server, cmd_data):
    """TestIndexServerHead."""
    url = cli_server("index-server", "-s", cmd_data).url
    assert ask(url, "HEAD", "/blob1.caibx")[0] == 200
    assert ask(url, "HEAD", "/does-not-exist.caibx")[0] == 404


def test_a_file_that_is_not_an_index_is_400_for_get_and_head(cli_server, tmp_path):
    """Issue 15 (desync answers 400 where we answered 500): a file in the store that
    is not an index, under any name, is the client's mistake, not the server's
    failure; a directory in its place is not one either."""
    store = tmp_path / "store"
    store.mkdir()
    (store / "notes.txt").write_bytes(b"just some text")
    (store / "broken.caibx").write_bytes(b"not an index at all")
    (store / "folder.caibx").mkdir()
    url = cli_server("index-server", "-s", store).url
    for name in ("notes.txt", "broken.caibx", "folder.caibx"):
        for method in ("GET", "HEAD"):
            assert ask(url, method, "/" + name)[0] == 400, (method, name)
