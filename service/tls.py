"""Mutual TLS in the server itself: the SSL context uvicorn serves with, and the client certificate
in each request's ASGI TLS extension (README "Callers"; ``soap/caller.py`` reads it).

One port serves SOAP callers, the citizen REST API (bearer tokens), the probes and ``/metrics``, so a
client certificate is asked for but not required (``CERT_OPTIONAL``): a connection without one is
served, and the SOAP endpoint refuses its calls. A certificate that IS presented must verify against
the client CA bundle (chain, validity time, and the purpose "TLS client": an extended key usage
without clientAuth, or a key usage without digitalSignature, is refused), or the handshake fails.
"""

from __future__ import annotations

import ssl
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.config import Config

from service.connection import BoundedProtocol

# TLS versions as the ASGI TLS extension writes them (the protocol's version number).
_TLS_VERSIONS = {"TLSv1.2": 0x0303, "TLSv1.3": 0x0304}


def server_context(*, cert_file: Path, key_file: Path, client_ca_file: Path) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    # TLS 1.2 at least (README "Callers"); OpenSSL's defaults pick the ciphers.
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert_file), keyfile=str(key_file))
    context.load_verify_locations(cafile=str(client_ca_file))
    context.verify_mode = ssl.CERT_OPTIONAL
    return context


def context_factory(
    cert_file: Path, key_file: Path, client_ca_file: Path, config: Config, default: Any
) -> ssl.SSLContext:
    """uvicorn's ``ssl_context_factory`` (bound with ``functools.partial``, which worker processes
    can unpickle): our context instead of uvicorn's, whose client verification is all or nothing."""
    return server_context(cert_file=cert_file, key_file=key_file, client_ca_file=client_ca_file)


def tls_extension(ssl_object: ssl.SSLObject) -> dict[str, Any]:
    """The ASGI TLS extension of a connection (asgi.readthedocs.io, "TLS"): the client certificate
    OpenSSL verified, as PEM, and the TLS version."""
    der = ssl_object.getpeercert(binary_form=True)
    version = ssl_object.version()
    return {
        "server_cert": None,
        "client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)] if der else [],
        "client_cert_name": None,
        "client_cert_error": None,
        "tls_version": _TLS_VERSIONS.get(version) if version else None,
        "cipher_suite": None,
    }


class _WithTls:
    """The app, with one connection's TLS extension in the scope of each of its requests."""

    def __init__(self, app: ASGIApp, tls: dict[str, Any]) -> None:
        self.app = app
        self.tls = tls

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        extensions: MutableMapping[str, Any] = dict(scope.get("extensions") or {})
        extensions["tls"] = self.tls
        scope["extensions"] = extensions
        await self.app(scope, receive, send)


# uvicorn (0.54) does not yet give the app the peer's certificate: the ASGI TLS extension is proposed
# in Kludex/uvicorn#3132 and #3133. Until it ships, this subclass of the HTTP protocol (the one
# uvicorn would pick, with the bounds of service/connection.py) adds it; drop it, and its `http=` in
# cli.py, when it does. The protocol reads `self.app` for each request, so wrapping it once per
# connection suffices.
class ClientCertificateProtocol(BoundedProtocol):
    app: ASGIApp

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is not None:
            self.app = _WithTls(self.app, tls_extension(ssl_object))
