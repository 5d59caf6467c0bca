#!/usr/bin/env python3
"""What a dead or hung origin costs ``plan`` and ``apply`` (run by hand; issue 13).

A failover group ``[origin, mirror]``: the origin is moto's S3 server in a process
of its own, the mirror our chunk-server over a local store with the same chunks.
For each state of the origin — ``up``, ``refused`` (killed: its port refuses
connections) and ``hung`` (SIGSTOP: connections are accepted, nothing answers) —
``plan`` and then ``apply`` of a fresh target run ``--runs`` times each, and the
table shows the median and the spread (min to max) of the wall times, next to the
cost the design promises: one connect timeout (refused) or one read timeout (hung)
more than with the origin up. casync has no failover group: there is nothing to
compare against but ourselves with the origin up, in the same run.

    python bench/bench_failover.py                      # 64 MiB, 3 runs, timeout 5 s
    python bench/bench_failover.py --size 16M --runs 1 --timeout 2

Run it on an otherwise idle machine; the work folder is ``--workdir`` (default a
fresh temporary folder, removed at the end). The table goes to stdout and to
``bench/results-failover.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "desync_decl"]
STATES = ("up", "refused", "hung")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit(f"server on port {port} did not start") from None
            time.sleep(0.1)


class Site:
    """The origin, the mirror, the published image and the manifest."""

    def __init__(self, work: Path, size: int, timeout: float, env: dict[str, str]) -> None:
        self.work, self.env = work, env
        work.mkdir(parents=True)
        image = work / "app.img"
        image.write_bytes(random.Random(13).randbytes(size))
        self.origin_port = free_port()
        self.origin = self._start(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.origin_port)]
        )
        wait_for_port(self.origin_port, self.origin)
        import boto3

        boto3.session.Session().client(
            "s3",
            endpoint_url=f"http://127.0.0.1:{self.origin_port}",
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        ).create_bucket(Bucket="origin")
        origin_url = f"s3+http://127.0.0.1:{self.origin_port}/origin/store"
        for store in (origin_url, str(work / "mirror-store")):
            self.cli("make", "-s", store, work / "app.caibx", image)
        mirror_port = free_port()
        self.mirror = self._start(
            [*CLI, "chunk-server", "-s", work / "mirror-store", "-l", f"127.0.0.1:{mirror_port}"]
        )
        wait_for_port(mirror_port, self.mirror)
        self.manifest = work / "fleet.yaml"
        self.manifest.write_text(
            f"""version: 1
stores:
  origin: {{url: "{origin_url}", options: {{timeout: {timeout}s}}}}
  mirror: {{url: "http://127.0.0.1:{mirror_port}/", options: {{timeout: {timeout}s}}}}
groups:
  upstream: {{failover: [origin, mirror]}}
tasks:
  - name: app
    extract: {{index: app.caibx, path: out/app.img, stores: [upstream]}}
"""
        )

    def _start(self, argv: list[object]) -> subprocess.Popen:
        return subprocess.Popen(
            [str(a) for a in argv],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def cli(self, *argv: object) -> float:
        """Run the CLI; its wall time in seconds (a failure stops the benchmark)."""
        started = time.monotonic()
        done = subprocess.run(
            [*CLI, *map(str, argv)], env=self.env, cwd=self.work, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(map(str, argv))} failed: {done.stdout}{done.stderr}")
        return time.monotonic() - started

    def plan_and_apply(self, run: str) -> tuple[float, float]:
        state = self.work / f"state-{run}"
        plan = self.cli("plan", self.manifest, "--state-dir", state)
        apply = self.cli("apply", self.manifest, "--state-dir", state)
        (self.work / "out" / "app.img").unlink()
        return plan, apply

    def close(self) -> None:
        for process in (self.origin, self.mirror):
            if process.poll() is None:
                process.send_signal(signal.SIGCONT)
                process.kill()
                process.wait()


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f} to {max(values):.2f})"


def measure(args: argparse.Namespace, work: Path, env: dict[str, str]) -> list[str]:
    times: dict[str, tuple[list[float], list[float]]] = {s: ([], []) for s in STATES}
    for state in STATES:
        site = Site(work / state, args.size, args.timeout, env)  # hung/refused: a fresh origin
        try:
            site.plan_and_apply("warm-up")
            if state == "refused":
                site.origin.kill()
                site.origin.wait()
            elif state == "hung":
                site.origin.send_signal(signal.SIGSTOP)
            for run in range(args.runs):
                plan, apply = site.plan_and_apply(f"{state}-{run}")
                times[state][0].append(plan)
                times[state][1].append(apply)
                print(f"{state} run {run + 1}: plan {plan:.2f} s, apply {apply:.2f} s", flush=True)
        finally:
            site.close()
    up_plan = statistics.median(times["up"][0])
    up_apply = statistics.median(times["up"][1])
    promised = {"up": "-", "refused": "+ one connect timeout", "hung": "+ one read timeout"}
    lines = [
        f"# Failover: what a dead or hung origin costs ({args.size >> 20} MiB image,"
        f" store timeout {args.timeout:g} s, {args.runs} runs, medians and spread)",
        "",
        f"`{' '.join(sys.argv)}` at {git_revision()} on {os.cpu_count()} CPUs,"
        f" {time.strftime('%Y-%m-%d')}.",
        "",
        "| origin | plan | apply | plan minus up | apply minus up | promised |",
        "|---|---|---|---|---|---|",
    ]
    for state in STATES:
        plan, apply = times[state]
        lines.append(
            f"| {state} | {spread(plan)} | {spread(apply)}"
            f" | {statistics.median(plan) - up_plan:+.2f} s"
            f" | {statistics.median(apply) - up_apply:+.2f} s | {promised[state]} |"
        )
    return lines


def git_revision() -> str:
    done = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    )
    return done.stdout.strip() or "unknown"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size", default="64M", help="image size, e.g. 64M (default 64M)")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--timeout", type=float, default=5.0, help="the stores' timeout, seconds")
    p.add_argument("--workdir", type=Path, help="default: a fresh temporary folder")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "results-failover.md")
    args = p.parse_args()
    args.size = int(args.size.rstrip("Mm")) << 20
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    env = {**os.environ, "S3_ACCESS_KEY": "test", "S3_SECRET_KEY": "test"}
    env["PYTHONPATH"] = str(REPO)
    try:
        lines = measure(args, work, env)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
