"""The target is always a seed, and a seed that lies is never fatal by default
(issue 13, item 1): rollout, rollback, drift and hosts at mixed versions with the
natural manifest, which seeds the target with the previous version's index.

Every step runs ``plan --json`` then ``apply --json`` through the CLI against a
real chunk-server process, and checks that plan's bytes per source (seeds, in
place, store) are apply's, and that the chunks plan says it fetches are the GET
requests the server logged.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers_http import cli_server  # noqa: F401 (fixture)

SIZES = "4K:16K:64K"  # about 16 KiB a chunk: a 2 MiB image has ~130 of them


def versions() -> dict[str, bytes]:
    """v1; v2 with 24 KiB rewritten in the middle; v3 with 40 KiB inserted (shifts the rest)."""
    r = random.Random(13)
    v1 = r.randbytes(2 << 20)
    v2 = v1[:700_000] + r.randbytes(24_000) + v1[724_000:]
    v3 = v2[:1_300_000] + r.randbytes(40_000) + v2[1_300_000:]
    return {"v1": v1, "v2": v2, "v3": v3}


def run(*argv: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "desync_decl", *map(str, argv)],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@dataclass
class Origin:
    """Published versions (index per version, chunks behind a chunk-server)."""

    root: Path
    data: dict[str, bytes]
    url: str
    log: Path

    def gets(self) -> int:
        """Chunk GET requests the server has answered so far."""
        return sum("Request: GET " in line for line in self.log.read_text().splitlines())

    def manifest(
        self,
        version: str,
        seed_version: str | None,
        name: str | None = None,
        *,
        seed_file: str = "${env:HOST}/app.img",
        extra: str = "",
    ) -> Path:
        """The natural manifest: extract ``version`` to ``$HOST/app.img``, seeded with
        the target itself (or ``seed_file``) under the index of ``seed_version``."""
        path = self.root / (name or f"{version}.yaml")
        seeds = (
            f"[{{file: '{seed_file}', index: rel/{seed_version}.caibx}}]" if seed_version else "[]"
        )
        path.write_text(
            f"version: 1\n"
            f"stores: {{origin: {{url: '{self.url}'}}}}\n"
            "tasks:\n"
            "- name: app\n"
            "  extract:\n"
            f"    index: rel/{version}.caibx\n"
            "    path: ${env:HOST}/app.img\n"
            "    stores: [origin]\n"
            f"    seeds: {seeds}\n{extra}"
        )
        return path


@pytest.fixture
def origin(tmp_path, cli_server) -> Origin:  # noqa: F811
    data = versions()
    (tmp_path / "rel").mkdir()
    for name, blob in data.items():
        (tmp_path / f"{name}.img").write_bytes(blob)
        made = run(
            "make",
            "-s",
            tmp_path / "store",
            "-m",
            SIZES,
            tmp_path / "rel" / f"{name}.caibx",
            tmp_path / f"{name}.img",
        )
        assert made.returncode == 0, made.stderr
    log = tmp_path / "access.log"
    server = cli_server("chunk-server", "-s", tmp_path / "store", "--log", log)
    return Origin(tmp_path, data, server.url, log)


@dataclass
class Host:
    """A machine: its target directory and its state dir."""

    origin: Origin
    dir: Path

    @property
    def target(self) -> Path:
        return self.dir / "opt" / "app.img"

    def cli(self, verb: str, manifest: Path, *extra: str) -> dict:
        r = run(
            verb,
            manifest,
            "--state-dir",
            self.dir / "state",
            "--json",
            *extra,
            env={"HOST": str(self.dir / "opt")},
        )
        assert r.returncode == 0, r.stdout + r.stderr
        (task,) = json.loads(r.stdout)["tasks"]
        return task

    def converge(self, manifest: Path, *extra: str) -> dict:
        """plan, then apply: they agree on every source, and the server served what
        plan said would be fetched; the target then holds the version."""
        planned = self.cli("plan", manifest, *extra)
        before = self.origin.gets()
        applied = self.cli("apply", manifest, *extra)
        agree(planned, applied, self.origin.gets() - before)
        return planned

    def holds(self, version: str) -> bool:
        return self.target.read_bytes() == self.origin.data[version]


def agree(planned: dict, applied: dict, served: int) -> None:
    assert planned["state"] == "planned", planned
    assert applied["status"] == "changed", applied
    travel, stats = planned["travel"], applied["stats"]
    seed_bytes = sum(s["bytes"] for s in travel.get("seeds", []))
    seed_chunks = sum(s["chunks"] for s in travel.get("seeds", []))
    store_bytes = sum(s["bytes"] for s in travel.get("stores", []))
    store_chunks = sum(s["chunks"] for s in travel.get("stores", []))
    assert stats["bytes-copied-from-seeds"] + stats["bytes-cloned-from-seeds"] == seed_bytes
    assert stats["chunks-from-seeds"] == seed_chunks + travel["null"]["chunks"]
    assert (stats["chunks-from-store"], stats["bytes-from-store"]) == (store_chunks, store_bytes)
    assert stats["chunks-in-place"] == travel["in-place"]["chunks"]
    assert stats["attempts"] == 1 and stats["seed-problems"] == []  # plan already knew
    assert served == store_chunks


def at_version(origin: Origin, name: str, version: str) -> Host:
    """A host that installed ``version`` with the natural manifest."""
    host = Host(origin, origin.root / name)
    host.dir.mkdir()
    host.converge(origin.manifest(version, version, f"{name}-install.yaml"))
    assert host.holds(version)
    return host


def whole(origin: Origin) -> int:
    return len(origin.data["v1"])


def test_rollout_v1_v2_v3_with_or_without_the_previous_version_as_seed(origin):
    """The natural manifest names the previous version as seed; a bare one names none:
    the target is a seed all the same."""
    for name, declared in (("natural", True), ("bare", False)):
        host = Host(origin, origin.root / name)
        host.dir.mkdir()
        first = host.converge(origin.manifest("v1", "v1" if declared else None, f"{name}1.yaml"))
        assert first["travel"].get("seeds", []) == []  # nothing on the machine yet
        for version, previous in (("v2", "v1"), ("v3", "v2")):
            manifest = origin.manifest(version, previous if declared else None, f"{name}.yaml")
            planned = host.converge(manifest)
            assert host.holds(version)
            fetched = sum(s["bytes"] for s in planned["travel"]["stores"])
            assert 0 < fetched < whole(origin) // 8  # the rest came from the target
            assert host.cli("apply", manifest)["status"] == "ok"


def test_rollback_v3_to_v2_with_the_same_manifest_shape(origin):
    host = at_version(origin, "h", "v3")
    planned = host.converge(origin.manifest("v2", "v1", "rollback.yaml"))  # git revert
    assert host.holds("v2")
    assert sum(s["bytes"] for s in planned["travel"]["seeds"]) > whole(origin) // 2
    assert host.cli("apply", origin.manifest("v2", "v1", "rollback.yaml"))["status"] == "ok"


def drift(target: Path, at: int, *, keep_mtime: bool) -> None:
    st = target.stat()
    with open(target, "r+b") as f:
        f.seek(at)
        f.write(b"drift!")
    if keep_mtime:
        os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_drift_with_a_new_mtime_is_repaired_from_the_target(origin):
    host = at_version(origin, "h", "v3")
    drift(host.target, 1_000_000, keep_mtime=False)
    planned = host.converge(origin.manifest("v3", "v2"))
    assert host.holds("v3")
    assert 0 < sum(s["chunks"] for s in planned["travel"]["stores"]) <= 2


def test_drift_with_the_mtime_restored_is_repaired_under_verify(origin):
    host = at_version(origin, "h", "v3")
    drift(host.target, 1_000_000, keep_mtime=True)
    assert host.cli("plan", origin.manifest("v3", "v2"))["action"] == "no-op"  # the record holds
    planned = host.converge(origin.manifest("v3", "v2"), "--verify")
    assert host.holds("v3")
    assert 0 < sum(s["chunks"] for s in planned["travel"]["stores"]) <= 2


def test_one_manifest_for_hosts_at_v1_v2_and_v3(origin):
    hosts = [at_version(origin, f"at-{v}", v) for v in ("v1", "v2", "v3")]
    rollout = origin.manifest("v3", "v2", "fleet.yaml")
    for host in hosts:
        if host.holds("v3"):
            assert host.cli("apply", rollout)["status"] == "ok"
            continue
        host.converge(rollout)
        assert host.holds("v3")
        assert host.cli("apply", rollout)["status"] == "ok"


def lying_seed(origin: Origin) -> str:
    """A copy of v2 kept beside the target, edited since its index was made."""
    copy = origin.root / "cache" / "prev.img"
    copy.parent.mkdir()
    copy.write_bytes(origin.data["v2"])
    drift(copy, 400_000, keep_mtime=False)
    return str(copy)


@pytest.mark.parametrize("policy", ["regenerate", "skip"])
def test_a_lying_declared_seed_is_found_by_plan_and_handled_as_the_task_says(origin, policy):
    host = Host(origin, origin.root / "h")
    host.dir.mkdir()
    seed = lying_seed(origin)
    extra = "" if policy == "regenerate" else f"    invalid_seeds: {policy}\n"  # the default
    manifest = origin.manifest("v3", "v2", seed_file=seed, extra=extra)
    planned = host.converge(manifest)
    assert host.holds("v3")
    (note,) = planned["notes"]
    done = "chunked again" if policy == "regenerate" else "left out"
    index = origin.root / "rel" / "v2.caibx"
    assert note.startswith(f"seed {seed} does not hold what its index {index} says, so it is")
    assert f", so it is {done}: bytes " in note
    from_seed = sum(s["bytes"] for s in planned["travel"].get("seeds", []))
    assert (from_seed > whole(origin) // 2) is (policy == "regenerate")


def test_a_lying_declared_seed_fails_the_task_when_it_says_so(origin):
    host = Host(origin, origin.root / "h")
    host.dir.mkdir()
    seed = lying_seed(origin)
    manifest = origin.manifest("v3", "v2", seed_file=seed, extra="    invalid_seeds: fail\n")
    env = {"HOST": str(host.dir / "opt")}
    state = host.dir / "state"
    plan = run("plan", manifest, "--state-dir", state, env=env)
    assert plan.returncode != 0
    assert (
        f"seed index for {origin.root / 'rel' / 'v2.caibx'} doesn't match its data" in plan.stdout
    )
    applied = run("apply", manifest, "--state-dir", state, env=env)
    assert applied.returncode != 0 and "doesn't match its data" in applied.stdout
    assert not host.target.exists()


def tree(root: Path, version: int) -> Path:
    """A tree per version: v2 rewrites one file, v3 adds one."""
    root.mkdir()
    for i in range(5):
        (root / f"f{i}").write_bytes(random.Random(i).randbytes(200_000))
    if version >= 2:
        (root / "f2").write_bytes(random.Random(20).randbytes(200_000))
    if version >= 3:
        (root / "new").write_bytes(random.Random(30).randbytes(100_000))
    return root


def test_untar_plan_and_apply_agree_on_rollout_rollback_and_drift(tmp_path, cli_server):  # noqa: F811
    """Untar already reads the old tree as a chunk source: plan's numbers are apply's."""
    for v in (1, 2, 3):
        made = run(
            "tar",
            "-i",
            "-s",
            tmp_path / "store",
            "-m",
            SIZES,
            tmp_path / f"v{v}.caidx",
            tree(tmp_path / f"src{v}", v),
        )
        assert made.returncode == 0, made.stderr
    log = tmp_path / "access.log"
    server = cli_server("chunk-server", "-s", tmp_path / "store", "--log", log)
    origin = Origin(tmp_path, {}, server.url, log)
    host = tmp_path / "host"
    for step, v in enumerate((1, 2, 3, 2, 2)):
        if step == 4:  # drift: a file edited behind our back
            (host / "out" / "f0").write_bytes(b"drift" + (host / "out" / "f0").read_bytes()[5:])
        m = tmp_path / f"u{v}.yaml"
        m.write_text(
            f"version: 1\nstores: {{origin: {{url: '{server.url}'}}}}\ntasks:\n"
            f"- name: app\n  untar: {{index: v{v}.caidx, path: host/out, stores: [origin]}}\n"
        )
        planned = run("plan", m, "--state-dir", host / "state", "--json")
        before = origin.gets()
        applied = run("apply", m, "--state-dir", host / "state", "--json")
        assert applied.returncode == 0, applied.stdout + applied.stderr
        (p,), (a,) = json.loads(planned.stdout)["tasks"], json.loads(applied.stdout)["tasks"]
        travel, stats = p["travel"], a["stats"]
        assert stats["bytes-in-place"] == travel["in-place"]["bytes"]
        assert stats["bytes-from-seeds"] == sum(s["bytes"] for s in travel.get("seeds", []))
        stores = travel.get("stores", [])
        assert stats["chunks-from-store"] == sum(s["chunks"] for s in stores)
        assert stats["bytes-from-store"] == sum(s["bytes"] for s in stores)
        assert origin.gets() - before == stats["chunks-from-store"]
        assert (host / "out" / "f2").read_bytes() == (tmp_path / f"src{v}" / "f2").read_bytes()


def test_in_place_the_natural_manifest_keeps_the_target_data_where_it_lies(origin):
    host = at_version(origin, "h", "v2")
    manifest = origin.manifest("v3", "v2", extra="    in_place: true\n")
    planned = host.converge(manifest)
    assert host.holds("v3")
    why = "in place its data is kept where it lies"  # the path as written: ${env:…} is not shown
    assert planned["notes"] == [f"seed ${{env:HOST}}/app.img is the target itself, not used: {why}"]
    assert planned["travel"]["in-place"]["bytes"] > whole(origin) // 2


def test_the_index_a_target_holds_is_kept_privately_and_a_damaged_copy_is_not_believed(origin):
    """The copy of the index the target was extracted from is what makes it a seed
    without being read; the natural manifest's seed index stands in for it when it
    has the recorded digest, and without either the target is chunked."""
    host = at_version(origin, "h", "v2")
    indexes = host.dir / "state" / "indexes"
    (copy,) = indexes.iterdir()
    assert indexes.stat().st_mode & 0o777 == 0o700 and copy.stat().st_mode & 0o777 == 0o600
    assert copy.read_bytes() == (origin.root / "rel" / "v2.caibx").read_bytes()
    copy.write_bytes(copy.read_bytes()[:-40])  # damaged: the target is chunked instead
    planned = host.converge(origin.manifest("v3", None))
    assert planned["facts"]["seeds"] == [{"file": "target", "index": "chunked"}]
    assert host.holds("v3")
    (copy,) = indexes.iterdir()  # replaced with the index the target now holds
    assert copy.read_bytes() == (origin.root / "rel" / "v3.caibx").read_bytes()


def test_a_target_changed_behind_its_record_is_caught_by_apply_and_said(origin):
    """Bytes changed with the mtime restored, then a rollback without --verify: plan
    trusts the record (it cannot know without reading), apply's read-back finds the
    target seed lying, chunks it again, and says so in a warning."""
    host = at_version(origin, "h", "v3")
    drift(host.target, 1_000_000, keep_mtime=True)
    applied = host.cli("apply", origin.manifest("v2", "v1", "rollback.yaml"))
    assert host.holds("v2")
    assert applied["stats"]["attempts"] == 2 and len(applied["stats"]["seed-problems"]) == 1
    (warning,) = applied["warnings"]
    assert "doesn't match its data" in warning and "chunked again" in warning, warning
