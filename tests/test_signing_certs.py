"""``cert-authority`` lines and user certificates (``ssh-keygen -s CA -I ID -n alice``),
held against ``ssh-keygen -Y verify``: a certificate for the principal, in its validity,
by the CA, is accepted by both; one for another principal, expired, not yet valid, a
host certificate, by another CA or revoked (by serial, key id or CA key) is refused by
both."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from desync_decl.signing import SignatureRefused, load_signing_key, load_trust, sshsig, wire
from tests import ssh_keys
from tests.ssh_keys import Key, OpenSsh, SshAgent, allowed_signers

ssh, ssh_agent = ssh_keys.ssh, ssh_keys.ssh_agent  # the fixtures

DATA = b"index bytes " * 500


@pytest.fixture
def ca(ssh: OpenSsh) -> Key:
    return ssh.key("ca")


@pytest.fixture
def user(ssh: OpenSsh) -> Key:
    return ssh.key("user", "ecdsa")


def _sign_with_cert(ssh: OpenSsh, cert: Path) -> Path:
    """``ssh-keygen -Y sign -f KEY-cert.pub``: the signature carries the certificate."""
    data = ssh.root / "index.caibx"
    data.write_bytes(DATA)
    return ssh.sign(cert, data)


def _refused(allowed: Path, signature: Path, signers=("alice",), revoked=None) -> str:
    with pytest.raises(SignatureRefused) as refused:
        load_trust(allowed, signers, revoked).verify(DATA, signature.read_bytes(), "idx")
    assert "\n" not in str(refused.value)
    return str(refused.value)


def test_user_certificate_is_accepted_by_both(ssh: OpenSsh, ca: Key, user: Key) -> None:
    cert = ssh.certify(ca, user, "-n", "alice,carol", "-V", "-1d:+1d")
    allowed = allowed_signers(ssh.root / "allowed", f"alice,bob cert-authority {ca.public}")
    theirs = _sign_with_cert(ssh, cert)
    ours = ssh.root / "ours.sig"
    ours.write_bytes(load_signing_key(cert).sign(DATA))

    for signature in (theirs, ours):
        assert ssh.verify(allowed, "alice", DATA, signature).code == 0
        signer = load_trust(allowed, ["alice"]).verify(DATA, signature.read_bytes(), "idx")
        assert signer.principal == "alice"
        assert signer.key == "ECDSA-CERT " + load_signing_key(user.path).fingerprint.split()[1]
        # find-principals: the certificate's principals the line allows
        assert ssh.find_principals(allowed, signature).out.split() == ["alice"]
        assert load_trust(allowed).verify(DATA, signature.read_bytes(), "idx").principal == "alice"


def test_certificate_in_the_agent_signs(
    ssh: OpenSsh, ca: Key, user: Key, ssh_agent: SshAgent
) -> None:
    cert = ssh.certify(ca, user, "-n", "alice")
    ssh_agent.add(user.path)  # with user-cert.pub beside it: the agent holds both
    user.path.unlink()
    allowed = allowed_signers(ssh.root / "allowed", f"alice cert-authority {ca.public}")
    ours = ssh.root / "ours.sig"
    ours.write_bytes(load_signing_key(cert).sign(DATA))

    assert ssh.verify(allowed, "alice", DATA, ours).code == 0
    assert (
        load_trust(allowed, ["alice"]).verify(DATA, ours.read_bytes(), "idx").principal == "alice"
    )


def test_certificate_for_another_principal_is_refused_by_both(
    ssh: OpenSsh, ca: Key, user: Key
) -> None:
    cert = ssh.certify(ca, user, "-n", "bob")
    allowed = allowed_signers(ssh.root / "allowed", f"alice,bob cert-authority {ca.public}")
    signature = _sign_with_cert(ssh, cert)

    assert ssh.verify(allowed, "alice", DATA, signature).code != 0
    assert _refused(allowed, signature) == (
        f"idx: certificate is not for 'alice': it names 'bob' ({allowed}:1)"
    )
    narrowed = allowed_signers(ssh.root / "narrowed", f"alice cert-authority {ca.public}")
    assert ssh.find_principals(narrowed, signature).code != 0
    assert _refused(narrowed, signature, ()) == (
        f"idx: principal not allowed: the certificate names 'bob', {narrowed}:1 allows 'alice'"
    )


@pytest.mark.parametrize(
    ("validity", "message"),
    [
        ("20200101Z:20200102Z", "certificate expired 2020-01-02T00:00:00Z"),
        ("29990101Z:29990102Z", "certificate is not valid until 2999-01-01T00:00:00Z"),
    ],
)
def test_certificate_outside_its_validity_is_refused_by_both(
    ssh: OpenSsh, ca: Key, user: Key, validity: str, message: str
) -> None:
    cert = ssh.certify(ca, user, "-n", "alice", "-V", validity)
    allowed = allowed_signers(ssh.root / "allowed", f"alice cert-authority {ca.public}")
    signature = _sign_with_cert(ssh, cert)

    assert ssh.verify(allowed, "alice", DATA, signature).code != 0
    assert _refused(allowed, signature) == f"idx: {message} ({allowed}:1)"


def test_host_certificate_is_refused_by_both(ssh: OpenSsh, ca: Key, user: Key) -> None:
    cert = ssh.certify(ca, user, "-h", "-n", "alice")
    allowed = allowed_signers(ssh.root / "allowed", f"alice cert-authority {ca.public}")
    signature = _sign_with_cert(ssh, cert)

    assert ssh.verify(allowed, "alice", DATA, signature).code != 0
    assert _refused(allowed, signature) == (
        f"idx: certificate is not a user certificate ({allowed}:1)"
    )


def test_certificate_by_another_ca_or_under_a_plain_key_line_is_refused_by_both(
    ssh: OpenSsh, ca: Key, user: Key
) -> None:
    other_ca = ssh.key("other-ca")
    cert = ssh.certify(ca, user, "-n", "alice", key_id="build-7")
    signature = _sign_with_cert(ssh, cert)
    fingerprint = load_signing_key(user.path).fingerprint.split()[1]
    expected = (
        f"does not list the signing key ECDSA-CERT {fingerprint} "
        f"(certificate 'build-7' by CA {load_signing_key(ca.path).fingerprint})"
    )

    for line in (f"alice cert-authority {other_ca.public}", f"alice {user.public}"):
        allowed = allowed_signers(ssh.root / "allowed", line)
        assert ssh.verify(allowed, "alice", DATA, signature).code != 0, line
        assert _refused(allowed, signature) == (
            f"idx: key not in allowed_signers: {allowed} {expected}"
        ), line


def test_revoked_certificate_is_refused_by_both(ssh: OpenSsh, ca: Key, user: Key) -> None:
    cert = ssh.certify(ca, user, "-n", "alice", "-z", "7", key_id="build-7")
    allowed = allowed_signers(ssh.root / "allowed", f"alice cert-authority {ca.public}")
    signature = _sign_with_cert(ssh, cert)
    ca_listed = ssh.root / "revoked-ca"
    ca_listed.write_text(ca.pub.read_text())
    ca_fingerprint = load_signing_key(ca.path).fingerprint
    cases = {
        ssh.krl("serial", "serial: 7\n", ca): "(certificate serial 7 is listed in {})",
        ssh.krl("bitmap", "serial: 5-9\n", ca): "(certificate serial 7 is listed in {})",
        ssh.krl("range", "serial: 2-900000\n", ca): "(certificate serial 7 is listed in {})",
        ssh.krl("id", "id: build-7\n", ca): "(certificate key id 'build-7' is listed in {})",
        ssh.krl("krl-ca", f"key: {ca.public}\n"): f"(certificate by CA {ca_fingerprint}, which is "
        f"listed in {{}})",
        ca_listed: f"(certificate by CA {ca_fingerprint}, which is listed in {{}})",
        ssh.krl("krl-user", f"key: {user.public}\n"): "is listed in {}",
    }
    user_fingerprint = "ECDSA-CERT " + load_signing_key(user.path).fingerprint.split()[1]

    assert ssh.verify(allowed, "alice", DATA, signature).code == 0
    for revoked, why in cases.items():
        assert ssh.verify(allowed, "alice", DATA, signature, revoked=revoked).code != 0, revoked
        assert _refused(allowed, signature, revoked=revoked) == (
            f"idx: revoked key: {user_fingerprint} {why.format(revoked)}"
        )


def test_certificate_revocation_of_other_serials_is_accepted_by_both(
    ssh: OpenSsh, ca: Key, user: Key
) -> None:
    cert = ssh.certify(ca, user, "-n", "alice", "-z", "7", key_id="build-7")
    allowed = allowed_signers(ssh.root / "allowed", f"alice cert-authority {ca.public}")
    signature = _sign_with_cert(ssh, cert)
    other_ca = ssh.key("other-ca")

    for revoked in (
        ssh.krl("serial", "serial: 8\nserial: 1-6\nid: build-8\n", ca),
        ssh.krl("range", "serial: 8-900000\n", ca),
        ssh.krl("krl-other-ca", "serial: 7\nid: build-7\n", other_ca),
    ):
        assert ssh.verify(allowed, "alice", DATA, signature, revoked=revoked).code == 0
        signer = load_trust(allowed, ["alice"], revoked).verify(DATA, signature.read_bytes(), "")
        assert signer.principal == "alice"


def test_certificate_altered_after_the_ca_signed_it_is_refused_by_both(
    ssh: OpenSsh, ca: Key, user: Key
) -> None:
    """The signature by the user's key is intact; the certificate it carries claims
    another principal than the CA signed ("bob" made "eve")."""
    cert = ssh.certify(ca, user, "-n", "bob")
    allowed = allowed_signers(ssh.root / "allowed", f"eve cert-authority {ca.public}")
    decoded = sshsig.decode_armored(_sign_with_cert(ssh, cert).read_bytes())
    forged_blob = decoded.public.blob.replace(wire.string("bob"), wire.string("eve"), 1)
    forged_key = dataclasses.replace(decoded.public, blob=forged_blob)
    forged = ssh.root / "forged.sig"
    forged.write_bytes(sshsig.encode(dataclasses.replace(decoded, public=forged_key)))

    assert ssh.verify(allowed, "eve", DATA, forged).code != 0
    assert _refused(allowed, forged, ["eve"]) == (
        "idx: not an SSH signature: certificate: the CA's signature is not valid "
        "(the signature does not verify)"
    )
