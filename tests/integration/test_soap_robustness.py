"""Bad input on the SOAP channel: never a crash, never a change to the store, always the channel's form.

Every answer to a bad request is checked by ``send``: HTTP 200 with a contract response, or HTTP 500
with a SOAP 1.1 Fault (the SOAP convention, not a crash), and it holds no personal identity number or
other long number of the request, no Python traceback and no SQL. One app and one database serve the
module's bad requests, as one service serves every caller: a certificate registered once, and the id
of the certificate each bad request tries to register, show after each test that it left the store as
it found it (tests with settings of their own get an app and a database each). The hardened parser
these tests drive is ``service/soap/messages.py``; the error table is checked on its own in
``tests/unit/test_error_maps.py``.

The last group fetches each served contract's WSDL at ``?wsdl`` and everything it imports. The bad
requests are broken copies of a real caller's RegisterCertificate from ../shared/peer-requests, so the
module skips, saying why, where ../shared is absent.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from service.app import create_app
from service.config import Settings
from service.soap.contracts import CONTRACTS, Contract
from service.soap.messages import CONTRACTS as CONTRACTS_DIR
from tests.integration.conftest import fresh_database
from tests.integration.soap import (
    T3,
    Reply,
    SoapClient,
    list_for_citizen,
    path_of,
    register_envelope,
    statuses,
    validate_response,
)
from tests.keys import settings_keys
from tests.reference import (
    PEER_REQUESTS,
    PERSONNUMMER,
    SAMORDNINGSNUMMER,
    SHARED,
    SOAP_ENV,
    parser,
    with_check_digit,
)

# The bad requests are broken copies of a real caller's RegisterCertificate (a peer request).
if not PEER_REQUESTS.is_dir():
    pytest.skip(f"peer requests not found at {SHARED} (expected ../shared)", allow_module_level=True)
pytestmark = [
    pytest.mark.shared,
    # What these requests test is answered before the store: the parser, the schemas, the headers, the
    # size limit and the served WSDLs. What they do store and read (the one registered certificate) is
    # the same registration and read that test_soap_operations.py and test_peer_requests.py run on both.
    pytest.mark.one_engine("bad requests are refused before the store; the WSDLs are static"),
]

STORED_ID = "0b9a2c64-4f1e-4c2b-8a7d-1e2f3a4b5c6d"  # registered before each test
NEW_ID = "7d3e1f20-9a8b-4c6d-b5e4-f3a2b1c0d9e8"  # what the bad requests try to register
# Another valid personnummer, so the bad requests name someone the store has never seen.
PATIENT = with_check_digit("19800101238")
BAD_LUHN = PATIENT[:11] + str((int(PATIENT[11]) + 1) % 10)
PART_SYSTEM = "769bb12b-bd9f-4203-a5cd-fd14f2eb3b80"
XML = {"Content-Type": "text/xml; charset=utf-8"}
REGISTER = path_of("RegisterCertificate", 3)
LEAKS = (b"Traceback", b'File "', b"SELECT", b"INSERT", b"UPDATE ", b"DELETE FROM", b"sqlalchemy", b"lxml")
_LONG_NUMBER = re.compile(rb"\d{10,}")


# --- Helpers ------------------------------------------------------------------------------------------


def send(soap: SoapClient, path: str, data: bytes | str, *, headers: dict[str, str] | None = None) -> Reply:
    """Post raw bytes; check the answer is in the channel's form and leaks nothing of the request."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    response = soap.client.post(path, content=payload, headers=headers or XML)
    return checked(response, payload)


def checked(response: Any, request: bytes = b"") -> Reply:
    """``response`` is the TestClient's response (an httpx-style Response)."""
    content = response.content
    for leak in LEAKS:
        assert leak not in content, f"the answer holds {leak!r}"
    for number in set(_LONG_NUMBER.findall(request)):
        assert number not in content, "the answer repeats a long number of the request"
    assert response.status_code in (200, 500), response.status_code
    assert response.headers["content-type"].startswith("text/xml")
    root = etree.fromstring(content, parser())
    assert root.tag == f"{{{SOAP_ENV}}}Envelope"
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    (element,) = [e for e in body if isinstance(e.tag, str)]
    reply = Reply(response.status_code, root, element)
    if reply.is_fault:
        assert response.status_code == 500
        assert reply.fault_code in ("soap:Client", "soap:Server")
        assert reply.fault_string
    else:
        assert response.status_code == 200
        validate_response(element)
    return reply


def assert_client_fault(reply: Reply) -> None:
    assert reply.is_fault, "expected a SOAP Fault"
    assert reply.fault_code == "soap:Client", reply.fault_string


def envelope(body: str, *, header: str | None = None) -> str:
    """A BP 2.1 envelope: the LogicalAddress header unless another header is given."""
    if header is None:
        header = '<la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">SE1</la:LogicalAddress>'
    return (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Header>{header}</s:Header><s:Body>{body}</s:Body></s:Envelope>'
    )


def get_certificate_body(certificate_id: str, part: str = "HSVARD") -> str:
    ns = "urn:riv:clinicalprocess:healthcond:certificate:GetCertificateResponder:2"
    return (
        f'<g:GetCertificate xmlns:g="{ns}" xmlns:t="{T3}">'
        f"<g:intygs-id><t:root>x</t:root><t:extension>{certificate_id}</t:extension></g:intygs-id>"
        f"<g:part><t:code>{part}</t:code><t:codeSystem>{PART_SYSTEM}</t:codeSystem></g:part>"
        "</g:GetCertificate>"
    )


def set_status_body(certificate_id: str, part: str = "FKASSA", status: str = "RECEIV") -> str:
    ns = "urn:riv:clinicalprocess:healthcond:certificate:SetCertificateStatusResponder:2"
    return (
        f'<s:SetCertificateStatus xmlns:s="{ns}" xmlns:t="{T3}">'
        f"<s:intygs-id><t:root>x</t:root><t:extension>{certificate_id}</t:extension></s:intygs-id>"
        f"<s:part><t:code>{part}</t:code><t:codeSystem>{PART_SYSTEM}</t:codeSystem></s:part>"
        f"<s:status><t:code>{status}</t:code><t:codeSystem>9871cd17-8755-4ed9-b894-ff3729e775a4</t:codeSystem>"
        "</s:status><s:tidpunkt>2024-01-02T03:04:05</s:tidpunkt></s:SetCertificateStatus>"
    )


def new_registration(person: str = PATIENT) -> str:
    return register_envelope(NEW_ID, person)


def has_consent(soap: SoapClient, person: str) -> bool:
    """Whether the citizen's consent is given: their list is refused with NOCONSENT otherwise."""
    listed = soap.call("ListCertificatesForCitizen", 4, list_for_citizen(person))
    return not (listed.is_fault and "NOCONSENT" in listed.fault_string)


@pytest.fixture(scope="module")
def client(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    """The module's app, on a database holding one certificate. Module-scoped: building an app is most
    of what a test here would cost, and a bad request changes neither the app nor the store (``store``
    shows it after each test)."""
    with fresh_database(request, tmp_path_factory, "sqlite") as url:
        settings = Settings(
            database_url=url,
            dev_audit_key_file=tmp_path_factory.mktemp("robustness") / "dev-audit-key.pem",
            **settings_keys(),
        )
        with TestClient(create_app(settings)) as shared:
            stored = SoapClient(shared).post(REGISTER, register_envelope(STORED_ID, PERSONNUMMER))
            assert stored.result() == ("OK", None, None)
            yield shared


@pytest.fixture
def store(soap: SoapClient) -> Iterator[SoapClient]:
    """The store holding one certificate; afterwards, proof that the bad requests changed nothing."""
    yield soap
    kept = soap.call("GetCertificate", 2, get_certificate_body(STORED_ID))
    assert not kept.is_fault, kept.fault_string
    assert statuses(kept) == [("HSVARD", "RECEIV")]
    missing = soap.call("GetCertificate", 2, get_certificate_body(NEW_ID))
    assert missing.is_fault, "a bad request stored a certificate"
    assert not has_consent(soap, PERSONNUMMER), "a bad request gave consent"


# --- Not a SOAP envelope ------------------------------------------------------------------------------

NOT_XML = {
    "empty": b"",
    "text": b"RegisterCertificate " + PATIENT.encode(),
    "json": b'{"intyg": "' + PATIENT.encode() + b'"}',
    "binary": bytes(range(256)),
    "truncated": new_registration().encode()[:-40],
    "undeclared prefix": f"<x:Envelope><x:Body>{PATIENT}</x:Body></x:Envelope>".encode(),
    "latin-1 declared utf-8": '<?xml version="1.0" encoding="UTF-8"?><a>\xe5\xe4\xf6</a>'.encode("latin-1"),
    "entity without a DTD": f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>&lol;</s:Body></s:Envelope>'.encode(),
    "nested too deep": (
        f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Body>' + "<a>" * 5000 + "</a>" * 5000 + "</s:Body></s:Envelope>"
    ).encode(),
}


@pytest.mark.parametrize("data", NOT_XML.values(), ids=NOT_XML.keys())
def test_a_message_that_is_not_well_formed_xml_is_a_client_fault(store: SoapClient, data: bytes) -> None:
    assert_client_fault(send(store, REGISTER, data))


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: f"{c.operation}_{c.major}")
def test_every_contract_answers_a_message_that_is_not_xml_with_a_client_fault(
    store: SoapClient, contract: Contract
) -> None:
    # Parsing comes before routing; one address each shows every route shares the guard.
    for data in (NOT_XML["text"], NOT_XML["truncated"], NOT_XML["nested too deep"]):
        assert_client_fault(send(store, contract.path, data))


# --- DTDs and entities: refused before anything is expanded or fetched -----------------------------

LAUGHS = (
    '<?xml version="1.0"?><!DOCTYPE lolz ['
    '<!ENTITY lol "lol">'
    + "".join(f'<!ENTITY lol{i} "{f"&lol{i - 1};" * 10 if i > 1 else "&lol;" * 10}">' for i in range(1, 10))
    + "]>"
    + envelope("<a>&lol9;</a>")
)
ENTITY_ATTACKS = {
    "billion laughs": LAUGHS,
    "quadratic blowup": (
        f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "{"x" * 50_000}">]>'
        + envelope("<a>" + "&x;" * 30 + "</a>")
    ),
    "internal entity in a header": (
        '<?xml version="1.0"?><!DOCTYPE s:Envelope [<!ENTITY addr "SE1">]>'
        + envelope(
            get_certificate_body(STORED_ID),
            header='<la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">&addr;</la:LogicalAddress>',
        )
    ),
    "external entity (XXE)": (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + envelope("<a>&xxe;</a>")
    ),
    "external entity in a register request": (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
        + new_registration().replace(
            "<ns3:root>SE2321000016-H489</ns3:root>", "<ns3:root>&xxe;</ns3:root>", 1
        )
    ),
    "parameter entity": (
        '<?xml version="1.0"?><!DOCTYPE a [<!ENTITY % p SYSTEM "file:///etc/passwd"> %p;]>' + envelope("<a/>")
    ),
    "external DTD over the network": (
        '<?xml version="1.0"?><!DOCTYPE a SYSTEM "http://127.0.0.1:9/evil.dtd">' + envelope("<a/>")
    ),
    "external DTD on disk": '<?xml version="1.0"?><!DOCTYPE a SYSTEM "file:///etc/passwd">'
    + envelope("<a/>"),
}


@pytest.mark.parametrize("data", ENTITY_ATTACKS.values(), ids=ENTITY_ATTACKS.keys())
@pytest.mark.parametrize(
    "path", [REGISTER, path_of("GetCertificate", 2), path_of("SetConsent", 1)], ids=lambda p: p.split("/")[-3]
)
def test_a_dtd_or_entity_is_a_client_fault_at_once_and_nothing_is_expanded_or_echoed(
    store: SoapClient, path: str, data: str
) -> None:
    started = time.perf_counter()
    reply = send(store, path, data)
    elapsed = time.perf_counter() - started

    assert_client_fault(reply)
    assert elapsed < 2.0, f"took {elapsed:.1f}s"
    answer = etree.tostring(reply.root)
    for echoed in (b"root:", b"/bin/", b"lol", b"xxx", b"SE1", b"passwd", b"evil"):
        assert echoed not in answer


# --- A SOAP envelope of the wrong shape ---------------------------------------------------------------

GET = get_certificate_body(STORED_ID)
SHAPES = {
    "root is not an Envelope": f'<s:Body xmlns:s="{SOAP_ENV}">{GET}</s:Body>',
    "the request itself as root": GET,
    "SOAP 1.2 envelope": (
        '<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"><e:Header>'
        '<la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">SE1</la:LogicalAddress>'
        f"</e:Header><e:Body>{GET}</e:Body></e:Envelope>"
    ),
    "Envelope in no namespace": f"<Envelope><Header/><Body>{GET}</Body></Envelope>",
    "no Body": f'<s:Envelope xmlns:s="{SOAP_ENV}"><s:Header/></s:Envelope>',
    "two Bodies": envelope(GET).replace("</s:Envelope>", f"<s:Body>{GET}</s:Body></s:Envelope>"),
    "two Headers": envelope(GET).replace("<s:Body>", "<s:Header/><s:Body>"),
    "an extra element in the Envelope": envelope(GET).replace(
        "</s:Envelope>", "<x:y xmlns:x='urn:x'/></s:Envelope>"
    ),
    "empty Body": envelope(""),
    "text only in the Body": envelope(STORED_ID),
    "two elements in the Body": envelope(GET + GET),
    "the request wrapped in another element": envelope(f"<x:w xmlns:x='urn:x'>{GET}</x:w>"),
    "the request wrapped in a second Envelope": envelope(envelope(GET)),
    "the request in no namespace": envelope("<GetCertificate/>"),
    "an unknown request": envelope('<u:Unknown xmlns:u="urn:riv:unknown:1"/>'),
}


@pytest.mark.parametrize("data", SHAPES.values(), ids=SHAPES.keys())
def test_an_envelope_of_the_wrong_shape_is_a_client_fault(store: SoapClient, data: str) -> None:
    assert_client_fault(send(store, path_of("GetCertificate", 2), data))


def test_a_comment_or_processing_instruction_beside_the_request_is_accepted(store: SoapClient) -> None:
    data = envelope(f"<!-- a comment --><?pi data?>\n  {GET}\n  <!-- another -->")

    reply = send(store, path_of("GetCertificate", 2), data)

    assert not reply.is_fault, reply.fault_string


@pytest.mark.parametrize(
    "contract",
    [c for c in CONTRACTS if c.path != path_of("GetCertificate", 2)],
    ids=lambda c: f"{c.operation}_{c.major}",
)
def test_the_body_of_another_contract_is_a_client_fault_at_each_address(
    store: SoapClient, contract: Contract
) -> None:
    # A GetCertificate 2 request, valid in itself, at every other address.
    reply = send(store, contract.path, envelope(GET))

    assert_client_fault(reply)


def test_a_register_request_at_the_get_certificate_address_stores_nothing(store: SoapClient) -> None:
    assert_client_fault(send(store, path_of("GetCertificate", 2), new_registration()))


def test_an_unknown_address_is_not_found_and_not_a_crash(store: SoapClient) -> None:
    response = store.client.post(
        "/clinicalprocess/healthcond/certificate/RegisterCertificate/9/rivtabp21",
        content=new_registration().encode(),
        headers=XML,
    )

    assert response.status_code == 404
    assert PATIENT.encode() not in response.content


# --- Addressing headers (RIVTA BP 2.1 LogicalAddress, BP 2.0 wsa:To) ---------------------------------

WSA_TO = '<wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing">SE1</wsa:To>'
LOGICAL_ADDRESS = '<la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">SE1</la:LogicalAddress>'
BP21_HEADERS = {
    "no Header": None,
    "empty Header": "",
    "blank LogicalAddress": '<la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">  </la:LogicalAddress>',
    "LogicalAddress in another namespace": '<la:LogicalAddress xmlns:la="urn:other">SE1</la:LogicalAddress>',
    "wsa:To instead (BP 2.0)": WSA_TO,
}


def _without_header(data: str) -> str:
    return re.sub(r"<s:Header>.*?</s:Header>", "", data, count=1)


@pytest.mark.parametrize("header", BP21_HEADERS.values(), ids=BP21_HEADERS.keys())
def test_a_bp21_request_without_a_logical_address_is_a_client_fault(
    store: SoapClient, header: str | None
) -> None:
    data = _without_header(envelope(GET)) if header is None else envelope(GET, header=header)

    reply = send(store, path_of("GetCertificate", 2), data)

    assert_client_fault(reply)


def test_a_register_request_without_a_logical_address_is_a_client_fault_and_stores_nothing(
    store: SoapClient,
) -> None:
    data = re.sub(r"<urn:LogicalAddress>.*?</urn:LogicalAddress>", "", new_registration(), count=1)

    reply = send(store, REGISTER, data)

    assert_client_fault(reply)
    assert "LogicalAddress" in reply.fault_string


def consent_body(person: str, given: str = "true") -> str:
    ns = "urn:riv:insuranceprocess:healthreporting:SetConsentResponder:1"
    return (
        f'<c:SetConsentRequest xmlns:c="{ns}"><c:personnummer>{person}</c:personnummer>'
        f"<c:consent-given>{given}</c:consent-given></c:SetConsentRequest>"
    )


@pytest.mark.parametrize(
    "header",
    [None, "", '<wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing"> </wsa:To>', LOGICAL_ADDRESS],
    ids=["no Header", "empty Header", "blank wsa:To", "LogicalAddress instead (BP 2.1)"],
)
def test_a_bp20_request_without_wsa_to_is_a_client_fault_and_gives_no_consent(
    store: SoapClient, header: str | None
) -> None:
    body = consent_body(PERSONNUMMER)
    data = _without_header(envelope(body)) if header is None else envelope(body, header=header)

    reply = send(store, path_of("SetConsent", 1), data)

    assert_client_fault(reply)
    assert not has_consent(store, PERSONNUMMER)


# --- Schema-invalid and invalid values ----------------------------------------------------------------

INVALID_REGISTRATIONS = {
    "person id of 11 digits": (PATIENT, PATIENT[:11]),
    "person id with a dash": (PATIENT, f"{PATIENT[:8]}-{PATIENT[8:]}"),
    "person id of letters": (PATIENT, "abcdefghijkl"),
    "unknown person id root": ("1.2.752.129.2.1.3.1", "1.2.752.129.2.1.3.9"),
    "signing time without a time": ("2015-12-07T15:48:05", "2015-12-07"),
    "signing time on no real day": ("2015-12-07T15:48:05", "2015-02-30T15:48:05"),
    "no certificate type": ("<typ>", "<typX>"),
}


@pytest.mark.parametrize(("old", "new"), INVALID_REGISTRATIONS.values(), ids=INVALID_REGISTRATIONS.keys())
def test_a_schema_invalid_register_request_is_a_validation_error_and_stores_nothing(
    store: SoapClient, old: str, new: str
) -> None:
    data = new_registration()
    assert old in data
    data = data.replace(old, new, 1)
    if old == "<typ>":
        data = data.replace("</typ>", "</typX>", 1)

    reply = send(store, REGISTER, data)

    # RegisterCertificate has a result: HTTP 200, ERROR with VALIDATION_ERROR (rivta/README.md).
    code, text, error_id = reply.result()
    assert (reply.status, code, error_id) == (200, "ERROR", "VALIDATION_ERROR")
    assert text and PATIENT not in text


@pytest.mark.parametrize("blank", ["", "   "], ids=["empty", "blank"])
def test_a_register_request_with_an_empty_certificate_id_is_a_validation_error_and_stores_nothing(
    store: SoapClient, blank: str
) -> None:
    reply = send(store, REGISTER, new_registration().replace(NEW_ID, blank, 1))

    assert reply.result()[::2] == ("ERROR", "VALIDATION_ERROR")
    assert store.call("GetCertificate", 2, get_certificate_body(blank)).is_fault


def test_a_register_request_whose_personnummer_fails_the_check_digit_is_a_validation_error(
    store: SoapClient,
) -> None:
    reply = send(store, REGISTER, new_registration(BAD_LUHN))

    code, text, error_id = reply.result()
    assert (code, error_id) == ("ERROR", "VALIDATION_ERROR")
    assert BAD_LUHN not in (text or "")


def test_a_register_request_whose_samordningsnummer_fails_the_check_digit_is_a_validation_error(
    store: SoapClient,
) -> None:
    bad = SAMORDNINGSNUMMER[:11] + str((int(SAMORDNINGSNUMMER[11]) + 1) % 10)

    reply = send(store, REGISTER, new_registration(bad))

    assert reply.result()[::2] == ("ERROR", "VALIDATION_ERROR")


def test_a_register_request_whose_personnummer_is_no_real_day_is_a_validation_error(
    store: SoapClient,
) -> None:
    reply = send(store, REGISTER, new_registration(with_check_digit("19800231238")))

    assert reply.result()[::2] == ("ERROR", "VALIDATION_ERROR")


INVALID_GETS = {
    "no part": re.sub(r"<g:part>.*</g:part>", "", GET),
    "no certificate id": re.sub(r"<g:intygs-id>.*</g:intygs-id>", "", GET),
    "part before id": re.sub(r"(<g:intygs-id>.*</g:intygs-id>)(<g:part>.*</g:part>)", r"\2\1", GET),
    "an unknown element in the contract's own namespace": GET.replace(
        "</g:GetCertificate>", "<g:extra>x</g:extra></g:GetCertificate>"
    ),
}


@pytest.mark.parametrize("body", INVALID_GETS.values(), ids=INVALID_GETS.keys())
def test_a_schema_invalid_request_of_a_contract_without_result_is_a_client_fault(
    store: SoapClient, body: str
) -> None:
    # GetCertificate 2 has no result element: its errors are SOAP Faults (rivta/README.md).
    assert_client_fault(send(store, path_of("GetCertificate", 2), envelope(body)))


def test_an_unknown_element_in_another_namespace_is_ignored(store: SoapClient) -> None:
    # Every wrapper type ends in <any namespace="##other">.
    body = GET.replace("</g:GetCertificate>", '<o:extra xmlns:o="urn:other">x</o:extra></g:GetCertificate>')

    reply = send(store, path_of("GetCertificate", 2), envelope(body))

    assert not reply.is_fault, reply.fault_string


def test_an_unknown_part_code_is_a_client_fault_for_get_certificate(store: SoapClient) -> None:
    assert_client_fault(
        send(store, path_of("GetCertificate", 2), envelope(get_certificate_body(STORED_ID, "NOPART")))
    )


def test_an_unknown_part_code_is_a_validation_error_for_set_certificate_status(store: SoapClient) -> None:
    reply = send(
        store, path_of("SetCertificateStatus", 2), envelope(set_status_body(STORED_ID, part="NOPART"))
    )

    assert reply.result()[::2] == ("ERROR", "VALIDATION_ERROR")


def test_an_unknown_status_code_is_a_validation_error_for_set_certificate_status(store: SoapClient) -> None:
    reply = send(
        store, path_of("SetCertificateStatus", 2), envelope(set_status_body(STORED_ID, status="NOSTAT"))
    )

    assert reply.result()[::2] == ("ERROR", "VALIDATION_ERROR")


@pytest.mark.parametrize(
    "person", ["", "abc", PATIENT[:11], BAD_LUHN], ids=["empty", "letters", "11 digits", "bad Luhn"]
)
def test_set_consent_for_an_invalid_personnummer_is_a_validation_error(
    store: SoapClient, person: str
) -> None:
    reply = send(store, path_of("SetConsent", 1), envelope(consent_body(person), header=WSA_TO))

    code, text, error_id = reply.result()
    assert (code, error_id) == ("ERROR", "VALIDATION_ERROR")
    assert not person or person not in (text or "")


def test_a_list_for_care_naming_an_invalid_personnummer_is_a_client_fault(store: SoapClient) -> None:
    ns = "urn:riv:clinicalprocess:healthcond:certificate:ListCertificatesForCareResponder:3"
    body = (
        f'<l:ListCertificatesForCare xmlns:l="{ns}" xmlns:t="{T3}">'
        f"<l:person-id><t:root>1.2.752.129.2.1.3.1</t:root><t:extension>{BAD_LUHN}</t:extension></l:person-id>"
        "<l:enhets-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-H489</t:extension></l:enhets-id>"
        "</l:ListCertificatesForCare>"
    )

    assert_client_fault(send(store, path_of("ListCertificatesForCare", 3), envelope(body)))


# --- The log -----------------------------------------------------------------------------------------


def test_bad_requests_leave_no_personal_identity_number_in_the_services_log(
    store: SoapClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="service")
    bad: list[tuple[str, str | bytes]] = [
        (REGISTER, new_registration(BAD_LUHN)),
        (REGISTER, new_registration().replace(PATIENT, PATIENT[:11], 1)),
        (REGISTER, NOT_XML["text"]),
        (path_of("GetCertificate", 2), new_registration()),
        (path_of("SetConsent", 1), envelope(consent_body(BAD_LUHN), header=WSA_TO)),
        (path_of("SetConsent", 1), envelope(consent_body(PATIENT))),
    ]

    for path, data in bad:
        send(store, path, data)

    assert caplog.records, "the SOAP channel logs each request"
    for record in caplog.records:
        logged = repr(record.__dict__)
        assert PATIENT[:11] not in logged and BAD_LUHN[:11] not in logged, record.getMessage()
        assert "Traceback" not in logged


# --- Size limit ---------------------------------------------------------------------------------------

LIMIT = 10_000  # the smallest limit Settings accepts


@pytest.fixture
def small_limit(database_url: str, tmp_path: Path) -> Iterator[SoapClient]:
    settings = Settings(
        database_url=database_url,
        max_request_bytes=LIMIT,
        dev_audit_key_file=tmp_path / "dev-audit-key.pem",
        **settings_keys(),
    )
    with TestClient(create_app(settings)) as client:
        yield SoapClient(client)


def _padded(size: int) -> bytes:
    data = new_registration().encode()
    padding = size - len(data) - len(b"<!---->")
    assert padding > 0
    return data.replace(b"<soapenv:Body>", b"<soapenv:Body><!--" + b" " * padding + b"-->", 1)


def test_a_request_within_the_size_limit_is_served(small_limit: SoapClient) -> None:
    data = _padded(LIMIT)
    assert len(data) == LIMIT

    assert send(small_limit, REGISTER, data).result() == ("OK", None, None)


@pytest.mark.parametrize("size", [LIMIT + 1, 10 * LIMIT, 3_000_000])
def test_a_request_over_the_size_limit_is_a_client_fault_and_stores_nothing(
    small_limit: SoapClient, size: int
) -> None:
    reply = send(small_limit, REGISTER, _padded(size))

    assert_client_fault(reply)
    assert small_limit.call("GetCertificate", 2, get_certificate_body(NEW_ID)).is_fault


def test_a_chunked_request_over_the_size_limit_is_a_client_fault(small_limit: SoapClient) -> None:
    data = _padded(4 * LIMIT)

    def chunks() -> Iterator[bytes]:
        # No Content-Length: the limit must hold while the body streams in.
        for start in range(0, len(data), 4096):
            yield data[start : start + 4096]

    response = small_limit.client.post(REGISTER, content=chunks(), headers=XML)

    assert "content-length" not in {k.lower() for k in response.request.headers}
    assert_client_fault(checked(response, data))
    assert small_limit.call("GetCertificate", 2, get_certificate_body(NEW_ID)).is_fault


def test_a_request_over_the_default_limit_is_a_client_fault(store: SoapClient) -> None:
    # The default limit is 2 000 000 bytes (service/config.py).
    assert_client_fault(send(store, REGISTER, _padded(2_000_001)))


# --- WSDL at ?wsdl ------------------------------------------------------------------------------------

WSDL_NS = {
    "wsdl": "http://schemas.xmlsoap.org/wsdl/",
    "soap": "http://schemas.xmlsoap.org/wsdl/soap/",
    "xs": "http://www.w3.org/2001/XMLSchema",
}


def _schema_locations(document: etree._Element) -> list[str]:
    found: Any = document.xpath(
        "//xs:import/@schemaLocation | //xs:include/@schemaLocation", namespaces=WSDL_NS
    )
    return [str(v) for v in found]


def _wsdl_file(contract: Contract) -> str:
    (file,) = (CONTRACTS_DIR / "interactions" / contract.folder).glob("*.wsdl")
    return f"/contracts/interactions/{contract.folder}/{file.name}"


@pytest.mark.parametrize("at", ["endpoint", "file"])
@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: f"{c.operation}_{c.major}")
def test_each_contracts_wsdl_names_its_own_address_and_every_schema_it_imports_resolves_relative_to_it(
    client: TestClient, contract: Contract, at: str
) -> None:
    # Served at its endpoint (?wsdl) and as its file under /contracts: the same contract and address.
    served = f"{contract.path}?wsdl" if at == "endpoint" else _wsdl_file(contract)

    response = client.get(served)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/xml")
    wsdl = etree.fromstring(response.content, parser())
    assert wsdl.tag == f"{{{WSDL_NS['wsdl']}}}definitions"
    addresses: Any = wsdl.xpath("//soap:address/@location", namespaces=WSDL_NS)
    assert [str(a) for a in addresses] == [f"http://testserver{contract.path}"]
    # Every schemaLocation, and every schema those import in turn, is served, and each is relative (no
    # leading /, no scheme): the service may be reached under a prefix (test_behind_an_ingress.py).
    url = f"http://testserver{served}"
    pending = [(url, location) for location in _schema_locations(wsdl)]
    assert pending, "the WSDL imports no schema"
    fetched: set[str] = set()
    while pending:
        importer, location = pending.pop()
        assert not location.startswith("/") and not urlsplit(location).scheme, (importer, location)
        absolute = urljoin(importer, location)
        if absolute in fetched:
            continue
        fetched.add(absolute)
        schema = client.get(urlsplit(absolute).path)
        assert schema.status_code == 200, absolute
        document = etree.fromstring(schema.content, parser())
        assert document.tag == f"{{{WSDL_NS['xs']}}}schema", absolute
        pending.extend((absolute, child) for child in _schema_locations(document))


@pytest.mark.parametrize("at", ["endpoint", "file"])
def test_the_wsdls_address_is_never_taken_from_the_requests_host_header(client: TestClient, at: str) -> None:
    # Otherwise any caller could make the served WSDL point elsewhere (README, INTYG_PUBLIC_BASE_URL).
    register = next(c for c in CONTRACTS if c.path == REGISTER)
    served = f"{REGISTER}?wsdl" if at == "endpoint" else _wsdl_file(register)
    forged = client.get(served, headers={"host": "evil.example", "x-forwarded-host": "evil.example"})

    assert b"evil.example" not in forged.content
    assert f'location="http://testserver{REGISTER}"'.encode() in forged.content


def test_the_wsdls_address_is_the_configured_public_base_url(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        database_url=database_url,
        public_base_url="https://intyg.example.se/intygstjanst/",
        dev_key_file=tmp_path / "dev.json",
        **settings_keys(),
    )
    with TestClient(create_app(settings)) as configured:
        served = configured.get(f"{REGISTER}?wsdl", headers={"host": "evil.example"})

    assert f'location="https://intyg.example.se/intygstjanst{REGISTER}"'.encode() in served.content


def test_the_wsdl_query_is_case_insensitive(client: TestClient) -> None:
    assert client.get(f"{REGISTER}?WSDL").status_code == 200


def test_a_get_without_wsdl_is_a_client_fault(client: TestClient) -> None:
    reply = checked(client.get(REGISTER))

    assert_client_fault(reply)


@pytest.mark.parametrize("contract", CONTRACTS, ids=lambda c: f"{c.operation}_{c.major}")
def test_a_real_client_loads_each_served_wsdl_and_posts_to_its_address(
    client: TestClient, contract: Contract
) -> None:
    import zeep

    zeep_: Any = zeep

    class AppTransport(zeep_.Transport):  # type: ignore[misc]
        """zeep's loader, fetching through the app instead of the network."""

        def _load_remote_data(self, url: str) -> bytes:
            parts = urlsplit(url)
            response = client.get(parts.path + (f"?{parts.query}" if parts.query else ""))
            assert response.status_code == 200, url
            return bytes(response.content)

    loaded: Any = zeep_.Client(f"http://testserver{contract.path}?wsdl", transport=AppTransport())
    (service,) = loaded.wsdl.services.values()
    (port,) = service.ports.values()
    assert port.binding_options["address"] == f"http://testserver{contract.path}"
    (operation,) = port.binding._operations.values()
    assert operation.name == contract.operation
