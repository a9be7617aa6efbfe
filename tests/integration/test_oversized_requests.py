"""A 50 MB body against the real server process: refused with a ``soap:Client`` fault at once, with
the body neither buffered nor parsed (the process's peak memory barely moves), and the service goes on
serving. The in-process tests of the size limit are in test_soap_robustness.py; this one needs a real
socket and process to see memory and streaming as a caller causes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from lxml import etree

from tests import server
from tests.integration import soap as s
from tests.reference import SOAP_ENV, need_shared

FIFTY_MB = 50_000_000
REGISTER = s.path_of("RegisterCertificate", 3)
XML = {"Content-Type": "text/xml; charset=utf-8"}
PATIENT = "191212121212"


def _peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM in /proc")


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    need_shared()
    with server.running(tmp_path_factory.mktemp("big"), env={"INTYG_LOG_LEVEL": "WARNING"}) as (
        base,
        process,
    ):
        yield base, process.pid


def _body() -> bytes:
    envelope = s.register_envelope("big-1", PATIENT).encode()
    return envelope.replace(b"<soapenv:Body>", b"<soapenv:Body><!--" + b" " * FIFTY_MB + b"-->", 1)


def _streamed(data: bytes) -> Iterator[bytes]:
    for start in range(0, len(data), 1 << 16):
        yield data[start : start + (1 << 16)]


@pytest.mark.parametrize("how", ["with Content-Length", "chunked"])
def test_a_50_mb_request_is_a_client_fault_at_once_and_memory_stays_bounded(
    service: tuple[str, int], how: str
) -> None:
    base, pid = service
    data = _body()
    before = _peak_rss_kb(pid)
    started = time.perf_counter()

    content = data if how == "with Content-Length" else _streamed(data)
    response = httpx.post(base + REGISTER, content=content, headers=XML, timeout=60)

    elapsed = time.perf_counter() - started
    assert response.status_code == 500
    fault = etree.fromstring(response.content).find(f".//{{{SOAP_ENV}}}Fault")
    assert fault is not None and fault.findtext("faultcode") == "soap:Client"
    # Generous bounds, not a benchmark: reading 50 MB into memory and parsing it would show in both.
    assert elapsed < 10, f"took {elapsed:.1f} s"
    grown_mb = (_peak_rss_kb(pid) - before) / 1024
    assert grown_mb < 16, f"the server's peak memory grew by {grown_mb:.0f} MB"
    assert httpx.get(f"{base}/readyz").status_code == 200
    with httpx.Client(base_url=base) as client:
        stored = s.SoapClient(client).post(REGISTER, s.register_envelope(f"after-{how}", PATIENT))
    assert stored.result() == ("OK", None, None)
