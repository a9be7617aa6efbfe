"""The 2013 citizen contracts for legacy portals, called by zeep on the reference WSDLs: GetCertificate 1,
ListCertificates 1 and SetCertificateStatus 1 (RIVTA BP 2.0, ``wsa:To``; insuranceprocess ResultOfCall).

They are the same operations as the citizen REST API (service/operations.py), so each test also checks
that both channels see one state. Responses are validated against the reference XSDs by the transport
(tests/integration/soap.py); REST itself is in test_rest_api.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from service.config import Settings
from tests.integration import soap as s
from tests.integration.rest import ANNA, BERTIL, CitizenApi, portal_settings, register, revoke
from tests.integration.soap import SoapClient, zeep_service

pytestmark = pytest.mark.shared

HEADER = {"LogicalAddress": "SE2321000016-39KJ"}  # the reference WSDL names its wsa:To part LogicalAddress


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


@pytest.fixture
def anna(client: TestClient) -> CitizenApi:
    return CitizenApi(client, ANNA)


def result(response: Any) -> tuple[str, str | None, str | None]:
    found = response["result"]
    return found["resultCode"], found["infoText"] or found["errorText"], found["errorId"]


def get_certificate(client: TestClient, certificate_id: str, citizen: str = ANNA) -> Any:
    service = zeep_service(client, "GetCertificate", 1)
    return service.GetCertificate(
        certificateId=certificate_id, nationalIdentityNumber=citizen, _soapheaders=HEADER
    )


def list_certificates(client: TestClient, citizen: str = ANNA, **filters: Any) -> Any:
    service = zeep_service(client, "ListCertificates", 1)
    return service.ListCertificates(nationalIdentityNumber=citizen, **filters, _soapheaders=HEADER)


def set_status(client: TestClient, certificate_id: str, target: str, status: str, citizen: str = ANNA) -> Any:
    service = zeep_service(client, "SetCertificateStatus", 1)
    return service.SetCertificateStatus(
        certificateId=certificate_id,
        nationalIdentityNumber=citizen,
        target=target,
        status=status,
        timestamp="2026-01-02T10:00:00",
        _soapheaders=HEADER,
    )


def shape(root: etree._Element) -> list[tuple[str, str, list[tuple[str, str]]]]:
    return [
        (str(e.tag), (e.text or "").strip(), sorted((str(k), str(v)) for k, v in e.attrib.items()))
        for e in root.iter()
        if isinstance(e.tag, str)
    ]


def care_statuses(soap: SoapClient, certificate_id: str) -> list[tuple[str | None, str | None]]:
    return s.statuses(soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD")))


# --- GetCertificate 1 ----------------------------------------------------------------------------------------


def test_get_certificate_1_answers_the_meta_and_the_certificate_as_registered(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()

    response = get_certificate(client, "c-1")

    assert result(response) == ("OK", None, None)
    meta = response["meta"]
    assert (meta["certificateId"], meta["certificateType"], meta["available"]) == ("c-1", "LISJP", "true")
    assert meta["issuerName"] and meta["facilityName"]
    assert [(st["target"], st["type"]) for st in meta["status"]] == [("HSVARD", "RECEIVED")]
    (content,) = response["certificate"]["_value_1"]
    assert etree.QName(content).localname == "intyg"
    # The same document the REST API serves (namespace prefixes aside).
    assert shape(content) == shape(etree.fromstring(anna.get("/certificates/c-1/document").content))


def test_get_certificate_1_of_a_revoked_certificate_is_info_without_the_certificate(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    revoke(soap, "c-1", ANNA)

    response = get_certificate(client, "c-1")

    assert result(response)[0] == "INFO"
    assert response["meta"] is None and response["certificate"] is None


def test_get_certificate_1_without_consent_is_refused(soap: SoapClient, client: TestClient) -> None:
    register(soap, "c-1", ANNA)
    response = get_certificate(client, "c-1")
    code, text, error_id = result(response)
    assert (code, error_id) == ("ERROR", "APPLICATION_ERROR") and "NOCONSENT" in (text or "")
    assert response["meta"] is None and response["certificate"] is None


def test_get_certificate_1_of_another_citizens_certificate_is_exactly_not_found(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    CitizenApi(client, BERTIL).consent()

    others = get_certificate(client, "c-1", citizen=BERTIL)
    unknown = get_certificate(client, "nope", citizen=BERTIL)

    assert result(others) == result(unknown)
    assert result(others)[0::2] == ("ERROR", "APPLICATION_ERROR")
    assert others["meta"] is None and others["certificate"] is None


@pytest.mark.one_engine("an invalid personnummer is refused before the store")
def test_get_certificate_1_with_an_invalid_personnummer_is_a_validation_error(client: TestClient) -> None:
    response = get_certificate(client, "c-1", citizen="191212121213")
    assert result(response)[0::2] == ("ERROR", "VALIDATION_ERROR")
    assert "191212121213" not in str(response)


# --- ListCertificates 1 --------------------------------------------------------------------------------------


def test_list_certificates_1_without_consent_answers_info_noconsent(
    soap: SoapClient, client: TestClient
) -> None:
    register(soap, "c-1", ANNA)
    response = list_certificates(client)
    assert result(response) == ("INFO", "NOCONSENT", None)
    assert not response["meta"]


def test_list_certificates_1_lists_archived_certificates_as_not_available(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    register(soap, "c-2", ANNA)
    register(soap, "b-1", BERTIL)
    anna.consent()
    assert anna.post("/certificates/c-2/archive").status_code == 200

    response = list_certificates(client)

    assert result(response) == ("OK", None, None)
    assert sorted((m["certificateId"], m["available"]) for m in response["meta"]) == [
        ("c-1", "true"),
        ("c-2", "false"),
    ]
    by_type = list_certificates(client, certificateType=["LUSE"])
    assert result(by_type)[0] == "OK" and not by_type["meta"]


def test_list_certificates_1_says_each_certificates_validity_and_lists_by_it(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    # The LISJP peer request states sick leave from 2015-12-07 to 2015-12-20; the LUSE, signed
    # 2015-12-07, states none and is valid that day.
    register(soap, "lisjp", ANNA)
    register(soap, "luse", ANNA, kind="luse")
    anna.consent()

    every = list_certificates(client)
    late_december = list_certificates(client, fromDate="2015-12-15", toDate="2015-12-31")

    assert sorted((m["certificateId"], str(m["validFrom"]), str(m["validTo"])) for m in every["meta"]) == [
        ("lisjp", "2015-12-07", "2015-12-20"),
        ("luse", "2015-12-07", "2015-12-07"),
    ]
    assert [m["certificateId"] for m in late_december["meta"]] == ["lisjp"]


# --- SetCertificateStatus 1 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["FKASSA", "FK"])
def test_set_status_1_sent_to_forsakringskassan_is_recorded_as_sentto_once(
    soap: SoapClient, client: TestClient, anna: CitizenApi, target: str
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()

    assert result(set_status(client, "c-1", target, "SENT")) == ("OK", None, None)
    assert result(set_status(client, "c-1", target, "SENT")) == ("OK", None, None)

    assert [st for st in care_statuses(soap, "c-1") if st[1] == "SENTTO"] == [("FKASSA", "SENTTO")]
    sent = anna.get("/certificates/c-1").json()["sent_to"]
    assert [d["recipient"] for d in sent] == ["FKASSA"]
    # ...and sending again through REST says it was already sent.
    assert anna.post("/certificates/c-1/send", {"recipient": "FKASSA"}).json()["already_sent"] is True


@pytest.mark.parametrize(
    ("target", "status"),
    [("FKASSA", "CANCELLED"), ("FKASSA", "UNHANDLED"), ("FKASSA", "IN_PROGRESS"), ("FKASSA", "PROCESSED")],
)
def test_set_status_1_refuses_a_status_the_citizen_may_not_set(
    soap: SoapClient, client: TestClient, anna: CitizenApi, target: str, status: str
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    assert result(set_status(client, "c-1", target, status))[0::2] == ("ERROR", "VALIDATION_ERROR")
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]
    assert anna.get("/certificates/c-1").json()["revoked"] is False


@pytest.mark.parametrize("target", ["XYZ", "INVANA", "HSVARD"])
def test_set_status_1_refuses_a_target_that_is_not_a_recipient(
    soap: SoapClient, client: TestClient, anna: CitizenApi, target: str
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    assert result(set_status(client, "c-1", target, "SENT"))[0::2] == ("ERROR", "VALIDATION_ERROR")
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]


def test_set_status_1_without_consent_or_on_another_citizens_certificate_is_refused(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    assert result(set_status(client, "c-1", "FKASSA", "SENT"))[0::2] == ("ERROR", "APPLICATION_ERROR")
    anna.consent()
    CitizenApi(client, BERTIL).consent()
    others = set_status(client, "c-1", "FKASSA", "SENT", citizen=BERTIL)
    assert result(others) == result(set_status(client, "nope", "FKASSA", "SENT", citizen=BERTIL))
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]


def test_set_status_1_refuses_to_send_a_revoked_certificate(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    revoke(soap, "c-1", ANNA)
    # ResultOfCall has no REVOKED errorId: APPLICATION_ERROR, as faults.RESULT_OF_CALL_ERROR_IDS says.
    assert result(set_status(client, "c-1", "FKASSA", "SENT"))[0::2] == ("ERROR", "APPLICATION_ERROR")


@pytest.mark.parametrize("target", ["TS", "TRANSP"])
def test_set_status_1_refuses_a_recipient_that_does_not_take_the_type_as_rest_does(
    soap: SoapClient, client: TestClient, anna: CitizenApi, target: str
) -> None:
    register(soap, "c-1", ANNA)  # LISJP: Försäkringskassan's only
    anna.consent()
    assert anna.post("/certificates/c-1/send", {"recipient": "TRANSP"}).status_code == 422
    assert result(set_status(client, "c-1", target, "SENT"))[0::2] == ("ERROR", "VALIDATION_ERROR")


def test_set_status_1_received_is_the_recipients_receipt_not_the_citizens_act(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    # DOMAIN.md: recipients mark received. Over the 2013 contract RECEIVED is recorded as the
    # recipient's act (no consent needed); the citizen's own act there is SENT.
    register(soap, "c-1", ANNA)
    assert result(set_status(client, "c-1", "FKASSA", "RECEIVED"))[0] == "OK"
    care = soap.call("GetCertificate", 2, s.get_certificate("c-1", "HSVARD"))
    assert ("FKASSA", "RECEIV") in s.statuses(care)
    entries = anna.get("/access-log").json()["entries"]
    receipt = next(e for e in entries if e["action"] == "set_status")
    assert (receipt["status"], receipt["recipient"]) == ("RECEIV", "FKASSA")
    assert receipt["accessed_by"] == "recipient"
    assert result(set_status(client, "c-1", "HSVARD", "RECEIVED"))[0::2] == ("ERROR", "VALIDATION_ERROR")
