"""A registry that cannot hold the chunks is one clear line, never "chunk missing":
an unknown repository (a mistyped path), and a registry addressed as a plain HTTP
store (``http://`` for ``oci+http://``). A repository that writing creates is
still an empty store to write into (a ``make``, a cache's copy).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.servers_oci import fresh_repo, list_tags
from tests.test_reconcile_kinds import SIZES, apply, blob, manifest, write

pytestmark = pytest.mark.usefixtures("no_ambient_credentials")


@pytest.fixture
def published(cli, registry, tmp_path) -> tuple[str, Path, Path]:
    """A file made into a repository: the repository, the index, the file."""
    repo = fresh_repo()
    source = write(tmp_path / "app.img", blob(50, 200_000))
    index = tmp_path / "app.caibx"
    done = cli("make", "-m", SIZES.replace("K", "k"), "-s", registry.location(repo), index, source)
    assert done.code == 0, done.err
    return repo, index, source


def one_line(text: str) -> str:
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    return lines[0]


def test_extract_from_an_unknown_repository_names_it(cli, registry, published, tmp_path):
    _, index, _ = published
    wrong = registry.location("test/no-such-repo")
    r = cli("extract", "-s", wrong, index, tmp_path / "out.img")
    assert r.code == 1
    line = one_line(r.err)
    assert "has no repository 'test/no-such-repo'" in line and registry.url in line
    assert "missing" not in line and "Traceback" not in r.err


def test_a_plan_from_an_unknown_repository_says_so_not_missing_chunks(
    cli, registry, published, tmp_path
):
    _, index, _ = published
    wrong = registry.location("test/no-such-repo")
    m = manifest(
        tmp_path,
        f"""\
        stores: {{r: {{url: "{wrong}"}}}}
        tasks:
        - {{name: ex, extract: {{index: {index}, path: out.img, stores: [r]}}}}
        """,
    )
    r = cli("plan", m, "--state-dir", tmp_path / "state")
    assert r.code != 0
    assert "has no repository 'test/no-such-repo'" in r.out + r.err
    assert "missing" not in r.out + r.err and "Traceback" not in r.err


def test_a_registry_addressed_as_http_is_named_as_a_registry(cli, registry, published, tmp_path):
    repo, index, _ = published
    plain = f"{registry.url}/{repo}"  # http://127.0.0.1:PORT/test/...: no oci+
    r = cli("extract", "-s", plain, index, tmp_path / "out.img")
    assert r.code == 1
    line = one_line(r.err)
    assert "is an OCI registry" in line and f"oci+http://{registry.url[7:]}/" in line
    assert "missing" not in line


def test_make_into_a_new_repository_creates_it(cli, registry, tmp_path):
    repo = fresh_repo()
    source = write(tmp_path / "new.img", blob(51, 50_000))
    r = cli("make", "-s", registry.location(repo), tmp_path / "new.caibx", source)
    assert r.code == 0, r.err
    assert list_tags(registry.url, repo)


def test_a_cache_in_a_new_repository_is_an_empty_cache(cli, registry, published, tmp_path):
    """A cache's copy that does not exist yet holds nothing; the first read fills it."""
    repo, index, source = published
    copy = fresh_repo()
    m = manifest(
        tmp_path,
        f"""\
        stores:
          r: {{url: "{registry.location(repo)}"}}
          near: {{url: "{registry.location(copy)}"}}
        caches: {{fast: {{store: r, cache: near}}}}
        tasks:
        - {{name: ex, extract: {{index: {index}, path: out.img, stores: [fast]}}}}
        """,
    )
    assert [r.status.value for r in apply(m, tmp_path / "state")] == ["changed"]
    assert (tmp_path / "out.img").read_bytes() == source.read_bytes()
    assert sorted(list_tags(registry.url, copy)) == sorted(list_tags(registry.url, repo))
    r = cli("extract", "-s", registry.location(repo), "-c", registry.location(fresh_repo()),
            index, tmp_path / "again.img")  # fmt: skip
    assert r.code == 0, r.err


def test_prune_and_verify_of_an_unknown_repository_name_it(cli, registry, published):
    _, index, _ = published
    wrong = registry.location("test/no-such-repo")
    prune = ("prune", "--dry-run", "--min-age", "0", "-s", wrong, index)
    for argv in (prune, ("verify", "-s", wrong)):
        r = cli(*argv)
        assert r.code == 1, argv
        assert "has no repository 'test/no-such-repo'" in one_line(r.err)
