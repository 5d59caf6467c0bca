"""``plan`` and ``apply`` through the CLI: output forms, exit codes, --check, saved
plans, drift, tags, parallel runs with a failing task, and the quick start."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from desync_decl.reconcile.model import human_bytes
from tests.conftest import ROOT
from tests.prune_sites import backdate
from tests.test_reconcile_kinds import blob, make_index, manifest, write

PLAN_SCHEMA = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())


def tree(root: Path) -> dict[str, tuple[int, int, bytes]]:
    """Every file under ``root`` with its size, mtime and content."""
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns, p.read_bytes())
    return out


@pytest.fixture
def site(tmp_path):
    """A publish step (make) and two installs: one of the index the make writes, one
    of an index published before (with the old version as seed), plus a tagged prune."""
    write(tmp_path / "build" / "app.img", blob(20))
    old = write(tmp_path / "fw-old.img", blob(21, 150_000))
    write(tmp_path / "fw.img", blob(21, 150_000)[:90_000] + blob(22, 60_000))
    make_index(old, tmp_path / "fw-old.img.caibx")
    make_index(tmp_path / "fw.img", tmp_path / "rel" / "fw.caibx", tmp_path / "store")
    return manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: publish app
          tags: [publish]
          make: {source: build/app.img, index: rel/app.caibx, store: s}
        - name: install app
          tags: [install]
          extract: {index: rel/app.caibx, path: out/app.img, stores: [s], mode: "0644"}
        - name: install firmware
          tags: [install]
          extract: {index: rel/fw.caibx, path: out/fw.img, stores: [s], seeds: [fw-old.img]}
        - name: drop old chunks
          tags: [never, prune]
          prune: {store: s, keep: ["rel/*.caibx"]}
        """,
    )


def args(m: Path) -> list[str]:
    return [str(m), "--state-dir", str(m.parent / "state")]


def test_plan_text_of_a_cache_task_is_one_plain_line(cli, tmp_path):
    """It printed an empty "1.9 MiB: " line, then "upload … to store 'mirror' from
    1.9 MiB (29 chunks, 1.9 MiB stored) from store 'origin'"."""
    write(tmp_path / "a.img", blob(23))
    make_index(tmp_path / "a.img", tmp_path / "a.caibx", tmp_path / "origin")
    m = manifest(
        tmp_path,
        """\
        stores: {origin: {url: origin}, mirror: {url: mirror}}
        tasks:
        - name: mirror it
          cache: {indexes: [a.caibx], stores: [origin], cache: mirror}
        """,
    )
    r = cli("plan", *args(m))
    assert r.code == 0, r.err
    (line,) = [line.strip() for line in r.out.splitlines()[2:-1]]
    files = list((tmp_path / "origin").glob("*/*.cacnk"))
    stored = human_bytes(sum(f.stat().st_size for f in files))
    assert line.startswith(f"upload {len(files)} chunks (") and "to store 'mirror'" in line
    assert line.endswith(f", read from store 'origin': {len(files)} chunks, {stored} stored")
    assert line.count("(") == 1, line


def test_plan_text_lists_every_task_with_what_travels(cli, site):
    r = cli("plan", *args(site), cwd=site.parent)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "plan for m.yaml"
    assert lines[1] == "  + create  [publish app] make rel/app.caibx: no index yet"
    assert lines[2].startswith("            upload ") and lines[2].endswith(" to store 's'")
    assert lines[3] == "  + create  [install app] extract out/app.img: absent"
    assert "from store 's'" in lines[4]
    assert lines[5] == "  + create  [install firmware] extract out/fw.img: absent"
    assert "from seed fw-old.img" in lines[6] and "from store 's'" in lines[6]
    assert lines[-1] == "Plan: 3 to create, 0 to update, 0 to delete, 0 unchanged."


def test_plan_json_validates_against_the_schema_and_saves_with_out(cli, site):
    out = site.parent / "plan.json"
    r = cli("plan", *args(site), "--json", "--out", out)
    assert r.code == 0, r.err
    doc = json.loads(r.out)
    Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert json.loads(out.read_text()) == doc
    assert doc["version"] == 1 and doc["summary"]["create"] == 3 and doc["summary"]["changes"]
    app = doc["tasks"][1]
    assert app["depends-on"] == ["publish app"] and app["action"] == "create"
    upload = doc["tasks"][0]["travel"]["upload"]
    assert app["travel"]["stores"][0]["bytes"] == upload["bytes"]  # all of it, from the store
    # with every kind and an error in it, the document still validates
    cli("apply", *args(site))
    (site.parent / "build" / "app.img").write_bytes(blob(23))
    r = cli("plan", *args(site), "--json", "--tags", "all,prune", "--skip-tags", "publish")
    doc = json.loads(r.out)
    Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert [t["action"] for t in doc["tasks"]] == ["no-op", "no-op", "no-op"]
    pin = 'pin: "sha512-256:' + "0" * 64 + '"'
    text = site.read_text().replace('mode: "0644"', f'mode: "0644", {pin}')
    site.write_text(text)
    r = cli("plan", *args(site), "--json")
    doc = json.loads(r.out)
    Draft202012Validator(PLAN_SCHEMA).validate(doc)
    assert r.code == 1 and doc["tasks"][1]["state"] == "error"


def test_plan_markdown_is_a_table_with_deletions_folded(cli, site):
    cli("apply", *args(site))
    make_index(
        write(site.parent / "x.img", blob(24)), site.parent / "x.caibx", site.parent / "store"
    )
    backdate(site.parent / "store")  # older than prune's minimum age
    r = cli("plan", *args(site), "--markdown", "--tags", "prune", cwd=site.parent)
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "### desync-decl plan: `m.yaml`"
    assert lines[2] == "Manifest `m.yaml`, tags `prune`"
    assert lines[4] == "**0 to create, 0 to update, 1 to delete, 0 unchanged**"
    assert lines[6] == "| | Task | Kind | Target | Why | Changes | What travels |"
    assert lines[8].startswith(
        "| :wastebasket: delete | drop old chunks | prune | <code>store 's'</code> | "
    )
    assert lines[9] == "| | **Total** | | | | | nothing travels |"
    assert "<details><summary>drop old chunks: " in r.out and "```" in r.out


def test_detailed_exitcode(cli, site):
    assert cli("plan", *args(site), "--detailed-exitcode").code == 2
    assert cli("apply", *args(site)).code == 0
    assert cli("plan", *args(site), "--detailed-exitcode").code == 0
    (site.parent / "rel" / "fw.caibx").write_bytes(b"not an index")
    r = cli("plan", *args(site), "--detailed-exitcode")
    assert r.code == 1 and "! error   [install firmware] extract: " in r.out


def test_check_writes_nothing_and_reports_what_would_change(cli, site):
    make_index(
        write(site.parent / "x.img", blob(24)), site.parent / "x.caibx", site.parent / "store"
    )
    backdate(site.parent / "store")  # older than prune's minimum age
    before = tree(site.parent)
    r = cli("apply", *args(site), "--check", "--diff", "--tags", "all,prune")
    assert r.code == 0, r.err
    assert tree(site.parent) == before
    assert not (site.parent / "state").exists()
    lines = r.out.splitlines()
    assert lines[1] == "changed: [publish app] make: would create: no index yet"
    assert "  -index: absent" in lines
    assert lines[-1] == "RECAP ok=0 changed=4 failed=0 skipped=0"
    assert any(
        line.startswith("changed: [drop old chunks] prune: would delete: ") for line in lines
    )


def test_apply_twice_second_is_all_ok_and_recap_counts(cli, site):
    r = cli("apply", *args(site))
    assert r.code == 0, r.err
    assert r.out.splitlines()[-1] == "RECAP ok=0 changed=3 failed=0 skipped=0"
    r = cli("apply", *args(site))
    assert r.out.splitlines()[-1] == "RECAP ok=3 changed=0 failed=0 skipped=0"
    assert (site.parent / "out" / "app.img").read_bytes() == blob(20)


def test_saved_plan_applies_as_planned_and_is_refused_after_a_change(cli, site):
    saved = site.parent / "plan.json"
    assert cli("plan", *args(site), "--out", saved).code == 0
    r = cli("apply", *args(site), "--plan", saved)
    assert r.code == 0, r.err + r.out
    assert r.out.splitlines()[-1] == "RECAP ok=0 changed=3 failed=0 skipped=0"

    assert cli("plan", *args(site), "--out", saved).code == 0
    fw = site.parent / "out" / "fw.img"
    fw.write_bytes(b"changed behind the plan's back")
    before = tree(site.parent)
    r = cli("apply", *args(site), "--plan", saved)
    assert r.code == 1
    assert r.err.startswith(f"desync-decl: error: refusing plan {saved}: 'install firmware': ")
    assert "its facts changed since the plan was made (seeds, target)" in r.err
    assert tree(site.parent) == before  # nothing applied

    site.write_text(site.read_text() + "\n")
    r = cli("apply", *args(site), "--plan", saved)
    assert (
        r.err
        == f"desync-decl: error: refusing plan {saved}: {site} changed since the plan was made\n"
    )
    r = cli("apply", *args(site), "--plan", saved, "--tags", "x")
    assert r.code == 1 and "--plan applies the saved selection" in r.err


def test_verify_reports_drift_as_update(cli, site):
    cli("apply", *args(site))
    target = site.parent / "out" / "app.img"
    st = target.stat()
    with open(target, "r+b") as f:
        f.write(b"X")
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))
    r = cli("apply", *args(site), "--check")
    assert r.out.splitlines()[-1] == "RECAP ok=3 changed=0 failed=0 skipped=0"
    r = cli("apply", *args(site), "--verify", "--check")
    assert "changed: [install app] extract: would update: content differs (" in r.out
    assert cli("apply", *args(site), "--verify").code == 0
    assert target.read_bytes() == blob(20)


def test_tags_and_skip_tags_select_tasks(cli, site):
    r = cli("apply", *args(site), "--tags", "install", "--check")
    names = [line.split("]")[0] for line in r.out.splitlines()[1:-1]]
    assert names == ["failed: [install app", "changed: [install firmware"]  # no index yet
    r = cli("apply", *args(site), "--skip-tags", "install")
    assert r.out.splitlines() == [
        f"changed: [publish app] make: wrote {site.parent / 'rel' / 'app.caibx'}: "
        + r.out.split("app.caibx: ")[1].splitlines()[0],
        "RECAP ok=0 changed=1 failed=0 skipped=0",
    ]
    r = cli("plan", *args(site), "-t", "prune", "--json")
    assert [t["name"] for t in json.loads(r.out)["tasks"]] == ["drop old chunks"]  # never: asked


def test_parallel_tasks_go_on_when_one_fails_and_dependents_are_skipped(cli, tmp_path):
    for i in range(4):
        write(tmp_path / f"src{i}.img", blob(30 + i))
    tasks = "".join(
        f"- {{name: mk{i}, make: {{source: src{i}.img, index: idx/{i}.caibx, store: s}}}}\n"
        f"- {{name: ex{i}, extract: {{index: idx/{i}.caibx, path: out/{i}.img, stores: [s]}}}}\n"
        for i in range(4)
    )
    m = manifest(tmp_path, "stores: {s: {url: store}}\ntasks:\n" + tasks)
    (tmp_path / "src2.img").unlink()  # mk2 fails, ex2 depends on it
    r = cli("apply", *args(m), "-j", "4")
    assert r.code == 1
    status = {
        line.split(": [")[1].split("]")[0]: line.split(":")[0] for line in r.out.splitlines()[:-1]
    }
    assert status == {
        **{f"mk{i}": "changed" for i in (0, 1, 3)},
        **{f"ex{i}": "changed" for i in (0, 1, 3)},
        "mk2": "failed",
        "ex2": "skipped",
    }
    assert "failed: [mk2] make: " in r.out and "src2.img: no such file" in r.out
    assert "skipped: [ex2] extract: depends on task 'mk2', which failed" in r.out
    assert r.out.splitlines()[-1] == "RECAP ok=0 changed=6 failed=1 skipped=1"
    for i in (0, 1, 3):
        assert (tmp_path / "out" / f"{i}.img").read_bytes() == blob(30 + i)


def test_apply_json_results(cli, site):
    r = cli("apply", *args(site), "--json", "--diff")
    doc = json.loads(r.out)
    assert doc["recap"] == {"ok": 0, "changed": 3, "failed": 0, "skipped": 0}
    assert [t["status"] for t in doc["tasks"]] == ["changed"] * 3
    assert doc["tasks"][1]["diff"]["after"]["mode"] == "0644"


@pytest.mark.skipif(shutil.which("desync-decl") is None, reason="pip install -e . first")
def test_quick_start_from_a_fresh_clone(tmp_path):
    """`desync-decl apply manifests/quickstart.yaml` in a copy of what git ships."""
    clone = tmp_path / "clone"
    (clone / "manifests").mkdir(parents=True)
    shutil.copy(ROOT / "manifests" / "quickstart.yaml", clone / "manifests")
    shutil.copy(ROOT / "README.md", clone)
    # its records in the test's folder, not the machine's (root's default is /var/lib)
    env = {**os.environ, "DESYNC_DECL_STATE_DIR": str(tmp_path / "state")}
    run = [shutil.which("desync-decl"), "apply", "manifests/quickstart.yaml"]
    first = subprocess.run(run, cwd=clone, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0"
    assert (clone / ".quickstart" / "README.copy").read_bytes() == (
        clone / "README.md"
    ).read_bytes()
    second = subprocess.run(run, cwd=clone, env=env, capture_output=True, text=True, check=False)
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines()[-1] == "RECAP ok=2 changed=0 failed=0 skipped=0"
    assert (tmp_path / "state").is_dir()
