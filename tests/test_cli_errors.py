"""Bad input ends in one clear line on stderr, exit status 1, no traceback, nothing half-written.

Each case runs the CLI in-process (the ``cli`` fixture); a few also run
``python -m desync_decl`` as a real process, so a traceback could not hide
anywhere between our ``main`` and the terminal.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from desync_decl.formats import index as index_format
from desync_decl.formats.digest import ChunkID
from tests import extract_helpers
from tests.conftest import Result
from tests.extract_helpers import PREFIX

SMALL_CHUNKS = "1:4:16"  # KiB: a few hundred KiB make dozens of chunks
BLOB_SIZE = 300 * 1024


def error_line(result: Result) -> str:
    """The one error line of a failed command, after checking that it is the only one,
    that it ends the output and that it says something."""
    line = extract_helpers.error_line(result)
    assert result.err.endswith("\n")
    assert len(line) > len(PREFIX) + 10, "the message says nothing"
    return line


def run_real(*argv: object, cwd: Path) -> Result:
    """``python -m desync_decl`` in a real process with real pipes and no stdin."""
    proc = subprocess.run(
        [sys.executable, "-m", "desync_decl", *map(str, argv)],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=60,
    )
    return Result(proc.returncode, proc.stdout.decode(), proc.stderr.decode(), b"")


def files_under(root: Path) -> dict[Path, bytes]:
    return {Path(d, f): Path(d, f).read_bytes() for d, _, names in os.walk(root) for f in names}


def chunk_file(store: Path, id: ChunkID) -> Path:
    return store / id.hex()[:4] / f"{id.hex()}.cacnk"


def offset_in(line: str) -> int:
    m = re.search(r"at byte (\d+)", line)
    assert m, f"no 'at byte N' in: {line}"
    return int(m.group(1))


@dataclass
class Made:
    """A blob made into an index and a store by the CLI itself."""

    dir: Path
    blob: Path
    data: bytes
    index: Path
    store: Path

    def ids(self) -> list[ChunkID]:
        return [c.id for c in index_format.decode(self.index.read_bytes())]

    def middle_id(self) -> ChunkID:
        ids = self.ids()
        return ids[len(ids) // 2]


def make_blob(cli, dir: Path, store: Path, name: str, seed: int) -> Made:
    data = random.Random(seed).randbytes(BLOB_SIZE)
    blob = dir / name
    blob.write_bytes(data)
    index = dir / f"{name}.caibx"
    result = cli("make", "-s", store, "-m", SMALL_CHUNKS, index, blob)
    assert result.code == 0, result.err
    return Made(dir, blob, data, index, store)


@pytest.fixture
def made(cli, tmp_path) -> Made:
    made = make_blob(cli, tmp_path, tmp_path / "store", "blob", seed=1)
    assert len(made.ids()) > 20
    assert len(set(made.ids())) == len(made.ids())
    return made


@dataclass
class Target:
    path: Path
    before: bytes | None  # None: it did not exist before the command


@pytest.fixture(params=["no-target", "existing-target"])
def target(request, tmp_path) -> Target:
    out = tmp_path / "out"
    out.mkdir()
    path = out / "restored.img"
    before = None
    if request.param == "existing-target":
        before = b"the previous contents, which must survive\n" * 500
        path.write_bytes(before)
    return Target(path, before)


def assert_target_untouched(target: Target) -> None:
    if target.before is None:
        assert not target.path.exists()
    else:
        assert target.path.read_bytes() == target.before
    assert list(target.path.parent.glob(f".{target.path.name}.*.tmp")) == []
    expected = [] if target.before is None else [target.path.name]
    assert os.listdir(target.path.parent) == expected


def assert_no_index_written(index: Path) -> None:
    assert not index.exists()
    assert list(index.parent.glob(f".{index.name}.*.tmp")) == []


# --- index corruptions: each returns the bad bytes and where the problem may be reported ---


def _magic_flipped(data: bytes) -> tuple[bytes, int, int]:
    bad = bytearray(data)
    bad[8] ^= 0xFF  # first byte of CA_FORMAT_INDEX in the header
    return bytes(bad), 0, 15


def _offsets_not_increasing(data: bytes) -> tuple[bytes, int, int]:
    bad = bytearray(data)
    first_item, second_item = 64, 104
    bad[second_item : second_item + 8] = bad[first_item : first_item + 8]
    return bytes(bad), first_item, second_item + 39


def _one_byte_appended(data: bytes) -> tuple[bytes, int, int]:
    return data + b"\x00", len(data) - 40, len(data) + 1


def _an_item_appended(data: bytes) -> tuple[bytes, int, int]:
    return data + random.Random(7).randbytes(40), len(data) - 40, len(data) + 40


def _truncated(data: bytes, n: int) -> tuple[bytes, int, int]:
    """The first ``n`` bytes: the problem shows at the end of what is left."""
    return data[:n], max(0, n - 80), n


def _keep(n: int):
    return lambda data: _truncated(data, n)


def _drop(n: int):
    return lambda data: _truncated(data, len(data) - n)


def _cut_in_half(data: bytes) -> tuple[bytes, int, int]:
    return _truncated(data, len(data) // 2)


CORRUPTIONS = {
    "magic-flipped": _magic_flipped,
    "offsets-not-increasing": _offsets_not_increasing,
    "one-byte-appended": _one_byte_appended,
    "an-item-appended": _an_item_appended,
    "truncated-in-header": _keep(50),
    "truncated-by-one-byte": _drop(1),
    "truncated-tail": _drop(40),
    "truncated-in-half": _cut_in_half,
    "empty": _keep(0),
}


def corrupt_index(made: Made, kind: str) -> tuple[Path, int, int]:
    bad, lo, hi = CORRUPTIONS[kind](made.index.read_bytes())
    path = made.dir / f"bad-{kind}.caibx"
    path.write_bytes(bad)
    return path, lo, hi


# --- make -------------------------------------------------------------------------------


def test_make_of_a_missing_input_file_names_it_and_writes_no_index(cli, tmp_path):
    index, missing = tmp_path / "x.caibx", tmp_path / "no-such-input.img"

    line = error_line(cli("make", "-s", tmp_path / "store", index, missing))

    assert str(missing) in line
    assert_no_index_written(index)


@pytest.mark.parametrize("value", ["16:8:256", "1:2", "abc", "0:0:0", "16B:32B:40B"])
def test_make_with_an_invalid_chunk_size_names_the_value_and_writes_nothing(cli, made, value):
    index = made.dir / "x.caibx"

    line = error_line(cli("make", "-m", value, index, made.blob))

    assert value in line
    assert "chunk size" in line
    assert_no_index_written(index)


def test_make_with_a_max_chunk_size_below_the_window_says_why(cli, made):
    line = error_line(cli("make", "-m", "16B:32B:40B", made.dir / "x.caibx", made.blob))

    assert "48" in line


def test_make_into_a_store_path_that_is_a_regular_file_writes_no_index(cli, made):
    not_a_store = made.dir / "plain-file"
    not_a_store.write_bytes(b"not a directory")
    index = made.dir / "x.caibx"

    line = error_line(cli("make", "-s", not_a_store, index, made.blob))

    assert str(not_a_store) in line
    assert "not a directory" in line
    assert not_a_store.read_bytes() == b"not a directory"
    assert_no_index_written(index)


def test_writing_to_a_failover_group_is_refused_as_what_it_is(cli, made, target):
    """A group is not read-only: which member a chunk would go to is what is unclear.
    Nothing is made, not even a member's directory."""
    group = f"{made.dir / 'g1'}|{made.dir / 'g2'}"
    index = made.dir / "x.caibx"

    line = error_line(cli("make", "-s", group, index, made.blob))
    assert line == f"{PREFIX}{group}: a failover group cannot be written to (use one store)"
    assert_no_index_written(index)

    line = error_line(cli("extract", "-s", made.store, "-c", group, made.index, target.path))
    assert line == f"{PREFIX}{group}: a failover group cannot be written to (use one store)"
    assert_target_untouched(target)
    assert not (made.dir / "g1").exists() and not (made.dir / "g2").exists()


# --- missing and corrupted indexes --------------------------------------------------------


@pytest.mark.parametrize("verb", ["info", "list-chunks"])
def test_reading_a_missing_index_file_names_it(cli, tmp_path, verb):
    missing = tmp_path / "no-such.caibx"

    line = error_line(cli(verb, missing))

    assert str(missing) in line
    assert re.search(r"no such|not found|does not exist", line)


def test_extract_of_a_missing_index_file_names_it_and_leaves_the_target(cli, made, target):
    missing = made.dir / "no-such.caibx"

    line = error_line(cli("extract", "-s", made.store, missing, target.path))

    assert str(missing) in line
    assert_target_untouched(target)


@pytest.mark.parametrize("kind", CORRUPTIONS.keys())
@pytest.mark.parametrize("verb", ["info", "list-chunks"])
def test_corrupted_index_names_the_file_and_the_byte_offset(cli, made, verb, kind):
    bad, lo, hi = corrupt_index(made, kind)

    line = error_line(cli(verb, bad))

    assert str(bad) in line
    assert lo <= offset_in(line) <= hi, line


@pytest.mark.parametrize("kind", CORRUPTIONS.keys())
def test_extract_of_a_corrupted_index_names_the_offset_and_leaves_the_target(
    cli, made, target, kind
):
    bad, lo, hi = corrupt_index(made, kind)

    line = error_line(cli("extract", "-s", made.store, bad, target.path))

    assert str(bad) in line
    assert lo <= offset_in(line) <= hi, line
    assert_target_untouched(target)


# --- extract: missing and corrupted chunks, bad stores ------------------------------------


def test_extract_with_a_missing_chunk_names_the_chunk_and_the_store(cli, made, target):
    id = made.middle_id()
    chunk_file(made.store, id).unlink()

    line = error_line(cli("extract", "-s", made.store, made.index, target.path))

    assert id.hex() in line
    assert "missing" in line
    assert str(made.store) in line
    assert_target_untouched(target)


def test_extract_with_a_chunk_missing_from_two_stores_names_both(cli, made, target):
    id = made.middle_id()
    chunk_file(made.store, id).unlink()
    second = made.dir / "second-store"
    second.mkdir()

    line = error_line(cli("extract", "-s", made.store, "-s", second, made.index, target.path))

    assert id.hex() in line
    assert str(made.store) in line
    assert str(second) in line
    assert_target_untouched(target)


def test_extract_with_a_corrupted_chunk_says_invalid_and_names_the_chunk(cli, made, target):
    id = made.middle_id()
    chunk_file(made.store, id).write_bytes(zstandard.ZstdCompressor().compress(b"other" * 999))

    line = error_line(cli("extract", "-s", made.store, made.index, target.path))

    assert id.hex() in line
    assert "invalid" in line
    assert str(made.store) in line
    assert_target_untouched(target)


def test_extract_from_a_store_path_that_is_a_regular_file_fails_cleanly(cli, made, target):
    not_a_store = made.dir / "plain-file"
    not_a_store.write_bytes(b"not a directory")

    line = error_line(cli("extract", "-s", not_a_store, made.index, target.path))

    assert str(not_a_store) in line
    assert_target_untouched(target)


def test_extract_from_a_missing_store_fails_cleanly(cli, made, target):
    nowhere = made.dir / "no-such-store"

    line = error_line(cli("extract", "-s", nowhere, made.index, target.path))

    assert str(nowhere) in line
    assert not nowhere.exists()
    assert_target_untouched(target)


def test_extract_that_succeeds_after_a_failure_writes_the_whole_blob(cli, made, target):
    """The failure above left nothing in the way of a later, good run."""
    id = made.middle_id()
    path = chunk_file(made.store, id)
    saved = path.read_bytes()
    path.unlink()
    error_line(cli("extract", "-s", made.store, made.index, target.path))
    path.write_bytes(saved)

    result = cli("extract", "-s", made.store, made.index, target.path)

    assert result.code == 0, result.err
    assert target.path.read_bytes() == made.data
    assert os.listdir(target.path.parent) == [target.path.name]


# --- prune, verify, verify-index ----------------------------------------------------------


def test_prune_without_yes_on_an_empty_stdin_fails_and_deletes_nothing(cli, made):
    make_blob(cli, made.dir, made.store, "other", seed=2)  # chunks prune would delete
    before = files_under(made.store)

    result = cli("prune", "-s", made.store, made.index, stdin=b"")

    line = error_line(result)
    assert "-y" in line or "stdin" in line
    assert files_under(made.store) == before


def test_verify_exits_1_and_names_a_corrupted_chunk_on_stderr(cli, made):
    id = made.middle_id()
    chunk_file(made.store, id).write_bytes(zstandard.ZstdCompressor().compress(b"other" * 999))

    result = cli("verify", "-s", made.store)

    assert result.code == 1
    assert "Traceback" not in result.err
    assert id.hex() in result.err
    lines = result.err.splitlines()
    assert lines[-1].startswith(PREFIX)
    assert [line for line in lines if line.startswith(PREFIX)] == [lines[-1]]
    assert chunk_file(made.store, id).exists()  # without -r nothing is deleted


def test_verify_with_repair_exits_1_and_removes_only_the_corrupted_chunk(cli, made):
    bad = made.middle_id()
    chunk_file(made.store, bad).write_bytes(b"garbage")

    result = cli("verify", "-r", "-s", made.store)

    assert result.code == 1
    assert bad.hex() in result.err
    assert "Traceback" not in result.err
    assert not chunk_file(made.store, bad).exists()
    assert all(chunk_file(made.store, id).exists() for id in made.ids() if id != bad)


def test_verify_of_a_healthy_store_exits_0(cli, made):
    result = cli("verify", "-s", made.store)

    assert (result.code, result.err) == (0, "")


def test_verify_index_of_a_different_file_names_the_byte_range(cli, made):
    changed_at = BLOB_SIZE // 2 + 123
    data = bytearray(made.data)
    data[changed_at] ^= 0x01
    copy = made.dir / "changed.img"
    copy.write_bytes(bytes(data))
    chunk = next(
        c for c in index_format.decode(made.index.read_bytes()) if c.start <= changed_at < c.end
    )

    line = error_line(cli("verify-index", made.index, copy))

    assert str(copy) in line
    assert f"{chunk.start}..{chunk.end}" in line


def test_verify_index_of_the_same_file_exits_0(cli, made):
    result = cli("verify-index", made.index, made.blob)

    assert (result.code, result.err) == (0, "")


# --- real processes: nothing but the one line reaches a real stderr -----------------------


def test_real_process_make_of_a_missing_input_prints_one_line(tmp_path):
    index = tmp_path / "x.caibx"

    result = run_real("make", index, "no-such-input.img", cwd=tmp_path)

    line = error_line(result)
    assert "no-such-input.img" in line
    assert result.out == ""
    assert_no_index_written(index)


def test_real_process_extract_with_a_missing_chunk_prints_one_line(made, target):
    id = made.middle_id()
    chunk_file(made.store, id).unlink()

    result = run_real("extract", "-s", made.store, made.index, target.path, cwd=made.dir)

    line = error_line(result)
    assert id.hex() in line
    assert result.out == ""
    assert_target_untouched(target)


def test_real_process_info_of_a_corrupted_index_prints_one_line(made):
    bad, lo, hi = corrupt_index(made, "offsets-not-increasing")

    result = run_real("info", bad, cwd=made.dir)

    line = error_line(result)
    assert lo <= offset_in(line) <= hi
    assert result.out == ""


def test_real_process_prune_without_yes_and_no_stdin_fails_and_deletes_nothing(cli, made):
    make_blob(cli, made.dir, made.store, "other", seed=2)
    before = files_under(made.store)

    result = run_real("prune", "-s", made.store, made.index, cwd=made.dir)

    error_line(result)
    assert files_under(made.store) == before


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB filesystem (tmpfs, needs root: CI runs as root)."""
    if os.geteuid() != 0:
        pytest.skip(reason="mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_extract_onto_a_full_disk_fails_before_writing_and_leaves_nothing(
    cli, tmp_path, small_tmpfs
):
    data = random.Random(21).randbytes(3_000_000)
    (tmp_path / "big").write_bytes(data)
    assert cli("make", "-s", tmp_path / "store", tmp_path / "big.caibx", tmp_path / "big").code == 0
    target = small_tmpfs / "big.out"

    line = error_line(cli("extract", "-s", tmp_path / "store", tmp_path / "big.caibx", target))

    assert "No space left on device" in line
    assert str(target) in line
    assert list(small_tmpfs.iterdir()) == []
