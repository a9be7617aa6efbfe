"""The service as operators run it: ``intygstjanst serve`` with two worker processes, scraped by a real
Prometheus, and stopped with SIGTERM.

- Every dashboard panel's PromQL is evaluated through Prometheus's HTTP API after a short load that
  exercises every operation; none may error or return no series, and every metric a panel names must
  exist in Prometheus (so a fallback like ``or vector(0)`` cannot hide a misnamed metric).
- Metrics are aggregated over both workers (multiprocess mode) and scraped from the metrics port, which
  the supervising process serves: the request counter equals the number of requests sent, whichever
  worker served them, and the API's port does not answer /metrics.
- SIGTERM: a request in flight is finished, readiness is refused meanwhile, and the process exits
  within the grace period.

Skipped, with the reason, where ``prometheus`` is not installed (``bash tools/install-ops-tools``).
Everything listens on 127.0.0.1 only; load and waits are bounded.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests import server
from tests.integration import soap as s
from tests.reference import need_shared, with_check_digit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "helm/intygstjanst/dashboards/intygstjanst.json"
FAST_GAUGES = {"INTYG_METRICS_REFRESH_SECONDS": "1"}
SOAP = {"Content-Type": "text/xml; charset=utf-8"}


@dataclass(frozen=True)
class Service:
    base: str
    # The metrics port's address (host:port): the API's port does not answer /metrics.
    metrics: str


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    metrics = server.free_port()
    env = {**FAST_GAUGES, "INTYG_METRICS_PORT": str(metrics)}
    with server.running(tmp_path, "--workers", "2", env=env) as (base, _):
        yield Service(base, f"127.0.0.1:{metrics}")


def _post(client: httpx.Client, operation: str, major: int, body: str) -> httpx.Response:
    return client.post(
        s.path_of(operation, major), content=s.envelope_for(operation, major, body), headers=SOAP
    )


def _load(base: str, workdir: Path) -> int:
    """One of every operation and outcome the dashboard shows; returns how many requests it sent."""
    need_shared()
    patients = [with_check_digit(f"1980010{i}00{i}") for i in range(1, 4)]
    token = subprocess.run(
        [str(server.INTYGSTJANST), "dev-token", patients[0]],
        cwd=workdir,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    bearer = {"Authorization": f"Bearer {token}"}
    sent = 0
    with httpx.Client(base_url=base, timeout=30) as client:
        for round_ in range(3):
            for index, patient in enumerate(patients):
                certificate = f"load-{round_}-{index}"
                client.post(
                    s.path_of("RegisterCertificate", 3),
                    content=s.register_envelope(certificate, patient),
                    headers=SOAP,
                )
                _post(client, "GetCertificate", 2, s.get_certificate(certificate, "HSVARD"))
                _post(
                    client,
                    "ListCertificatesForCare",
                    3,
                    s.list_for_care(patient, care_giver="SE2321000016-39KJ"),
                )
                sent += 3
        requests = [
            ("SetConsent", 1, s.set_consent(patients[0], True)),
            ("SetCertificateStatus", 2, s.set_status("load-0-0", "INVANA", "DELETE")),
            ("SetCertificateStatus", 2, s.set_status("load-0-0", "INVANA", "RESTOR")),
            ("SetCertificateStatus", 2, s.set_status("load-0-0", "FKASSA", "SENTTO")),
            ("RemoveCertificateForCare", 1, s.remove_for_care("load-1-0")),  # kept for the citizen
            ("RemoveCertificateForCare", 1, s.remove_for_care("load-0-1")),  # no consent: deleted (rule 5)
            ("SetConsent", 1, s.set_consent(patients[0], False)),  # deletes load-1-0 (rule 6)
            ("SetConsent", 1, s.set_consent(patients[0], True)),
            ("GetCertificate", 2, s.get_certificate("unknown", "HSVARD")),  # a fault
            ("ListCertificatesForCitizen", 4, s.list_for_citizen(patients[1])),  # denied: no consent
        ]
        for operation, major, body in requests:
            _post(client, operation, major, body)
            sent += 1
        revoke = s.peer_request(
            "revokecertificate", **{"data.intygsId": "load-2-0", "data.personId": patients[0]}
        )
        client.post(s.path_of("RevokeCertificate", 2), content=revoke, headers=SOAP)
        client.get("/api/citizen/v1/certificates", headers=bearer)
        client.get("/api/citizen/v1/access-log", headers=bearer)
        client.get("/api/citizen/v1/consent")  # 401
        sent += 4
    return sent


@pytest.fixture
def prometheus(tmp_path: Path, service: Service) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed: run `bash tools/install-ops-tools` (Debian's package)")
    port = server.free_port()
    target = service.metrics
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        f"scrape_configs:\n  - job_name: intygstjanst\n    static_configs: [{{targets: ['{target}']}}]\n"
    )
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_until(lambda: httpx.get(f"{base}/-/ready").status_code == 200, 30, "Prometheus is ready")
        yield base
    finally:
        server.stop(process)


def _query(prometheus: str, expr: str) -> list[dict[str, Any]]:
    answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": expr}).json()
    assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_every_dashboard_panel_answers_from_a_real_prometheus_scraping_two_workers(
    service: Service, prometheus: str, tmp_path: Path
) -> None:
    sent = _load(service.base, tmp_path)
    # Enough scrapes after the load for every rate() window to hold two samples of the new values.
    server.wait_until(
        lambda: (
            bool(_query(prometheus, "sum(intyg_requests_total)"))
            and float(_query(prometheus, "sum(intyg_requests_total)")[0]["value"][1]) >= sent
        ),
        30,
        "Prometheus has scraped the load",
    )
    queries = _panel_queries()
    server.wait_until(
        lambda: all(_query(prometheus, expr) for _, expr in queries),
        30,
        "every panel's rate() window holds two samples of the new values",
    )

    total = float(_query(prometheus, "sum(intyg_requests_total)")[0]["value"][1])
    assert total == sent, "both workers' requests are counted once each (multiprocess mode)"
    assert len(_query(prometheus, 'up{job="intygstjanst"} == 1')) == 1
    assert httpx.get(f"{service.base}/metrics").status_code == 404

    assert len(queries) >= 10
    empty = [(title, expr) for title, expr in queries if not _query(prometheus, expr)]
    assert not empty, f"panels with no series: {empty}"

    names = sorted({name for _, expr in queries for name in re.findall(r"\b(intyg_[a-z_]+)", expr)})
    missing = [name for name in names if not _query(prometheus, f'{{__name__="{name}"}}')]
    assert not missing, f"metrics the dashboard names but the service does not expose: {missing}"
    deleted = {
        r["metric"]["rule"]: float(r["value"][1])
        for r in _query(prometheus, "intyg_certificates_deleted_total")
    }
    assert deleted == {"5": 1.0, "6": 1.0}


def test_sigterm_finishes_the_request_in_flight_refuses_readiness_and_exits_in_time(tmp_path: Path) -> None:
    port = server.free_port()
    grace = 10
    process = server.start(tmp_path, port, env={**FAST_GAUGES, "INTYG_SHUTDOWN_GRACE_SECONDS": str(grace)})
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the service is ready")
        envelope = s.envelope_for("GetConsent", 1, s.get_consent("191212121212"))
        head, tail = envelope[: len(envelope) // 2], envelope[len(envelope) // 2 :]
        with (
            socket.create_connection(("127.0.0.1", port)) as conn,
            socket.create_connection(("127.0.0.1", port)) as probe,
        ):
            path = s.path_of("GetConsent", 1)
            conn.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\nContent-Length: {len(envelope)}\r\n\r\n".encode()
                + head
            )
            # A second connection, already open: after SIGTERM it may still ask, and must hear "not ready".
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            time.sleep(0.5)
            probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            readiness = probe.recv(4096).split(b"\r\n", 1)[0]
            conn.sendall(tail)
            reply = b""
            while b"</soap:Envelope>" not in reply:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200"), reply[:200]
        assert b"consent-given" in reply
        assert readiness in (b"HTTP/1.1 503 Service Unavailable", b""), readiness
        process.wait(timeout=grace + 5)
        assert time.monotonic() - stopped < grace + 5
        # uvicorn shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM, not a crash.
        assert process.returncode in (0, -signal.SIGTERM)
    finally:
        server.stop(process)


def _readiness_now(base: str) -> str:
    """What a client asking ``/readyz`` on a new connection hears within a second: a status code,
    "refused" where nothing listens any more, or "hung"."""
    try:
        return str(httpx.get(f"{base}/readyz", timeout=1).status_code)
    except httpx.ConnectError:
        return "refused"
    except httpx.TimeoutException:
        return "hung"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_client_connecting_while_the_service_drains_is_refused_at_once_never_left_hanging(
    tmp_path: Path, workers: str
) -> None:
    """With several workers, uvicorn's parent process used to keep the listening socket open through the
    drain, so a new connection was taken into its backlog, hung until the grace ended, and was reset
    (``service/connection.py``, Supervisor). Readiness is refused meanwhile, on a connection opened before
    SIGTERM as well."""
    port = server.free_port()
    grace = 10
    process = server.start(
        tmp_path,
        port,
        "--workers",
        workers,
        env={"INTYG_SHUTDOWN_GRACE_SECONDS": str(grace), "INTYG_BODY_DEADLINE_SECONDS": "30"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        server.wait_until(lambda: httpx.get(f"{base}/readyz").status_code == 200, 30, "the service is ready")
        envelope = s.envelope_for("GetConsent", 1, s.get_consent("191212121212"))
        with (
            socket.create_connection(("127.0.0.1", port)) as held,
            socket.create_connection(("127.0.0.1", port)) as probe,
        ):
            # A request in flight (half its body sent) keeps its worker draining until the grace ends.
            held.sendall(
                f"POST {s.path_of('GetConsent', 1)} HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
                f"Content-Length: {len(envelope)}\r\n\r\n".encode()
                + envelope[: len(envelope) // 2]
            )
            time.sleep(0.5)
            process.send_signal(signal.SIGTERM)
            # uvicorn's supervisor looks at its signals every 0.5 s before it passes SIGTERM on.
            time.sleep(1.5)
            probe.settimeout(2)
            probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                readiness = probe.recv(4096).split(b"\r\n", 1)[0]
            except ConnectionResetError:
                readiness = b""
            heard = []
            for _ in range(3):
                asked = time.monotonic()
                heard.append(_readiness_now(base))
                assert time.monotonic() - asked < 1.5, heard
                time.sleep(0.3)
            assert process.poll() is None, "the service should still be draining the request in flight"
        assert readiness in (b"HTTP/1.1 503 Service Unavailable", b""), readiness
        assert set(heard) <= {"refused", "503"}, heard
        process.wait(timeout=grace + 5)
    finally:
        server.stop(process)
