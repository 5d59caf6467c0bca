"""The allowed_signers format as OpenSSH reads it: principal patterns (``*``, ``?``,
``!`` negation, quoted fields), options (case-insensitive names, quoted values),
comments; principals matched the way ``ssh-keygen -Y verify -I`` matches them, and a
malformed file refused as one "FILE:LINE: what" line."""

from __future__ import annotations

from pathlib import Path

import pytest

from desync_decl.errors import DesyncError
from desync_decl.signing import SignatureRefused, load_signing_key, load_trust, sshsig
from desync_decl.signing.allowed_signers import format_time, parse_time
from tests import ssh_keys
from tests.ssh_keys import Key, OpenSsh, allowed_signers

ssh = ssh_keys.ssh  # the fixture

DATA = b"index bytes " * 100


@pytest.fixture
def signed(ssh: OpenSsh) -> tuple[Key, Path]:
    key = ssh.key("signer")
    data = ssh.root / "index.caibx"
    data.write_bytes(DATA)
    return key, ssh.sign(key.path, data)


@pytest.mark.parametrize(
    ("principals", "principal", "accepted"),
    [
        ("alice", "alice", True),
        ("alice", "Alice", False),
        ("bob,alice", "alice", True),
        ("*@example.com", "alice@example.com", True),
        ("*@example.com", "alice@example.org", False),
        ("?lice", "alice", True),
        ("?lice", "aalice", False),
        ("*,!mallory", "mallory", False),
        ("*,!mallory", "alice", True),
        ("!mallory", "alice", False),
        ("a*e", "a.e", True),
        ("al*", "al@ice", True),
        ('"release team"', "release team", True),
        ('"release team,ops"', "ops", True),
        ("[ab]lice", "alice", False),
        ("[ab]lice", "[ab]lice", True),
    ],
)
def test_principal_patterns_match_as_in_ssh_keygen(
    ssh: OpenSsh, signed: tuple[Key, Path], principals: str, principal: str, accepted: bool
) -> None:
    key, signature = signed
    allowed = allowed_signers(ssh.root / "allowed", f"{principals} {key.public}")

    assert (ssh.verify(allowed, principal, DATA, signature).code == 0) == accepted
    trust = load_trust(allowed, [principal])
    if accepted:
        assert trust.verify(DATA, signature.read_bytes(), "idx").principal == principal
    else:
        with pytest.raises(SignatureRefused, match=r"^idx: principal not allowed"):
            trust.verify(DATA, signature.read_bytes(), "idx")


def test_comments_blank_lines_options_and_several_lines(ssh: OpenSsh, signed) -> None:
    key, signature = signed
    other = ssh.key("other")
    allowed = allowed_signers(
        ssh.root / "allowed",
        "# release signers",
        "",
        f"   mallory {other.public} a comment",
        f'bob Namespaces="git" {key.public}',
        f'alice,carol VALID-AFTER="20000101",namespaces="desync-decl" {key.public} alice@host',
    )

    assert ssh.verify(allowed, "alice", DATA, signature).code == 0
    assert ssh.verify(allowed, "bob", DATA, signature).code != 0
    assert load_trust(allowed, ["alice"]).verify(DATA, signature.read_bytes(), "i").principal == (
        "alice"
    )
    # no principal asked for: the principals of the line that allows the key, as
    # ssh-keygen -Y find-principals prints them
    assert load_trust(allowed).verify(DATA, signature.read_bytes(), "i").principal == "alice,carol"
    # (ssh-keygen -Y find-principals stops at the first line and ignores namespaces=;
    # we judge every line for the namespace desync-decl)
    assert ssh.find_principals(allowed, signature).out.split() == ["bob"]
    # several wanted principals: the first the file allows
    assert load_trust(allowed, ["bob", "carol"]).verify(DATA, signature.read_bytes(), "i") == (
        load_trust(allowed, ["carol"]).verify(DATA, signature.read_bytes(), "i")
    )


def test_the_closest_line_explains_a_refusal(ssh: OpenSsh, signed) -> None:
    """Several lines give the key: the refusal names the one that came closest."""
    key, signature = signed
    allowed = allowed_signers(
        ssh.root / "allowed",
        f"bob {key.public}",
        f'alice valid-before="20200101Z" {key.public}',
    )

    assert ssh.verify(allowed, "alice", DATA, signature).code != 0
    with pytest.raises(SignatureRefused) as refused:
        load_trust(allowed, ["alice"]).verify(DATA, signature.read_bytes(), "idx")
    assert str(refused.value) == f"idx: key expired 2020-01-01T00:00:00Z ({allowed}:2)"


def test_check_key_judges_a_key_without_a_signature(ssh: OpenSsh, signed) -> None:
    key, _ = signed
    other = ssh.key("other", "rsa")
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    trust = load_trust(allowed, ["alice"])

    signer = trust.check_key(key.public, "plan")
    assert signer.principal == "alice"
    assert signer.key == load_signing_key(key.path).fingerprint
    with pytest.raises(SignatureRefused, match=r"^plan: key not in allowed_signers"):
        trust.check_key(other.public, "plan")
    with pytest.raises(SignatureRefused, match=r"^plan: not a public key"):
        trust.check_key("nonsense", "plan")


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("alice", "no key after the principals"),
        ('"alice {key}', "unbalanced quote"),
        ("alice frobnicate {key}", 'unsupported option "frobnicate"'),
        ("alice namespaces=git {key}", 'unsupported option "namespaces"'),
        ('alice namespaces="a",namespaces="b" {key}', 'multiple "namespaces" clauses'),
        ('alice valid-after="2020" {key}', 'invalid "valid-after" time "2020"'),
        ('alice valid-after="20201340" {key}', 'invalid "valid-after" time "20201340"'),
        (
            'alice valid-after="20200102",valid-before="20200101" {key}',
            '"valid-before" time is before "valid-after"',
        ),
        ("alice cert-authority, {key}", "unexpected end of options"),
        ("alice cert-authority,{key}", 'unsupported option "ssh-ed25519"'),
        ("alice ssh-ed25519 AAAAnotbase64!", "invalid key: public key: invalid base64"),
        ("alice ssh-rsa {b64}", "invalid key: public key: a ssh-ed25519 key labelled 'ssh-rsa'"),
        ("alice cert-authority", "missing key"),
    ],
)
def test_malformed_line_is_one_line_naming_file_and_line(
    ssh: OpenSsh, signed, line: str, error: str
) -> None:
    key, _ = signed
    b64 = key.public.split()[1]
    allowed = allowed_signers(
        ssh.root / "allowed", "# first line fine", line.format(key=key.public, b64=b64)
    )

    with pytest.raises(DesyncError) as refused:
        load_trust(allowed)
    assert str(refused.value) == f"{allowed}:2: {error}"


def test_lines_with_key_types_we_cannot_verify_are_skipped(ssh: OpenSsh, signed) -> None:
    """A security-key (sk-) line in a shared file is no reason to refuse the file: it
    can never match a signature we accept."""
    key, signature = signed
    sk = "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIA=="
    allowed = allowed_signers(ssh.root / "allowed", f"bob {sk}", f"alice {key.public}")

    assert load_trust(allowed).verify(DATA, signature.read_bytes(), "i").principal == "alice"


def test_unreadable_files_are_one_line(ssh: OpenSsh, signed, tmp_path: Path) -> None:
    key, _ = signed
    allowed = allowed_signers(ssh.root / "allowed", f"alice {key.public}")
    with pytest.raises(DesyncError, match=f"^{tmp_path / 'missing'}: no such file$"):
        load_trust(tmp_path / "missing")
    with pytest.raises(DesyncError, match=f"^{tmp_path / 'none'}: no such file$"):
        load_trust(allowed, revoked_keys=tmp_path / "none")
    (tmp_path / "bad-krl").write_bytes(b"SSHKRL\n\x00\x00\x00\x00\x09")
    with pytest.raises(DesyncError, match=r"bad-krl: not a valid KRL: KRL format version 9$"):
        load_trust(allowed, revoked_keys=tmp_path / "bad-krl")
    (tmp_path / "bad-list").write_text("ssh-ed25519 AAAA\n")
    with pytest.raises(DesyncError, match=r"bad-list:1: public key: truncated at key type$"):
        load_trust(allowed, revoked_keys=tmp_path / "bad-list")


def test_times_are_shown_in_utc_even_past_the_calendar() -> None:
    assert format_time(1577836800) == "2020-01-01T00:00:00Z"
    assert format_time(2**64 - 2) == "18446744073709551614 seconds after 1970"


def test_times_are_read_as_openssh_reads_them() -> None:
    assert parse_time("20200101Z") == 1577836800
    assert parse_time("202001011230Z") == 1577836800 + 12 * 3600 + 30 * 60
    assert parse_time("20200101123045z") == 1577836800 + 12 * 3600 + 30 * 60 + 45
    for bad in ("2020010", "2020-01-01", "20200101123", "Z", ""):
        with pytest.raises(ValueError):
            parse_time(bad)


def test_decode_armored_refuses_what_is_not_one_sshsig(ssh: OpenSsh, signed) -> None:
    _, signature = signed
    good = signature.read_bytes()
    assert sshsig.decode_armored(good).namespace == "desync-decl"
    assert sshsig.encode(sshsig.decode_armored(good)) == good

    for bad, why in [
        (b"", "no -----BEGIN SSH SIGNATURE----- armor"),
        (good + good, "the armored signature is not valid base64"),
        (good.replace(b"U1NIU0lH", b"U1NIU0lI", 1), "not an SSHSIG blob (no SSHSIG magic)"),
        (b"x" * 70000, "larger than 65536 bytes"),
    ]:
        with pytest.raises(DesyncError) as refused:
            sshsig.decode_armored(bad)
        assert str(refused.value) == why
