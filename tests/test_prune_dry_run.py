"""``prune`` says what it will delete before it deletes: how many chunks and how many
bytes as the store holds them; ``--dry-run`` says it and deletes nothing; a store
that frees space only in its own garbage collection (an OCI registry) says so.

Expected numbers come from the store itself (file sizes, the registry's manifests),
never from the code under test.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from desync_decl.reconcile.model import human_bytes
from tests.prune_sites import backdate
from tests.servers_oci import TcpRelay, fresh_repo, list_tags, pull_artifact
from tests.test_reconcile_kinds import SIZES, apply, blob, index_of, manifest, plan, write

pytestmark = pytest.mark.usefixtures("no_ambient_credentials")
M = SIZES.replace("K", "k")


def two_files(cli, tmp_path: Path, store: str) -> tuple[Path, Path]:
    """``keep.caibx`` and ``drop.caibx``, both made into ``store``."""
    for name, seed in (("keep", 70), ("drop", 71)):
        source = write(tmp_path / f"{name}.img", blob(seed, 150_000))
        r = cli("make", "-m", M, "-s", store, tmp_path / f"{name}.caibx", source)
        assert r.code == 0, r.err
    return tmp_path / "keep.caibx", tmp_path / "drop.caibx"


def unreferenced_files(store: Path, keep: Path) -> list[Path]:
    kept = {id.hex() for id in index_of(keep).unique_ids()}
    return [p for p in store.rglob("*.cacnk") if p.name[:64] not in kept]


def test_dry_run_says_chunks_and_bytes_and_deletes_nothing(cli, tmp_path):
    store = tmp_path / "store"
    keep, _ = two_files(cli, tmp_path, str(store))
    backdate(store)
    doomed = unreferenced_files(store, keep)
    assert doomed
    before = sorted(store.rglob("*"))
    r = cli("prune", "--dry-run", "-s", store, keep)
    assert r.code == 0, r.err
    size = human_bytes(sum(p.stat().st_size for p in doomed))
    kept = len(index_of(keep).unique_ids())
    assert r.out == (
        f"would delete {len(doomed)} chunks ({size}) from {store}, unreferenced and older"
        f" than 1h; {kept} referenced chunks stay\n"
    )
    assert sorted(store.rglob("*")) == before  # nothing deleted, no lock left or taken


def test_the_question_and_a_yes_prune_say_the_same_numbers(cli, tmp_path):
    store = tmp_path / "store"
    keep, _ = two_files(cli, tmp_path, str(store))
    doomed = unreferenced_files(store, keep)
    size = human_bytes(sum(p.stat().st_size for p in doomed))
    r = cli("prune", "--min-age", "0", "-s", store, keep, stdin=b"n\n")
    assert r.code == 0
    assert f"{len(doomed)} chunks ({size}) from {store}, unreferenced;" in r.out
    assert "Continue? [y/N]" in r.out and all(p.exists() for p in doomed)
    r = cli("prune", "-y", "--min-age", "0", "-s", store, keep)
    assert r.code == 0, r.err
    assert r.out == (
        f"kept {len(index_of(keep).unique_ids())} chunks, removed {len(doomed)} files"
        f" ({size}) from {store}\n"
    )
    assert not any(p.exists() for p in doomed)


def registry_sizes(registry, repo: str, tags: list[str]) -> int:
    """The stored bytes of chunk artifacts, from the registry's own manifests."""
    total = 0
    for tag in tags:
        pulled = pull_artifact(registry.url, repo, tag)
        assert pulled is not None
        total += pulled[0]["layers"][0]["size"]
    return total


def test_a_registry_prune_counts_bytes_and_says_the_registry_must_collect_garbage(
    cli, registry, tmp_path
):
    relay = TcpRelay(int(registry.url.rsplit(":", 1)[1]))
    repo = fresh_repo()
    store = f"oci+http://127.0.0.1:{relay.port}/{repo}"
    keep, _ = two_files(cli, tmp_path, registry.location(repo))
    kept = {id.hex() + ".cacnk" for id in index_of(keep).unique_ids()}
    doomed = [t for t in list_tags(registry.url, repo) if t not in kept]
    size = human_bytes(registry_sizes(registry, repo, doomed))
    r = cli("prune", "--dry-run", "--min-age", "0", "-s", store, keep)
    assert r.code == 0, r.err
    said, note = r.out.splitlines()
    assert said.startswith(f"would delete {len(doomed)} chunks ({size}) from {store}")
    assert note.startswith("note: an OCI registry frees the space") and "garbage" in note
    assert sorted(list_tags(registry.url, repo)) == sorted([*kept, *doomed])

    relay.requests.clear()
    r = cli("prune", "-y", "--min-age", "0", "-s", store, keep)
    assert r.code == 0, r.err
    assert f"removed {len(doomed)} files ({size})" in r.out and "garbage" in r.out
    assert sorted(list_tags(registry.url, repo)) == sorted(kept)
    # each doomed chunk: its manifest read once (its size, and what to delete), deleted once
    gets = [p for m, p in relay.requests if m == "GET" and "/manifests/" in p]
    deletes = [p for m, p in relay.requests if m == "DELETE"]
    assert len(gets) == len(doomed) and len(deletes) == len(doomed)
    relay.stop()


def test_a_manifest_prune_plans_bytes_and_notes_the_garbage_collection(cli, registry, tmp_path):
    repo = fresh_repo()
    keep, _ = two_files(cli, tmp_path, registry.location(repo))
    kept = {id.hex() + ".cacnk" for id in index_of(keep).unique_ids()}
    doomed = [t for t in list_tags(registry.url, repo) if t not in kept]
    size = human_bytes(registry_sizes(registry, repo, doomed))
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{registry.location(repo)}"}}}}
        tasks:
        - {{name: gc, prune: {{store: r, keep: [{keep}], min_age: 0}}}}
        """,
    )
    [entry] = plan(m, tmp_path / "state").entries
    assert re.match(
        rf"{len(doomed)} chunks \({re.escape(size)}\) no kept index", entry.action.reason
    )
    assert any("garbage collection" in n for n in entry.action.notes)
    [result] = apply(m, tmp_path / "state")
    assert result.status.value == "changed" and "garbage collection" in result.msg
    assert sorted(list_tags(registry.url, repo)) == sorted(kept)
