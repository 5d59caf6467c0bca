"""Signatures travel with indexes: ``<index>.sig`` in every index store, through the
index-server, and into a mirror made by ``cache --indexes-to``.

Against the suite's real servers (a local directory, our index-server as a process
with ``-w``, moto S3, the GCS emulator, the private sshd for SFTP), with real
signatures made by ``ssh-keygen -Y sign -n desync-decl`` and checked by
``ssh-keygen -Y check-novalidate``: what a store gives back must be the exact bytes
the signature was made over, or it would not verify.
"""

from __future__ import annotations

import json
import os
import random
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from desync_decl.errors import DesyncError
from desync_decl.formats import index as index_format
from desync_decl.formats.chunk_sizes import ChunkSizes
from desync_decl.formats.digest import Digest
from desync_decl.formats.index import Index, blob_flags
from desync_decl.fsutil import current_umask
from desync_decl.server.indexes import IndexService
from desync_decl.signing import MAX_SIGNATURE_SIZE
from desync_decl.stores import http as http_store
from desync_decl.stores.base import StoreError
from desync_decl.stores.index_store import IndexStore, LocalIndexStore
from desync_decl.stores.location import Opener
from desync_decl.stores.options import StoreOptions
from tests import servers_http, servers_ssh, ssh_keys, test_root_safety
from tests.servers_http import Step
from tests.servers_oci import fresh_repo, pull_artifact
from tests.ssh_keys import Key, OpenSsh, allowed_signers
from tests.test_root_safety import PLANT_TARGET, SECRET, as_nobody
from tests.test_servers import ask, connect

pytest_plugins = ["tests.servers_cloud"]
serve, scripted, cli_server = servers_http.serve, servers_http.scripted, servers_http.cli_server
ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd
shared = test_root_safety.shared  # a directory owned by nobody
ssh = ssh_keys.ssh  # ssh-keygen on files in tmp_path/ssh

as_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="the attack needs root (the victim) and nobody (the attacker)"
)


# --- real signatures ----------------------------------------------------------------------


@dataclass
class Publisher:
    """An Ed25519 key made by ssh-keygen, signing as ``ssh-keygen -Y sign -n
    desync-decl`` does, and OpenSSH's ``-Y verify`` against an allowed_signers file
    that trusts it."""

    ssh: OpenSsh
    key: Key
    allowed: Path

    def sign(self, data: bytes) -> bytes:
        path = self.ssh.root / "signed-data"
        path.write_bytes(data)
        return self.ssh.sign(self.key.path, path).read_bytes()

    def verifies(self, data: bytes, signature: bytes) -> bool:
        sig = self.ssh.root / "checked.sig"
        sig.write_bytes(signature)
        return self.ssh.verify(self.allowed, "publisher", data, sig).code == 0


@pytest.fixture
def publisher(ssh: OpenSsh) -> Publisher:
    key = ssh.key("publisher")
    allowed = allowed_signers(ssh.root / "allowed_signers", f"publisher {key.public}")
    return Publisher(ssh, key, allowed)


def an_index(seed: int, chunks: int = 20) -> Index:
    rng = random.Random(seed)
    return Index.from_chunks(
        blob_flags(Digest.SHA512_256),
        ChunkSizes(16, 64, 256),
        [(rng.randint(16, 256), rng.randbytes(32)) for _ in range(chunks)],
    )


# --- the index stores ---------------------------------------------------------------------


@dataclass
class Place:
    """An index store: its location, and what its backend holds under a key (None:
    nothing), read behind the store's back."""

    location: str
    raw: Callable[[str], bytes | None]

    def at(self, name: str) -> str:
        """The location of the index ``name`` in it."""
        if "://" not in self.location:
            return os.path.join(self.location, name)
        return self.location.rstrip("/") + "/" + name


def file_or_none(path: Path) -> bytes | None:
    return path.read_bytes() if path.exists() else None


def local_place(directory: Path) -> Place:
    directory.mkdir(exist_ok=True)
    return Place(str(directory), lambda key: file_or_none(directory / key))


def s3_place(moto_server, bucket: str, prefix: str = "indexes") -> Place:
    admin = moto_server.admin

    def raw(key: str) -> bytes | None:
        try:
            return admin.get_object(Bucket=bucket, Key=f"{prefix}/{key}")["Body"].read()
        except admin.exceptions.NoSuchKey:
            return None

    return Place(f"s3+http://{moto_server.hostport}/{bucket}/{prefix}/", raw)


STORES = ["local", "index-server", "s3", "gcs", "sftp", "oci"]


@pytest.fixture(params=STORES)
def place(request, tmp_path) -> Place:
    kind = request.param
    if kind == "local":
        return local_place(tmp_path / "idx")
    if kind == "index-server":
        served = local_place(tmp_path / "served")
        server = request.getfixturevalue("cli_server")("index-server", "-w", "-s", served.location)
        return Place(server.url, served.raw)
    if kind == "s3":
        return s3_place(
            request.getfixturevalue("moto_server"), request.getfixturevalue("s3_bucket")
        )
    if kind == "gcs":
        gcs_server = request.getfixturevalue("gcs_server")
        bucket = gcs_server.client().bucket(request.getfixturevalue("gcs_bucket"))

        def raw(key: str) -> bytes | None:
            blob = bucket.get_blob(f"indexes/{key}")
            return None if blob is None else blob.download_as_bytes()

        return Place(f"gs://{bucket.name}/indexes/", raw)
    if kind == "oci":  # an artifact per index and per signature, tagged with the name
        registry, repo = request.getfixturevalue("registry"), fresh_repo()

        def pulled(key: str) -> bytes | None:
            found = pull_artifact(registry.url, repo, key)
            return None if found is None else found[1]

        return Place(registry.location(repo), pulled)
    assert kind == "sftp"
    directory = local_place(tmp_path / "sftp")
    return Place(request.getfixturevalue("sshd").url("sftp", directory.location), directory.raw)


def test_a_signature_written_through_each_index_store_is_read_back_beside_its_index(
    place, publisher
):
    opener = Opener()
    index = an_index(1)
    data = index.encode()
    signature = publisher.sign(data)
    opener.write_index(place.at("x.caibx"), index)
    opener.write_signature(place.at("x.caibx"), signature)

    assert place.raw("x.caibx.sig") == signature  # beside its index, as written
    signed = opener.read_signed_index(place.at("x.caibx"))
    assert (signed.data, signed.signature, signed.index) == (data, signature, index)
    assert publisher.verifies(signed.data, signed.signature)
    assert "x.caibx" in signed.where

    opener.write_index(place.at("unsigned.caibx"), an_index(2))
    assert opener.read_signed_index(place.at("unsigned.caibx")).signature is None
    store = opener.index_store(place.location)
    try:
        assert store.get_signature("x.caibx") == signature
        assert store.get_signature("unsigned.caibx") is None
        assert store.get_signed_index("x.caibx").data == data
        assert store.get_index_bytes("x.caibx") == data
    finally:
        store.close()


def test_index_bytes_are_stored_and_read_back_exactly(place):
    """``store_index_bytes`` writes what it is given, and a read gives it back: what a
    mirror and the index-server's uploads rely on."""
    data = an_index(3).encode()
    store = Opener().index_store(place.location)
    try:
        store.store_index_bytes("y.caibx", data)
        assert store.get_index_bytes("y.caibx") == data
    finally:
        store.close()
    assert place.raw("y.caibx") == data


# --- failing and hostile stores -----------------------------------------------------------


def test_a_failing_http_store_is_a_store_error_never_no_signature(scripted):
    server = scripted(Step(403, b"forbidden"))
    store = http_store.open_index_store(server.url, StoreOptions(error_retry=1), Opener())
    with pytest.raises(StoreError, match="403"):
        store.get_signature("x.caibx")
    assert server.requests[0][:2] == ("GET", "/x.caibx.sig")


def test_an_oversized_signature_in_an_object_store_is_refused_after_its_bound(
    moto_server, s3_bucket
):
    place = s3_place(moto_server, s3_bucket)
    moto_server.admin.put_object(
        Bucket=s3_bucket, Key="indexes/x.caibx.sig", Body=b"x" * (MAX_SIGNATURE_SIZE + 1)
    )
    store = Opener().index_store(place.location)
    with pytest.raises(StoreError, match=f"more than {MAX_SIGNATURE_SIZE} bytes"):
        store.get_signature("x.caibx")


def test_a_vanished_bucket_is_a_store_error_never_no_signature(moto_server, s3_bucket):
    place = s3_place(moto_server, s3_bucket)
    moto_server.admin.delete_bucket(Bucket=s3_bucket)
    with pytest.raises(StoreError, match=f"bucket {s3_bucket} does not exist"):
        Opener().index_store(place.location).get_signature("x.caibx")


@pytest.mark.parametrize("kind", ["directory", "oversized", "fifo"])
def test_an_unreadable_local_signature_is_an_error_never_no_signature(tmp_path, kind):
    (tmp_path / "x.caibx").write_bytes(an_index(4).encode())
    sig = tmp_path / "x.caibx.sig"
    if kind == "directory":
        sig.mkdir()
    elif kind == "oversized":
        sig.write_bytes(b"x" * (MAX_SIGNATURE_SIZE + 1))
    else:
        os.mkfifo(sig)  # would block a reader that opened it blocking
    with pytest.raises(StoreError):
        LocalIndexStore(tmp_path).get_signature("x.caibx")
    with pytest.raises(DesyncError):
        Opener().read_signed_index(str(tmp_path / "x.caibx"))


def test_a_local_signature_is_written_atomically_beside_the_index(tmp_path, publisher):
    index = tmp_path / "pub" / "x.caibx"
    index.parent.mkdir()
    Opener().write_index(str(index), an_index(5))
    signature = publisher.sign(index.read_bytes())
    Opener().write_signature(str(index), b"an older signature")
    Opener().write_signature(str(index), signature)
    assert sorted(p.name for p in index.parent.iterdir()) == ["x.caibx", "x.caibx.sig"]
    sig = index.parent / "x.caibx.sig"
    assert sig.read_bytes() == signature
    assert stat.S_IMODE(sig.stat().st_mode) == 0o644 & ~current_umask()
    LocalIndexStore(index.parent).store_signature("x.caibx", b"through the store")
    assert sig.read_bytes() == b"through the store"
    assert sorted(p.name for p in index.parent.iterdir()) == ["x.caibx", "x.caibx.sig"]


@as_root
def test_a_signature_is_never_written_through_a_planted_directory(tmp_path, shared):
    rootonly = tmp_path / "root-only"
    rootonly.mkdir(mode=0o700)
    assert as_nobody(PLANT_TARGET, shared / "sub", rootonly).returncode == 0
    with pytest.raises(DesyncError, match="a symlink in a directory others can write"):
        Opener().write_signature(str(shared / "sub" / "x.caibx"), b"sig")
    assert list(rootonly.iterdir()) == []


@as_root
def test_a_planted_signature_link_to_a_root_only_file_is_not_served(tmp_path, shared, serve):
    """nobody links ``x.caibx.sig`` in the index directory it can write to a root-only
    file: the index-server (root) must not read the secret out to any client."""
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET)
    secret.chmod(0o600)
    assert as_nobody(PLANT_TARGET, shared / "x.caibx.sig", secret).returncode == 0
    reports: list[str] = []
    url = serve(IndexService(LocalIndexStore(shared), report=reports.append)).url
    status, body, _ = ask(url, "GET", "/x.caibx.sig")
    assert status == 500 and SECRET not in body
    assert any("a symlink in a directory others can write" in r for r in reports)


# --- the index-server ---------------------------------------------------------------------


@pytest.fixture(params=["local", "s3"])
def backing(request, tmp_path) -> tuple[IndexStore, Place]:
    """What an index-server serves: a local directory, or an S3 index store."""
    if request.param == "local":
        place = local_place(tmp_path / "served")
    else:
        moto_server = request.getfixturevalue("moto_server")
        place = s3_place(moto_server, request.getfixturevalue("s3_bucket"))
    return Opener().index_store(place.location), place


def test_the_index_server_takes_and_serves_a_signature_beside_the_index(backing, serve, publisher):
    """An index and its signature uploaded, stored as sent, served back as stored (from
    a remote store too: never a re-encoding of the index, which for every index
    ``decode`` accepts would be the same bytes anyway, tests/test_fuzz_index.py)."""
    store, place = backing
    data = an_index(6, chunks=5000).encode()
    signature = publisher.sign(data)
    url = serve(IndexService(store, writable=True, authorization="Bearer t")).url
    auth = {"Authorization": "Bearer t"}

    assert ask(url, "PUT", "/x.caibx", data, auth)[0] == 200
    assert place.raw("x.caibx") == data
    assert ask(url, "GET", "/x.caibx.sig", headers=auth)[0] == 404
    assert ask(url, "PUT", "/x.caibx.sig", signature)[0] == 401
    assert place.raw("x.caibx.sig") is None
    assert ask(url, "PUT", "/x.caibx.sig", signature, auth)[0] == 200
    assert place.raw("x.caibx.sig") == signature
    status, body, headers = ask(url, "GET", "/x.caibx.sig", headers=auth)
    assert (status, body, headers["Content-Type"]) == (200, signature, "application/octet-stream")
    assert ask(url, "HEAD", "/x.caibx.sig", headers=auth)[:2] == (200, b"")
    status, served, _ = ask(url, "GET", "/x.caibx", headers=auth)
    assert (status, served) == (200, data)
    assert ask(url, "HEAD", "/x.caibx", headers=auth)[0] == 200
    assert publisher.verifies(served, body)


def test_a_server_without_w_serves_signatures_and_takes_none(backing, serve, publisher):
    store, place = backing
    signature = publisher.sign(b"x")
    store.store_signature("x.caibx", signature)
    url = serve(IndexService(store)).url
    status, body, _ = ask(url, "PUT", "/x.caibx.sig", publisher.sign(b"y"))
    assert (status, body) == (400, b"writing to upstream index store is not enabled\n")
    assert place.raw("x.caibx.sig") == signature
    assert ask(url, "GET", "/x.caibx.sig")[:2] == (200, signature)


@pytest.mark.parametrize(
    "body",
    [
        b"not a signature",
        b"-----BEGIN SSH SIGNATURE-----\nAAAA\n-----END SSH SIGNATURE-----\n",
        b"",
    ],
    ids=["text", "armor-without-sshsig", "empty"],
)
def test_a_signature_upload_that_is_no_sshsig_is_415_and_leaves_nothing(backing, serve, body):
    store, place = backing
    url = serve(IndexService(store, writable=True)).url
    status, answer, _ = ask(url, "PUT", "/x.caibx.sig", body)
    assert status == 415 and answer.startswith(b"invalid signature: ")
    assert place.raw("x.caibx.sig") is None
    if "://" not in place.location:
        assert list(Path(place.location).iterdir()) == []  # no temp file either


def test_an_oversized_signature_upload_is_413_before_its_body_is_read(backing, serve):
    store, place = backing
    url = serve(IndexService(store, writable=True)).url
    status, body, _ = ask(url, "PUT", "/x.caibx.sig", b"x" * (MAX_SIGNATURE_SIZE + 1))
    assert status == 413 and f"at most {MAX_SIGNATURE_SIZE} bytes".encode() in body
    # announced 100 MB, none of it sent: the answer comes without waiting for the body
    with connect(url) as s:
        s.sendall(b"PUT /y.caibx.sig HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        assert s.recv(64).startswith(b"HTTP/1.1 413 ")
    assert place.raw("x.caibx.sig") is None and place.raw("y.caibx.sig") is None


def test_a_stored_file_that_is_no_signature_is_not_served_as_one(tmp_path, serve):
    (tmp_path / "x.caibx.sig").write_bytes(b"garbage")
    reports: list[str] = []
    url = serve(IndexService(LocalIndexStore(tmp_path), report=reports.append)).url
    assert ask(url, "GET", "/x.caibx.sig")[:2] == (400, b"x.caibx.sig is not a valid signature\n")
    assert reports


def test_the_index_server_process_without_w_refuses_signatures(tmp_path, cli_server, publisher):
    (tmp_path / "idx").mkdir()
    server = cli_server("index-server", "-s", tmp_path / "idx")
    with pytest.raises(StoreError, match="400"):
        Opener().write_signature(server.url + "x.caibx", publisher.sign(b"x"))
    assert list((tmp_path / "idx").iterdir()) == []


# --- cache --indexes-to: a mirror -------------------------------------------------------------


@pytest.fixture
def published(tmp_path, cli, publisher) -> tuple[Path, Path]:
    """``pub/a.caibx`` (signed) and ``pub/b.caibx`` (not), their chunks in ``origin``."""
    pub = tmp_path / "pub"
    pub.mkdir()
    rng = random.Random(9)
    for name in ("a", "b"):
        blob = tmp_path / f"{name}.img"
        blob.write_bytes(rng.randbytes(200_000))
        r = cli("make", "-s", tmp_path / "origin", "-m", "4:16:64", pub / f"{name}.caibx", blob)
        assert r.code == 0, r.err
    publisher.ssh.sign(publisher.key.path, pub / "a.caibx")  # writes pub/a.caibx.sig
    return pub, tmp_path / "origin"


def test_cache_indexes_to_mirrors_indexes_their_signatures_and_chunks(
    published, cli, tmp_path, publisher
):
    pub, origin = published
    mirror = tmp_path / "mirror" / "indexes"
    r = cli(
        "cache", "--json", "-s", origin, "-c", tmp_path / "mirror" / "chunks",
        "--indexes-to", mirror, pub / "a.caibx", pub / "b.caibx",
    )  # fmt: skip
    assert r.code == 0, r.err
    counts = json.loads(r.out)
    assert (counts["indexes-copied"], counts["signatures-copied"]) == (2, 1)
    assert sorted(p.name for p in mirror.iterdir()) == ["a.caibx", "a.caibx.sig", "b.caibx"]
    for name in ("a.caibx", "a.caibx.sig", "b.caibx"):
        assert (mirror / name).read_bytes() == (pub / name).read_bytes()
    assert publisher.verifies(
        (mirror / "a.caibx").read_bytes(), (mirror / "a.caibx.sig").read_bytes()
    )
    # the mirror is whole: its index extracts from its chunks alone
    r = cli("extract", "-s", tmp_path / "mirror" / "chunks", mirror / "a.caibx", tmp_path / "out")
    assert r.code == 0, r.err
    assert (tmp_path / "out").read_bytes() == (tmp_path / "a.img").read_bytes()


def test_cache_indexes_to_an_index_store_url(published, cli, tmp_path, moto_server, s3_bucket):
    pub, origin = published
    place = s3_place(moto_server, s3_bucket, "mirror")
    r = cli(
        "cache", "-s", origin, "-c", tmp_path / "chunks", "--indexes-to", place.location,
        pub / "a.caibx", pub / "b.caibx",
    )  # fmt: skip
    assert r.code == 0, r.err
    for name in ("a.caibx", "a.caibx.sig", "b.caibx"):
        assert place.raw(name) == (pub / name).read_bytes()
    assert place.raw("b.caibx.sig") is None
    signed = Opener().read_signed_index(place.at("a.caibx"))
    assert signed.signature == (pub / "a.caibx.sig").read_bytes()


def test_cache_copies_an_index_from_an_index_store_url_with_its_signature(
    published, cli, tmp_path, moto_server, s3_bucket
):
    pub, origin = published
    source = s3_place(moto_server, s3_bucket, "pub")
    for name in ("a.caibx", "a.caibx.sig"):
        moto_server.admin.put_object(
            Bucket=s3_bucket, Key=f"pub/{name}", Body=(pub / name).read_bytes()
        )
    mirror = tmp_path / "mirror"
    r = cli(
        "cache", "-s", origin, "-c", tmp_path / "chunks", "--indexes-to", mirror,
        source.at("a.caibx"),
    )  # fmt: skip
    assert r.code == 0, r.err
    assert (mirror / "a.caibx.sig").read_bytes() == (pub / "a.caibx.sig").read_bytes()
    assert (mirror / "a.caibx").read_bytes() == (pub / "a.caibx").read_bytes()


def test_cache_refuses_two_indexes_of_one_name_before_copying_anything(published, cli, tmp_path):
    pub, origin = published
    other = tmp_path / "other"
    other.mkdir()
    (other / "a.caibx").write_bytes((pub / "b.caibx").read_bytes())
    r = cli(
        "cache", "-s", origin, "-c", tmp_path / "chunks", "--indexes-to", tmp_path / "mirror",
        pub / "a.caibx", other / "a.caibx",
    )  # fmt: skip
    assert r.code == 1
    assert r.err == (
        f"desync-decl: error: indexes {pub / 'a.caibx'} and {other / 'a.caibx'}"
        " would both be copied as a.caibx\n"
    )
    assert not (tmp_path / "chunks").exists() and not (tmp_path / "mirror").exists()


def test_cache_indexes_to_refuses_an_index_from_stdin(published, cli, tmp_path):
    pub, origin = published
    r = cli(
        "cache", "-s", origin, "-c", tmp_path / "chunks", "--indexes-to", tmp_path / "mirror", "-",
        stdin=(pub / "a.caibx").read_bytes(),
    )  # fmt: skip
    assert (r.code, r.err) == (
        1,
        "desync-decl: error: --indexes-to: an index read from stdin has no name to copy it as\n",
    )
    assert not (tmp_path / "mirror").exists()


def test_an_index_is_copied_only_once_its_chunks_are_in(published, cli, tmp_path):
    """A chunk the sources lack fails the copy of chunks: the index is not mirrored."""
    pub, origin = published
    index = index_format.decode((pub / "a.caibx").read_bytes())
    missing = index.id(0).hex()
    (origin / missing[:4] / f"{missing}.cacnk").unlink()
    r = cli(
        "cache", "-s", origin, "-c", tmp_path / "chunks", "--indexes-to", tmp_path / "mirror",
        pub / "a.caibx",
    )  # fmt: skip
    assert r.code == 1 and missing in r.err
    assert not (tmp_path / "mirror" / "a.caibx").exists()
