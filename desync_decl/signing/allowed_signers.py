"""OpenSSH's ``allowed_signers`` file (ssh-keygen(1), "ALLOWED SIGNERS"), read as
``ssh-keygen -Y verify`` reads it.

Each line is ``PRINCIPALS [OPTIONS] KEY``: principals a comma-separated list of
patterns (``*``, ``?``, ``!`` to negate; the field may be quoted), options
``cert-authority``, ``namespaces="…"``, ``valid-after="…"``, ``valid-before="…"``
(times YYYYMMDD[HHMM[SS]], local time unless they end in ``Z``), comments ``#``.
Where OpenSSH skips a malformed line with a message, this module refuses the file
("FILE:LINE: what is wrong"): a trust file that does not say what its writer meant
must not be half-applied on a fleet.
"""

from __future__ import annotations

import calendar
import re
import time
from dataclasses import dataclass
from pathlib import Path

from desync_decl.errors import DesyncError
from desync_decl.signing import wire
from desync_decl.signing.keys import (
    FOREIGN_KEY_TYPES,
    PublicKey,
    UnsupportedKey,
    is_key_type,
    parse_public_text,
    read_small_file,
)

MAX_FILE_SIZE = 16 * 1024 * 1024
_WHITESPACE = " \t\r\n"


@dataclass(frozen=True)
class AllowedSigner:
    """One line of an allowed_signers file."""

    where: str  # "FILE:LINE"
    principals: str  # the pattern list as written
    key: PublicKey
    cert_authority: bool = False
    namespaces: str | None = None  # a pattern list; None allows every namespace
    valid_after: int | None = None  # seconds since the epoch
    valid_before: int | None = None

    def allows_principal(self, principal: str) -> bool:
        return match_pattern_list(principal, self.principals)

    def allows_namespace(self, namespace: str) -> bool:
        return self.namespaces is None or match_pattern_list(namespace, self.namespaces)

    def invalid_at(self, now: float) -> str | None:
        """Why this line does not apply at ``now`` (not yet valid, expired); None if it does."""
        if self.valid_after is not None and now < self.valid_after:
            return f"key is not valid until {format_time(self.valid_after)} ({self.where})"
        if self.valid_before is not None and now > self.valid_before:
            return f"key expired {format_time(self.valid_before)} ({self.where})"
        return None


def format_time(when: int) -> str:
    """``when`` in UTC, as ISO 8601; a certificate's time past what a calendar shows
    (a u64 up to 2**64-1) as the number it is."""
    try:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
    except (OverflowError, OSError, ValueError):
        return f"{when} seconds after 1970"


def match_pattern(string: str, pattern: str) -> bool:
    """OpenSSH's match_pattern: ``*`` any run, ``?`` one character, the rest literal."""
    regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, string, re.DOTALL) is not None


def match_pattern_list(string: str, patterns: str) -> bool:
    """OpenSSH's match_pattern_list: true when a pattern of the comma-separated list
    matches and no negated one (``!pattern``) does."""
    positive = False
    for pattern in patterns.split(","):
        if pattern.startswith("!"):
            if match_pattern(string, pattern[1:]):
                return False
        elif match_pattern(string, pattern):
            positive = True
    return positive


def parse_time(value: str) -> int:
    """OpenSSH's parse_absolute_time: YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, in
    local time, or UTC with a trailing ``Z``."""
    utc = value.endswith(("Z", "z"))
    digits = value[:-1] if utc else value
    formats = {8: "%Y%m%d", 12: "%Y%m%d%H%M", 14: "%Y%m%d%H%M%S"}
    if not digits.isdigit() or len(digits) not in formats:
        raise ValueError(value)
    parsed = time.strptime(digits, formats[len(digits)])
    when = calendar.timegm(parsed) if utc else int(time.mktime(parsed))
    if when <= 0:
        raise ValueError(value)
    return when


def _next_field(line: str) -> tuple[str, str]:
    """OpenSSH's strdelimw: the first field of ``line`` (whitespace ends it; a quote
    opens a part that runs to the next quote and ends the field) and the rest."""
    out = []
    i = 0
    while i < len(line) and line[i] not in _WHITESPACE:
        if line[i] == '"':
            end = line.find('"', i + 1)
            if end < 0:
                raise ValueError("unbalanced quote")
            out.append(line[i + 1 : end])
            i = end + 1
            break
        out.append(line[i])
        i += 1
    return "".join(out), line[i:].lstrip(_WHITESPACE)


def _split_options(text: str) -> tuple[str, str]:
    """The options field (up to unquoted whitespace) and the rest."""
    quoted = False
    for i, c in enumerate(text):
        if c == '"':
            quoted = not quoted
        elif c in _WHITESPACE and not quoted:
            return text[:i], text[i:].lstrip(_WHITESPACE)
    if quoted:
        raise ValueError("unbalanced quote in options")
    return text, ""


_OPTION = re.compile(r'(?i)(cert-authority)|(namespaces|valid-after|valid-before)="([^"]*)"')


def _parse_options(options: str) -> dict[str, str]:
    """``cert-authority,namespaces="a,b"`` as a dict (cert-authority maps to "")."""
    found: dict[str, str] = {}
    pos = 0
    while True:
        match = _OPTION.match(options, pos)
        if match is None:
            bad = options[pos:].split(",")[0].split("=")[0]
            raise ValueError(f'unsupported option "{bad}"')
        name = (match.group(1) or match.group(2)).lower()
        if name in found:
            raise ValueError(f'multiple "{name}" clauses')
        found[name] = match.group(3) or ""
        pos = match.end()
        if pos == len(options):
            return found
        if options[pos] != ",":
            raise ValueError(f'unknown key option at "{options[pos:]}"')
        pos += 1
        if pos == len(options):
            raise ValueError("unexpected end of options")


def parse_line(text: str, where: str) -> AllowedSigner | None:
    """The signer a line allows; None for a comment, a blank line or a key type this
    package cannot verify (such a line can match no signature). ``ValueError`` says
    what is wrong with a malformed line."""
    text = text.lstrip(_WHITESPACE)
    if not text or text.startswith("#"):
        return None
    principals, rest = _next_field(text)
    if not rest:
        raise ValueError("no key after the principals")
    if not principals:
        raise ValueError("empty principals")
    options: dict[str, str] = {}
    if not is_key_type(rest.split()[0]):
        option_text, rest = _split_options(rest)
        options = _parse_options(option_text)
        if not rest:
            raise ValueError("missing key")
    if rest.split()[0].removesuffix("-cert-v01@openssh.com") in FOREIGN_KEY_TYPES:
        return None
    try:
        key = parse_public_text(rest)
    except (wire.WireError, UnsupportedKey) as e:
        raise ValueError(f"invalid key: {e}") from None
    times = {}
    for name in ("valid-after", "valid-before"):
        if name in options:
            try:
                times[name] = parse_time(options[name])
            except ValueError:
                raise ValueError(f'invalid "{name}" time "{options[name]}"') from None
    after, before = times.get("valid-after"), times.get("valid-before")
    if after is not None and before is not None and before <= after:
        raise ValueError('"valid-before" time is before "valid-after"')
    return AllowedSigner(
        where=where,
        principals=principals,
        key=key,
        cert_authority="cert-authority" in options,
        namespaces=options.get("namespaces"),
        valid_after=after,
        valid_before=before,
    )


def load(path: Path) -> list[AllowedSigner]:
    """Every signer ``path`` allows, in file order; ``DesyncError`` "FILE:LINE: …"."""
    data = read_small_file(path, MAX_FILE_SIZE, "an allowed_signers file")
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise DesyncError(f"{path}: not UTF-8 text (byte {e.start})") from None
    signers = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}"
        try:
            signer = parse_line(line, where)
        except ValueError as e:
            raise DesyncError(f"{where}: {e}") from None
        if signer is not None:
            signers.append(signer)
    return signers
