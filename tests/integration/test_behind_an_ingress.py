"""The service behind a TLS-terminating ingress that serves it under a path prefix, as a caller sees it.

One real service (``tests/server.py``) is configured with ``INTYG_PUBLIC_BASE_URL`` =
``https://localhost:<port>/intygstjanst``, and a small reverse proxy in this module plays the ingress:
it terminates TLS with a certificate of a throwaway CA, maps ``/intygstjanst/<path>`` to the service's
``/<path>``, adds the X-Forwarded-* headers an ingress adds, and answers 404 to anything outside the
prefix. zeep, a real client, then loads every served WSDL (each contract's ``?wsdl`` and its file under
``/contracts``) through the proxy: each schema it imports is fetched through the proxy too, so an import
that left the prefix would be a 404 and fail the load. Each WSDL's ``soap:address`` is the public base
URL and the contract's path, and a call to that address through the proxy is answered.

How a WSDL is served (relative imports, the address) is ``service/soap/endpoint.py``; the same WSDLs in
process, and the address a trusted proxy's headers give, are tested in ``test_soap_robustness.py`` and
``test_callers.py``.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
import requests
import zeep
from zeep.transports import Transport

from service.soap.contracts import CONTRACTS, Contract
from service.soap.messages import CONTRACTS as CONTRACTS_DIR
from tests.server import free_port, running
from tests.tls import Authority

PREFIX = "/intygstjanst"
PATIENT = "191212121212"
# Hop-by-hop headers (RFC 9110 7.6.1) and those the proxy writes itself are not passed on.
_NOT_PASSED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "host"})


class _Ingress(BaseHTTPRequestHandler):
    """Terminates TLS, strips the prefix and forwards to the service, as ingress-nginx with a
    rewrite-target would; ``server.upstream`` is an ``httpx.Client`` on the service's base URL."""

    protocol_version = "HTTP/1.1"
    # The headers and the body are written apart: with Nagle's algorithm on, each answer would wait for
    # the client's delayed ACK (40 ms), and the loads below fetch many.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        if not self.path.startswith(PREFIX + "/"):
            self._answer(404, [], b"not under the prefix\n")
            return
        length = int(self.headers.get("content-length") or 0)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_PASSED}
        headers |= {
            "x-forwarded-proto": "https",
            "x-forwarded-host": self.headers["host"],
            "x-forwarded-prefix": PREFIX,
            "x-forwarded-for": self.client_address[0],
        }
        upstream: httpx.Client = self.server.upstream  # type: ignore[attr-defined]
        reply = upstream.request(
            self.command, self.path[len(PREFIX) :], headers=headers, content=self.rfile.read(length)
        )
        passed = [(k, v) for k, v in reply.headers.items() if k.lower() not in _NOT_PASSED]
        self._answer(reply.status_code, passed, reply.content)

    def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads answers, not the proxy's access log."""


@dataclass(frozen=True)
class Ingress:
    public_base_url: str  # https://localhost:<port>/intygstjanst
    session: requests.Session  # a caller's, trusting the ingress's certificate

    def client(self, url: str) -> Any:
        """zeep on the WSDL at ``url``, fetching it, its imports and its calls through the ingress."""
        loaded: Any = zeep.Client(url, transport=Transport(session=self.session))
        return loaded


@pytest.fixture(scope="module")
def ingress(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ingress]:
    folder = tmp_path_factory.mktemp("ingress")
    authority = Authority("Ingress test CA")
    certificate, key = authority.server().write(folder, "ingress")
    ca_file = folder / "ca.pem"
    ca_file.write_text(authority.pem, encoding="ascii")
    port = free_port()
    public = f"https://localhost:{port}{PREFIX}"
    with (
        running(folder, env={"INTYG_PUBLIC_BASE_URL": public}) as (service, _),
        httpx.Client(base_url=service, timeout=10) as upstream,
        ThreadingHTTPServer(("127.0.0.1", port), _Ingress) as proxy,
    ):
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(certificate, key)
        proxy.socket = tls.wrap_socket(proxy.socket, server_side=True)
        proxy.upstream = upstream  # type: ignore[attr-defined]
        serving = threading.Thread(target=proxy.serve_forever, name="ingress", daemon=True)
        serving.start()
        try:
            with requests.Session() as session:
                # Else REQUESTS_CA_BUNDLE of the environment, and its proxies, would take precedence.
                session.trust_env = False
                session.verify = str(ca_file)
                yield Ingress(public, session)
        finally:
            proxy.shutdown()
            serving.join()


def _served_at(contract: Contract) -> dict[str, str]:
    (file,) = (CONTRACTS_DIR / "interactions" / contract.folder).glob("*.wsdl")
    return {
        "endpoint": f"{contract.path}?wsdl",
        "file": f"/contracts/interactions/{contract.folder}/{file.name}",
    }


def test_the_ingress_in_this_test_answers_nothing_outside_its_prefix(ingress: Ingress) -> None:
    # So an import that left the prefix (a root-relative /contracts/...) would fail the loads below.
    root = ingress.public_base_url.removesuffix(PREFIX)
    assert ingress.session.get(f"{root}/contracts/service.xsd").status_code == 404
    assert ingress.session.get(f"{ingress.public_base_url}/contracts/service.xsd").status_code == 200


@pytest.mark.parametrize("at", ["endpoint", "file"])
@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: f"{c.operation}_{c.major}")
def test_a_real_client_loads_every_served_wsdl_under_the_prefix_and_finds_the_public_https_address(
    ingress: Ingress, contract: Contract, at: str
) -> None:
    loaded = ingress.client(ingress.public_base_url + _served_at(contract)[at])

    (service,) = loaded.wsdl.services.values()
    (port,) = service.ports.values()
    assert port.binding_options["address"] == ingress.public_base_url + contract.path
    (operation,) = port.binding._operations.values()
    assert operation.name == contract.operation


def test_a_call_to_the_wsdls_address_goes_through_the_ingress_to_the_service(ingress: Ingress) -> None:
    paths = {c.operation: c.path for c in CONTRACTS if c.major == 1}
    set_consent = ingress.client(f"{ingress.public_base_url}{paths['SetConsent']}?wsdl")
    get_consent = ingress.client(f"{ingress.public_base_url}{paths['GetConsent']}?wsdl")
    to = {"LogicalAddress": "intygstjanst"}

    before = get_consent.service.GetConsent(personnummer=PATIENT, _soapheaders=to)
    given = set_consent.service.SetConsent(personnummer=PATIENT, **{"consent-given": True}, _soapheaders=to)
    after = get_consent.service.GetConsent(personnummer=PATIENT, _soapheaders=to)

    assert before["consent-given"] is False
    assert given["result"]["resultCode"] == "OK"
    assert after["consent-given"] is True


@pytest.mark.parametrize("path", [f"{next(iter(CONTRACTS)).path}/?wsdl", "/certificates/", "/readyz/"])
def test_a_path_with_a_slash_too_many_is_unknown_and_never_redirected_outside_the_prefix(
    ingress: Ingress, path: str
) -> None:
    # Starlette would redirect it to the request's own Host, without the prefix the ingress added.
    answer = ingress.session.get(ingress.public_base_url + path, allow_redirects=False)

    assert answer.status_code == 404
    assert "location" not in answer.headers
