"""Store and index locations: malformed URLs and credentials in URLs (issue 12, items 14, 16).

A bracketed host that is no IP address, an unbalanced bracket or a port out
of range is one error line in every verb that takes a location, and
``validate`` reports it at its place in the manifest (before, ``validate``
said ok and ``extract``/``plan`` died with a traceback). A password in a
store URL (``http://user:pass@``, ``s3+http://KEY:SECRET@``) is masked
wherever the location is shown: errors, ``info --json``, plans in every form.
The stores are real servers on 127.0.0.1 (nginx, a server answering 404,
moto, a registry-shaped server answering 503) or a port nobody listens on.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import StoreError
from desync_decl.stores.location import Opener
from tests import servers_cloud, servers_http
from tests.test_reconcile_kinds import manifest

closed_port, unavailable_server = servers_cloud.closed_port, servers_cloud.unavailable_server
moto_server, s3_bucket = servers_cloud.moto_server, servers_cloud.s3_bucket
cloud_env, nginx, scripted = servers_cloud.cloud_env, servers_http.nginx, servers_http.scripted

MALFORMED = [
    "http://[::1;x]/s",
    "http://[/x",
    "http://[::1]:99999/",
    "https://[::1]x/s",
    "http://127.0.0.1:0/s",
    "s3+http://[::1;x]/bucket",
    "sftp://[/srv/store",
    "ssh://host:70000/srv/store",
    "oci+http://[::1;x]/repo",
    "gs://[/bucket",
]
SECRET = "hunter2-secret"
A_CHUNK = ChunkID(bytes(range(32)))


@pytest.fixture
def made(cli, tmp_path) -> tuple[Path, Path]:
    """An index of a small blob and the local store holding its chunks."""
    blob, index, store = tmp_path / "blob.bin", tmp_path / "blob.caibx", tmp_path / "store"
    blob.write_bytes(os.urandom(200_000))
    assert cli("make", "-s", store, index, blob).code == 0
    return index, store


def refused_location(err: str, location: str) -> None:
    """One line saying the location itself is wrong (not that a connection failed)."""
    line = one_error_line(err, location)
    assert "invalid" in line or "out of range" in line, err


def one_error_line(err: str, *wanted: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("desync-decl: error: "), err
    for text in wanted:
        assert text in lines[0], err
    return lines[0]


# --- malformed locations ------------------------------------------------------------


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_store_url_is_one_error_line(url, cli, made, tmp_path):
    index, _ = made
    result = cli("extract", "-s", url, index, tmp_path / "out")
    assert result.code == 1
    refused_location(result.err, url)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("url", MALFORMED)
def test_a_malformed_index_url_is_one_error_line(url, cli, made, tmp_path):
    _, store = made
    location = url.rstrip("/") + "/app.caibx"
    result = cli("extract", "-s", store, location, tmp_path / "out")
    assert result.code == 1
    refused_location(result.err, location)


@pytest.mark.parametrize("url", MALFORMED)
def test_config_refuses_a_malformed_store_url(url, cli):
    result = cli("config", "--store", url)
    assert result.code == 1 and result.out == ""
    refused_location(result.err, url)


BAD_MANIFEST = """\
stores:
  good: {url: store}
  bad: {url: "http://[::1;x]/s"}
tasks:
- name: get
  extract: {index: "http://[/x/app.caibx", path: out/app.img, stores: [good]}
- name: seeded
  extract:
    index: app.caibx
    path: out/b.img
    stores: [good]
    seeds: [{index: "http://[::1]:99999/a.caibx", file: old.img}]
- name: warm
  cache: {indexes: ["https://[::1]x/b.caibx"], stores: [good], cache: good}
"""


def test_validate_reports_each_malformed_url_at_its_place(cli, tmp_path):
    path = manifest(tmp_path, BAD_MANIFEST)
    result = cli("validate", path)
    assert result.code == 1
    # in file order; line numbers count the two lines manifest() puts in front
    assert result.err.splitlines() == [
        f"{path}:5:14: 'url' of store 'bad': http://[::1;x]/s: invalid URL:"
        " '::1;x' does not appear to be an IPv4 or IPv6 address",
        f"{path}:8:20: 'extract.index' of task 'get': http://[/x/app.caibx:"
        " invalid URL: Invalid IPv6 URL",
        f"{path}:14:21: 'extract.seeds[0].index' of task 'seeded':"
        " http://[::1]:99999/a.caibx: port 99999 is out of range (1-65535)",
        f"{path}:16:21: 'cache.indexes[0]' of task 'warm': https://[::1]x/b.caibx:"
        " invalid authority '[::1]x' (expected [user[:password]@]host[:port])",
    ]


@pytest.mark.parametrize("verb", ["plan", "apply"])
def test_plan_and_apply_refuse_the_manifest_without_a_traceback(verb, cli, tmp_path):
    path = manifest(tmp_path, BAD_MANIFEST)
    result = cli(verb, path)
    assert result.code == 1
    assert "Traceback" not in result.err
    assert f"{path}:5:14: 'url' of store 'bad'" in result.err
    assert not (tmp_path / "out").exists()


# --- credentials in locations -------------------------------------------------------


def assert_masked(text: str, secret: str = SECRET) -> None:
    assert secret not in text
    assert ":***@" in text, text


def test_a_refused_connection_does_not_show_the_password(cli, made, closed_port, tmp_path):
    index, _ = made
    store = f"http://user:{SECRET}@127.0.0.1:{closed_port}/store"
    result = cli("extract", "-e", "1", "-s", store, index, tmp_path / "out")
    assert result.code == 1
    assert_masked(one_error_line(result.err, "user:***@127.0.0.1", "connection refused"))


def test_a_missing_index_does_not_show_the_password(cli, scripted, tmp_path):
    server = scripted(servers_http.Step(status=404, body=b"no such index"))
    location = server.url.replace("http://", f"http://user:{SECRET}@") + "app.caibx"
    result = cli("extract", "-s", tmp_path / "store", location, tmp_path / "out")
    assert result.code == 1
    assert_masked(one_error_line(result.err, "no store there"))
    assert server.requests, "the request reached the server"


def test_s3_errors_do_not_show_the_secret(cli, made, closed_port, tmp_path):
    index, _ = made
    store = f"s3+http://KEY:{SECRET}@127.0.0.1:{closed_port}/bucket"
    result = cli("extract", "-e", "1", "-s", store, index, tmp_path / "out")
    assert result.code == 1
    assert_masked(one_error_line(result.err, "KEY:***@127.0.0.1"))


def test_a_missing_s3_bucket_does_not_show_the_secret(cli, made, moto_server, s3_bucket, tmp_path):
    index, _ = made
    store = f"s3+http://KEY:{SECRET}@{moto_server.hostport}/no-such-bucket"
    result = cli("extract", "-s", store, index, tmp_path / "out")
    assert result.code == 1
    assert_masked(one_error_line(result.err, "does not exist"))


@pytest.mark.parametrize(
    "template",
    [
        "http://user:{secret}@{hostport}/store",
        "https://user:{secret}@{hostport}/store",
        "s3+http://KEY:{secret}@{hostport}/bucket/store",
        "oci+http://user:{secret}@{hostport}/repo",
    ],
)
def test_a_store_names_itself_and_fails_without_the_password(
    template, unavailable_server, cloud_env
):
    """``str(store)`` (every message and progress line) and its errors, per backend."""
    hostport = unavailable_server.endpoint.removeprefix("http://")
    location = template.format(secret=SECRET, hostport=hostport)
    store = Opener(overrides={"error_retry": 1}).chunk_store(location)
    try:
        assert_masked(str(store))
        with pytest.raises(StoreError) as failure:
            store.get_chunk(A_CHUNK)
        assert_masked(str(failure.value))
    finally:
        store.close()


@pytest.fixture
def served_with_password(made, nginx) -> str:
    """The store of ``made`` served by nginx, as a URL with a user and password
    (nginx asks for none: the client sends them all the same)."""
    _, store = made
    for chunk in store.rglob("*.cacnk"):
        target = nginx.root / chunk.relative_to(store)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(chunk.read_bytes())
    return nginx.url.replace("http://", f"http://user:{SECRET}@")


def test_info_json_does_not_show_the_password(cli, made, served_with_password):
    index, _ = made
    result = cli("info", "--json", "-s", served_with_password, index)
    assert result.code == 0, result.err
    assert_masked(result.out)
    assert json.loads(result.out)["stores"][0]["missing"] == 0


def test_plans_do_not_show_the_password(cli, made, served_with_password, closed_port, tmp_path):
    """Text, JSON, Markdown and the saved plan, for a store that answers (what travels
    from it) and one that refuses (the error)."""
    index, _ = made
    up = served_with_password
    down = f"http://user:{SECRET}@127.0.0.1:{closed_port}/"
    path = manifest(
        tmp_path,
        f"""\
        stores:
          up: {{url: "{up}"}}
          down: {{url: "{down}", options: {{error_retry: 1}}}}
        tasks:
        - name: from up
          extract: {{index: {index}, path: out/a.img, stores: [up]}}
        - name: from down
          extract: {{index: {index}, path: out/b.img, stores: [down]}}
        """,
    )
    saved, state = tmp_path / "plan.json", ("--state-dir", tmp_path / "state")
    outputs = [
        cli("plan", *state, path),
        cli("plan", *state, "--json", path),
        cli("plan", *state, "--markdown", "--out", saved, path),
    ]
    for result in outputs:
        assert result.code == 1  # the task from "down" fails
        assert_masked(result.out + result.err)
    assert_masked(saved.read_text())
    travel = json.loads(outputs[1].out)["tasks"][0]["travel"]
    assert "user:***@127.0.0.1" in json.dumps(travel)


def test_plans_do_not_show_the_password_of_an_index_url(
    cli, made, served_with_password, nginx, tmp_path
):
    """An index read over HTTP with a password: plan text, JSON, Markdown, the saved
    plan and apply's report name it masked."""
    index, _ = made
    (nginx.root / "app.caibx").write_bytes(index.read_bytes())
    location = f"{served_with_password.rstrip('/')}/app.caibx"
    path = manifest(
        tmp_path,
        f"""\
        stores:
          up: {{url: "{served_with_password}"}}
        tasks:
        - name: from an index url
          extract: {{index: "{location}", path: out/a.img, stores: [up]}}
        - name: pinned to another digest (its error names the index)
          extract:
            index: "{location}"
            path: out/b.img
            stores: [up]
            pin: "sha256:{"0" * 64}"
        """,
    )
    saved, state = tmp_path / "plan.json", ("--state-dir", tmp_path / "state")
    outputs = [
        cli("plan", *state, path),
        cli("plan", *state, "--json", path),
        cli("plan", *state, "--markdown", "--out", saved, path),
        cli("apply", *state, "--check", "--diff", path),
        cli("apply", *state, path),
    ]
    for result in outputs:
        assert result.code == 1  # the pinned task fails
        assert_masked(result.out + result.err)
    assert_masked(saved.read_text())
    assert (tmp_path / "out" / "a.img").exists()
