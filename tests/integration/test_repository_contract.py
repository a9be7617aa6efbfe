"""The contract of the unit of work and its repositories (``operations.UnitOfWork``), one set of tests
run on the in-memory fake (``tests/fakes.py``), SQLite and PostgreSQL alike, so that the fake the unit
tests trust cannot drift from the store: what is stored and read back, how lists filter, order and
page, and what a transaction keeps or discards.

Each test is written once, against ``Store``, whose ``open`` gives the unit of work under test and whose
``seeded`` gives one holding the given certificates and consents, committed.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator

import pytest

from service import rules
from service.model import (
    AuditRecord,
    Caller,
    CallerKind,
    Certificate,
    CertificateWithDocument,
    Channel,
    Outcome,
    Party,
    PersonId,
    StatusCode,
    StatusEvent,
)
from service.operations import UnitOfWork
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests.fakes import FakeUnitOfWork, document_of
from tests.integration.conftest import fresh_database
from tests.integration.test_store import (
    CARE_GIVER,
    NOW,
    OTHER_CARE_GIVER,
    OTHER_PATIENT,
    PATIENT,
    REGISTERED,
    SIGNED,
    stored,
)
from tests.keys import KEYRING

GIVER = CARE_GIVER
OTHER_GIVER = OTHER_CARE_GIVER

Seeded = Callable[..., Awaitable[UnitOfWork]]


def record(at: dt.datetime, action: str, patient: PersonId | None = PATIENT) -> AuditRecord:
    return AuditRecord(
        at=at,
        action=action,
        outcome=Outcome.OK,
        actor_kind=CallerKind.CARE_SYSTEM,
        actor_id="SE2321000016-WEBCERT",
        channel=Channel.SOAP,
        patient=patient,
    )


async def _fill(
    uow: UnitOfWork, certificates: tuple[Certificate, ...], consent_given: tuple[PersonId, ...]
) -> None:
    async with uow:
        for certificate in certificates:
            assert await uow.certificates.add(certificate, document_of(certificate.id))
        for patient in consent_given:
            await uow.consents.set(patient, given=True, at=REGISTERED, caller=_citizen(patient))
        await uow.commit()


def _citizen(patient: PersonId) -> Caller:
    return Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", citizen=patient)


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str | None]:
    """The store under test: ``None`` for the fake, else a fresh database's URL (made outside the
    event loop, as migrations run their own)."""
    if request.param == "fake":
        yield None
        return
    with fresh_database(request, tmp_path_factory, request.param) as url:
        yield url


@pytest.fixture
async def seeded(store_url: str | None) -> AsyncIterator[Seeded]:
    """``await seeded(*certificates, consent_given=(...))``: a unit of work on the store under test,
    holding them."""
    engine = create_engine(store_url) if store_url is not None else None

    async def seed(*certificates: Certificate, consent_given: tuple[PersonId, ...] = ()) -> UnitOfWork:
        uow: UnitOfWork = FakeUnitOfWork() if engine is None else SqlUnitOfWork(engine, KEYRING)
        await _fill(uow, certificates, consent_given)
        return uow

    yield seed
    if engine is not None:
        await dispose(engine)


# --- Certificates: stored and read back -------------------------------------------------------------


async def test_a_certificate_is_read_back_as_stored_with_its_document(seeded: Seeded) -> None:
    certificate = stored("cert-1")
    uow = await seeded(certificate)

    async with uow:
        found = await uow.certificates.get("cert-1")
        locked = await uow.certificates.get("cert-1", for_update=True)
        with_document = await uow.certificates.get_with_document("cert-1")
        unknown = await uow.certificates.get("no-such-id"), await uow.certificates.get_with_document("x")

    assert found == locked == certificate
    assert with_document == CertificateWithDocument(certificate, document_of("cert-1"))
    assert unknown == (None, None)


async def test_an_id_taken_is_not_added_again_and_the_first_stays(seeded: Seeded) -> None:
    uow = await seeded(stored("cert-1"))

    async with uow:
        added = await uow.certificates.add(stored("cert-1", patient=OTHER_PATIENT), b"<other/>")
        kept = await uow.certificates.get_with_document("cert-1")

    assert added is False
    assert kept == CertificateWithDocument(stored("cert-1"), document_of("cert-1"))


async def test_an_update_sets_the_decided_flags_and_appends_its_event(seeded: Seeded) -> None:
    certificate = stored("cert-1")
    uow = await seeded(certificate)
    sent = StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW)
    decision = rules.Decision(care_available=False, citizen_available=True, revoked=True, event=sent)

    async with uow:
        await uow.certificates.update(certificate, decision)
        await uow.commit()
    async with uow:
        found = await uow.certificates.get("cert-1")

    assert found == dataclasses.replace(
        certificate,
        care_available=False,
        revoked=True,
        status_events=(*certificate.status_events, sent),
    )


async def test_a_deletion_removes_the_certificate_and_its_document(seeded: Seeded) -> None:
    uow = await seeded(stored("gone"), stored("kept"))

    async with uow:
        await uow.certificates.delete(["gone", "never-there"])
        await uow.commit()
    async with uow:
        found = [await uow.certificates.get_with_document(i) for i in ("gone", "kept")]

    assert found == [None, CertificateWithDocument(stored("kept"), document_of("kept"))]


# --- Certificates: lists ---------------------------------------------------------------------------


async def test_a_patients_list_is_newest_signed_first_then_by_id_without_other_patients(
    seeded: Seeded,
) -> None:
    uow = await seeded(
        stored("b-old", signed_at=SIGNED - dt.timedelta(days=3)),
        stored("c-new", signed_at=SIGNED),
        stored("a-new", signed_at=SIGNED),
        stored("unsigned", signed_at=None),
        stored("theirs", patient=OTHER_PATIENT),
    )

    async with uow:
        listed = await uow.certificates.list_for_patient(PATIENT)

    assert [c.id for c in listed] == ["a-new", "c-new", "b-old", "unsigned"]


async def test_a_patients_list_filters_by_type_care_unit_and_care_giver(seeded: Seeded) -> None:
    uow = await seeded(
        stored("lisjp"),
        stored("luse", type_code="LUSE"),
        stored("other-unit", unit_id="SE2321000016-UNIT2"),
        stored("other-giver", care_giver_id=OTHER_GIVER),
    )

    async with uow:
        by_type = await uow.certificates.list_for_patient(PATIENT, types=["LUSE"])
        by_unit = await uow.certificates.list_for_patient(PATIENT, care_unit_ids=["SE2321000016-UNIT2"])
        by_giver = await uow.certificates.list_for_patient(PATIENT, care_giver_id=OTHER_GIVER)
        both_types = await uow.certificates.list_for_patient(PATIENT, types=["LUSE", "LISJP"])

    assert [c.id for c in by_type] == ["luse"]
    assert [c.id for c in by_unit] == ["other-unit"]
    assert [c.id for c in by_giver] == ["other-giver"]
    assert sorted(c.id for c in both_types) == ["lisjp", "luse", "other-giver", "other-unit"]


async def test_a_care_givers_kept_copies_are_paged_in_id_order(seeded: Seeded) -> None:
    uow = await seeded(
        stored("c"),
        stored("a"),
        stored("b-removed", care_available=False),
        stored("d"),
        stored("e-theirs", care_giver_id=OTHER_GIVER),
    )

    async with uow:
        first = await uow.certificates.care_copies_of(GIVER, after="", limit=2)
        rest = await uow.certificates.care_copies_of(GIVER, after=first[-1], limit=2)

    assert (first, rest) == (["a", "c"], ["d"])


# --- Consent ------------------------------------------------------------------------------------------


async def test_a_citizen_never_seen_has_not_given_consent_and_a_change_is_read_back(seeded: Seeded) -> None:
    uow = await seeded()

    async with uow:
        never = await uow.consents.get(PATIENT)
        await uow.consents.set(PATIENT, given=True, at=NOW, caller=_citizen(PATIENT))
        await uow.commit()
    async with uow:
        given = await uow.consents.get(PATIENT, for_update=True)
        shared = await uow.consents.get(PATIENT, for_share=True)

    assert (never.given, never.changed_at) == (False, None)
    assert (given.given, given.changed_at) == (True, NOW)
    assert shared == given


# --- Audit records ------------------------------------------------------------------------------------


async def test_a_patients_audit_records_are_newest_first_bounded_and_paged(seeded: Seeded) -> None:
    uow = await seeded()
    # Added out of time order: the list orders by time, then the order they were added in.
    added = [
        record(NOW, "first"),
        record(NOW - dt.timedelta(hours=1), "earlier"),
        record(NOW, "second"),
        record(NOW + dt.timedelta(hours=1), "later"),
        record(NOW, "theirs", patient=OTHER_PATIENT),
    ]

    async with uow:
        for item in added:
            await uow.audit.add(item)
        await uow.commit()
    async with uow:
        everything, total = await uow.audit.list_for_patient(
            PATIENT, start=None, end=None, limit=10, offset=0
        )
        page, _ = await uow.audit.list_for_patient(PATIENT, start=None, end=None, limit=2, offset=1)
        bounded, within = await uow.audit.list_for_patient(
            PATIENT, start=NOW, end=NOW + dt.timedelta(hours=1), limit=10, offset=0
        )

    assert [r.action for r in everything] == ["later", "second", "first", "earlier"]
    assert total == 4
    assert [r.action for r in page] == ["second", "first"]
    assert ([r.action for r in bounded], within) == (["second", "first"], 2)


# --- The transaction ----------------------------------------------------------------------------------


async def test_what_is_not_committed_is_gone_and_a_rollback_undoes_what_came_before_it(
    seeded: Seeded,
) -> None:
    uow = await seeded()

    async with uow:
        await uow.certificates.add(stored("left"), document_of("left"))
    async with uow:
        await uow.certificates.add(stored("rolled-back"), document_of("rolled-back"))
        await uow.audit.add(record(NOW, "rolled-back"))
        await uow.rollback()
        await uow.certificates.add(stored("kept"), document_of("kept"))
        await uow.commit()
    async with uow:
        found = [await uow.certificates.get(i) for i in ("left", "rolled-back", "kept")]
        records, _ = await uow.audit.list_for_patient(PATIENT, start=None, end=None, limit=10, offset=0)

    assert found == [None, None, stored("kept")]
    assert records == []
