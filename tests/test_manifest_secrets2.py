"""Pieces of a value read from the environment show in no output either (issue 12, item 7).

A message may name a part of a path or URL made from a secret: the directory a
target cannot be created in (``/proc/PART1`` for ``/proc/${env:SECRET}.img``
with SECRET=``PART1/PART2``), a file name, a stem, a percent-encoded form in a
URL. The first round hid whole values only; each piece is now hidden as well,
as ``(sensitive value)``, while the parts the manifest writes itself stay.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest

from desync_decl.manifest.loader import load_document
from desync_decl.manifest.sensitive import SENSITIVE, Redactor
from desync_decl.manifest.validate import env_rule
from tests.test_manifest_secrets import leaked, run_args
from tests.test_reconcile_kinds import blob, make_index, manifest, write

ONE, TWO = "AKIAPARTONEsecret", "PARTTWOsecret"
SECRET = f"{ONE}/{TWO}"


def test_a_piece_of_a_secret_in_an_error_is_hidden(cli, tmp_path, monkeypatch):
    write(tmp_path / "v1.img", blob(1))
    make_index(tmp_path / "v1.img", tmp_path / "app.caibx", tmp_path / "store")
    monkeypatch.setenv("SECRET", SECRET)
    m = manifest(
        tmp_path,
        """\
        stores:
          local: {url: store}
        tasks:
        - name: install
          extract: {index: app.caibx, path: "/proc/${env:SECRET}.img", stores: [local]}
        """,
    )
    for json in ([], ["--json"]):
        r = cli("apply", *run_args(m), *json, cwd=tmp_path)
        assert r.code != 0 and "Traceback" not in r.err
        assert leaked(r.out + r.err, ONE, TWO) == [], r.out + r.err
        assert SENSITIVE in r.out + r.err or "${env:SECRET}" in r.out + r.err


def redactor_for(tmp_path: Path, field: str, secret: str = SECRET) -> Redactor:
    text = f"tasks:\n- name: a\n  extract: {{index: i.caibx, path: '{field}', stores: [s]}}\n"
    doc, problems = load_document(text, str(tmp_path / "m.yaml"), {"SECRET": secret}, env_rule)
    assert doc is not None and problems == []
    return Redactor.of(doc.env, tmp_path)


@pytest.mark.parametrize(
    "message",
    [
        f"cannot create /proc/{ONE}: Permission denied",  # the parent of the path
        f"{TWO}.img: exists",  # its file name
        f"no store named '{TWO}'",  # its stem
        f"{ONE}: no such directory",  # the first segment alone
        f"GET http://h/x?path={quote('/srv/' + SECRET, safe='')}",  # percent-encoded
        f"GET http://h/{quote(SECRET, safe='')}/x",
    ],
)
def test_each_piece_a_message_may_show_is_hidden(tmp_path, message):
    redactor = redactor_for(tmp_path, "/srv/${env:SECRET}.img")
    shown = redactor.text(message)
    assert leaked(shown, ONE, TWO, quote(ONE), quote(TWO)) == [], shown


def test_only_pieces_of_secrets_are_hidden(tmp_path):
    redactor = redactor_for(tmp_path, "/proc/${env:SECRET}.img")
    assert redactor.text(f"open /proc/{ONE}: denied") == f"open {SENSITIVE}: denied"
    # what the manifest writes itself stays, and so does its own place
    assert redactor.text("/proc is mounted; .img files") == "/proc is mounted; .img files"
    where = f"{tmp_path}/m.yaml:3:4: bad"
    assert redactor.text(where) == where
    # a whole value still shows as its reference
    assert redactor.text(f"copy /proc/{SECRET}.img") == "copy /proc/${env:SECRET}.img"
    assert redactor.text(f"token {SECRET} used") == "token ${env:SECRET} used"


def test_a_piece_inside_a_longer_word_is_kept(tmp_path):
    redactor = redactor_for(tmp_path, "${env:SECRET}", "/data/store/x")
    assert redactor.text("open /data/store: denied") == f"open {SENSITIVE}: denied"
    assert redactor.text("datastore and stored") == "datastore and stored"
