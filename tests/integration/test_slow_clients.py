"""Slow and silent clients against the real server (``service/connection.py``):
``intygstjanst serve`` on plain HTTP with deadlines of 1 s and a cap of a few connections, driven
through raw sockets. One server serves the whole module; every test closes what it opens.

A connection that sends nothing, or its headers a byte at a time, is answered 408 and closed at the
header deadline; a body sent a byte at a time gets the channel's error at the body deadline (SOAP a
soap:Client fault, REST problem+json 408); a connection beyond the cap is answered 503 at once. Normal
requests are served meanwhile. TLS connections get the same bounds: ``test_mutual_tls.py``.
"""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests import server
from tests.integration import soap as s

DEADLINE = 1.0
CAP = 6


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    settings = {
        "INTYG_HEADER_DEADLINE_SECONDS": str(DEADLINE),
        "INTYG_BODY_DEADLINE_SECONDS": str(DEADLINE),
        "INTYG_MAX_CONNECTIONS": str(CAP),
    }
    with server.running(tmp_path_factory.mktemp("slow"), env=settings) as (base, _):
        yield base, int(base.rsplit(":", 1)[1])


def _connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def _answer(sock: socket.socket, seconds: float = 5) -> bytes:
    """Everything the service sends until it closes the connection (bounded)."""
    sock.settimeout(seconds)
    answer = b""
    try:
        while chunk := sock.recv(65536):
            answer += chunk
    except ConnectionResetError:
        pass
    return answer


def _trickle(sock: socket.socket, data: bytes) -> tuple[bytes, float]:
    """Sends ``data`` a byte every 0.5 s until the service answers; returns the answer and how long
    the sending went on."""
    started = time.monotonic()
    for byte in data:
        try:
            sock.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            break
        readable, _, _ = select.select([sock], [], [], 0.5)
        if readable:
            break
    return _answer(sock), time.monotonic() - started


def _served_meanwhile(base: str) -> None:
    reply = httpx.get(f"{base}/livez", timeout=2)
    assert reply.status_code == 200


def _within_the_deadline(elapsed: float) -> bool:
    return DEADLINE - 0.1 < elapsed < DEADLINE + 1.5


def test_a_connection_that_sends_nothing_is_answered_408_and_closed_at_the_header_deadline(
    service: tuple[str, int],
) -> None:
    base, port = service
    with _connect(port) as silent:
        started = time.monotonic()
        _served_meanwhile(base)
        answer = _answer(silent)
        elapsed = time.monotonic() - started

    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert _within_the_deadline(elapsed), elapsed


def test_headers_sent_a_byte_every_half_second_are_cut_off_at_the_header_deadline(
    service: tuple[str, int],
) -> None:
    base, port = service
    headers = b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40 + b"\r\n\r\n"
    with _connect(port) as slow, ThreadPoolExecutor(1) as pool:
        sending = pool.submit(_trickle, slow, headers)
        _served_meanwhile(base)
        answer, elapsed = sending.result(timeout=10)

    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert _within_the_deadline(elapsed), elapsed


def test_the_next_request_on_a_kept_alive_connection_gets_the_header_deadline_too(
    service: tuple[str, int],
) -> None:
    _, port = service
    with _connect(port) as kept:
        kept.sendall(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        first = b""
        while not first.endswith(b'{"status":"ok"}'):
            chunk = kept.recv(65536)
            assert chunk, first
            first += chunk
        answer, elapsed = _trickle(kept, b"GET /livez HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 40)

    assert first.startswith(b"HTTP/1.1 200 "), first
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert _within_the_deadline(elapsed), elapsed


def _body_trickled(base: str, port: int, head: bytes, body: bytes) -> tuple[bytes, float]:
    """The answer to a request whose headers come at once and whose body a byte at a time, and how
    long it took; other requests are served meanwhile."""
    with _connect(port) as slow, ThreadPoolExecutor(1) as pool:
        slow.sendall(head)
        sending = pool.submit(_trickle, slow, body)
        _served_meanwhile(base)
        return sending.result(timeout=10)


def test_a_soap_body_sent_a_byte_every_half_second_gets_a_client_fault_at_the_body_deadline(
    service: tuple[str, int],
) -> None:
    base, port = service
    envelope = s.envelope_for("GetConsent", 1, s.get_consent("191212121212"))
    head = (
        f"POST {s.path_of('GetConsent', 1)} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml; charset=utf-8\r\n"
        f"Content-Length: {len(envelope)}\r\n\r\n"
    ).encode()
    answer, elapsed = _body_trickled(base, port, head, envelope)

    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 500 Internal Server Error", answer
    assert b"connection: close" in rest.lower()
    assert b"<faultcode>soap:Client</faultcode>" in rest, rest
    assert b"did not arrive in time" in rest
    assert _within_the_deadline(elapsed), elapsed


def test_a_rest_body_sent_a_byte_every_half_second_gets_problem_json_408_at_the_body_deadline(
    service: tuple[str, int],
) -> None:
    base, port = service
    body = json.dumps({"consent": True, "padding": "a" * 40}).encode()
    head = (
        "PUT /api/citizen/v1/consent HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    answer, elapsed = _body_trickled(base, port, head, body)

    headers, _, content = answer.partition(b"\r\n\r\n")
    assert headers.startswith(b"HTTP/1.1 408 "), answer
    assert b"content-type: application/problem+json" in headers.lower()
    assert b"connection: close" in headers.lower()
    problem = json.loads(content)
    assert (problem["status"], problem["code"]) == (408, "request_timeout")
    assert _within_the_deadline(elapsed), elapsed


def test_a_connection_beyond_the_cap_is_answered_503_at_once_and_serving_resumes_as_others_close(
    service: tuple[str, int],
) -> None:
    base, port = service
    held = [_connect(port) for _ in range(CAP)]
    try:
        time.sleep(0.2)  # every one of them accepted by the worker
        with _connect(port) as beyond:
            started = time.monotonic()
            answer = _answer(beyond)
            elapsed = time.monotonic() - started
    finally:
        for sock in held:
            sock.close()

    assert answer.startswith(b"HTTP/1.1 503 "), answer
    assert elapsed < 0.5, elapsed
    time.sleep(0.2)  # the worker has seen them close
    _served_meanwhile(base)
