"""Recipients end to end through the app: SendCertificateToRecipient 2 called by zeep on the reference
WSDL (a real client on the public contract), recipients' GetCertificate 2, and revocations that follow a
certificate to every recipient it was sent to (README.md, "Recipients").

Request bodies are validated against the reference XSD here, responses by the transport
(tests/integration/soap.py). The rules are in tests/unit/test_rules.py, the operations on the fake unit of
work in tests/unit/test_operations.py, the outbox rows of each send on both engines in
tests/integration/test_store.py, and the permission table's part for recipients in
tests/integration/test_callers.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
import zeep
from fastapi.testclient import TestClient
from lxml import etree

from service.config import Settings
from service.store.tables import audit_records, outbox
from tests.integration import soap as s
from tests.integration.conftest import sync_url
from tests.integration.rest import ANNA, CitizenApi, portal_settings
from tests.integration.soap import SoapClient, zeep_service
from tests.reference import CONTRACTS_TABLE, SOAP_ENV, assert_valid, our_schema, reference_schema

pytestmark = pytest.mark.shared

PATIENT = ANNA
GIVER = "SE2321000016-39KJ"
UNIT = "SE2321000016-H489"
HEADER = {"LogicalAddress": GIVER}
PART = "769bb12b-bd9f-4203-a5cd-fd14f2eb3b80"
SEND = next(c for c in CONTRACTS_TABLE if c.id == "SendCertificateToRecipient_2")


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    # The citizen's REST API beside the SOAP contracts (the development consumer, no permission table).
    return portal_settings(database_url, tmp_path)


def _hsa(extension: str) -> dict[str, str]:
    return {"root": "1.2.752.129.2.1.4.1", "extension": extension}


def _person(number: str = PATIENT) -> dict[str, str]:
    return {"root": "1.2.752.129.2.1.3.1", "extension": number}


PROFESSIONAL = {
    "personal-id": _hsa("SE2321000016-6G5R"),
    "fullstandigtNamn": "Karl Karlsson",
    "enhet": {
        "enhets-id": _hsa(UNIT),
        "arbetsplatskod": {"root": "1.2.752.29.4.71", "extension": "45312"},
        "enhetsnamn": "VE1",
        "postadress": "",
        "postnummer": "",
        "postort": "",
        "telefonnummer": "",
        "vardgivare": {"vardgivare-id": _hsa(GIVER), "vardgivarnamn": "VG1"},
    },
}


def _request(
    certificate_id: str, recipient: str = "FKASSA", *, patient: str = PATIENT, citizen: str | None = None
) -> dict[str, Any]:
    sender = {"person-id": _person(citizen)} if citizen else {"hosPersonal": PROFESSIONAL}
    return {
        "skickatTidpunkt": "2026-01-02T10:00:00",
        "intygs-id": {"root": UNIT, "extension": certificate_id},
        "patientPerson-id": _person(patient),
        "mottagare": {"code": recipient, "codeSystem": PART},
        "skickatAv": sender,
    }


def _send(client: TestClient, certificate_id: str, recipient: str = "FKASSA", **kw: Any) -> tuple[Any, ...]:
    """Sends through zeep on the reference WSDL; (resultCode, resultText, errorId)."""
    service = zeep_service(client, "SendCertificateToRecipient", 2)
    result = service.SendCertificateToRecipient(
        **_request(certificate_id, recipient, **kw), _soapheaders=HEADER
    )["result"]
    return result["resultCode"], result["resultText"], result["errorId"]


def _register(soap: SoapClient, certificate_id: str = "c-1", patient: str = PATIENT) -> None:
    reply = soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope(certificate_id, patient))
    assert reply.result()[0] == "OK"


def _revoke(soap: SoapClient, certificate_id: str = "c-1") -> None:
    request = s.peer_request(
        "revokecertificate", **{"data.intygsId": certificate_id, "data.personId": PATIENT}
    )
    assert soap.post(s.path_of("RevokeCertificate", 2), request).result()[0] == "OK"


def _as(soap: SoapClient, part: str, certificate_id: str = "c-1") -> s.Reply:
    return soap.call("GetCertificate", 2, s.get_certificate(certificate_id, part))


def _outbox(database_url: str) -> list[tuple[str, str, str, Any]]:
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            query = sqlalchemy.select(
                outbox.c.destination, outbox.c.kind, outbox.c.certificate_id, outbox.c.created_at
            ).order_by(outbox.c.id)
            return [tuple(row) for row in connection.execute(query).all()]
    finally:
        engine.dispose()


def _audited_at(database_url: str, action: str) -> list[Any]:
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            query = sqlalchemy.select(audit_records.c.at).where(audit_records.c.action == action)
            return list(connection.execute(query).scalars())
    finally:
        engine.dispose()


# --- The contract ----------------------------------------------------------------------------------------


@pytest.mark.one_engine("the request bodies zeep writes do not depend on the store")
@pytest.mark.parametrize("citizen", [None, PATIENT], ids=["hosPersonal", "person-id"])
def test_the_request_zeep_writes_from_the_reference_wsdl_is_valid_against_ours_and_the_reference(
    client: TestClient, citizen: str | None
) -> None:
    service = zeep_service(client, "SendCertificateToRecipient", 2)
    envelope = service._client.create_message(
        service, "SendCertificateToRecipient", **_request("c-1", citizen=citizen), _soapheaders=HEADER
    )
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    assert_valid(our_schema(), body[0], "our contracts")
    assert_valid(reference_schema(str(SEND.reference_xsd)), body[0], "reference contract")


def test_the_wsdl_is_served_at_the_contracts_path(client: TestClient) -> None:
    response = client.get(s.path_of("SendCertificateToRecipient", 2) + "?wsdl")
    assert response.status_code == 200
    root = etree.fromstring(response.content)
    assert root.get("targetNamespace") == (
        "urn:riv:clinicalprocess:healthcond:certificate:SendCertificateToRecipient:2:rivtabp21"
    )


# --- A care system sends; the recipient reads it ------------------------------------------------------------


def test_a_care_system_sends_to_forsakringskassan_once_and_forsakringskassan_then_reads_it(
    soap: SoapClient, client: TestClient, database_url: str
) -> None:
    _register(soap)
    assert _as(soap, "FKASSA").fault_string == _as(soap, "FKASSA", "c-unknown").fault_string

    assert _send(client, "c-1") == ("OK", None, None)
    # As the national service answers a repeated send (SendCertificateToRecipientResponderImpl): INFO.
    assert _send(client, "c-1") == ("INFO", "Certificate already sent to FKASSA", None)

    read = _as(soap, "FKASSA")
    assert not read.is_fault
    assert s.listed_ids(read) == ["c-1"]
    assert s.statuses(read) == [("HSVARD", "RECEIV"), ("FKASSA", "SENTTO")]
    assert s.statuses(_as(soap, "HSVARD")) == [("HSVARD", "RECEIV"), ("FKASSA", "SENTTO")]
    deliveries = [(d, k, c) for d, k, c, _ in _outbox(database_url)]
    assert deliveries.count(("FKASSA", "sent", "c-1")) == 1


@pytest.mark.parametrize(
    ("certificate_id", "recipient", "patient", "expected"),
    [
        ("c-unknown", "FKASSA", PATIENT, ("ERROR", "Certificate not found", "APPLICATION_ERROR")),
        ("c-1", "FKASSA", "197705232382", ("ERROR", None, "VALIDATION_ERROR")),
        ("c-1", "TRANSP", PATIENT, ("ERROR", "Unknown recipient for this certificate", "VALIDATION_ERROR")),
        ("c-1", "HSVARD", PATIENT, ("ERROR", "Unknown recipient for this certificate", "VALIDATION_ERROR")),
    ],
    ids=["unknown id", "another patient", "a recipient that does not take the type", "not a recipient"],
)
def test_a_refused_send_answers_in_the_contracts_form_and_changes_nothing(
    soap: SoapClient,
    client: TestClient,
    database_url: str,
    certificate_id: str,
    recipient: str,
    patient: str,
    expected: tuple[str, str | None, str],
) -> None:
    _register(soap)

    code, text, error_id = _send(client, certificate_id, recipient, patient=patient)

    assert (code, error_id) == expected[0::2]
    if expected[1] is not None:
        assert text == expected[1]
    assert patient not in (text or "")
    assert s.statuses(_as(soap, "HSVARD")) == [("HSVARD", "RECEIV")]
    assert [row[:2] for row in _outbox(database_url)] == [("statistics", "registered")]


def test_sending_a_revoked_certificate_answers_info_as_the_national_service_and_records_nothing(
    soap: SoapClient, client: TestClient
) -> None:
    _register(soap)
    _revoke(soap)

    assert _send(client, "c-1") == ("INFO", "Certificate has been revoked", None)

    assert ("FKASSA", "SENTTO") not in s.statuses(_as(soap, "HSVARD"))


def test_the_citizen_sends_through_a_portal_only_with_consent(soap: SoapClient, client: TestClient) -> None:
    _register(soap)

    code, text, error_id = _send(client, "c-1", citizen=PATIENT)
    assert (code, error_id) == ("ERROR", "APPLICATION_ERROR")
    assert "NOCONSENT" in (text or "")
    assert soap.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"
    # Another citizen's send of it is answered as an unknown id.
    assert _send(client, "c-1", citizen="197705232382") == _send(client, "c-unknown", citizen="197705232382")

    assert _send(client, "c-1", citizen=PATIENT) == ("OK", None, None)
    assert ("FKASSA", "SENTTO") in s.statuses(_as(soap, "HSVARD"))


# --- What a recipient sees -------------------------------------------------------------------------------------


def test_a_recipient_sees_its_own_events_and_not_the_citizens_archive_nor_another_recipients(
    soap: SoapClient, client: TestClient
) -> None:
    _register(soap)
    assert soap.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"
    assert _send(client, "c-1")[0] == "OK"
    for part, status in [("INVANA", "DELETE"), ("FKASSA", "RECEIV"), ("AF", "RECEIV")]:
        assert soap.call("SetCertificateStatus", 2, s.set_status("c-1", part, status)).result()[0] == "OK"

    assert s.statuses(_as(soap, "FKASSA")) == [
        ("HSVARD", "RECEIV"),
        ("FKASSA", "SENTTO"),
        ("FKASSA", "RECEIV"),
    ]
    # Arbetsförmedlingen recorded a receipt, but nothing was sent to it: it reads nothing.
    af = _as(soap, "AF")
    assert (af.fault_code, af.fault_string) == ("soap:Client", "Certificate not found")


# --- Revocations follow (issue 13, item 4) ---------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["SendCertificateToRecipient", "REST"])
def test_revoking_a_sent_certificate_queues_its_revocation_to_the_recipient_which_then_reads_it_revoked(
    soap: SoapClient, client: TestClient, database_url: str, channel: str
) -> None:
    _register(soap)
    if channel == "REST":
        anna = CitizenApi(client, PATIENT)
        anna.consent()
        assert anna.post("/certificates/c-1/send", {"recipient": "FKASSA"}).status_code == 200
    else:
        assert _send(client, "c-1") == ("OK", None, None)
    assert [(d, k) for d, k, _, _ in _outbox(database_url) if d == "FKASSA"] == [("FKASSA", "sent")]

    _revoke(soap)

    rows = _outbox(database_url)
    [revoked] = [row for row in rows if row[:2] == ("FKASSA", "revoked")]
    # Written by the revocation's transaction: at the time its audit record names.
    assert revoked[3] in _audited_at(database_url, "revoke")
    read = _as(soap, "FKASSA")
    assert s.statuses(read) == [("HSVARD", "RECEIV"), ("FKASSA", "SENTTO"), ("HSVARD", "CANCEL")]


def test_a_revocation_goes_to_no_recipient_the_certificate_was_not_sent_to(
    soap: SoapClient, database_url: str
) -> None:
    _register(soap)
    _revoke(soap)

    assert [row[:2] for row in _outbox(database_url) if row[0] != "statistics"] == []
    assert _as(soap, "FKASSA").fault_string == "Certificate not found"


def test_a_client_of_the_reference_contract_reads_a_revoked_certificate_as_forsakringskassan(
    soap: SoapClient, client: TestClient
) -> None:
    _register(soap)
    assert _send(client, "c-1")[0] == "OK"
    _revoke(soap)

    service = zeep_service(client, "GetCertificate", 2)
    intyg = service.GetCertificate(
        **{"intygs-id": {"root": UNIT, "extension": "c-1"}, "part": {"code": "FKASSA", "codeSystem": PART}},
        _soapheaders=HEADER,
    )["intyg"]
    assert [(st["part"]["code"], st["status"]["code"]) for st in intyg["status"]][-1] == ("HSVARD", "CANCEL")
    with pytest.raises(zeep.exceptions.Fault):
        service.GetCertificate(
            **{
                "intygs-id": {"root": UNIT, "extension": "c-1"},
                "part": {"code": "TRANSP", "codeSystem": PART},
            },
            _soapheaders=HEADER,
        )
