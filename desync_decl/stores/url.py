"""Store and index URLs: checked once before any backend sees them, shown without secrets.

``urlsplit`` raises a bare ``ValueError`` for ``http://[::1;x]/s`` or
``http://[/x``, accepts ``http://[::1]:99999/`` and silently drops the ``x`` of
``http://[::1]x/``; each backend then failed its own way (a traceback, a
"Failed to parse" after retries). ``url_scheme`` is the one gate: a location
with a scheme must have an authority made of an optional ``userinfo@``, a host
(a valid bracketed IP literal or plain host characters) and an optional port
from 1 to 65535, or it is a ``LocationError`` naming it. The CLI, ``plan``,
``apply``, ``config`` and ``validate`` all go through it.

The host is a DNS name or an IPv4 address (letters, digits, ``.``, ``_``,
``-``) or a bracketed IP literal: ``https://%zz/s`` is refused here rather than
deep inside an HTTP library. A known scheme with one slash (``http:/user:pw@h``,
a typo) is refused too: taken for a local path, it was printed whole.

``mask_credentials`` is how a location is shown to people: ``http://user:pass@``
and ``s3+http://KEY:SECRET@`` become ``user:***@`` and ``KEY:***@`` in any text,
and a lone userinfo of a web or object store URL (a token: ``https://TOKEN@``)
becomes ``***@``. ssh and sftp keep a lone user name: it is a login, not a
secret, and messages about failed logins need it. A password holding an
unencoded ``/``, ``?`` or ``#`` (``http://user:se/cret@host/s``) makes a URL
that does not parse, whose authority ends inside the password: everything
from ``user:`` to the last ``@`` is masked.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from desync_decl.errors import DesyncError

MASK = "***"
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+)://")
# a known scheme followed by one slash only: a typo, not a local path
_ONE_SLASH = re.compile(r"^(https?|s3\+https?|gs|sftp|ssh|oci\+https?):/(?!/)", re.IGNORECASE)
# The patterns below are compiled at their first use (re caches them): a local
# path, what most commands are given, never needs them.
# a host name or IPv4 address (no percent-encoding, no sub-delims: no store host has
# them and HTTP libraries fail on them deep inside); an IP literal in brackets is
# checked by urlsplit itself
_AUTHORITY = (
    r"(?:(?P<userinfo>[^\s@]*)@)?"
    r"(?P<host>\[[^\[\]\s]*\]|[A-Za-z0-9._-]*)"
    r"(?::(?P<port>[0-9]*))?"
)
# A URL's userinfo anywhere in a text: everything between "//" and the last "@"
# before the host ends (a "/", "?", "#" or white space). A scheme is matched from the
# first letter of its run only: the same match as from any later letter (the run must
# end at "://"), without trying every letter of a long run of text (quadratic: 64 KiB
# of a handler's output took seconds).
_USERINFO = r"(?<![A-Za-z])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<userinfo>[^/?#\s]*)@"
# A password with an unencoded "/", "?" or "#" (what precedes it is not a port): the
# URL does not parse; everything from "user:" to the last "@" before white space
_BROKEN_USERINFO = (
    r"(?<![A-Za-z])(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<user>[^/?#\s:@]*)"
    r":(?![0-9]*[/?#])[^/?#\s@]*[/?#]\S*@"
)
_LOGIN_SCHEMES = {"ssh", "sftp"}


class LocationError(DesyncError):
    """A store or index location that looks like a URL but does not parse."""


def url_scheme(location: str) -> str | None:
    """The lower-case scheme of a URL location, None for a local path; a URL whose
    authority does not parse is a ``LocationError``."""
    typo = _ONE_SLASH.match(location)
    if typo is not None:
        shown = mask_credentials(location.replace(":/", "://", 1)).replace("://", ":/", 1)
        raise LocationError(f"{shown}: invalid URL (a '{typo[1]}:' URL starts with '{typo[1]}://')")
    match = _SCHEME.match(location)
    if match is None:
        return None
    shown = _masked_location(location)
    if re.match(_BROKEN_USERINFO, location):
        raise LocationError(
            f"{shown}: invalid URL (a '/', '?' or '#' in the user or password must be"
            " percent-encoded)"
        )
    if re.search(r"\s", _userinfo(location) or ""):  # masking finds userinfo up to a space
        raise LocationError(f"{shown}: white space in the user or password (percent-encode it)")
    problem = _authority_problem(shown)  # parsed masked: a message never holds the secret
    if problem:
        raise LocationError(f"{shown}: {problem}")
    return match.group(1).lower()


def _authority_problem(location: str) -> str | None:
    try:
        netloc = urlsplit(location).netloc
    except ValueError as e:  # an unbalanced bracket, a bracketed host that is no IP
        return f"invalid URL: {e}"
    parts = re.fullmatch(_AUTHORITY, netloc)
    if parts is None:
        return f"invalid authority '{netloc}' (expected [user[:password]@]host[:port])"
    port = parts.group("port")
    if port and not 0 < int(port) < 65536:
        return f"port {port} is out of range (1-65535)"
    return None


def mask_credentials(text: str) -> str:
    """``text`` with the secret part of every URL's userinfo replaced by ``***``."""
    if "://" not in text:  # no URL (both patterns need one): a local path as it is
        return text
    text = re.sub(_BROKEN_USERINFO, lambda m: f"{m['scheme']}://{m['user']}:{MASK}@", text)
    return re.sub(_USERINFO, lambda m: _masked_userinfo(m["scheme"], m["userinfo"]), text)


def _masked_location(location: str) -> str:
    """One location masked even when it does not parse (a space in the password)."""
    if re.match(_BROKEN_USERINFO, location):
        return mask_credentials(location)
    userinfo = _userinfo(location)
    if userinfo is None:
        return location
    scheme, _, rest = location.partition("://")
    return _masked_userinfo(scheme, userinfo) + rest[len(userinfo) + 1 :]


def _userinfo(location: str) -> str | None:
    """What precedes the last ``@`` of the authority (which follows ``://`` up to a
    ``/``, ``?`` or ``#``, as urlsplit finds it); None without one."""
    authority = re.split(r"[/?#]", location.partition("://")[2], maxsplit=1)[0]
    userinfo, at, _ = authority.rpartition("@")
    return userinfo if at else None


def _masked_userinfo(scheme: str, userinfo: str) -> str:
    """``scheme://<userinfo>@`` shown: the password masked, a lone token masked."""
    user, colon, _ = userinfo.partition(":")
    if colon:
        return f"{scheme}://{user}:{MASK}@"
    return f"{scheme}://{user if scheme.lower() in _LOGIN_SCHEMES else MASK}@"
