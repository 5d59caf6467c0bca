"""A store that gzips its answers although we ask for ``identity`` (issue 12, item 6).

requests inflated ``Content-Encoding: gzip`` bodies: a 2 MB gzip answer for an
index drove the client to 1 GB (the 1 GiB index bound reached for free). Bodies
are now read as sent: an encoded body is just invalid data, refused in one line
with memory to spare. The hostile store is a real HTTP server written here.
"""

from __future__ import annotations

import http.server
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests import test_store_bounds
from tests.servers_http import serving
from tests.test_store_bounds import assert_refused, extract

made = test_store_bounds.made  # a fixture
INFLATED = 512 << 20  # what an index bomb inflates to: past the memory bound of the run


def gzip_bomb(size: int) -> bytes:
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: the gzip format
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(size >> 20)) + packer.flush()


class GzipStore(http.server.ThreadingHTTPServer):
    """Answers every GET with the same gzip bomb, ``Content-Encoding: gzip``."""

    def __init__(self, bomb: bytes) -> None:
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(outer.bomb)))
                self.end_headers()
                self.wfile.write(outer.bomb)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.bomb = bomb

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def gzip_store(request) -> Iterator[GzipStore]:
    """The bomb inflates to ``request.param`` bytes."""
    with serving(GzipStore(gzip_bomb(request.param))) as server:
        yield server


@pytest.mark.parametrize("gzip_store", [INFLATED], indirect=True)
def test_a_gzip_bomb_as_index_is_invalid_data_with_memory_to_spare(
    gzip_store,
    made,
    tmp_path: Path,
):
    out = tmp_path / "out.bin"
    run = extract("-s", made.store, f"{gzip_store.url}/app.caibx", out)
    assert_refused(run, out, "invalid index")


# sent smaller than a chunk's bound, inflated far past it
@pytest.mark.parametrize("gzip_store", [128 << 20], indirect=True)  # sent: 128 KiB
def test_a_gzip_bomb_as_chunk_is_an_invalid_chunk(gzip_store, made, tmp_path: Path):
    out = tmp_path / "out.bin"
    run = extract("-n", "1", "-s", f"{gzip_store.url}/store", made.index, out)
    assert_refused(run, out, "invalid")
    assert "larger than any valid object" not in run.err  # read as sent, not inflated
