"""Every SOAP operation end to end through the app, called by zeep on the reference WSDLs (a real
client on the real contract), with one success and the refusals that matter for each.

Responses are also validated against the reference XSDs by the transport (tests/integration/soap.py).
RegisterCertificate is posted as the national service's own test envelopes: zeep cannot write the
mixed-content ``delsvar`` (rivta/README.md). The rules themselves are tested in tests/unit/test_rules.py.
"""

from __future__ import annotations

from typing import Any

import pytest
import zeep
from fastapi.testclient import TestClient

from tests.integration import soap as s
from tests.integration.soap import SoapClient, zeep_service

pytestmark = pytest.mark.shared

PATIENT = "191212121212"
GIVER = "SE2321000016-39KJ"
UNIT = "SE2321000016-H489"
HEADER = {"LogicalAddress": GIVER}
WSA_HEADER = {"LogicalAddress": GIVER}  # the reference WSDL names its wsa:To header part LogicalAddress
PART = "769bb12b-bd9f-4203-a5cd-fd14f2eb3b80"
STATUS = "9871cd17-8755-4ed9-b894-ff3729e775a4"


def _register(soap: SoapClient, certificate_id: str = "c-1", patient: str = PATIENT, **kw: str) -> None:
    reply = soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope(certificate_id, patient, **kw))
    assert reply.result()[0] == "OK"


def _consent(soap: SoapClient, given: bool = True, patient: str = PATIENT) -> None:
    assert soap.call("SetConsent", 1, s.set_consent(patient, given)).result()[0] == "OK"


def _id(extension: str) -> dict[str, str]:
    return {"root": UNIT, "extension": extension}


def _person(number: str = PATIENT) -> dict[str, str]:
    return {"root": "1.2.752.129.2.1.3.1", "extension": number}


def _hsa(extension: str) -> dict[str, str]:
    return {"root": "1.2.752.129.2.1.4.1", "extension": extension}


def _part(code: str) -> dict[str, str]:
    return {"code": code, "codeSystem": PART}


def _fault(call: Any) -> zeep.exceptions.Fault:
    with pytest.raises(zeep.exceptions.Fault) as raised:
        call()
    return raised.value


def _result(response: Any) -> tuple[str, str | None, str | None]:
    result = response["result"]
    return result["resultCode"], result["resultText"], result["errorId"]


# --- RegisterCertificate 3 ---------------------------------------------------------------------------------


def test_registering_answers_ok_then_info_and_another_patient_is_an_error(soap: SoapClient) -> None:
    path = s.path_of("RegisterCertificate", 3)
    assert soap.post(path, s.register_envelope("c-1", PATIENT)).result() == ("OK", None, None)
    assert soap.post(path, s.register_envelope("c-1", PATIENT)).result() == (
        "INFO",
        "Certificate already exists",
        None,
    )
    code, _, error_id = soap.post(path, s.register_envelope("c-1", "197705232382")).result()
    assert (code, error_id) == ("ERROR", "VALIDATION_ERROR")


# --- GetCertificate 2 --------------------------------------------------------------------------------------


def test_get_certificate_for_care_returns_the_stored_certificate_with_its_status(
    soap: SoapClient, client: TestClient
) -> None:
    _register(soap)
    service = zeep_service(client, "GetCertificate", 2)
    response = service.GetCertificate(
        **{"intygs-id": _id("c-1"), "part": _part("HSVARD")}, _soapheaders=HEADER
    )
    intyg = response["intyg"] if isinstance(response, dict) or hasattr(response, "__getitem__") else response
    assert intyg["intygs-id"]["extension"] == "c-1"
    assert intyg["typ"]["code"] == "LISJP"
    assert intyg["patient"]["fornamn"]
    assert [(st["status"]["code"], st["part"]["code"]) for st in intyg["status"]] == [("RECEIV", "HSVARD")]
    assert intyg["svar"], "the answers of the certificate are returned"


def test_get_certificate_of_an_unknown_id_is_a_fault(client: TestClient) -> None:
    service = zeep_service(client, "GetCertificate", 2)
    fault = _fault(
        lambda: service.GetCertificate(
            **{"intygs-id": _id("nope"), "part": _part("HSVARD")}, _soapheaders=HEADER
        )
    )
    assert fault.code.endswith("Client")


def test_get_certificate_for_the_citizen_needs_consent(soap: SoapClient, client: TestClient) -> None:
    _register(soap)
    service = zeep_service(client, "GetCertificate", 2)
    request = {"intygs-id": _id("c-1"), "part": _part("INVANA")}
    assert "NOCONSENT" in _fault(lambda: service.GetCertificate(**request, _soapheaders=HEADER)).message
    _consent(soap)
    assert service.GetCertificate(**request, _soapheaders=HEADER)["intyg"]["intygs-id"]["extension"] == "c-1"


# --- ListCertificatesForCare 3 and 1 -----------------------------------------------------------------------


def test_list_for_care_filters_by_care_giver_or_unit(soap: SoapClient, client: TestClient) -> None:
    _register(soap, "c-1")
    _register(soap, "c-2", care_unit="SE2321000016-OTHER", care_giver="SE2321000016-OTHERG")
    service = zeep_service(client, "ListCertificatesForCare", 3)

    def listed(**scope: Any) -> list[str]:
        response = service.ListCertificatesForCare(**{"person-id": _person(), **scope}, _soapheaders=HEADER)
        return sorted(i["intygs-id"]["extension"] for i in response["intygsLista"]["intyg"])

    assert listed(**{"vardgivar-id": _hsa(GIVER)}) == ["c-1"]
    assert listed(**{"enhets-id": [_hsa("SE2321000016-OTHER")]}) == ["c-2"]
    assert listed(**{"enhets-id": [_hsa(UNIT), _hsa("SE2321000016-OTHER")]}) == ["c-1", "c-2"]


def test_list_for_care_with_an_invalid_personnummer_is_a_fault(client: TestClient) -> None:
    service = zeep_service(client, "ListCertificatesForCare", 3)
    fault = _fault(
        lambda: service.ListCertificatesForCare(
            **{"person-id": _person("191212121213"), "vardgivar-id": _hsa(GIVER)}, _soapheaders=HEADER
        )
    )
    assert "191212121213" not in fault.message


def test_list_for_care_1_and_get_for_care_1_answer_with_2013_meta(
    soap: SoapClient, client: TestClient
) -> None:
    _register(soap)
    listing = zeep_service(client, "ListCertificatesForCare", 1).ListCertificatesForCare(
        **{"person-id": "19121212-1212", "enhet": [UNIT]}, _soapheaders=HEADER
    )
    assert [m["certificateId"] for m in listing["meta"]] == ["c-1"]
    assert listing["meta"][0]["available"] == "true"
    # The LISJP peer request's sick leave, 2015-12-07 to 2015-12-20 (README.md, "Validity and relations").
    assert (listing["meta"][0]["validFrom"], listing["meta"][0]["validTo"]) == ("2015-12-07", "2015-12-20")
    assert _result(listing) == ("OK", None, None)

    get = zeep_service(client, "GetCertificateForCare", 1)
    found = get.GetCertificateForCare(certificateId="c-1", _soapheaders=HEADER)
    assert found["meta"]["certificateType"] == "LISJP"
    assert [st["type"] for st in found["meta"]["status"]] == ["RECEIVED"]
    unknown = get.GetCertificateForCare(certificateId="nope", _soapheaders=HEADER)
    assert _result(unknown)[0::2] == ("ERROR", "APPLICATION_ERROR")


# --- ListCertificatesForCitizen 4 ----------------------------------------------------------------------------


def test_list_for_citizen_without_consent_is_a_fault_and_with_consent_lists(
    soap: SoapClient, client: TestClient
) -> None:
    _register(soap)
    service = zeep_service(client, "ListCertificatesForCitizen", 4)
    request = {"person-id": _person(), "arkiverade": False, "part": _part("INVANA")}
    assert (
        "NOCONSENT"
        in _fault(lambda: service.ListCertificatesForCitizen(**request, _soapheaders=HEADER)).message
    )
    _consent(soap)
    response = service.ListCertificatesForCitizen(**request, _soapheaders=HEADER)
    assert [i["intygs-id"]["extension"] for i in response["intygsLista"]["intyg"]] == ["c-1"]
    by_type = service.ListCertificatesForCitizen(
        **request, intygTyp=[{"code": "LUSE", "codeSystem": "x"}], _soapheaders=HEADER
    )
    # zeep reads the (required, here empty) intygsLista as None.
    assert not by_type["intygsLista"]


# --- SetCertificateStatus 2 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("part", "status", "consent", "expected"),
    [
        ("INVANA", "DELETE", True, ("OK", None)),
        ("INVANA", "RESTOR", True, ("OK", None)),
        ("INVANA", "DELETE", False, ("ERROR", "APPLICATION_ERROR")),
        ("HSVARD", "DELETE", True, ("ERROR", "VALIDATION_ERROR")),
        ("INVANA", "CANCEL", True, ("ERROR", "VALIDATION_ERROR")),
        ("FKASSA", "CANCEL", True, ("ERROR", "VALIDATION_ERROR")),
        ("FKASSA", "SENTTO", False, ("OK", None)),
        ("FKASSA", "RECEIV", False, ("OK", None)),
        ("HSVARD", "SENTTO", True, ("ERROR", "VALIDATION_ERROR")),
    ],
)
def test_set_status_is_accepted_only_from_the_right_part(
    soap: SoapClient,
    client: TestClient,
    part: str,
    status: str,
    consent: bool,
    expected: tuple[str, str | None],
) -> None:
    _register(soap)
    if consent:
        _consent(soap)
    service = zeep_service(client, "SetCertificateStatus", 2)
    response = service.SetCertificateStatus(
        **{"intygs-id": _id("c-1"), "part": _part(part), "status": {"code": status, "codeSystem": STATUS}},
        tidpunkt="2026-01-02T10:00:00",
        _soapheaders=HEADER,
    )
    code, _, error_id = _result(response)
    assert (code, error_id) == expected


def test_sending_a_revoked_certificate_is_refused_as_revoked(soap: SoapClient) -> None:
    _register(soap)
    soap.post(
        s.path_of("RevokeCertificate", 2),
        s.peer_request("revokecertificate", **{"data.intygsId": "c-1", "data.personId": PATIENT}),
    )
    reply = soap.call("SetCertificateStatus", 2, s.set_status("c-1", "FKASSA", "SENTTO"))
    assert reply.result()[0::2] == ("ERROR", "REVOKED")


# --- RevokeCertificate 2 --------------------------------------------------------------------------------------------


def test_revoke_is_ok_then_info_and_unknown_is_an_application_error(soap: SoapClient) -> None:
    _register(soap)
    path = s.path_of("RevokeCertificate", 2)
    request = s.peer_request("revokecertificate", **{"data.intygsId": "c-1", "data.personId": PATIENT})
    assert soap.post(path, request).result()[0] == "OK"
    assert soap.post(path, request).result()[0] == "INFO"
    care = soap.call("GetCertificate", 2, s.get_certificate("c-1", "HSVARD"))
    assert "CANCEL" in care.texts("code")
    unknown = s.peer_request("revokecertificate", **{"data.intygsId": "c-unknown", "data.personId": PATIENT})
    assert soap.post(path, unknown).result()[0::2] == ("ERROR", "APPLICATION_ERROR")
    other = s.peer_request("revokecertificate", **{"data.intygsId": "c-1", "data.personId": "197705232382"})
    assert soap.post(path, other).result()[0::2] == ("ERROR", "VALIDATION_ERROR")


@pytest.mark.parametrize("certificate_id", ["a&#9;b", "a&#10;b", "x" * 129])
def test_an_id_that_cannot_be_a_certificate_id_is_a_validation_error(
    soap: SoapClient, certificate_id: str
) -> None:
    # Checked before the store (README "Input"), in each contract's own form of error.
    got = soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD"))
    assert (got.fault_code, got.fault_string) == ("soap:Client", "The request has invalid values")
    revoke = s.peer_request(
        "revokecertificate", **{"data.intygsId": certificate_id, "data.personId": PATIENT}
    )
    assert soap.post(s.path_of("RevokeCertificate", 2), revoke).result()[0::2] == (
        "ERROR",
        "VALIDATION_ERROR",
    )
    registered = soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope(certificate_id, PATIENT))
    assert registered.result()[0::2] == ("ERROR", "VALIDATION_ERROR")


# --- SetConsent 1 / GetConsent 1 -------------------------------------------------------------------------------------


def test_consent_is_set_and_read_over_the_2013_contracts(client: TestClient) -> None:
    set_consent = zeep_service(client, "SetConsent", 1)
    get_consent = zeep_service(client, "GetConsent", 1)
    assert get_consent.GetConsent(personnummer=PATIENT, _soapheaders=WSA_HEADER)["consent-given"] is False
    response = set_consent.SetConsent(
        personnummer="19121212-1212", **{"consent-given": True}, _soapheaders=WSA_HEADER
    )
    assert response["result"]["resultCode"] == "OK"
    assert get_consent.GetConsent(personnummer=PATIENT, _soapheaders=WSA_HEADER)["consent-given"] is True
    bad = set_consent.SetConsent(
        personnummer="19121212-1213", **{"consent-given": True}, _soapheaders=WSA_HEADER
    )
    assert (bad["result"]["resultCode"], bad["result"]["errorId"]) == ("ERROR", "VALIDATION_ERROR")
    assert "1213" not in (bad["result"]["errorText"] or "")


# --- RemoveCertificateForCare 1 (our contract, through zeep on our own WSDL) -----------------------------------------


def test_remove_for_care_through_our_own_wsdl(soap: SoapClient, client: TestClient) -> None:
    from tests.integration.soap import _app_transport
    from tests.reference import CONTRACTS

    _register(soap)
    zeep_client = zeep.Client(
        str(CONTRACTS / "interactions/RemoveCertificateForCare_1/RemoveCertificateForCareInteraction_1.wsdl"),
        transport=_app_transport(client),
    )
    service = zeep_client.create_service(
        next(iter(zeep_client.wsdl.bindings)), f"http://testserver{s.path_of('RemoveCertificateForCare', 1)}"
    )
    other = service.RemoveCertificateForCare(
        **{"intygs-id": _id("c-1"), "vardgivare-id": _hsa("SE2321000016-OTHERG")}, _soapheaders=HEADER
    )
    unknown = service.RemoveCertificateForCare(
        **{"intygs-id": _id("nope"), "vardgivare-id": _hsa(GIVER)}, _soapheaders=HEADER
    )
    # Another care giver's certificate answers exactly like an unknown one: no probing for ids.
    assert _result(other) == _result(unknown)
    assert _result(other)[0::2] == ("ERROR", "APPLICATION_ERROR")
    assert (
        _result(
            service.RemoveCertificateForCare(
                **{"intygs-id": _id("c-1"), "vardgivare-id": _hsa(GIVER)}, _soapheaders=HEADER
            )
        )[0]
        == "OK"
    )
    assert soap.call("GetCertificate", 2, s.get_certificate("c-1", "HSVARD")).is_fault
