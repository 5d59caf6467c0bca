"""Issue 13, item 8: ``manifests/fleet.yaml``, the rollout pattern users copy, runs
against real servers: moto's S3 as the origin (a process of its own, so the test
can kill it), our chunk-server as the mirror (requiring the bearer token the
manifest sends), our index-server for the indexes.

The manifest is the shipped file with only its example endpoints, paths, pin and
handler command swapped for the test's (each swap asserts the example still holds
the text it replaces, so the example cannot drift away from what this runs). One
host rolls v1 -> v2 -> v3 -> back to v2, with the index server down while
converged, and with the origin dead during the v3 roll.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fleet_routing_helpers import Fleet, Origin, fleet_env
from tests.servers_http import cli_server  # noqa: F401 - fixture

TOKEN = "fleet-test-token"
SIZE = 3 << 20


def versions() -> list[bytes]:
    """v1; v2 with two regions rewritten; v3 with bytes inserted near the start."""
    rng = random.Random(8)
    v1 = rng.randbytes(SIZE)
    v2 = bytearray(v1)
    v2[400_000:460_000] = rng.randbytes(60_000)
    v2[2_000_000:2_010_000] = rng.randbytes(10_000)
    v3 = bytes(v2[:100_000]) + rng.randbytes(30_000) + bytes(v2[100_000:])
    return [v1, bytes(v2), v3]


class Site:
    """The servers, the published versions and one host's folders."""

    def __init__(self, tmp: Path, origin: Origin, start) -> None:  # type: ignore[no-untyped-def]
        self.tmp, self.origin, self.start = tmp, origin, start
        self.env = {**fleet_env(tmp), "MIRROR_TOKEN": TOKEN}
        self.cli = Fleet(tmp, origin, "", self.env, b"").cli
        self.host = tmp / "host"
        self.host.mkdir()
        (tmp / "indexes").mkdir()
        origin.client().create_bucket(Bucket="artifacts")
        self.origin_url = f"s3+{origin.endpoint}/artifacts/store"
        self.blobs = versions()
        self.digests = [self.publish(n, blob) for n, blob in enumerate(self.blobs, 1)]
        self.mirror = start(
            "chunk-server", "-s", tmp / "mirror-store", env={"DESYNC_HTTP_AUTH": f"Bearer {TOKEN}"}
        )
        self.indexes = start("index-server", "-s", tmp / "indexes")

    def publish(self, n: int, blob: bytes) -> str:
        """vN's index in the index store, its chunks in the origin and the mirror."""
        source = self.tmp / f"app-v{n}.img"
        source.write_bytes(blob)
        index = self.tmp / "indexes" / f"app-v{n}.caibx"
        digests = set()
        for store in (self.origin_url, self.tmp / "mirror-store"):
            made = self.cli("make", "-s", store, index, source)
            assert made.code == 0, made.err
            digests.add(made.out.split()[-1])
        (digest,) = digests
        return digest

    def manifest(self, version: int) -> Path:
        """fleet.yaml with the test's endpoints, pointing at ``version``."""
        text = (ROOT / "manifests" / "fleet.yaml").read_text()
        swaps = {
            "s3+https://s3.eu-central-1.amazonaws.com/artifacts/store": self.origin_url,
            "{retries: 5, timeout: 30s}": "{retries: 5, timeout: 2s}",
            "https://mirror.example.com/index/app-2024.06.caibx": (
                f"{self.indexes.url.rstrip('/')}/app-v{version}.caibx"
            ),
            "https://mirror.example.com/store": self.mirror.url,
            "/var/cache/desync-decl/chunks": str(self.tmp / "cache"),
            "/opt/app/": f"{self.host}/",
            "[systemctl, restart, app.service]": (
                f'[sh, -c, "cmp -s {self.host}/app.img {self.tmp}/app-v{version}.img'
                f' && echo v{version} >> {self.host}/restarts"]'
            ),
        }
        pin = next(line for line in text.splitlines() if line.strip().startswith("pin:"))
        swaps[pin] = f'      pin: "{self.digests[version - 1]}"'
        for old, new in swaps.items():
            assert old in text, f"fleet.yaml no longer holds {old!r}"
            text = text.replace(old, new)
        path = self.tmp / "fleet.yaml"
        path.write_text(text)
        return path

    def run(self, verb: str, version: int, *extra: object) -> dict:
        r = self.cli(
            verb, self.manifest(version), "--state-dir", self.tmp / "state", "--json", *extra
        )
        assert r.code == 0, r.out + r.err
        assert r.err == ""  # e.g. no "Connection pool is full" from 16 threads on a pool
        assert TOKEN not in r.out  # the mirror's token is a secret
        return json.loads(r.out)

    @property
    def restarts(self) -> list[str]:
        file = self.host / "restarts"
        return file.read_text().split() if file.exists() else []


@pytest.fixture
def site(tmp_path, cli_server):  # noqa: F811
    origin = Origin()
    try:
        yield Site(tmp_path, origin, cli_server)
    finally:
        origin.close()


def image_task(doc: dict) -> dict:
    return next(t for t in doc["tasks"] if t["name"] == "install app image")


def test_the_fleet_example_rolls_out_rolls_back_and_survives_outages(site):
    image = site.host / "app.img"
    old_firmware = site.host / "firmware-2023.bin"
    old_firmware.write_bytes(b"old firmware")

    # v1: created from the origin through the cache; the handler restarts once
    plan = site.run("plan", 1)
    planned = image_task(plan)["travel"]
    assert [s["store"] for s in planned["stores"]] == ["origin"]
    first = site.run("apply", 1)
    assert image.read_bytes() == site.blobs[0]
    assert not old_firmware.exists()
    task = image_task(first)
    assert task["status"] == "changed"
    assert task["stats"]["bytes-from-store"] == planned["stores"][0]["bytes"]
    assert site.restarts == ["v1"]
    assert [h["status"] for h in first["handlers"]] == ["ok"]

    # converged: nothing changes, nothing runs, and the index server is not needed
    site.indexes.stop()
    again = site.run("apply", 1)
    assert image_task(again)["status"] == "ok"
    assert again["handlers"] == [] and site.restarts == ["v1"]
    site.indexes = site.start("index-server", "-s", site.tmp / "indexes")

    # v2: only the changed chunks travel; the old image is the seed
    plan = site.run("plan", 2)
    travel = image_task(plan)["travel"]
    second = image_task(site.run("apply", 2))
    assert image.read_bytes() == site.blobs[1]
    fetched = sum(s["bytes"] for s in travel["stores"])
    assert second["stats"]["bytes-from-store"] == fetched < SIZE // 4
    assert site.restarts == ["v1", "v2"]

    # v3 with the origin dead: the group switches to the mirror once and says so
    site.origin.kill()
    third_doc = site.run("apply", 3)
    third = image_task(third_doc)
    assert image.read_bytes() == site.blobs[2]
    assert third["status"] == "changed"
    switches = [w for w in third["warnings"] if "switched from 'origin' to 'mirror'" in w]
    assert len(switches) == 1, third["warnings"]
    assert third["stats"]["reads"]["groups"]["upstream"].keys() == {"mirror"}
    assert site.restarts == ["v1", "v2", "v3"]

    # rollback to v2 with the same manifest: from the target and the cache, no store
    back = image_task(site.run("apply", 2))
    assert image.read_bytes() == site.blobs[1]
    assert back["status"] == "changed"
    reads = back["stats"].get("reads", {"stores": {}})["stores"]
    assert all(reads.get(name, {}).get("served", 0) == 0 for name in ("origin", "mirror"))
    assert site.restarts == ["v1", "v2", "v3", "v2"]
    final = site.run("apply", 2)
    assert [t["status"] for t in final["tasks"]] == ["ok", "ok", "ok"]
