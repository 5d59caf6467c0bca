"""The TLS side of a server: its certificate and, for mutual TLS, whose clients it accepts.

With ``client_ca`` every client must present a certificate signed by that CA
(and only that CA: the system's trust store plays no part), else the
handshake fails and no request is read.
"""

from __future__ import annotations

import ssl

from desync_decl.errors import DesyncError


def server_context(cert: str, key: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_alpn_protocols(["http/1.1"])
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as e:
        raise DesyncError(f"cannot load TLS certificate {cert} with key {key}: {_why(e)}") from None
    if client_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        try:
            context.load_verify_locations(cafile=client_ca)
        except (OSError, ssl.SSLError) as e:
            raise DesyncError(f"cannot load client CA {client_ca}: {_why(e)}") from None
    return context


def _why(error: OSError | ssl.SSLError) -> str:
    if isinstance(error, ssl.SSLError):
        return error.reason or str(error)
    return (error.strerror or str(error)).lower()
