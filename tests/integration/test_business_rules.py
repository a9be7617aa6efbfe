"""RegisterCertificate 3 end to end with the national business rules configured (the integration suite's
settings set INTYG_BUSINESS_RULES_DIR where ../shared has the rule set): a certificate that breaks its
type's rules is answered VALIDATION_ERROR naming the rule and where, stored nowhere, and audited.

The rules themselves, on every example of the rule set, are tested in ``tests/unit/test_business_rules.py``;
the refusal as a rule in ``tests/unit/test_rules.py``; the peer requests, which follow their rules, are
registered in ``tests/integration/test_peer_requests.py``.
"""

from __future__ import annotations

import re

import pytest
from lxml import etree
from sqlalchemy import create_engine, select

from service.config import Settings
from service.store.tables import audit_records
from tests.integration.soap import C3, SoapClient, envelope_for, get_certificate, path_of, register_envelope
from tests.reference import PERSONNUMMER, RULE_EXAMPLES, need_business_rules

pytestmark = [
    pytest.mark.shared,
    pytest.mark.one_engine(
        "the rules refuse before the store is asked; the audit record is tested on both in test_audit_log"
    ),
]

REGISTER = path_of("RegisterCertificate", 3)
NAMESPACES = {
    "rg": "urn:riv:clinicalprocess:healthcond:certificate:RegisterCertificateResponder:3",
    "gn": C3,
    "tp": "urn:riv:clinicalprocess:healthcond:certificate:types:3",
}
CARE_GIVER = "SE2321000016-39KJ"


@pytest.fixture(autouse=True)
def _rules_configured(settings: Settings) -> None:
    need_business_rules()
    assert settings.business_rules_dir is not None


def audited(database_url: str) -> list[tuple[str, str, str | None]]:
    engine = create_engine(database_url.replace("sqlite+aiosqlite", "sqlite"))
    try:
        with engine.connect() as connection:
            rows = connection.execute(
                select(audit_records.c.action, audit_records.c.outcome, audit_records.c.reason)
            ).all()
    finally:
        engine.dispose()
    return [(str(a), str(o), r) for a, o, r in rows]


def without_answers(envelope: str, *ids: str) -> bytes:
    root = etree.fromstring(envelope.encode())
    for answer in list(root.iter(f"{{{C3}}}svar")):
        parent = answer.getparent()
        if answer.get("id") in ids and parent is not None:
            parent.remove(answer)
    return etree.tostring(root)


def assert_not_stored(soap: SoapClient, certificate_id: str) -> None:
    reply = soap.call("GetCertificate", 2, get_certificate(certificate_id, "HSVARD"))
    assert reply.is_fault and "not found" in reply.fault_string


def test_a_lisjp_without_its_sick_leave_is_refused_naming_the_rule_stored_nowhere_and_audited(
    soap: SoapClient, database_url: str
) -> None:
    envelope = without_answers(register_envelope("lisjp-1", PERSONNUMMER), "32")

    reply = soap.post(REGISTER, envelope)

    code, text, error = reply.result()
    assert (code, error) == ("ERROR", "VALIDATION_ERROR")
    assert text is not None
    # lisjp.v1.sch's pattern "intyg" counts the sick-leave answers.
    assert text.startswith(
        "The certificate does not follow the rules of its type: [intyg] /RegisterCertificate[1]/intyg[1]: "
        "Ett 'MU' måste ha mellan 1 och 4 'Behov av sjukskrivning'"
    )
    assert PERSONNUMMER not in text
    assert_not_stored(soap, "lisjp-1")
    assert ("register", "error", "BusinessRuleViolation") in audited(database_url)


def test_a_lisjp_missing_many_answers_is_answered_with_the_first_failures_and_how_many_more(
    soap: SoapClient,
) -> None:
    envelope = without_answers(
        register_envelope("lisjp-2", PERSONNUMMER), "1", "28", "35", "17", "39", "40", "6"
    )

    _code, text, error = soap.post(REGISTER, envelope).result()

    assert error == "VALIDATION_ERROR" and text is not None
    assert text.count("] /RegisterCertificate[1]/intyg[1]") == 3 and re.search(r"; and \d+ more$", text)
    assert len(text) < 1000


def tstrk1031(example: str, certificate_id: str) -> bytes:
    """A TSTRK1031 example of the rule set as a care system sends it: in an envelope, with its own id,
    a valid patient and the care giver the tests' development consumer registers for."""
    document = etree.fromstring((RULE_EXAMPLES / "tstrk1031" / example).read_bytes())
    for path, value in (
        ("intygs-id", certificate_id),
        ("patient/gn:person-id", PERSONNUMMER),
        ("skapadAv/gn:enhet/gn:vardgivare/gn:vardgivare-id", CARE_GIVER),
    ):
        element = document.find(f"rg:intyg/gn:{path}/tp:extension", NAMESPACES)
        assert element is not None, path
        element.text = value
    body = etree.tostring(document, encoding="unicode")
    return envelope_for("RegisterCertificate", 3, body, address=CARE_GIVER)


def test_a_tstrk1031_following_its_rules_is_stored(soap: SoapClient) -> None:
    reply = soap.post(REGISTER, tstrk1031("v4/pass-complete.xml", "tstrk-1"))

    assert reply.result() == ("OK", None, None)
    assert not soap.call("GetCertificate", 2, get_certificate("tstrk-1", "HSVARD")).is_fault


@pytest.mark.parametrize(
    ("example", "rule"),
    [("v4/fail-R34.xml", "R34"), ("v3/fail-R23-R24.xml", "R23"), ("v3/fail-R19.xml", "q8")],
)
def test_a_tstrk1031_breaking_a_rule_is_refused_naming_it(soap: SoapClient, example: str, rule: str) -> None:
    _code, text, error = soap.post(REGISTER, tstrk1031(example, "tstrk-2")).result()

    assert error == "VALIDATION_ERROR" and text is not None
    assert re.search(rf"\[[^\]]*\b{rule}\b[^\]]*\] /RegisterCertificate\[1\]/intyg\[1\]", text), text
    assert_not_stored(soap, "tstrk-2")


def test_an_entity_in_the_request_never_reaches_the_rules(soap: SoapClient) -> None:
    # Saxon's parser would resolve it; the service refuses any DTD before the rules are asked, and gives
    # Saxon only the tree it parsed itself (service/soap/contracts.py).
    envelope = tstrk1031("v4/pass-complete.xml", "tstrk-3").decode()
    hostile = (
        '<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
        + envelope.replace("<ns3:extension>tstrk-3<", "<ns3:extension>&x;<").replace(
            "<?xml version='1.0' encoding='utf-8'?>", ""
        )
    )

    reply = soap.post(REGISTER, hostile.encode(), expect_status=500)

    assert reply.is_fault and reply.fault_code is not None and reply.fault_code.endswith("Client")
    assert_not_stored(soap, "tstrk-3")
