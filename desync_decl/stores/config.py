"""desync's config file (``~/.config/desync/config.json``) and its lookups.

Keys of ``store-options``, ``s3-credentials`` and ``oci-credentials`` may be
globs (``*`` and ``?`` do not cross ``/``), matched as desync matches them
(``location_match``); a location matching two keys is an error rather than a
guess. Unlike desync, ``s3-credentials`` globs really match.
Unknown keys are ignored, as desync does.

Which entry a store's options came from, and where its encryption key came from
(the entry, the manifest or flags, ``$DESYNC_ENCRYPTION_KEY``), is a ``KeyOrigin``:
``config --store`` shows it, and the chunk stores a run opens are recorded on the
config (``record``) so that ``key_warnings`` can say, at the end of the run, when a
key is set but no store used takes it, or when an entry that turns encryption on
matches none of the stores used although it was likely meant for one of them (a
``*`` that stops at ``/``): encryption never stays off in silence. Only
fingerprints of keys are shown.

The file holds secrets (``SECRET_KEYS``: encryption keys, HTTP auth headers and
cookies, S3 keys, registry secrets, and passwords in URL keys). Whatever shows
the file to a person shows ``shown()``, where each is ``(sensitive value)``.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.stores.converters import fingerprint
from desync_decl.stores.options import StoreOptions
from desync_decl.stores.url import mask_credentials

SENSITIVE = "(sensitive value)"  # what is shown in place of a secret (Terraform's words)
SECRET_KEYS: dict[str, frozenset[str]] = {  # per section, the keys whose values are secrets
    "store-options": frozenset({"encryption-key", "http-auth", "http-cookie"}),
    "s3-credentials": frozenset({"access-key", "secret-key"}),
    "oci-credentials": frozenset({"secret"}),
}


ENV_KEY = "DESYNC_ENCRYPTION_KEY"  # the key of stores whose options enable encryption without one
FROM_CONFIG = "config file"
FROM_ENV = f"${ENV_KEY}"
FROM_OVERRIDES = "command line or manifest"


@dataclass(frozen=True)
class KeyOrigin:
    """Where a chunk store's options and encryption key come from."""

    location: str  # credentials masked
    config_key: str | None  # the store-options key that matched (credentials masked)
    encryption: bool
    key_from: str | None  # FROM_CONFIG, FROM_ENV, FROM_OVERRIDES; None without encryption
    key_id: str | None  # the key's fingerprint (never the key)


class _Uses:
    """The chunk stores a run opened, by location (thread-safe: tasks open stores
    from several threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._origins: dict[str, KeyOrigin] = {}
        self._said: set[str] = set()

    def add(self, origin: KeyOrigin) -> None:
        with self._lock:
            self._origins.setdefault(origin.location, origin)

    def all(self) -> list[KeyOrigin]:
        with self._lock:
            return list(self._origins.values())

    def not_said(self, warnings: list[str]) -> list[str]:
        """Those of ``warnings`` not returned before (a server warns when its stores
        are open, and the end of the run must not say it again)."""
        with self._lock:
            fresh = [w for w in warnings if w not in self._said]
            self._said.update(fresh)
            return fresh


def default_path() -> Path:
    return Path(os.environ.get("HOME", "~")).expanduser() / ".config" / "desync" / "config.json"


@dataclass(frozen=True)
class Config:
    path: Path | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    uses: _Uses = field(default_factory=_Uses, compare=False, repr=False)

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
        import json  # here: most machines have no config file

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

    def origin(
        self, location: str, options: StoreOptions, overrides: Mapping[str, object]
    ) -> KeyOrigin:
        """Where the options ``options`` of the store ``location`` (its config entry
        under ``overrides``) and their key come from."""
        key, entry = self._lookup("store-options", location)
        source: str | None = None
        key_hex: str | None = None
        if options.encryption:
            if overrides.get("encryption_key"):
                source, key_hex = FROM_OVERRIDES, str(overrides["encryption_key"])
            elif isinstance(entry, dict) and entry.get("encryption-key"):
                source, key_hex = FROM_CONFIG, str(entry["encryption-key"])
            elif os.environ.get(ENV_KEY):
                source, key_hex = FROM_ENV, os.environ[ENV_KEY]
        return KeyOrigin(
            mask_credentials(location),
            mask_credentials(key) if entry is not None else None,
            options.encryption,
            source,
            fingerprint(key_hex) if key_hex else None,
        )

    def record(self, location: str, options: StoreOptions, overrides: Mapping[str, object]) -> None:
        """Note that this run opened the chunk store ``location`` (for ``key_warnings``)."""
        self.uses.add(self.origin(location, options, overrides))

    def record_env_key_use(self, what: str) -> None:
        """Note that ``$DESYNC_ENCRYPTION_KEY`` is used other than by a chunk store (a
        chunk-server's encryption on the wire): then it is no unused key."""
        key = os.environ.get(ENV_KEY, "")
        self.uses.add(KeyOrigin(what, None, True, FROM_ENV, fingerprint(key) if key else None))

    def key_warnings(self, origins: Sequence[KeyOrigin] | None = None) -> list[str]:
        """What to tell about keys after a run that opened the chunk stores ``origins``
        (by default those ``record`` noted, each warning once):
        ``$DESYNC_ENCRYPTION_KEY`` set while no store used takes it and some store is
        used without encryption; a store-options entry that turns encryption on,
        matches none of the stores used, and was likely meant for one of those used
        without encryption."""
        if origins is None:
            return self.uses.not_said(self.key_warnings(self.uses.all()))
        used = list(origins)
        plain = [o.location for o in used if not o.encryption]
        if not plain:
            return []
        out = []
        env_key = os.environ.get(ENV_KEY)
        if env_key and not any(o.key_from == FROM_ENV for o in used):
            out.append(
                f"warning: {FROM_ENV} is set (key {fingerprint(env_key)}) but encryption is"
                f" off for {', '.join(plain)}: the key is not used (encryption is turned on"
                ' per store: "encryption": true in the config file\'s store-options, or'
                " encryption: true in a manifest's store)"
            )
        entries = self.raw.get("store-options")
        for pattern, entry in entries.items() if isinstance(entries, dict) else ():
            if not isinstance(entry, dict) or entry.get("encryption") is not True:
                continue
            if any(location_match(pattern, o.location) for o in used):
                continue
            meant = [p for p in plain if _meant_for(pattern, p)]
            if meant:
                out.append(self._unmatched(pattern, entry, meant[0], env_key))
        return out

    def _unmatched(
        self, pattern: str, entry: dict[str, Any], location: str, env: str | None
    ) -> str:
        """The warning for an entry turning encryption on that ``location`` misses."""
        key = entry.get("encryption-key")
        if isinstance(key, str) and key:
            which = f"key {fingerprint(key)}"
        elif env:
            which = f"key {fingerprint(env)} from {FROM_ENV}"
        else:
            which = f"no key set: it would take {FROM_ENV}"
        hint = ""
        if location_match(pattern, location, across=True):
            hint = " ('*' and '?' in a key do not match '/': give the store's full location)"
        return (
            f"warning: {self.path}: store-options '{mask_credentials(pattern)}' turns"
            f" encryption on ({which}) but matches no store used: {location} is used"
            f" without encryption{hint}"
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


def location_match(pattern: str, location: str, *, across: bool = False) -> bool:
    """Whether the config key ``pattern`` names the store ``location`` (desync's
    ``locationMatch``); with ``across``, whether it would if ``*`` and ``?`` matched
    ``/`` too (what a user who wrote ``host/*`` for ``host/a/b`` meant).

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
    if glob is not None and across:
        glob = _across(glob)
    return glob is not None and glob.fullmatch(location) is not None


@lru_cache(maxsize=64)
def _across(glob: re.Pattern[str]) -> re.Pattern[str]:
    """``glob`` with its ``*`` and ``?`` matching ``/`` too (escaped text and classes
    never read ``[^/]`` exactly: a negated class is ``[^/…]``)."""
    return re.compile(glob.pattern.replace("[^/]*", ".*").replace("[^/]", "."))


_GLOB_CHARS = re.compile(r"[*?\[\\]")


def _meant_for(pattern: str, location: str) -> bool:
    """Whether the glob ``pattern`` was likely written for ``location``, which it does
    not match: it would if ``*`` crossed ``/``, or ``location`` starts with the
    directory the pattern names before its first wildcard. A pattern without a
    wildcard is meant for its one location only."""
    head = _GLOB_CHARS.search(pattern)
    if head is None:
        return False
    if location_match(pattern, location, across=True):
        return True
    literal = pattern[: head.start()]
    directory = literal[: literal.rfind("/") + 1]
    if not _URL.match(location):
        directory = _absolute(directory).rstrip("/") + "/" if directory else ""
        location = _absolute(location)
    return "/" in directory.rstrip("/").removeprefix("/") and location.startswith(directory)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+:")


def _absolute(path: str) -> str:
    absolute = os.path.abspath(path)
    return "/" + absolute.lstrip("/") if absolute.startswith("//") else absolute


@lru_cache(maxsize=256)
def _glob(pattern: str) -> re.Pattern[str] | None:
    """Go's ``path.Match`` pattern as a regex (None when Go refuses it): ``*`` and
    ``?`` within one path element, ``[a-z]`` and ``[^a-z]`` classes, ``\\``
    escapes."""
    from desync_decl.globs import glob_regex  # only a config file with patterns needs it

    regex = glob_regex(pattern)
    return None if regex is None else re.compile(regex)
