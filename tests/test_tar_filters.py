"""``tar --include/--exclude`` and the tar task's ``include``/``exclude``: what the
archive holds, from a directory and from a tar stream; bad patterns refused in one
line (at the manifest's line); ``mtree``/``untar`` of a caidx without ``-i`` say so."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from desync_decl.archive.patterns import Patterns
from desync_decl.ops.tar import TarInput, tar
from tests.cli_checks import refused


@pytest.fixture
def model(tmp_path: Path) -> Path:
    root = tmp_path / "model"
    for d in ("tokenizer", "shards/old", ".cache/hub"):
        (root / d).mkdir(parents=True)
    files = {
        "config.json": b"{}",
        "tokenizer/vocab.json": b'{"a": 1}',
        "tokenizer/merges.txt": b"a b",
        "shards/s1.bin": b"1" * 5000,
        "shards/s1.bin.tmp": b"partial",
        "shards/old/s0.bin": b"0" * 3000,
        ".cache/hub/blob": b"cached",
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    os.symlink("s1.bin", root / "shards" / "latest")
    return root


def listing(cli, archive: Path, *flags: str) -> list[str]:
    """The paths ``mtree`` lists for an archive (``.`` left out)."""
    result = cli("mtree", *flags, archive)
    assert result.code == 0, result.err
    return [line.split()[0] for line in result.out.splitlines()[2:]]


ALL = [
    ".cache",
    ".cache/hub",
    ".cache/hub/blob",
    "config.json",
    "shards",
    "shards/latest",
    "shards/old",
    "shards/old/s0.bin",
    "shards/s1.bin",
    "shards/s1.bin.tmp",
    "tokenizer",
    "tokenizer/merges.txt",
    "tokenizer/vocab.json",
]


@pytest.mark.parametrize(
    ("flags", "left_out"),
    [
        ([], []),
        (["--exclude", "*.tmp"], ["shards/s1.bin.tmp"]),
        (["--exclude", ".cache/"], [".cache", ".cache/hub", ".cache/hub/blob"]),
        (["--exclude", "/shards/old"], ["shards/old", "shards/old/s0.bin"]),
        (["--exclude", "shards/*.bin"], ["shards/s1.bin"]),
        (["--exclude", "shards/**.bin"], ["shards/old/s0.bin", "shards/s1.bin"]),
        (["--exclude", "*.json", "--include", "/config.json"], ["tokenizer/vocab.json"]),
    ],
)
def test_tar_leaves_out_what_the_patterns_exclude(
    cli, tmp_path: Path, model: Path, flags: list[str], left_out: list[str]
) -> None:
    archive = tmp_path / "m.catar"
    result = cli("tar", *flags, archive, model)
    assert result.code == 0, result.err
    assert listing(cli, archive) == [p for p in ALL if p not in left_out]


def test_only_json_files_the_rsync_way(cli, tmp_path: Path, model: Path) -> None:
    archive = tmp_path / "m.catar"
    flags = ["--include", "*/", "--include", "*.json", "--exclude", "*"]
    assert cli("tar", *flags, archive, model).code == 0
    assert listing(cli, archive) == [
        ".cache",
        ".cache/hub",
        "config.json",
        "shards",
        "shards/old",
        "tokenizer",
        "tokenizer/vocab.json",
    ]


def test_patterns_from_files_and_into_an_index(cli, tmp_path: Path, model: Path) -> None:
    (tmp_path / "ignore").write_text("# build leftovers\n*.tmp\n\n.cache/\n")
    index = tmp_path / "m.caidx"
    store = tmp_path / "store"
    result = cli("tar", "-i", "-s", store, "--exclude-from", tmp_path / "ignore", index, model)
    assert result.code == 0, result.err
    kept = [p for p in ALL if not p.startswith(".cache") and not p.endswith(".tmp")]
    assert listing(cli, index, "-i", "-s", str(store)) == kept


def test_tar_input_is_filtered_too_and_a_kept_hard_link_keeps_its_data(cli, tmp_path: Path) -> None:
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w", format=tarfile.PAX_FORMAT) as t:
        root = tarfile.TarInfo(".")
        root.type, root.mode = tarfile.DIRTYPE, 0o755
        t.addfile(root)
        data = b"weights" * 100
        big = tarfile.TarInfo("w.tmp")
        big.size = len(data)
        t.addfile(big, io.BytesIO(data))
        link = tarfile.TarInfo("w.bin")
        link.type, link.linkname = tarfile.LNKTYPE, "w.tmp"
        t.addfile(link)
    (tmp_path / "in.tar").write_bytes(stream.getvalue())
    archive = tmp_path / "m.catar"
    result = cli("tar", "--input-format", "tar", "--exclude", "*.tmp", archive, tmp_path / "in.tar")
    assert result.code == 0, result.err
    assert listing(cli, archive) == ["w.bin"]
    out = tmp_path / "out"
    assert cli("untar", archive, out).code == 0
    assert (out / "w.bin").read_bytes() == b"weights" * 100


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (["--exclude", "[a-"], ["--include/--exclude: bad pattern '[a-'"]),
        (["--exclude", "a/../b"], ["'..' never match"]),
        (["--include", "*.json"], ["has no effect without an exclude pattern", "exclude '*'"]),
    ],
)
def test_a_bad_pattern_is_one_line_and_nothing_is_written(
    cli, tmp_path: Path, model: Path, flags: list[str], words: list[str]
) -> None:
    archive = tmp_path / "m.catar"
    refused(cli("tar", *flags, archive, model), *words)
    assert not archive.exists()


def test_untar_refuses_bad_patterns_and_a_tar_stream_target(cli, tmp_path: Path) -> None:
    refused(cli("untar", "--include", "*.json", "m.catar", tmp_path / "out"), "no effect")
    refused(
        cli("untar", "--output-format", "gnu-tar", "--exclude", "x", "m.catar", "-"),
        "need a directory as the target",
    )


def test_the_progress_total_follows_the_patterns(tmp_path: Path, model: Path) -> None:
    """The bar's total (the archive's estimated size) is within a few percent of what
    tar writes, with and without patterns."""
    for patterns in (None, Patterns.parse([], ["shards/"], "test")):
        source = TarInput(model, patterns=patterns)
        written = tar(source, io.BytesIO()).size
        assert abs(source.estimated_size() - written) <= 0.02 * written, patterns


def test_mtree_and_untar_of_an_index_without_i_suggest_i(cli, tmp_path: Path, model: Path) -> None:
    index = tmp_path / "m.caidx"
    assert cli("tar", "-i", "-s", tmp_path / "store", index, model).code == 0
    refused(cli("mtree", index), "is a caidx index, not a catar archive: add -i", "-s")
    refused(cli("untar", index, tmp_path / "out"), "add -i")
    assert not (tmp_path / "out").exists()
    # an index in an index store: a URL is never a catar file (no request is made)
    remote = "http://127.0.0.1:9/indexes/m.caidx"
    refused(cli("mtree", remote), "names an index in an index store", "add -i")
    refused(cli("untar", remote, tmp_path / "out"), "add -i")


def write_manifest(tmp_path: Path, model: Path, patterns: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        f"""version: 1
stores:
  s: {{url: store}}
tasks:
  - name: pub
    tar:
      source: {model}
      index: m.caidx
      store: s
{patterns}"""
    )
    return path


def test_the_tar_task_archives_with_its_patterns_and_notices_them_change(
    cli, tmp_path: Path, model: Path
) -> None:
    manifest = write_manifest(tmp_path, model, '      exclude: ["*.tmp", ".cache/"]\n')
    state = ["--state-dir", str(tmp_path / "state")]
    result = cli("apply", manifest, *state, cwd=tmp_path)
    assert result.code == 0, result.err + result.out
    store = str(tmp_path / "store")
    kept = [p for p in ALL if not p.startswith(".cache") and not p.endswith(".tmp")]
    assert listing(cli, tmp_path / "m.caidx", "-i", "-s", store) == kept
    assert "ok: [pub]" in cli("apply", manifest, *state, cwd=tmp_path).out
    write_manifest(tmp_path, model, '      exclude: ["*.tmp"]\n')
    assert "changed: [pub]" in cli("apply", manifest, *state, cwd=tmp_path).out
    kept = [p for p in ALL if not p.endswith(".tmp")]
    assert listing(cli, tmp_path / "m.caidx", "-i", "-s", store) == kept


def test_a_bad_pattern_in_a_manifest_is_reported_at_its_line(
    cli, tmp_path: Path, model: Path
) -> None:
    manifest = write_manifest(tmp_path, model, '      exclude: ["*.tmp", "[a-"]\n')
    result = cli("validate", manifest, cwd=tmp_path)
    assert result.code != 0
    assert "m.yaml:10:26: 'tar.exclude[1]' of task 'pub': bad pattern '[a-'" in result.err
    manifest = write_manifest(tmp_path, model, '      include: ["*.json"]\n')
    result = cli("validate", manifest, cwd=tmp_path)
    assert "m.yaml:10:16: 'tar.include' of task 'pub': include pattern" in result.err
