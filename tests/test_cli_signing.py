"""Signed indexes on the command line (issue 17), end to end through ``desync-decl``.

``make``/``tar -i --sign-key`` and ``sign-index`` write ``INDEX.sig`` that OpenSSH's
``ssh-keygen -Y verify`` accepts; ``extract``, ``untar``, ``cat``, ``info``,
``verify-index`` and ``mount-index`` with ``--allowed-signers`` use an index only
when an allowed signer signed it. Every refusal is one line, exit 1, before any
store is opened: the chunk-server the command was given logs no request, and no
target is left behind. Keys are real ``ssh-keygen`` keys made in the test's
directory; the chunk store is served by our own chunk-server (in-process, each
request recorded), the index stores by a real index-server process, moto and sshd.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from desync_decl.server.messages import Request, Response
from tests import servers_http, servers_ssh, ssh_keys, test_mount
from tests.cli_checks import refused
from tests.servers_http import chunk_service
from tests.ssh_keys import Key, OpenSsh, allowed_signers
from tests.test_mount import needs_fuse, start_mount

pytest_plugins = ["tests.servers_cloud"]  # moto and the GCS emulator, as the cloud tests
serve, cli_server = servers_http.serve, servers_http.cli_server
ssh_server, sshd = servers_ssh.ssh_server, servers_ssh.sshd
ssh, ssh_agent, mounts = ssh_keys.ssh, ssh_keys.ssh_agent, test_mount.mounts


@pytest.fixture(autouse=True)
def no_agent(monkeypatch) -> None:
    """Keys come from files here: the tester's ssh-agent must not answer for them
    (the agent test sets its own)."""
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)


def fingerprint(ssh: OpenSsh, key: Key) -> str:
    """``"ED25519 SHA256:…"``, as ``ssh-keygen -l`` names the key."""
    listed = ssh.run("-l", "-f", str(key.pub))
    assert listed.code == 0, listed.err
    words = listed.out.split()
    return f"{words[-1].strip('()')} {words[1]}"


def openssh_verifies(ssh: OpenSsh, signers: Path, principal: str, index: Path) -> bool:
    """Whether ``ssh-keygen -Y verify`` accepts ``INDEX.sig`` of ``index`` for ``principal``."""
    signature = Path(f"{index}.sig")
    return ssh.verify(signers, principal, index.read_bytes(), signature).code == 0


def blob_bytes(seed: int) -> bytes:
    rng = random.Random(seed)
    a = rng.randbytes(200_000)
    return a + rng.randbytes(300_000) + a + bytes(100_000)


# --- a chunk-server that remembers what it was asked --------------------------------


@dataclass
class ChunkServer:
    """Our chunk-server over ``store``; ``requests`` is every path it was sent."""

    url: str
    store: Path
    requests: list[str] = field(default_factory=list)


@pytest.fixture
def chunk_server(serve, tmp_path) -> ChunkServer:
    store = tmp_path / "store"
    service = chunk_service(store)
    server = ChunkServer("", store)

    def app(request: Request) -> Response:
        server.requests.append(request.path)
        return service(request)

    server.url = serve(app).url
    return server


# --- what is published --------------------------------------------------------------


@dataclass
class Site:
    """A signed index published by ``make --sign-key`` (or ``tar -i --sign-key``) with its
    chunks in the chunk-server's store: alice signed it; allowed_signers allows alice
    and bob, each with their own key; nobody knows mallory's."""

    tmp: Path
    cli: Callable[..., Any]
    ssh: OpenSsh
    server: ChunkServer
    alice: Key
    bob: Key
    mallory: Key
    signers: Path
    source: Path  # the blob, or the directory tarred
    index: Path

    @property
    def signature(self) -> Path:
        return Path(f"{self.index}.sig")

    def trust(self, *extra: object) -> list[object]:
        return ["--allowed-signers", self.signers, *extra]

    def allow(self, alice_options: str = "") -> None:
        """allowed_signers: alice (with ``alice_options``) and bob."""
        options = f"{alice_options} " if alice_options else ""
        allowed_signers(
            self.signers,
            f"alice@example {options}{self.alice.public}",
            f"bob@example {self.bob.public}",
        )


def make_site(tmp: Path, cli, ssh: OpenSsh, server: ChunkServer, kind: str) -> Site:
    alice, bob, mallory = ssh.key("alice"), ssh.key("bob"), ssh.key("mallory")
    if kind == "blob":
        source, index = tmp / "blob.img", tmp / "blob.caibx"
        source.write_bytes(blob_bytes(1))
        verb = ["make"]
    else:
        source, index = tmp / "tree", tmp / "tree.caidx"
        (source / "sub").mkdir(parents=True)
        (source / "a.bin").write_bytes(blob_bytes(2))
        (source / "sub" / "b.txt").write_text("hello\n")
        verb = ["tar", "-i"]
    made = cli(*verb, "-s", server.store, "-m", "4:16:64", "--sign-key", alice.path, index, source)
    assert made.code == 0, made.err
    site = Site(tmp, cli, ssh, server, alice, bob, mallory, tmp / "allowed_signers", source, index)
    site.allow()
    return site


@pytest.fixture
def blob_site(tmp_path, cli, ssh, chunk_server) -> Site:
    return make_site(tmp_path, cli, ssh, chunk_server, "blob")


@pytest.fixture
def tree_site(tmp_path, cli, ssh, chunk_server) -> Site:
    return make_site(tmp_path, cli, ssh, chunk_server, "tree")


def published(tmp: Path, cli, server: ChunkServer, seed: int) -> tuple[Path, Path]:
    """An index made without a signature: (blob, index)."""
    source, index = tmp / "blob.img", tmp / "blob.caibx"
    source.write_bytes(blob_bytes(seed))
    made = cli("make", "-s", server.store, "-m", "4:16:64", index, source)
    assert made.code == 0, made.err
    return source, index


# --- signing ------------------------------------------------------------------------


def test_make_sign_key_writes_a_signature_openssh_verifies(blob_site):
    site = blob_site
    assert site.signature.read_text().startswith("-----BEGIN SSH SIGNATURE-----")
    assert openssh_verifies(site.ssh, site.signers, "alice@example", site.index)
    assert not openssh_verifies(site.ssh, site.signers, "bob@example", site.index)


def test_tar_sign_key_signs_the_caidx_and_openssh_verifies_it(tree_site):
    site = tree_site
    assert openssh_verifies(site.ssh, site.signers, "alice@example", site.index)


@pytest.mark.parametrize("key_type", ssh_keys.KEY_TYPES)
def test_sign_index_signs_an_existing_index_as_openssh_would(
    tmp_path, cli, ssh, chunk_server, key_type
):
    _, index = published(tmp_path, cli, chunk_server, 3)
    assert not Path(f"{index}.sig").exists()
    key = ssh.key("carol", key_type)
    signers = allowed_signers(tmp_path / "allowed_signers", f"carol@example {key.public}")

    signed = cli("sign-index", "--json", index, "--key", key.path)

    assert signed.code == 0, signed.err
    shown = json.loads(signed.out)
    assert shown["key"] == fingerprint(ssh, key)
    assert shown["public-key"] == key.public
    assert shown["signature"] == f"{index}.sig"
    assert shown["index-digest"] == json.loads(cli("info", "--json", index).out)["index-digest"]
    assert openssh_verifies(ssh, signers, "carol@example", index)
    text = cli("sign-index", "--json=false", index, "--key", key.path)  # Go's booleans
    assert text.code == 0 and text.out == f"{index}.sig: signed with {fingerprint(ssh, key)}\n"


def test_an_index_signed_by_openssh_is_trusted(tmp_path, cli, ssh, chunk_server):
    source, index = published(tmp_path, cli, chunk_server, 4)
    key = ssh.key("dave")
    signers = allowed_signers(tmp_path / "allowed_signers", f"dave@example {key.public}")
    ssh.sign(key.path, index)

    out = tmp_path / "out.img"
    r = cli("extract", "-s", chunk_server.url, "--allowed-signers", signers, index, out)
    assert (r.code, r.err) == (0, "")
    assert out.read_bytes() == source.read_bytes()


def test_make_signs_with_a_key_ssh_agent_holds(tmp_path, cli, ssh, ssh_agent, chunk_server):
    key = ssh.key("agent-held")
    ssh_agent.add(key.path)
    key.path.unlink()  # only the agent has the private half now
    source, index = tmp_path / "blob.img", tmp_path / "blob.caibx"
    source.write_bytes(blob_bytes(6))
    made = cli("make", "-s", chunk_server.store, "--sign-key", key.pub, index, source)
    assert made.code == 0, made.err
    signers = allowed_signers(tmp_path / "allowed_signers", f"ops@example {key.public}")
    assert openssh_verifies(ssh, signers, "ops@example", index)
    out = tmp_path / "out.img"
    r = cli("extract", "-s", chunk_server.url, "--allowed-signers", signers, index, out)
    assert r.code == 0 and out.read_bytes() == source.read_bytes()


def test_sign_index_refuses_what_is_no_index_and_writes_no_signature(tmp_path, cli, ssh):
    key = ssh.key("erin")
    bogus = tmp_path / "bogus.caibx"
    bogus.write_bytes(b"not an index at all" * 10)
    refused(cli("sign-index", bogus, "--key", key.path), "bogus.caibx")
    assert not Path(f"{bogus}.sig").exists()
    refused(cli("sign-index", tmp_path / "missing.caibx", "--key", key.path), "missing.caibx")
    assert not (tmp_path / "missing.caibx.sig").exists()


# --- trusted reads succeed ----------------------------------------------------------


def test_extract_with_trust_succeeds_and_says_nothing(blob_site, cli):
    site = blob_site
    out = site.tmp / "out.img"
    r = cli("extract", "-s", site.server.url, *site.trust(), site.index, out)
    assert (r.code, r.err) == (0, "")
    assert out.read_bytes() == site.source.read_bytes()
    assert site.server.requests  # the chunks came from the server


def test_any_named_signer_is_accepted_and_values_may_be_go_style(blob_site, cli):
    site = blob_site
    out = site.tmp / "out.img"
    r = cli(
        "extract", f"--store={site.server.url}", f"--allowed-signers={site.signers}",
        "--signer=bob@example", "--signer", "alice@example", "-r=false", site.index, out,
    )  # fmt: skip
    assert (r.code, r.err) == (0, "")
    assert out.read_bytes() == site.source.read_bytes()


def test_untar_with_trust_succeeds(tree_site, cli):
    site = tree_site
    target = site.tmp / "target"
    r = cli("untar", "-i", "-s", site.server.url, *site.trust(), site.index, target)
    assert (r.code, r.err) == (0, "")
    assert (target / "a.bin").read_bytes() == (site.source / "a.bin").read_bytes()
    assert (target / "sub" / "b.txt").read_text() == "hello\n"


def test_cat_with_trust_succeeds(blob_site, cli):
    site = blob_site
    r = cli("cat", "-s", site.server.url, *site.trust(), site.index)
    assert (r.code, r.err) == (0, "")
    assert r.data == site.source.read_bytes()


def test_verify_index_with_trust_succeeds(blob_site, cli):
    site = blob_site
    r = cli("verify-index", *site.trust(), site.index, site.source)
    assert (r.code, r.err) == (0, "")


def test_info_shows_the_signer_under_trust(blob_site, cli):
    site = blob_site
    key = fingerprint(site.ssh, site.alice)
    signer = {"verified": True, "principal": "alice@example", "key": key}
    r = cli("info", "--json", *site.trust(), site.index)
    assert r.code == 0, r.err
    assert json.loads(r.out)["signature"] == signer
    r = cli("info", *site.trust(), site.index)  # desync's keys, and ours for our flag
    assert json.loads(r.out)["signature"] == signer
    r = cli("info", "-f", "plain", *site.trust(), site.index)
    assert f"Signature: verified, by alice@example ({key})" in r.out.splitlines()


def test_info_without_trust_says_whether_a_local_index_has_a_signature(blob_site, cli):
    site = blob_site
    assert json.loads(cli("info", "--json", site.index).out)["signature"] == {"verified": False}
    assert "signature" not in json.loads(cli("info", site.index).out)  # desync's keys only
    plain = cli("info", "-f", "plain", site.index).out.splitlines()
    assert "Signature: present, not verified (no --allowed-signers)" in plain
    site.signature.unlink()
    assert json.loads(cli("info", "--json", site.index).out)["signature"] is None
    assert "Signature: none" in cli("info", "-f", "plain", site.index).out.splitlines()


@needs_fuse
def test_mount_index_with_trust_mounts_and_names_the_signer(blob_site, mounts):
    site = blob_site
    mount = start_mount(site.tmp, "-s", site.server.url, *site.trust(), site.index)
    mounts.append(mount)
    assert mount.file.read_bytes() == site.source.read_bytes()
    assert mount.unmount() == 0
    assert f"signed by alice@example ({fingerprint(site.ssh, site.alice)})" in mount.stderr()


# --- every refusal: one line, nothing fetched, nothing left -------------------------


def no_signature(site: Site) -> list[object]:
    site.signature.unlink()
    return []


def unknown_key(site: Site) -> list[object]:
    r = site.cli("sign-index", site.index, "--key", site.mallory.path)
    assert r.code == 0, r.err
    return []


def principal_not_wanted(site: Site) -> list[object]:
    return ["--signer", "bob@example"]  # bob is allowed, but alice signed


def expired(site: Site) -> list[object]:
    site.allow('valid-before="20200101"')
    return []


def wrong_namespace(site: Site) -> list[object]:
    site.ssh.sign(site.alice.path, site.index, namespace="other")
    return []


def changed_after_signing(site: Site) -> list[object]:
    other = site.tmp / "other.img"  # the index made again from other bytes, unsigned:
    other.write_bytes(blob_bytes(9))  # the old signature still lies beside it
    r = site.cli("make", "-s", site.server.store, "-m", "4:16:64", site.index, other)
    assert r.code == 0, r.err
    other.unlink()
    return []


def revoked(site: Site) -> list[object]:
    return ["--revoked-keys", site.alice.pub]


REFUSALS = {
    "no signature": (no_signature, "no signature"),
    "unknown key": (unknown_key, "key not in allowed_signers"),
    "principal not wanted": (principal_not_wanted, "principal not allowed"),
    "expired": (expired, "expired"),
    "wrong namespace": (wrong_namespace, "namespace"),
    "changed after signing": (changed_after_signing, "changed after signing"),
    "revoked key": (revoked, "revoked"),
}


@dataclass
class VerbCase:
    site: str  # the fixture: blob_site or tree_site
    argv: Callable[[Site, list[object]], list[object]]  # the command line, with trust flags
    target: Callable[[Site], Path | None]  # what it would write
    process: bool = False  # run as a process (a mount it should not make must not hang us)


@dataclass
class Finished:
    code: int
    out: str
    err: str
    data: bytes = b""


def run_process(argv: list[object], mountpoint: Path) -> Finished:
    """``desync-decl ARGV`` as a process; one that is still running after 20 s has
    mounted what it should have refused: unmounted, and the test fails."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "desync_decl", *map(str, argv)],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)
        pytest.fail(f"still running after 20 s (mounted?): {argv}")
    return Finished(done.returncode, done.stdout, done.stderr)


VERBS = {
    "extract": VerbCase(
        "blob_site",
        lambda s, t: ["extract", "-s", s.server.url, *t, s.index, s.tmp / "out.img"],
        lambda s: s.tmp / "out.img",
    ),
    "untar": VerbCase(
        "tree_site",
        lambda s, t: ["untar", "-i", "-s", s.server.url, *t, s.index, s.tmp / "target"],
        lambda s: s.tmp / "target",
    ),
    "cat": VerbCase(
        "blob_site",
        lambda s, t: ["cat", "-s", s.server.url, *t, s.index, s.tmp / "out.img"],
        lambda s: s.tmp / "out.img",
    ),
    "info": VerbCase(
        "blob_site", lambda s, t: ["info", "-s", s.server.url, *t, s.index], lambda s: None
    ),
    "verify-index": VerbCase(
        "blob_site", lambda s, t: ["verify-index", *t, s.index, s.source], lambda s: None
    ),
    "mount-index": VerbCase(
        "blob_site",
        lambda s, t: ["mount-index", "-s", s.server.url, *t, s.index, s.tmp / "mnt"],
        lambda s: None,
        process=True,
    ),
}


@pytest.mark.parametrize("refusal", REFUSALS)
@pytest.mark.parametrize("verb", VERBS)
def test_an_index_trust_refuses_is_refused_before_any_chunk(request, cli, verb, refusal):
    case = VERBS[verb]
    site: Site = request.getfixturevalue(case.site)
    (site.tmp / "mnt").mkdir()
    make_it_so, why = REFUSALS[refusal]
    argv = case.argv(site, site.trust(*make_it_so(site)))
    before = sorted(os.listdir(site.tmp))

    r = run_process(argv, site.tmp / "mnt") if case.process else cli(*argv)

    refused(r, site.index.name, why)
    assert r.out == "" and r.data == b""
    assert site.server.requests == []  # no store was asked for anything
    assert sorted(os.listdir(site.tmp)) == before  # no target, no temporary file
    assert not os.path.ismount(site.tmp / "mnt")
    target = case.target(site)
    assert target is None or not target.exists()


# --- usage errors -------------------------------------------------------------------


@pytest.mark.parametrize("verb", VERBS)
@pytest.mark.parametrize("flags", [["--signer", "alice@example"], ["--revoked-keys", "k.pub"]])
def test_signer_or_revoked_keys_without_allowed_signers_is_a_usage_error(request, cli, verb, flags):
    case = VERBS[verb]
    site: Site = request.getfixturevalue(case.site)
    (site.tmp / "mnt").mkdir()
    argv = case.argv(site, flags)
    r = run_process(argv, site.tmp / "mnt") if case.process else cli(*argv)
    refused(r, flags[0], "needs --allowed-signers")
    assert site.server.requests == []


@pytest.mark.parametrize("verb", ["extract", "cat", "info", "verify-index", "untar"])
def test_an_index_from_stdin_cannot_be_checked(request, cli, verb):
    case = VERBS[verb]
    site: Site = request.getfixturevalue(case.site)
    argv = [a if a != site.index else "-" for a in case.argv(site, site.trust())]
    r = cli(*argv, stdin=site.index.read_bytes())
    refused(r, "stdin", "--allowed-signers")
    assert site.server.requests == []
    target = case.target(site)
    assert target is None or not target.exists()


def test_a_trust_file_that_cannot_be_read_is_one_line_before_any_chunk(blob_site, cli):
    site = blob_site
    out = site.tmp / "out.img"
    missing = site.tmp / "no_such_signers"
    r = cli("extract", "-s", site.server.url, "--allowed-signers", missing, site.index, out)
    refused(r, "no_such_signers")
    site.signers.write_text(f"alice@example {site.alice.public}\nbob@example ssh-ed25519 !!!\n")
    r = cli("extract", "-s", site.server.url, *site.trust(), site.index, out)
    refused(r, f"{site.signers}:2")
    assert site.server.requests == [] and not out.exists()


def test_untar_of_a_plain_catar_under_trust_is_refused(tree_site, cli):
    site = tree_site
    catar = site.tmp / "tree.catar"
    assert cli("tar", catar, site.source).code == 0
    r = cli("untar", *site.trust(), catar, site.tmp / "target")
    refused(r, "--allowed-signers", "-i")
    assert not (site.tmp / "target").exists()


def test_sign_key_where_no_signature_can_go_is_refused_before_any_work(tmp_path, cli, ssh):
    key = ssh.key("frank")
    (tmp_path / "tree").mkdir()
    (tmp_path / "blob").write_bytes(b"x" * 1000)
    store = tmp_path / "store"
    cases = [
        (["make", "-s", store, "--sign-key", key.path, "-", tmp_path / "blob"], "-"),
        (["tar", "-i", "-s", store, "--sign-key", key.path, "-", tmp_path / "tree"], "-"),
        (["tar", "--sign-key", key.path, tmp_path / "t.catar", tmp_path / "tree"], "-i"),
        (["sign-index", "-", "--key", key.path], "-"),
    ]
    for argv, word in cases:
        r = cli(*argv)
        refused(r, "sign", word)
        assert r.data == b"", argv
        assert not store.exists() and not (tmp_path / "t.catar").exists(), argv


def test_a_key_that_cannot_sign_fails_make_before_it_chunks(tmp_path, cli, ssh):
    (tmp_path / "blob").write_bytes(b"x" * 1000)
    store, index = tmp_path / "store", tmp_path / "b.caibx"
    locked = ssh.key("locked", passphrase="secret words")
    for key in (tmp_path / "no-such-key", locked.path):
        r = cli("make", "-s", store, "--sign-key", key, index, tmp_path / "blob")
        refused(r, key.name)
        assert "secret words" not in r.err
        assert not index.exists() and not store.exists()


# --- index stores: make --sign-key there, extract from there with trust -------------


@dataclass
class Remote:
    index_url: str  # where the index goes
    signature: Callable[[], bytes | None]  # the .sig the store holds (None: none)


@pytest.fixture
def remote(request, tmp_path, cli_server) -> Iterator[Remote]:
    kind = request.param
    if kind == "index-server":
        root = tmp_path / "indexes"
        root.mkdir()
        server = cli_server("index-server", "-w", "-s", root)
        yield Remote(f"{server.url.rstrip('/')}/blob.caibx", _file(root / "blob.caibx.sig"))
    elif kind == "s3":
        moto = request.getfixturevalue("moto_server")
        bucket = request.getfixturevalue("s3_bucket")

        def s3_signature() -> bytes | None:
            try:
                got = moto.admin.get_object(Bucket=bucket, Key="indexes/blob.caibx.sig")
            except moto.admin.exceptions.NoSuchKey:
                return None
            return bytes(got["Body"].read())

        yield Remote(f"s3+http://{moto.hostport}/{bucket}/indexes/blob.caibx", s3_signature)
    elif kind == "gcs":
        gcs = request.getfixturevalue("gcs_server")
        name = request.getfixturevalue("gcs_bucket")

        def gcs_signature() -> bytes | None:
            held = gcs.client().bucket(name).blob("indexes/blob.caibx.sig")
            return bytes(held.download_as_bytes()) if held.exists() else None

        yield Remote(f"gs://{name}/indexes/blob.caibx", gcs_signature)
    else:
        sshd = request.getfixturevalue("sshd")
        root = tmp_path / "sftp-indexes"
        root.mkdir()
        yield Remote(sshd.url("sftp", root / "blob.caibx"), _file(root / "blob.caibx.sig"))


def _file(path: Path) -> Callable[[], bytes | None]:
    return lambda: path.read_bytes() if path.exists() else None


@pytest.mark.parametrize("remote", ["index-server", "s3", "gcs", "sftp"], indirect=True)
def test_make_signs_into_an_index_store_and_extract_trusts_it_there(
    remote, tmp_path, cli, ssh, chunk_server
):
    alice, mallory = ssh.key("alice"), ssh.key("mallory")
    signers = allowed_signers(tmp_path / "allowed_signers", f"alice@example {alice.public}")
    trust = ["--allowed-signers", signers]
    source = tmp_path / "blob.img"
    source.write_bytes(blob_bytes(5))
    made = cli("make", "-s", chunk_server.store, "--sign-key", alice.path, remote.index_url, source)
    assert made.code == 0, made.err
    signature = remote.signature()
    assert signature is not None and signature.startswith(b"-----BEGIN SSH SIGNATURE-----")

    out = tmp_path / "out.img"
    r = cli("extract", "-s", chunk_server.url, *trust, remote.index_url, out)
    assert (r.code, r.err) == (0, "")
    assert out.read_bytes() == source.read_bytes()

    fetched = len(chunk_server.requests)
    resigned = cli("sign-index", remote.index_url, "--key", mallory.path)
    assert resigned.code == 0, resigned.err
    assert remote.signature() not in (None, signature)
    again = tmp_path / "again.img"
    r = cli("extract", "-s", chunk_server.url, *trust, remote.index_url, again)
    refused(r, "blob.caibx", "key not in allowed_signers")
    assert len(chunk_server.requests) == fetched and not again.exists()
