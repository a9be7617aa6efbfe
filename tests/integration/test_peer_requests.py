"""Requests as real callers write them: every peer-request envelope of ../shared/peer-requests, posted
as rendered (placeholders substituted, nothing else edited) to its contract's address.

Each request first gets the state it needs, set up through SOAP as a caller would: the certificate is
registered, and for the citizen's reads the citizen's consent is given (SetConsent 1, DOMAIN.md rule
2). The answers are then checked against the contract, and every non-fault answer is validated
against our XSD and the reference XSD by ``SoapClient.post``.

The legacy citizen contracts of 2013 (GetCertificate 1, ListCertificates 1, SetCertificateStatus 1,
RIVTA BP 2.0) get the same treatment: consent given, then the answer their ResultOfCall prescribes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.integration.soap import (
    T3,
    Reply,
    SoapClient,
    listed_ids,
    path_of,
    peer_request,
    register_envelope,
    statuses,
)
from tests.reference import (
    PERSONNUMMER,
    PLACEHOLDER_VALUES,
    SAMORDNINGSNUMMER,
    need_shared,
    parser,
    peer_requests,
    with_check_digit,
)

pytestmark = pytest.mark.shared

# The id every template is rendered with (tests/reference.py).
CERTIFICATE_ID = PLACEHOLDER_VALUES["data.intygsId"]
OTHER_ID = "0f6e1c1a-2b7d-4e58-9c43-5d1e0f3a9b22"
CARE_UNIT = "SE2321000016-H489"  # the unit the templates name
PART_SYSTEM = "769bb12b-bd9f-4203-a5cd-fd14f2eb3b80"


def templates(prefix: str) -> list[Any]:
    """The rendered peer requests whose label starts with ``prefix`` (folder/file:template)."""
    chosen = [p for p in peer_requests() if p.id is not None and p.id.startswith(prefix)]
    # Without ../shared, one parameter that skips saying why (need_shared()).
    return chosen or [pytest.param(None, None, id="peer-requests-absent")]


# --- Set-up through SOAP, as callers do ---------------------------------------------------------------


def register(soap: SoapClient, person: str, certificate_id: str = CERTIFICATE_ID, **unit: str) -> None:
    reply = soap.post(path_of("RegisterCertificate", 3), register_envelope(certificate_id, person, **unit))
    assert reply.result() == ("OK", None, None)


def give_consent(soap: SoapClient, person: str) -> None:
    ns = "urn:riv:insuranceprocess:healthreporting:SetConsentResponder:1"
    reply = soap.call(
        "SetConsent",
        1,
        f'<c:SetConsentRequest xmlns:c="{ns}"><c:personnummer>{person}</c:personnummer>'
        "<c:consent-given>true</c:consent-given></c:SetConsentRequest>",
    )
    assert reply.result()[0] == "OK"


def get_for_care(soap: SoapClient, certificate_id: str = CERTIFICATE_ID) -> Reply:
    ns = "urn:riv:clinicalprocess:healthcond:certificate:GetCertificateResponder:2"
    return soap.call(
        "GetCertificate",
        2,
        f'<g:GetCertificate xmlns:g="{ns}" xmlns:t="{T3}">'
        f"<g:intygs-id><t:root>x</t:root><t:extension>{certificate_id}</t:extension></g:intygs-id>"
        f"<g:part><t:code>HSVARD</t:code><t:codeSystem>{PART_SYSTEM}</t:codeSystem></g:part>"
        "</g:GetCertificate>",
    )


def patient_of(element: etree._Element) -> str:
    """The extension of the first patient person-id under an element (request or answer)."""
    for patient in element.iter():
        if isinstance(patient.tag, str) and etree.QName(patient).localname == "patient":
            for child in patient:
                if isinstance(child.tag, str) and etree.QName(child).localname == "person-id":
                    return child.findtext(f"{{{T3}}}extension") or ""
    raise AssertionError("no patient person-id")


# --- RegisterCertificate 3 -----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), templates("register/"))
def test_every_register_request_is_stored_and_a_repeat_answers_already_exists(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    address = path_of("RegisterCertificate", 3)

    assert soap.post(address, envelope).result() == ("OK", None, None)
    # Rule 1: the same id for the same patient changes nothing; Webcert compares this exact text.
    assert soap.post(address, envelope).result() == ("INFO", "Certificate already exists", None)

    stored = get_for_care(soap)
    assert not stored.is_fault
    assert listed_ids(stored) == [CERTIFICATE_ID]
    sent = etree.fromstring(envelope.encode(), parser())
    assert patient_of(stored.body) == patient_of(sent)
    assert statuses(stored) == [("HSVARD", "RECEIV")]


def test_a_register_request_for_another_patient_with_a_taken_id_is_an_error_and_changes_nothing(
    soap: SoapClient,
) -> None:
    address = path_of("RegisterCertificate", 3)
    assert soap.post(address, peer_request("register/request_lisjp.stg")).result()[0] == "OK"

    other = peer_request("register/request_luse.stg", **{"data.personId": with_check_digit("19121272131")})
    code, _, error_id = soap.post(address, other).result()

    assert (code, error_id) == ("ERROR", "VALIDATION_ERROR")
    assert patient_of(get_for_care(soap).body) == SAMORDNINGSNUMMER


# --- GetCertificate 2, part INVANA (rule 2) -----------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), templates("getcertificate/"))
def test_the_citizens_get_certificate_request_returns_the_certificate_once_consent_is_given(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    # The register templates name a samordningsnummer patient (peer-requests/README.md).
    soap.post(path_of("RegisterCertificate", 3), peer_request("register/request_lisjp.stg"))
    give_consent(soap, SAMORDNINGSNUMMER)

    reply = soap.post(path_of("GetCertificate", 2), envelope)

    assert not reply.is_fault, reply.fault_string
    assert etree.QName(reply.body).localname == "GetCertificateResponse"
    assert listed_ids(reply) == [CERTIFICATE_ID]
    assert patient_of(reply.body) == SAMORDNINGSNUMMER
    assert ("HSVARD", "RECEIV") in statuses(reply)


def test_the_citizens_get_certificate_request_without_consent_is_a_fault_naming_no_one(
    soap: SoapClient,
) -> None:
    soap.post(path_of("RegisterCertificate", 3), peer_request("register/request_lisjp.stg"))

    reply = soap.post(path_of("GetCertificate", 2), peer_request("getcertificate"))

    assert reply.fault_code == "soap:Client"
    assert "NOCONSENT" in reply.fault_string
    assert SAMORDNINGSNUMMER not in reply.fault_string and CERTIFICATE_ID not in reply.fault_string


# --- ListCertificatesForCare 3 (rule 3) ---------------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), templates("listcertificatesforcare/"))
def test_the_care_list_request_lists_the_certificate_registered_at_its_unit(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    # The list templates name the patient under the personnummer root: register that patient.
    register(soap, PERSONNUMMER)
    register(soap, PERSONNUMMER, OTHER_ID, care_unit="SE2321000016-1234", care_giver="SE2321000016-5678")

    reply = soap.post(path_of("ListCertificatesForCare", 3), envelope)

    assert not reply.is_fault, reply.fault_string
    # The template asks for one unit: the certificate of another unit is not listed.
    assert listed_ids(reply) == [CERTIFICATE_ID]


# --- ListCertificatesForCitizen 4 (rule 2) ------------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), templates("listcertificatesforcitizen/v4/"))
def test_both_citizen_list_requests_list_the_certificate_once_consent_is_given(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    register(soap, PERSONNUMMER)  # a LISJP, the type the typed template asks for
    give_consent(soap, PERSONNUMMER)

    reply = soap.post(path_of("ListCertificatesForCitizen", 4), envelope)

    assert not reply.is_fault, reply.fault_string
    assert listed_ids(reply) == [CERTIFICATE_ID]


@pytest.mark.parametrize(("path", "envelope"), templates("listcertificatesforcitizen/v4/"))
def test_both_citizen_list_requests_without_consent_are_faults(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    register(soap, PERSONNUMMER)

    reply = soap.post(path_of("ListCertificatesForCitizen", 4), envelope)

    # Rule 2: no result element in this contract, so no consent is a fault.
    assert reply.fault_code == "soap:Client"
    assert "NOCONSENT" in reply.fault_string
    assert PERSONNUMMER not in reply.fault_string


# --- SetCertificateStatus 2 (a recipient marks it received) -----------------------------------------


@pytest.mark.parametrize(("path", "envelope"), templates("setcertificatestatus/"))
def test_the_recipients_set_status_request_is_ok_and_shows_in_the_status_history(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    register(soap, PERSONNUMMER)

    reply = soap.post(path_of("SetCertificateStatus", 2), envelope)

    assert reply.result() == ("OK", None, None)
    assert statuses(get_for_care(soap)) == [("HSVARD", "RECEIV"), ("FKASSA", "RECEIV")]


def test_the_set_status_request_for_an_unknown_certificate_is_an_error(soap: SoapClient) -> None:
    reply = soap.post(path_of("SetCertificateStatus", 2), peer_request("setcertificatestatus"))

    code, _, error_id = reply.result()
    assert (code, error_id) == ("ERROR", "APPLICATION_ERROR")


# --- RevokeCertificate 2 -----------------------------------------------------------------------------


@pytest.mark.parametrize(("path", "envelope"), templates("revokecertificate/"))
def test_the_revoke_request_is_ok_then_info_on_repeat(
    soap: SoapClient, path: Path | None, envelope: str | None
) -> None:
    need_shared()
    assert envelope is not None
    # The template names the patient under the personnummer root and the issuer's unit and giver.
    register(soap, PERSONNUMMER)
    address = path_of("RevokeCertificate", 2)

    assert soap.post(address, envelope).result() == ("OK", None, None)
    assert soap.post(address, envelope).result()[0] == "INFO"

    revoked = get_for_care(soap)
    assert statuses(revoked) == [("HSVARD", "RECEIV"), ("HSVARD", "CANCEL")]


def test_the_revoke_request_naming_another_patient_is_an_error_and_revokes_nothing(soap: SoapClient) -> None:
    register(soap, SAMORDNINGSNUMMER)

    reply = soap.post(path_of("RevokeCertificate", 2), peer_request("revokecertificate"))

    code, text, error_id = reply.result()
    assert (code, error_id) == ("ERROR", "VALIDATION_ERROR")
    assert PERSONNUMMER not in (text or "") and SAMORDNINGSNUMMER not in (text or "")
    assert statuses(get_for_care(soap)) == [("HSVARD", "RECEIV")]


# --- The 2013 citizen contracts (BP 2.0) ---------------------------------------------------------------


def legacy() -> list[Any]:
    """The legacy templates, each with its template name (the lists differ by template)."""
    params = [
        pytest.param(p.values[0], p.values[1], p.id.rsplit(":", 1)[-1], id=p.id)
        for prefix in (
            "getcertificateinsuranceprocess/",
            "listcertificates/",
            "setcertificatestatusinsuranceprocess/",
        )
        for p in peer_requests()
        if p.id is not None and p.id.startswith(prefix)
    ]
    return params or [pytest.param(None, None, None, id="peer-requests-absent")]


LEGACY_ADDRESS = {
    "getcertificateinsuranceprocess": path_of("GetCertificate", 1),
    "listcertificates": path_of("ListCertificates", 1),
    "setcertificatestatusinsuranceprocess": path_of("SetCertificateStatus", 1),
}
# What each legacy template must list: the plain request lists everything; the typed one asks for
# fk7263 (ours is a LISJP); the interval one has fromDate after toDate (the template swaps them), as in
# the national service's ListCertificatesIT, which expects an empty list with OK.
LEGACY_LISTED = {"request": [CERTIFICATE_ID], "requestCertificateType": [], "requestDateInterval": []}


@pytest.mark.parametrize(("path", "envelope", "template"), legacy())
def test_the_legacy_citizen_requests_get_their_contracts_answer(
    soap: SoapClient, path: Path | None, envelope: str | None, template: str | None
) -> None:
    need_shared()
    assert path is not None and envelope is not None and template is not None
    register(soap, PERSONNUMMER)
    give_consent(soap, PERSONNUMMER)
    folder = path.parent.name

    reply = soap.post(LEGACY_ADDRESS[folder], envelope)

    assert not reply.is_fault, reply.fault_string
    assert reply.result()[0] == "OK"
    if folder == "getcertificateinsuranceprocess":
        assert reply.texts("certificateId") == [CERTIFICATE_ID]
    elif folder == "listcertificates":
        assert reply.texts("certificateId") == LEGACY_LISTED[template]
    else:
        assert ("FKASSA", "RECEIV") in statuses(get_for_care(soap))


def test_the_legacy_list_request_without_consent_answers_info_noconsent(soap: SoapClient) -> None:
    register(soap, PERSONNUMMER)

    reply = soap.post(LEGACY_ADDRESS["listcertificates"], peer_request("listcertificates"))

    # Rule 2: a list whose contract has a result answers INFO NOCONSENT, and lists nothing.
    assert reply.result() == ("INFO", "NOCONSENT", None)
    assert reply.texts("certificateId") == []


def test_the_legacy_get_request_without_consent_is_refused_naming_no_one(soap: SoapClient) -> None:
    register(soap, PERSONNUMMER)

    reply = soap.post(
        LEGACY_ADDRESS["getcertificateinsuranceprocess"], peer_request("getcertificateinsuranceprocess")
    )

    assert reply.result()[0] == "ERROR"
    assert reply.find_all("certificate") == [] and reply.find_all("meta") == []
    assert PERSONNUMMER not in etree.tostring(reply.root).decode()


def test_the_legacy_requests_for_another_citizens_certificate_are_refused(soap: SoapClient) -> None:
    register(soap, SAMORDNINGSNUMMER)
    give_consent(soap, SAMORDNINGSNUMMER)
    give_consent(soap, PERSONNUMMER)

    got = soap.post(
        LEGACY_ADDRESS["getcertificateinsuranceprocess"], peer_request("getcertificateinsuranceprocess")
    )
    listed = soap.post(LEGACY_ADDRESS["listcertificates"], peer_request("listcertificates"))
    status = soap.post(
        LEGACY_ADDRESS["setcertificatestatusinsuranceprocess"],
        peer_request("setcertificatestatusinsuranceprocess"),
    )

    assert got.result()[0] == "ERROR" and got.find_all("certificate") == []
    assert listed.result()[0] == "OK" and listed.texts("certificateId") == []
    assert status.result()[0] == "ERROR"
    assert statuses(get_for_care(soap)) == [("HSVARD", "RECEIV")]
