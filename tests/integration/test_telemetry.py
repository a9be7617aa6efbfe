"""Request telemetry through the app: request ids, the RED metrics' labels, and the JSON log event.

The suite-wide checks that no label or log line names a person or a certificate are in
tests/conftest.py (after each test); the dashboard against a real Prometheus in tests/ops/test_running_service.py.
"""

from __future__ import annotations

import io
import json
import logging

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY

from service.config import Settings
from service.telemetry import configure_logging
from tests.integration import soap as s
from tests.integration.soap import SoapClient

# A request's id, its log event and the API's routes are the app's, whatever the database: these
# requests are refused (401) or not found before any operation. Their one write, a 401's audit record,
# is made on both engines by test_rest_requests_are_counted_by_route_template_and_outcome, which keeps
# both, as do the SOAP counts (the store decides their outcomes) and readiness (it asks the store).
BEFORE_THE_STORE = pytest.mark.one_engine("answered before any operation: a 401 or an unknown route")


def _count(operation: str, channel: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "intyg_requests_total", {"operation": operation, "channel": channel, "outcome": outcome}
    )
    return value or 0.0


@BEFORE_THE_STORE
def test_a_request_id_is_echoed_or_made(client: TestClient) -> None:
    given = client.get("/api/citizen/v1/consent", headers={"X-Request-ID": "portal-42.a"})
    assert given.headers["x-request-id"] == "portal-42.a"
    # An id that could carry anything (spaces, an identity number's length of digits is fine as text,
    # but not free text) is replaced by one of ours.
    made = client.get("/api/citizen/v1/consent", headers={"X-Request-ID": "not an id; drop table"})
    assert made.headers["x-request-id"] != "not an id; drop table"
    assert len(made.headers["x-request-id"]) == 32


def test_rest_requests_are_counted_by_route_template_and_outcome(client: TestClient) -> None:
    operation = "GET /api/citizen/v1/certificates/{certificate_id}"
    before = _count(operation, "rest", "denied")
    assert client.get("/api/citizen/v1/certificates/cert-secret-id").status_code == 401
    assert _count(operation, "rest", "denied") == before + 1


def test_soap_requests_are_counted_by_contract_and_business_outcome(soap: SoapClient) -> None:
    before_ok = _count("RegisterCertificate:3", "soap", "ok")
    before_info = _count("RegisterCertificate:3", "soap", "info")
    before_fault = _count("GetCertificate:2", "soap", "fault")
    register = s.register_envelope("telemetry-1", "191212121212")
    soap.post(s.path_of("RegisterCertificate", 3), register)
    soap.post(s.path_of("RegisterCertificate", 3), register)
    soap.call("GetCertificate", 2, s.get_certificate("unknown", "HSVARD"))
    assert _count("RegisterCertificate:3", "soap", "ok") == before_ok + 1
    assert _count("RegisterCertificate:3", "soap", "info") == before_info + 1
    assert _count("GetCertificate:2", "soap", "fault") == before_fault + 1


def _registered(type_label: str) -> float:
    return REGISTRY.get_sample_value("intyg_certificates_registered_total", {"type": type_label}) or 0.0


def _refused(reason: str) -> float:
    return REGISTRY.get_sample_value("intyg_refusals_total", {"reason": reason}) or 0.0


def test_a_registered_certificate_is_counted_by_its_type_and_an_unknown_type_as_a_refusal(
    soap: SoapClient,
) -> None:
    """The registering system writes the type code; a label value is never one it chose, only a code of the
    type table (service/certificate_type.py). A type the table does not know is not registered at all."""
    before = {label: _registered(label) for label in ("LISJP", "DB", "other")}
    before_refused = _refused("UnknownCertificateType")
    soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope("type-known", "191212121212"))
    soap.post(s.path_of("RegisterCertificate", 3), s.death_certificate("type-db", "191212121212"))
    for invented in ("XYZ123", "LISJP2"):
        envelope = s.register_envelope(f"type-{invented}", "191212121212").replace(">LISJP<", f">{invented}<")
        assert soap.post(s.path_of("RegisterCertificate", 3), envelope).result()[0::2] == (
            "ERROR",
            "VALIDATION_ERROR",
        )

    assert {label: _registered(label) - count for label, count in before.items()} == {
        "LISJP": 1,
        "DB": 1,
        "other": 0,
    }
    assert _refused("UnknownCertificateType") == before_refused + 2
    labels = {
        sample.labels.get("type")
        for family in REGISTRY.collect()
        if family.name == "intyg_certificates_registered"
        for sample in family.samples
    }
    assert not labels & {"XYZ123", "LISJP2"}


@BEFORE_THE_STORE
def test_the_api_does_not_answer_metrics(client: TestClient) -> None:
    # The metrics have a port of their own (INTYG_METRICS_PORT; tests/integration/test_cli.py serves it).
    answer = client.get("/metrics")
    assert answer.status_code == 404
    assert "intyg_" not in answer.text


@BEFORE_THE_STORE
def test_the_service_logs_one_json_object_per_line_with_the_request_event(client: TestClient) -> None:
    root = logging.getLogger()
    kept = root.handlers[:], root.level
    try:
        configure_logging(Settings(log_format="json"))
        stream = io.StringIO()
        root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
        client.get("/api/citizen/v1/consent", headers={"X-Request-ID": "req-1"})
    finally:
        root.handlers[:], level = kept
        root.setLevel(level)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    request = next(e for e in events if e["message"] == "request")
    assert request["request_id"] == "req-1"
    assert request["operation"] == "GET /api/citizen/v1/consent"
    assert (request["channel"], request["outcome"], request["status"]) == ("rest", "denied", 401)
    assert isinstance(request["duration_ms"], float)


def test_readiness_is_refused_while_draining_and_liveness_is_not(client: TestClient) -> None:
    assert client.get("/readyz").status_code == 200
    app = client.app
    assert isinstance(app, FastAPI)
    app.state.draining = True  # what the SIGTERM handler sets (tests/ops: the real signal)
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer.json()["checks"]["accepting"] is False
    assert client.get("/livez").status_code == 200
