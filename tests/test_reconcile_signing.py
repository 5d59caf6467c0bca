"""Signed indexes in manifests (issue 17), through the real CLI: ``make``/``tar``
tasks with ``sign:`` write ``<index>.sig``; ``extract``/``untar``/``chop``/``cache``
tasks under ``trust:`` (their own, or ``defaults.trust``) refuse an index no allowed
signer signed, in plan and apply alike, before a chunk is fetched; plans show who
signed each index. Keys and signatures come from the real ``ssh-keygen``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from tests import servers_http, ssh_keys
from tests.conftest import ROOT
from tests.ssh_keys import NAMESPACE, Key, OpenSsh, allowed_signers
from tests.test_reconcile_kinds import blob, make_index, manifest, write

PLAN_SCHEMA = json.loads((ROOT / "schemas" / "plan.schema.json").read_text())


ssh = ssh_keys.ssh  # the fixtures: ssh-keygen on files in tmp_path/ssh, a private agent
ssh_agent = ssh_keys.ssh_agent
cli_server = servers_http.cli_server  # our servers as processes


def fingerprint(key: Key) -> str:
    """``ED25519 SHA256:…`` as ``ssh-keygen -l`` names the key."""
    _, fp, *_, kind = subprocess.run(
        ["ssh-keygen", "-l", "-f", str(key.pub)], check=True, capture_output=True, text=True
    ).stdout.split()
    return f"{kind.strip('()')} {fp}"


def allowed(path: Path, *entries: tuple[str, Key], options: str = "") -> Path:
    """An allowed_signers file: one line per (principal, key), in our namespace."""
    extra = f",{options}" if options else ""
    lines = [f'{who} namespaces="{NAMESPACE}"{extra} {key.public}' for who, key in entries]
    return allowed_signers(path, *lines)


def verifies(ssh: OpenSsh, signers: Path, principal: str, index: Path) -> bool:
    """Whether ``ssh-keygen -Y verify`` accepts ``<index>.sig``."""
    sig = Path(f"{index}.sig")
    return ssh.verify(signers, principal, index.read_bytes(), sig).code == 0


def args(m: Path) -> list[str]:
    return [str(m), "--state-dir", str(m.parent / "state")]


def trusted_by_default(m: Path, allowed_signers: str) -> None:
    """Give the manifest ``m`` (of ``manifest``) a ``defaults.trust``."""
    text = m.read_text().replace(
        "defaults: {", f"defaults: {{trust: {{allowed_signers: {allowed_signers}}}, ", 1
    )
    m.write_text(text)


def plan_errors(out: str) -> dict[str, str]:
    """Task name -> message of each task ``plan``'s text shows as an error."""
    found = {}
    for line in out.splitlines():
        if line.startswith("  ! error   ["):
            name, rest = line.removeprefix("  ! error   [").split("] ", 1)
            found[name] = rest.split(": ", 1)[1]
    return found


def apply_failures(out: str) -> dict[str, str]:
    """Task name -> message of each task ``apply``'s text shows as failed."""
    found = {}
    for line in out.splitlines():
        if line.startswith("failed: ["):
            name, rest = line.removeprefix("failed: [").split("] ", 1)
            found[name] = rest.split(": ", 1)[1]
    return found


@pytest.fixture
def keys(ssh):
    """Two Ed25519 keys, ``ssh/ci`` and ``ssh/other``."""
    return ssh.key("ci"), ssh.key("other")


def published(tmp_path: Path, name: str = "app", seed: int = 1) -> Path:
    """A blob's index (and chunks in ``store/``), made apart from the reconciler."""
    source = write(tmp_path / "build" / f"{name}.img", blob(seed))
    index = tmp_path / "rel" / f"{name}.caibx"
    make_index(source, index, tmp_path / "store")
    return index


# --- make signs, extract trusts --------------------------------------------------------


def test_make_signs_and_extract_trusts_in_one_manifest_then_nothing_changes(
    cli, ssh, tmp_path, keys
):
    ci, _ = keys
    signers = allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    write(tmp_path / "build" / "app.img", blob(2))
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: publish
          make: {source: build/app.img, index: rel/app.caibx, store: s, sign: {key: ssh/ci}}
        - name: install
          extract:
            index: rel/app.caibx
            path: out/app.img
            stores: [s]
            trust: {allowed_signers: allowed_signers, signers: [ci@example.com]}
        """,
    )
    plan = cli("plan", *args(m), cwd=tmp_path)
    assert plan.code == 0, plan.out + plan.err
    lines = plan.out.splitlines()
    fp = fingerprint(ci)
    # the make signs; the extract's index is judged by the key the make signs with
    assert f"            index rel/app.caibx signed by {fp}" in lines
    assert (
        f"            index rel/app.caibx signed by ci@example.com ({fp}) (task 'publish' signs it)"
    ) in lines
    first = cli("apply", *args(m), cwd=tmp_path)
    assert first.code == 0, first.out + first.err
    assert first.out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0"
    assert f"signed by {fp}" in first.out
    assert (tmp_path / "out" / "app.img").read_bytes() == blob(2)
    # what we wrote is an SSH signature OpenSSH accepts
    assert verifies(ssh, signers, "ci@example.com", tmp_path / "rel" / "app.caibx")
    again = cli("apply", *args(m), cwd=tmp_path)
    assert again.code == 0, again.out + again.err
    assert again.out.splitlines()[-1] == "RECAP ok=2 changed=0 failed=0 skipped=0"
    assert f"index rel/app.caibx signed by ci@example.com ({fp})" in again.out


def test_tar_signs_and_untar_trusts_then_nothing_changes(cli, ssh, tmp_path, keys):
    ci, _ = keys
    signers = allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    write(tmp_path / "site" / "index.html", b"<p>hello</p>\n")
    write(tmp_path / "site" / "a" / "b.txt", blob(9, 5000))
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: pack
          tar: {source: site, index: rel/site.caidx, store: s, sign: {key: ssh/ci}}
        - name: deploy
          untar: {index: rel/site.caidx, path: out/site, stores: [s]}
        """,
    )
    trusted_by_default(m, "allowed_signers")
    first = cli("apply", *args(m), cwd=tmp_path)
    assert first.out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0", first.out
    assert (tmp_path / "out" / "site" / "a" / "b.txt").read_bytes() == blob(9, 5000)
    assert verifies(ssh, signers, "ci@example.com", tmp_path / "rel" / "site.caidx")
    again = cli("apply", *args(m), cwd=tmp_path)
    assert again.out.splitlines()[-1] == "RECAP ok=2 changed=0 failed=0 skipped=0", again.out
    who = f"ci@example.com ({fingerprint(ci)})"
    assert f"  index rel/site.caidx signed by {who}" in again.out.splitlines()


def test_signed_indexes_through_an_index_server(cli, cli_server, ssh, tmp_path, keys):
    """The make task publishes index and signature to ``index-server -w``; the extract
    task reads both back from it under trust, and refuses the index once the signature
    served is another key's, until the make task signs it again."""
    ci, other = keys
    allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    served = tmp_path / "served"
    served.mkdir()
    server = cli_server("index-server", "-w", "-s", served)
    url = server.url.rstrip("/")
    write(tmp_path / "build" / "app.img", blob(11))
    m = manifest(
        tmp_path,
        f"""\
        stores: {{s: {{url: store}}}}
        tasks:
        - name: publish
          make: {{source: build/app.img, index: "{url}/app.caibx", store: s,
                  sign: {{key: ssh/ci}}}}
        - name: install
          tags: [install]
          extract:
            index: "{url}/app.caibx"
            path: out/app.img
            stores: [s]
            trust: {{allowed_signers: allowed_signers}}
        """,
    )
    done = cli("apply", *args(m), cwd=tmp_path)
    assert done.out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0", done.out
    assert (served / "app.caibx.sig").is_file()
    assert (tmp_path / "out" / "app.img").read_bytes() == blob(11)
    ssh.sign(other.path, served / "app.caibx")  # the served signature: another key's
    alone = cli("apply", *args(m), "--tags", "install", cwd=tmp_path)
    failures = apply_failures(alone.out)
    assert list(failures) == ["install"] and "allowed_signers" in failures["install"], alone.out
    both = cli("apply", *args(m), cwd=tmp_path)  # the make signs again, first
    assert both.out.splitlines()[-1] == "RECAP ok=1 changed=1 failed=0 skipped=0", both.out
    assert "changed: [publish] make: signed " in both.out


def test_a_make_signs_with_a_key_ssh_agent_holds(cli, ssh, ssh_agent, tmp_path):
    """``sign: {key: KEY.pub}``: the private half only in the agent (SSH_AUTH_SOCK)."""
    key = ssh.key("held")
    ssh_agent.add(key.path)
    key.path.unlink()  # nowhere but in the agent now
    signers = allowed(tmp_path / "allowed_signers", ("ci@example.com", key))
    write(tmp_path / "build" / "app.img", blob(10))
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: publish
          make: {source: build/app.img, index: rel/app.caibx, store: s, sign: {key: ssh/held.pub}}
        """,
    )
    done = cli("apply", *args(m), cwd=tmp_path)
    assert done.out.splitlines()[-1] == "RECAP ok=0 changed=1 failed=0 skipped=0", done.out
    assert f"signed by {fingerprint(key)}" in done.out
    assert verifies(ssh, signers, "ci@example.com", tmp_path / "rel" / "app.caibx")


def test_a_converged_make_whose_signature_is_missing_or_by_another_key_signs_again(
    cli, ssh, tmp_path, keys
):
    ci, other = keys
    write(tmp_path / "build" / "app.img", blob(3))
    body = """\
        stores: {s: {url: store}}
        tasks:
        - name: publish
          make: {source: build/app.img, index: rel/app.caibx, store: s, sign: {key: KEY}}
        """
    m = manifest(tmp_path, body.replace("KEY", "ssh/ci"))
    assert cli("apply", *args(m)).code == 0
    sig = Path(f"{tmp_path / 'rel' / 'app.caibx'}.sig")
    sig.unlink()
    plan = cli("plan", *args(m))
    assert "  ~ update  [publish] make" in plan.out and "signed again" in plan.out, plan.out
    redo = cli("apply", *args(m))
    assert redo.out.splitlines()[-1] == "RECAP ok=0 changed=1 failed=0 skipped=0", redo.out
    ci_allowed = allowed(tmp_path / "ci_signers", ("ci", ci))
    assert verifies(ssh, ci_allowed, "ci", tmp_path / "rel" / "app.caibx")
    assert cli("apply", *args(m)).out.splitlines()[-1].startswith("RECAP ok=1 changed=0")
    # another key now: the index stays, its signature is made again by that key
    m = manifest(tmp_path, body.replace("KEY", "ssh/other"))
    index_bytes = (tmp_path / "rel" / "app.caibx").read_bytes()
    redo = cli("apply", *args(m))
    assert redo.out.splitlines()[-1] == "RECAP ok=0 changed=1 failed=0 skipped=0", redo.out
    assert f"signed by {fingerprint(other)}" in redo.out
    assert (tmp_path / "rel" / "app.caibx").read_bytes() == index_bytes
    other_allowed = allowed(tmp_path / "other_signers", ("other", other))
    assert verifies(ssh, other_allowed, "other", tmp_path / "rel" / "app.caibx")
    assert not verifies(ssh, ci_allowed, "ci", tmp_path / "rel" / "app.caibx")


# --- defaults and overrides ------------------------------------------------------------


def test_trust_in_defaults_applies_to_extract_and_untar_and_a_tasks_own_replaces_it(
    cli, ssh, tmp_path, keys
):
    ci, other = keys
    allowed(tmp_path / "ci_signers", ("ci@example.com", ci))
    allowed(tmp_path / "other_signers", ("other@example.com", other))
    index = published(tmp_path)
    ssh.sign(ci.path, index)  # signed by ci
    unsigned = published(tmp_path, "plain", 4)
    write(tmp_path / "tree" / "a.txt", b"hello\n")
    made = cli(  # a .caidx without a signature, made by the verb
        "tar", "-i", "-s", tmp_path / "store", tmp_path / "rel" / "tree.caidx", tmp_path / "tree"
    )
    assert made.code == 0, made.err
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: by default
          extract: {index: rel/app.caibx, path: out/a.img, stores: [s]}
        - name: untar by default
          untar: {index: rel/tree.caidx, path: out/tree, stores: [s]}
        - name: own trust
          extract:
            index: rel/app.caibx
            path: out/b.img
            stores: [s]
            trust: {allowed_signers: other_signers}
        - name: no trust
          extract: {index: rel/plain.caibx, path: out/c.img, stores: [s], trust: null}
        """,
    )
    trusted_by_default(m, "ci_signers")
    plan = cli("plan", *args(m), cwd=tmp_path)
    errors = plan_errors(plan.out)
    assert sorted(errors) == ["own trust", "untar by default"], plan.out
    assert "rel/tree.caidx" in errors["untar by default"]
    assert "rel/app.caibx" in errors["own trust"]
    done = cli("apply", *args(m), cwd=tmp_path)
    assert apply_failures(done.out) == errors
    assert done.out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=2 skipped=0"
    assert (tmp_path / "out" / "a.img").read_bytes() == blob(1)
    assert (tmp_path / "out" / "c.img").read_bytes() == blob(4)
    assert not (tmp_path / "out" / "b.img").exists() and not (tmp_path / "out" / "tree").exists()
    assert unsigned.exists() and not Path(f"{unsigned}.sig").exists()


def test_chop_and_cache_tasks_read_their_indexes_under_trust(cli, ssh, tmp_path, keys):
    ci, _ = keys
    allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    signed, unsigned = published(tmp_path), published(tmp_path, "plain", 8)
    ssh.sign(ci.path, signed)
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}, mirror: {url: mirror}, chopped: {url: chopped}}
        tasks:
        - name: mirror signed
          cache: {indexes: [rel/app.caibx], stores: [s], cache: mirror}
        - name: mirror both
          cache: {indexes: [rel/app.caibx, rel/plain.caibx], stores: [s], cache: mirror}
        - name: chop signed
          chop: {index: rel/app.caibx, source: build/app.img, store: chopped}
        - name: chop unsigned
          chop: {index: rel/plain.caibx, source: build/plain.img, store: chopped}
        """,
    )
    (tmp_path / "chopped").mkdir()  # chop refuses a missing local store
    trusted_by_default(m, "allowed_signers")
    plan = cli("plan", *args(m), cwd=tmp_path)
    errors = plan_errors(plan.out)
    assert sorted(errors) == ["chop unsigned", "mirror both"], plan.out
    assert all("rel/plain.caibx: no signature" in why for why in errors.values()), errors
    done = cli("apply", *args(m), cwd=tmp_path)
    assert apply_failures(done.out) == errors
    assert done.out.splitlines()[-1] == "RECAP ok=0 changed=2 failed=2 skipped=0", done.out
    assert unsigned.exists()


# --- refusals --------------------------------------------------------------------------


def _no_signature(ssh: OpenSsh, tmp_path: Path, ci: Key, other: Key, index: Path) -> None:
    Path(f"{index}.sig").unlink()


def _unknown_key(ssh: OpenSsh, tmp_path: Path, ci: Key, other: Key, index: Path) -> None:
    ssh.sign(other.path, index)


def _principal_not_in_signers(
    ssh: OpenSsh, tmp_path: Path, ci: Key, other: Key, index: Path
) -> None:
    allowed(tmp_path / "allowed_signers", ("ci@example.com", ci), ("ops@example.com", other))
    ssh.sign(other.path, index)  # other is allowed, as ops@example.com: not a wanted signer


def _expired(ssh: OpenSsh, tmp_path: Path, ci: Key, other: Key, index: Path) -> None:
    allowed(tmp_path / "allowed_signers", ("ci@example.com", ci), options='valid-before="20200101"')


def _changed_after_signing(ssh: OpenSsh, tmp_path: Path, ci: Key, other: Key, index: Path) -> None:
    other_index = published(tmp_path, "next", 6)
    index.write_bytes(other_index.read_bytes())  # the old .sig stays beside it


REFUSALS = [
    _no_signature,
    _unknown_key,
    _principal_not_in_signers,
    _expired,
    _changed_after_signing,
]


def signed_site(ssh: OpenSsh, tmp_path: Path, ci: Key) -> Path:
    """An index signed by ci, a target holding an older version, and a manifest
    extracting the index under trust of ci@example.com."""
    index = published(tmp_path)
    ssh.sign(ci.path, index)
    allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    write(tmp_path / "out" / "app.img", blob(1)[:150_000] + b"old")
    return manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: install
          extract:
            index: rel/app.caibx
            path: out/app.img
            stores: [s]
            trust: {allowed_signers: allowed_signers, signers: [ci@example.com]}
        """,
    )


@pytest.mark.parametrize("spoil", REFUSALS, ids=lambda f: f.__name__.strip("_"))
def test_each_refusal_fails_plan_and_apply_with_one_line_nothing_fetched(
    cli, ssh, tmp_path, keys, spoil
):
    ci, other = keys
    m = signed_site(ssh, tmp_path, ci)
    index = tmp_path / "rel" / "app.caibx"
    spoil(ssh, tmp_path, ci, other, index)
    target = tmp_path / "out" / "app.img"
    before = (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino)
    plan = cli("plan", *args(m), cwd=tmp_path)
    assert plan.code == 1
    (reason,) = plan_errors(plan.out).values()
    assert "\n" not in reason and "rel/app.caibx" in reason and "Traceback" not in plan.err
    for check in ([], ["--check"]):
        done = cli("apply", *args(m), *check, "--json", cwd=tmp_path)
        assert done.code != 0
        (task,) = json.loads(done.out)["tasks"]
        assert task["status"] == "failed"
        assert task["msg"] == reason
        assert "reads" not in task["stats"]  # no store was asked for a chunk
    text = cli("apply", *args(m), cwd=tmp_path)
    assert apply_failures(text.out) == {"install": reason}
    after = (target.read_bytes(), target.stat().st_mtime_ns, target.stat().st_ino)
    assert after == before


def test_a_converged_target_is_refused_once_its_signer_is_not_trusted(cli, ssh, tmp_path, keys):
    """Revoking a key stops a host trusting what it holds: the task fails (the file is
    left as it is), in plan and apply, though the target is recorded as converged."""
    ci, _ = keys
    m = signed_site(ssh, tmp_path, ci)
    assert cli("apply", *args(m)).out.splitlines()[-1].startswith("RECAP ok=0 changed=1")
    assert cli("apply", *args(m)).out.splitlines()[-1].startswith("RECAP ok=1 changed=0")
    target = tmp_path / "out" / "app.img"
    held = (target.read_bytes(), target.stat().st_mtime_ns)
    revoked = tmp_path / "revoked"
    revoked.write_text(ci.public + "\n")
    text = m.read_text().replace(
        "signers: [ci@example.com]}", "signers: [ci@example.com], revoked_keys: revoked}"
    )
    m.write_text(text)
    plan = cli("plan", *args(m), cwd=tmp_path)
    assert plan.code == 1
    (reason,) = plan_errors(plan.out).values()
    assert "rel/app.caibx" in reason
    done = cli("apply", *args(m), cwd=tmp_path)
    assert apply_failures(done.out) == {"install": reason}
    assert (target.read_bytes(), target.stat().st_mtime_ns) == held


def test_a_make_whose_key_the_trust_does_not_allow_fails_the_extracts_plan(
    cli, ssh, tmp_path, keys
):
    ci, other = keys
    allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    write(tmp_path / "build" / "app.img", blob(7))
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: publish
          make: {source: build/app.img, index: rel/app.caibx, store: s, sign: {key: ssh/other}}
        - name: install
          extract: {index: rel/app.caibx, path: out/app.img, stores: [s]}
        """,
    )
    trusted_by_default(m, "allowed_signers")
    plan = cli("plan", *args(m), cwd=tmp_path)
    assert plan.code == 1
    errors = plan_errors(plan.out)
    assert list(errors) == ["install"], plan.out
    # judged by the key the make will sign with, as apply judges the signature it made
    assert fingerprint(other) in errors["install"] and "allowed_signers" in errors["install"]
    done = cli("apply", *args(m), cwd=tmp_path)
    assert apply_failures(done.out) == errors, done.out
    assert not (tmp_path / "out" / "app.img").exists()


# --- what plans show -------------------------------------------------------------------


def test_plan_json_and_markdown_and_check_show_the_signer(cli, ssh, tmp_path, keys):
    ci, _ = keys
    m = signed_site(ssh, tmp_path, ci)
    who = f"ci@example.com ({fingerprint(ci)})"
    doc = json.loads(cli("plan", *args(m), "--json").out)
    Draft202012Validator(PLAN_SCHEMA).validate(doc)
    (task,) = doc["tasks"]
    index = str(tmp_path / "rel" / "app.caibx")
    assert task["signatures"] == [{"index": index, "signer": who, "writes": False, "by-task": None}]
    assert task["facts"]["signed-by"] == {index: who}
    md = cli("plan", *args(m), "--markdown", cwd=tmp_path).out
    (row,) = [line for line in md.splitlines() if "| install |" in line]
    assert f"index rel/app.caibx signed by {who}" in row
    check = cli("apply", *args(m), "--check", cwd=tmp_path)
    assert f"  index rel/app.caibx signed by {who}" in check.out.splitlines()
    checked = json.loads(cli("apply", *args(m), "--check", "--json").out)
    assert checked["tasks"][0]["signatures"] == task["signatures"]


# --- validate --------------------------------------------------------------------------


def test_validate_reports_a_schema_error_in_trust_at_file_line_col(cli, tmp_path):
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: install
          extract:
            index: rel/app.caibx
            path: out/app.img
            stores: [s]
            trust: {allowed_signer: allowed_signers}
        """,
    )
    r = cli("validate", m)
    assert r.code == 1
    assert r.err.startswith(f"{m}:10:13: unknown key 'allowed_signer' in 'extract.trust'"), r.err
    assert len(r.err.splitlines()) == 1


def test_validate_and_plan_report_a_malformed_allowed_signers_line(cli, tmp_path, keys):
    ci, _ = keys
    signers = tmp_path / "allowed_signers"
    signers.write_text(f"ci@example.com {ci.public}\nthis is not a key\n")
    m = manifest(
        tmp_path,
        """\
        stores: {s: {url: store}}
        tasks:
        - name: install
          extract:
            index: rel/app.caibx
            path: out/app.img
            stores: [s]
            trust: {allowed_signers: allowed_signers}
        """,
    )
    for verb in ("validate", "plan"):
        r = cli(verb, *([m] if verb == "validate" else args(m)))
        assert r.code == 1
        line = r.err.strip().removeprefix("desync-decl: error: ")
        assert line.startswith(f"{m}:10:30: 'extract.trust.allowed_signers' of task 'install':")
        assert f"{signers}:2" in line, line


# --- the example -----------------------------------------------------------------------


def test_the_signed_example_runs_and_converges(tmp_path, keys):
    """``manifests/signed.yaml`` in a copy of what git ships, with a key and an
    allowed_signers file made as its comments say."""
    ci, _ = keys
    clone = tmp_path / "clone"
    (clone / "manifests").mkdir(parents=True)
    shutil.copy(ROOT / "manifests" / "signed.yaml", clone / "manifests")
    shutil.copy(ROOT / "README.md", clone)
    signers = allowed(tmp_path / "allowed_signers", ("ci@example.com", ci))
    env = {
        **os.environ,
        "DESYNC_DECL_STATE_DIR": str(tmp_path / "state"),
        "SIGNING_KEY": str(ci.path),
        "ALLOWED_SIGNERS": str(signers),
        "PYTHONPATH": str(ROOT),
    }
    run = [sys.executable, "-m", "desync_decl", "apply", "manifests/signed.yaml"]
    first = subprocess.run(run, cwd=clone, env=env, capture_output=True, text=True, check=False)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[-1] == "RECAP ok=0 changed=2 failed=0 skipped=0"
    second = subprocess.run(run, cwd=clone, env=env, capture_output=True, text=True, check=False)
    assert second.stdout.splitlines()[-1] == "RECAP ok=2 changed=0 failed=0 skipped=0"
    assert "signed by ci@example.com" in second.stdout
