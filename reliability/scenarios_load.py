"""Load and concurrency: chunk-server under wrk, and applies racing for one target.

**chunk-server under wrk.** A store of real chunks (``make`` of random data:
incompressible, about 64 KiB a chunk) is served by ``desync-decl chunk-server``
on 127.0.0.1; wrk (Debian package ``wrk``) keeps 64 connections busy for the
budget's time with GETs of random existing chunk URLs (a Lua script reads
the list). Reported: requests/s, latency percentiles, errors (connect, read,
write, timeout, non-2xx: must all be 0) and the server's VmRSS, sampled every
second from /proc. Run it on a quiet machine: ``run`` waits while a test suite
or a benchmark runs (``pgrep -f 'bench_|pytest'``).

**Concurrent applies.** Six ``apply`` processes start together: three with a
manifest installing version A and three installing version B at the same
path, sharing a state folder. Each must exit 0, the target must end as A or B
whole, no temp file may be left, and the lock must have made them wait.
Then the limit of that lock: a run with another ``--state-dir`` does not wait.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from reliability.verdicts import report_row

ROOT = Path(__file__).resolve().parents[1]
SECONDS = {"quick": 10, "full": 60}
CONNECTIONS = 64
STORE_BYTES = {"quick": 32 << 20, "full": 128 << 20}
BUSY = "bench_|pytest"

LUA = r"""
local paths = {}
for line in io.lines(os.getenv("CHUNK_LIST")) do paths[#paths + 1] = line end
math.randomseed(os.time())
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'RESULT {"requests": %d, "duration_us": %d, "bytes": %d, "connect": %d, "read": %d, ' ..
    '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, ' ..
    '"max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


def run(budget: str) -> list[dict]:
    return [_wrk_row(budget), *_apply_rows()]


def _row(area: str, fault: str, target: str, runs: int, ok: int, wrong: int, notes: str) -> dict:
    return report_row(area, fault, target, notes, runs=runs, ok=ok, wrong_output=wrong)


# --- chunk-server under wrk ---------------------------------------------------------------


def wait_until_quiet(limit: float = 900) -> str:
    """Wait (up to ``limit`` s) while a test suite or benchmark runs; what was waited for."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        busy = subprocess.run(["pgrep", "-f", BUSY], capture_output=True, text=True).stdout.split()
        busy = [pid for pid in busy if int(pid) not in (os.getpid(), os.getppid())]
        if not busy:
            waited = time.monotonic() - started
            return f"waited {waited:.0f} s for a quiet machine" if waited > 1 else ""
        time.sleep(5)
    return f"machine still busy after {limit:.0f} s (pids matching {BUSY!r}): figures disturbed"


def _wrk_row(budget: str) -> dict:
    target = f"chunk-server, {CONNECTIONS} connections, {SECONDS[budget]} s (wrk)"
    wrk = shutil.which("wrk")
    if wrk is None:
        return _row(
            "load", "GET random chunks", target, 0, 0, 0, "wrk not installed (apt-get install wrk)"
        )
    with tempfile.TemporaryDirectory(prefix="load-") as folder:
        work = Path(folder)
        paths = _store(work, STORE_BYTES[budget])
        quiet = wait_until_quiet()
        server, url = _serve(work / "store")
        try:
            result, rss = _measure(wrk, work, url, server.pid, SECONDS[budget])
        finally:
            server.terminate()
            server.wait(10)
    errors = sum(result[k] for k in ("connect", "read", "write", "status", "timeout"))
    seconds = result["duration_us"] / 1e6
    figures = {
        "requests_per_s": result["requests"] / seconds,
        "mb_per_s": result["bytes"] / seconds / 1e6,
        "p50_ms": result["p50_us"] / 1000,
        "p90_ms": result["p90_us"] / 1000,
        "p99_ms": result["p99_us"] / 1000,
        "max_ms": result["max_us"] / 1000,
        "errors": errors,
        "error_kinds": {k: result[k] for k in ("connect", "read", "write", "status", "timeout")},
        "requests": result["requests"],
        "seconds": seconds,
        "connections": CONNECTIONS,
        "chunks": len(paths),
        "rss_mib": rss,
        "rss_growth_mib": _growth(rss),
        "cpus": os.cpu_count(),
        "quiet": quiet,
    }
    notes = (
        f"{figures['requests_per_s']:,.0f} req/s, p99 {figures['p99_ms']:.1f} ms, "
        f"RSS {min(rss):.0f}-{max(rss):.0f} MiB (growth after warm-up "
        f"{figures['rss_growth_mib']:+.1f} MiB)"
    )
    row = _row(
        "load",
        "GET random chunks",
        target,
        result["requests"],
        result["requests"] - errors,
        errors,
        notes + (f"; {quiet}" if quiet else ""),
    )
    row["load"] = figures
    return row


def _store(work: Path, size: int) -> list[str]:
    """A store of real chunks and the list of their URL paths."""
    blob = work / "blob"
    blob.write_bytes(random.Random(7).randbytes(size))
    run = subprocess.run(
        [sys.executable, "-m", "desync_decl", "make", "-s", work / "store",
         work / "blob.caibx", blob],
        capture_output=True, text=True, cwd=ROOT,
    )  # fmt: skip
    if run.returncode != 0:
        raise RuntimeError(f"make failed: {run.stderr}")
    blob.unlink()
    paths = sorted(f"/{p.parent.name}/{p.name}" for p in (work / "store").rglob("*.cacnk"))
    (work / "chunks.txt").write_text("\n".join(paths) + "\n")
    (work / "random.lua").write_text(LUA)
    return paths


def _serve(store: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "desync_decl", "chunk-server", "-s", str(store),
         "-l", "127.0.0.1:0"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        cwd=ROOT,
    )  # fmt: skip
    line = server.stderr.readline()  # type: ignore[union-attr]
    found = re.search(r"listening on (\S+)", line)
    if found is None:
        server.kill()
        raise RuntimeError(f"chunk-server did not start: {line}")
    threading.Thread(target=server.stderr.read, daemon=True).start()  # type: ignore[union-attr]
    return server, found.group(1)


def _measure(wrk: str, work: Path, url: str, pid: int, seconds: int) -> tuple[dict, list[float]]:
    rss: list[float] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(1.0):
            rss.append(_vmrss_mib(pid))

    rss.append(_vmrss_mib(pid))
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run = subprocess.run(
            [wrk, "-t", "2", "-c", str(CONNECTIONS), "-d", f"{seconds}s", "--timeout", "5s",
             "-s", str(work / "random.lua"), url],
            capture_output=True, text=True, timeout=seconds + 60,
            env={**os.environ, "CHUNK_LIST": str(work / "chunks.txt")},
        )  # fmt: skip
    finally:
        stop.set()
        sampler.join()
    found = re.search(r"^RESULT (\{.*\})$", run.stdout, re.M)
    if found is None:
        raise RuntimeError(f"wrk gave no result: {run.stdout[-500:]} {run.stderr[-500:]}")
    return json.loads(found.group(1)), rss


def _vmrss_mib(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"^VmRSS:\s+(\d+) kB", text, re.M).group(1)) / 1024  # type: ignore[union-attr]


def _growth(rss: list[float]) -> float:
    """RSS at the end less RSS after the first 10 % of the run (pools and caches warmed)."""
    if len(rss) < 3:
        return 0.0
    return rss[-1] - rss[max(1, len(rss) // 10)]


# --- concurrent applies -------------------------------------------------------------------


def _apply_rows() -> list[dict]:
    from desync_decl.reconcile.lock import locked

    with tempfile.TemporaryDirectory(prefix="applies-") as folder:
        work = Path(folder)
        versions = {
            name: random.Random(seed).randbytes(24 << 20) for name, seed in (("a", 1), ("b", 2))
        }
        for name, data in versions.items():
            (work / f"{name}.img").write_bytes(data)
            _make(work, name)
            (work / f"{name}.yaml").write_text(
                "version: 1\nstores: {s: {url: store}}\ntasks:\n- name: install\n"
                f"  extract: {{index: {name}.caibx, path: out/app.img, stores: [s]}}\n"
            )
        state = work / "state"
        runs = [_apply(work / f"{n}.yaml", state) for n in ("a", "b", "a", "b", "a", "b")]
        results = [r.communicate(timeout=300) for r in runs]
        codes = [r.returncode for r in runs]
        final = (work / "out" / "app.img").read_bytes()
        whole = final in versions.values()
        leftovers = sorted(p.name for p in (work / "out").iterdir() if p.name != "app.img")
        waited = sum(err.count("waiting for lock") for _, err in results)
        ok = sum(code == 0 for code in codes) if whole and not leftovers else 0
        wrong = len(runs) - ok
        version = "a" if final == versions["a"] else "b" if whole else "NEITHER"
        notes = (
            f"exit codes {codes}; target is version {version} whole; {waited} of {len(runs)} "
            f"runs waited for the lock; temp files left: {leftovers or 'none'}"
        )
        same = _row(
            "concurrency",
            "6 applies at once, 2 versions, one target",
            "apply (reconcile/lock.py), shared state dir",
            len(runs),
            ok,
            wrong,
            notes,
        )

        # The lock lives in the state folder: another folder is another lock.
        with locked(state, {f"file:{work / 'out' / 'app.img'}": True}, timeout=1):
            other = _apply(work / "a.yaml", work / "other-state")
            _, err = other.communicate(timeout=300)
        waited_other = "waiting for lock" in err
        notes = (
            "while this scenario held the lock in the shared state dir, an apply with "
            f"--state-dir elsewhere {'waited' if waited_other else 'did NOT wait'} "
            f"(exit {other.returncode}): runs of different users or state dirs are not "
            "serialized (the target is still replaced atomically: temp file and rename)"
        )
        limit = _row(
            "concurrency",
            "apply with another --state-dir during a held lock",
            "apply (reconcile/lock.py), separate state dirs",
            1,
            1 if other.returncode == 0 else 0,
            0 if other.returncode == 0 else 1,
            notes,
        )
    return [same, limit]


def _make(work: Path, name: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "desync_decl", "make", "-s", work / "store",
         work / f"{name}.caibx", work / f"{name}.img"],
        check=True, capture_output=True, cwd=ROOT,
    )  # fmt: skip


def _apply(manifest: Path, state: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "desync_decl", "apply", str(manifest), "--state-dir", str(state)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
    )  # fmt: skip


if __name__ == "__main__":
    for row in run(sys.argv[1] if len(sys.argv) > 1 else "quick"):
        print(json.dumps(row))
