"""desync's config file (``~/.config/desync/config.json``) and its lookups.

Keys of ``store-options``, ``s3-credentials`` and ``oci-credentials`` may be
globs (``*`` and ``?`` do not cross ``/``), matched as desync matches them
(``location_match``); a location matching two keys is an error rather than a
guess. Unlike desync, ``s3-credentials`` globs really match.
Unknown keys are ignored, as desync does.

The file holds secrets (``SECRET_KEYS``: encryption keys, HTTP auth headers and
cookies, S3 keys, registry secrets, and passwords in URL keys). Whatever shows
the file to a person shows ``shown()``, where each is ``(sensitive value)``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.globs import glob_regex
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.url import mask_credentials

SENSITIVE = "(sensitive value)"  # what is shown in place of a secret (Terraform's words)
SECRET_KEYS: dict[str, frozenset[str]] = {  # per section, the keys whose values are secrets
    "store-options": frozenset({"encryption-key", "http-auth", "http-cookie"}),
    "s3-credentials": frozenset({"access-key", "secret-key"}),
    "oci-credentials": frozenset({"secret"}),
}


def default_path() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".config" / "desync" / "config.json"


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None) -> Config:
        """The given file (must exist), else the default one (may be missing)."""
        explicit = path is not None
        file = Path(path) if path is not None else default_path()
        try:
            text = file.read_text()
        except FileNotFoundError:
            if explicit:
                raise DesyncError(f"config file {file}: no such file") from None
            return cls(None, {})
        except OSError as e:
            raise DesyncError(f"cannot read config file {file}: {e.strerror}") from None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise DesyncError(f"{file}:{e.lineno}:{e.colno}: invalid JSON: {e.msg}") from None
        except RecursionError:  # json recurses once per level of nesting
            raise DesyncError(f"{file}: invalid JSON: nested too deeply") from None
        if not isinstance(raw, dict):
            raise DesyncError(f"{file}: expected a JSON object")
        return cls(file, raw)

    def store_options(self, location: str) -> StoreOptions:
        """The ``store-options`` entry for a store location (defaults if none)."""
        key, entry = self._lookup("store-options", location)
        if entry is None:
            return StoreOptions()
        if not isinstance(entry, dict):
            raise DesyncError(
                f"{self.path}: store-options '{mask_credentials(key)}' must be an object"
            )
        return StoreOptions.from_config(
            entry, f"{self.path}: store-options '{mask_credentials(key)}'"
        )

    def section(self, name: str, location: str) -> dict[str, Any] | None:
        """The entry of a credentials section (``s3-credentials``, ...) for ``location``."""
        key, entry = self._lookup(name, location)
        if entry is not None and not isinstance(entry, dict):
            raise DesyncError(f"{self.path}: {name} '{mask_credentials(key)}' must be an object")
        return entry

    def _lookup(self, section: str, location: str) -> tuple[str, Any]:
        entries = self.raw.get(section) or {}
        if not isinstance(entries, dict):
            raise DesyncError(f"{self.path}: '{section}' must be an object")
        matches = [k for k in entries if location_match(k, location)]
        if len(matches) > 1:
            raise DesyncError(
                f"{self.path}: {mask_credentials(location)} matches more than one {section}"
                " key: " + ", ".join(mask_credentials(k) for k in sorted(matches))
            )
        return (matches[0], entries[matches[0]]) if matches else ("", None)

    def as_json(self) -> dict[str, Any]:
        return self.raw

    def shown(self) -> dict[str, Any]:
        """The file's content for a person to read: every secret masked."""
        shown = dict(self.raw)
        for section, secrets in SECRET_KEYS.items():
            entries = shown.get(section)
            if isinstance(entries, dict):
                shown[section] = {
                    mask_credentials(key): masked(e, secrets) if isinstance(e, dict) else e
                    for key, e in entries.items()
                }
        return shown


def masked(entry: dict[str, Any], secrets: frozenset[str]) -> dict[str, Any]:
    """``entry`` with the values of ``secrets`` that are set replaced by ``SENSITIVE``."""
    return {k: SENSITIVE if k in secrets and v not in (None, "") else v for k, v in entry.items()}


def location_match(pattern: str, location: str) -> bool:
    """Whether the config key ``pattern`` names the store ``location`` (desync's
    ``locationMatch``).

    A URL (a scheme of two letters or more) is matched as text, one trailing ``/``
    ignored on each side. A local path is matched as absolute and clean on both
    sides: ``..`` resolved, repeated and trailing ``/`` dropped, and a leading
    ``//`` is ``/`` (Go's ``filepath.Abs``; Python's keeps ``//``, which POSIX
    allows). ``*`` and ``?`` never match a ``/``; a malformed glob matches nothing.
    """
    if _URL.match(location):
        pattern, location = pattern.removesuffix("/"), location.removesuffix("/")
    else:
        pattern, location = _absolute(pattern), _absolute(location)
    glob = _glob(pattern)
    return glob is not None and glob.fullmatch(location) is not None


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")


def _absolute(path: str) -> str:
    absolute = os.path.abspath(path)
    return "/" + absolute.lstrip("/") if absolute.startswith("//") else absolute


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str] | None:
    """Go's ``path.Match`` pattern as a regex (None when Go refuses it): ``*`` and
    ``?`` within one path element, ``[a-z]`` and ``[^a-z]`` classes, ``\\``
    escapes."""
    regex = glob_regex(pattern)
    return None if regex is None else re.compile(regex)
