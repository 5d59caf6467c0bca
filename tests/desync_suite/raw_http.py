"""Plain HTTP requests for the ports of desync's server tests (what Go's ``http.Get``
and ``http.NewRequest`` did there): one request, sent exactly as written, so a
path such as ``/..%5C..%5Cevil.caibx`` arrives as an attacker would send it."""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit


def ask(url: str, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    """(status, body) of one ``method`` request for ``path`` on the server at ``url``."""
    u = urlsplit(url)
    connection = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    try:
        connection.request(method, path, body=body)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()
