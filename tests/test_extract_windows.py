"""Extract in windows of an index (``extract(window=...)``, ``stores.index_file``): the
same file and the same stats as the index planned whole, with seeds, null runs and
in-place data across the windows' edges, a seed found invalid in a later window, a
repeat across windows fetched again (the one thing windows change), progress over
the whole index, and an index file changed after it was checked refused before the
target gets its name. Small chunks, so a few hundred KiB make dozens of windows."""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest

from desync_decl.assemble.execute import SeedInvalid
from desync_decl.assemble.seeds import Seed
from desync_decl.errors import DesyncError
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.index import Index
from desync_decl.ops.extract import InvalidSeeds, extract
from desync_decl.ops.make import make
from desync_decl.progress import BYTES
from desync_decl.signing import SignatureRefused, load_trust
from desync_decl.stores.index_file import IndexFile, open_index
from desync_decl.stores.index_store import read_local_index
from desync_decl.stores.local import LocalStore
from tests import ssh_keys
from tests.ssh_keys import allowed_signers

SIZES = ChunkSizes(256, 1024, 4096)
ssh = ssh_keys.ssh
WINDOW = 7  # chunks: the test blobs hold a few hundred


class Blobs:
    """Two versions of a blob (``new`` shares runs with ``old``, has holes' worth of
    zeros and new data), their indexes, and a store holding ``new``'s chunks."""

    def __init__(self, root: Path) -> None:
        rng = random.Random(18)
        self.old_data = rng.randbytes(160 * 1024)
        self.new_data = (
            self.old_data[:40_000]
            + bytes(64 * 1024)  # null chunks, several windows of them
            + rng.randbytes(30_000)
            + self.old_data[60_000:150_000]
            + rng.randbytes(20_000)
        )
        self.old_file, self.new_file = root / "old", root / "new"
        self.old_file.write_bytes(self.old_data)
        self.new_file.write_bytes(self.new_data)
        self.store = LocalStore(root / "store", create=True)
        self.new = make(self.new_file, sizes=SIZES, store=self.store).index
        self.old = make(self.old_file, sizes=SIZES).index
        self.index_file = root / "new.caibx"
        self.index_file.write_bytes(self.new.encode())
        self.seed = Seed(self.old_file, self.old, "old")
        assert len(self.new) > 8 * WINDOW


@pytest.fixture
def blobs(tmp_path) -> Blobs:
    return Blobs(tmp_path)


def run(blobs: Blobs, out: Path, *, window: int, index: object = None, **kw) -> dict:
    """``extract`` of the new version at ``out``; its stats (``attempts`` and the
    rest), the file checked."""
    source = blobs.new if index is None else index
    result = extract(
        source, out, blobs.store, seeds=kw.pop("seeds", [blobs.seed]), window=window, **kw
    )  # type: ignore[arg-type]
    assert out.read_bytes() == blobs.new_data
    return result.stats()


def test_windows_write_the_same_file_with_the_same_stats(blobs, tmp_path):
    whole = run(blobs, tmp_path / "whole", window=len(blobs.new))
    sources = whole["plan"]["sources"]
    assert sources["seed"]["chunks"] and sources["null"]["chunks"] and sources["store"]["chunks"]
    assert run(blobs, tmp_path / "windows", window=WINDOW) == whole
    assert run(blobs, tmp_path / "one", window=1) == whole


def test_an_index_file_read_back_in_windows_writes_the_same(blobs, tmp_path):
    whole = run(blobs, tmp_path / "whole", window=len(blobs.new))
    source = open_index(blobs.index_file, WINDOW)
    assert isinstance(source, IndexFile)
    assert (source.length, len(source), source.digest) == (
        blobs.new.length,
        len(blobs.new),
        blobs.new.digest,
    )
    assert run(blobs, tmp_path / "windows", window=WINDOW, index=source) == whole


def test_an_index_file_reads_back_the_windows_of_the_held_index(blobs):
    source = open_index(blobs.index_file, WINDOW)
    assert isinstance(source, IndexFile)
    read = list(source.windows(WINDOW))
    assert read == list(blobs.new.windows(WINDOW))
    assert [w.origin for w in read[:2]] == [0, read[0].length]
    assert sum(len(w) for w in read) == len(blobs.new)


def test_an_index_of_one_window_is_read_whole_as_before(blobs):
    held = open_index(blobs.index_file, len(blobs.new))
    assert isinstance(held, Index)
    assert held == read_local_index(blobs.index_file)
    assert list(held.windows(len(blobs.new))) == [held]


def test_in_place_across_windows(blobs, tmp_path):
    stats = []
    for name, window in (("whole", len(blobs.new)), ("windows", WINDOW)):
        out = tmp_path / name
        shutil.copyfile(blobs.new_file, out)
        with out.open("r+b") as f:  # two damaged ranges, the rest in place
            f.seek(10_000)
            f.write(b"x" * 5000)
            f.seek(120_000)
            f.write(b"y" * 9000)
        stats.append(run(blobs, out, window=window, in_place=True))
    assert stats[0] == stats[1]
    assert stats[0]["chunks-in-place"] > 0


def corrupt_seed_late(blobs: Blobs) -> None:
    """Overwrite part of a chunk of the old version that the new one takes from it, far
    past the first window."""
    taken = blobs.old.unique_ids() & blobs.new.unique_ids()
    positions = [i for i, c in enumerate(blobs.new) if c.id in taken]
    victim_id = blobs.new.chunk(positions[-3]).id
    victim = next(c for c in blobs.old if c.id == victim_id)
    assert positions[-3] >= 3 * WINDOW
    with blobs.old_file.open("r+b") as f:
        f.seek(victim.start + 10)
        f.write(b"\0\1" * 50)


@pytest.mark.parametrize("policy", [InvalidSeeds.SKIP, InvalidSeeds.REGENERATE])
def test_a_seed_found_invalid_in_a_later_window(blobs, tmp_path, policy):
    corrupt_seed_late(blobs)
    whole = run(blobs, tmp_path / "whole", window=len(blobs.new), invalid_seeds=policy)
    windows = run(blobs, tmp_path / "windows", window=WINDOW, invalid_seeds=policy)
    assert windows == whole
    assert windows["attempts"] == 2 and len(windows["seed-problems"]) == 1


def test_a_seed_found_invalid_in_a_later_window_fails_and_leaves_nothing(blobs, tmp_path):
    corrupt_seed_late(blobs)
    out = tmp_path / "out"
    out.write_bytes(b"previous")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(SeedInvalid):
        extract(blobs.new, out, blobs.store, seeds=[blobs.seed], window=WINDOW)
    assert sorted(tmp_path.iterdir()) == before
    assert out.read_bytes() == b"previous"


def test_an_index_file_changed_after_its_check_is_refused_before_the_rename(blobs, tmp_path):
    source = open_index(blobs.index_file, WINDOW)
    data = bytearray(blobs.index_file.read_bytes())
    last_id = len(data) - 40 - 32  # the last chunk's id: read with the last window
    data[last_id : last_id + 32] = blobs.new.id(0)
    blobs.index_file.write_bytes(bytes(data))
    out = tmp_path / "out"
    before = sorted(tmp_path.iterdir())
    with pytest.raises(DesyncError, match="changed while it was used"):
        extract(source, out, blobs.store, window=WINDOW)  # type: ignore[arg-type]
    assert sorted(tmp_path.iterdir()) == before  # no target, no temp file


def test_a_chunk_repeated_in_another_window_is_fetched_again(tmp_path):
    rng = random.Random(5)
    block = rng.randbytes(20_000)
    data = block + rng.randbytes(80_000) + block
    blob = tmp_path / "blob"
    blob.write_bytes(data)
    store = LocalStore(tmp_path / "store", create=True)
    index = make(blob, sizes=SIZES, store=store).index
    whole = extract(index, tmp_path / "whole", store, window=len(index)).stats()
    windows = extract(index, tmp_path / "windows", store, window=WINDOW).stats()
    assert (tmp_path / "windows").read_bytes() == data
    repeated = whole["plan"]["sources"]["self"]["chunks"]
    assert repeated > 0
    assert windows["chunks-from-store"] == whole["chunks-from-store"] + repeated
    assert windows["chunks-total"] == whole["chunks-total"]


class Recorder:
    """A progress that keeps what it was told, per stage."""

    def __init__(self) -> None:
        self.stages: list[tuple[str, int]] = []
        self.done: dict[str, int] = {}

    def start(self, stage: str, total: int, unit: str = BYTES) -> None:
        self.stages.append((stage, total))
        self.current = stage
        self.done[stage] = 0

    def advance(self, n: int) -> None:
        self.done[self.current] += n

    def finish(self) -> None:
        pass


def test_progress_covers_the_whole_index(blobs, tmp_path):
    progress = Recorder()
    run(blobs, tmp_path / "out", window=WINDOW, progress=progress, concurrency=1)
    assembling = {total for stage, total in progress.stages if stage == "assemble"}
    assert assembling == {blobs.new.length}
    assert progress.done["assemble"] == blobs.new.length


@pytest.fixture
def trusted(blobs, tmp_path, ssh):
    """``blobs.index_file`` signed by ssh-keygen, and a trust that accepts its key."""
    key = ssh.key("maker")
    ssh.sign(key.path, blobs.index_file)
    return load_trust(allowed_signers(tmp_path / "allowed", f"maker@example {key.public}"))


def test_a_signed_index_file_is_verified_as_it_is_checked(blobs, tmp_path, trusted):
    whole = run(blobs, tmp_path / "whole", window=len(blobs.new))
    source = open_index(blobs.index_file, WINDOW, trust=trusted)
    assert isinstance(source, IndexFile)
    assert run(blobs, tmp_path / "windows", window=WINDOW, index=source) == whole
    held = open_index(blobs.index_file, len(blobs.new), trust=trusted)
    assert held == blobs.new


@pytest.mark.parametrize("window", [WINDOW, 10_000], ids=["windows", "held"])
def test_a_signed_index_file_changed_after_signing_is_refused(blobs, trusted, window):
    data = bytearray(blobs.index_file.read_bytes())
    last_id = len(data) - 40 - 32  # still an index: another chunk's id
    data[last_id : last_id + 32] = blobs.new.id(0)
    blobs.index_file.write_bytes(bytes(data))
    with pytest.raises(SignatureRefused, match="signature does not verify"):
        open_index(blobs.index_file, window, trust=trusted)


def test_an_unsigned_index_file_is_refused_with_trust(blobs, tmp_path, ssh):
    key = ssh.key("maker")
    trust = load_trust(allowed_signers(tmp_path / "allowed", f"maker@example {key.public}"))
    with pytest.raises(SignatureRefused, match="no signature"):
        open_index(blobs.index_file, WINDOW, trust=trust)
