"""Ports of desync's ``cmd/desync/verify_test.go`` and ``verifyindex_test.go``:
``verify`` of a store holding an invalid chunk (with and without ``-r``) and
``verify-index`` of blob1 and blob2 against their indexes and against each other's.

One difference, kept on purpose (README, compatibility): desync's ``verify`` exits 0
after reporting an invalid chunk, ours exits 1, so a script or a fleet's health check
sees the damage without parsing the report.
"""

from __future__ import annotations

INVALID_ID = "1234567890000000000000000000000000000000000000000000000000000000"


def test_verify_command(cli, cmd_data, tmp_path):
    """TestVerifyCommand: a store chopped from blob1 plus a chunk file of garbage.
    verify names the bad chunk and leaves it; verify -r names it and removes it; the
    good chunks stay either way."""
    store = tmp_path / "store"
    store.mkdir()
    r = cli("chop", "-s", store, cmd_data / "blob1.caibx", cmd_data / "blob1")
    assert r.code == 0, r.err
    good = sorted(p.name for p in store.rglob("*.cacnk"))
    invalid = store / "1234" / f"{INVALID_ID}.cacnk"
    invalid.parent.mkdir()
    invalid.write_bytes(b"invalid")

    r = cli("verify", "-s", store)
    assert r.code == 1  # desync: 0 (see the module's docstring)
    assert INVALID_ID in r.err
    assert invalid.exists()

    r = cli("verify", "-s", store, "-r")
    assert r.code == 1  # desync: 0
    assert INVALID_ID in r.err
    assert not invalid.exists()
    assert sorted(p.name for p in store.rglob("*.cacnk")) == good

    r = cli("verify", "-s", store)  # nothing invalid is left
    assert r.code == 0, r.err


def test_verify_index_command(cli, cmd_data):
    """TestVerifyIndexCommand: blob1 and blob2 match their indexes; blob1 does not
    match blob2's index."""
    for name in ("blob1", "blob2"):
        r = cli("verify-index", cmd_data / f"{name}.caibx", cmd_data / name)
        assert r.code == 0, r.err
    r = cli("verify-index", cmd_data / "blob2.caibx", cmd_data / "blob1")
    assert r.code == 1
    assert len(r.err.splitlines()) == 1 and str(cmd_data / "blob1") in r.err, r.err
