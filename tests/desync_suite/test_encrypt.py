"""Ports of desync's ``encrypt_test.go``: the two chunk ciphers, their file extension
(algorithm and key id), how encryption options are checked, and index stores that
refuse encryption, asked of the real servers (moto, the GCS emulator, sshd, our
index-server) through the CLI, which must then write nothing there.

desync compared its converters with an ``equal`` method (to share layers); ours have
none to compare: two ciphers are the same converter when each decrypts what the
other encrypts and they name their files alike, which is what is checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from desync_decl.errors import DesyncError
from desync_decl.formats.chunkfile import DecodeError
from desync_decl.server.indexes import IndexService
from desync_decl.stores.converters import Cipher
from desync_decl.stores.index_store import LocalIndexStore
from desync_decl.stores.options import StoreOptions
from tests import servers_http, servers_ssh
from tests.desync_suite.desync_keys import OTHER_KEY, TEST_KEY

pytest_plugins = ["tests.servers_cloud"]
serve = servers_http.serve  # the fixture
ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd  # the fixtures

ALGORITHMS = ["xchacha20-poly1305", "aes-256-gcm"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_encrypt_then_decrypt_and_only_with_the_right_key(algorithm):
    """TestEncryptDecrypt."""
    plain = bytes([1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
    encrypting, decrypting = Cipher(algorithm, TEST_KEY), Cipher(algorithm, TEST_KEY)
    sealed = encrypting.encrypt(plain)
    assert sealed != plain and plain not in sealed
    assert decrypting.decrypt(sealed) == plain
    with pytest.raises(DecodeError):
        Cipher(algorithm, OTHER_KEY).decrypt(sealed)
    with pytest.raises(DesyncError, match="256 bits"):
        Cipher(algorithm, b"too short".hex())


def test_ciphers_are_the_same_only_with_the_same_algorithm_and_key():
    """TestAES256GCMCompare."""
    first, second = Cipher("aes-256-gcm", TEST_KEY), Cipher("aes-256-gcm", TEST_KEY)
    assert first.extension == second.extension
    assert second.decrypt(first.encrypt(b"x")) == b"x" == first.decrypt(second.encrypt(b"x"))
    for other in (Cipher("aes-256-gcm", OTHER_KEY), Cipher("xchacha20-poly1305", TEST_KEY)):
        assert other.extension != first.extension
        with pytest.raises(DecodeError):
            other.decrypt(first.encrypt(b"x"))
        with pytest.raises(DecodeError):
            first.decrypt(other.encrypt(b"x"))


def test_the_extension_names_the_algorithm_and_a_handle_of_the_key():
    """TestAES256GCMExtension: desync's value for its test key, every time."""
    assert Cipher("aes-256-gcm", TEST_KEY).extension == ".aes-256-gcm-50d64035"
    assert Cipher("aes-256-gcm", TEST_KEY).extension == ".aes-256-gcm-50d64035"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"encryption_key": TEST_KEY}, "encryption is not enabled"),
        ({"encryption_algorithm": "aes-256-gcm"}, "encryption is not enabled"),
        ({"encryption": True}, "no key"),
        ({"encryption": True, "encryption_key": "not-hex"}, "64 hex characters"),
        (
            {"encryption": True, "encryption_key": TEST_KEY, "encryption_algorithm": "rot13"},
            "unknown encryption algorithm 'rot13'",
        ),
        ({"encryption": True, "encryption_key": TEST_KEY}, None),
    ],
    ids=["key without encryption flag", "algorithm without encryption flag",
         "encryption without key", "invalid key encoding", "unsupported algorithm", "valid"],
)  # fmt: skip
def test_encryption_options_are_checked_before_any_chunk_is_touched(options, message, monkeypatch):
    """TestStorageConvertersValidation (our messages say the same in other words)."""
    monkeypatch.delenv("DESYNC_ENCRYPTION_KEY", raising=False)
    opts = StoreOptions(**options)
    if message is None:
        cipher = opts.checked("test").storage_format().cipher
        assert cipher is not None and cipher.algorithm == "xchacha20-poly1305"
        return
    with pytest.raises(DesyncError, match=message):
        opts.checked("test").storage_format()


# --- TestIndexStoresRejectEncryption ----------------------------------------------------


# an index store's location on a real server, and what lists the objects written there
Where = tuple[str, Callable[[], list[str]]]


def files_in(folder: Path) -> Callable[[], list[str]]:
    folder.mkdir()
    return lambda: sorted(p.name for p in folder.iterdir())


def sftp_indexes(request, tmp_path: Path) -> Where:
    sshd = request.getfixturevalue("sshd")
    return sshd.url("sftp", tmp_path / "idx"), files_in(tmp_path / "idx")


def http_indexes(request, tmp_path: Path) -> Where:
    listing = files_in(tmp_path / "idx")
    service = IndexService(LocalIndexStore(tmp_path / "idx"), writable=True)
    return request.getfixturevalue("serve")(service).url.rstrip("/"), listing


def s3_indexes(request, tmp_path: Path) -> Where:
    moto, bucket = request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket")
    listing = moto.admin.list_objects_v2
    return (
        f"s3+http://{moto.hostport}/{bucket}/indexes",
        lambda: [o["Key"] for o in listing(Bucket=bucket).get("Contents", [])],
    )


def gs_indexes(request, tmp_path: Path) -> Where:
    gcs, bucket = request.getfixturevalue("gcs_server"), request.getfixturevalue("gcs_bucket")
    return f"gs://{bucket}/indexes", lambda: [b.name for b in gcs.client().list_blobs(bucket)]


@pytest.mark.parametrize("where", [sftp_indexes, http_indexes, s3_indexes, gs_indexes],
                         ids=["sftp", "http", "s3", "gs"])  # fmt: skip
def test_an_index_store_with_encryption_configured_refuses_and_writes_nothing(
    request, cli, tmp_path, where
):
    """TestIndexStoresRejectEncryption: a config entry that matches a location used for
    indexes must not let anyone think the indexes are stored encrypted."""
    location, listing = where(request, tmp_path)
    config = tmp_path / "config.json"
    entry = {"encryption": True, "encryption-key": TEST_KEY}
    config.write_text(json.dumps({"store-options": {location: entry}}))
    blob = tmp_path / "blob"
    blob.write_bytes(b"some data" * 1000)
    r = cli("--config", config, "make", f"{location}/new.caibx", blob)
    assert r.code == 1 and "cannot be encrypted" in r.err, r.err
    assert listing() == []
