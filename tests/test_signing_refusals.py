"""Each refusal of issue 17's acceptance 3, made by both ``ssh-keygen -Y verify`` and
ours on the same files, with our one-line message checked: tampered signature,
principal mismatch, validity (expired, not yet valid), wrong namespace, revoked key
(a list of keys and a KRL from ``ssh-keygen -k``), no signature, not a signature.
Each refusal has its acceptance beside it, so a test cannot pass by refusing all."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from desync_decl.signing import SignatureRefused, load_signing_key, load_trust, sshsig
from desync_decl.signing.sshsig import Signature
from tests import ssh_keys
from tests.ssh_keys import Key, OpenSsh, allowed_signers

ssh = ssh_keys.ssh  # the fixture

DATA = b"index bytes " * 500


def _signed(ssh: OpenSsh, key: Key, namespace: str = "desync-decl") -> Path:
    data = ssh.root / "index.caibx"
    data.write_bytes(DATA)
    return ssh.sign(key.path, data, namespace=namespace)


def _refused_by_ours(
    allowed: Path, signature: bytes | None, signers=("alice",), revoked: Path | None = None
) -> str:
    with pytest.raises(SignatureRefused) as refused:
        load_trust(allowed, signers, revoked).verify(DATA, signature, "idx")
    message = str(refused.value)
    assert "\n" not in message
    return message


def _fingerprint(key: Key) -> str:
    return load_signing_key(key.path).fingerprint


def test_tampered_signature_is_refused_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = _signed(ssh, key)
    decoded = sshsig.decode_armored(sig_file.read_bytes())
    broken = decoded.signature[:-1] + bytes([decoded.signature[-1] ^ 1])
    tampered = ssh.root / "tampered.sig"
    tampered.write_bytes(
        sshsig.encode(Signature(decoded.public, decoded.namespace, "sha512", broken))
    )

    assert ssh.verify(allowed, "alice", DATA, sig_file).code == 0
    assert ssh.verify(allowed, "alice", DATA, tampered).code != 0
    message = _refused_by_ours(allowed, tampered.read_bytes())
    assert message.startswith("idx: signature does not verify (the signature does not verify)")


def test_garbled_signature_file_is_not_an_ssh_signature_for_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    garbled = ssh.root / "garbled.sig"
    garbled.write_bytes(
        b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAA\n-----END SSH SIGNATURE-----\n"
    )

    assert ssh.verify(allowed, "alice", DATA, garbled).code != 0
    message = _refused_by_ours(allowed, garbled.read_bytes())
    assert message == "idx: not an SSH signature: SSHSIG: truncated at version"
    assert _refused_by_ours(allowed, b"hello") == (
        "idx: not an SSH signature: no -----BEGIN SSH SIGNATURE----- armor"
    )


def test_missing_signature_is_refused(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")

    assert _refused_by_ours(allowed, None) == "idx: no signature (the index is not signed)"


def test_principal_mismatch_is_refused_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"bob {key.public}")
    sig_file = _signed(ssh, key)

    assert ssh.verify(allowed, "bob", DATA, sig_file).code == 0
    assert ssh.verify(allowed, "alice", DATA, sig_file).code != 0
    assert _refused_by_ours(allowed, sig_file.read_bytes(), ["alice"]) == (
        f"idx: principal not allowed: {allowed}:1 gives this key 'bob', not 'alice'"
    )
    assert (
        load_trust(allowed, ["bob"]).verify(DATA, sig_file.read_bytes(), "idx").principal == "bob"
    )


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ('valid-before="20200101Z"', "key expired 2020-01-01T00:00:00Z"),
        ('valid-before="20200101120000Z"', "key expired 2020-01-01T12:00:00Z"),
        ('valid-after="29990101Z"', "key is not valid until 2999-01-01T00:00:00Z"),
        ('valid-after="299901011230Z"', "key is not valid until 2999-01-01T12:30:00Z"),
    ],
)
def test_validity_outside_now_is_refused_by_both(ssh: OpenSsh, option: str, message: str) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {option} {key.public}")
    sig_file = _signed(ssh, key)

    assert ssh.verify(allowed, "alice", DATA, sig_file).code != 0
    assert _refused_by_ours(allowed, sig_file.read_bytes()) == f"idx: {message} ({allowed}:1)"


def test_validity_around_now_is_accepted_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    line = f'alice valid-after="20200101",valid-before="29990101Z" {key.public}'
    allowed = allowed_signers(ssh.root / "allowed", line)
    sig_file = _signed(ssh, key)

    assert ssh.verify(allowed, "alice", DATA, sig_file).code == 0
    assert (
        load_trust(allowed, ["alice"]).verify(DATA, sig_file.read_bytes(), "i").principal == "alice"
    )


def test_wrong_namespace_is_refused_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = _signed(ssh, key, namespace="git")
    ours = ssh.root / "ours.sig"
    ours.write_bytes(load_signing_key(key.path).sign(DATA, "git"))

    for signature in (sig_file, ours):
        assert ssh.verify(allowed, "alice", DATA, signature).code != 0
        assert ssh.verify(allowed, "alice", DATA, signature, namespace="git").code == 0
        assert _refused_by_ours(allowed, signature.read_bytes()) == (
            "idx: wrong namespace: signed for 'git', not 'desync-decl'"
        )


def test_namespaces_option_not_naming_ours_is_refused_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f'alice namespaces="git,file" {key.public}')
    sig_file = _signed(ssh, key)
    widened = allowed_signers(ssh.root / "widened", f'alice namespaces="git,desync-*" {key.public}')

    assert ssh.verify(allowed, "alice", DATA, sig_file).code != 0
    assert _refused_by_ours(allowed, sig_file.read_bytes()) == (
        f"idx: key not allowed for namespace 'desync-decl' (namespaces='git,file', {allowed}:1)"
    )
    assert ssh.verify(widened, "alice", DATA, sig_file).code == 0
    assert load_trust(widened, ["alice"]).verify(DATA, sig_file.read_bytes(), "i").principal


def _revoked_cases(ssh: OpenSsh, key: Key) -> dict[str, Path]:
    listed = ssh.root / "revoked.pub"
    listed.write_text(f"# revoked\n\n{key.pub.read_text()}")
    fingerprint = _fingerprint(key).split()[1]
    return {
        "key list": listed,
        "KRL key": ssh.krl("krl-key", f"key: {key.public}\n"),
        "KRL plain public key file": ssh.krl("krl-pub", key.pub.read_text()),
        "KRL sha1": ssh.krl("krl-sha1", f"sha1: {key.public}\n"),
        "KRL sha256": ssh.krl("krl-sha256", f"sha256: {key.public}\n"),
        "KRL hash": ssh.krl("krl-hash", f"hash: {fingerprint}\n"),
    }


def test_revoked_key_is_refused_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = _signed(ssh, key)

    for case, revoked in _revoked_cases(ssh, key).items():
        assert ssh.verify(allowed, "alice", DATA, sig_file, revoked=revoked).code != 0, case
        message = _refused_by_ours(allowed, sig_file.read_bytes(), revoked=revoked)
        assert message == f"idx: revoked key: {_fingerprint(key)} is listed in {revoked}", case


def test_revocation_of_another_key_is_accepted_by_both(ssh: OpenSsh) -> None:
    key, other = ssh.key("signer"), ssh.key("other", "rsa")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = _signed(ssh, key)

    for case, revoked in _revoked_cases(ssh, other).items():
        assert ssh.verify(allowed, "alice", DATA, sig_file, revoked=revoked).code == 0, case
        signer = load_trust(allowed, ["alice"], revoked).verify(DATA, sig_file.read_bytes(), "")
        assert signer.principal == "alice", case


def test_sha1_rsa_signature_is_refused_by_both(ssh: OpenSsh) -> None:
    """An ``ssh-rsa`` (SHA-1) signature, made by hand: OpenSSH refuses it in SSHSIG."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.asymmetric import padding
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    from desync_decl.signing import wire

    key = ssh.key("signer", "rsa")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    private = load_ssh_private_key(key.path.read_bytes(), None)
    message = sshsig.signed_data(DATA, "desync-decl", "sha512")
    raw = private.sign(message, padding.PKCS1v15(), hashes.SHA1())  # type: ignore[union-attr]
    public = sshsig.decode_armored(load_signing_key(key.path).sign(DATA)).public
    sha1 = ssh.root / "sha1.sig"
    sha1.write_bytes(
        sshsig.encode(
            Signature(public, "desync-decl", "sha512", wire.string("ssh-rsa") + wire.string(raw))
        )
    )

    assert ssh.verify(allowed, "alice", DATA, sha1).code != 0
    assert _refused_by_ours(allowed, sha1.read_bytes()).startswith(
        "idx: signature does not verify (an RSA signature with SHA-1 (ssh-rsa), "
        "which OpenSSH refuses)"
    )


def test_signature_blob_armored_by_hand_decodes(ssh: OpenSsh) -> None:
    """The armor is read as ssh-keygen reads it: line breaks anywhere in the base64."""
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    text = _signed(ssh, key).read_bytes().splitlines()
    body = base64.b64decode(b"".join(text[1:-1]))
    rewrapped = b"\n".join([text[0], base64.b64encode(body), text[-1]]) + b"\n"

    assert load_trust(allowed).verify(DATA, rewrapped, "idx").principal == "alice"


def test_sha256_hash_is_accepted_and_other_hashes_refused_by_both(ssh: OpenSsh) -> None:
    """``-O hashalg=sha256`` signatures verify; an SSHSIG over a SHA-1 hash (made by
    hand, validly signed) is refused by both."""
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    data = ssh.root / "index.caibx"
    data.write_bytes(DATA)
    made = ssh.run(
        "-Y", "sign", "-O", "hashalg=sha256", "-n", "desync-decl", "-f", str(key.path), str(data)
    )
    assert made.code == 0, made.err
    sha256 = ssh.root / "index.caibx.sig"
    assert sshsig.decode_armored(sha256.read_bytes()).hash_algorithm == "sha256"
    assert load_trust(allowed).verify(DATA, sha256.read_bytes(), "idx").principal == "alice"

    from cryptography.hazmat.primitives.serialization import load_ssh_private_key

    from desync_decl.signing.keys import raw_sign

    private = load_ssh_private_key(key.path.read_bytes(), None)
    signed = sshsig.signed_data(DATA, "desync-decl", "sha1")
    public = sshsig.decode_armored(sha256.read_bytes()).public
    sha1 = ssh.root / "sha1.sig"
    sha1.write_bytes(
        sshsig.encode(Signature(public, "desync-decl", "sha1", raw_sign(private, signed)))
    )  # type: ignore[arg-type]

    assert ssh.verify(allowed, "alice", DATA, sha1).code != 0
    assert _refused_by_ours(allowed, sha1.read_bytes()) == (
        "idx: not an SSH signature: hash algorithm 'sha1' (OpenSSH verifies sha256 and sha512)"
    )
