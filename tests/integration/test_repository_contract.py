"""The contract of the unit of work and its repositories (``operations.UnitOfWork``), one set of tests
run on the in-memory fake (``tests/fakes.py``), SQLite and PostgreSQL alike, so that the fake the unit
tests trust cannot drift from the store: what is stored and read back, how lists filter, order and
page, and what a transaction keeps or discards.

Each test is written once, against ``seeded``, which gives a unit of work on the store under test
holding the given certificates and consents, committed. The tests that read rows with Core, past the
repositories, stay in ``test_store.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from service import rules
from service.model import (
    Action,
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
    LATER,
    NOW,
    OTHER_CARE_GIVER,
    OTHER_PATIENT,
    PATIENT,
    REGISTERED,
    SIGNED,
    stored,
)
from tests.keys import KEYRING

Seeded = Callable[..., Awaitable[UnitOfWork]]


def record(at: dt.datetime, certificate_id: str, patient: PersonId | None = PATIENT) -> AuditRecord:
    """A care system's read of ``certificate_id``, which names the record in a test."""
    return AuditRecord(
        at=at,
        action=Action.READ,
        outcome=Outcome.OK,
        actor_kind=CallerKind.CARE_SYSTEM,
        actor_id="SE2321000016-WEBCERT",
        channel=Channel.SOAP,
        patient=patient,
        certificate_ids=(certificate_id,),
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


async def test_a_certificate_added_is_read_back_with_its_events_and_document(seeded: Seeded) -> None:
    # The history is read as JSON (repositories._history): times keep their microseconds, also where
    # PostgreSQL writes fewer digits (.12), and events keep the order they were added in, not their times'.
    certificate = stored(
        status_events=(
            StatusEvent(StatusCode.RECEIV, Party.HSVARD, REGISTERED),
            StatusEvent(StatusCode.SENTTO, Party.FKASSA, LATER.replace(microsecond=120000)),
            StatusEvent(StatusCode.RECEIV, Party.FKASSA, NOW.replace(microsecond=999999)),
        ),
    )
    uow = await seeded(certificate)

    async with uow:
        assert await uow.certificates.list_for_patient(PATIENT) == [certificate]
        assert await uow.certificates.get("cert-1") == certificate
        assert await uow.certificates.get("cert-1", for_update=True) == certificate
        assert await uow.certificates.get_with_document("cert-1") == CertificateWithDocument(
            certificate, document_of("cert-1")
        )


async def test_a_certificate_never_stored_reads_as_none(seeded: Seeded) -> None:
    uow = await seeded()

    async with uow:
        assert await uow.certificates.get("no-such") is None
        assert await uow.certificates.get_with_document("no-such") is None
        assert await uow.certificates.list_for_patient(PATIENT) == []


async def test_a_patients_list_narrows_by_type_care_unit_and_care_giver(seeded: Seeded) -> None:
    uow = await seeded(
        stored("a", type_code="LISJP"),
        stored("b", type_code="AG7804", unit_id="UNIT2"),
        stored("c", type_code="LISJP", unit_id="UNIT3", care_giver_id=OTHER_CARE_GIVER),
        stored("d", patient=OTHER_PATIENT),
    )

    async with uow:

        async def ids(**narrowing: Any) -> set[str]:
            return {c.id for c in await uow.certificates.list_for_patient(PATIENT, **narrowing)}

        assert await ids() == {"a", "b", "c"}
        assert await ids(types=["LISJP"]) == {"a", "c"}
        assert await ids(types=["LISJP", "AG7804"]) == {"a", "b", "c"}
        assert await ids(care_unit_ids=["UNIT2", "UNIT3"]) == {"b", "c"}
        assert await ids(care_giver_id=OTHER_CARE_GIVER) == {"c"}
        assert await ids(care_giver_id=CARE_GIVER, types=["LISJP"]) == {"a"}
        assert await ids(types=["TSTRK1007"]) == set()


async def test_a_care_givers_copies_are_paged_in_id_order_leaving_out_removed_ones_and_other_givers(
    seeded: Seeded,
) -> None:
    uow = await seeded(
        stored("c"),
        stored("a", patient=OTHER_PATIENT),
        stored("b", care_available=False),
        stored("d", care_giver_id=OTHER_CARE_GIVER),
        stored("e"),
    )

    async with uow:
        first = await uow.certificates.care_copies_of(CARE_GIVER, after="", limit=2)
        rest = await uow.certificates.care_copies_of(CARE_GIVER, after=first[-1], limit=2)
        done = await uow.certificates.care_copies_of(CARE_GIVER, after=rest[-1], limit=2)

    assert (first, rest, done) == (["a", "c"], ["e"], [])


async def test_a_patients_list_shows_the_newest_signed_first_and_the_unsigned_last(
    seeded: Seeded,
) -> None:
    # The fake's order too; PostgreSQL would put NULL first in a descending order unless told.
    uow = await seeded(
        stored("b-old", signed_at=SIGNED),
        stored("unsigned", signed_at=None),
        stored("a-new", signed_at=NOW),
        stored("a-old", signed_at=SIGNED),
    )

    async with uow:
        listed = await uow.certificates.list_for_patient(PATIENT)

    assert [c.id for c in listed] == ["a-new", "a-old", "b-old", "unsigned"]


async def test_an_update_sets_the_flags_and_appends_the_event(seeded: Seeded) -> None:
    uow = await seeded(stored())
    archived = StatusEvent(StatusCode.DELETE, Party.INVANA, NOW)

    async with uow:
        await uow.certificates.update(
            stored(),
            rules.Decision(care_available=False, citizen_available=False, revoked=True, event=archived),
        )
        await uow.commit()

    async with uow:
        found = await uow.certificates.get("cert-1")
    assert found is not None
    assert (found.care_available, found.citizen_available, found.revoked) == (False, False, True)
    assert [e.code for e in found.status_events] == [StatusCode.RECEIV, StatusCode.DELETE]
    assert found.status_events[-1] == archived


async def test_an_id_taken_is_not_added_again_and_the_first_stays(seeded: Seeded) -> None:
    uow = await seeded(stored("cert-1"))

    async with uow:
        added = await uow.certificates.add(stored("cert-1", patient=OTHER_PATIENT), b"<other/>")
        kept = await uow.certificates.get_with_document("cert-1")

    assert added is False
    assert kept == CertificateWithDocument(stored("cert-1"), document_of("cert-1"))


async def test_a_deletion_removes_the_certificate_and_its_document(seeded: Seeded) -> None:
    uow = await seeded(stored("gone"), stored("kept"))

    async with uow:
        await uow.certificates.delete(["gone", "never-there"])
        await uow.commit()
    async with uow:
        found = [await uow.certificates.get_with_document(i) for i in ("gone", "kept")]

    assert found == [None, CertificateWithDocument(stored("kept"), document_of("kept"))]


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

    assert [r.certificate_ids for r in everything] == [("later",), ("second",), ("first",), ("earlier",)]
    assert total == 4
    assert [r.certificate_ids for r in page] == [("second",), ("first",)]
    assert ([r.certificate_ids for r in bounded], within) == ([("second",), ("first",)], 2)


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
