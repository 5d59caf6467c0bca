"""Values read from ``${env:…}`` are secrets: every output shows ``${env:NAME}`` instead
(and a password in a URL ``***``).

``plan`` may run on a manifest from a pull request with CI's secrets in the
environment, and its output (text, Markdown, JSON, a saved plan) goes back into
the pull request. A ``Redactor`` knows each value a manifest read from the
environment and each field value built from one, and rewrites any text to show
the reference as written: ``Bearer ${env:TOKEN}``, ``${env:ROOT}/store``. It
matches wherever the value appears, whatever wrote the text (a message of ours,
a path below a store, a server's error body echoing a header), ignoring case
(a host name may come back lowercased). Values shorter than ``MIN_REDACTED``
are not searched for in free text (a ``4`` would rewrite every number); messages
about manifest fields show such values as written anyway (``Document.as_written``),
and values YAML typed as numbers (``concurrency: ${env:JOBS}``) appear in no output.

A message may show a piece of a value rather than all of it: ``cannot create
/proc/SECRET1`` for a path ``/proc/${env:SECRET}.img`` with SECRET=``SECRET1/PART2``
(the parent of the path), a file name, its stem, a URL that percent-encodes the
value. So each value's ``pieces`` are hidden too, as ``(sensitive value)``: every
``/``-separated segment, every part before and after a ``/``, each without its
suffixes (``.img``), and the percent-encoded forms of these and of the value.
A piece shown anyway tells nothing and is kept: one written in the manifest
(``/proc``, ``.img``) or in the path of the manifest's directory (which every
``FILE:LINE:COL`` shows). Pieces match only between characters that are not
letters or digits, so a segment ``store`` does not rewrite ``datastore``.

A saved plan must let ``apply --plan`` notice changed facts without holding the
values: ``key`` is made of the values read, for a keyed hash of the facts that
changes when they do and tells nothing about them without them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from desync_decl.manifest.convert import location
from desync_decl.manifest.loader import EnvText
from desync_decl.stores.url import mask_credentials

MIN_REDACTED = 4  # characters: shorter values are not searched for in free text
SENSITIVE = "(sensitive value)"  # a match whose spelling maps to no known value


class Redactor:
    """Rewrites text and JSON data so that no value read from the environment shows."""

    def __init__(
        self,
        shown: Mapping[str, str],
        variables: Iterable[tuple[str, str]] = (),
        pieces: Iterable[str] = (),
    ) -> None:
        """``shown``: each value to hide and the text to show in its place;
        ``variables``: every (name, value) read, which make ``key``; ``pieces``:
        parts of values a message may show alone, hidden as ``SENSITIVE``."""
        kept = _longest_first(shown)
        self._shown = {v.casefold(): shown[v] for v in kept}
        parts = _longest_first(set(pieces) - set(shown))
        # longest first: it wins where both fit; whole values before pieces
        alternatives = [re.escape(v) for v in kept]
        if parts:
            alternatives.append(_BOUNDED.format("|".join(re.escape(p) for p in parts)))
        self._pattern = re.compile("|".join(alternatives), re.IGNORECASE) if alternatives else None
        # a secret made of the values read (None: none were), to key hashes that must
        # change with them without revealing them
        read = sorted(set(variables))
        self.key = hashlib.sha256(json.dumps(read).encode()).digest() if read else None

    @classmethod
    def of(cls, env: Mapping[Any, EnvText], base_dir: Path) -> Redactor:
        """For the values a document read: each variable's value shows as ``${env:NAME}``,
        each field built from one as written, also as the model resolves it (a
        relative path made absolute)."""
        shown: dict[str, str] = {}
        variables: list[tuple[str, str]] = []
        pieces: set[str] = set()
        for text in env.values():
            variables += text.variables
            if text.typed:
                continue
            # shown anyway: what the manifest writes, and its directory (in every position)
            public = (text.shown.casefold(), str(base_dir).casefold())
            for name, value in text.variables:
                shown.setdefault(value, f"${{env:{name}}}")
                pieces.update(p for p in _pieces(value) if not _within(p, public))
            shown[text.value] = text.shown
            shown.setdefault(location(text.value, base_dir), text.shown)
            pieces.update(p for p in _pieces(text.value) if not _within(p, public))
        for value, reference in list(shown.items()):  # a value in a URL, percent-encoded
            for encoded in (quote(value, safe=""), quote(value)):
                shown.setdefault(encoded, reference)
        return cls(shown, variables, pieces)

    @classmethod
    def of_credentials(cls, environ: Mapping[str, str]) -> Redactor:
        """For the credentials in ``environ`` (``credential_variable``), each shown as
        ``${env:NAME}``: a handler inherits them, and ``env`` or ``curl -v`` in it
        would print them into the recap."""
        shown: dict[str, str] = {}
        for name, value in environ.items():
            if credential_variable(name) and value:
                reference = f"${{env:{name}}}"
                for form in (value, quote(value, safe=""), quote(value)):
                    shown.setdefault(form, reference)
        return cls(shown)

    def __bool__(self) -> bool:
        return self.key is not None

    def __repr__(self) -> str:
        return f"Redactor({len(self._shown)} values)"

    def text(self, text: str) -> str:
        """``text`` as it may be shown: values read from the environment as their
        references, and the password of any URL in it masked (an index or store
        location may carry one in its userinfo)."""
        text = mask_credentials(text)
        if self._pattern is None:
            return text
        return self._pattern.sub(lambda m: self._shown.get(m[0].casefold(), SENSITIVE), text)

    def text_cut(self, text: str) -> str:
        """``text`` whose beginning was cut off, as it may be shown: ``text`` also with
        the end of a value it may start with (the cut fell inside it) hidden."""
        for value in self._shown:
            for n in range(len(value) - 1, MIN_REDACTED - 1, -1):
                if text[:n].casefold() == value[-n:]:
                    return SENSITIVE + self.text(text[n:])
        return self.text(text)

    def data(self, value: Any) -> Any:
        """JSON data with every string redacted; anything else JSON has no type for
        becomes its (redacted) string, as ``json.dumps(default=str)`` would write it."""
        if value is None or isinstance(value, bool | int | float):
            return value
        if isinstance(value, Mapping):
            return {self.text(str(k)): self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return self.text(str(value))


CREDENTIAL_PREFIXES = ("AWS_", "S3_", "GOOGLE_", "GCS_", "AZURE_", "DESYNC_", "CASYNC_")
CREDENTIAL_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "AUTH", "CREDENTIAL")


def credential_variable(name: str) -> bool:
    """Whether the environment variable ``name`` holds a credential a store reads (or
    one of its family): ``S3_SECRET_KEY``, ``AWS_SESSION_TOKEN``, ``DESYNC_HTTP_AUTH``,
    ``DESYNC_OCI_PASSWORD``, ``DESYNC_ENCRYPTION_KEY``; not ``AWS_REGION``."""
    upper = name.upper()
    return upper.startswith(CREDENTIAL_PREFIXES) and any(w in upper for w in CREDENTIAL_WORDS)


_BOUNDED = "(?<![^\\W_])(?:{})(?![^\\W_])"  # not next to a letter or digit


def _longest_first(values: Iterable[str]) -> list[str]:
    return sorted((v for v in values if len(v) >= MIN_REDACTED), key=len, reverse=True)


def _within(piece: str, public: Iterable[str]) -> bool:
    return any(piece.casefold() in text for text in public)


def _pieces(value: str) -> Iterator[str]:
    """The parts of ``value`` a message may show alone: before and after each ``/``,
    each segment, each of these without suffixes, and their percent-encoded forms."""
    parts = value.split("/")
    cut = {value}
    for n in range(1, len(parts)):
        cut.update(("/".join(parts[:n]), "/".join(parts[n:])))
    cut.update(parts)
    for part in list(cut):
        last = part.rfind("/") + 1  # suffixes are those of the last segment
        stem = part[last:]
        while "." in stem.lstrip("."):
            stem = stem.rsplit(".", 1)[0]
            cut.add(part[:last] + stem)
    for part in cut:
        yield part
        yield quote(part, safe="")
        yield quote(part)


NO_SECRETS = Redactor({})
