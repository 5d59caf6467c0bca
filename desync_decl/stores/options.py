"""Per-store options, as desync's config file (``store-options``) and flags give them.

Durations in the config file are nanoseconds (Go's ``time.Duration``), as in
desync; here they are seconds. In the config file a key or algorithm without
``encryption: true`` is an error (as in desync): a store must never silently be
written in plaintext. Given by flags, they imply encryption
(``with_encryption_implied``, as desync's chunk-server flags do).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from typing import Any

from desync_decl.errors import DesyncError
from desync_decl.stores.converters import DEFAULT_ALGORITHM, Cipher, StorageFormat

NANOSECONDS = 1e9


@dataclass(frozen=True)
class StoreOptions:
    n: int = 10  # connections / pool size
    timeout: float | None = 60.0  # seconds per request; None = no limit
    error_retry: int = 3  # attempts for transient errors
    error_retry_base_interval: float = 0.5  # seconds; attempt k waits k x this
    client_cert: str | None = None
    client_key: str | None = None
    ca_cert: str | None = None
    trust_insecure: bool = False
    http_auth: str | None = None  # sent verbatim as the Authorization header
    http_cookie: str | None = None
    skip_verify: bool = False
    uncompressed: bool = False
    encryption: bool = False
    encryption_key: str | None = None
    encryption_algorithm: str | None = None

    @classmethod
    def from_config(cls, raw: dict[str, Any], where: str) -> StoreOptions:
        """Options from one ``store-options`` entry; unknown keys are ignored (as desync)."""
        known = {f.name.replace("_", "-"): f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = known.get(key)
            if name is None:
                continue
            values[name] = _convert(name, value, f"{where}: {key}")
        return cls(**values).checked(where)

    def with_overrides(self, **changes: Any) -> StoreOptions:
        """These options with the values a command line gave (None = not given)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def with_encryption_implied(self) -> StoreOptions:
        """These options as flags mean them: a key or an algorithm given turns
        encryption on (desync's chunk-server: ``--encryption-key`` and
        ``--encryption-algorithm`` imply ``--encryption``; without a key given, it
        comes from ``DESYNC_ENCRYPTION_KEY``). Not for the config file, where desync
        refuses a key or algorithm without ``encryption: true`` (``checked``)."""
        if self.encryption_key or self.encryption_algorithm:
            return replace(self, encryption=True)
        return self

    def checked(self, where: str) -> StoreOptions:
        if not self.encryption and (self.encryption_key or self.encryption_algorithm):
            raise DesyncError(
                f"{where}: an encryption key or algorithm is set but encryption is not enabled"
            )
        if bool(self.client_cert) != bool(self.client_key):
            raise DesyncError(f"{where}: client-cert and client-key must be given together")
        return self

    def storage_format(self) -> StorageFormat:
        """How chunks are held: compression, then encryption with the configured key."""
        cipher = None
        if self.encryption:
            key = self.encryption_key or os.environ.get("DESYNC_ENCRYPTION_KEY", "")
            if not key:
                raise DesyncError("encryption is enabled but no key is set")
            cipher = Cipher(self.encryption_algorithm or DEFAULT_ALGORITHM, key)
        return StorageFormat(compressed=not self.uncompressed, cipher=cipher)


_BOOLS = {"trust_insecure", "skip_verify", "uncompressed", "encryption"}
_STRINGS = {
    "client_cert",
    "client_key",
    "ca_cert",
    "http_auth",
    "http_cookie",
    "encryption_key",
    "encryption_algorithm",
}


def _convert(name: str, value: Any, where: str) -> Any:
    if name in _BOOLS:
        if not isinstance(value, bool):
            raise DesyncError(f"{where}: expected true or false, got {value!r}")
        return value
    if name in _STRINGS:
        if not isinstance(value, str):
            raise DesyncError(f"{where}: expected a string, got {type(value).__name__}")
        return value
    if not isinstance(value, int) or isinstance(value, bool):
        raise DesyncError(f"{where}: expected an integer, got {value!r}")
    if name == "timeout":
        if value < 0:
            return None
        return value / NANOSECONDS if value else 60.0
    if name == "error_retry_base_interval":
        return value / NANOSECONDS
    return value
