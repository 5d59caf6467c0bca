"""Where the credentials for an OCI registry come from.

Kept apart from the store and its HTTP client because finding a secret is its
own policy, with its own sources and failure messages: ``DESYNC_OCI_USERNAME``/
``DESYNC_OCI_PASSWORD``, else the config file's ``oci-credentials``, else
Docker's config (a credential helper, else ``auths``), else none (public
repositories). The result is a (user, password) pair that
``oci_registry.RegistryHttp`` offers when a registry asks.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import urllib.parse
from pathlib import Path

from desync_decl.stores.base import StoreError
from desync_decl.stores.config import Config

Credentials = tuple[str, str] | None  # (user, password); None: anonymous


def credentials(location: str, config: Config) -> Credentials:
    """(user, password) for the registry, or None for anonymous access."""
    user = os.environ.get("DESYNC_OCI_USERNAME", "")
    password = os.environ.get("DESYNC_OCI_PASSWORD", "")
    if password and not user:
        raise StoreError(f"{location}: DESYNC_OCI_PASSWORD is set but DESYNC_OCI_USERNAME is not")
    if user:
        return user, password
    entry = config.section("oci-credentials", location)
    if entry is not None:
        user, secret = entry.get("username", ""), entry.get("secret", "")
        if not isinstance(user, str) or not isinstance(secret, str):
            raise StoreError(f"{config.path}: oci-credentials: username and secret are strings")
        return user, secret
    return _docker_credentials(urllib.parse.urlsplit(location).netloc)


def _docker_credentials(host: str) -> tuple[str, str] | None:
    """Docker's ``config.json``: a credential helper for the host, else ``auths``."""
    folder = os.environ.get("DOCKER_CONFIG") or (
        os.path.join(os.environ["HOME"], ".docker") if os.environ.get("HOME") else ""
    )
    if not folder:
        return None
    path = Path(folder) / "config.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise StoreError(f"cannot read Docker config {path}: {e}") from None
    if not isinstance(raw, dict):
        raise StoreError(f"Docker config {path}: expected a JSON object")
    helper = (raw.get("credHelpers") or {}).get(host) or raw.get("credsStore")
    if helper:
        return _helper_credentials(str(helper), host)
    for key, entry in (raw.get("auths") or {}).items():
        if _registry_host(key) != host or not isinstance(entry, dict):
            continue
        if entry.get("auth"):
            try:
                pair = base64.b64decode(entry["auth"], validate=True).decode()
            except (ValueError, TypeError):
                raise StoreError(f"Docker config {path}: invalid auth for {key}") from None
            user, _, password = pair.partition(":")
            return user, password
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
    return None


def _helper_credentials(helper: str, host: str) -> tuple[str, str] | None:
    try:
        done = subprocess.run(
            [f"docker-credential-{helper}", "get"],
            input=host.encode(),
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise StoreError(f"Docker credential helper {helper}: {e}") from None
    if done.returncode != 0:  # "credentials not found": anonymous
        return None
    try:
        answer = json.loads(done.stdout)
        return str(answer["Username"]), str(answer["Secret"])
    except (ValueError, KeyError, TypeError):
        raise StoreError(f"Docker credential helper {helper}: unexpected answer") from None


def _registry_host(key: str) -> str:
    """``https://index.docker.io/v1/`` and ``ghcr.io`` as the host they name."""
    return urllib.parse.urlsplit(key if "://" in key else "//" + key).netloc
