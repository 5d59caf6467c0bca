"""A broken or hostile store cannot fill the client's memory (issue 12, item 6).

Each read brings at most the largest stored form a chunk of the index's
largest size can take (zstd's bound, plus the encryption overhead), and
decompression stops at that size. The attacks are real servers: a socket server in this file that
answers every chunk with an endless body (speaking plain HTTP, S3, GCS and the
OCI registry API), an nginx serving zstd bombs, moto, the GCS emulator and
sshd holding oversized objects, and a far side of the casync protocol that
announces a 16 MiB chunk. ``extract`` runs as its own process, which reports
its own peak memory (VmHWM) as it exits.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import zstandard

from desync_decl.formats import index as index_format
from desync_decl.stores import casync_protocol as proto
from desync_decl.stores.base import StoreError
from desync_decl.stores.http import HttpObjects
from desync_decl.stores.options import StoreOptions
from tests import servers_cloud, servers_http, servers_ssh
from tests.peak_rss import Run, run_measured
from tests.servers_ssh import SshServer

moto_server, s3_bucket = servers_cloud.moto_server, servers_cloud.s3_bucket
cloud_env, gcs_server, gcs_bucket = (
    servers_cloud.cloud_env,
    servers_cloud.gcs_server,
    servers_cloud.gcs_bucket,
)
ssh_server, sshd, nginx = servers_ssh.ssh_server, servers_ssh.sshd, servers_http.nginx

PEAK_LIMIT_MIB = 300  # an extraction of a 1 MiB blob stays far below this
HOSTILE_BODY = 640 << 20  # what the hostile server sends for one chunk, if let
OVERSIZED = 8 << 20  # an object under a chunk's name, far beyond any 256 KiB chunk
SPARSE_OVERSIZED = 256 << 20  # a sparse file on the SFTP server (no disk used)
MAX_CHUNK = 256 << 10  # the index's maximum chunk size (make -m 64:128:256)


@dataclass
class Made:
    blob: Path
    index: Path
    store: Path
    keys: list[str]  # every chunk's key in a store: xxxx/<id>.cacnk


@pytest.fixture
def made(cli, tmp_path) -> Made:
    """A 1 MiB blob chopped into 64-256 KiB chunks, its index and local store."""
    blob, index, store = tmp_path / "blob.bin", tmp_path / "blob.caibx", tmp_path / "store"
    blob.write_bytes(os.urandom(1 << 20))
    result = cli("make", "-m", f"64:128:{MAX_CHUNK >> 10}", "-s", store, index, blob)
    assert result.code == 0, result.err
    ids = [c.id.hex() for c in index_format.decode(index.read_bytes(), str(index))]
    return Made(blob, index, store, [f"{h[:4]}/{h}.cacnk" for h in dict.fromkeys(ids)])


def extract(*argv: object, env: dict[str, str] | None = None) -> Run:
    """``desync-decl extract ARGV`` as a child process: exit status, stderr, peak RSS."""
    return run_measured("extract", *argv, env=env)


def assert_refused(run: Run, out: Path, *expected: str) -> None:
    """One error line naming what it should, no traceback, no output, memory small."""
    lines = run.err.strip().splitlines()
    assert run.peak_mib < PEAK_LIMIT_MIB, f"peak RSS {run.peak_mib:.0f} MiB; {run.err}"
    assert run.code == 1, run.err
    assert len(lines) == 1 and lines[0].startswith("desync-decl: error: "), run.err
    for text in expected:
        assert text in lines[0], run.err
    assert not out.exists()
    assert [p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")] == []


# --- a hostile server: every body endless ---------------------------------------------


class EndlessServer:
    """Answers every GET with ``HOSTILE_BODY`` bytes of zeros (Content-Length says so)
    and keeps writing until the client hangs up. An OCI manifest request gets a
    valid chunk manifest naming a blob of that size, so the client asks for it."""

    def __init__(self) -> None:
        self.sent: list[int] = []

        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                if "/manifests/" in self.path:
                    return self.manifest()
                self.send_response(200)
                self.send_header("Content-Length", str(HOSTILE_BODY))
                self.end_headers()
                block, sent = bytes(1 << 20), 0
                try:
                    while sent < HOSTILE_BODY:
                        self.wfile.write(block)
                        sent += len(block)
                except OSError:
                    pass  # the client stopped reading: what it should do
                finally:
                    server.sent.append(sent)
                    self.close_connection = True

            def manifest(self) -> None:
                layer = {"mediaType": "application/octet-stream", "size": HOSTILE_BODY}
                layer["digest"] = "sha256:" + "0" * 64
                body = json.dumps(
                    {
                        "schemaVersion": 2,
                        "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "artifactType": "application/vnd.desync.chunk.v1",
                        "layers": [layer],
                    }
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/vnd.oci.image.manifest.v1+json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Quiet(http.server.ThreadingHTTPServer):
            daemon_threads = True

            def handle_error(self, request: object, client_address: object) -> None:
                pass

        self.httpd = Quiet(("127.0.0.1", 0), Handler)
        self.hostport = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def endless() -> Iterator[EndlessServer]:
    server = EndlessServer()
    yield server
    server.close()


@pytest.mark.parametrize("scheme", ["http", "s3+http", "gs", "oci+http"])
def test_an_endless_chunk_body_is_refused_with_memory_to_spare(
    scheme, made, endless, cloud_env, tmp_path
):
    """The client reads about a chunk's worth, then says the store is broken."""
    env = {"S3_ACCESS_KEY": "k", "S3_SECRET_KEY": "s"}
    if scheme == "gs":
        env["STORAGE_EMULATOR_HOST"] = f"http://{endless.hostport}"
        location = "gs://bucket/store"
    else:
        location = f"{scheme}://{endless.hostport}/store"
    out = tmp_path / "out.bin"
    run = extract("-n", "2", "-e", "1", "-s", location, made.index, out, env=env)
    assert_refused(run, out, "more than")
    assert "invalid" not in run.err and "missing" not in run.err  # a failing store


def test_a_refused_body_does_not_poison_the_connection_pool(tmp_path):
    """With a pool of one, the request after a refused 4 MiB body reads its own answer,
    not the rest of the refused body."""
    big, small = os.urandom(4 << 20), os.urandom(1000)
    server = servers_http.ScriptedServer(
        [servers_http.Step(body=big), servers_http.Step(body=small)]
    )
    objects = HttpObjects(server.url, StoreOptions(n=1, error_retry=1))
    try:
        with pytest.raises(StoreError, match="more than 65536 bytes"):
            objects.read("aaaa/big", 64 << 10)
        assert objects.read("bbbb/small", 64 << 10) == small
    finally:
        objects.close()
        server.close()


# --- zstd bombs from a real web server ---------------------------------------------


def _streaming_bomb() -> bytes:
    """1 GiB of zeros as one zstd frame without a content size (about 32 KiB)."""
    c = zstandard.ZstdCompressor(level=1, write_content_size=False).compressobj()
    return b"".join(c.compress(bytes(1 << 20)) for _ in range(1024)) + c.flush()


def _sized_bomb() -> bytes:
    """100 MiB of zeros whose frame header says so: less than casync's 128 MiB limit,
    far more than a chunk of this index."""
    return zstandard.ZstdCompressor(level=1, write_content_size=True).compress(bytes(100 << 20))


@pytest.mark.parametrize(
    ("bomb", "said"),
    [
        (_streaming_bomb, r"decompresses to more than (\d+) bytes"),
        (_sized_bomb, r"frame declares \d+ bytes, more than (\d+)"),
    ],
    ids=["streaming", "sized"],
)
def test_a_zstd_bomb_is_an_invalid_chunk_decoded_no_further_than_the_index_allows(
    bomb, said, made, nginx, tmp_path
):
    """Stopped at the index's largest chunk size (or refused from the frame header),
    not at casync's 128 MiB."""
    data = bomb()
    for key in made.keys:
        (nginx.root / key).parent.mkdir(parents=True, exist_ok=True)
        (nginx.root / key).write_bytes(data)
    out = tmp_path / "out.bin"
    run = extract("-n", "4", "-s", nginx.url, made.index, out)
    assert_refused(run, out, "is invalid")
    limit = re.search(said, run.err)
    assert limit is not None and int(limit.group(1)) <= MAX_CHUNK, run.err


# --- oversized objects in real stores ----------------------------------------------


def test_an_oversized_object_in_s3_is_a_failing_store(made, moto_server, s3_bucket, tmp_path):
    admin = moto_server.admin
    for key in made.keys:
        admin.put_object(Bucket=s3_bucket, Key=f"store/{key}", Body=(made.store / key).read_bytes())
    key = made.keys[0]
    admin.put_object(Bucket=s3_bucket, Key=f"store/{key}", Body=os.urandom(OVERSIZED))
    out = tmp_path / "out.bin"
    location = f"s3+http://{moto_server.hostport}/{s3_bucket}/store"
    run = extract("-s", location, made.index, out)
    assert_refused(run, out, "more than", key)


def test_an_oversized_object_in_gcs_is_a_failing_store(made, gcs_server, gcs_bucket, tmp_path):
    bucket = gcs_server.client().bucket(gcs_bucket)
    key = made.keys[0]
    bucket.blob(f"store/{key}").upload_from_string(os.urandom(OVERSIZED))
    out = tmp_path / "out.bin"
    env = {"STORAGE_EMULATOR_HOST": gcs_server.endpoint}
    run = extract("-s", f"gs://{gcs_bucket}/store", made.index, out, env=env)
    assert_refused(run, out, "more than", key)


def test_an_oversized_file_on_sftp_is_refused_by_its_size(made, sshd: SshServer, tmp_path):
    """A sparse 512 MiB file under a chunk's name: refused from its stat, never read."""
    key = made.keys[0]
    with open(made.store / key, "r+b") as f:
        f.truncate(SPARSE_OVERSIZED)
    out = tmp_path / "out.bin"
    run = extract("-s", sshd.url("sftp", made.store), made.index, out, env=sshd.env())
    assert_refused(run, out, "more than", key)


# --- the casync protocol over ssh --------------------------------------------------

_OVERSIZED_ANSWER = f"""#!{sys.executable}
# A far side of casync's protocol answering each request with a CHUNK message of
# the protocol's maximum size (16 MiB): the right id, then garbage.
import struct, sys
read, write = sys.stdin.buffer.read, sys.stdout.buffer.write
HELLO, CHUNK, MAX = {proto.HELLO:#x}, {proto.CHUNK:#x}, {proto.MAX_SIZE}
def message():
    size, kind = struct.unpack("<QQ", read(16))
    return kind, read(size - 16)
message()
write(struct.pack("<QQQ", 24, HELLO, 1)); sys.stdout.flush()
kind, body = message()
write(struct.pack("<QQQ", MAX, CHUNK, 1) + body[8:40] + bytes(MAX - 56))
sys.stdout.flush()
"""


def test_a_chunk_message_larger_than_the_chunk_is_a_protocol_error(
    made, sshd: SshServer, cli, tmp_path, monkeypatch
):
    far_side = tmp_path / "oversized-pull"
    far_side.write_text(_OVERSIZED_ANSWER)
    far_side.chmod(0o755)
    monkeypatch.setenv("CASYNC_REMOTE_PATH", str(far_side))
    out = tmp_path / "out.bin"
    result = cli("extract", "-e", "1", "-s", sshd.url("ssh", made.store), made.index, out)
    assert result.code == 1
    assert "protocol error" in result.err and f"message of {proto.MAX_SIZE} bytes" in result.err
    assert not out.exists()
