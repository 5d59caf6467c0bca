"""Indexes kept in an OCI registry (``oci+http://registry/repo/NAME.caibx``): one
artifact per index, tagged with the index name, its one layer the index file titled
with that name (what ``oras pull registry/repo:NAME.caibx`` writes as ``NAME.caibx``).

Every verb that reads or writes an index goes through it: make, extract, tar,
untar, mount-index, ``index-server -s`` and a manifest's tasks; a signature is the
artifact ``NAME.caibx.sig`` beside it (tests/test_index_signatures_stores.py runs
its store tests on a registry too). Against a real registry (docker-registry).
"""

from __future__ import annotations

import urllib.request

import pytest

from desync_decl.stores import oci
from desync_decl.stores.location import Opener
from tests import servers_http
from tests.servers_oci import fresh_repo, list_tags, pull_artifact
from tests.test_mount import needs_fuse, start_mount
from tests.test_reconcile_kinds import apply, blob, manifest, write

pytestmark = pytest.mark.usefixtures("no_ambient_credentials")
cli_server = servers_http.cli_server


@pytest.fixture
def repos(registry) -> tuple[str, str]:
    """A repository for chunks, one for indexes (their locations)."""
    return registry.location(fresh_repo()), registry.location(fresh_repo())


def test_make_writes_one_artifact_tagged_with_the_index_name(cli, registry, repos, tmp_path):
    chunks, indexes = repos
    source = write(tmp_path / "model.bin", blob(60, 200_000))
    r = cli("make", "-s", chunks, f"{indexes}/model-v1.caibx", source)
    assert r.code == 0, r.err
    repo = indexes.split("/", 3)[3]
    assert list_tags(registry.url, repo) == ["model-v1.caibx"]
    pulled = pull_artifact(registry.url, repo, "model-v1.caibx")
    assert pulled is not None
    artifact, data = pulled
    assert artifact["artifactType"] == oci.INDEX_TYPE
    assert artifact["layers"][0]["annotations"] == {oci.TITLE: "model-v1.caibx"}
    r = cli("make", tmp_path / "local.caibx", source)  # the same index, made locally
    assert r.code == 0, r.err
    assert data == (tmp_path / "local.caibx").read_bytes()

    out = tmp_path / "out.bin"
    r = cli("extract", "-s", chunks, f"{indexes}/model-v1.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == source.read_bytes()


def test_tar_and_untar_through_a_registry_index(cli, repos, tmp_path):
    chunks, indexes = repos
    tree = tmp_path / "model"
    write(tree / "config.json", b'{"layers": 2}')
    write(tree / "shards" / "s1.bin", blob(61, 100_000))
    r = cli("tar", "-i", "-s", chunks, f"{indexes}/model.caidx", tree)
    assert r.code == 0, r.err
    out = tmp_path / "out"
    r = cli("untar", "-i", "-s", chunks, f"{indexes}/model.caidx", out)
    assert r.code == 0, r.err
    assert (out / "shards" / "s1.bin").read_bytes() == (tree / "shards" / "s1.bin").read_bytes()
    assert cli("mtree", out).out == cli("mtree", tree).out


def test_an_absent_index_and_a_name_no_tag_can_be_are_one_line_each(cli, repos, tmp_path):
    chunks, indexes = repos
    r = cli("extract", "-s", chunks, f"{indexes}/nothing.caibx", tmp_path / "out")
    assert r.code == 1 and r.err.count("\n") == 1
    assert "index nothing.caibx not found in " in r.err
    source = write(tmp_path / "a.bin", blob(62, 10_000))
    r = cli("make", "-s", chunks, f"{indexes}/.hidden.caibx", source)
    assert r.code == 1 and r.err.count("\n") == 1
    assert "'.hidden.caibx' cannot be an OCI tag" in r.err


def test_the_index_server_serves_indexes_from_a_registry(cli, cli_server, repos, tmp_path):
    chunks, indexes = repos
    source = write(tmp_path / "app.img", blob(63, 50_000))
    assert cli("make", "-s", chunks, f"{indexes}/app.caibx", source).code == 0
    url = cli_server("index-server", "-s", indexes).url.rstrip("/")
    with urllib.request.urlopen(f"{url}/app.caibx", timeout=10) as answer:
        served = answer.read()
    assert served == Opener().read_signed_index(f"{indexes}/app.caibx").data
    r = cli("extract", "-s", chunks, f"{url}/app.caibx", tmp_path / "via-server.img")
    assert r.code == 0, r.err
    assert (tmp_path / "via-server.img").read_bytes() == source.read_bytes()


def test_a_manifest_publishes_to_and_installs_from_registry_indexes(registry, repos, tmp_path):
    chunks, indexes = repos
    write(tmp_path / "app.img", blob(64, 120_000))
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{chunks}"}}}}
        tasks:
        - {{name: publish, make: {{source: app.img, index: "{indexes}/app.caibx", store: r}}}}
        - name: install
          extract: {{index: "{indexes}/app.caibx", path: out/app.img, stores: [r]}}
        """,
    )
    state = tmp_path / "state"
    assert [r.status.value for r in apply(m, state)] == ["changed", "changed"]
    assert (tmp_path / "out" / "app.img").read_bytes() == (tmp_path / "app.img").read_bytes()
    assert [r.status.value for r in apply(m, state)] == ["ok", "ok"]
    write(tmp_path / "app.img", blob(65, 120_000))
    assert [r.status.value for r in apply(m, state)] == ["changed", "changed"]
    assert (tmp_path / "out" / "app.img").read_bytes() == blob(65, 120_000)


@needs_fuse
def test_mount_index_reads_an_index_from_a_registry(cli, repos, tmp_path):
    chunks, indexes = repos
    source = write(tmp_path / "disk.img", blob(66, 300_000))
    assert cli("make", "-s", chunks, f"{indexes}/disk.caibx", source).code == 0
    mount = start_mount(tmp_path, "-s", chunks, f"{indexes}/disk.caibx")
    try:
        assert (mount.path / "disk").read_bytes() == source.read_bytes()  # named as the index
    finally:
        assert mount.unmount() == 0


def test_chunks_and_indexes_can_share_one_repository(cli, registry, tmp_path):
    """A prune of the chunks leaves the index artifacts beside them (another type)."""
    repo = fresh_repo()
    both = registry.location(repo)
    for name, seed in (("a", 67), ("b", 68)):
        source = write(tmp_path / f"{name}.img", blob(seed, 60_000))
        assert cli("make", "-s", both, f"{both}/{name}.caibx", source).code == 0
    r = cli("prune", "-y", "--min-age", "0", "-s", both, f"{both}/a.caibx")
    assert r.code == 0, r.err
    tags = list_tags(registry.url, repo)
    assert "a.caibx" in tags and "b.caibx" in tags  # indexes are not chunks
    out = tmp_path / "a.out"
    assert cli("extract", "-s", both, f"{both}/a.caibx", out).code == 0
    assert out.read_bytes() == (tmp_path / "a.img").read_bytes()
