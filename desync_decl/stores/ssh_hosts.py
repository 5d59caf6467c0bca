"""What OpenSSH would use to reach a host: ``~/.ssh/config`` under the URL's values,
and the known-hosts policy (``StrictHostKeyChecking``) for a host key not yet known.

An unknown host is refused with a line telling how to trust it; ``accept-new``
records its key on first use, ``no`` accepts any (with a warning). A changed key
is refused by paramiko itself, whatever the policy.
"""

from __future__ import annotations

import getpass
import logging
import os
from typing import Any

import paramiko

from desync_decl.stores.base import StoreError
from desync_decl.stores.ssh import SshTarget

log = logging.getLogger(__name__)

GLOBAL_KNOWN_HOSTS = "/etc/ssh/ssh_known_hosts"


class HostKeyPolicy(paramiko.MissingHostKeyPolicy):
    """An unknown host: refused (default), recorded (``accept-new``) or taken (``no``)."""

    def __init__(self, location: str, settings: dict[str, Any]) -> None:
        self.location, self.settings = location, settings

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: Any) -> None:
        mode = self.settings["strict"]
        if mode in ("no", "off"):
            log.warning("%s: accepting the unknown host key of %s", self.location, hostname)
            return
        known_hosts = self.settings["known_hosts"][0]
        if mode == "accept-new":
            os.makedirs(os.path.dirname(known_hosts) or ".", mode=0o700, exist_ok=True)
            with open(known_hosts, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
            client.get_host_keys().add(hostname, key.get_name(), key)
            return
        port, name = self.settings["port"], self.settings["hostname"]
        scan = f"ssh-keyscan -p {port} {name}" if port != 22 else f"ssh-keyscan {name}"
        raise StoreError(
            f"{self.location}: host {hostname} is not in {known_hosts}; trust it by connecting "
            f"once with ssh, or check the key of `{scan}` and append it there"
        )


def ssh_settings(target: SshTarget, location: str) -> dict[str, Any]:
    """What OpenSSH would use for this host: ``~/.ssh/config`` under the URL's values."""
    path = os.path.expanduser("~/.ssh/config")
    try:
        config = paramiko.SSHConfig.from_path(path) if os.path.isfile(path) else None
        host = config.lookup(target.host) if config else {}
    except (OSError, paramiko.SSHException, ValueError) as e:
        raise StoreError(f"{location}: cannot read {path}: {e}") from None
    known = host.get("userknownhostsfile", "~/.ssh/known_hosts").split()
    return {
        "hostname": host.get("hostname", target.host),
        "port": target.port or int(host.get("port", 22)),
        "user": target.user or host.get("user") or getpass.getuser(),
        "identity_files": [os.path.expanduser(p) for p in host.get("identityfile", [])],
        "identities_only": host.get("identitiesonly", "no").lower() == "yes",
        "known_hosts": [os.path.expanduser(p) for p in known or ["~/.ssh/known_hosts"]],
        "strict": host.get("stricthostkeychecking", "yes").lower(),
        "proxy_command": host.get("proxycommand") if host.get("proxycommand") != "none" else None,
    }
