"""Mutual TLS through the real server: ``intygstjanst serve`` with TLS settings, a permission table and a
SQLite file, called over loopback with real handshakes, one client certificate of each kind
(``tests/tls.py``). One server serves the whole module.

A certificate that fails verification (expired, another CA's, an extended key usage without clientAuth)
or a client below TLS 1.2 fails the handshake: no request reaches the service. A verified connection
whose certificate proves no permitted system (no extended key usage at all, a system the table does not
name, no certificate) reaches it, and its SOAP call is refused with the contract's error and audited as
denied. The permission table's rules are tested in process in ``tests/integration/test_callers.py``;
the settings' combinations in ``tests/unit/test_caller_settings.py``.
"""

from __future__ import annotations

import socket
import sqlite3
import ssl
import subprocess
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests.integration.soap import envelope_for, path_of, register_envelope
from tests.integration.test_cli import COMMAND, TIMEOUT, Server, clean_environment
from tests.reference import SOAP_ENV
from tests.server import free_port
from tests.tls import UNKNOWN, WEBCERT, Pki, make_pki

REGISTER = path_of("RegisterCertificate", 3)
REGISTER_NS = "urn:riv:clinicalprocess:healthcond:certificate:RegisterCertificateResponder:3"
# A refused caller is refused before its request is validated: any RegisterCertificate body will do.
EMPTY_REGISTER = envelope_for("RegisterCertificate", 3, f'<r:RegisterCertificate xmlns:r="{REGISTER_NS}"/>')
XML = {"Content-Type": "text/xml; charset=utf-8"}
HEADER_DEADLINE = 2.0


@dataclass(frozen=True)
class Service:
    url: str
    pki: Pki
    database: Path

    def context(
        self,
        client: str | None,
        *,
        version: ssl.TLSVersion | None = None,
    ) -> ssl.SSLContext:
        """A client's TLS context: trusts the test CA's server certificate, presents ``client``'s."""
        context = ssl.create_default_context(cafile=str(self.pki.ca_file))
        if version is not None:
            context.minimum_version = context.maximum_version = version
        if client is not None:
            certificate, key = self.pki.client_files(client)
            context.load_cert_chain(str(certificate), str(key))
        return context

    def exchange(self, context: ssl.SSLContext, request: bytes) -> bytes:
        """One request over a raw TLS connection; TLS 1.3 reports a refused client certificate at
        the client's first read, TLS 1.2 in the handshake itself."""
        host, port = "127.0.0.1", int(self.url.rsplit(":", 1)[1])
        with (
            socket.create_connection((host, port), timeout=10) as raw,
            context.wrap_socket(raw, server_hostname=host) as connection,
        ):
            connection.sendall(request)
            return connection.recv(65536)

    def post(self, client: str | None, data: bytes) -> httpx.Response:
        with httpx.Client(verify=self.context(client), timeout=10) as http:
            return http.post(self.url + REGISTER, content=data, headers=XML)

    def audit(self) -> list[tuple[str, str, str]]:
        """(action, outcome, actor_id) of every audit record, oldest first; a refused call's action with
        what was called: ``call RegisterCertificate:3``. Records the sealer has not yet given their place
        (``seq`` still NULL: it runs every INTYG_AUDIT_SEAL_SECONDS) come last, in the order written."""
        with sqlite3.connect(self.database) as connection:
            rows = connection.execute(
                "SELECT action, called, outcome, actor_id FROM audit_records ORDER BY seq IS NULL, seq, id"
            )
            return [(f"{a} {c}" if c else str(a), str(o), str(i)) for a, c, o, i in rows]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    folder = tmp_path_factory.mktemp("mtls")
    pki = make_pki(folder)
    database = folder / "intyg.db"
    port = free_port()
    process = subprocess.Popen(
        [str(COMMAND), "serve", "--port", str(port)],
        cwd=folder,
        env=clean_environment(
            PYTHONUNBUFFERED="1",
            INTYG_DATABASE_URL=f"sqlite:///{database}",
            INTYG_TLS_CERT_FILE=str(pki.server_cert),
            INTYG_TLS_KEY_FILE=str(pki.server_key),
            INTYG_TLS_CLIENT_CA_FILE=str(pki.ca_file),
            INTYG_PERMISSIONS_FILE=str(pki.permissions_file),
            # Short, for the test of slow clients over TLS; loopback requests never come near it.
            INTYG_HEADER_DEADLINE_SECONDS=str(HEADER_DEADLINE),
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    running = Server(process)
    try:
        running.wait_for("listening on https://127.0.0.1", TIMEOUT)
        url = f"https://127.0.0.1:{port}"
        probe = ssl.create_default_context(cafile=str(pki.ca_file))
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert running.process.poll() is None, "".join(running.output)
            try:
                if httpx.get(url + "/livez", verify=probe, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield Service(url, pki, database)
    finally:
        running.stop()


def result_of(response: httpx.Response) -> tuple[str | None, str | None]:
    body = etree.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    result = next(e for e in body[0] if etree.QName(e).localname == "result")
    values = {etree.QName(e).localname: e.text for e in result}
    return values.get("resultCode"), values.get("errorId")


@pytest.mark.shared
def test_a_valid_client_certificate_registers_and_the_audit_names_its_system(service: Service) -> None:
    response = service.post("webcert", register_envelope("tls-1", "191212121212").encode())

    assert response.status_code == 200, response.text
    assert result_of(response) == ("OK", None)
    assert ("register", "ok", WEBCERT) in service.audit()


PROBE = b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def handshake_refused(service: Service, context: ssl.SSLContext) -> bool:
    """Whether the server ends the connection in the handshake: asyncio's TLS closes it without an
    answer (TLS 1.2: during the client's handshake; TLS 1.3: at the client's first read)."""
    try:
        answer = service.exchange(context, PROBE)
    except (ssl.SSLError, ConnectionResetError) as exc:
        # Not the client's own refusal to speak (which would prove nothing about the server).
        assert "NO_PROTOCOLS_AVAILABLE" not in str(exc).upper(), exc
        return True
    return answer == b""


@pytest.mark.parametrize(
    "version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3], ids=["TLS1.2", "TLS1.3"]
)
@pytest.mark.parametrize("client", ["expired", "other_ca", "server_auth"])
def test_a_certificate_that_does_not_verify_fails_the_handshake(
    service: Service, client: str, version: ssl.TLSVersion
) -> None:
    before = service.audit()

    assert handshake_refused(service, service.context(client, version=version))

    assert service.audit() == before
    # The same exchange with a valid certificate is answered.
    assert not handshake_refused(service, service.context("webcert", version=version))


@pytest.mark.parametrize(
    ("client", "system"),
    [("no_eku", "unidentified"), ("unknown", UNKNOWN), (None, "unidentified")],
    ids=["no extended key usage", "unknown consumer", "no client certificate"],
)
def test_a_caller_that_proves_no_permitted_system_gets_the_contracts_error_and_is_audited(
    service: Service, client: str | None, system: str
) -> None:
    response = service.post(client, EMPTY_REGISTER)

    assert response.status_code == 200, response.text
    assert result_of(response) == ("ERROR", "APPLICATION_ERROR")
    assert service.audit()[-1] == ("call RegisterCertificate:3", "denied", system)


def test_a_tls_1_1_client_fails_the_handshake(service: Service) -> None:
    if not ssl.HAS_TLSv1_1:
        pytest.skip("this OpenSSL cannot speak TLS 1.1 at all")

    def client(version: ssl.TLSVersion) -> ssl.SSLContext:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TLSVersion.TLSv1_1 is deprecated
            context = service.context("webcert")
            context.minimum_version = ssl.TLSVersion.TLSv1_1
            context.maximum_version = version
        # OpenSSL's security level would keep this client from offering TLS 1.1 at all, before any
        # byte is sent: lowered, the refusal has to be the server's.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
        return context

    assert handshake_refused(service, client(ssl.TLSVersion.TLSv1_1))
    assert not handshake_refused(service, client(ssl.TLSVersion.TLSv1_2))


def test_a_tls_1_2_client_with_a_valid_certificate_is_served(service: Service) -> None:
    context = service.context("webcert", version=ssl.TLSVersion.TLSv1_2)
    with httpx.Client(verify=context, timeout=10) as http:
        response = http.post(service.url + REGISTER, content=EMPTY_REGISTER, headers=XML)

    # Identified and permitted, so the body is validated: the empty request is a validation error.
    assert result_of(response) == ("ERROR", "VALIDATION_ERROR")


def test_probes_and_the_citizen_api_answer_without_a_client_certificate(service: Service) -> None:
    with httpx.Client(verify=service.context(None), timeout=10) as http:
        assert http.get(service.url + "/livez").status_code == 200
        # The citizen API is reached (and asks for its bearer token), over the same port.
        refused = http.get(service.url + "/api/citizen/v1/consent")
        assert refused.status_code == 401
        # README "Input": browsers keep to HTTPS, nothing caches the answer, and the server is not named.
        assert refused.headers["strict-transport-security"] == "max-age=31536000"
        assert refused.headers["cache-control"] == "no-store"
        assert "server" not in refused.headers


def test_a_tls_connection_that_sends_no_request_is_answered_408_and_closed_at_the_header_deadline(
    service: Service,
) -> None:
    """Over TLS, the protocol that hands the app the client certificate bounds slow
    and silent clients as the plain one does (``test_slow_clients.py``)."""
    host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
    with (
        socket.create_connection((host, port), timeout=10) as raw,
        service.context("webcert").wrap_socket(raw, server_hostname=host) as silent,
    ):
        started = time.monotonic()
        answer = b""
        while chunk := silent.recv(65536):
            answer += chunk
        elapsed = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert HEADER_DEADLINE - 0.1 < elapsed < HEADER_DEADLINE + 1.5, elapsed
