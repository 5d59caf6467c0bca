"""A store that is not there is one clear line, never "chunk missing" (issue 19, item
4) on S3 (no bucket: moto), GCS (no bucket: the emulator) and HTTP (a base where
nothing answers: nginx), through the CLI as a user meets it. A store that is there
and lacks the chunk still says "missing". (OCI: ``tests/test_store_oci.py``.)
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest

from desync_decl.formats.chunk import Chunk
from desync_decl.formats.digest import Digest
from desync_decl.ops.make import make
from desync_decl.stores.local import LocalStore
from tests import servers_http

pytest_plugins = ["tests.servers_cloud"]
nginx = servers_http.nginx  # the fixture


@pytest.fixture
def index(tmp_path) -> Path:
    """An index of a small blob whose chunks are in no store."""
    source = tmp_path / "blob"
    source.write_bytes(random.Random(1).randbytes(200_000))
    path = tmp_path / "blob.caibx"
    path.write_bytes(make(source).index.encode())
    return path


def one_clear_line(result, *expected: str) -> None:
    assert result.code == 1
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "missing" not in result.err and "Traceback" not in result.err
    for text in expected:
        assert text in lines[0], lines[0]


def test_s3_without_its_bucket(cli, tmp_path, index, moto_server, s3_bucket):
    location = f"s3+http://{moto_server.hostport}/no-such-bucket/store"
    result = cli("extract", "-e", "1", "-s", location, index, tmp_path / "out")
    one_clear_line(result, "bucket no-such-bucket does not exist")


def test_gcs_without_its_bucket(cli, tmp_path, index, gcs_bucket, caplog):
    # the emulator runs in this process and logs the 404 through the root logger, which
    # the CLI shows while it runs: the emulator's words, not ours
    caplog.set_level(logging.CRITICAL, logger="gcp_storage_emulator")
    result = cli("extract", "-e", "1", "-s", "gs://no-such-bucket/store", index, tmp_path / "out")
    one_clear_line(result, "bucket no-such-bucket does not exist")


def test_http_base_where_nothing_answers(cli, tmp_path, index, nginx):
    location = nginx.url + "no/such/store"
    result = cli("extract", "-e", "1", "-s", location, index, tmp_path / "out")
    one_clear_line(result, f"{location}: no store there", "404 Not Found; check the URL")

    indexes = cli("extract", "-e", "1", "-s", location, location + "/blob.caibx", tmp_path / "o")
    one_clear_line(indexes, f"{location}/: no store there")


def test_http_store_that_is_there_still_says_missing(cli, tmp_path, index, nginx):
    """A store directory that exists (with chunks, not these) answers at its base: its
    404s are the chunks'. Its plan's way (HEAD, ``has_chunk``) is unchanged too."""
    chunk = Chunk(Digest.SHA512_256.hash(b"another"), plain=b"another")
    LocalStore(nginx.root / "store", create=True).store_chunk(chunk)
    result = cli("extract", "-e", "1", "-s", nginx.url + "store", index, tmp_path / "out")
    assert result.code == 1
    assert "missing from" in result.err and "no store there" not in result.err
