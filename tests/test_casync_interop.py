"""What we write, the real casync reads, and the other way round (random inputs and
chunk sizes): ``casync make`` -> our ``extract``, our ``make`` -> ``casync extract``,
and both ``make``s write byte-identical indexes."""

from __future__ import annotations

import io
import random
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.cli.console import Console
from desync_decl.cli.main import main


def run_ours(*argv: object) -> str:
    out, err = io.StringIO(), io.StringIO()
    code = main([str(a) for a in argv], Console(out=out, err=err, binary_out=io.BytesIO()))
    assert code == 0, err.getvalue()
    return out.getvalue()


def run_casync(casync: str, *argv: object) -> str:
    done = subprocess.run([casync, *map(str, argv)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@st.composite
def inputs(draw) -> bytes:
    """Random bytes with some structure: repeats and zero runs, as real images have."""
    rng = random.Random(draw(st.integers(0, 2**32)))
    parts = []
    for _ in range(draw(st.integers(0, 6))):
        kind = draw(st.sampled_from(["rand", "zeros", "repeat"]))
        n = draw(st.integers(1, 400_000))
        if kind == "zeros":
            parts.append(bytes(n))
        elif kind == "repeat" and parts:
            parts.append(parts[rng.randrange(len(parts))])
        else:
            parts.append(rng.randbytes(n))
    return b"".join(parts)


@st.composite
def chunk_sizes(draw) -> tuple[int, int, int]:
    if draw(st.booleans()):
        avg = draw(st.sampled_from([4096, 16384, 65536]))
        return avg // 4, avg, avg * 4
    cmin = draw(st.integers(1, 20_000))
    cavg = draw(st.integers(cmin, 40_000))
    cmax = draw(st.integers(max(cavg, 48), 160_000))
    return cmin, cavg, cmax


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=inputs(), sizes=chunk_sizes(), sha256=st.booleans())
def test_round_trips_with_real_casync(casync, data, sizes, sha256):
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        source = d / "input"
        source.write_bytes(data)
        cs = ":".join(map(str, sizes))
        digest = ["--digest=sha256"] if sha256 else []
        ours_digest = ["--digest", "sha256"] if sha256 else []

        casync_out = run_casync(
            casync,
            "make",
            *digest,
            f"--chunk-size={cs}",
            f"--store={d / 'cstore'}",
            d / "c.caibx",
            source,
        )
        ours_out = run_ours(
            *ours_digest,
            "make",
            "--blob-digest",
            "-s",
            d / "ostore",
            "-m",
            ":".join(f"{v}B" for v in sizes),
            d / "o.caibx",
            source,
        )
        assert (d / "o.caibx").read_bytes() == (d / "c.caibx").read_bytes()
        assert ours_out == casync_out  # both print the blob digest

        run_ours("extract", "-s", d / "ostore", d / "c.caibx", d / "from_our_store")
        assert (d / "from_our_store").read_bytes() == data
        if data:  # casync creates no store at all for an empty blob
            run_ours("extract", "-s", d / "cstore", d / "c.caibx", d / "from_casync_store")
            assert (d / "from_casync_store").read_bytes() == data
            run_casync(casync, "extract", f"--store={d / 'ostore'}", d / "o.caibx", d / "by_casync")
            assert (d / "by_casync").read_bytes() == data


@pytest.mark.parametrize("compression", ["xz", "gzip", "zstd"])
def test_we_extract_from_casync_stores_of_every_compression(casync, tmp_path, compression):
    data = random.Random(3).randbytes(700_000) + bytes(300_000)
    source = tmp_path / "input"
    source.write_bytes(data)
    store = tmp_path / "store"
    run_casync(
        casync,
        "make",
        f"--compression={compression}",
        "--chunk-size=4096:16384:65536",
        f"--store={store}",
        tmp_path / "x.caibx",
        source,
    )
    run_ours("extract", "-s", store, tmp_path / "x.caibx", tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == data
