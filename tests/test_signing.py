"""Signing and verifying indexes, held against OpenSSH 9.2 both ways (issue 17,
acceptance 3): what we sign, ``ssh-keygen -Y verify`` accepts; what ``ssh-keygen -Y
sign`` signs, we accept; and what one refuses, the other refuses too.

Keys, allowed_signers files and signatures are real OpenSSH files made in the test's
temp dir (tests/ssh_keys.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from desync_decl.errors import DesyncError
from desync_decl.signing import NAMESPACE, SignatureRefused, load_signing_key, load_trust
from tests import ssh_keys
from tests.ssh_keys import KEY_TYPES, OpenSsh, allowed_signers

ssh = ssh_keys.ssh  # the fixture

DATA = b"an index's bytes\x00\x01\x02" * 100


def _data(ssh: OpenSsh, content: bytes = DATA) -> Path:
    path = ssh.root / "index.caibx"
    path.write_bytes(content)
    return path


@pytest.mark.parametrize("key_type", [*KEY_TYPES, "ecdsa384", "ecdsa521"])
def test_our_signature_verifies_with_ssh_keygen(ssh: OpenSsh, key_type: str) -> None:
    key = ssh.key("signer", key_type)
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    signature = load_signing_key(key.path).sign(DATA)
    sig_file = ssh.root / "index.caibx.sig"
    sig_file.write_bytes(signature)

    verified = ssh.verify(allowed, "alice", DATA, sig_file)

    assert verified.code == 0, verified.err
    assert f'Good "{NAMESPACE}" signature for alice' in verified.out
    assert verified.out.strip().endswith(load_signing_key(key.path).fingerprint.split()[1])


@pytest.mark.parametrize("key_type", [*KEY_TYPES, "ecdsa384", "ecdsa521"])
def test_ssh_keygen_signature_verifies_with_ours(ssh: OpenSsh, key_type: str) -> None:
    key = ssh.key("signer", key_type)
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = ssh.sign(key.path, _data(ssh))

    signer = load_trust(allowed, ["alice"]).verify(DATA, sig_file.read_bytes(), "idx")

    assert signer.principal == "alice"
    listed = ssh.run("-l", "-f", str(key.pub)).out.split()  # BITS SHA256:… COMMENT (TYPE)
    assert signer.key == f"{listed[-1].strip('()')} {listed[1]}"


def test_our_signature_is_byte_for_byte_ssh_keygens(ssh: OpenSsh) -> None:
    """Ed25519 signatures are deterministic: the same key over the same bytes in the
    same namespace gives ssh-keygen's file exactly (armor, line breaks, hash)."""
    key = ssh.key("signer")
    theirs = ssh.sign(key.path, _data(ssh)).read_bytes()

    assert load_signing_key(key.path).sign(DATA) == theirs


def test_tampered_index_is_refused_by_both(ssh: OpenSsh) -> None:
    key = ssh.key("signer")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = ssh.root / "index.caibx.sig"
    sig_file.write_bytes(load_signing_key(key.path).sign(DATA))
    tampered = DATA[:-1] + b"\x03"

    assert ssh.verify(allowed, "alice", tampered, sig_file).code != 0
    with pytest.raises(SignatureRefused) as refused:
        load_trust(allowed, ["alice"]).verify(tampered, sig_file.read_bytes(), "idx")
    assert str(refused.value).startswith("idx: signature does not verify")
    assert "changed after signing" in str(refused.value)


def test_key_not_in_allowed_signers_is_refused_by_both(ssh: OpenSsh) -> None:
    key, other = ssh.key("signer"), ssh.key("other")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {other.public}")
    sig_file = ssh.sign(key.path, _data(ssh))

    assert ssh.verify(allowed, "alice", DATA, sig_file).code != 0
    with pytest.raises(SignatureRefused) as refused:
        load_trust(allowed).verify(DATA, sig_file.read_bytes(), "idx")
    fingerprint = load_signing_key(key.path).fingerprint
    assert str(refused.value) == (
        f"idx: key not in allowed_signers: {allowed} does not list the signing key {fingerprint}"
    )


def test_encrypted_private_key_is_one_line_pointing_at_the_agent(ssh: OpenSsh) -> None:
    key = ssh.key("locked", passphrase="a secret passphrase")

    with pytest.raises(DesyncError) as error:
        load_signing_key(key.path)

    message = str(error.value)
    assert "\n" not in message and "a secret passphrase" not in message
    assert message.startswith(f"{key.path}: the private key is encrypted")
    assert f"ssh-add {key.path}" in message and f"{key.pub}" in message


@pytest.mark.parametrize(("key_type", "form"), [("rsa", "PEM"), ("ecdsa", "PEM"), ("rsa", "PKCS8")])
def test_pem_private_keys_sign(ssh: OpenSsh, key_type: str, form: str) -> None:
    """``ssh-keygen -m PEM``/``-m PKCS8`` keys (what older tooling writes) sign too."""
    key = ssh.key("signer", key_type)
    converted = ssh.run("-p", "-N", "", "-P", "", "-m", form, "-f", str(key.path))
    assert converted.code == 0, converted.err
    assert b"BEGIN OPENSSH PRIVATE KEY" not in key.path.read_bytes()
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    sig_file = ssh.root / "index.caibx.sig"
    sig_file.write_bytes(load_signing_key(key.path).sign(DATA))

    assert ssh.verify(allowed, "alice", DATA, sig_file).code == 0


def test_encrypted_pem_key_is_the_same_one_line(ssh: OpenSsh) -> None:
    key = ssh.key("locked", "rsa")
    converted = ssh.run("-p", "-N", "sesame", "-P", "", "-m", "PEM", "-f", str(key.path))
    assert converted.code == 0, converted.err

    with pytest.raises(DesyncError) as error:
        load_signing_key(key.path)

    assert str(error.value).startswith(f"{key.path}: the private key is encrypted")
    assert "sesame" not in str(error.value)


def test_files_that_are_no_key_are_one_line(ssh: OpenSsh) -> None:
    not_a_key = ssh.root / "notes.txt"
    not_a_key.write_text("hello\n")
    with pytest.raises(DesyncError) as error:
        load_signing_key(not_a_key)
    assert str(error.value) == (
        f"{not_a_key}: neither a private key nor a public key "
        "(not a public key (want: TYPE BASE64 [COMMENT]))"
    )
    with pytest.raises(DesyncError, match="no such file"):
        load_signing_key(ssh.root / "missing")
