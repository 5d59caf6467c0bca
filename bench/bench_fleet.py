#!/usr/bin/env python3
"""Fleet rollout benchmark: N hosts roll from v1 to v2 of an image at once, three ways (by hand).

``--hosts`` hosts (default 20: processes on this machine, each with a root
and a state dir of its own) hold v1 of a ``--size`` image (default 512 MiB,
the ``rand`` input of bench_blob.py; ``--data real`` for its tar of /usr)
and roll to v2 all at once. v2 is bench_seed.py's v2 (5% of the 64 KiB
blocks overwritten with random bytes, scattered) with one insertion of
10,000 bytes in the middle half. Three ways, in the same run, on the same
data, their order rotated from run to run:

- ``desync-decl``: every host runs ``desync-decl apply`` of a manifest with
  one extract task (its root, ``--state-dir``) whose store is one
  ``desync-decl chunk-server``: a cache store, empty at the start of each
  run (``-c``), in front of an S3 origin (``moto.server`` in a process of its
  own, reached through a relay here that counts its bytes). v1 is in place
  on every host from an untimed ``apply`` of v1, so it is each host's
  recorded seed; only chunks v1 lacks travel.
- ``nginx``: every host downloads the whole of v2 from nginx with curl (what
  most fleets do today).
- ``rsync``: every host holds a copy of v1 and runs ``rsync`` against one
  rsync daemon on 127.0.0.1 (its delta transfer, v1 as the basis file).

Per method it reports the bytes the origin served (the relay's count of what
moto sent; nginx's access log; the rsync daemon's "sent" bytes), the bytes
each host received, the fleet's wall time (start of all hosts to the end of
the last; plus the ``sync`` after it: desync-decl fsyncs its output, curl and
rsync do not), CPU and peak RSS per host (GNU time), and the servers' CPU;
for desync-decl also the origin's bytes against the ideal (each new chunk
once, as stored). Every host's image is checked against v2 (SHA-256).

All hosts run on this one machine: the fleet's wall time is how long this
machine took for the work of all hosts and servers together, not what
machines of their own would take; per host CPU, RSS and bytes are what each
host spends. All hosts share the address 127.0.0.1, and the chunk-server
admits 64 connections per client address, so each host uses
``--concurrency`` connections (default: 64 / hosts, at most 8).

The report goes to stdout and to ``bench/results-fleet.md``. Needs Debian's
rsync, nginx (nginx-light) and curl, and moto[server] (the test extra).

    python bench/bench_fleet.py                                          # 20 hosts, 512 MiB, 3 runs
    python bench/bench_fleet.py --hosts 4 --size 32M --runs 1 --settle 0   # quick check
    sudo bench/on_fresh_fs.sh 40 python bench/bench_fleet.py --settle 0  # on a new ext4
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import json
import os
import random
import re
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bench_seed
import benchlib as bl
from bench_failover import free_port, wait_for_port

METHODS = ("desync-decl", "nginx", "rsync")
DEFAULT_HOSTS = 20
DEFAULT_SIZE = 512 * bl.MiB
INSERTED = 10_000  # bytes v2 inserts once, at a place in the middle half
INSERT_SEED = 9  # random.Random seed of the insertion (bench_seed uses 7 and 8)
PER_CLIENT = 64  # connections the chunk-server admits per client address (server/limits.py)
DEFAULT_CONCURRENCY = 8  # desync-decl's worker threads per task when nothing says otherwise
BUCKET = "fleet"
S3_PREFIX = "store"
IMAGE = "app.img"  # each host's target, in its root
SERVED = "v2.img"  # what nginx and the rsync daemon serve
RESULTS_MD = bl.REPO / "bench" / "results-fleet.md"
WHO_SYNCS = "desync-decl fsyncs each host's image before it exits, curl and rsync do not"


# -------------------------------------------------------------------- inputs


def insertion_offset(size: int) -> int:
    """Where v2 inserts its bytes: a place in the middle half of the image, not aligned."""
    return random.Random(INSERT_SEED).randrange(size // 4, 3 * size // 4)


def ensure_fleet_v2(v1: Path) -> Path:
    """``<v1>-fleet-v2``: bench_seed.py's v2 of ``v1`` with ``INSERTED`` bytes inserted (cached)."""
    path = v1.with_name(f"{v1.name}-fleet-v2")
    size = v1.stat().st_size
    if not path.exists():
        base = bench_seed.ensure_v2(v1)
        bl.log(f"creating {path} ...")
        tmp = path.with_name(f"{path.name}.tmp")
        with base.open("rb") as src, tmp.open("wb") as dst:
            head = insertion_offset(size)
            while head:
                head -= dst.write(src.read(min(bl.RAND_PIECE, head)))
            dst.write(random.Random(INSERT_SEED).randbytes(INSERTED))
            shutil.copyfileobj(src, dst, bl.RAND_PIECE)
        tmp.rename(path)
    if path.stat().st_size != size + INSERTED:
        raise bl.BenchError(f"{path} is not {INSERTED} bytes longer than {v1}: remove it")
    return path


# ------------------------------------------------------------------- servers


def tree_cpu_seconds(pid: int) -> float:
    """User + sys seconds of ``pid`` and its descendants, with the children they reaped."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # the process ended meanwhile
        # after the command's ")": state ppid ... utime(11) stime cutime cstime(14)
        child = int(stat.parent.name)
        parents[child] = int(fields[1])
        times[child] = sum(int(f) for f in fields[11:15]) / tick
    tree = {pid}
    grew = True
    while grew:
        more = {child for child, parent in parents.items() if parent in tree} - tree
        grew = bool(more)
        tree |= more
    return sum(times.get(p, 0.0) for p in tree)


@dataclass
class Server:
    """A server process this benchmark started, its log (what it served) and its CPU."""

    name: str
    process: subprocess.Popen[bytes]
    port: int
    log: Path

    @classmethod
    def start(cls, name: str, argv: Sequence[str], port: int, log: Path, output: Path) -> Server:
        """Start ``argv`` (stdout and stderr to ``output``), wait until ``port`` accepts."""
        with output.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=output.parent,
            )
        server = cls(name, process, port, log)
        wait_for_port(port, process)
        return server

    def cpu(self) -> float:
        """Its CPU seconds so far (its whole process tree)."""
        return tree_cpu_seconds(self.process.pid)

    def log_offset(self) -> int:
        """Where the next run's log lines start."""
        return self.log.stat().st_size if self.log.exists() else 0

    def log_since(self, offset: int) -> str:
        """What it logged since ``offset``."""
        with self.log.open("rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it has not ended within 10 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class CountingRelay:
    """A TCP relay on 127.0.0.1 in front of an HTTP server at ``upstream_port`` that counts
    what passes: the bytes the server sent (what it served, headers included), and the
    requests by kind, read from the request heads (GETs carry no body)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.listener.getsockname()[1]
        self.served = 0  # bytes from the server to its clients
        self.requests: Counter[str] = Counter()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._connection, args=(client,), daemon=True).start()

    def _connection(self, client: socket.socket) -> None:
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            up = threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True)
            up.start()
            self._pump(upstream, client, False)
            up.join()

    def _pump(self, src: socket.socket, dst: socket.socket, asks: bool) -> None:
        """Copy until ``src`` ends, then end ``dst``'s sending side. Each piece is
        counted before it is passed on, so nobody has it before it is counted: the
        client's requests (``asks``), or the server's bytes."""
        pending = b""  # the client's last line, not complete yet
        try:
            while data := src.recv(1 << 18):
                with self._lock:
                    if asks:
                        *lines, pending = (pending + data).split(b"\r\n")
                        count_requests(lines, self.requests)
                    else:
                        self.served += len(data)
                dst.sendall(data)
        except OSError:
            pass
        with contextlib.suppress(OSError):
            dst.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self.listener.close()


def count_requests(lines: list[bytes], kinds: Counter[str]) -> None:
    """Count the requests among the lines of a client's request heads (GETs have no
    body) by method; a GET of one byte (``Range: bytes=0-0``, how the S3 store asks
    whether a chunk is there) counts apart."""
    for line in lines:
        request = re.fullmatch(rb"([A-Z]+) \S+ HTTP/1\.[01]", line)
        if request:
            kinds[request.group(1).decode()] += 1
        elif re.fullmatch(rb"(?i)range: *bytes=0-0", line):
            kinds["GET"] -= 1
            kinds["1-byte GET"] += 1


def start_moto(where: Path) -> Server:
    """moto's S3 server in a process of its own; it logs one line per request."""
    port = free_port()
    log = where / "moto.log"
    argv = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    return Server.start("moto", argv, port, log, log)


def start_nginx(where: Path, root: Path) -> tuple[Server, str]:
    """nginx serving ``root`` read-only, logging each request's bytes sent; its base URL."""
    port = free_port()
    user = "user root root;\n" if os.geteuid() == 0 else ""  # workers read what root wrote
    (where / "tmp").mkdir(parents=True, exist_ok=True)
    conf = where / "nginx.conf"
    conf.write_text(
        f"{user}worker_processes auto;\npid {where}/nginx.pid;\nerror_log {where}/error.log warn;\n"
        "events { worker_connections 1024; }\n"
        "http {\n"
        "  log_format bytes '$request_method $uri $status $bytes_sent $body_bytes_sent';\n"
        f"  access_log {where}/access.log bytes;\n"
        f"  client_body_temp_path {where}/tmp/body;\n  proxy_temp_path {where}/tmp/proxy;\n"
        f"  fastcgi_temp_path {where}/tmp/fastcgi;\n  uwsgi_temp_path {where}/tmp/uwsgi;\n"
        f"  scgi_temp_path {where}/tmp/scgi;\n"
        "  default_type application/octet-stream;\n  sendfile on;\n"
        f"  server {{\n    listen 127.0.0.1:{port};\n    root {root};\n  }}\n}}\n"
    )
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    argv = [binary, "-p", str(where), "-c", str(conf), "-e", str(where / "error.log")]
    argv += ["-g", "daemon off;"]
    return Server.start("nginx", argv, port, where / "access.log", where / "nginx.out"), (
        f"http://127.0.0.1:{port}/"
    )


def start_rsyncd(where: Path, root: Path) -> tuple[Server, str]:
    """An rsync daemon serving ``root`` as the module ``fleet``; the module's URL."""
    port = free_port()
    conf = where / "rsyncd.conf"
    conf.write_text(
        f"pid file = {where}/rsyncd.pid\nlog file = {where}/rsyncd.log\n"
        f"port = {port}\naddress = 127.0.0.1\nuse chroot = no\n"
        f"uid = {os.getuid()}\ngid = {os.getgid()}\n"
        f"[fleet]\n    path = {root}\n    read only = yes\n"
    )
    argv = ["rsync", "--daemon", "--no-detach", f"--config={conf}"]
    server = Server.start("rsync daemon", argv, port, where / "rsyncd.log", where / "rsyncd.out")
    return server, f"rsync://127.0.0.1:{port}/fleet/"


def start_chunk_server(where: Path, origin: str, cache: Path) -> tuple[Server, str]:
    """Our chunk-server: ``cache`` (a local store) read through in front of ``origin``."""
    port = free_port()
    argv = [*bl.ours_cmd(), "chunk-server", "-s", origin, "-c", str(cache)]
    argv += ["-l", f"127.0.0.1:{port}", "--log", str(where / "requests.log")]
    server = Server.start(
        "chunk-server", argv, port, where / "requests.log", where / "chunk-server.out"
    )
    return server, f"http://127.0.0.1:{port}/"


# ------------------------------------------------------------- what was sent


def request_counts(log: str, pattern: str) -> Counter[str]:
    """Requests per method in ``log``: the first group of ``pattern`` on each line that has it."""
    return Counter(m.group(1) for m in re.finditer(pattern, log, re.M))


CHUNK_SERVER_REQUEST = r"Request: ([A-Z]+) "  # desync's access line


def nginx_bytes_sent(log: str) -> int:
    """Bytes nginx sent (headers and bodies), from our ``bytes`` access log format."""
    return sum(int(line.split()[3]) for line in log.splitlines() if line.strip())


def rsyncd_bytes_sent(log: str) -> int:
    """Bytes the rsync daemon sent, from its per-session "sent N bytes" log lines."""
    return sum(int(n) for n in re.findall(r"\] sent (\d+) bytes", log))


def rsync_stat(output: str, name: str) -> int:
    """A byte count of ``rsync --stats`` output, e.g. "Total bytes received"."""
    match = re.search(rf"^{re.escape(name)}: ([\d,]+)", output, re.M)
    if not match:
        raise bl.BenchError(f"no {name!r} in rsync's output:\n{output[-1000:]}")
    return int(match.group(1).replace(",", ""))


def tool_versions() -> str:
    """rsync, nginx, curl and moto versions, for the notes."""

    def first_line(cmd: list[str]) -> str:
        done = subprocess.run(cmd, capture_output=True, text=True)
        return (done.stdout or done.stderr).strip().splitlines()[0] if done.returncode == 0 else "?"

    moto = first_line([sys.executable, "-c", "import moto; print(moto.__version__)"])
    return ", ".join(
        [
            first_line(["rsync", "--version"]),
            first_line([shutil.which("nginx") or "/usr/sbin/nginx", "-v"]),
            first_line(["curl", "--version"]).split(" (")[0],
            f"moto {moto}",
        ]
    )


# --------------------------------------------------------------- benchmarks


@dataclass
class Roll:
    """One timed roll of the whole fleet by one method."""

    sample: bl.Sample  # the fleet's: wall to the last host's end, CPU summed, largest RSS
    hosts: list[bl.Usage]
    received: list[int]  # bytes each host received
    origin: int  # bytes the origin served
    server_cpu: dict[str, float]  # CPU seconds of each server process during the roll
    requests: str = ""  # what the servers were asked, for the details


@dataclass(frozen=True)
class Ideal:
    """What v2 holds that v1 lacks: the least an origin must send (each new chunk once)."""

    missing: bench_seed.Missing  # chunk counts and plain bytes
    stored_bytes: int  # the new chunks as stored on the origin (compressed), each once
    index_bytes: int  # v2's index: each host needs it too (read here from a local file)


class Fleet(bl.BenchBase):
    """Runs the set-up and the rolls; collects the rolls and the checks."""

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args.workdir, args.runs)
        self.args = args
        self.methods: tuple[str, ...] = (args.only,) if args.only else METHODS
        self.base = self.workdir / "fleet"  # everything this benchmark makes but its inputs
        self.cells = {m: self.cell("roll v1→v2", args.data, m, 0) for m in self.methods}
        self.rolls: dict[str, list[Roll]] = {m: [] for m in self.methods}
        self.outputs_checked = 0
        self.v1 = self.v2 = Path()
        self.digest = ""  # of v2
        self.ideal: Ideal | None = None
        self.servers: dict[str, Server] = {}
        self.urls: dict[str, str] = {}
        self.relay: CountingRelay | None = None

    def host_dirs(self, method: str) -> list[Path]:
        """One folder per host of ``method``: its root, state, manifests and logs."""
        return [self.base / "hosts" / method / f"{i:03d}" for i in range(self.args.hosts)]

    # ---------------------------------------------------------------- set-up

    def prepare(self, stack: contextlib.ExitStack) -> None:
        """Inputs, indexes, the set-up store, the origin and the servers (untimed)."""
        args = self.args
        self.v1 = bl.ensure_input(self.workdir, args.data, args.size)
        self.v2 = ensure_fleet_v2(self.v1)
        self.digest = bl.sha256_file(self.v2)
        for name in ("servers", "hosts", "serve"):
            (self.base / name).mkdir(parents=True, exist_ok=True)
        served = self.base / "serve" / SERVED
        os.link(self.v2, served)  # what nginx and the rsync daemon serve: v2 itself
        self.notes.append(
            f"input {args.data}: v1 {self.v1.stat().st_size} bytes, sha256"
            f" {bl.sha256_file(self.v1)}; v2 {self.v2.stat().st_size} bytes, sha256"
            f" {self.digest} ({INSERTED} bytes inserted at {insertion_offset(args.size)})"
        )
        stack.callback(self.stop_servers)
        if "desync-decl" in self.methods:
            self.prepare_desync()
        if "nginx" in self.methods:
            servers = self.base / "servers" / "nginx"
            servers.mkdir()
            self.servers["nginx"], self.urls["nginx"] = start_nginx(servers, served.parent)
        if "rsync" in self.methods:
            servers = self.base / "servers" / "rsync"
            servers.mkdir()
            self.servers["rsync"], self.urls["rsync"] = start_rsyncd(servers, served.parent)
        self.notes.append(f"Servers and clients: {tool_versions()}")

    def index(self, version: str) -> Path:
        return self.base / f"{version}.caibx"

    def prepare_desync(self) -> None:
        """A local store of v1's chunks (what puts v1 in place on the hosts); the origin:
        moto in a process, a bucket holding v2's chunks, the relay; the ideal."""
        import boto3  # moto[server] brings it

        make = [*bl.ours_cmd(), "make", "-s"]
        setup = self.base / "setup.log"
        bl.log("(untimed) make v1 into a local store")
        bl.timed_run(
            [*make, str(self.base / "setup-store"), str(self.index("v1")), str(self.v1)], setup
        )

        where = self.base / "servers" / "moto"
        where.mkdir()
        moto = self.servers["moto"] = start_moto(where)
        endpoint = f"http://127.0.0.1:{moto.port}"
        s3 = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id="test",
            aws_secret_access_key="test",
            region_name="us-east-1",
        )
        s3.create_bucket(Bucket=BUCKET)
        # moto accepts any key; the chunk-server and make (children) read them from here
        os.environ.update(S3_ACCESS_KEY="test", S3_SECRET_KEY="test")
        bl.log("(untimed) make v2 into the S3 origin")
        origin = f"s3+{endpoint}/{BUCKET}/{S3_PREFIX}"
        bl.timed_run([*make, origin, str(self.index("v2")), str(self.v2)], setup)
        self.relay = CountingRelay(moto.port)
        self.ideal = self.compute_ideal(s3)

    def compute_ideal(self, s3: Any) -> Ideal:
        """The chunks of v2 that v1 lacks, and their sizes as the origin stores them."""
        from desync_decl.formats.index import decode  # the tree's decoder; only reads files

        v1_index, v2_index = self.index("v1"), self.index("v2")
        old = decode(v1_index.read_bytes(), str(v1_index)).unique_ids()
        new = {cid.hex() for cid in decode(v2_index.read_bytes(), str(v2_index)).unique_ids()}
        new -= {cid.hex() for cid in old}
        stored: dict[str, int] = {}
        pages = s3.get_paginator("list_objects_v2")  # a boto3 client: no stubs
        for page in pages.paginate(Bucket=BUCKET, Prefix=f"{S3_PREFIX}/"):
            for obj in page.get("Contents", []):
                stored[obj["Key"].rsplit("/", 1)[-1].split(".", 1)[0]] = obj["Size"]
        lost = new - stored.keys()
        if lost:
            raise bl.BenchError(f"{len(lost)} chunks of v2 are not on the origin")
        ideal = Ideal(
            bench_seed.Missing.between(v1_index, v2_index),
            sum(stored[cid] for cid in new),
            v2_index.stat().st_size,
        )
        m = ideal.missing
        self.notes.append(
            f"v2: {m.chunks} chunks ({m.unique} distinct); {m.missing} distinct chunks not in v1:"
            f" {m.missing_bytes} plain bytes, {ideal.stored_bytes} bytes as stored on the origin;"
            f" its index: {ideal.index_bytes} bytes"
        )
        return ideal

    def stop_servers(self) -> None:
        for server in self.servers.values():
            server.stop()
        if self.relay:
            self.relay.close()

    # ----------------------------------------------------------------- rolls

    def roll(self, method: str, run: int) -> None:
        """One timed roll of the fleet by ``method``; a failed one marks its cell."""
        cell = self.cells[method]
        if cell.error:
            return
        bl.remove(self.base / "hosts" / method)
        dirs = self.host_dirs(method)
        for d in dirs:
            (d / "root").mkdir(parents=True)
        # v1 and the new v2 side by side on each host until the rename (nginx: v2 only)
        needed = len(dirs) * (self.v2.stat().st_size + (method != "nginx") * self.v1.stat().st_size)
        free = shutil.disk_usage(self.base).free
        if free < needed:
            cell.error = f"{free / 1e9:.1f} GB free in {self.base}, {needed / 1e9:.1f} GB needed"
            self.problem(f"{method} run {run}: {cell.error}")
            return
        rolls = {
            "desync-decl": self.roll_desync,
            "nginx": self.roll_nginx,
            "rsync": self.roll_rsync,
        }
        try:
            roll = rolls[method](dirs, run)
        except bl.BenchError as e:
            head, _, tail = str(e).partition("\n")
            cell.error = head.rstrip(":") + (
                f": {tail.strip().splitlines()[-1]}" if tail.strip() else ""
            )
            bl.log(f"FAILED: {method} run {run}: {e}")
            self.problem(f"{method} run {run} failed: {e}")
            return
        self.check_outputs(method, dirs)
        bl.remove(self.base / "hosts" / method)  # 20 images left around crowd the page cache
        cell.samples.append(roll.sample)
        self.rolls[method].append(roll)
        s = roll.sample
        bl.log(
            f"{method:12} run {run}: fleet wall {s.wall:6.2f} s (+sync {s.sync_after:5.2f} s)"
            f"  origin {roll.origin / 1e6:9.1f} MB  host received"
            f" {statistics.median(roll.received) / 1e6:7.1f} MB  host cpu"
            f" {statistics.median(h.cpu for h in roll.hosts):5.2f} s"
            f"  rss {max(h.rss_kib for h in roll.hosts) / 1024:6.1f} MiB"
            f"  other cpu {s.other_cpu:5.1f} s"
        )

    def measured(
        self,
        dirs: list[Path],
        cmds: list[list[str]],
        servers: Sequence[Server],
        stdout: str,
    ) -> tuple[bl.Sample, list[bl.Usage], dict[str, float], list[str]]:
        """Run the hosts' commands at once; the fleet's sample (other CPU without the
        servers' and this process's), per host usage, the servers' CPU, each host's stdout."""
        before = {s.name: s.cpu() for s in servers}
        own = time.process_time()  # the relay's threads run in this process
        logs = [d / f"{d.parent.name}.log" for d in dirs]
        outs = [d / stdout for d in dirs]
        sample, hosts = bl.timed_together(cmds, logs, outs)
        server_cpu = {s.name: s.cpu() - before[s.name] for s in servers}
        own_cpu = time.process_time() - own
        other = max(0.0, sample.other_cpu - sum(server_cpu.values()) - own_cpu)
        return (
            dataclasses.replace(sample, other_cpu=other),
            hosts,
            server_cpu,
            [o.read_text(errors="replace") for o in outs],
        )

    def roll_desync(self, dirs: list[Path], run: int) -> Roll:
        """v1 in place by an untimed apply from the set-up store; then every host applies v2
        through a fresh chunk-server (an empty cache in front of the origin), timed."""
        assert self.relay and self.ideal
        concurrency = ["-n", str(self.args.concurrency)]
        for d in dirs:
            self.write_manifest(d / "v1.yaml", d, "v1", str(self.base / "setup-store"))
        bl.log(f"(untimed) desync-decl apply v1 on {len(dirs)} hosts")
        apply = [*bl.ours_cmd(), "apply"]
        bl.timed_together(
            [[*apply, "v1.yaml", "--state-dir", "state", *concurrency] for d in dirs],
            [d / "setup.log" for d in dirs],
        )
        where = self.base / "servers" / f"chunk-server-{run}"
        where.mkdir()
        origin = f"s3+http://127.0.0.1:{self.relay.port}/{BUCKET}/{S3_PREFIX}"
        server, url = start_chunk_server(where, origin, where / "cache")
        try:
            for d in dirs:
                self.write_manifest(d / "v2.yaml", d, "v2", url)
            served_before, asked_before = self.relay.served, self.relay.requests.copy()
            cmds = [[*apply, "v2.yaml", "--state-dir", "state", *concurrency, "--json"]] * len(dirs)
            servers = [server, self.servers["moto"]]
            sample, hosts, cpu, outs = self.measured(dirs, cmds, servers, "roll.json")
            origin_bytes = self.relay.served - served_before  # counted before passed on
            origin_asked = self.relay.requests.copy()
            origin_asked.subtract(asked_before)
        finally:
            server.stop()  # its access log is complete once it has ended
            bl.remove(where / "cache")
        cache_asked = request_counts(server.log_since(0), CHUNK_SERVER_REQUEST)
        received = [self.desync_received(d, out) for d, out in zip(dirs, outs, strict=True)]
        return Roll(
            sample,
            hosts,
            received,
            origin_bytes,
            cpu,
            f"origin asked {counted(origin_asked)}; chunk-server asked {counted(cache_asked)}",
        )

    def write_manifest(self, path: Path, host: Path, version: str, store: str) -> None:
        """The host's manifest: one extract task of ``version`` into its root from ``store``."""
        manifest = {
            "version": 1,
            "stores": {"fleet": {"url": store}},
            "tasks": [
                {
                    "name": "image",
                    "extract": {
                        "index": str(self.index(version)),
                        "path": str(host / "root" / IMAGE),
                        "stores": ["fleet"],
                    },
                }
            ],
        }
        path.write_text(json.dumps(manifest, indent=2) + "\n")  # JSON is YAML

    def desync_received(self, host: Path, out: str) -> int:
        """The chunk bytes the host's apply read from the chunk-server, as served;
        a problem unless it changed the image and took exactly the chunks v1 lacks."""
        assert self.ideal
        try:
            task = json.loads(out)["tasks"][0]
            stats = task["stats"]
            taken = stats["bytes-from-store"]
            served = stats["reads"]["stores"]["fleet"]["stored-bytes-served"]
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise bl.BenchError(
                f"{host}: unexpected apply --json output ({e}): {out[-500:]}"
            ) from e
        if task["status"] != "changed" or taken != self.ideal.missing.missing_bytes:
            self.problem(
                f"desync-decl {host.name}: {task['status']}, took {taken} bytes from the store,"
                f" not the {self.ideal.missing.missing_bytes} bytes of the chunks v1 lacks"
            )
        return int(served)

    def roll_nginx(self, dirs: list[Path], run: int) -> Roll:
        """Every host downloads v2 whole with curl, timed."""
        nginx = self.servers["nginx"]
        start = nginx.log_offset()
        url = self.urls["nginx"] + SERVED
        write_out = "%{size_download} %{size_header}\\n"
        cmds = [["curl", "-fsS", "-o", f"root/{IMAGE}", "-w", write_out, url]] * len(dirs)
        sample, hosts, cpu, outs = self.measured(dirs, cmds, [nginx], "curl.out")
        log = nginx.log_since(start)
        received = [sum(int(n) for n in out.split()) for out in outs]
        asked = request_counts(log, r"^([A-Z]+) ")
        return Roll(sample, hosts, received, nginx_bytes_sent(log), cpu, f"asked {counted(asked)}")

    def roll_rsync(self, dirs: list[Path], run: int) -> Roll:
        """A copy of v1 on every host (untimed), then every host runs rsync, timed."""
        bl.log(f"(untimed) copying v1 to {len(dirs)} hosts")
        for d in dirs:
            shutil.copyfile(self.v1, d / "root" / IMAGE)
        rsyncd = self.servers["rsync"]
        start = rsyncd.log_offset()
        url = self.urls["rsync"] + SERVED
        cmds = [["rsync", "--stats", url, f"root/{IMAGE}"]] * len(dirs)
        sample, hosts, cpu, outs = self.measured(dirs, cmds, [rsyncd], "rsync.out")
        received = [rsync_stat(out, "Total bytes received") for out in outs]
        literal = statistics.median(rsync_stat(out, "Literal data") for out in outs)
        origin = rsyncd_bytes_sent(rsyncd.log_since(start))
        return Roll(
            sample, hosts, received, origin, cpu, f"literal data per host {literal:.0f} bytes"
        )

    def check_outputs(self, method: str, dirs: list[Path]) -> None:
        """Every host's image must be v2 (SHA-256, two files at a time)."""
        images = [d / "root" / IMAGE for d in dirs]
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            digests = list(pool.map(digest_or_error, images))
        self.outputs_checked += len(images)
        wrong = [
            i.parent.parent.name for i, d in zip(images, digests, strict=True) if d != self.digest
        ]
        if wrong:
            self.problem(f"{method}: {len(wrong)} hosts' images are not v2: {', '.join(wrong[:5])}")


def digest_or_error(path: Path) -> str:
    """SHA-256 of ``path``, or why it could not be read."""
    try:
        return bl.sha256_file(path)
    except OSError as e:
        return f"unreadable: {e}"


def counted(requests: Counter[str]) -> str:
    """``3 GET, 2 HEAD``."""
    asked = sorted((method, n) for method, n in requests.items() if n)
    return ", ".join(f"{n} {method}" for method, n in asked) or "nothing"


# ------------------------------------------------------------------ reports


def mb(n: float) -> str:
    """Bytes as MB (10^6), one decimal."""
    return f"{n / 1e6:.1f}"


def spread(values: Sequence[float], fmt: Callable[[float], str]) -> str:
    """``median (min to max)``, or the value alone when all agree."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return fmt(mid) if fmt(low) == fmt(high) else f"{fmt(mid)} ({fmt(low)} to {fmt(high)})"


def roll_rows(bench: Fleet) -> list[str]:
    """The main table: one row per method, medians over the runs (spread in brackets)."""
    lines = [
        "| method | fleet wall s, median (runs) | until durable (+sync) s | origin served MB"
        " | each host received MB | all hosts received MB | CPU s per host | peak RSS MiB per host"
        " | server CPU s | fleet CPU s (hosts + servers) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for method in bench.methods:
        cell, rolls = bench.cells[method], bench.rolls[method]
        if rolls:
            cells = [method, *roll_cells(cell, rolls)]
        else:
            cells = [method, f"FAILED: {bl.table_text(cell.error or 'no runs')}", *["-"] * 8]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def roll_cells(cell: bl.Result, rolls: list[Roll]) -> list[str]:
    """A method's cells of the main table, after its name."""
    runs = "/".join(f"{s.wall:.2f}" + ("*" if bl.disturbed(s) else "") for s in cell.samples)
    cpu = [h.cpu for r in rolls for h in r.hosts]
    rss = [h.rss_kib / 1024 for r in rolls for h in r.hosts]
    servers: dict[str, float] = defaultdict(float)
    for r in rolls:
        for name, seconds in r.server_cpu.items():
            servers[name] += seconds / len(rolls)
    return [
        f"{cell.wall:.2f} ({runs})",
        f"{cell.durable:.2f}",
        spread([r.origin for r in rolls], mb),
        spread([n for r in rolls for n in r.received], mb),
        spread([sum(r.received) for r in rolls], mb),
        f"{statistics.median(cpu):.2f} (max {max(cpu):.2f})",
        f"{statistics.median(rss):.1f} (max {max(rss):.1f})",
        " + ".join(f"{name} {seconds:.1f}" for name, seconds in servers.items()),
        f"{statistics.median(r.sample.cpu + sum(r.server_cpu.values()) for r in rolls):.1f}",
    ]


def ideal_lines(bench: Fleet) -> list[str]:
    """desync-decl's origin bytes against the ideal, run by run."""
    rolls = bench.rolls.get("desync-decl", [])
    if not bench.ideal or not rolls:
        return []
    ideal = bench.ideal
    lines = [
        f"desync-decl's origin against the ideal: the {ideal.missing.missing} distinct chunks v2"
        f" has and v1 lacks, each once, as stored on the origin: {ideal.stored_bytes} bytes"
        f" ({ideal.missing.missing_bytes} plain). The origin's bytes are what moto sent through"
        " the relay: S3 answers with their HTTP headers.",
        "",
        "| run | origin served bytes | ideal bytes | origin / ideal | per host received bytes"
        " | requests |",
        "|---|---|---|---|---|---|",
    ]
    for run, r in enumerate(rolls, 1):
        lines.append(
            f"| {run} | {r.origin} | {ideal.stored_bytes} | {r.origin / ideal.stored_bytes:.3f}"
            f" | {spread(r.received, lambda n: f'{n:.0f}')} | {r.requests} |"
        )
    return [*lines, ""]


def detail_lines(bench: Fleet) -> list[str]:
    """Per method and run: the fleet's times, the first and last host's end, the servers."""
    lines = []
    for method in bench.methods:
        for run, r in enumerate(bench.rolls[method], 1):
            ends = [h.wall for h in r.hosts]
            lines.append(
                f"{method} run {run}: wall {r.sample.wall:.2f} s, first host done at"
                f" {min(ends):.2f} s, median {statistics.median(ends):.2f} s; sync after"
                f" {r.sample.sync_after:.2f} s; fleet CPU {r.sample.cpu:.1f} s; servers "
                + ", ".join(f"{n} {c:.1f} s CPU" for n, c in r.server_cpu.items())
                + (f"; {r.requests}" if r.requests else "")
            )
    return lines


def correctness(bench: Fleet) -> str:
    """What was checked and what did not match."""
    text = (
        f"Correctness: {bench.outputs_checked} hosts' images compared with v2 (SHA-256); every"
        " desync-decl host's apply must say `changed` and have taken from the store exactly the"
        " plain bytes of the chunks v1 lacks"
    )
    if not bench.problems:
        return text + ": all as expected."
    return (
        text + ". PROBLEMS:\n\n" + "\n".join(f"* {bl.table_text(p, 1000)}" for p in bench.problems)
    )


def index_note(bench: Fleet) -> list[str]:
    """The bullet on v2's index, which desync-decl hosts read besides the chunks."""
    if not bench.ideal:
        return []
    return [
        f"* Each desync-decl host also reads v2's index ({bench.ideal.index_bytes} bytes; here"
        " a local file, in a fleet from an index server or the origin)."
    ]


def report(bench: Fleet, args: argparse.Namespace, command: str) -> str:
    """The Markdown report."""
    title = (
        f"Fleet rollout: {args.hosts} hosts roll from v1 to v2 of a {bl.size_label(args.size)}"
        " image at once"
    )
    parts = [
        *bl.report_head(title, bench, args, command),
        f"* {bl.settle_note(args.settle, bench.since_removal)}",
        *index_note(bench),
        f"* Data: v1 = the `{args.data}` input of bench_blob.py; v2 = v1 with 5% of its 64 KiB"
        " blocks (aligned, picked by random.Random(7)) overwritten with random bytes"
        f" (bench_seed.py's v2) and {INSERTED} random bytes inserted once, in the middle half.",
        f"* Hosts: {args.hosts} processes on this machine, started at once after a `sync`,"
        " each in its own folder (root, state dir). The fleet's wall time runs from their start"
        " to the end of the last one: it is how long this machine took for all hosts' and"
        " servers' work together, not what hosts with machines of their own would take. CPU"
        " (user + sys) and peak RSS per host come from GNU `/usr/bin/time`.",
        f"* desync-decl: `desync-decl apply v2.yaml --state-dir state -n {args.concurrency}"
        " --json`, the manifest one extract task of v2's index (a local file) into the host's"
        " root, its store one `desync-decl chunk-server -s s3+http://…/fleet/store -c CACHE`"
        " (started for each run with an empty cache) in front of moto's S3 server (a process of"
        " its own, holding v2's chunks). v1 was put in place by an untimed `apply` of v1's"
        " index from a local store, so each host holds v1 with its record: the seed. All hosts"
        f" connect from 127.0.0.1 and the chunk-server admits {PER_CLIENT} connections per"
        f" client address: `-n {args.concurrency}` per host. Host received = the chunk bytes as"
        " served (`stored-bytes-served` of `apply --json`; HTTP headers not counted).",
        "* nginx: `curl -fsS -o root/app.img URL` of v2 from nginx (sendfile, a fresh root per"
        " host). Origin = `$bytes_sent` of nginx's access log; host received = curl's"
        " `size_download` + `size_header`.",
        "* rsync: `rsync --stats rsync://127.0.0.1:PORT/fleet/v2.img root/app.img` from one"
        " rsync daemon, each host holding a copy of v1 (copied untimed): rsync's delta"
        ' transfer with v1 as the basis. Origin = the daemon\'s "sent N bytes" log lines; host'
        " received = `Total bytes received` of `--stats` (the whole protocol stream).",
        "* Each run rolls the fleet once per method, the methods' order rotated from run to run;"
        " every host's image is then checked and removed. Server CPU = the servers' processes"
        " (and their children) during the roll, per run.",
        "",
        *roll_rows(bench),
        "",
        bl.disturbed_legend(),
        "",
        *ideal_lines(bench),
        "Per run:",
        "",
        *(f"* {line}" for line in detail_lines(bench)),
        "",
        *bl.report_tail(bench, correctness(bench)),
    ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = bl.base_parser(
        __doc__.split("\n\n")[0],
        "the chunk-server's cache and the hosts' state dirs create files",
        size=DEFAULT_SIZE,
    )
    parser.add_argument(
        "--hosts", type=int, default=DEFAULT_HOSTS, help=f"hosts (default {DEFAULT_HOSTS})"
    )
    parser.add_argument("--data", choices=bl.DATASETS, default="rand", help="input (default rand)")
    parser.add_argument("--only", choices=METHODS, help="roll the fleet this way only")
    parser.add_argument(
        "--concurrency",
        type=int,
        help=f"desync-decl's connections per host (default {PER_CLIENT} / hosts, at most"
        f" {DEFAULT_CONCURRENCY}: the chunk-server's bound per client address)",
    )
    args = bl.check_args(parser, parser.parse_args(argv))
    if args.hosts < 1 or (args.concurrency is not None and args.concurrency < 1):
        parser.error("--hosts and --concurrency must be positive")
    if args.concurrency is None:
        args.concurrency = max(1, min(DEFAULT_CONCURRENCY, PER_CLIENT // args.hosts))
    missing = [tool for tool in ("rsync", "curl", "nginx") if not find_tool(tool)]
    if missing:
        parser.error(
            f"not installed: {', '.join(missing)} (apt-get install rsync curl nginx-light)"
        )
    return args


def find_tool(name: str) -> str | None:
    """The tool on PATH, or nginx in /usr/sbin (not on a non-root PATH)."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark, print the report and write bench/results-fleet.md."""
    return bl.main_locked(parse_args(argv), run)


def method_order(run: int, methods: Sequence[str]) -> list[str]:
    """Run 1 in the given order, each later run starting one method further on."""
    shift = (run - 1) % len(methods)
    return [*methods[shift:], *methods[:shift]]


def run(args: argparse.Namespace) -> int:
    """The benchmark proper, with the work dir locked."""
    bench = Fleet(args)
    clean = lambda: bl.remove_leftovers(args.workdir, [bench.base])  # noqa: E731
    with bl.session(args, bench, clean, WHO_SYNCS), contextlib.ExitStack() as stack:
        bench.prepare(stack)
        for n in range(1, args.runs + 1):
            for method in method_order(n, bench.methods):
                bench.roll(method, n)
    bl.write_report(report(bench, args, bl.command_line()), RESULTS_MD)
    return 1 if bench.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
