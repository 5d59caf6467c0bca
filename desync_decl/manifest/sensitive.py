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

A saved plan must let ``apply --plan`` notice changed facts without holding the
values: ``key`` is made of the values read, for a keyed hash of the facts that
changes when they do and tells nothing about them without them.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from desync_decl.manifest.convert import location
from desync_decl.manifest.loader import EnvText
from desync_decl.stores.url import mask_credentials

MIN_REDACTED = 4  # characters: shorter values are not searched for in free text
SENSITIVE = "(sensitive value)"  # a match whose spelling maps to no known value


class Redactor:
    """Rewrites text and JSON data so that no value read from the environment shows."""

    def __init__(self, shown: Mapping[str, str], variables: Iterable[tuple[str, str]] = ()) -> None:
        """``shown``: each value to hide and the text to show in its place;
        ``variables``: every (name, value) read, which make ``key``."""
        kept = sorted((v for v in shown if len(v) >= MIN_REDACTED), key=len, reverse=True)
        self._shown = {v.casefold(): shown[v] for v in kept}
        pattern = "|".join(re.escape(v) for v in kept)  # longest first: it wins where both fit
        self._pattern = re.compile(pattern, re.IGNORECASE) if kept else None
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
        for text in env.values():
            variables += text.variables
            if text.typed:
                continue
            for name, value in text.variables:
                shown.setdefault(value, f"${{env:{name}}}")
            shown[text.value] = text.shown
            shown.setdefault(location(text.value, base_dir), text.shown)
        return cls(shown, variables)

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


NO_SECRETS = Redactor({})
