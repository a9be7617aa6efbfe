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
class Prometheus:
    # On Prometheus's HTTP API, one connection for the test's many queries.
    api: httpx.Client
    # What it scrapes (host:port): the service's metrics port, since the API's port does not answer /metrics.
    target: str

    def query(self, expr: str) -> list[dict[str, Any]]:
        answer = self.api.get("/api/v1/query", params={"query": expr}).json()
        assert answer["status"] == "success", f"{expr}: {answer.get('error')}"
        result: list[dict[str, Any]] = answer["data"]["result"]
        return result


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    """A real Prometheus scraping the metrics port the service is then started on. Started first: its
    first scrape comes some 5 s after it starts (its discovery hands on targets every 5 s), and the
    service starts meanwhile."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus is not installed: run `bash tools/install-ops-tools` (Debian's package)")
    port = server.free_port()
    target = f"127.0.0.1:{server.free_port()}"
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
        with httpx.Client(base_url=base) as api:
            yield Prometheus(api, target)
    finally:
        server.stop(process)


@pytest.fixture
def service(tmp_path: Path, prometheus: Prometheus) -> Iterator[str]:
    """The service with two workers and its metrics where Prometheus scrapes them; its base URL."""
    env = {**FAST_GAUGES, "INTYG_METRICS_PORT": prometheus.target.rsplit(":", 1)[1]}
    with server.running(tmp_path, "--workers", "2", env=env) as (base, _):
        yield base


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


def _panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text("utf-8"))
    return [
        (panel["title"], target["expr"])
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]


def test_every_dashboard_panel_answers_from_a_real_prometheus_scraping_two_workers(
    service: str, prometheus: Prometheus, tmp_path: Path
) -> None:
    sent = _load(service, tmp_path)
    # Enough scrapes after the load for every rate() window to hold two samples of the new values.
    server.wait_until(
        lambda: (
            bool(prometheus.query("sum(intyg_requests_total)"))
            and float(prometheus.query("sum(intyg_requests_total)")[0]["value"][1]) >= sent
        ),
        30,
        "Prometheus has scraped the load",
    )
    queries = _panel_queries()
    server.wait_until(
        lambda: all(prometheus.query(expr) for _, expr in queries),
        30,
        "every panel's rate() window holds two samples of the new values",
    )

    total = float(prometheus.query("sum(intyg_requests_total)")[0]["value"][1])
    assert total == sent, "both workers' requests are counted once each (multiprocess mode)"
    assert len(prometheus.query('up{job="intygstjanst"} == 1')) == 1
    assert httpx.get(f"{service}/metrics").status_code == 404

    assert len(queries) >= 10
    empty = [(title, expr) for title, expr in queries if not prometheus.query(expr)]
    assert not empty, f"panels with no series: {empty}"

    names = sorted({name for _, expr in queries for name in re.findall(r"\b(intyg_[a-z_]+)", expr)})
    missing = [name for name in names if not prometheus.query(f'{{__name__="{name}"}}')]
    assert not missing, f"metrics the dashboard names but the service does not expose: {missing}"
    deleted = {
        r["metric"]["rule"]: float(r["value"][1])
        for r in prometheus.query("intyg_certificates_deleted_total")
    }
    assert deleted == {"5": 1.0, "6": 1.0}


def _soap_in_flight(metrics: int) -> bool:
    """Whether the service serves a SOAP request: it has read the request's headers, not yet answered."""
    exposed = httpx.get(f"http://127.0.0.1:{metrics}/metrics").text
    return 'intyg_requests_in_flight{channel="soap"} 1.0' in exposed


def _readiness_now(base: str) -> str:
    """What a client asking ``/readyz`` on a new connection hears within a second: a status code,
    "refused" where nothing listens any more, "closed" where the connection was taken and then closed
    or reset unanswered, or "hung"."""
    try:
        return str(httpx.get(f"{base}/readyz", timeout=1).status_code)
    except httpx.ConnectError:
        return "refused"
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return "closed"
    except httpx.TimeoutException:
        return "hung"


def _drained(base: str) -> str:
    """What a new connection hears once the service, after SIGTERM, has settled into its drain: no longer
    ready, nor answering late ("503") or closing what it took as it stopped listening ("closed"). Bounded."""
    deadline = time.monotonic() + 10
    while (heard := _readiness_now(base)) in ("200", "503", "closed"):
        assert time.monotonic() < deadline, f"the service still answers {heard} 10 s after SIGTERM"
        time.sleep(0.05)
    return heard


def test_sigterm_finishes_the_request_in_flight_refuses_readiness_and_exits_in_time(tmp_path: Path) -> None:
    port, metrics = server.free_port(), server.free_port()
    grace = 10
    env = {**FAST_GAUGES, "INTYG_SHUTDOWN_GRACE_SECONDS": str(grace), "INTYG_METRICS_PORT": str(metrics)}
    process = server.start(tmp_path, port, env=env)
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
            server.wait_until(lambda: _soap_in_flight(metrics), 10, "the request is in flight")
            process.send_signal(signal.SIGTERM)
            stopped = time.monotonic()
            # A second connection, already open: after SIGTERM it may still ask, and must hear "not ready".
            _drained(base)
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


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_client_connecting_while_the_service_drains_is_refused_at_once_never_left_hanging(
    tmp_path: Path, workers: str
) -> None:
    """With several workers, uvicorn's parent process used to keep the listening socket open through the
    drain, so a new connection was taken into its backlog, hung until the grace ended, and was reset
    (``service/connection.py``, Supervisor). Readiness is refused meanwhile, on a connection opened before
    SIGTERM as well."""
    port, metrics = server.free_port(), server.free_port()
    grace = 10
    process = server.start(
        tmp_path,
        port,
        "--workers",
        workers,
        env={
            "INTYG_SHUTDOWN_GRACE_SECONDS": str(grace),
            "INTYG_BODY_DEADLINE_SECONDS": "30",
            "INTYG_METRICS_PORT": str(metrics),
        },
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
            server.wait_until(lambda: _soap_in_flight(metrics), 10, "the request is in flight")
            process.send_signal(signal.SIGTERM)
            # uvicorn's supervisor looks at its signals every 0.5 s before it passes SIGTERM on.
            heard = [_drained(base)]
            probe.settimeout(2)
            probe.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            try:
                readiness = probe.recv(4096).split(b"\r\n", 1)[0]
            except ConnectionResetError:
                readiness = b""
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
