"""Store operations run through the fault proxy against real servers, and judged.

A ``Backend`` (``fault_backends.py``) is a running server (our chunk-server,
moto's S3, sshd's SFTP); ``backend.site()`` gives a fresh, empty store on it. A
``Workbench`` holds two blobs, their indexes and a local master store of
their chunks, made once.

``trial(bench, backend, op, script)`` fills a fresh site as the operation
needs, runs the operation with the CLI through a ``FaultProxy`` following
``script``, and returns a ``Verdict`` from what it finds afterwards: the
output file, the index, the chunks in the store (read directly, never
through the proxy), and ``desync-decl verify`` on the store.

Operations: ``extract``, ``make`` (into a store holding half of the chunks),
``cache-from`` (a faulty source, a local target), ``cache-to`` (a local
source, a faulty target), ``prune`` (listable stores only) and ``failover``
(``-s "dead|via"``: an extract whose first group member is behind a proxy
that kills every connection).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from desync_decl.formats import index as index_format
from desync_decl.formats.digest import ChunkID
from desync_decl.stores.base import WriteStore
from desync_decl.stores.local import LocalStore
from reliability.fault_backends import Backend, Site
from reliability.proxy import Fault, FaultProxy, Script, always, at_random
from reliability.verdicts import (
    CliRun,
    Verdict,
    environment,
    judge,
    run_cli,
    store_problem,
    temp_files,
)

T = TypeVar("T")
OPS = ("extract", "make", "cache-from", "cache-to", "prune", "failover")
HTTP_FAULTS = ("drop", "stall", "status", "truncate", "flip", "drop-upload", "flip-upload")
RAW_FAULTS = ("drop", "stall", "flip", "drop-upload", "flip-upload", "refuse")
SIZES = "1:4:16"  # KiB: a blob of 200 KB makes about 50 chunks
OLD_TARGET = b"the previous version, which a failed extract must leave as it was\n" * 100


# --- the blobs ------------------------------------------------------------------------


@dataclass
class Blob:
    data: bytes
    path: Path
    index: Path
    ids: set[ChunkID] = field(default_factory=set)


class Workbench:
    """Blobs ``a`` and ``b``, their indexes, and ``master``: a local store holding both."""

    def __init__(self, root: Path, size: int = 200_000) -> None:
        self.root = root
        self.master = root / "master"
        self.a = self._blob("a", random.Random(1).randbytes(size))
        self.b = self._blob("b", random.Random(2).randbytes(size // 2))
        self.runs = itertools.count()

    def _blob(self, name: str, data: bytes) -> Blob:
        path = self.root / name
        path.write_bytes(data)
        made = run_cli("make", "-s", self.master, "-m", SIZES, f"{path}.caibx", path)
        assert made.code == 0, made.err
        index = index_format.decode(Path(f"{path}.caibx").read_bytes())
        return Blob(data, path, Path(f"{path}.caibx"), index.unique_ids())

    def fill(self, store: WriteStore, ids: set[ChunkID]) -> None:
        master = LocalStore(self.master)
        for id in sorted(ids):
            store.store_chunk(master.get_chunk(id))

    def workdir(self) -> Path:
        return Path(tempfile.mkdtemp(prefix=f"run{next(self.runs)}-", dir=self.root))


# --- faults ---------------------------------------------------------------------------

# What each store is put through: the HTTP store cannot list, so it is never pruned;
# moto stores whatever body arrives (it checks neither Content-MD5 nor the payload
# hash), so a byte flipped in an upload to it says nothing about the client (which
# sends Content-MD5: tests/test_reliability_faults.py checks it).
OPS_OF = {"http": [op for op in OPS if op != "prune"], "s3": list(OPS), "sftp": list(OPS)}
KINDS_OF = {
    "http": list(HTTP_FAULTS),
    "s3": [k for k in HTTP_FAULTS if k != "flip-upload"],
    "sftp": list(RAW_FAULTS),
}
# Faults a retry heals: with at most three in a run, the run must succeed. SSH's MAC
# turns a flipped byte into a dropped connection; over HTTP a flipped or cut body that
# still looks whole is an invalid chunk, which is not retried (desync's rule).
HEALED = {"drop", "stall", "status", "drop-upload", "refuse"}
HEALED_RAW = HEALED | {"flip", "flip-upload"}


def healed(backend: Backend, kind: str) -> bool:
    return kind in (HEALED_RAW if backend.name == "sftp" else HEALED)


def fault_maker(kind: str, backend: Backend) -> Callable[[random.Random], Fault]:
    """``kind`` at a random place (a random status for ``status``), stalls that
    outlast the client's timeout three times."""

    def make(rng: random.Random) -> Fault:
        at = rng.random() if backend.name != "sftp" else float(rng.randrange(60_000))
        return Fault(kind, at=at, status=rng.choice((500, 503)), stall=3 * backend.timeout)

    return make


def script_of(
    backend: Backend, kinds: list[str], seed: int, *, limit: int = 3, rate: float = 0.2
) -> Script:
    """Faults of ``kinds`` at random places, at most ``limit`` of them in a run (SFTP
    opens few connections: each one is struck)."""
    makers = [fault_maker(kind, backend) for kind in kinds]
    rate = 1.0 if backend.name == "sftp" else rate
    return at_random(lambda rng: rng.choice(makers)(rng), rate, seed, limit=limit)


# --- trials ---------------------------------------------------------------------------


def trial(
    bench: Workbench, backend: Backend, op: str, script: Script, *, dead: str = "refuse"
) -> Verdict:
    """One run of ``op`` on a fresh site through a proxy following ``script``."""
    work = bench.workdir()
    try:
        with environment(backend.env):
            site = backend.site()
            try:
                return _trial(bench, backend, site, work, op, script, dead)
            finally:
                site.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _trial(
    bench: Workbench,
    backend: Backend,
    site: Site,
    work: Path,
    op: str,
    script: Script,
    dead: str,
) -> Verdict:
    a, b = bench.a, bench.b
    store = site.store()
    try:
        bench.fill(store, _before(op, a, b))
    finally:
        store.close()
    with contextlib.ExitStack() as stack:
        proxy = stack.enter_context(FaultProxy(site.port, script, http=site.http))
        backend.trust(proxy)
        via, gone = site.via(proxy), None
        if op == "failover":  # every connection through it dies (refuse) or hangs (stall)
            fault = always(Fault(dead, at=0.0, stall=5 * backend.timeout))
            gone = stack.enter_context(FaultProxy(site.port, fault, http=site.http))
            backend.trust(gone)
        config = _config(work, backend, via, site.via(gone) if gone else None)
        argv, check = _operation(op, bench, site, work, via, gone)
        run = run_cli("--config", config, *argv)
        injected = proxy.injected.copy()
    problems = check(run)
    problems["corrupt_store"] = problems.get("corrupt_store") or store_problem(site.checked())
    outcome, detail = judge(run, problems)
    leftovers = len(temp_files(site.local)) if site.local is not None else 0
    return Verdict(outcome, detail, injected, leftovers)


def _before(op: str, a: Blob, b: Blob) -> set[ChunkID]:
    """What the site holds before ``op`` runs."""
    if op in ("extract", "cache-from", "failover"):
        return a.ids
    if op == "make":  # half of a's chunks (has_chunk sees both answers), and all of b
        return set(sorted(a.ids)[::2]) | b.ids
    if op == "prune":
        return a.ids | b.ids
    return set()  # cache-to


def _operation(
    op: str, bench: Workbench, site: Site, work: Path, via: str, dead: FaultProxy | None
) -> tuple[list[object], Callable[[CliRun], dict[str, str | None]]]:
    a, b = bench.a, bench.b
    if op in ("extract", "failover"):
        out = work / "out" / "a.img"
        out.parent.mkdir()
        out.write_bytes(OLD_TARGET)
        store = f"{site.via(dead)}|{via}" if op == "failover" and dead else via
        return ["extract", "-s", store, a.index, out], lambda run: _extracted(run, out, a)
    if op == "make":
        index = work / "idx" / "a.caibx"
        index.parent.mkdir()
        argv: list[object] = ["make", "-s", via, "-m", SIZES, index, a.path]
        return argv, lambda run: _made(run, index, site, a, b)
    if op == "cache-from":
        target = work / "cache"
        argv = ["cache", "-s", via, "-c", target, a.index]
        return argv, lambda run: _cached(run, LocalStore(target, create=True), a, target)
    if op == "cache-to":
        argv = ["cache", "-s", bench.master, "-c", via, a.index]
        return argv, lambda run: _cached(run, site.store(), a, None)
    if op == "prune":
        argv = ["prune", "-y", "--min-age", "0", "-s", via, a.index]  # chunks made just now
        return argv, lambda run: _pruned(run, site, a, b)
    raise ValueError(f"unknown operation {op!r} (known: {', '.join(OPS)})")


def _extracted(run: CliRun, out: Path, a: Blob) -> dict[str, str | None]:
    now = out.read_bytes() if out.exists() else None
    expected = a.data if run.code == 0 else OLD_TARGET
    wrong = None
    if now != expected:
        wrong = f"the target holds {len(now) if now is not None else 'no'} bytes, not the "
        wrong += "new version" if run.code == 0 else "old version"
    elif temp_files(out.parent):
        wrong = f"temp files left: {temp_files(out.parent)}"
    return {"wrong_output": wrong}


def _made(run: CliRun, index: Path, site: Site, a: Blob, b: Blob) -> dict[str, str | None]:
    store = site.store()
    try:
        lost = [id for id in b.ids if not store.has_chunk(id)]
        missing = [id for id in a.ids if not store.has_chunk(id)] if run.code == 0 else []
    finally:
        store.close()
    wrong = None
    if run.code == 0 and (not index.exists() or index.read_bytes() != a.index.read_bytes()):
        wrong = "make succeeded but wrote a wrong index"
    elif run.code == 0 and missing:
        wrong = f"make succeeded but {len(missing)} chunks are not in the store"
    elif run.code != 0 and (index.exists() or temp_files(index.parent)):
        wrong = "make failed but left an index or a temp file"
    return {"data_lost": f"{len(lost)} chunks of b gone" if lost else None, "wrong_output": wrong}


def _cached(run: CliRun, target: WriteStore, a: Blob, local: Path | None) -> dict[str, str | None]:
    try:
        missing = [id for id in a.ids if not target.has_chunk(id)] if run.code == 0 else []
    finally:
        target.close()
    corrupt = store_problem(local) if local is not None and local.exists() else None
    wrong = f"cache succeeded but {len(missing)} chunks are missing" if missing else None
    return {"wrong_output": wrong, "corrupt_store": corrupt}


def _pruned(run: CliRun, site: Site, a: Blob, b: Blob) -> dict[str, str | None]:
    store = site.store()
    try:
        present = set(store.iter_chunk_ids())  # type: ignore[attr-defined]
    finally:
        store.close()
    lost = a.ids - present
    wrong = None
    if run.code == 0 and present != a.ids:
        wrong = f"prune succeeded but {len(present - a.ids)} unreferenced chunks are left"
    return {"data_lost": f"{len(lost)} kept chunks gone" if lost else None, "wrong_output": wrong}


def _config(work: Path, backend: Backend, via: str, dead: str | None) -> Path:
    """Short timeouts and quick retries for the store behind the proxy; a dead failover
    member gets one attempt (its group moves on after the first failure anyway)."""
    options = {
        "timeout": int(backend.timeout * 1e9),
        "error-retry": 4,
        "error-retry-base-interval": 10_000_000,  # 10 ms
    }
    stores = {via: options} | ({dead: {**options, "error-retry": 1}} if dead else {})
    path = work / "config.json"
    path.write_text(json.dumps({"store-options": stores}))
    return path


def timed(call: Callable[[], T]) -> tuple[T, float]:
    """``call()`` and the seconds it took."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


def iterations(n: int, seed: int) -> Iterator[int]:
    """Seeds for ``n`` runs, derived from ``seed``."""
    rng = random.Random(seed)
    for _ in range(n):
        yield rng.randrange(1 << 30)
