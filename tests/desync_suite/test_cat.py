"""Port of desync's ``cmd/desync/cat_test.go``: ``cat`` of blob1 from its store, whole
and as byte ranges, to stdout."""

from __future__ import annotations

import pytest

# TestCatCommand: (sub-case, extra arguments, offset, length; 0 = to the end)
CASES = [
    ("cat all data", [], 0, 0),
    ("cat with offset", ["-o", "1024"], 1024, 0),
    ("cat with offset and length", ["-o", "1024", "-l", "2048"], 1024, 2048),
]


@pytest.mark.parametrize(
    ("extra", "offset", "length"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_cat_command(cli, cmd_data, extra, offset, length):
    """TestCatCommand: stdout is exactly the requested range of blob1."""
    blob = (cmd_data / "blob1").read_bytes()
    r = cli("cat", "--store", cmd_data / "blob1.store", *extra, cmd_data / "blob1.caibx")
    assert r.code == 0, r.err
    assert r.data == blob[offset : offset + length if length else None]
