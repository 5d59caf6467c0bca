"""Issue 13, item 3: what the stores did is visible.

Apply prints a warning per failover switch and per cache repair; ``--json``
carries per-store counts and which member of each group served; "fetched" counts
remote stores only, cache hits apart; plan shows plain bytes and the bytes that
cross the wire (the stores' own sizes: S3's Content-Range, HTTP's Content-Length,
a chunk file's size); an error names every store tried and what each said; a
chunk missing is said of the stores a read asks, not of a member never asked.

Real parts: moto's S3 server in its own process (the origin), ``desync-decl
chunk-server`` (the mirror), a local cache store, the CLI as a process.
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from desync_decl.formats.index import decode
from desync_decl.reconcile.model import human_bytes
from tests import fleet_routing_helpers
from tests.fleet_routing_helpers import Fleet, group_manifest, nested_parentheses

origin, fleet = fleet_routing_helpers.origin, fleet_routing_helpers.fleet
cli_server = fleet_routing_helpers.cli_server

pytest.importorskip("moto.server", reason="moto[server] is not installed")


def cached_manifest(fleet: Fleet, target: str = "out/app.img") -> Path:
    """The group behind a local cache ``near``; the task reads through the cache."""
    text = group_manifest(fleet, cached=True, target=target)
    return fleet.manifest(text, name=f"{Path(target).name}.yaml")


def chunk_files(store: Path) -> dict[str, int]:
    """Chunk id -> size of its file, in a local store."""
    return {p.name.split(".")[0]: p.stat().st_size for p in store.glob("*/*.cacnk")}


def origin_objects(fleet: Fleet) -> dict[str, int]:
    pages = (
        fleet.origin.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket="origin", Prefix="store/")
    )
    return {
        o["Key"].rsplit("/", 1)[1].split(".")[0]: o["Size"]
        for page in pages
        for o in page.get("Contents", ())
    }


def test_plan_shows_plain_bytes_and_the_stores_own_sizes_for_the_wire(fleet):
    manifest = fleet.manifest(group_manifest(fleet))
    plan = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "state", "--json")
    assert plan.code == 0, plan.out + plan.err
    (task,) = plan.json()["tasks"]
    (served,) = task["travel"]["stores"]
    assert served["store"] == "origin" and served["via"] == "upstream"
    assert served["bytes"] == len(fleet.blob) == task["travel"]["total"]["bytes"]
    # S3 says each object's size: the sum is what the chunks weigh in the bucket
    assert served["stored-estimated"] is False and served["remote"] is True
    assert served["stored-bytes"] == sum(origin_objects(fleet).values()) < served["bytes"] + 4096

    text = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "state")
    assert text.code == 0, text.out + text.err
    stored = served["stored-bytes"]

    assert f"network: {human_bytes(stored)}" in text.out, text.out

    # now the mirror serves; a chunk-server's HEAD gives no length: estimated, and said so
    fleet.origin.kill()
    plan = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "state", "--json")
    (task,) = plan.json()["tasks"]
    (mirror,) = task["travel"]["stores"]
    assert mirror["store"] == "mirror" and mirror["stored-estimated"] is True
    assert mirror["stored-bytes"] == mirror["bytes"] == len(fleet.blob)
    text = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "state")
    assert f"network: about {human_bytes(len(fleet.blob))}" in text.out, text.out


def test_apply_counts_per_store_and_fetched_means_remote_only(fleet):
    first = fleet.cli("apply", cached_manifest(fleet), "--state-dir", fleet.tmp / "s", "--json")
    assert first.code == 0, first.out + first.err
    (result,) = first.json()["tasks"]
    reads = result["stats"]["reads"]
    total = result["stats"]["chunks-from-store"]
    assert reads["stores"]["origin"]["served"] == total  # every distinct chunk, once
    assert reads["stores"]["origin"]["bytes-served"] == len(fleet.blob)
    assert reads["stores"]["near"]["missing"] == reads["stores"]["near"]["requested"] == total
    assert reads["groups"] == {"upstream": {"origin": total}}
    assert result["warnings"] == []

    # the same image to a second path: every chunk is a cache hit, nothing is fetched
    second = fleet.cli(
        "apply", cached_manifest(fleet, "out/copy.img"), "--state-dir", fleet.tmp / "s"
    )
    assert second.code == 0, second.out + second.err
    line = next(line for line in second.out.splitlines() if line.startswith("changed:"))
    assert "0 B fetched" in line and "6.0 MiB from caches" in line, line
    assert (fleet.tmp / "out" / "copy.img").read_bytes() == fleet.blob


def test_a_cache_repair_and_a_failover_switch_each_print_one_warning(fleet):
    first = fleet.cli("apply", cached_manifest(fleet), "--state-dir", fleet.tmp / "s")
    assert first.code == 0, first.out + first.err
    files = sorted((fleet.tmp / "near").glob("*/*.cacnk"))
    broken = files[len(files) // 2]
    broken.write_bytes(b"not zstd at all")
    fleet.origin.kill()
    second = fleet.cli(
        "apply", cached_manifest(fleet, "out/copy.img"), "--state-dir", fleet.tmp / "s", "--json"
    )
    assert second.code == 0, second.out + second.err
    assert (fleet.tmp / "out" / "copy.img").read_bytes() == fleet.blob
    (result,) = second.json()["tasks"]
    repairs = [w for w in result["warnings"] if w.startswith("cache 'near' repaired chunk")]
    assert len(repairs) == 1 and broken.name.split(".")[0] in repairs[0], result["warnings"]
    switches = [w for w in result["warnings"] if "switched" in w]
    assert len(switches) == 1, result["warnings"]
    assert switches[0].startswith("group 'upstream' switched from 'origin' to 'mirror': ")
    reads = result["stats"]["reads"]
    assert reads["groups"] == {"upstream": {"mirror": 1}}
    assert reads["stores"]["near"]["failed"] == 1

    # text output: the same two warnings, one line each
    third = fleet.cli(
        "apply", cached_manifest(fleet, "out/third.img"), "--state-dir", fleet.tmp / "s"
    )
    assert third.code == 0, third.out + third.err
    assert [line for line in third.out.splitlines() if "warning:" in line] == []


def test_with_every_store_down_the_error_names_each_store_and_what_it_said(fleet):
    manifest = fleet.manifest(group_manifest(fleet))
    fleet.origin.kill()
    fleet.mirror.stop()
    applied = fleet.cli("apply", manifest, "--state-dir", fleet.tmp / "s")
    assert applied.code == 1
    (failed,) = [line for line in applied.out.splitlines() if line.startswith("failed:")]
    said = failed.split(" failed: ", 1)[1].split("; ")
    assert len(said) == 2, failed  # one part per member, in the order they were asked
    assert fleet.origin.endpoint.removeprefix("http://") in said[0], failed
    assert said[0].endswith("cannot connect: connection refused"), failed
    assert fleet.mirror_url.rstrip("/").removeprefix("http://") in said[1], failed
    assert said[1].endswith("connection refused"), failed
    assert not nested_parentheses(failed), failed
    assert "Traceback" not in applied.err


def test_a_missing_chunk_is_said_of_the_stores_asked_only(fleet):
    """Members of a group hold the same chunks: a read asks the active one only, so
    the error must not say the other lacks the chunk (it was never asked)."""
    key = next(iter(origin_objects(fleet)))
    fleet.origin.client().delete_object(Bucket="origin", Key=f"store/{key[:4]}/{key}.cacnk")
    plan = fleet.cli("plan", fleet.manifest(group_manifest(fleet)), "--state-dir", fleet.tmp / "s")
    assert plan.code == 1
    (line,) = [line for line in plan.out.splitlines() if "1 chunk of" in line]
    assert "'origin'" in line and "mirror" not in line and "upstream" not in line, line
    assert re.search(r"missing from", line), line


def test_a_chunk_missing_after_a_member_failed_names_both_and_what_each_said(fleet):
    """The origin refuses connections and the mirror lacks a chunk: the error names
    the mirror, which said missing, and the origin, which failed before it, and why."""
    manifest = group_manifest(fleet).replace(
        f"concurrency: {fleet_routing_helpers.CONCURRENCY}", "concurrency: 1"
    )
    # with one thread, chunks are asked in id order: the first is the one the origin failed
    first = min(chunk_files(fleet.tmp / "mirror-store"))
    (fleet.tmp / "mirror-store" / first[:4] / f"{first}.cacnk").unlink()
    fleet.origin.kill()
    plan = fleet.cli("plan", fleet.manifest(manifest), "--state-dir", fleet.tmp / "s")
    assert plan.code == 1, plan.out + plan.err
    (line,) = [line for line in plan.out.splitlines() if "1 chunk of" in line]
    assert "missing from every store a read would ask: 'mirror'" in line, line
    assert "'origin' failed: " in line and line.endswith("connection refused"), line
    assert not nested_parentheses(line), line


def index_sizes(path: Path) -> dict[str, int]:
    """Chunk id -> plain size, as the index says."""
    return {c.id.hex(): c.size for c in decode(path.read_bytes())}


def test_per_store_counts_carry_chunks_and_bytes_for_every_outcome(fleet):
    first = fleet.cli("apply", cached_manifest(fleet), "--state-dir", fleet.tmp / "s", "--json")
    assert first.code == 0, first.out + first.err
    (result,) = first.json()["tasks"]
    stores = result["stats"]["reads"]["stores"]
    near, origin = stores["near"], stores["origin"]
    assert near["bytes-missing"] == near["bytes-requested"] == len(fleet.blob)
    assert near["bytes-served"] == near["bytes-failed"] == 0
    assert origin["bytes-served"] == origin["bytes-requested"] == len(fleet.blob)
    assert origin["bytes-missing"] == origin["bytes-failed"] == 0

    # a broken cached copy, the origin dead: the copy fails, the origin fails, the mirror serves
    files = sorted((fleet.tmp / "near").glob("*/*.cacnk"))
    broken = files[len(files) // 2]
    broken.write_bytes(b"not zstd at all")
    size = index_sizes(fleet.index)[broken.name.split(".")[0]]
    fleet.origin.kill()
    second = fleet.cli(
        "apply", cached_manifest(fleet, "out/copy.img"), "--state-dir", fleet.tmp / "s", "--json"
    )
    assert second.code == 0, second.out + second.err
    (result,) = second.json()["tasks"]
    stores = result["stats"]["reads"]["stores"]
    assert stores["near"]["failed"] == 1 and stores["near"]["bytes-failed"] == size
    assert stores["near"]["bytes-served"] == len(fleet.blob) - size
    assert stores["origin"]["failed"] == 1 and stores["origin"]["bytes-failed"] == size
    assert stores["mirror"]["served"] == 1 and stores["mirror"]["bytes-served"] == size
    for counts in stores.values():
        outcomes = ("served", "missing", "failed")
        assert counts["bytes-requested"] == sum(counts[f"bytes-{o}"] for o in outcomes)


def test_plan_estimates_the_bytes_an_upload_puts_on_the_wire(fleet):
    """make's plan said the plain bytes of the chunks to upload (160 MiB planned,
    139 MiB travelled): it now estimates them as the store will hold them, from a
    sample compressed as the store compresses, and says it is an estimate."""
    data = bytes(random.Random(4).choices(b"abcdefgh", k=3 << 20))  # compresses to about 40%
    (fleet.tmp / "data.img").write_bytes(data)
    manifest = fleet.manifest(
        f"""\
        version: 1
        stores:
          origin: {{url: "s3+{fleet.origin.endpoint}/origin/publish"}}
        tasks:
          - name: publish
            make: {{source: data.img, index: data.caibx, store: origin}}
        """,
        name="publish.yaml",
    )
    plan = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "s", "--json")
    assert plan.code == 0, plan.out + plan.err
    (task,) = plan.json()["tasks"]
    upload = task["travel"]["upload"]
    assert upload["stored-estimated"] is True and upload["remote"] is True
    assert upload["stored-sample"] > 0
    estimate = upload["stored-bytes"]
    text = fleet.cli("plan", manifest, "--state-dir", fleet.tmp / "s")
    assert f"network: about {human_bytes(estimate)}, estimated by compressing" in text.out, text.out

    applied = fleet.cli("apply", manifest, "--state-dir", fleet.tmp / "s", "--json")
    assert applied.code == 0, applied.out + applied.err
    pages = (
        fleet.origin.client()
        .get_paginator("list_objects_v2")
        .paginate(Bucket="origin", Prefix="publish/")
    )
    travelled = sum(o["Size"] for page in pages for o in page.get("Contents", ()))
    assert travelled < 0.8 * upload["bytes"]  # the plain bytes would be far off
    assert abs(estimate - travelled) <= 0.1 * travelled, (estimate, travelled)
