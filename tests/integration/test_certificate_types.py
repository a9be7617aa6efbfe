"""The certificate type table (service/certificate_type.py) through the app: only its types and versions are
registered, and a death certificate (DB, DOI), which care reads as any other, is found by no citizen channel:
REST, SOAP with the part INVANA, ListCertificatesForCitizen 4 and the 2013 citizen contracts.

The rules alone are in tests/unit/test_rules.py, the operations with their audit records in
tests/unit/test_operations.py; the metrics' ``type`` label in test_telemetry.py.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.config import Settings
from service.store.tables import audit_records
from tests.integration import soap as s
from tests.integration.conftest import sync_url
from tests.integration.rest import ANNA, PREFIX, CitizenApi, assert_problem, portal_settings, register
from tests.integration.soap import SoapClient
from tests.integration.test_legacy_citizen_soap import get_certificate, list_certificates, result, set_status

REGISTER = s.path_of("RegisterCertificate", 3)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


@pytest.fixture
def audit(database_url: str) -> Iterator[Callable[[], list[tuple[Any, ...]]]]:
    """(action, outcome, reason, certificate_type) of every committed audit record, oldest first."""
    engine = sqlalchemy.create_engine(sync_url(database_url))

    def read() -> list[tuple[Any, ...]]:
        with engine.connect() as connection:
            columns = (
                audit_records.c.action,
                audit_records.c.outcome,
                audit_records.c.reason,
                audit_records.c.certificate_type,
            )
            return [tuple(row) for row in connection.execute(select(*columns).order_by(audit_records.c.id))]

    yield read
    engine.dispose()


def _luse(certificate_id: str, *, version: str = "1.0", type_code: str = "LUSE") -> str:
    envelope = s.register_envelope(certificate_id, ANNA, kind="luse", version=version)
    return envelope.replace("<ns3:code>LUSE</ns3:code>", f"<ns3:code>{type_code}</ns3:code>")


# --- Only the table's types and versions are registered -------------------------------------------------------


@pytest.mark.parametrize(
    ("envelope", "text"),
    [
        pytest.param(
            lambda: _luse("c-x", type_code="NONSENSE"),
            "Unknown certificate type NONSENSE",
            marks=pytest.mark.shared,
            id="NONSENSE 1.0",
        ),
        pytest.param(
            lambda: _luse("c-x", version="99.9"),
            "LUSE has no version 99",
            marks=pytest.mark.shared,
            id="LUSE 99.9",
        ),
        pytest.param(
            lambda: _luse("c-x", type_code="191212121212"),
            "Unknown certificate type",
            marks=pytest.mark.shared,
            id="an identity number as the type",
        ),
        pytest.param(
            lambda: s.death_certificate("c-x", ANNA, version="2.0"), "DB has no version 2", id="DB 2.0"
        ),
    ],
)
def test_a_type_or_version_the_service_does_not_store_is_refused_saying_which_stored_nowhere_and_audited(
    soap: SoapClient, audit: Callable[[], list[tuple[Any, ...]]], envelope: Callable[[], str], text: str
) -> None:
    reply = soap.post(REGISTER, envelope())

    assert reply.result() == ("ERROR", text, "VALIDATION_ERROR")
    assert soap.call("GetCertificate", 2, s.get_certificate("c-x", "HSVARD")).is_fault
    assert audit()[0] == ("register", "error", "UnknownCertificateType", None)


@pytest.mark.shared
@pytest.mark.parametrize(
    ("kind", "version", "type_code"),
    [
        ("lisjp", "1.0", "LISJP"),
        ("luse", "1.0", "LUSE"),
        ("luse", "1.3", "LUSE"),
        ("luaefs", "1.0", "LUAE_FS"),
        ("luaena", "1.0", "LUAE_NA"),
    ],
)
def test_a_type_and_version_of_the_table_is_registered_and_audited_with_its_type(
    soap: SoapClient, audit: Callable[[], list[tuple[Any, ...]]], kind: str, version: str, type_code: str
) -> None:
    reply = soap.post(REGISTER, s.register_envelope("c-1", ANNA, kind=kind, version=version))

    assert reply.result() == ("OK", None, None)
    assert audit() == [("register", "ok", None, type_code)]


# --- A death certificate: care reads it as any other; no citizen channel finds it ------------------------------


def test_care_reads_and_lists_a_death_certificate_as_any_other(soap: SoapClient) -> None:
    assert soap.post(REGISTER, s.death_certificate("db-1", ANNA)).result() == ("OK", None, None)

    read = soap.call("GetCertificate", 2, s.get_certificate("db-1", "HSVARD"))
    listed = soap.call("ListCertificatesForCare", 3, s.list_for_care(ANNA, care_giver="SE2321000016-39KJ"))

    assert not read.is_fault and "DB" in read.texts("code")
    assert s.statuses(read) == [("HSVARD", "RECEIV")]
    assert s.listed_ids(listed) == ["db-1"]


@pytest.fixture
def death_certificate_beside_another(soap: SoapClient, client: TestClient) -> CitizenApi:
    """Anna, with consent, has a sick-leave certificate (c-1) and a death certificate (db-1) in her name."""
    register(soap, "c-1", ANNA)
    assert soap.post(REGISTER, s.death_certificate("db-1", ANNA)).result()[0] == "OK"
    anna = CitizenApi(client, ANNA)
    anna.consent()
    return anna


REST_ACTIONS = [
    ("GET", "", None),
    ("GET", "/document", None),
    ("POST", "/archive", None),
    ("POST", "/restore", None),
    ("POST", "/send", {"recipient": "SKV"}),
]


@pytest.mark.shared
def test_the_citizen_api_lists_no_death_certificate_and_answers_it_exactly_as_an_unknown_id(
    soap: SoapClient,
    client: TestClient,
    death_certificate_beside_another: CitizenApi,
    audit: Callable[[], list[tuple[Any, ...]]],
) -> None:
    anna = death_certificate_beside_another
    assert anna.listed() == ["c-1"]
    assert anna.listed(archived=True) == []
    for method, suffix, body in REST_ACTIONS:

        def call(certificate_id: str, method: str = method, suffix: str = suffix, body: Any = body) -> Any:
            path = f"{PREFIX}/certificates/{certificate_id}{suffix}"
            return client.request(method, path, json=body, headers=anna.headers)

        hidden, unknown = call("db-1"), call("no-such-id")

        assert_problem(hidden, 404, "not_found")
        assert (hidden.status_code, hidden.json()) == (unknown.status_code, unknown.json()), suffix
    # Nothing changed, and each refusal is in the audit trail as the denial it is.
    assert s.statuses(soap.call("GetCertificate", 2, s.get_certificate("db-1", "HSVARD"))) == [
        ("HSVARD", "RECEIV")
    ]
    refused = [(action, outcome, reason) for action, outcome, reason, _ in audit() if outcome == "denied"]
    assert refused == [
        ("read", "denied", "NotPermitted"),
        ("read", "denied", "NotPermitted"),
        ("archive", "denied", "NotPermitted"),
        ("restore", "denied", "NotPermitted"),
        ("send", "denied", "NotPermitted"),
    ]


@pytest.mark.shared
def test_the_soap_citizen_contracts_list_no_death_certificate_and_answer_it_as_an_unknown_id(
    soap: SoapClient, death_certificate_beside_another: CitizenApi
) -> None:
    listed = soap.call("ListCertificatesForCitizen", 4, s.list_for_citizen(ANNA))
    archived = soap.call("ListCertificatesForCitizen", 4, s.list_for_citizen(ANNA, archived=True))
    assert (s.listed_ids(listed), s.listed_ids(archived)) == (["c-1"], [])

    hidden = soap.call("GetCertificate", 2, s.get_certificate("db-1", "INVANA"))
    unknown = soap.call("GetCertificate", 2, s.get_certificate("no-such-id", "INVANA"))
    assert hidden.is_fault
    assert (hidden.fault_code, hidden.fault_string) == (unknown.fault_code, unknown.fault_string)

    archive = soap.call("SetCertificateStatus", 2, s.set_status("db-1", "INVANA", "DELETE"))
    archive_unknown = soap.call("SetCertificateStatus", 2, s.set_status("no-such-id", "INVANA", "DELETE"))
    assert archive.result() == archive_unknown.result()
    assert archive.result()[0::2] == ("ERROR", "APPLICATION_ERROR")
    care = soap.call("GetCertificate", 2, s.get_certificate("db-1", "HSVARD"))
    assert s.statuses(care) == [("HSVARD", "RECEIV")]


@pytest.mark.shared
def test_the_2013_citizen_contracts_list_no_death_certificate_and_answer_it_as_an_unknown_id(
    soap: SoapClient, client: TestClient, death_certificate_beside_another: CitizenApi
) -> None:
    listed = list_certificates(client)
    assert [m["certificateId"] for m in listed["meta"]] == ["c-1"]
    assert not list_certificates(client, certificateType=["DB"])["meta"]

    hidden, unknown = get_certificate(client, "db-1"), get_certificate(client, "no-such-id")
    assert result(hidden) == result(unknown)
    assert hidden["meta"] is None and hidden["certificate"] is None
    for status in ("SENT", "RECEIVED"):
        assert result(set_status(client, "db-1", "SKV", status)) == result(
            set_status(client, "no-such-id", "SKV", status)
        )
    care = soap.call("GetCertificate", 2, s.get_certificate("db-1", "HSVARD"))
    assert s.statuses(care) == [("HSVARD", "RECEIV")]


def test_without_consent_a_death_certificate_is_still_answered_as_an_unknown_id(
    soap: SoapClient, client: TestClient
) -> None:
    # A refusal for missing consent (403) would tell that the id exists.
    assert soap.post(REGISTER, s.death_certificate("db-1", ANNA)).result()[0] == "OK"
    anna = CitizenApi(client, ANNA)

    assert_problem(anna.get("/certificates/db-1"), 404, "not_found")
    hidden = soap.call("GetCertificate", 2, s.get_certificate("db-1", "INVANA"))
    unknown = soap.call("GetCertificate", 2, s.get_certificate("no-such-id", "INVANA"))
    assert (hidden.fault_code, hidden.fault_string) == (unknown.fault_code, unknown.fault_string)
