"""The contract of the unit of work and its repositories (``operations.UnitOfWork``), one set of tests
run on the in-memory fake (``tests/fakes.py``), SQLite and PostgreSQL alike, so that the fake the unit
tests trust cannot drift from the store: what is stored and read back, how lists filter, order and
page, and what a transaction keeps or discards.

Each test is written once, against ``seeded``, which gives a unit of work on the store under test
holding the given certificates and consents, committed. The tests that read rows with Core, past the
repositories, stay in ``test_store.py``.
"""

from __future__ import annotations

import dataclasses
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
    Relation,
    RelationKind,
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


async def test_a_certificate_is_read_back_with_its_validity_and_the_relations_it_states(
    seeded: Seeded,
) -> None:
    komplt = Relation(RelationKind.COMPLEMENTS, "other-1", "SE2321000016-H489")
    ersatt = Relation(RelationKind.REPLACES, "other-2", "")
    added = stored(
        valid_from=dt.date(2015, 12, 7), valid_to=dt.date(2015, 12, 20), relations=(komplt, ersatt)
    )
    uow = await seeded(added)
    # Read back by code and id (model.IssuedCertificate), whatever order they were added in.
    certificate = dataclasses.replace(added, relations=(ersatt, komplt))

    async with uow:
        assert await uow.certificates.list_for_patient(PATIENT) == [certificate]
        assert await uow.certificates.get("cert-1") == certificate
        assert await uow.certificates.get_with_document("cert-1") == CertificateWithDocument(
            certificate, document_of("cert-1")
        )


async def test_a_certificate_is_read_with_what_the_patients_other_certificates_not_revoked_state_of_it(
    seeded: Seeded,
) -> None:
    def relating(certificate_id: str, kind: RelationKind, **changes: Any) -> Certificate:
        return stored(certificate_id, relations=(Relation(kind, "a", "root-a"),), **changes)

    a = stored("a")
    uow = await seeded(
        a,
        relating("komplt", RelationKind.COMPLEMENTS, registered_at=REGISTERED + dt.timedelta(hours=2)),
        relating("ersatt", RelationKind.REPLACES, registered_at=REGISTERED + dt.timedelta(hours=1)),
        # Neither counts: a revoked replacement replaces nothing, and another patient's certificate may
        # name any id it likes.
        relating("revoked", RelationKind.REPLACES, revoked=True),
        relating("theirs", RelationKind.REPLACES, patient=OTHER_PATIENT),
    )
    related_by = (
        Relation(RelationKind.REPLACES, "ersatt", a.id_root),
        Relation(RelationKind.COMPLEMENTS, "komplt", a.id_root),
    )

    async with uow:
        got = await uow.certificates.get("a")
        with_document = await uow.certificates.get_with_document("a")
        listed = {c.id: c for c in await uow.certificates.list_for_patient(PATIENT)}

    assert got is not None and with_document is not None
    assert got.related_by == with_document.certificate.related_by == listed["a"].related_by == related_by
    assert got.replaced_by == "ersatt"
    assert listed["ersatt"].related_by == () and listed["ersatt"].replaced_by is None


async def test_a_revocation_written_by_update_ends_what_the_certificate_states_of_others(
    seeded: Seeded,
) -> None:
    replacing = stored("b", relations=(Relation(RelationKind.REPLACES, "a", "root-a"),))
    uow = await seeded(stored("a"), replacing)

    async with uow:
        await uow.certificates.update(
            replacing, rules.Decision(care_available=True, citizen_available=True, revoked=True)
        )
        await uow.commit()
    async with uow:
        a, b = await uow.certificates.get("a"), await uow.certificates.get("b")

    assert a is not None and (a.related_by, a.replaced_by) == ((), None)
    assert b is not None and b.revoked and b.relations == replacing.relations


async def test_a_patients_list_narrows_to_the_certificates_valid_on_a_day_between_those_given(
    seeded: Seeded,
) -> None:
    def valid(certificate_id: str, first: str, last: str) -> Certificate:
        return stored(
            certificate_id, valid_from=dt.date.fromisoformat(first), valid_to=dt.date.fromisoformat(last)
        )

    uow = await seeded(
        valid("april", "2024-04-01", "2024-04-30"),
        valid("into-may", "2024-04-20", "2024-05-01"),
        valid("over-may", "2024-04-20", "2024-06-10"),
        valid("june", "2024-06-01", "2024-06-01"),
        stored("none", signed_at=None),
    )

    async with uow:

        async def ids(first: dt.date | None, last: dt.date | None) -> set[str]:
            found = await uow.certificates.list_for_patient(PATIENT, valid_between=(first, last))
            return {c.id for c in found}

        may, june = (dt.date(2024, 5, 1), dt.date(2024, 5, 31)), dt.date(2024, 6, 1)
        assert await ids(*may) == {"into-may", "over-may"}
        assert await ids(june, None) == {"over-may", "june"}
        assert await ids(None, dt.date(2024, 4, 19)) == {"april"}
        # Without a validity, a certificate matches no filter on it.
        assert await ids(None, None) == {"april", "into-may", "over-may", "june", "none"}


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


async def test_a_deletion_takes_the_relations_the_certificate_states_and_keeps_those_stated_of_it(
    seeded: Seeded,
) -> None:
    # Rules 5 and 6 delete each certificate by its own flags: the one a deleted certificate replaced
    # stays, and is no longer replaced; one that replaced a deleted certificate still says so.
    uow = await seeded(
        stored("a"),
        stored("b", relations=(Relation(RelationKind.REPLACES, "a", "root"),)),
        stored("c", relations=(Relation(RelationKind.REPLACES, "b", "root"),)),
    )

    async with uow:
        await uow.certificates.delete(["b"])
        await uow.commit()
    async with uow:
        a, c = await uow.certificates.get("a"), await uow.certificates.get("c")

    assert a is not None and (a.related_by, a.replaced_by) == ((), None)
    assert c is not None and c.relations == (Relation(RelationKind.REPLACES, "b", "root"),)


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
