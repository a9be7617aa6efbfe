"""The SQL store: the migrated schema, the repositories, the unit of work, and the deletion rules of
DOMAIN.md (5, 6, 7, 9) through ``service.operations`` on the real store, on SQLite and PostgreSQL.

The same operations on the in-memory fake are in ``tests/unit/test_operations.py``; ``tests/fakes.py``
keeps the transaction contract checked here. Races between operations are in ``test_concurrency.py``.
Rows are checked with Core selects on ``service.store.tables``, not through the repositories under test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import psycopg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import ColumnElement, Row, Table, func, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from service import errors, operations, rules
from service.document import TYPES3
from service.model import (
    Action,
    AuditRecord,
    Caller,
    CallerKind,
    Certificate,
    CertificateWithDocument,
    Channel,
    Consent,
    Outcome,
    Party,
    PersonId,
    Recipient,
    Relation,
    RelationKind,
    StaffId,
    StatusCode,
    StatusEvent,
)
from service.store import migration
from service.store.tables import (
    audit_records,
    certificate_relations,
    certificates,
    consent_changes,
    consents,
    documents,
    metadata,
    outbox,
    status_events,
)
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests.fakes import FakeUnitOfWork, a_certificate, an_issued_certificate, document_of
from tests.keys import KEYRING, key_of

# The service stores local wall-clock times without a zone (app.py's clock), so the tests do too.
SIGNED = dt.datetime(2024, 5, 2, 10, 0)
REGISTERED = dt.datetime(2024, 5, 2, 10, 1)
NOW = dt.datetime(2024, 5, 17, 9, 30)
LATER = dt.datetime(2024, 5, 18, 8, 0)
PATIENT = PersonId.parse("191212121212")
OTHER_PATIENT = PersonId.parse("194404041230")
CARE_GIVER = "SE2321000016-GIVER1"
OTHER_CARE_GIVER = "SE2321000016-GIVER2"
CARE = Caller(CallerKind.CARE_SYSTEM, Channel.SOAP, "SE2321000016-WEBCERT", care_giver_id=CARE_GIVER)
CITIZEN = Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", citizen=PATIENT)
FORSAKRINGSKASSAN = {"FKASSA": Recipient(Party.FKASSA, "Försäkringskassan", frozenset({"LISJP"}))}


def stored(certificate_id: str = "cert-1", **changes: Any) -> Certificate:
    """A certificate as the store holds it after registration: naive times and the RECEIV event."""
    fields: dict[str, Any] = {
        "signed_at": SIGNED,
        "registered_at": REGISTERED,
        "status_events": (StatusEvent(StatusCode.RECEIV, Party.HSVARD, REGISTERED),),
        **changes,
    }
    return a_certificate(certificate_id, **fields)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await dispose(engine)


@pytest.fixture
def uow(engine: AsyncEngine) -> SqlUnitOfWork:
    return SqlUnitOfWork(engine, KEYRING)


async def seed(
    uow: SqlUnitOfWork,
    *certificates_: Certificate,
    consent_given: Sequence[PersonId] = (),
    documents: Mapping[str, bytes] | None = None,
) -> None:
    """Store the certificates, each with ``documents``' document or ``document_of`` its id."""
    async with uow:
        for certificate in certificates_:
            document = (documents or {}).get(certificate.id, document_of(certificate.id))
            await uow.certificates.add(certificate, document)
        for patient in consent_given:
            await uow.consents.set(patient, given=True, at=REGISTERED, caller=CITIZEN)
        await uow.commit()


async def rows(engine: AsyncEngine, table: Table, *where: ColumnElement[bool]) -> list[Row[Any]]:
    async with engine.connect() as connection:
        return list((await connection.execute(select(table).where(*where))).all())


async def count(engine: AsyncEngine, table: Table, *where: ColumnElement[bool]) -> int:
    async with engine.connect() as connection:
        found = await connection.scalar(select(func.count()).select_from(table).where(*where))
    return int(found or 0)


async def stored_ids(engine: AsyncEngine) -> set[str]:
    return {row.id for row in await rows(engine, certificates)}


async def audit_of(engine: AsyncEngine, action: str) -> list[Row[Any]]:
    async with engine.connect() as connection:
        query = select(audit_records).where(audit_records.c.action == action).order_by(audit_records.c.seq)
        return list((await connection.execute(query)).all())


async def refuse(engine: AsyncEngine, when: str, table: Table, condition: str = "") -> None:
    """Install a trigger that makes the database refuse a write, so that an operation fails inside
    its transaction the way a real store failure would (no code of ours is patched)."""
    name = f"refuse_{when.lower().replace(' ', '_')}_{table.name}"
    async with engine.begin() as connection:
        if connection.dialect.name == "sqlite":
            guard = f"WHEN {condition}" if condition else ""
            await connection.exec_driver_sql(
                f"CREATE TRIGGER {name} {when} ON {table.name} {guard} "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
            )
        else:
            await connection.exec_driver_sql(
                "CREATE OR REPLACE FUNCTION refuse_by_test() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
            )
            guard = f"WHEN ({condition})" if condition else ""
            await connection.exec_driver_sql(
                f"CREATE TRIGGER {name} {when} ON {table.name} FOR EACH ROW {guard} "
                "EXECUTE FUNCTION refuse_by_test()"
            )


# The store refuses the write: PostgreSQL's error comes through as it is; SQLite reports a trigger's
# RAISE as a constraint failure, which the unit of work takes for a lost race and the operation retries.
# The driver's error as SQLAlchemy wraps it (SQLite), or psycopg's own (PostgreSQL's request path).
STORE_FAILURE = (DBAPIError, psycopg.Error, errors.ConcurrentChange)


# ---------------------------------------------------------------------------------------------------
# The schema


async def test_the_migrated_schema_matches_the_tables_and_is_at_head(engine: AsyncEngine) -> None:
    def differences(connection: Any) -> list[Any]:
        context = MigrationContext.configure(connection, opts={"compare_type": True})
        return list(compare_metadata(context, metadata))

    async with engine.connect() as connection:
        found = await connection.run_sync(differences)

    assert found == []
    head = migration.head_revision()
    assert head is not None
    assert await migration.current_revision(engine) == head


# A certificate document as registered (core 3 ``Intyg``): its id, the relations it states, its answers.
def intyg(certificate_id: str, *, relations: str = "", answers: str = "") -> bytes:
    return (
        f'<intyg xmlns="urn:riv:clinicalprocess:healthcond:certificate:3" xmlns:t="{TYPES3}">'
        f"<intygs-id><t:root>SE2321000016-H489</t:root><t:extension>{certificate_id}</t:extension></intygs-id>"
        f"{relations}{answers}</intyg>"
    ).encode()


def relation(code: str, certificate_id: str) -> str:
    return (
        f"<relation><typ><t:code>{code}</t:code><t:codeSystem>c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146"
        f"</t:codeSystem></typ><intygs-id><t:root>SE2321000016-H489</t:root><t:extension>{certificate_id}"
        "</t:extension></intygs-id></relation>"
    )


def sick_leave(start: str, end: str) -> str:
    return (
        f'<svar id="32"><delsvar id="32.2"><t:datePeriod><t:start>{start}</t:start><t:end>{end}</t:end>'
        "</t:datePeriod></delsvar></svar>"
    )


# Certificates as the service stored them before migration 0007, with the validity and relations it is
# to read from their encrypted documents.
BEFORE_0007 = {
    # LISJP's periods, in any order: the earliest start to the latest end.
    "lisjp": (
        "LISJP",
        intyg(
            "lisjp", answers=sick_leave("2015-12-12", "2015-12-14") + sick_leave("2015-12-07", "2015-12-10")
        ),
        (dt.date(2015, 12, 7), dt.date(2015, 12, 14)),
        [],
    ),
    # A type without a period: the signing day, and its relations.
    "luse": (
        "LUSE",
        intyg("luse", relations=relation("KOMPLT", "lisjp")),
        (SIGNED.date(),) * 2,
        [("KOMPLT", "lisjp")],
    ),
    "replacing": (
        "LISJP",
        intyg(
            "replacing", relations=relation("ERSATT", "lisjp"), answers=sick_leave("2015-12-07", "2016-01-31")
        ),
        (dt.date(2015, 12, 7), dt.date(2016, 1, 31)),
        [("ERSATT", "lisjp")],
    ),
    # Stored before registration read them: a period that ends before it starts gives the signing day,
    # and an unknown relation code no relations.
    "unreadable": (
        "LISJP",
        intyg(
            "unreadable", relations=relation("OKAND", "lisjp"), answers=sick_leave("2015-12-10", "2015-12-07")
        ),
        (SIGNED.date(),) * 2,
        [],
    ),
}


def _stored_before_0007(url: str) -> None:
    """``BEFORE_0007`` stored at head, then the database taken back to 0006 (which drops what 0007 adds)."""

    async def store() -> None:
        engine = create_engine(url)
        try:
            await seed(
                SqlUnitOfWork(engine, KEYRING),
                *(stored(i, type_code=code) for i, (code, *_) in BEFORE_0007.items()),
                documents={i: document for i, (_, document, *_) in BEFORE_0007.items()},
            )
        finally:
            await dispose(engine)

    asyncio.run(store())
    command.downgrade(migration.alembic_config(url), "0006")


def test_migration_0007_reads_the_stored_documents_validity_and_relations_into_their_columns(
    database_url: str,
) -> None:
    _stored_before_0007(database_url)

    migration.upgrade(database_url, keyring=KEYRING)

    async def read() -> tuple[list[Row[Any]], list[Row[Any]]]:
        engine = create_engine(database_url)
        try:
            return await rows(engine, certificates), await rows(engine, certificate_relations)
        finally:
            await dispose(engine)

    found, relations = asyncio.run(read())
    assert {r.id: (r.valid_from, r.valid_to) for r in found} == {i: v[2] for i, v in BEFORE_0007.items()}
    assert sorted((r.certificate_id, r.kind, r.related_id, r.related_root) for r in relations) == sorted(
        (i, kind, other, "SE2321000016-H489") for i, v in BEFORE_0007.items() for kind, other in v[3]
    )
    # With what lists show of the stating certificate, copied from its row.
    stating = {r.id: r for r in found}
    assert all(
        (r.patient_key, r.certificate_root, r.registered_at, r.revoked)
        == (key_of(PATIENT.value), stating[r.certificate_id].id_root, REGISTERED, False)
        for r in relations
    )


def revision_of(database_url: str) -> str | None:
    """The schema revision the database at ``database_url`` is at, through an engine of its own."""

    async def revision() -> str | None:
        engine = create_engine(database_url)
        try:
            return await migration.current_revision(engine)
        finally:
            await dispose(engine)

    return asyncio.run(revision())


def test_migration_0007_without_the_keys_stops_before_changing_anything(database_url: str) -> None:
    _stored_before_0007(database_url)

    with pytest.raises(RuntimeError, match="INTYG_KEYS_FILE"):
        migration.upgrade(database_url)

    assert revision_of(database_url) == "0006"


# ---------------------------------------------------------------------------------------------------
# Repositories and the unit of work


async def test_deleting_removes_document_metadata_and_status_history_but_keeps_the_audit_trail(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored("gone"), stored("kept"))
    await operations.get_certificate_for_care(uow, certificate_id="gone", caller=CARE, now=NOW)

    async with uow:
        await uow.certificates.delete(["gone"])
        await uow.commit()

    # Rule 9: the document, the metadata and the status history go.
    assert await stored_ids(engine) == {"kept"}
    assert await count(engine, documents, documents.c.certificate_id == "gone") == 0
    assert await count(engine, status_events, status_events.c.certificate_id == "gone") == 0
    assert await count(engine, documents) == 1
    assert await count(engine, status_events) == 1
    # The audit trail of who did what stays, without the document's content.
    [read] = await audit_of(engine, "read")
    assert read.certificate_ids == "gone"
    assert "DOCUMENT-CONTENT" not in repr(tuple(read))


async def test_deleting_a_certificate_removes_the_relations_it_states_and_keeps_those_stated_of_it(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    def replacing(certificate_id: str, replaced: str) -> Certificate:
        return stored(certificate_id, relations=(Relation(RelationKind.REPLACES, replaced, "root"),))

    await seed(uow, stored("a"), replacing("b", "a"), replacing("c", "b"))

    async with uow:
        await uow.certificates.delete(["b"])
        await uow.commit()

    assert await stored_ids(engine) == {"a", "c"}
    assert [(r.certificate_id, r.related_id) for r in await rows(engine, certificate_relations)] == [
        ("c", "b")
    ]


async def test_deleting_no_certificates_changes_nothing(uow: SqlUnitOfWork, engine: AsyncEngine) -> None:
    await seed(uow, stored())

    async with uow:
        await uow.certificates.delete([])
        await uow.commit()

    assert await stored_ids(engine) == {"cert-1"}


async def test_nothing_is_stored_when_the_block_is_left_without_commit(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored("existing"), consent_given=[PATIENT])

    async with uow:
        await uow.certificates.add(stored("new"), b"<intyg/>")
        await uow.certificates.delete(["existing"])
        await uow.consents.set(PATIENT, given=False, at=NOW, caller=CITIZEN)
        # The block sees its own work before it ends.
        assert await uow.certificates.get("new") is not None
        assert await uow.certificates.get("existing") is None

    assert await stored_ids(engine) == {"existing"}
    assert [row.given for row in await rows(engine, consents)] == [True]
    assert await count(engine, consent_changes) == 1


async def test_an_exception_in_the_block_rolls_back_and_passes_through(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    with pytest.raises(errors.CertificateNotFound):
        async with uow:
            await uow.certificates.add(stored("new"), b"<intyg/>")
            raise errors.CertificateNotFound("raised by the test")

    assert await stored_ids(engine) == set()


async def test_a_rollback_discards_the_staged_work_and_the_block_goes_on(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    async with uow:
        await uow.certificates.add(stored("discarded"), b"<intyg/>")
        await uow.rollback()
        await uow.certificates.add(stored("kept"), b"<intyg/>")
        await uow.commit()

    assert await stored_ids(engine) == {"kept"}


async def test_the_same_unit_of_work_can_be_entered_again_after_a_commit(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    # Operations retry by entering the same unit of work again.
    for certificate_id in ("first", "second"):
        async with uow:
            await uow.certificates.add(stored(certificate_id), b"<intyg/>")
            await uow.commit()

    assert await stored_ids(engine) == {"first", "second"}


async def test_a_certificate_id_taken_already_is_not_stored_again(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored())

    async with uow:
        assert await uow.certificates.add(stored(patient=OTHER_PATIENT), b"<intyg/>") is False
        await uow.commit()

    async with uow:
        assert await uow.certificates.get_with_document("cert-1") == CertificateWithDocument(
            stored(), document_of("cert-1")
        )
    assert await count(engine, status_events) == 1


async def test_a_citizen_never_seen_has_not_given_consent(uow: SqlUnitOfWork) -> None:
    async with uow:
        assert await uow.consents.get(PATIENT) == Consent(PATIENT, given=False, changed_at=None)
        assert await uow.consents.get(PATIENT, for_update=True) == Consent(
            PATIENT, given=False, changed_at=None
        )


async def test_setting_consent_keeps_one_row_per_citizen_and_records_every_change(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    portal = Caller(CallerKind.CITIZEN, Channel.SOAP, "legacy-portal", citizen=PATIENT)
    for given, at, caller in ((True, NOW, CITIZEN), (False, LATER, portal)):
        async with uow:
            await uow.consents.set(PATIENT, given=given, at=at, caller=caller)
            await uow.commit()
        async with uow:
            assert await uow.consents.get(PATIENT) == Consent(PATIENT, given=given, changed_at=at)

    assert [(r.patient_key, r.given, r.changed_at) for r in await rows(engine, consents)] == [
        (key_of(PATIENT.value), False, LATER)
    ]
    history = await rows(engine, consent_changes)
    assert [(r.patient_key, r.given, r.at, r.actor_kind, r.actor_id, r.channel) for r in history] == [
        (key_of(PATIENT.value), True, NOW, "citizen", "1177-portal", "rest"),
        (key_of(PATIENT.value), False, LATER, "citizen", "legacy-portal", "soap"),
    ]
    async with uow:
        assert await uow.consents.get(OTHER_PATIENT) == Consent(OTHER_PATIENT, given=False, changed_at=None)


# ---------------------------------------------------------------------------------------------------
# Rule 1 through the operation


async def test_registering_the_same_certificate_again_stores_it_once_and_audits_both(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    new = operations.NewCertificate(an_issued_certificate(), b"<intyg id='cert-1'/>")

    first = await operations.register_certificate(uow, new=new, caller=CARE, now=NOW)
    again = await operations.register_certificate(uow, new=new, caller=CARE, now=LATER)

    assert (first, again) == (rules.Registration.CREATE, rules.Registration.ALREADY_EXISTS)
    [row] = await rows(engine, certificates)
    assert (row.registered_at, row.care_available, row.citizen_available, row.revoked) == (
        NOW,
        True,
        True,
        False,
    )
    assert [(r.code, r.party) for r in await rows(engine, status_events)] == [("RECEIV", "HSVARD")]
    assert [(r.outcome, r.certificate_type) for r in await audit_of(engine, "register")] == [
        ("ok", "LISJP"),  # the type, which the metrics count by
        ("info", None),  # rule 1: it exists already
    ]


async def test_registering_a_taken_id_for_another_patient_changes_nothing_and_is_audited(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored())
    new = operations.NewCertificate(an_issued_certificate(patient=OTHER_PATIENT), b"<intyg/>")

    with pytest.raises(errors.CertificateIdConflict):
        await operations.register_certificate(uow, new=new, caller=CARE, now=NOW)

    [row] = await rows(engine, certificates)
    assert row.patient_key == key_of(PATIENT.value)
    [record] = await audit_of(engine, "register")
    assert (record.outcome, record.reason, record.patient_key) == (
        "error",
        "CertificateIdConflict",
        key_of(OTHER_PATIENT.value),
    )


# ---------------------------------------------------------------------------------------------------
# Rule 5: the care provider removes its copy


async def test_removing_the_care_copy_with_consent_keeps_the_certificate_for_the_citizen(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored(), consent_given=[PATIENT])

    removal = await operations.remove_care_copy(
        uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
    )

    assert removal is operations.Removal.KEPT_FOR_CITIZEN
    [row] = await rows(engine, certificates)
    assert (row.care_available, row.citizen_available) == (False, True)
    assert await count(engine, documents) == 1
    [record] = await audit_of(engine, "remove_care_copy")
    assert (record.outcome, record.deleted, record.certificate_ids) == ("ok", None, "cert-1")
    # Care no longer sees it (rule 3); the citizen still does (rule 2).
    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)
    listed = await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=NOW)
    assert [c.id for c in listed] == ["cert-1"]


async def test_removing_the_care_copy_without_consent_deletes_the_certificate_permanently(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored(), stored("other"))

    removal = await operations.remove_care_copy(
        uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
    )

    assert removal is operations.Removal.DELETED
    assert await stored_ids(engine) == {"other"}
    assert await count(engine, documents, documents.c.certificate_id == "cert-1") == 0
    assert await count(engine, status_events, status_events.c.certificate_id == "cert-1") == 0
    [record] = await audit_of(engine, "remove_care_copy")
    assert (record.outcome, record.deleted, record.certificate_ids) == ("ok", 1, "cert-1")
    assert record.patient_key == key_of(PATIENT.value)


async def test_removing_another_care_givers_copy_is_denied_audited_and_changes_nothing(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored(care_giver_id=OTHER_CARE_GIVER))

    with pytest.raises(errors.NotPermitted):
        await operations.remove_care_copy(
            uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
        )

    [row] = await rows(engine, certificates)
    assert row.care_available is True
    [record] = await audit_of(engine, "remove_care_copy")
    assert (record.outcome, record.reason) == ("denied", "NotPermitted")


async def test_a_removal_the_store_refuses_deletes_nothing_and_audits_no_success(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored())
    await refuse(engine, "BEFORE DELETE", certificates)

    with pytest.raises(STORE_FAILURE):
        await operations.remove_care_copy(
            uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
        )

    [row] = await rows(engine, certificates)
    assert row.care_available is True
    assert await count(engine, documents) == 1
    # The fault is audited as the error it is (STYLE.md, Audit), in a transaction of its own.
    assert [r.outcome for r in await audit_of(engine, "remove_care_copy")] == ["error"]


async def test_a_removal_whose_audit_record_fails_is_undone(uow: SqlUnitOfWork, engine: AsyncEngine) -> None:
    # The effect and its audit record commit together or not at all (STYLE.md, Audit).
    await seed(uow, stored())
    await refuse(engine, "BEFORE INSERT", audit_records, "NEW.action = 'remove_care_copy'")

    with pytest.raises(STORE_FAILURE):
        await operations.remove_care_copy(
            uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
        )

    assert await stored_ids(engine) == {"cert-1"}
    assert await count(engine, documents) == 1
    assert await count(engine, status_events) == 1


# ---------------------------------------------------------------------------------------------------
# Rules 6 and 7: consent withdrawn, and given again


async def test_withdrawing_consent_deletes_exactly_the_certificates_the_care_provider_removed(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(
        uow,
        stored("removed-1", care_available=False),
        stored("removed-archived", care_available=False, citizen_available=False),
        stored("kept"),
        stored("kept-archived", citizen_available=False),
        stored("others-removed", patient=OTHER_PATIENT, care_available=False),
        consent_given=[PATIENT, OTHER_PATIENT],
    )

    change = await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)

    assert (change.changed, change.deleted, change.consent.given) == (True, 2, False)
    assert await stored_ids(engine) == {"kept", "kept-archived", "others-removed"}
    deleted = documents.c.certificate_id.in_(["removed-1", "removed-archived"])
    assert await count(engine, documents, deleted) == 0
    assert (
        await count(
            engine, status_events, status_events.c.certificate_id.in_(["removed-1", "removed-archived"])
        )
        == 0
    )
    assert {(r.patient_key, r.given) for r in await rows(engine, consents)} == {
        (key_of(PATIENT.value), False),
        (key_of(OTHER_PATIENT.value), True),
    }
    assert [
        (r.given, r.at)
        for r in await rows(engine, consent_changes, consent_changes.c.patient_key == key_of(PATIENT.value))
    ] == [
        (True, REGISTERED),
        (False, NOW),
    ]
    [record] = await audit_of(engine, "withdraw_consent")
    assert (record.outcome, record.deleted) == ("ok", 2)
    assert set(record.certificate_ids.split(",")) == {"removed-1", "removed-archived"}


async def test_withdrawing_consent_twice_deletes_nothing_more_and_records_one_change(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored("kept"), consent_given=[PATIENT])

    await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)
    again = await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=LATER)

    assert (again.changed, again.deleted, again.consent) == (False, 0, Consent(PATIENT, False, NOW))
    assert await stored_ids(engine) == {"kept"}
    assert [r.given for r in await rows(engine, consent_changes)] == [True, False]
    assert [r.outcome for r in await audit_of(engine, "withdraw_consent")] == ["ok", "info"]


async def test_giving_consent_again_never_brings_a_deleted_certificate_back(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    await seed(uow, stored("removed", care_available=False), stored("kept"), consent_given=[PATIENT])

    await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)
    change = await operations.set_consent(uow, citizen=PATIENT, given=True, caller=CITIZEN, now=LATER)

    assert (change.changed, change.deleted) == (True, 0)
    assert await stored_ids(engine) == {"kept"}
    listed = await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=LATER)
    assert [c.id for c in listed] == ["kept"]


async def test_a_first_consent_creates_the_citizens_row(uow: SqlUnitOfWork, engine: AsyncEngine) -> None:
    change = await operations.set_consent(uow, citizen=PATIENT, given=True, caller=CITIZEN, now=NOW)

    assert change == operations.ConsentChange(Consent(PATIENT, True, NOW), changed=True, deleted=0)
    assert [(r.given, r.changed_at) for r in await rows(engine, consents)] == [(True, NOW)]
    assert [r.outcome for r in await audit_of(engine, "give_consent")] == ["ok"]


async def test_a_withdrawal_the_store_refuses_deletes_nothing_and_audits_no_success(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    # The deletions of rule 6 happen in the transaction of the withdrawal: if it fails, they are undone.
    await seed(uow, stored("removed", care_available=False), stored("kept"), consent_given=[PATIENT])
    await refuse(engine, "BEFORE INSERT", consent_changes)

    with pytest.raises(STORE_FAILURE):
        await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)

    assert await stored_ids(engine) == {"removed", "kept"}
    assert await count(engine, documents) == 2
    assert [r.given for r in await rows(engine, consents)] == [True]
    # The fault is audited as the error it is (STYLE.md, Audit), in a transaction of its own.
    assert [r.outcome for r in await audit_of(engine, "withdraw_consent")] == ["error"]


async def test_the_store_and_the_fakes_agree_on_a_withdrawal(uow: SqlUnitOfWork) -> None:
    # One scenario through both units of work: the same answers and the same certificates left.
    seeded = [stored("removed", care_available=False), stored("kept")]
    fake = FakeUnitOfWork(certificates=seeded, consent_given=[PATIENT])
    await seed(uow, *seeded, consent_given=[PATIENT])

    answers = []
    for unit in (fake, uow):
        change = await operations.set_consent(unit, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)
        listed = await operations.list_certificates_for_care(unit, patient=PATIENT, caller=CARE, now=NOW)
        answers.append((change, listed))

    assert answers[0] == answers[1]
    assert answers[0][0].deleted == 1


async def test_the_store_and_the_fakes_agree_on_registering_reading_and_recording_a_status(
    uow: SqlUnitOfWork,
) -> None:
    # The one-statement reads and the register that inserts only a free id, through both units of work.
    fake = FakeUnitOfWork(consent_given=[PATIENT])
    await seed(uow, consent_given=[PATIENT])
    new = operations.NewCertificate(an_issued_certificate(signed_at=SIGNED), document_of("cert-1"))
    taken = operations.NewCertificate(
        an_issued_certificate(patient=OTHER_PATIENT, signed_at=SIGNED), b"<other/>"
    )

    answers = []
    for unit in (fake, uow):
        registered = [
            await operations.register_certificate(unit, new=new, caller=CARE, now=REGISTERED)
            for _ in range(2)
        ]
        with pytest.raises(errors.CertificateIdConflict):
            await operations.register_certificate(unit, new=taken, caller=CARE, now=NOW)
        sent = await operations.send_certificate(
            unit,
            certificate_id="cert-1",
            recipient_id="FKASSA",
            recipients=FORSAKRINGSKASSAN,
            patient=PATIENT,
            caller=CARE,
            now=NOW,
        )
        read_by_care = await operations.get_certificate_for_care(
            unit, certificate_id="cert-1", caller=CARE, now=NOW
        )
        read_by_citizen = await operations.get_certificate_for_citizen(
            unit, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        )
        listed = await operations.list_certificates_for_citizen(
            unit, citizen=PATIENT, caller=CITIZEN, now=NOW
        )
        answers.append((registered, sent, read_by_care, read_by_citizen, listed))

    assert answers[0] == answers[1]
    assert answers[0][0] == [rules.Registration.CREATE, rules.Registration.ALREADY_EXISTS]
    assert answers[0][2].certificate.status_events == (
        StatusEvent(StatusCode.RECEIV, Party.HSVARD, REGISTERED),
        StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),
    )
    assert answers[0][2].document == document_of("cert-1")


async def test_the_person_who_acted_is_stored_by_type_and_a_personal_identity_number_only_hashed(
    uow: SqlUnitOfWork, engine: AsyncEngine
) -> None:
    # A citizen, a professional named by personal identity number, one named by HSA id: nothing is
    # guessed from the id's shape (DOMAIN.md: no identity number in the clear).
    acted = {
        "own": {"actor_citizen": PATIENT},
        "by number": {"actor_professional": OTHER_PATIENT},
        "by hsa id": {"actor_professional": StaffId("SE2321000016-DOC1")},
    }
    async with uow:
        for label, actor in acted.items():
            await uow.audit.add(
                AuditRecord(
                    at=NOW,
                    action=Action.READ,
                    certificate_ids=(label,),
                    outcome=Outcome.OK,
                    actor_kind=CallerKind.CARE_SYSTEM,
                    actor_id="SE2321000016-WEBCERT",
                    channel=Channel.SOAP,
                    patient=PATIENT,
                    **actor,  # type: ignore[arg-type]
                )
            )
        await uow.commit()
    async with uow:
        read, _ = await uow.audit.list_for_patient(PATIENT, start=None, end=None, limit=10, offset=0)

    stored = {r.certificate_ids: r.actor_person_id for r in await rows(engine, audit_records)}
    assert stored == {
        "own": key_of(PATIENT.value),
        "by number": key_of(OTHER_PATIENT.value),
        "by hsa id": "SE2321000016-DOC1",
    }
    # Read back: the citizen where it is the record's own patient; another's number is named to no one.
    assert {r.certificate_ids[0]: (r.actor_citizen, r.actor_professional) for r in read} == {
        "own": (PATIENT, None),
        "by number": (None, None),
        "by hsa id": (None, StaffId("SE2321000016-DOC1")),
    }


# --- The outbox (README.md, "Recipients"): a send writes its delivery in its own transaction -------------


async def outbox_rows(engine: AsyncEngine) -> list[tuple[str, str, str]]:
    async with engine.connect() as connection:
        query = select(outbox.c.destination, outbox.c.kind, outbox.c.certificate_id).order_by(outbox.c.id)
        return [tuple(row) for row in (await connection.execute(query)).all()]


def _sends(uow: SqlUnitOfWork) -> dict[str, Any]:
    """One send by each sender, of its own certificate (cert-c, cert-s, cert-r)."""
    recipient = Caller(CallerKind.RECIPIENT, Channel.SOAP, "SE2021005521-FK", part=Party.FKASSA)
    return {
        "care": lambda: operations.send_certificate(
            uow,
            certificate_id="cert-c",
            recipient_id="FKASSA",
            recipients=FORSAKRINGSKASSAN,
            patient=PATIENT,
            caller=CARE,
            now=NOW,
        ),
        "citizen": lambda: operations.send_certificate(
            uow,
            certificate_id="cert-s",
            recipient_id="FKASSA",
            recipients=FORSAKRINGSKASSAN,
            citizen=PATIENT,
            caller=CITIZEN,
            now=NOW,
        ),
        "recipient": lambda: operations.send_certificate(
            uow,
            certificate_id="cert-r",
            recipient_id="FKASSA",
            recipients=FORSAKRINGSKASSAN,
            caller=recipient,
            now=NOW,
        ),
    }


@pytest.mark.parametrize("sender", ["care", "citizen", "recipient"])
async def test_each_send_writes_exactly_one_delivery_to_the_outbox_and_a_repeated_one_none(
    uow: SqlUnitOfWork, engine: AsyncEngine, sender: str
) -> None:
    await seed(uow, stored("cert-c"), stored("cert-s"), stored("cert-r"), consent_given=[PATIENT])
    send = _sends(uow)[sender]
    certificate_id = {"care": "cert-c", "citizen": "cert-s", "recipient": "cert-r"}[sender]

    await send()
    await send()

    deliveries = [row for row in await outbox_rows(engine) if row[0] != "statistics"]
    assert deliveries == [("FKASSA", "sent", certificate_id)]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"revoked": True}, errors.CertificateRevoked),
        ({"care_available": False}, errors.CertificateNotFound),  # care no longer keeps it (rule 3)
        ({"care_giver_id": "SE2321000016-OTHER"}, errors.NotPermitted),  # answered as unknown
        ({"patient": OTHER_PATIENT}, errors.PatientMismatch),
        ({"type_code": "TSTRK1007"}, errors.UnknownRecipient),  # Försäkringskassan does not take it
    ],
)
async def test_a_refused_send_writes_nothing_to_the_outbox_and_is_audited(
    uow: SqlUnitOfWork, engine: AsyncEngine, changes: dict[str, Any], error: type[errors.ServiceError]
) -> None:
    await seed(uow, stored("cert-c", **changes), consent_given=[PATIENT])
    scoped = dataclasses.replace(CARE, care_giver_scope=frozenset({CARE_GIVER}))

    with pytest.raises(error):
        await operations.send_certificate(
            uow,
            certificate_id="cert-c",
            recipient_id="FKASSA",
            recipients=FORSAKRINGSKASSAN,
            patient=PATIENT,
            caller=scoped,
            now=NOW,
        )

    assert await outbox_rows(engine) == []
    assert [row.outcome for row in await audit_of(engine, "send")] == [
        "denied" if issubclass(error, errors.Denied) else "error"
    ]
