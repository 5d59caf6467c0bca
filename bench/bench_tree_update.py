"""Local writes of rolling a model directory from v1 to v2 (issue 19, item 1).

The model: 4 shards of 64 MiB (random), a 2 MiB tokenizer, two JSON files, a
README, a symlink and nested folders; v2 rewrites 6.4 MiB in the middle of one
shard and changes both JSON files. Both versions are published with ``tar -i``
into a local store; the target holds v1 (untarred once); then v1 -> v2 is run
and what the process wrote is read from its own ``/proc/self/io`` at its end
(``write_bytes``: bytes it dirtied in the page cache, i.e. sent towards the
disk; ``cancelled_write_bytes``: those of them dropped before writeback, by a
deletion or truncation). The goal: v1 -> v2 writes at most 2x the changed
files' sizes.

Each way is run on a fresh copy of the v1 target: the ``untar`` verb (with the
target as ``--seed``, so unchanged chunks are read from it), the same with
``--atomic``, and the ``untar`` task through ``apply`` (plan and apply in one
process). ``--baseline PYTHONPATH`` runs the same with another checkout (the
code before the change) for comparison.

    python bench/bench_tree_update.py [--workdir DIR] [--baseline /path/to/old/checkout]
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import benchlib as bl

MIB = 1 << 20
HEADING = "Rolling a model directory v1 -> v2: local writes"  # its section of results-tree.md
REPO = Path(__file__).resolve().parent.parent
_RUN = (
    "import sys, time\n"
    "from desync_decl.cli.main import main\n"
    "t = time.monotonic()\n"
    "rc = main(sys.argv[1:])\n"
    "wall = time.monotonic() - t\n"
    "io = dict(line.split(': ') for line in open('/proc/self/io').read().splitlines())\n"
    "got = {**{k: int(v) for k, v in io.items()}, 'wall': wall}\n"
    "sys.stderr.write('BENCH ' + repr(got) + '\\n')\n"
    "sys.exit(rc)\n"
)


def model(root: Path) -> None:
    (root / "shards").mkdir(parents=True)
    (root / "tokenizer" / "extra").mkdir(parents=True)
    for k in range(4):
        with open(root / "shards" / f"model-{k:05d}-of-00004.safetensors", "wb") as f:
            for _ in range(64):
                f.write(os.urandom(MIB))
    (root / "tokenizer" / "tokenizer.json").write_bytes(os.urandom(2 * MIB))
    (root / "tokenizer" / "extra" / "special_tokens_map.json").write_text('{"bos": "<s>"}\n')
    (root / "config.json").write_text('{"hidden_size": 4096, "layers": 32}\n' * 20)
    (root / "generation_config.json").write_text('{"temperature": 0.7}\n' * 10)
    (root / "README.md").write_text("# model\n" * 100)
    os.symlink("shards/model-00000-of-00004.safetensors", root / "model.safetensors")


def v2(root: Path) -> list[Path]:
    """The changes of v2; the files changed."""
    shard = root / "shards" / "model-00002-of-00004.safetensors"
    with open(shard, "r+b") as f:
        f.seek(20 * MIB)
        f.write(os.urandom(int(6.4 * MIB)))
    (root / "config.json").write_text('{"hidden_size": 4096, "layers": 33}\n' * 20)
    (root / "generation_config.json").write_text('{"temperature": 0.6}\n' * 10)
    return [shard, root / "config.json", root / "generation_config.json"]


def run(pythonpath: Path, args: list[str], cwd: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    p = subprocess.run(
        [sys.executable, "-c", _RUN, *args], cwd=cwd, env=env, capture_output=True, text=True
    )
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed: {p.stderr}")
    line = next(x for x in p.stderr.splitlines() if x.startswith("BENCH "))
    return ast.literal_eval(line[len("BENCH ") :])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--baseline", type=Path, help="another checkout to compare with")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results-tree.md")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="tree-update.", dir=args.workdir))
    try:
        rows = measure(work, args.baseline)
    finally:
        shutil.rmtree(work)
    report(rows, args)


def measure(work: Path, baseline: Path | None) -> list[tuple[str, str, dict[str, float], int]]:
    model(work / "v1")
    subprocess.run(["cp", "-a", work / "v1", work / "v2"], check=True)
    changed = sum(p.stat().st_size for p in v2(work / "v2"))
    store = work / "store"
    for v in ("v1", "v2"):
        run(REPO, ["tar", "-i", "-s", str(store), f"{v}.caidx", v], work)
    (work / "manifest.yaml").write_text(
        "version: 1\nstores: {s: {url: store}}\ntasks:\n"
        "- name: model\n  untar: {index: v2.caidx, path: target, stores: [s]}\n"
    )
    rows = []
    checkouts = [("this change", REPO)] + ([("baseline", baseline)] if baseline else [])
    for label, code in checkouts:
        for way, argv in (
            ("untar -i --seed target", ["untar", "-i", "-s", "store", "--seed", "target"]),
            (
                "untar -i --atomic --seed target",
                ["untar", "-i", "-s", "store", "--atomic", "--seed", "target"],
            ),
            ("apply (untar task)", ["apply", "--state-dir", "state", "manifest.yaml"]),
        ):
            if "--atomic" in argv and code != REPO:
                continue  # the baseline has no --atomic
            shutil.rmtree(work / "target", ignore_errors=True)
            shutil.rmtree(work / "state", ignore_errors=True)
            run(code, ["untar", "-i", "-s", "store", "v1.caidx", "target"], work)
            subprocess.run(["sync"], check=True)
            if argv[0] != "apply":
                argv = [*argv, "v2.caidx", "target"]
            io = run(code, argv, work)
            check = subprocess.run(["diff", "-r", "v2", "target"], cwd=work, capture_output=True)
            if check.returncode != 0:
                raise SystemExit(f"{label} {way}: target differs from v2: {check.stdout[:500]!r}")
            rows.append((label, way, io, changed))
    return rows


def report(rows: list[tuple[str, str, dict[str, float], int]], args: argparse.Namespace) -> None:
    """The table, as the v1 -> v2 section of ``--out`` (bench_tree.py's report keeps it)."""
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    changed = rows[0][3]
    command = "python bench/bench_tree_update.py" + (
        f" --baseline {args.baseline}" if args.baseline else ""
    )
    lines = [
        f"## {HEADING}",
        "",
        f"* Date: {time.strftime('%Y-%m-%dT%H:%M:%S%z')}",
        f"* desync-decl: {rev}" + (f"; baseline: {args.baseline}" if args.baseline else ""),
        f"* Command: `{command}`",
        "* Model: 4 x 64 MiB shards, 2 MiB tokenizer, 2 JSON files, README, symlink, nested"
        " folders (258 MiB); v2 rewrites 6.4 MiB of one shard and both JSON files.",
        f"* Changed files' size: {changed / MIB:.1f} MiB;"
        f" goal: writes <= 2x = {2 * changed / MIB:.1f} MiB.",
        "* write_bytes / cancelled_write_bytes: the v1 -> v2 process's own /proc/self/io at its"
        " end (the target held v1, untarred before by another process, then `sync`).",
        "",
        "| code | v1 -> v2 | write_bytes MiB | cancelled MiB | / changed size | wall s |",
        "|---|---|---|---|---|---|",
    ]
    for label, way, io, _ in rows:
        w, c = io["write_bytes"], io["cancelled_write_bytes"]
        cells = [label, f"`{way}`", f"{w / MIB:.1f}", f"{c / MIB:.1f}"]
        cells += [f"{w / changed:.2f}x", f"{io['wall']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    bl.put_section(args.out, HEADING, "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
