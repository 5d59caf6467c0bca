"""A manifest from a pull request, planned by CI with secrets in its environment.

``${env:…}`` is read only where the schema allows it (credentials, paths, and
locations in whole parts), refused elsewhere before anything is contacted, and
a value read from the environment shows in no output: plan text, Markdown and
JSON, the saved plan, apply --check --diff, validate, and error messages, even
when a store echoes a credential back. A saved plan still notices a changed
value, and is written 0600.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from desync_decl.manifest import ManifestError, load_manifest
from tests.servers_http import serving
from tests.test_reconcile_kinds import blob, make_index, manifest, write

SECRET = "s3cr3t|Token-4711"  # '|' is escaped in a Markdown cell: the value must go first
PARTS = SECRET.split("|")
HIDDEN = "hidden-dir-0815"  # part of a directory read from the environment


class Recorder(ThreadingHTTPServer):
    """A store that records every request and answers each with a 500 whose reason
    phrase echoes the Authorization header, upper-cased (as a broken proxy might)."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Echo)
        self.requests: list[tuple[str, str, str]] = []  # method, path, Authorization

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _Echo(BaseHTTPRequestHandler):
    server: Recorder

    def do_HEAD(self) -> None:
        self._answer()

    def do_GET(self) -> None:
        self._answer()

    def _answer(self) -> None:
        auth = self.headers.get("Authorization", "")
        self.server.requests.append((self.command, self.path, auth))
        self.send_response(500, auth.upper() or "no credentials")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    with serving(Recorder()) as server:
        yield server


def leaked(text: str, *values: str) -> list[str]:
    """The values (or their lower/upper-cased forms) that appear in ``text``."""
    return [v for v in values if v.lower() in text.lower()]


def run_args(m: Path) -> list[str]:
    return [str(m), "--state-dir", str(m.parent / "state")]


def test_values_read_from_the_environment_show_in_no_output(cli, tmp_path, recorder, monkeypatch):
    work = tmp_path / f"work-{HIDDEN}"
    write(work / "v1.img", blob(1))
    make_index(work / "v1.img", work / "app.caibx", work / "store")
    monkeypatch.setenv("SECRET", SECRET)
    monkeypatch.setenv("WORK", str(work))
    monkeypatch.setenv("STORE_HOST", recorder.host)
    m = manifest(
        tmp_path,
        """\
        stores:
          local: {url: "${env:WORK}/store"}
          remote:
            url: "http://${env:STORE_HOST}/store"
            options: {http_auth: "Bearer ${env:SECRET}", retries: 0}
        tasks:
        - name: publish
          make: {source: "${env:WORK}/v1.img", index: "${env:WORK}/rel/app.caibx", store: local}
        - name: install
          extract: {index: "${env:WORK}/app.caibx", path: "${env:WORK}/app.img", stores: [local]}
        - name: mirror
          extract: {index: "${env:WORK}/app.caibx", path: "${env:WORK}/m.img", stores: [remote]}
        """,
    )
    saved = tmp_path / "plan.json"
    runs = {
        "plan": cli("plan", *run_args(m), "--out", saved, cwd=tmp_path),
        "plan --markdown": cli("plan", *run_args(m), "--markdown", cwd=tmp_path),
        "plan --json": cli("plan", *run_args(m), "--json", cwd=tmp_path),
        "apply --check --diff": cli("apply", *run_args(m), "--check", "--diff", cwd=tmp_path),
        "apply --check --json": cli("apply", *run_args(m), "--check", "--json", cwd=tmp_path),
        "validate": cli("validate", m, cwd=tmp_path),
    }
    # refused before anything is written: the mirror's error ends the run
    runs["apply --plan"] = cli("apply", *run_args(m), "--plan", saved, cwd=tmp_path)
    assert runs["apply --plan"].code == 1 and "refusing plan" in runs["apply --plan"].err
    # the credential went to the store it is for, and the store sent it back
    assert recorder.requests and all(a == f"Bearer {SECRET}" for _, _, a in recorder.requests)
    for verb, r in runs.items():
        assert "Traceback" not in r.err, verb
        assert leaked(r.out + r.err, *PARTS, HIDDEN, recorder.host) == [], verb
    assert leaked(saved.read_text(), *PARTS, HIDDEN, recorder.host) == []
    # shown as written instead: the target, the store's URL, the echoed header
    text = runs["plan"].out
    assert "[install] extract ${env:WORK}/app.img" in text
    assert "http://${env:STORE_HOST}/store/" in text and "Bearer ${env:SECRET}" in text
    assert "${env:WORK}/store" in runs["plan --json"].out  # the make's facts name its store


def test_a_saved_plan_holds_no_value_but_is_refused_when_one_changes(cli, tmp_path, monkeypatch):
    write(tmp_path / "v1.img", blob(2))
    m = manifest(
        tmp_path,
        """\
        stores: {local: {url: "${env:CHUNKS}"}}
        tasks:
        - name: publish
          make: {source: v1.img, index: app.caibx, store: local}
        """,
    )
    first, second = tmp_path / f"a-{HIDDEN}", tmp_path / f"b-{HIDDEN}"
    saved = tmp_path / "plan.json"
    monkeypatch.setenv("CHUNKS", str(first))
    assert cli("plan", *run_args(m), "--out", saved).code == 0
    assert leaked(saved.read_text(), HIDDEN) == [] and "${env:CHUNKS}" in saved.read_text()

    monkeypatch.setenv("CHUNKS", str(second))
    r = cli("apply", *run_args(m), "--plan", saved)
    assert r.code == 1 and "'publish': its facts changed since the plan was made" in r.err
    assert leaked(r.out + r.err, HIDDEN) == [] and not second.exists()

    monkeypatch.setenv("CHUNKS", str(first))
    r = cli("apply", *run_args(m), "--plan", saved)
    assert r.code == 0, r.err
    assert first.is_dir() and (tmp_path / "app.caibx").exists()


def test_manifest_errors_show_references_not_values(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SECRET", SECRET)
    monkeypatch.setenv("WORK", str(tmp_path / f"work-{HIDDEN}"))
    m = manifest(
        tmp_path,
        """\
        stores:
          s:
            url: "${env:WORK}/store"
            options: {connections: "${env:SECRET}"}
        tasks:
        - name: a
          extract: {index: i.caibx, path: "${env:WORK}/x.img", stores: [s]}
        - name: b
          extract: {index: i.caibx, path: "${env:WORK}/x.img", stores: [s]}
        """,
    )
    for verb in ("validate", "plan"):
        r = cli(verb, m, cwd=tmp_path)
        assert r.code == 1 and leaked(r.out + r.err, *PARTS, HIDDEN) == [], verb
        assert "'options.connections' of store 's': expected an integer," in r.err
        assert "got '${env:SECRET}' (a string)" in r.err
        assert "${env:WORK}/x.img is also written by task 'a'" in r.err


def test_references_where_the_schema_allows_none_are_refused_and_nothing_is_contacted(
    cli, tmp_path, recorder, monkeypatch
):
    monkeypatch.setenv("SECRET", SECRET)
    m = manifest(
        tmp_path,
        f"""\
        stores: {{remote: {{url: "http://{recorder.host}/store"}}}}
        tasks:
        - name: "leak ${{env:SECRET}}"
          tags: [ci, "${{env:SECRET}}"]
          extract:
            index: "http://{recorder.host}/app.caibx?k=${{env:SECRET}}"
            path: out.img
            stores: [remote]
        """,
    )
    name, tag, query = references(m, "${env:SECRET}")
    for verb in (["validate"], ["plan", "--markdown"], ["apply", "--check"]):
        r = cli(*verb, *([m] if verb == ["validate"] else run_args(m)), cwd=tmp_path)
        assert r.code == 1 and "Traceback" not in r.err and SECRET not in r.out + r.err
        not_allowed = "${env:SECRET} is not allowed here: only credentials, local paths, locations"
        assert f"m.yaml:{name}: 'name' of task 'leak ${{env:SECRET}}': {not_allowed}" in r.err
        assert f"m.yaml:{tag}: 'tags[1]' of task 'leak ${{env:SECRET}}': {not_allowed}" in r.err
        assert (
            f"m.yaml:{query}: 'extract.index' of task 'leak ${{env:SECRET}}': ${{env:SECRET}}"
            " may stand only for a whole location"
        ) in r.err
    assert recorder.requests == []


def references(path: Path, reference: str) -> list[str]:
    """``LINE:COL`` of each place ``reference`` is written in the file."""
    lines = path.read_text().splitlines()
    return [
        f"{n}:{line.index(reference) + 1}" for n, line in enumerate(lines, 1) if reference in line
    ]


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.example/${env:SECRET}",
        "https://evil.example/store?k=${env:SECRET}",
        "https://${env:SECRET}.evil.example/store",
        "https://evil.example:${env:SECRET}/store",
        "https://${env:SECRET}@evil.example/store",
        "${env:HOST}${env:SECRET}",
        "${env:SECRET}.evil.example/store",
    ],
)
def test_a_location_may_not_put_a_value_inside_a_url(tmp_path, url):
    path = write(tmp_path / "m.yaml", f'version: 1\nstores: {{s: {{url: "{url}"}}}}\n'.encode())
    with pytest.raises(ManifestError) as e:
        load_manifest(path, env={"SECRET": SECRET, "HOST": "https://evil.example/"})
    assert {p.message.split(": ", 1)[0] for p in e.value.problems} == {"'url' of store 's'"}
    assert SECRET not in str(e.value)


@pytest.mark.parametrize(
    ("url", "expanded"),
    [
        ("${env:HOST}", "https://mirror.example/store"),
        ("${env:HOST}/chunks", "https://mirror.example/store/chunks"),
        ("https://${env:NAME}/store", "https://mirror.example/store"),
        ("https://${env:NAME}:8443/store", "https://mirror.example:8443/store"),
        ("sftp://deploy@${env:NAME}/srv/store", "sftp://deploy@mirror.example/srv/store"),
    ],
)
def test_a_location_may_take_a_whole_value_a_leading_part_or_a_host_shown_as_written(
    tmp_path, url, expanded
):
    path = write(tmp_path / "m.yaml", f'version: 1\nstores: {{s: {{url: "{url}"}}}}\n'.encode())
    env = {"HOST": "https://mirror.example/store", "NAME": "mirror.example"}
    m = load_manifest(path, env=env)
    assert m.stores["s"].url == expanded
    assert m.redactor.text(f"GET {expanded}/x.cacnk: 404") == f"GET {url}/x.cacnk: 404"


def test_a_seed_is_a_location_too_its_index_is_derived_from_it(tmp_path):
    text = """\
        stores: {s: {url: store}}
        tasks:
        - name: x
          extract:
            index: app.caibx
            path: app.img
            stores: [s]
            seeds: ["https://evil.example/${env:SECRET}"]
        """
    with pytest.raises(ManifestError) as e:
        load_manifest(manifest(tmp_path, text), env={"SECRET": SECRET})
    assert "'extract.seeds[0]' of task 'x'" in str(e.value) and SECRET not in str(e.value)


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "replacing a 0644 file"])
def test_a_saved_plan_is_0600_whatever_the_umask(cli, tmp_path, existing):
    m = manifest(tmp_path, "stores: {s: {url: store}}\ntasks:\n- {name: v, verify: {store: s}}\n")
    (tmp_path / "store").mkdir()
    saved = tmp_path / "plan.json"
    if existing:
        saved.write_text("{}")
        saved.chmod(0o644)
    umask = os.umask(0)
    try:
        r = cli("plan", *run_args(m), "--out", saved)
    finally:
        os.umask(umask)
    assert r.code == 0, r.err
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".plan")) == []
