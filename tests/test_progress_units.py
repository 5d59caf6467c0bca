"""Progress people can read: sizes and rates in binary units, a percent and an ETA on
a terminal (tar, untar, every apply task), nothing when stderr is piped, and a
summary line at the end of tar and untar.

The terminal is a real pseudo-terminal: the CLI runs as a process whose stderr is
its slave side, so ``isatty`` and the redraws are what a person would see.
"""

from __future__ import annotations

import errno
import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from desync_decl.cli.console import CLEAR_TO_END, TerminalProgress
from desync_decl.units import human_bytes, human_duration, human_rate

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (205245021, "195.7 MiB"),
        (3 << 30, "3.0 GiB"),
    ],
)
def test_sizes_read_in_binary_units(n: int, text: str) -> None:
    assert human_bytes(n) == text


def test_rates_and_durations() -> None:
    assert human_rate(19328385) == "18.4 MiB/s"
    assert [human_duration(s) for s in (0.4, 7, 185, 7260)] == ["0s", "7s", "3m05s", "2h01m"]


def drawn(stage: str, total: int, done: int, unit: str = "bytes") -> str:
    """The last line a bar draws for ``done`` of ``total``."""
    stream = io.StringIO()
    bar = TerminalProgress(stream)
    bar.start(stage, total, unit) if unit != "bytes" else bar.start(stage, total)
    bar.advance(done)
    bar.finish()
    return stream.getvalue().split("\r")[-1].replace(CLEAR_TO_END, "")


def test_a_bar_with_a_total_shows_percent_sizes_rate_and_eta() -> None:
    line = drawn("tar", 200 << 20, 50 << 20)
    found = re.search(r"tar +\[(#*)( *)\]  25% +50\.0 MiB/200\.0 MiB +\S+ \S+/s ETA \S+", line)
    assert found, line
    hashes, cells = len(found[1]), len(found[1] + found[2])
    assert 10 <= cells <= 30 and hashes == int(cells / 4), line  # a quarter of the bar
    assert len(line) <= 80, line  # fits a terminal of 80 columns, ETA included
    assert "205245021" not in line and "done" not in line


def test_a_bar_without_a_total_shows_the_size_and_rate() -> None:
    line = drawn("tar", 0, 205245021)
    assert re.match(r"tar 195\.7 MiB \S+ \S+/s \d+s\n", line), line  # not "205245021 done"


def test_a_counted_stage_shows_its_unit() -> None:
    line = drawn("checking chunks", 4171, 840, unit="chunks")
    assert re.search(r" 20% +840/4171 chunks ", line), line
    assert "MiB" not in line


def run_cli(cwd: Path, *argv: object, terminal: bool) -> tuple[int, str]:
    """The real CLI; stderr on a pseudo-terminal (``terminal``) or a pipe. Returns the
    exit code and stderr as received (``\\r`` kept)."""
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "HOME": str(cwd)}
    command = [sys.executable, "-m", "desync_decl", *map(str, argv)]
    if not terminal:
        done = subprocess.run(
            command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=120
        )
        return done.returncode, done.stderr.decode()
    master, slave = pty.openpty()
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave
    ) as process:
        os.close(slave)
        received = b""
        while True:  # until the process ends and the slave side closes (EIO)
            try:
                block = os.read(master, 65536)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                break
            if not block:
                break
            received += block
        os.close(master)
        process.communicate(timeout=120)
    return process.returncode, received.decode().replace("\r\n", "\n")


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A small model directory: shards, a tokenizer, a config."""
    root = tmp_path / "model"
    (root / "tokenizer").mkdir(parents=True)
    for i in range(3):
        (root / f"s{i}.bin").write_bytes(os.urandom(1 << 20))
    (root / "tokenizer" / "vocab.json").write_text('{"a": 1}')
    (root / "config.json").write_text("{}")
    return root


def test_tar_and_untar_on_a_terminal_show_a_bar_in_units_and_a_summary(
    tmp_path: Path, model: Path
) -> None:
    code, err = run_cli(tmp_path, "tar", "-i", "-s", "store", "m.caidx", model, terminal=True)
    assert code == 0, err
    bar = re.search(
        r"\rtar +\[#+\] 100% +(\d+\.\d) MiB/(\d+\.\d) MiB +\S+ \S+/s ETA 0s *(\x1b\[K)?\n", err
    )
    assert bar, err
    assert re.search(
        r"\ntar: 3\.0 MiB archive of \S+model; \d+ chunks, \d+ new \(3\.0 MiB\) stored\n", err
    ), err

    code, err = run_cli(tmp_path, "untar", "-i", "-s", "store", "m.caidx", "out", terminal=True)
    assert code == 0, err
    untar = r"\runtar +\[#+\] 100% +3\.0 MiB/3\.0 MiB +\S+ \S+/s ETA 0s *(\x1b\[K)?\n"
    assert re.search(untar, err), err
    assert err.endswith(
        "untar: 5 files (3.0 MiB), 1 directory in out: 7 created; 3.0 MiB written\n"
    )
    # deleting extras reads the archive's entries first: that pass has its meter too
    code, err = run_cli(
        tmp_path, "untar", "--delete-extra", "-i", "-s", "store", "m.caidx", "out", terminal=True
    )
    assert code == 0, err
    assert re.search(r"\rlisting entries \[[# ]+\] +\d+% +[\d.]+ \S+/3\.0 MiB .*" + untar, err), err
    tar_out = ("--output-format", "gnu-tar", "m.caidx", "m.tar")
    code, err = run_cli(tmp_path, "untar", "-i", "-s", "store", *tar_out, terminal=True)
    assert code == 0 and re.fullmatch(f".*{untar}", err, re.DOTALL), err


def test_piped_there_is_no_bar_and_no_summary(tmp_path: Path, model: Path) -> None:
    """Quiet when piped, as casync and desync are: the summary is for a terminal."""
    code, err = run_cli(tmp_path, "tar", "-i", "-s", "store", "m.caidx", model, terminal=False)
    assert (code, err) == (0, "")
    code, err = run_cli(tmp_path, "untar", "-i", "-s", "store", "m.caidx", "out", terminal=False)
    assert (code, err) == (0, "")


def test_the_untar_summary_counts_what_an_update_did(tmp_path: Path, model: Path) -> None:
    assert run_cli(tmp_path, "tar", "-i", "-s", "store", "m.caidx", model, terminal=False)[0] == 0
    code, err = run_cli(tmp_path, "untar", "-i", "-s", "store", "m.caidx", "out", terminal=True)
    assert code == 0, err
    assert re.search(
        r"\nuntar: 5 files \(3\.0 MiB\), 1 directory in out: 7 created; 3\.0 MiB written\r?\n$",
        err,
    ), err
    with open(model / "s1.bin", "r+b") as f:  # v2: one shard changes
        f.write(b"v2")
    assert run_cli(tmp_path, "tar", "-i", "-s", "store", "m.caidx", model, terminal=False)[0] == 0
    code, err = run_cli(tmp_path, "untar", "-i", "-s", "store", "m.caidx", "out", terminal=True)
    assert code == 0
    # the target is read as a seed (trees): what it holds is not fetched
    summary = err.rstrip("\r\n").rsplit("\n", 1)[-1]
    assert summary.startswith(
        "untar: 5 files (3.0 MiB), 1 directory in out: 1 updated, 6 unchanged;"
        " 1.0 MiB written, 2.0 MiB kept; "
    ), err
    assert summary.endswith(" from seeds"), err


def test_apply_shows_each_task_s_stage_with_percent(tmp_path: Path, model: Path) -> None:
    (tmp_path / "m.yaml").write_text(
        f"""version: 1
stores:
  s: {{url: store}}
tasks:
  - name: pub
    tar: {{source: {model}, index: m.caidx, store: s}}
  - name: roll
    untar: {{index: m.caidx, path: out, stores: [s]}}
"""
    )
    code, err = run_cli(tmp_path, "apply", "m.yaml", "--state-dir", "state", terminal=True)
    assert code == 0, err
    assert re.search(r"\r\[pub\] tar +\[[# ]+\] +\d+% +[\d.]+ (KiB|MiB)/3\.0 MiB", err), err
    assert re.search(r"\r\[roll\] untar +\[[# ]+\] +\d+% +[\d.]+ (B|KiB|MiB)/3\.0 MiB", err), err
    code, err = run_cli(tmp_path, "apply", "m.yaml", "--state-dir", "state", terminal=False)
    assert code == 0 and "\r" not in err, err


def test_prune_counts_its_deletions_on_a_terminal_verb_and_task(tmp_path: Path) -> None:
    for name in ("keep", "drop1", "drop2"):
        (tmp_path / name).write_bytes(os.urandom(300_000))
        code, err = run_cli(tmp_path, "make", "-s", "store", f"{name}.caibx", name, terminal=False)
        assert code == 0, err
    code, err = run_cli(
        tmp_path, "prune", "-y", "--min-age", "0", "-s", "store", "keep.caibx", terminal=True
    )
    assert code == 0, err
    done = re.search(r"\rprune +\[#+\] 100% +(\d+)/(\d+) chunks", err)
    assert done and done.group(1) == done.group(2) != "0", err
    (tmp_path / "drop2").write_bytes(os.urandom(300_000))  # another store, another prune
    assert run_cli(tmp_path, "make", "-s", "store2", "d.caibx", "drop2", terminal=False)[0] == 0
    assert run_cli(tmp_path, "make", "-s", "store2", "k.caibx", "keep", terminal=False)[0] == 0
    (tmp_path / "m.yaml").write_text(
        """version: 1
stores:
  s: {url: store2}
tasks:
  - name: clean
    prune: {store: s, keep: [k.caibx], min_age: 0s}
"""
    )
    code, err = run_cli(tmp_path, "apply", "m.yaml", "--state-dir", "state", terminal=True)
    assert code == 0, err
    assert re.search(r"\r\[clean\] prune +\[[# ]+\] +\d+% +\d+/\d+ chunks", err), err
