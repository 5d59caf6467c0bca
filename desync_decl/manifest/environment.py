"""Where a manifest may read the environment, and where in a value a reference may stand.

A manifest may be written by someone else: a pull request that CI plans with
secrets in its environment. So ``${env:NAME}`` is read only in fields the schema
marks with ``"x-env"`` (``validate.env_rule`` finds the mark), and a value read
there must not be able to carry a secret to a place the manifest's author chose:

- ``anywhere``: credentials (``http_auth``, ``encryption_key``: they go to the
  store whose options hold them), local paths and tuning numbers; references may
  stand anywhere in the value.
- ``location``: a path or URL that ``plan`` opens. One reference, standing for the
  whole value, for its leading part up to a ``/`` (``${env:DIR}/app.caibx``) or for
  a URL's whole host (``https://${env:HOST}:8443/store``); never inside a URL's
  path or query, where a value would become part of a request to a server the
  author names.

Everywhere else a reference is refused at its line and column, and the variable
is not read.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence

ENV_KEYWORD = "x-env"  # the schema's mark on a field that may use ${env:…}
NOT_HERE = (
    "${{env:{name}}} is not allowed here: only credentials, local paths, locations and"
    " tuning options read the environment (the schema's descriptions say 'May use ${{env:…}}')"
)
ONE_PER_LOCATION = "${{env:{name}}}: a location may use one ${{env:…}} only"
WHOLE_PART = (
    "${{env:{name}}} may stand only for a whole location, for its leading directory"
    " (${{env:DIR}}/…) or for a URL's host (https://${{env:HOST}}/…), never inside a"
    " URL's path or query"
)
_SCHEME_AND_USER = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://([^/?#@]*@)?")
_PORT_AND_PATH = re.compile(r"(:[0-9]+)?(/.*)?", re.DOTALL)


class EnvRule(enum.Enum):
    """How a field marked ``"x-env"`` may use references (the mark's value)."""

    ANYWHERE = "anywhere"
    LOCATION = "location"


def refusals(
    rule: EnvRule | None, text: str, spans: Sequence[tuple[int, int]]
) -> list[tuple[int, str]]:
    """For each reference of ``text`` (its start and end) that may not stand where it
    is: its place in ``spans`` and a message template taking ``name``."""
    if rule is None:
        return [(i, NOT_HERE) for i in range(len(spans))]
    if rule is EnvRule.ANYWHERE or not spans:
        return []
    found = [(i, ONE_PER_LOCATION) for i in range(1, len(spans))]
    if not _whole_part(text, *spans[0]):
        found.insert(0, (0, WHOLE_PART))
    return found


def _whole_part(text: str, start: int, end: int) -> bool:
    """Whether a reference is the whole value, its leading part up to a '/', or a
    URL's whole host (after ``scheme://`` and a user, before a port and the path)."""
    before, after = text[:start], text[end:]
    if not before:
        return not after or after.startswith("/")
    return bool(_SCHEME_AND_USER.fullmatch(before) and _PORT_AND_PATH.fullmatch(after))
