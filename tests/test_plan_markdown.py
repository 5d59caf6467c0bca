"""``plan --markdown``, the pull-request comment (issue 16, item 2): a totals row of
plain and network bytes, each task's mode, owner and pin changes, the context (the
manifest's path and its git commit), and text from elsewhere that can neither break
the table nor act as Markdown or HTML.

Expected numbers come from the files (index lengths, the stored chunk files) and
from the machine (``git rev-parse``, the current user), not from the renderer.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from desync_decl.reconcile.model import human_bytes
from tests.prune_sites import backdate
from tests.servers_cloud import cloud_env, moto_server, s3_bucket  # noqa: F401 - fixtures
from tests.servers_http import Step, scripted  # noqa: F401 - fixture
from tests.test_reconcile_kinds import blob, index_of, make_index, manifest, write

GIT = shutil.which("git")
needs_git = pytest.mark.skipif(GIT is None, reason="git is not installed")


def args(m: Path) -> list[str]:
    return [str(m), "--state-dir", str(m.parent / "state"), "--markdown"]


def rows(markdown: str) -> list[str]:
    """The table's rows after its header and delimiter row."""
    lines = markdown.splitlines()
    start = lines.index("|---|---|---|---|---|---|---|")
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith("|")), None)
    return lines[start + 1 : end]


def cells(row: str) -> list[str]:
    """A row's cells as GitHub splits them: at every ``|`` not escaped."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)[1:-1]]


def git(cwd: Path, *argv: str) -> str:
    identity = ("-c", "user.name=t", "-c", "user.email=t@example.com")
    done = subprocess.run(
        [GIT or "git", *identity, *argv], cwd=cwd, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


# --- the totals row -------------------------------------------------------------------


def test_the_totals_row_adds_plain_and_network_bytes_over_every_task(
    cli,
    tmp_path,
    moto_server,  # noqa: F811 - the fixture
    s3_bucket,  # noqa: F811 - the fixture
):
    """Two installs (one from S3, one from a local store) and a publish to S3: plain
    bytes of both fetches, the network bytes of the S3 one only (its chunk objects as
    S3 lists them), the upload apart."""
    remote = f"s3+{moto_server.endpoint}/{s3_bucket}/store"
    text = bytes(random.Random(1).choices(b"abcdefgh", k=200_000))  # compresses
    write(tmp_path / "a.img", text)
    assert cli("make", "-s", remote, tmp_path / "a.caibx", tmp_path / "a.img").code == 0
    a = index_of(tmp_path / "a.caibx")
    b = make_index(write(tmp_path / "b.img", blob(2)), tmp_path / "b.caibx", tmp_path / "l")
    write(tmp_path / "c.img", blob(3, 120_000))
    m = manifest(
        tmp_path,
        f"""\
        stores: {{remote: {{url: "{remote}"}}, local: {{url: l}}}}
        tasks:
        - name: from remote
          extract: {{index: a.caibx, path: out/a.img, stores: [remote]}}
        - name: from local
          extract: {{index: b.caibx, path: out/b.img, stores: [local]}}
        - name: publish c
          make: {{source: c.img, index: c.caibx, store: remote}}
        """,
    )
    r = cli("plan", *args(m), cwd=tmp_path)
    assert r.code == 0, r.err
    *tasks, total = rows(r.out)
    assert len(tasks) == 3
    listed = moto_server.admin.list_objects_v2(Bucket=s3_bucket, Prefix="store/")["Contents"]
    wire = sum(o["Size"] for o in listed if o["Key"].endswith(".cacnk"))
    assert wire < a.length  # compressed: the two numbers differ
    doc = json.loads(cli("plan", *args(m)[:-1], "--json").out)
    upload = doc["tasks"][2]["travel"]["upload"]
    assert cells(total) == [
        "",
        "**Total**",
        "",
        "",
        "",
        "",
        f"from stores: {human_bytes(a.length + b.length)}, network: {human_bytes(wire)}"
        f"<br>uploads: {human_bytes(upload['bytes'])},"
        f" network: about {human_bytes(upload['stored-bytes'])}",
    ]


def test_the_totals_row_of_a_plan_that_moves_nothing(cli, tmp_path):
    write(tmp_path / "a.img", blob(1))
    make_index(tmp_path / "a.img", tmp_path / "a.caibx", tmp_path / "s")
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: s}}
        tasks:
        - name: install
          extract: {index: a.caibx, path: a.img, stores: [s]}
        """,
    )
    r = cli("plan", *args(m))
    assert r.code == 0, r.err
    (task, total) = rows(r.out)
    assert cells(task)[0] == ":white_check_mark: no-op"
    assert cells(total)[1:] == ["**Total**", "", "", "", "", "nothing travels"]


# --- mode, owner and pin changes ------------------------------------------------------


def test_each_task_shows_its_mode_owner_and_pin_changes(cli, tmp_path):
    """A release: the installed v1 (recorded, mode 0644, owned by whoever runs this)
    goes to v2 with a new pin, mode 0600 and owner nobody."""
    v1 = make_index(write(tmp_path / "v1.img", blob(5)), tmp_path / "v1.caibx", tmp_path / "s")
    v2 = make_index(write(tmp_path / "v2.img", blob(6)), tmp_path / "v2.caibx", tmp_path / "s")
    old, new = v1.file_digest(), v2.file_digest()

    def release(index: str, pin: str, extra: str = "") -> Path:
        return manifest(
            tmp_path,
            f"""\
            stores: {{s: {{url: s}}}}
            tasks:
            - name: install
              extract: {{index: {index}, path: out/app.img, stores: [s], pin: "{pin}"{extra}}}
            - name: publish
              make: {{source: v2.img, index: rel/v2.caibx, store: s}}
            """,
        )

    first = cli("plan", *args(release("v1.caibx", old, ', mode: "0644"')))
    (install, publish, _) = rows(first.out)
    short = lambda digest: digest[: len("sha512-256:") + 12] + "…"  # noqa: E731
    me = pwd.getpwuid(os.geteuid()).pw_name
    us = grp.getgrgid(os.getegid()).gr_name
    # new: no before; the owner and group it will have are this process's
    assert cells(install)[5] == f"mode 0644<br>owner {me}<br>group {us}<br>pin {short(old)}"
    assert cells(publish)[5] == f"index {short(new)}"  # what a pin takes
    assert cli("apply", *args(release("v1.caibx", old, ', mode: "0644"'))[:-1]).code == 0
    os.chmod(tmp_path / "out" / "app.img", 0o644)

    m = release("v2.caibx", new, ', mode: "0600", owner: nobody')
    r = cli("plan", *args(m))
    assert r.code == 0, r.err
    (install, publish, _) = rows(r.out)
    assert cells(install)[0] == ":arrows_counterclockwise: update"
    assert cells(install)[5] == (
        f"mode 0644 → 0600<br>owner {me} → nobody<br>pin {short(old)} → {short(new)}"
    )
    assert cells(publish)[5] == ""  # converged: nothing changes


# --- context: the manifest and its commit ---------------------------------------------


def installing_a(folder: Path, **named: str) -> Path:
    """A manifest in ``folder`` with one task that installs ``a.img`` (made there,
    with its index and store): the plan of a manifest whose context is looked at."""
    write(folder / "a.img", blob(1))
    make_index(folder / "a.img", folder / "a.caibx", folder / "s")
    return manifest(
        folder,
        """\
        stores: {s: {url: s}}
        tasks:
        - name: install
          extract: {index: a.caibx, path: out/a.img, stores: [s]}
        """,
        **named,
    )


@needs_git
def test_the_context_names_the_manifest_and_the_commit_it_is_at(cli, tmp_path):
    repo = tmp_path / "repo"
    m = installing_a(repo, name="app.yaml")
    git(repo, "init", "-q")
    git(repo, "add", "app.yaml")
    git(repo, "commit", "-q", "-m", "release")
    commit = git(repo, "rev-parse", "--short", "HEAD")
    r = cli("plan", *args(m), "--tags", "all", cwd=tmp_path)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "### desync-decl plan: `repo/app.yaml`"
    assert lines[2] == f"Manifest `repo/app.yaml` at commit `{commit}`, tags `all`"
    assert lines[4] == "**1 to create, 0 to update, 0 to delete, 0 unchanged**"


def test_without_a_repository_or_git_the_context_has_no_commit(cli, tmp_path, monkeypatch):
    m = installing_a(tmp_path)
    no_repo = cli("plan", *args(m), cwd=tmp_path)
    assert no_repo.out.splitlines()[2] == "Manifest `m.yaml`"
    if GIT is not None:  # a repository, and no git to ask
        git(tmp_path, "init", "-q")
        git(tmp_path, "add", "m.yaml")
        git(tmp_path, "commit", "-q", "-m", "x")
    empty = tmp_path / "no-programs"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    no_git = cli("plan", *args(m), cwd=tmp_path)
    assert no_git.code == 0, no_git.err
    assert no_git.out.splitlines()[2] == "Manifest `m.yaml`"


# --- text from elsewhere --------------------------------------------------------------

HOSTILE = (
    "x | y\n| :x: forged row | z |\r\n<!-- `tick` *em* [link](http://e.test) $a$ ~s~ _u_ &amp; \\"
)


def test_a_servers_words_stay_in_their_cell_and_render_as_written(cli, tmp_path, scripted):  # noqa: F811
    """An index server answering with Markdown, HTML and line breaks in its error."""
    server = scripted(Step(500, HOSTILE.encode()))
    m = manifest(
        tmp_path,
        f"""\
        stores: {{s: {{url: s}}}}
        tasks:
        - name: install
          extract: {{index: "{server.url}app.caibx", path: out/a.img, stores: [s]}}
        """,
    )
    r = cli("plan", *args(m))
    assert r.code == 1
    (error, total) = rows(r.out)
    assert len(cells(error)) == 7 and cells(error)[0] == ":x: error"
    why = cells(error)[4]
    assert "\\<!-- \\`tick\\` \\*em\\* [link\\](http://e.test) \\$a\\$ \\~s\\~ \\_u\\_" in why
    assert "x \\| y \\| :x: forged row \\| z \\|" in why and "\\&amp; \\\\" in why
    assert "<!--" not in r.out.replace("\\<!--", "")
    assert cells(total)[1] == "**Total**"


def test_a_task_name_and_target_cannot_break_out_of_code_or_html(cli, tmp_path):
    """The manifest comes from a pull request: its names and paths are someone else's
    text too, in a cell, in code (the target), in HTML (a deletion's summary) and in a
    list (the handlers that would run)."""
    write(tmp_path / "x.img", blob(24))
    make_index(tmp_path / "x.img", tmp_path / "x.caibx", tmp_path / "store")
    backdate(tmp_path / "store")
    name = "drop </summary><!-- *old* | chunks"
    target = "out/a`b|c.img"
    write(tmp_path / "a.img", blob(1))
    make_index(tmp_path / "a.img", tmp_path / "a.caibx", tmp_path / "store")
    m = manifest(
        tmp_path,
        f"""\
        stores: {{s: {{url: store}}}}
        handlers:
          "# restart": {{command: ["true"]}}
        tasks:
        - name: "{name}"
          prune: {{store: s, keep: [a.caibx]}}
        - name: install
          extract: {{index: a.caibx, path: "{target}", stores: [s]}}
          notify: ["# restart"]
        """,
    )
    r = cli("plan", *args(m), cwd=tmp_path)
    assert r.code == 0, r.err
    (prune, install, _) = rows(r.out)
    assert cells(prune)[1] == "drop \\</summary>\\<!-- \\*old\\* \\| chunks"
    assert cells(install)[3] == "<code>out/a\\`b\\|c.img</code>"
    summary = next(line for line in r.out.splitlines() if line.startswith("<details>"))
    assert summary.startswith("<details><summary>drop &lt;/summary&gt;&lt;!-- *old* | chunks: ")
    assert summary.endswith(" to delete from <code>s</code></summary>")
    # a list item's text starting as a heading would: shown as written instead
    assert "- \\# restart: notified by install" in r.out.splitlines()
