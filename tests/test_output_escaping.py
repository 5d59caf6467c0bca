"""Text a store sends never acts on the terminal (issue 12, item 15).

A hostile store answers every chunk, index and manifest request with an error whose
reason phrase and body hold terminal controls: clear screen, a carriage return and
line breaks before a fake "All chunks verified OK", C1 controls, bidi overrides. The
real ``python -m desync_decl`` runs ``verify``, ``extract``, ``plan`` and ``apply``
against it with real pipes: what they print must show that text escaped, on the
error's own line, never obey it.
"""

from __future__ import annotations

import json
import os
import re
import socketserver
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.hostile_archives import MemNode, archive
from tests.servers_http import serving
from tests.test_reconcile_kinds import blob, make_index, manifest, write

FAKE = "All chunks verified OK"
# A status line is Latin-1: ESC, CR, a C1 CSI (0x9b) and BEL fit in a reason phrase.
EVIL_REASON = f"Oops\x1b[2J\x1b[H\r{FAKE}\x9b1m\x07"
# A body (and a registry's JSON message) can carry anything, line breaks included.
EVIL_TEXT = f"\x1b[2J\x1b[H\r\n{FAKE}\r\n\u202egpj.exe\u2066\u2069 \x9b31m\x7f\x00 done"
# What must never reach a terminal: C0 but newline/tab, DEL, C1, bidi marks and controls.
RAW_CONTROL = re.compile(
    r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]"
)
CHUNK_TAG = "ab" * 32 + ".cacnk"  # a compressed chunk with a SHA-512/256 id


class HostileStore(socketserver.ThreadingTCPServer):
    """An HTTP chunk/index store and OCI registry on 127.0.0.1 that fails every request
    with terminal controls in its words. OCI tag lists are answered (one chunk), so
    ``verify`` has a chunk to read."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        request_line = self.rfile.readline(65536).decode("latin-1")
        while self.rfile.readline(65536) not in (b"\r\n", b"\n", b""):
            pass  # headers; every request here is a GET or HEAD without a body
        method, path, *_ = [*request_line.split(), "", ""]
        if "/tags/list" in path:
            self._send(200, "OK", json.dumps({"name": "repo", "tags": [CHUNK_TAG]}).encode())
        elif path.startswith("/v2/"):  # a registry's error document: JSON, any character
            errors = {"errors": [{"code": "UNKNOWN", "message": EVIL_TEXT}]}
            self._send(500, EVIL_REASON, json.dumps(errors).encode())
        else:
            self._send(500, EVIL_REASON, EVIL_TEXT.encode(), head=method == "HEAD")

    def _send(self, status: int, reason: str, body: bytes, *, head: bool = False) -> None:
        head_lines = (
            f"HTTP/1.1 {status} {reason}\r\nContent-Length: {len(body)}\r\n"
            "Content-Type: application/json\r\nConnection: close\r\n\r\n"
        )
        self.wfile.write(head_lines.encode("latin-1") + (b"" if head else body))


@pytest.fixture
def hostile() -> Iterator[HostileStore]:
    with serving(HostileStore()) as server:
        yield server


@pytest.fixture
def config(tmp_path, hostile) -> Path:
    """One attempt per request (a 500 is transient): the test does not wait for retries."""
    once = {"error-retry": 1}
    path = tmp_path / "config.json"
    path.write_text(
        json.dumps(
            {
                "store-options": {
                    f"{hostile.url}/store": once,
                    f"{hostile.url}/idx": once,
                    f"oci+{hostile.url}/repo": once,
                }
            }
        )
    )
    return path


def run(config: Path, cwd: Path, *argv: object) -> subprocess.CompletedProcess[str]:
    """The real CLI with real pipes: what a terminal or a CI log would receive, decoded
    without newline translation (a ``\r`` stays a ``\r``)."""
    done = subprocess.run(
        [sys.executable, "-m", "desync_decl", "--config", config, *map(str, argv)],
        cwd=cwd,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(cwd)},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=120,
    )
    out, err = done.stdout.decode(), done.stderr.decode()
    return subprocess.CompletedProcess(done.args, done.returncode, out, err)


def assert_shown_safely(result: subprocess.CompletedProcess[str]) -> None:
    """No control reaches the terminal raw, the fake line is no line of its own, and the
    store's words are still there to read, escaped."""
    for name, text in (("stdout", result.stdout), ("stderr", result.stderr)):
        raw = RAW_CONTROL.search(text)
        assert raw is None, f"{name} holds a raw {raw.group()!r}: {text!r}"
        for line in re.split(r"[\r\n]", text):  # where a terminal starts a line
            assert not line.strip().startswith(FAKE), f"{name} has a fake line: {text!r}"
    shown = result.stdout + result.stderr
    assert "\\x1b[2J" in shown, f"the store's answer is not shown: {shown!r}"


@pytest.fixture
def index(tmp_path) -> Path:
    """A local index of a small blob whose chunks only the hostile store could hold."""
    data = write(tmp_path / "app.img", blob(15, 100_000))
    made = tmp_path / "app.caibx"
    make_index(data, made)
    return made


@pytest.mark.parametrize("debug", [[], ["--debug"]], ids=["plain", "debug"])
def test_verify_shows_a_registrys_error_message_escaped(tmp_path, hostile, config, debug):
    r = run(config, tmp_path, *debug, "verify", "-s", f"oci+{hostile.url}/repo")
    assert r.returncode == 1
    assert_shown_safely(r)


def test_extract_shows_a_chunk_stores_error_escaped(tmp_path, hostile, config, index):
    r = run(config, tmp_path, "extract", "-s", f"{hostile.url}/store", index, tmp_path / "out")
    assert r.returncode == 1
    assert_shown_safely(r)
    assert not (tmp_path / "out").exists()


def test_extract_shows_an_index_stores_error_escaped(tmp_path, hostile, config):
    index_url = f"{hostile.url}/idx/app.caibx"
    r = run(config, tmp_path, "extract", "-s", f"{hostile.url}/store", index_url, tmp_path / "o")
    assert r.returncode == 1
    assert_shown_safely(r)


@pytest.fixture
def hostile_manifest(tmp_path, hostile, index) -> Path:
    """One task whose index is on the hostile store, one whose chunks are."""
    return manifest(
        tmp_path,
        f"""\
        stores: {{s: {{url: "{hostile.url}/store"}}}}
        tasks:
        - name: remote index
          extract: {{index: "{hostile.url}/idx/app.caibx", path: out/a.img, stores: [s]}}
        - name: remote chunks
          extract: {{index: {index.name}, path: out/b.img, stores: [s]}}
        """,
    )


@pytest.mark.parametrize("form", [[], ["--markdown"]], ids=["text", "markdown"])
def test_plan_shows_store_errors_escaped(tmp_path, config, hostile_manifest, form):
    r = run(config, tmp_path, "plan", hostile_manifest, "--state-dir", tmp_path / "st", *form)
    assert r.returncode == 1
    assert_shown_safely(r)


def test_apply_shows_store_errors_escaped(tmp_path, config, hostile_manifest):
    r = run(config, tmp_path, "apply", hostile_manifest, "--state-dir", tmp_path / "st")
    assert r.returncode == 1
    assert_shown_safely(r)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="xattrs are restored as root (CI runs as root)")
def test_log_warnings_show_an_archives_names_escaped(tmp_path, config):
    """A warning logged while unpacking names an xattr the archive chose."""
    hostile_name = f"bogus.{EVIL_TEXT}".encode()
    tree = MemNode.dir(children={b"f": MemNode.file(b"data", xattrs=((hostile_name, b"v"),))})
    (tmp_path / "a.catar").write_bytes(archive(tree))
    r = run(config, tmp_path, "untar", tmp_path / "a.catar", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    assert "xattr bogus." in r.stderr and "not set" in r.stderr
    assert_shown_safely(r)


def test_json_output_keeps_a_stores_words_exact_and_escaped(tmp_path, config, hostile_manifest):
    """JSON escapes controls itself (``\\u001b``): a script reads the store's words exactly."""
    r = run(config, tmp_path, "plan", hostile_manifest, "--state-dir", tmp_path / "st", "--json")
    assert r.returncode == 1
    assert RAW_CONTROL.search(r.stdout) is None
    messages = [task["message"] for task in json.loads(r.stdout)["tasks"]]
    assert any("\x1b[2J" in m and "\u202e" in m for m in messages), messages


@pytest.mark.parametrize("verb", ["validate", "plan"])
def test_a_manifests_own_words_are_shown_escaped_in_its_errors(tmp_path, config, verb):
    """A manifest from a pull request is hostile text too: a key that holds line breaks
    and a fake line stays inside its error's one line."""
    bad_key = json.dumps(f"bogus\x1b[2J\r\n{FAKE}")
    (tmp_path / "m.yaml").write_text(f"version: 1\n{bad_key}: 1\ntasks: []\nstray: 2\n")
    r = run(config, tmp_path, verb, tmp_path / "m.yaml")
    assert r.returncode == 1
    assert "m.yaml:2:" in r.stderr
    assert_shown_safely(r)
