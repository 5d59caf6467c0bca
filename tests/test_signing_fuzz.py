"""Hostile signatures, revocation lists and allowed_signers lines: whatever bytes a
``.sig`` beside an index (or a KRL) holds, the verdict is a signer or a one-line
refusal, never another exception, a hang or a crash. The seeds are real OpenSSH
files; the mutations are the fuzz harness's (reliability/fuzz/mutate.py)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from desync_decl.errors import DesyncError
from desync_decl.signing import SignatureRefused, load_trust
from desync_decl.signing.allowed_signers import parse_line
from desync_decl.signing.revocation import load_revocations
from reliability.fuzz import mutate
from tests.ssh_keys import OpenSsh, allowed_signers

DATA = b"index bytes " * 50
FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None
)


class Seeds:
    """Signature blobs by each key type and by a certificate, a KRL with every
    section, and the allowed_signers file that accepts the signatures."""

    def __init__(self, root: Path) -> None:
        ssh = OpenSsh(root)
        data = root / "index.caibx"
        data.write_bytes(DATA)
        ca = ssh.key("ca")
        lines = [f'alice,bob cert-authority,namespaces="desync-*" {ca.public}']
        self.signatures: list[bytes] = []
        for key_type in ("ed25519", "ecdsa", "rsa", "ecdsa521"):
            key = ssh.key(key_type, key_type)
            lines.append(f'alice valid-after="20200101" {key.public}')
            self.signatures.append(_blob(ssh.sign(key.path, data)))
        user = ssh.key("user")
        cert = ssh.certify(ca, user, "-n", "alice", "-z", "3")
        self.signatures.append(_blob(ssh.sign(cert, data)))
        self.allowed = allowed_signers(root / "allowed", *lines)
        spec = f"serial: 1-2\nserial: 9-9000\nid: x\nkey: {user.public}\n"
        spec += f"sha1: {ca.public}\nsha256: {ca.public}\n"
        self.krl = ssh.krl("krl", spec, ca).read_bytes()
        self.root = root


def _blob(signature: Path) -> bytes:
    return base64.b64decode(b"".join(signature.read_bytes().splitlines()[1:-1]))


def _armor(blob: bytes) -> bytes:
    return (
        b"-----BEGIN SSH SIGNATURE-----\n"
        + base64.b64encode(blob)
        + (b"\n-----END SSH SIGNATURE-----\n")
    )


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> Seeds:
    return Seeds(tmp_path_factory.mktemp("signing-seeds"))


def test_the_seeds_verify(seeds: Seeds) -> None:
    trust = load_trust(seeds.allowed, ["alice"])
    for blob in seeds.signatures:
        assert trust.verify(DATA, _armor(blob), "idx").principal == "alice"
    krl = load_revocations(seeds.root / "krl")  # every kind of section is in the seed
    assert krl.keys and krl.sha1 and krl.sha256
    by_ca = next(iter(krl.certs.values()))
    assert by_ca.key_ids == {"x"} and (by_ca.serials or by_ca.bitmaps)


@FUZZ
@given(st.data(), mutate.strategy(3))
def test_mutated_signatures_are_accepted_or_refused_in_one_line(seeds: Seeds, data, mutation):
    seed = data.draw(st.sampled_from(seeds.signatures))
    trust = load_trust(seeds.allowed)
    try:
        trust.verify(DATA, _armor(mutate.apply(seed, mutation)), "idx")
    except SignatureRefused as refused:
        assert str(refused).startswith("idx: ") and "\n" not in str(refused)


@FUZZ
@given(mutate.strategy(3))
def test_mutated_krls_load_or_fail_in_one_line(seeds: Seeds, mutation):
    path = seeds.root / "mutated.krl"
    path.write_bytes(mutate.apply(seeds.krl, mutation))
    try:
        load_revocations(path)
    except DesyncError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)


@FUZZ
@given(st.text(alphabet=' \t"!*?,=#abc-_', max_size=40), st.sampled_from(["", " ", "  "]))
def test_any_line_parses_or_fails_with_value_error(seeds: Seeds, prefix: str, gap: str):
    key = seeds.allowed.read_text().splitlines()[1].split(" ", 2)[2]
    for text in (prefix, prefix + gap + key):
        try:
            parse_line(text, "f:1")
        except ValueError as error:
            assert str(error) and "\n" not in str(error)
