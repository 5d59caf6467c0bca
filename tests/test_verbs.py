"""Each verb end to end through the CLI, on real files and a real local store."""

from __future__ import annotations

import io
import json
import random

import pytest

from desync_decl.assemble.plan import null_chunk_id
from desync_decl.formats import index as fmt
from desync_decl.formats.digest import Digest
from tests.prune_sites import backdate


@pytest.fixture
def blob(tmp_path):
    """A 1.5 MB file with a repeated block and a zero run (dedup and null chunks)."""
    rng = random.Random(7)
    a = rng.randbytes(300_000)
    data = a + rng.randbytes(400_000) + a + bytes(500_000) + rng.randbytes(123_457)
    path = tmp_path / "blob.img"
    path.write_bytes(data)
    return path


def make(cli, tmp_path, blob, *extra):
    r = cli(
        "make", "-s", tmp_path / "store", "-m", "4:16:64", *extra, tmp_path / "blob.caibx", blob
    )
    assert r.code == 0, r.err
    return fmt.decode((tmp_path / "blob.caibx").read_bytes())


def test_make_prints_the_index_digest_and_stores_every_chunk(cli, tmp_path, blob):
    r = cli("make", "-s", tmp_path / "store", "-m", "4:16:64", tmp_path / "blob.caibx", blob)
    assert r.code == 0
    raw = (tmp_path / "blob.caibx").read_bytes()
    assert r.out.strip() == "sha512-256:" + Digest.SHA512_256.hash(raw).hex()
    index = fmt.decode(raw)
    assert index.length == blob.stat().st_size
    files = {p.name for p in (tmp_path / "store").rglob("*.cacnk")}
    assert files == {c.id.hex() + ".cacnk" for c in index}
    assert len(files) < len(index)  # repeated content is stored once


def test_make_json_and_stdout_index(cli, tmp_path, blob):
    r = cli("make", "--json", "--blob-digest", "-m", "4:16:64", tmp_path / "x.caibx", blob)
    doc = json.loads(r.out)
    assert doc["blob-digest"] == Digest.SHA512_256.hash(blob.read_bytes()).hex()
    assert (
        doc["index-digest"]
        == "sha512-256:" + Digest.SHA512_256.hash((tmp_path / "x.caibx").read_bytes()).hex()
    )
    assert doc["stored"] == 0 and doc["chunks"] > 50
    r2 = cli("make", "-m", "4:16:64", "-", blob)
    assert r2.data == (tmp_path / "x.caibx").read_bytes()


def test_make_with_sha256_digest(cli, tmp_path, blob):
    r = cli(
        "--digest",
        "sha256",
        "make",
        "--blob-digest",
        "-s",
        tmp_path / "s",
        tmp_path / "x.caibx",
        blob,
    )
    assert r.code == 0, r.err
    index = fmt.decode((tmp_path / "x.caibx").read_bytes())
    assert index.digest is Digest.SHA256
    assert index.flags == 0x9000000000000000
    assert r.out.strip() == Digest.SHA256.hash(blob.read_bytes()).hex()
    assert cli("extract", "-s", tmp_path / "s", tmp_path / "x.caibx", tmp_path / "out").code == 0
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()


def test_extract_round_trip_and_stats(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    r = cli(
        "extract",
        "--print-stats",
        "-s",
        tmp_path / "store",
        tmp_path / "blob.caibx",
        tmp_path / "out",
    )
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == blob.read_bytes()
    stats = json.loads(r.out)
    assert stats["chunks-total"] == len(index)
    null = null_chunk_id(index)
    nulls = [c for c in index if c.id == null]
    assert nulls, "the blob has a run of zeros"
    # each distinct chunk fetched once; the zero run comes from the null seed
    assert stats["chunks-from-store"] == len(index.unique_ids() - {null})
    assert stats["chunks-from-seeds"] == len(nulls)
    assert stats["bytes-total"] == blob.stat().st_size


def test_extract_tries_stores_in_order(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    # split the chunks over two stores: neither alone is enough
    second = tmp_path / "second"
    for i, path in enumerate(sorted((tmp_path / "store").rglob("*.cacnk"))):
        if i % 2:
            dest = second / path.parent.name / path.name
            dest.parent.mkdir(parents=True, exist_ok=True)
            path.rename(dest)
    out = tmp_path / "out"
    assert cli("extract", "-s", tmp_path / "store", tmp_path / "blob.caibx", out).code == 1
    r = cli("extract", "-s", f"{tmp_path / 'store'},{second}", tmp_path / "blob.caibx", out)
    assert r.code == 0, r.err
    assert out.read_bytes() == blob.read_bytes()
    r = cli("info", "--json", "-s", tmp_path / "store", "-s", second, tmp_path / "blob.caibx")
    data = json.loads(r.out)
    unique = len(index.unique_ids())
    in_second = len(list(second.rglob("*.cacnk")))
    assert data["in-store"] == unique
    assert [(s["present"], s["missing"]) for s in data["stores"]] == [
        (unique - in_second, in_second),
        (in_second, unique - in_second),
    ]


def test_extract_replaces_an_existing_target(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    out = tmp_path / "out"
    out.write_bytes(b"old content that is longer or shorter")
    assert cli("extract", "-s", tmp_path / "store", tmp_path / "blob.caibx", out).code == 0
    assert out.read_bytes() == blob.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_extract_refuses_to_overwrite_its_own_index(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    r = cli("extract", "-s", tmp_path / "store", tmp_path / "blob.caibx", tmp_path / "blob.caibx")
    assert r.code == 1 and "overwrite the index" in r.err


def test_chop_stores_what_make_would(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    made = {p.name for p in (tmp_path / "store").rglob("*.cacnk")}
    (tmp_path / "chopped").mkdir()  # chop stores into a store that exists (as desync)
    r = cli("chop", "-s", tmp_path / "chopped", tmp_path / "blob.caibx", blob)
    assert r.code == 0, r.err
    assert {p.name for p in (tmp_path / "chopped").rglob("*.cacnk")} == made


def test_chop_ignores_chunks_of_other_indexes_and_id_lists(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    ids = sorted(index.unique_ids())
    (tmp_path / "ignore.txt").write_text("\n".join(i.hex() for i in ids[:5]) + "\n\n")
    (tmp_path / "c").mkdir()
    (tmp_path / "d").mkdir()
    r = cli(
        "chop",
        "-s",
        tmp_path / "c",
        "--ignore-chunks",
        tmp_path / "ignore.txt",
        tmp_path / "blob.caibx",
        blob,
    )
    assert r.code == 0, r.err
    assert len(list((tmp_path / "c").rglob("*.cacnk"))) == len(ids) - 5
    r = cli(
        "chop",
        "-s",
        tmp_path / "d",
        "--ignore",
        tmp_path / "blob.caibx",
        tmp_path / "blob.caibx",
        blob,
    )
    assert r.code == 0 and not list((tmp_path / "d").rglob("*.cacnk"))


def test_chop_refuses_a_file_that_does_not_match(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    data = bytearray(blob.read_bytes())
    data[500_000] ^= 0xFF
    other = tmp_path / "other.img"
    other.write_bytes(bytes(data))
    (tmp_path / "c").mkdir()
    r = cli("chop", "-s", tmp_path / "c", tmp_path / "blob.caibx", other)
    assert r.code == 1
    assert "do not match chunk" in r.err


@pytest.mark.parametrize(
    ("offset", "length"), [(0, 0), (1, 10), (299_990, 20_000), (1_600_000, 0), (5, 1)]
)
def test_cat_writes_the_requested_range(cli, tmp_path, blob, offset, length):
    make(cli, tmp_path, blob)
    data = blob.read_bytes()
    r = cli("cat", "-s", tmp_path / "store", "-o", offset, "-l", length, tmp_path / "blob.caibx")
    assert r.code == 0, r.err
    assert r.data == data[offset : offset + length if length else None]
    r = cli(
        "cat",
        "-s",
        tmp_path / "store",
        "-o",
        offset,
        "-l",
        length,
        tmp_path / "blob.caibx",
        tmp_path / "part",
    )
    assert (tmp_path / "part").read_bytes() == data[offset : offset + length if length else None]


def test_info_counts_chunks_and_store_presence(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    victim = next((tmp_path / "store").rglob("*.cacnk"))
    victim.unlink()
    r = cli("info", "--json", "-s", tmp_path / "store", tmp_path / "blob.caibx")
    doc = json.loads(r.out)
    assert doc["total"] == len(index)
    assert doc["unique"] == len(index.unique_ids())
    assert doc["in-store"] == len(index.unique_ids()) - 1
    assert doc["size"] == blob.stat().st_size
    assert (doc["chunk-size-min"], doc["chunk-size-avg"], doc["chunk-size-max"]) == (
        4096,
        16384,
        65536,
    )
    text = cli("info", "-f", "plain", tmp_path / "blob.caibx").out  # JSON by default, as desync
    assert f"Total chunks: {len(index)}" in text
    assert "Blob size: 1623457" in text


def test_list_chunks_prints_every_id_in_order(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    r = cli("list-chunks", tmp_path / "blob.caibx")
    assert r.out.split() == [c.id.hex() for c in index]


def test_inspect_chunks_reports_stored_sizes(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    rows = json.loads(cli("inspect-chunks", "-s", tmp_path / "store", tmp_path / "blob.caibx").out)
    assert [r["id"] for r in rows] == [c.id.hex() for c in index]
    assert [r["uncompressed_size"] for r in rows] == [c.size for c in index]
    for row in rows:
        h = row["id"]
        assert row["compressed_size"] == (tmp_path / "store" / h[:4] / f"{h}.cacnk").stat().st_size
    plain = json.loads(cli("inspect-chunks", tmp_path / "blob.caibx").out)
    assert all("compressed_size" not in r for r in plain)


def test_chunk_prints_boundaries_like_make(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    r = cli("chunk", "-m", "4:16:64", blob)
    rows = [line.split("\t") for line in r.out.splitlines()]
    assert rows == [[str(c.start), str(c.size), c.id.hex()] for c in index]


def test_chunk_start_offset(cli, tmp_path, blob):
    r = cli("chunk", "-S", 1000, "-m", "4:16:64", blob)
    rows = [line.split("\t") for line in r.out.splitlines()]
    assert rows[0][0] == "1000"
    assert sum(int(size) for _, size, _ in rows) == blob.stat().st_size - 1000


def test_prune_keeps_only_referenced_chunks(cli, tmp_path, blob):
    index = make(cli, tmp_path, blob)
    other = tmp_path / "other.img"
    other.write_bytes(random.Random(9).randbytes(200_000))
    r = cli("make", "-s", tmp_path / "store", "-m", "4:16:64", tmp_path / "other.caibx", other)
    assert r.code == 0
    backdate(tmp_path / "store")  # older than prune's minimum age
    r = cli("prune", "-y", "-s", tmp_path / "store", tmp_path / "blob.caibx")
    assert r.code == 0, r.err
    left = {p.name[:64] for p in (tmp_path / "store").rglob("*.cacnk")}
    assert left == {i.hex() for i in index.unique_ids()}


def test_prune_asks_and_stops_on_no(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    before = sorted((tmp_path / "store").rglob("*.cacnk"))
    (tmp_path / "empty.img").write_bytes(b"x")
    cli("make", "-m", "4:16:64", tmp_path / "tiny.caibx", tmp_path / "empty.img")
    backdate(tmp_path / "store")  # older than prune's minimum age
    r = cli("prune", "-s", tmp_path / "store", tmp_path / "tiny.caibx", stdin=b"maybe\nn\n")
    assert r.code == 0
    assert r.out.count("Continue? [y/N]") == 2
    assert sorted((tmp_path / "store").rglob("*.cacnk")) == before
    r = cli("prune", "-s", tmp_path / "store", tmp_path / "tiny.caibx", stdin=b"y\n")
    assert r.code == 0
    assert not list((tmp_path / "store").rglob("*.cacnk"))


def test_verify_index_accepts_the_matching_file(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    assert cli("verify-index", tmp_path / "blob.caibx", blob).code == 0


def test_verify_passes_on_a_good_store(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    r = cli("verify", "-s", tmp_path / "store")
    assert r.code == 0 and r.err == ""


def test_python_dash_m_runs_the_cli():
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "desync_decl", "--version"], capture_output=True, text=True
    )
    assert done.returncode == 0
    assert done.stdout.startswith("desync-decl ")


@pytest.mark.parametrize("uncompressed", [False, True])
def test_make_counts_the_bytes_it_stored_in_the_stores_form(tmp_path, blob, uncompressed):
    from desync_decl.formats.chunk_sizes import ChunkSizes
    from desync_decl.ops.make import make as make_op
    from desync_decl.stores.converters import StorageFormat
    from desync_decl.stores.local import LocalStore

    form = StorageFormat(compressed=not uncompressed)
    store = LocalStore(tmp_path / "s", create=True, format=form)
    result = make_op(blob, sizes=ChunkSizes.parse("4:16:64"), store=store)
    files = [p for p in (tmp_path / "s").rglob("*") if p.is_file()]
    assert result.chunks_stored == len(files) == len(result.index.unique_ids())
    assert result.bytes_stored == sum(p.stat().st_size for p in files)
    assert all(p.name.endswith(".cacnk") != uncompressed for p in files)
    again = make_op(blob, sizes=ChunkSizes.parse("4:16:64"), store=store)
    assert (again.chunks_stored, again.bytes_stored) == (0, 0)


def test_a_chunk_whose_length_differs_from_the_index_is_invalid(tmp_path, blob):
    from desync_decl.ops.cat import cat
    from desync_decl.ops.extract import extract
    from desync_decl.stores.base import ChunkInvalid
    from desync_decl.stores.local import LocalStore

    store = LocalStore(tmp_path / "s", create=True)
    from desync_decl.formats.chunk_sizes import ChunkSizes
    from desync_decl.ops.make import make as make_op

    index = make_op(blob, sizes=ChunkSizes.parse("4:16:64"), store=store).index
    first = index.chunk(0)
    lying = fmt.Index.from_chunks(index.flags, index.sizes, [(first.size - 1, first.id)])
    with pytest.raises(ChunkInvalid, match=f"{first.size} bytes, the index says {first.size - 1}"):
        extract(lying, tmp_path / "out", store, concurrency=1)
    with pytest.raises(ChunkInvalid, match="the index says"):
        cat(lying, store, io.BytesIO())
    assert not (tmp_path / "out").exists()


def test_info_with_a_seed_shows_the_plan_extract_would_follow(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    changed = bytearray(blob.read_bytes())
    changed[700_000:700_100] = bytes(range(100))
    (tmp_path / "new.img").write_bytes(changed)
    r = cli("make", "-m", "4:16:64", tmp_path / "new.caibx", tmp_path / "new.img")
    assert r.code == 0, r.err
    seed = f"{tmp_path / 'blob.caibx'}"
    info_r = cli("info", "--json", "--seed", seed, tmp_path / "new.caibx")
    dry = cli(
        "extract", "--dry-run", "--json", "--seed", seed, tmp_path / "new.caibx", tmp_path / "o"
    )
    assert info_r.code == dry.code == 0, info_r.err + dry.err
    plan = json.loads(info_r.out)["plan"]
    assert plan["sources"] == json.loads(dry.out)["sources"]
    assert plan["sources"]["seed"]["bytes"] > len(changed) // 2
    assert plan["seeds"][0]["name"] == seed
    text = cli("info", "-f", "plain", "--seed", seed, tmp_path / "new.caibx")
    assert "Extraction plan:" in text.out and "from seeds" in text.out


def test_a_seed_index_with_other_chunk_ids_is_refused_by_name(cli, tmp_path, blob):
    make(cli, tmp_path, blob)
    r = cli("--digest", "sha256", "make", tmp_path / "other.caibx", blob)
    assert r.code == 0, r.err
    seed = f"{tmp_path / 'other.caibx'}:{blob}"
    r = cli(
        "extract", "-s", tmp_path / "store", "--seed", seed, tmp_path / "blob.caibx", tmp_path / "o"
    )
    assert r.code == 1
    assert "other.caibx uses sha256 chunk ids" in r.err and len(r.err.splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_every_verb_is_found_in_the_module_the_lazy_table_names():
    import argparse

    from desync_decl.cli.main import VERBS, build_parser, verb_of

    def verbs(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return dict(sub.choices)

    assert set(verbs(build_parser())) == set(VERBS)
    for verb in VERBS:
        built = verbs(build_parser(verb))
        assert set(built) == {verb}
        assert callable(built[verb].get_default("func")), verb
    assert verb_of(["--config", "c.json", "--digest", "sha256", "make", "-s", "x"]) == "make"
    assert verb_of(["--debug"]) is None


def test_global_flags_may_be_abbreviated_as_argparse_allows(cli, tmp_path, blob, capsys):
    """The lazy verb table must find the verb behind an abbreviated global flag's value,
    as the parser with every verb did."""
    config = tmp_path / "cfg.json"
    config.write_text('{"store-options": {"/x": {"uncompressed": true}}}')

    shown = cli("--conf", config, "config")
    assert shown.code == 0, shown.err
    assert json.loads(shown.out)["store-options"]["/x"]["uncompressed"] is True

    schema = cli("--dig", "sha256", "schema")
    assert schema.code == 0, schema.err
    assert "$schema" in json.loads(schema.out)

    made = cli(
        "--conf", config, "--dig=sha256", "make", "-s", tmp_path / "st", tmp_path / "b.caibx", blob
    )
    assert made.code == 0, made.err
    assert fmt.decode((tmp_path / "b.caibx").read_bytes()).digest is Digest.SHA256

    ambiguous = cli("--d", "sha256", "schema")  # --digest or --debug: argparse's own error
    assert ambiguous.code == 1
    assert capsys.readouterr().err == (
        "desync-decl: error: ambiguous option: --d could match --digest, --debug\n"
    )


@pytest.mark.parametrize("before", [[], ["--conf", "cfg.json"]])
def test_an_unknown_verb_is_named_with_the_choices(cli, before, capsys):
    """Usage errors are argparse's (on stderr), whichever parser the verb table built."""
    r = cli(*before, "nosuch")
    err = capsys.readouterr().err
    assert r.code == 1
    assert err.startswith("desync-decl: error: argument VERB: invalid choice: 'nosuch'")
    assert "(choose from 'make', 'extract'," in err and "'mtree')" in err
    assert len(err.splitlines()) == 1
