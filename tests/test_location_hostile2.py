"""Locations the first round of issue 12 still let through (items 14, 16).

A password with an unencoded ``/``, ``?`` or ``#`` makes a URL whose authority
ends inside the password: it was printed whole. A one-slash typo
(``http:/user:pw@host``) was taken for a local path and printed whole too. A
store-options key of the config file was quoted raw in its errors. A host with
a ``%`` passed ``validate`` and failed deep inside the HTTP library; a SIGHUP
reload accepted it. The stores are real: a port nobody listens on, a local
store served by a real chunk-server.
"""

from __future__ import annotations

import json
import signal

import pytest

from tests import servers_http, test_location_hostile, test_server_hostile
from tests.test_location_hostile import one_error_line
from tests.test_reconcile_kinds import manifest
from tests.test_servers import ask, chunk_path

made, store = test_location_hostile.made, test_server_hostile.store  # fixtures
cli_server = servers_http.cli_server

PASSWORD = "se/cret3"
BROKEN = [  # each does not parse; the password must never show, not even a piece of it
    ("http://user:se/cret3@127.0.0.1:1/s", "cret3"),
    ("https://user:pw?hidden9@127.0.0.1:1/s", "hidden9"),
    ("s3+http://KEY:sec#ret77@127.0.0.1:1/bucket", "ret77"),
    ("http:/user:typosecret@127.0.0.1:1/s", "typosecret"),
    ("https:/user:se/cret3@127.0.0.1:1/s", "cret3"),
]
BAD_HOSTS = ["https://%zz/s", "http://ho%41st/s", "http://a!b/s", "oci+https://reg;x/repo"]


@pytest.mark.parametrize(("url", "secret"), BROKEN)
@pytest.mark.parametrize("verb", ["extract", "config"])
def test_a_location_that_does_not_parse_never_shows_its_password(
    url,
    secret,
    verb,
    cli,
    made,
    tmp_path,
):
    argv = ["config", "--store", url] if verb == "config" else ["extract", "-s", url]
    if verb == "extract":
        argv += [str(made[0]), str(tmp_path / "out")]
    result = cli(*argv)
    assert result.code == 1 and result.out == ""
    line = one_error_line(result.err, "invalid URL", ":***@")
    assert secret not in line


@pytest.mark.parametrize(("url", "secret"), BROKEN[:3])
def test_free_text_masks_a_password_holding_a_slash(url, secret):
    from desync_decl.stores.url import mask_credentials

    shown = mask_credentials(f"cannot reach {url}: refused")
    assert secret not in shown and ":***@127.0.0.1:1/" in shown
    # a URL that parses, with an '@' in its path, keeps its path
    text = "http://host:8080/a@b/c and http://u:pw@host:80/x@y"
    assert mask_credentials(text) == "http://host:8080/a@b/c and http://u:***@host:80/x@y"


@pytest.mark.parametrize("verb", ["config", "info"])
def test_the_config_files_store_options_key_is_masked_in_its_errors(
    verb,
    cli,
    made,
    tmp_path,
):
    location = "http://user:pw1secret@127.0.0.1:1/s"
    config = tmp_path / "cfg.json"
    config.write_text(json.dumps({"store-options": {location: {"encryption-key": "k" * 16}}}))
    if verb == "config":
        argv = ["--config", str(config), "config", "--store", location]
    else:
        argv = ["--config", str(config), "info", "-s", location, str(made[0])]
    result = cli(*argv)
    assert result.code == 1
    assert "pw1secret" not in result.err + result.out
    one_error_line(result.err, "store-options 'http://user:***@127.0.0.1:1/s'")


@pytest.mark.parametrize("url", BAD_HOSTS)
def test_a_host_with_characters_no_host_has_is_refused(url, cli, made, tmp_path):
    result = cli("extract", "-s", url, made[0], tmp_path / "out")
    assert result.code == 1
    one_error_line(result.err, "invalid authority")


def test_validate_reports_a_percent_host_at_its_place(cli, tmp_path):
    path = manifest(
        tmp_path,
        "stores:\n  good: {url: store}\n  bad: {url: 'https://%zz/s'}\n"
        "tasks:\n- name: get\n  extract: {index: a.caibx, path: out/a.img, stores: [good, bad]}\n",
    )
    for verb in ("validate", "plan"):
        result = cli(verb, path)
        assert result.code == 1, verb
        assert "Traceback" not in result.err and "NoneType" not in result.err
        assert f"{path}:5:14: 'url' of store 'bad': https://%zz/s: invalid authority" in result.err


def test_sighup_with_a_percent_host_keeps_the_old_stores(
    tmp_path,
    store,
    cli_server,
):
    root, chunks = store
    store_file = tmp_path / "stores.json"
    store_file.write_text(json.dumps({"stores": [str(root)]}))
    process = cli_server("chunk-server", "--store-file", store_file)
    store_file.write_text(json.dumps({"stores": ["https://%zz/s", str(root)]}))
    process.signal(signal.SIGHUP)
    process.wait_for("keeping the current stores")
    assert process.process.poll() is None
    assert ask(process.url, "GET", chunk_path(chunks[0]))[:2] == (200, chunks[0].stored())
    assert process.stop() == 0
