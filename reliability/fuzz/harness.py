"""Coverage-guided fuzzing of one target with atheris (libFuzzer for Python).

    python -m reliability.fuzz.harness TARGET FINDINGS.jsonl [libFuzzer flags...]

TARGET is a name from ``targets.TARGETS``. The seeds (``seeds.SEEDS``) are
written to a fresh corpus folder; half of the mutations are libFuzzer's, half
the structure-aware ones of ``mutate``. An exception a target lets through is
recorded in FINDINGS (one JSON line per distinct type and place, with the
input in hex) and fuzzing goes on; libFuzzer itself stops on a timeout or
when the process passes ``-rss_limit_mb``, which the caller reports. Counts
of accepted and refused inputs go to FINDINGS.counts.json about once a
second (libFuzzer ends the process without running Python's exit handlers).
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["desync_decl", "reliability"]):
    from reliability.fuzz import mutate, seeds, targets


def main() -> None:
    name, findings = sys.argv[1], Path(sys.argv[2])
    target = targets.TARGETS[name]
    seen: set[tuple[str, str, int]] = set()
    counts = {"accepted": 0, "refused": 0, "findings": 0}
    counts_file = findings.with_suffix(".counts.json")
    last = [0.0]

    def one_input(data: bytes) -> None:
        try:
            counts["accepted" if target(data) else "refused"] += 1
        except Exception as e:  # a finding: anything the target does not allow
            counts["findings"] += 1
            where = traceback.extract_tb(e.__traceback__)[-1]
            key = (type(e).__name__, where.filename, where.lineno or 0)
            if key in seen:
                return
            seen.add(key)
            with findings.open("a") as f:
                row = {
                    "target": name,
                    "error": f"{type(e).__name__}: {e}"[:300],
                    "where": f"{where.filename}:{where.lineno}",
                    "input": data[:4096].hex(),
                }
                f.write(json.dumps(row) + "\n")
        finally:
            if time.monotonic() - last[0] > 1.0:
                last[0] = time.monotonic()
                counts["peak_rss_mib"] = _peak_rss_mib()
                counts_file.write_text(json.dumps(counts))

    def custom_mutator(data: bytes, max_size: int, seed: int) -> bytes:
        rng = random.Random(seed)
        if rng.random() < 0.5:
            return atheris.Mutate(data, max_size)
        return mutate.apply(data, mutate.random_ops(rng, rng.randrange(1, 4)))[:max_size]

    corpus = Path(tempfile.mkdtemp(prefix=f"fuzz-{name}-"))
    for i, seed in enumerate(seeds.SEEDS[name]()):
        (corpus / f"seed-{i}").write_bytes(seed)
    argv = [sys.argv[0], *sys.argv[3:], str(corpus)]
    atheris.Setup(argv, one_input, custom_mutator=custom_mutator)
    atheris.Fuzz()


def _peak_rss_mib() -> int:
    """This process's own peak resident set (VmHWM). libFuzzer's peak_rss_mb comes from
    getrusage, which also counts the parent's peak when it forked and exec'ed us (a
    run_all that had run servers reported 362 MiB for every target)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    return 0


if __name__ == "__main__":
    main()
