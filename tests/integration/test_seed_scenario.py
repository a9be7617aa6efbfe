"""The seed scenario of the product, end to end over SOAP, on a fresh database (SQLite and PostgreSQL).

register -> care get/list -> citizen (with consent) get/list -> archive -> care removes its copy with
consent -> care removes another without consent -> consent withdrawn. Each step checks what care and
the citizen can see afterwards (DOMAIN.md rules 1-8); the store is inspected for rule 9.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from service.store.tables import audit_records, certificates, documents, status_events
from service.store.unit_of_work import create_engine, dispose
from tests.integration import soap as s
from tests.integration.soap import SoapClient, listed_ids

pytestmark = pytest.mark.shared

PATIENT = "191212121212"
OTHER_PATIENT = "197705232382"
GIVER = "SE2321000016-39KJ"


def _rows(database_url: str, table, **where) -> int:
    async def count() -> int:
        engine = create_engine(database_url)
        try:
            async with engine.connect() as connection:
                query = select(func.count()).select_from(table)
                for column, value in where.items():
                    query = query.where(table.c[column] == value)
                return int((await connection.execute(query)).scalar_one())
        finally:
            await dispose(engine)

    return asyncio.run(count())


def _register(soap: SoapClient, certificate_id: str, patient: str) -> None:
    reply = soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope(certificate_id, patient))
    assert reply.result() == ("OK", None, None)


def _care_sees(soap: SoapClient, certificate_id: str, patient: str = PATIENT) -> bool:
    listed = certificate_id in listed_ids(
        soap.call("ListCertificatesForCare", 3, s.list_for_care(patient, care_giver=GIVER))
    )
    got = not soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD")).is_fault
    assert listed == got
    return got


def _citizen_lists(soap: SoapClient, patient: str = PATIENT, *, archived: bool = False) -> list[str]:
    return listed_ids(
        soap.call("ListCertificatesForCitizen", 4, s.list_for_citizen(patient, archived=archived))
    )


def test_the_seed_scenario_from_register_to_consent_withdrawn(soap: SoapClient, database_url: str) -> None:
    # Rule 1: register; both flags start true. A repeat is INFO and changes nothing.
    _register(soap, "cert-archived", PATIENT)
    _register(soap, "cert-kept-by-care", PATIENT)
    repeat = soap.post(s.path_of("RegisterCertificate", 3), s.register_envelope("cert-archived", PATIENT))
    assert repeat.result() == ("INFO", "Certificate already exists", None)

    # Rule 3: care reads and lists, with no consent involved.
    care_read = soap.call("GetCertificate", 2, s.get_certificate("cert-archived", "HSVARD"))
    assert care_read.texts("code")[:1] == ["LISJP"]
    assert any(text.strip() for text in care_read.texts("delsvar")), "the care read holds the answers"
    assert sorted(
        listed_ids(soap.call("ListCertificatesForCare", 3, s.list_for_care(PATIENT, care_giver=GIVER)))
    ) == [
        "cert-archived",
        "cert-kept-by-care",
    ]

    # Rule 2: without consent the citizen's list and read are refused; with consent they work.
    assert soap.call("ListCertificatesForCitizen", 4, s.list_for_citizen(PATIENT)).is_fault
    assert soap.call("GetCertificate", 2, s.get_certificate("cert-archived", "INVANA")).is_fault
    assert soap.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"
    assert soap.call("GetConsent", 1, s.get_consent(PATIENT)).texts("consent-given") == ["true"]
    assert not soap.call("GetCertificate", 2, s.get_certificate("cert-archived", "INVANA")).is_fault
    assert sorted(_citizen_lists(soap)) == ["cert-archived", "cert-kept-by-care"]

    # Rule 4: archiving moves it to the citizen's archive; care does not notice.
    assert (
        soap.call("SetCertificateStatus", 2, s.set_status("cert-archived", "INVANA", "DELETE")).result()[0]
        == "OK"
    )
    assert _citizen_lists(soap) == ["cert-kept-by-care"]
    assert _citizen_lists(soap, archived=True) == ["cert-archived"]
    assert _care_sees(soap, "cert-archived")

    # Rule 5 with consent: the care copy goes, the citizen keeps the certificate (still archived).
    assert soap.call("RemoveCertificateForCare", 1, s.remove_for_care("cert-archived")).result()[0] == "OK"
    assert not _care_sees(soap, "cert-archived")
    assert _citizen_lists(soap, archived=True) == ["cert-archived"]
    assert not soap.call("GetCertificate", 2, s.get_certificate("cert-archived", "INVANA")).is_fault

    # Rule 5 without consent: another patient's certificate is deleted permanently at once.
    _register(soap, "cert-no-consent", OTHER_PATIENT)
    assert soap.call("RemoveCertificateForCare", 1, s.remove_for_care("cert-no-consent")).result()[0] == "OK"
    assert not _care_sees(soap, "cert-no-consent", OTHER_PATIENT)
    assert _rows(database_url, certificates, id="cert-no-consent") == 0
    soap.call("SetConsent", 1, s.set_consent(OTHER_PATIENT, True))
    assert _citizen_lists(soap, OTHER_PATIENT) == []
    assert _citizen_lists(soap, OTHER_PATIENT, archived=True) == []

    # Rule 6: withdrawing consent ends the citizen's access, deletes what care removed, keeps the rest.
    assert soap.call("SetConsent", 1, s.set_consent(PATIENT, False)).result()[0] == "OK"
    assert soap.call("ListCertificatesForCitizen", 4, s.list_for_citizen(PATIENT)).is_fault
    assert soap.call("GetCertificate", 2, s.get_certificate("cert-kept-by-care", "INVANA")).is_fault
    assert _rows(database_url, certificates, id="cert-archived") == 0
    assert _care_sees(soap, "cert-kept-by-care")

    # Rule 9: document, metadata and status history are gone; the audit trail stays.
    for table, column in ((documents, "certificate_id"), (status_events, "certificate_id")):
        assert _rows(database_url, table, **{column: "cert-archived"}) == 0
        assert _rows(database_url, table, **{column: "cert-no-consent"}) == 0
    assert _rows(database_url, audit_records, action="remove_care_copy") == 2
    assert _rows(database_url, audit_records, action="withdraw_consent") == 1

    # Rule 7: consent given again brings nothing back.
    soap.call("SetConsent", 1, s.set_consent(PATIENT, True))
    assert _citizen_lists(soap) == ["cert-kept-by-care"]
    assert _citizen_lists(soap, archived=True) == []
