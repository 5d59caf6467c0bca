"""Run ``desync-decl`` as a child process that reports its own peak RSS as it exits.

The peak is VmHWM of the child's own address space: ru_maxrss from wait4 counts the
address space it was forked from, which is the whole test run's by the time a test
runs in the full suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass

from tests.conftest import ROOT

_PEAK_AT_EXIT = """\
import atexit, os, runpy
peak_file = os.environ.pop("DESYNC_TEST_PEAK_FILE")
def report():
    with open("/proc/self/status") as status, open(peak_file, "w") as out:
        out.write(next(line for line in status if line.startswith("VmHWM:")))
atexit.register(report)
runpy.run_module("desync_decl", run_name="__main__")
"""


@dataclass
class Run:
    code: int
    err: str
    peak_mib: float  # inf when the child was killed before it could report


def run_measured(*argv: object, env: dict[str, str] | None = None, timeout: float = 120) -> Run:
    """``desync-decl ARGV`` as a child process (killed after ``timeout`` s): exit
    status, stderr, peak RSS."""
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as peak:
        process = subprocess.Popen(
            [sys.executable, "-c", _PEAK_AT_EXIT, *map(str, argv)],
            env={
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DESYNC_TEST_PEAK_FILE": peak.name,
                **(env or {}),
            },
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        err.seek(0)
        reported = peak.read().split()  # ["VmHWM:", "<kB>", "kB"], or nothing if killed
        peak_mib = int(reported[1]) / 1024 if reported else float("inf")
        return Run(process.returncode, err.read().decode(), peak_mib)
