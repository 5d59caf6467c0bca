"""Network faults for RELIABILITY.md: every store operation through the fault proxy
(``proxy.py``) against real servers, many seeds per fault kind.

The servers are started as the tests start them (``tests/servers_*.py``): our
chunk-server in this process, moto's S3 in this process, a private sshd. Each
run is a ``fault_runs.trial``: a fresh store, one operation (extract, make,
cache from a faulty source, cache into a faulty target, prune, extract from a
failover group) through a proxy striking at random places, then the checks
(the output's bytes, the store read directly, ``desync-decl verify``).

One row per fault kind and store, over every operation the store supports,
and rows for failover groups whose first member is dead. Budgets: ``quick``
is one run per fault, operation and store (about 110 runs), ``full`` eight.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from reliability.fault_backends import Backend, ChunkServerBackend, S3Backend, SftpBackend
from reliability.fault_runs import (
    KINDS_OF,
    OPS_OF,
    Workbench,
    healed,
    iterations,
    script_of,
    timed,
    trial,
)
from reliability.proxy import never
from reliability.verdicts import Tally, report_row

SEEDS = {"quick": 1, "full": 8}
STORES = {"http": "our chunk-server (HTTP)", "s3": "moto (S3)", "sftp": "OpenSSH (SFTP)"}
FAULTS = {
    "drop": "connection dropped mid-body",
    "stall": "stall 3x the client timeout",
    "status": "500/503 from the proxy",
    "truncate": "body cut, Content-Length agreeing",
    "flip": "one body byte flipped",
    "drop-upload": "upload cut mid-body",
    "flip-upload": "one upload byte flipped",
    "refuse": "connection closed at once",
}
RAW_FAULTS = {  # SFTP: the proxy sees only a byte stream
    "drop": "connection dropped after N bytes",
    "stall": "stall after N bytes, 3x the timeout",
    "flip": "one byte from the server flipped",
    "drop-upload": "connection cut after N bytes sent",
    "flip-upload": "one byte to the server flipped",
    "refuse": "connection closed at once",
}


def run(budget: str) -> list[dict]:
    seeds = SEEDS[budget]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's request log
    tally = Tally()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp, contextlib.ExitStack() as stack:
        root = Path(tmp)
        (root / "bench").mkdir()
        bench = Workbench(root / "bench")
        for name, backend in _backends(stack, root, rows):
            for kind in KINDS_OF[name]:
                _fault_runs(tally, bench, backend, kind, seeds)
            for dead in ("refuse", "stall"):
                _failover_runs(tally, bench, backend, dead, seeds)
    rows += tally.rows()
    rows.append(_not_run("s3", FAULTS["flip-upload"], MOTO_STORES_ANY_BODY))
    return rows


def _fault_runs(tally: Tally, bench: Workbench, backend: Backend, kind: str, seeds: int) -> None:
    ops = OPS_OF[backend.name]
    fault = (RAW_FAULTS if backend.name == "sftp" else FAULTS)[kind]
    target = f"{', '.join(ops)} on {STORES[backend.name]}"
    for op in ops:
        for seed in iterations(seeds, zlib.crc32(f"{backend.name} {kind} {op}".encode())):
            script = script_of(backend, [kind], seed)
            verdict, seconds = timed(lambda s=script, o=op: trial(bench, backend, o, s))
            tally.add("faults", fault, target, verdict)
            tally.add_time("faults", fault, target, seconds)
            if healed(backend, kind) and verdict.outcome == "clean_error":
                tally.note("faults", fault, target, f"{op} failed where retries should heal")
    if not healed(backend, kind):
        tally.note("faults", fault, target, "not retried by design: an invalid chunk fails")


def _failover_runs(tally: Tally, bench: Workbench, backend: Backend, dead: str, n: int) -> None:
    fault = f"failover a|b, a's connections {'closed' if dead == 'refuse' else 'stalled'}"
    target = f"extract from {STORES[backend.name]}"
    for _ in range(n):
        verdict, seconds = timed(lambda: trial(bench, backend, "failover", never, dead=dead))
        tally.add("faults", fault, target, verdict)
        tally.add_time("faults", fault, target, seconds)


def _backends(
    stack: contextlib.ExitStack, root: Path, rows: list[dict]
) -> Iterator[tuple[str, Backend]]:
    """Each server, started as the fixtures start it; one that cannot start is a row."""
    from tests.servers_http import chunk_service, start_listener

    yield (
        "http",
        ChunkServerBackend(
            root / "http", lambda folder: start_listener(chunk_service(folder, writable=True))
        ),
    )
    try:
        from tests.servers_cloud import running_moto

        moto = stack.enter_context(running_moto())
        moto.admin.create_bucket(Bucket="faults")
    except (ImportError, OSError) as e:
        rows.append(_not_run("s3", "every fault", f"moto[server] is not available: {e}"))
    else:
        yield "s3", S3Backend(moto.endpoint, "faults")
    try:
        from tests.servers_ssh import SshServer

        sshd = SshServer.start(root / "sshd")
        stack.callback(sshd.kill)
    except (RuntimeError, OSError) as e:
        rows.append(_not_run("sftp", "every fault", f"no sshd: {e}"))
    else:
        yield "sftp", SftpBackend(sshd, root / "sftp")


MOTO_STORES_ANY_BODY = (
    "not run: moto checks neither Content-MD5 nor the payload hash and stores a damaged "
    "body; the client sends Content-MD5, which S3 checks (BadDigest, then retried): "
    "tests/test_reliability_faults.py::test_s3_uploads_carry_a_content_md5_*"
)


def _not_run(store: str, fault: str, why: str) -> dict:
    return report_row("faults", fault, STORES[store], why)
