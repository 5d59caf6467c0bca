"""desync's ``cmd/desync/list_test.go``: ``list-chunks`` prints an index's chunk ids.

desync's test checks that there is output and that every line is a chunk id; ours
also checks that they are the index's chunks, one line each, in its order.
"""

from __future__ import annotations

from desync_decl.formats.digest import parse_id
from desync_decl.stores.location import Opener


def test_list_command(cli, cmd_data):
    """TestListCommand."""
    r = cli("list-chunks", cmd_data / "blob1.caibx")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines
    ids = [parse_id(line, f"line {n}") for n, line in enumerate(lines, 1)]
    assert ids == [c.id for c in Opener().read_index(str(cmd_data / "blob1.caibx"))]
