"""Races between operations on PostgreSQL: rule 1's idempotent registration, and rules 5, 6 and 8 when
consent and the care copy change at once.

Each contender is a real thread with its own event loop and its own engine, as two service processes
would be; a barrier releases them together once both are connected, and each race is run ``ROUNDS``
times. Operations retry on ``errors.ConcurrentChange`` (``operations._retrying``); any other exception
leaking from a race is a bug. The same rules one at a time are in ``test_store.py`` (real store) and
``tests/unit/test_operations.py`` (fake). SQLite is skipped here: it serialises every writer at BEGIN
(``store/unit_of_work.py``), so it has no interleavings to test.

Where a bug needs one exact interleaving, the test forces it instead of hoping for it: a row lock the
test holds until both contenders wait (lost updates), or ``FakePausingUnitOfWork`` (a read, then a
whole other transaction, then the write). Operations that change a certificate's flags lock its row
(``operations._load(for_update=True)``), and a consent is only updated where it changes.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
import sqlalchemy
from sqlalchemy import Engine, or_, select, text

from service import errors, operations, rules
from service.model import (
    Caller,
    CallerKind,
    Certificate,
    Channel,
    Party,
    PersonId,
    Recipient,
    StatusCode,
    StatusEvent,
)
from service.store.tables import audit_records, certificates, consent_changes, consents
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests.fakes import a_certificate, an_issued_certificate, document_of
from tests.keys import KEYRING, key_of

pytestmark = pytest.mark.postgres

ROUNDS = 20
SIGNED = dt.datetime(2024, 5, 2, 10, 0)
NOW = dt.datetime(2024, 5, 17, 9, 30)
CARE_GIVER = "SE2321000016-GIVER1"
CARE = Caller(CallerKind.CARE_SYSTEM, Channel.SOAP, "SE2321000016-WEBCERT", care_giver_id=CARE_GIVER)

Call = Callable[[SqlUnitOfWork], Coroutine[Any, Any, Any]]


def person(serial: int) -> PersonId:
    """A valid personnummer per serial, so that every round has citizens of its own."""
    body = f"19500101{serial:03d}"
    digits = body[2:]
    total = 0
    for index, char in enumerate(digits):
        product = int(char) * (2 if index % 2 == 0 else 1)
        total += product - 9 if product > 9 else product
    return PersonId.parse(body + str((10 - total % 10) % 10))


def citizen(patient: PersonId) -> Caller:
    return Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", citizen=patient)


def certificate(certificate_id: str, patient: PersonId, **changes: Any) -> Certificate:
    return a_certificate(
        certificate_id,
        patient=patient,
        signed_at=SIGNED,
        registered_at=SIGNED,
        status_events=(StatusEvent(StatusCode.RECEIV, Party.HSVARD, SIGNED),),
        **changes,
    )


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if database_url.startswith("sqlite"):
        pytest.skip("races run on PostgreSQL only: SQLite serialises every writer at BEGIN IMMEDIATE")
    return database_url


@pytest.fixture
def db(postgres_url: str) -> Iterator[Engine]:
    """A plain synchronous engine on the test database, for seeding, locking and Core checks."""
    engine = sqlalchemy.create_engine(postgres_url)
    yield engine
    engine.dispose()


def seed(url: str, *certificates_: Certificate, consent_given: Sequence[PersonId] = ()) -> None:
    async def run() -> None:
        engine = create_engine(url, pool_size=1)
        try:
            uow = SqlUnitOfWork(engine, KEYRING)
            async with uow:
                for item in certificates_:
                    await uow.certificates.add(item, document_of(item.id))
                for patient in consent_given:
                    await uow.consents.set(patient, given=True, at=SIGNED, caller=citizen(patient))
                await uow.commit()
        finally:
            await dispose(engine)

    asyncio.run(run())


@dataclass
class Result:
    value: Any = None
    error: BaseException | None = None


def race(url: str, *calls: Call, ready: Callable[[], None] | None = None) -> list[Result]:
    """Run each call in a thread of its own, with its own event loop and engine, released together.

    ``ready`` runs in this thread once every contender has passed the barrier (see ``blocked``).
    """
    barrier = threading.Barrier(len(calls) + 1)
    results = [Result() for _ in calls]

    def contend(index: int, call: Call) -> None:
        async def run() -> None:
            engine = create_engine(url, pool_size=1)
            try:
                async with engine.connect():
                    pass  # connected before the start line, so that the calls start together
                uow = SqlUnitOfWork(engine, KEYRING)
                barrier.wait(timeout=30)
                results[index].value = await call(uow)
            finally:
                await dispose(engine)

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported by the test, not lost in the thread
            results[index].error = exc

    threads = [threading.Thread(target=contend, args=(i, c), daemon=True) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
    barrier.wait(timeout=30)
    if ready is not None:
        ready()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a contender hangs (a lock that is never released?)"
    return results


def values(results: list[Result]) -> list[Any]:
    """The answers of a race in which nothing may fail; a leaked exception fails with its traceback."""
    for result in results:
        if result.error is not None:
            raise AssertionError(f"an exception leaked from a race: {result.error!r}") from result.error
    return [r.value for r in results]


def scalars(db: Engine, query: Any) -> list[Any]:
    with db.connect() as connection:
        return list(connection.scalars(query).all())


def without_keeper(db: Engine) -> list[str]:
    """Rule 8: ids of stored certificates that neither the care provider nor the citizen's consent keeps."""
    joined = certificates.outerjoin(consents, consents.c.patient_key == certificates.c.patient_key)
    query = (
        select(certificates.c.id)
        .select_from(joined)
        .where(~certificates.c.care_available, or_(consents.c.given.is_(None), ~consents.c.given))
    )
    return scalars(db, query)


def ids_of(db: Engine, patient: PersonId) -> set[str]:
    return set(
        scalars(db, select(certificates.c.id).where(certificates.c.patient_key == key_of(patient.value)))
    )


# ---------------------------------------------------------------------------------------------------
# Rule 1: registering at once


def register(new: Certificate) -> Call:
    issued = an_issued_certificate(new.id, patient=new.patient, signed_at=new.signed_at)
    return lambda uow: operations.register_certificate(
        uow, new=operations.NewCertificate(issued, document_of(new.id)), caller=CARE, now=NOW
    )


def test_the_same_certificate_registered_twice_at_once_is_stored_once(postgres_url: str, db: Engine) -> None:
    for n in range(ROUNDS):
        new = certificate(f"cert-{n}", person(n))

        answers = values(race(postgres_url, register(new), register(new)))

        assert sorted(a.value for a in answers) == ["already_exists", "create"]
        assert scalars(db, select(certificates.c.patient_key).where(certificates.c.id == new.id)) == [
            key_of(new.patient.value)
        ]
        outcomes = scalars(
            db, select(audit_records.c.outcome).where(audit_records.c.certificate_ids == new.id)
        )
        assert sorted(outcomes) == ["info", "ok"]


def test_one_id_registered_at_once_for_two_patients_goes_to_one_and_conflicts_for_the_other(
    postgres_url: str, db: Engine
) -> None:
    for n in range(ROUNDS):
        first, second = certificate(f"cert-{n}", person(2 * n)), certificate(f"cert-{n}", person(2 * n + 1))

        results = race(postgres_url, register(first), register(second))

        created = [i for i, r in enumerate(results) if r.value is rules.Registration.CREATE]
        refused = [i for i, r in enumerate(results) if isinstance(r.error, errors.CertificateIdConflict)]
        assert (len(created), len(refused)) == (1, 1), results
        winner = (first, second)[created[0]]
        assert scalars(db, select(certificates.c.patient_key).where(certificates.c.id == winner.id)) == [
            key_of(winner.patient.value)
        ]
        outcomes = scalars(
            db, select(audit_records.c.outcome).where(audit_records.c.certificate_ids == winner.id)
        )
        assert sorted(outcomes) == ["error", "ok"]


# ---------------------------------------------------------------------------------------------------
# Rules 6 and 8: consent given and withdrawn at once


def give(patient: PersonId) -> Call:
    return lambda uow: operations.set_consent(
        uow, citizen=patient, given=True, caller=citizen(patient), now=NOW
    )


def withdraw(patient: PersonId) -> Call:
    return lambda uow: operations.set_consent(
        uow, citizen=patient, given=False, caller=citizen(patient), now=NOW
    )


def remove(certificate_id: str) -> Call:
    return lambda uow: operations.remove_care_copy(
        uow, certificate_id=certificate_id, care_giver_id=CARE_GIVER, caller=CARE, now=NOW
    )


def consent_of(db: Engine, patient: PersonId) -> list[bool]:
    return scalars(db, select(consents.c.given).where(consents.c.patient_key == key_of(patient.value)))


def last_change_of(db: Engine, patient: PersonId) -> bool:
    query = (
        select(consent_changes.c.given)
        .where(consent_changes.c.patient_key == key_of(patient.value))
        .order_by(consent_changes.c.id.desc())
        .limit(1)
    )
    [given] = scalars(db, query)
    return bool(given)


def test_consent_given_and_withdrawn_at_once_ends_in_the_last_change_with_every_certificate_kept(
    postgres_url: str, db: Engine
) -> None:
    for n in range(ROUNDS):
        patient = person(n)
        seed(
            postgres_url,
            certificate(f"kept-{n}", patient),
            certificate(f"removed-{n}", patient, care_available=False),
            certificate(f"removed-archived-{n}", patient, care_available=False, citizen_available=False),
            consent_given=[patient],
        )

        gave, withdrew = values(race(postgres_url, give(patient), withdraw(patient)))

        # The withdrawal deletes the care-removed certificates whichever ran first (rule 6).
        assert withdrew.changed and withdrew.deleted == 2
        assert consent_of(db, patient) == [last_change_of(db, patient)]
        assert consent_of(db, patient) == [gave.changed]
        assert ids_of(db, patient) == {f"kept-{n}"}
        assert without_keeper(db) == []


def test_a_first_consent_given_twice_at_once_is_stored_once(postgres_url: str, db: Engine) -> None:
    for n in range(ROUNDS):
        patient = person(n)

        answers = values(race(postgres_url, give(patient), give(patient)))

        # One of them made the change; that the other reports none is checked, deterministically, by
        # the test below (it does not hold yet).
        assert any(a.changed for a in answers)
        assert consent_of(db, patient) == [True]


class _PausingConsents:
    def __init__(self, real: Any, uow: FakePausingUnitOfWork) -> None:
        self.real = real
        self.uow = uow

    async def get(self, patient: PersonId, **lock: bool) -> Any:
        consent = await self.real.get(patient, **lock)
        if not self.uow.paused.is_set():
            self.uow.paused.set()
            await self.uow.resume.wait()
        return consent

    async def set(self, patient: PersonId, **kwargs: Any) -> None:
        await self.real.set(patient, **kwargs)


class _PausingCertificates:
    def __init__(self, real: Any, uow: FakePausingUnitOfWork) -> None:
        self.real = real
        self.uow = uow

    async def add(self, certificate: Certificate, document: bytes) -> bool:
        added: bool = await self.real.add(certificate, document)
        if not added and not self.uow.paused.is_set():
            self.uow.paused.set()
            await self.uow.resume.wait()
        return added

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


class FakePausingUnitOfWork(SqlUnitOfWork):
    """The SQL unit of work, pausing once until ``resume`` is set: right after its first consent read,
    or after an add that found the certificate's id taken, whichever comes first. A way to put another
    whole transaction between an operation's read and its write."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def __aenter__(self) -> FakePausingUnitOfWork:
        await super().__aenter__()
        self.consents = _PausingConsents(self.consents, self)  # type: ignore[assignment]
        self.certificates = _PausingCertificates(self.certificates, self)  # type: ignore[assignment]
        return self


async def test_a_first_consent_given_between_another_ones_read_and_write_is_recorded_once(
    postgres_url: str, db: Engine
) -> None:
    patient = person(1)
    engine = create_engine(postgres_url)
    try:
        slow = FakePausingUnitOfWork(engine, KEYRING)
        late = asyncio.create_task(give(patient)(slow))
        await asyncio.wait_for(slow.paused.wait(), timeout=10)
        first = await give(patient)(SqlUnitOfWork(engine, KEYRING))
        slow.resume.set()
        second = await asyncio.wait_for(late, timeout=10)
    finally:
        await dispose(engine)

    assert (first.changed, second.changed) == (True, False)
    assert consent_of(db, patient) == [True]
    history = select(consent_changes.c.given).where(consent_changes.c.patient_key == key_of(patient.value))
    assert scalars(db, history) == [True]
    outcomes = select(audit_records.c.outcome).where(audit_records.c.action == "give_consent")
    assert sorted(scalars(db, outcomes)) == ["info", "ok"]


async def test_a_certificate_deleted_between_a_registers_insert_and_its_read_is_registered_anew(
    postgres_url: str, db: Engine
) -> None:
    # Rule 1 in one statement (``SqlCertificateRepository.add``): the id is taken, so the register reads
    # what is stored, and finds nothing: rule 5 deleted it meanwhile. It runs again and stores its own.
    old, new = certificate("cert-1", person(1)), certificate("cert-1", person(2))
    engine = create_engine(postgres_url)
    try:
        async with SqlUnitOfWork(engine, KEYRING) as uow:
            await uow.certificates.add(old, document_of(old.id))
            await uow.commit()
        slow = FakePausingUnitOfWork(engine, KEYRING)
        late = asyncio.create_task(register(new)(slow))
        await asyncio.wait_for(slow.paused.wait(), timeout=10)
        removed = await remove("cert-1")(SqlUnitOfWork(engine, KEYRING))
        slow.resume.set()
        registration = await asyncio.wait_for(late, timeout=10)
    finally:
        await dispose(engine)

    assert (removed, registration) == (operations.Removal.DELETED, rules.Registration.CREATE)
    assert scalars(db, select(certificates.c.patient_key)) == [key_of(new.patient.value)]
    actions = select(audit_records.c.action, audit_records.c.outcome).order_by(audit_records.c.seq)
    with db.connect() as connection:
        assert [tuple(r) for r in connection.execute(actions)] == [
            ("remove_care_copy", "ok"),
            ("register", "ok"),
        ]


# ---------------------------------------------------------------------------------------------------
# Rules 5, 6 and 8: the care provider removes its copy while the citizen withdraws consent


def test_a_care_copy_removed_while_consent_is_withdrawn_leaves_no_certificate_without_a_keeper(
    postgres_url: str, db: Engine
) -> None:
    for n in range(ROUNDS):
        patient = person(n)
        seed(
            postgres_url,
            certificate(f"target-{n}", patient),
            certificate(f"removed-earlier-{n}", patient, care_available=False),
            certificate(f"kept-{n}", patient),
            consent_given=[patient],
        )

        removal, withdrawal = values(race(postgres_url, remove(f"target-{n}"), withdraw(patient)))

        # Either the removal came first (kept for the citizen, then deleted by the withdrawal) or the
        # withdrawal did (the removal then finds no consent and deletes): the target goes either way.
        assert (removal, withdrawal.deleted) in {
            (operations.Removal.KEPT_FOR_CITIZEN, 2),
            (operations.Removal.DELETED, 1),
        }
        assert ids_of(db, patient) == {f"kept-{n}"}
        assert consent_of(db, patient) == [False]
        assert without_keeper(db) == []


# ---------------------------------------------------------------------------------------------------
# Lost updates: two writes of one certificate, each decided on what it read before the other wrote.
# Made deterministic: the test holds the certificate's row lock until both contenders wait for it, so
# both have read the certificate before either writes.


def blocked(db: Engine, certificate_id: str) -> tuple[Callable[[], None], Callable[[], None]]:
    """A lock on the certificate's row, and ``release``: once both contenders wait, commit it."""
    connection = db.connect()
    transaction = connection.begin()
    connection.execute(select(certificates.c.id).where(certificates.c.id == certificate_id).with_for_update())

    def waiting() -> int:
        with db.connect() as watcher:
            found = watcher.scalar(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            )
        return int(found or 0)

    def release() -> None:
        deadline = time.monotonic() + 10
        while waiting() < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        transaction.commit()
        connection.close()

    def cleanup() -> None:
        if not connection.closed:
            transaction.rollback()
            connection.close()

    return release, cleanup


def flags_of(db: Engine, certificate_id: str) -> tuple[bool, bool, bool]:
    query = select(
        certificates.c.care_available, certificates.c.citizen_available, certificates.c.revoked
    ).where(certificates.c.id == certificate_id)
    with db.connect() as connection:
        row = connection.execute(query).one()
    return bool(row.care_available), bool(row.citizen_available), bool(row.revoked)


def archive(certificate_id: str, patient: PersonId) -> Call:
    return lambda uow: operations.set_certificate_status(
        uow,
        certificate_id=certificate_id,
        party=Party.INVANA,
        code=StatusCode.DELETE,
        at=NOW,
        citizen=patient,
        caller=citizen(patient),
        now=NOW,
    )


def revoke(certificate_id: str, patient: PersonId) -> Call:
    return lambda uow: operations.revoke_certificate(
        uow, certificate_id=certificate_id, patient=patient, caller=CARE, now=NOW
    )


def test_a_certificate_revoked_while_the_citizen_archives_it_stays_revoked(
    postgres_url: str, db: Engine
) -> None:
    patient = person(1)
    seed(postgres_url, certificate("cert-1", patient), consent_given=[patient])
    release, cleanup = blocked(db, "cert-1")
    try:
        values(race(postgres_url, revoke("cert-1", patient), archive("cert-1", patient), ready=release))
    finally:
        cleanup()

    # (care_available, citizen_available, revoked): both changes hold, whichever committed first.
    assert flags_of(db, "cert-1") == (True, False, True)


def test_a_care_copy_removed_while_the_citizen_archives_it_stays_removed(
    postgres_url: str, db: Engine
) -> None:
    patient = person(1)
    seed(postgres_url, certificate("cert-1", patient), consent_given=[patient])
    release, cleanup = blocked(db, "cert-1")
    try:
        values(race(postgres_url, remove("cert-1"), archive("cert-1", patient), ready=release))
    finally:
        cleanup()

    # care_available is never set true again (DOMAIN.md), and the archiving holds too.
    assert flags_of(db, "cert-1") == (False, False, False)


# ---------------------------------------------------------------------------------------------------
# Rule 2 (README "Input", the consent lock): a citizen's change that depends on consent never lands
# after a withdrawal


def send(certificate_id: str, patient: PersonId) -> Call:
    recipients = {"FKASSA": Recipient(Party.FKASSA, "Försäkringskassan", frozenset({"LISJP"}))}
    return lambda uow: operations.send_certificate(
        uow,
        certificate_id=certificate_id,
        citizen=patient,
        recipient_id="FKASSA",
        recipients=recipients,
        caller=citizen(patient),
        now=NOW,
    )


def archive_through_rest(certificate_id: str, patient: PersonId) -> Call:
    return lambda uow: operations.archive_certificate(
        uow, certificate_id=certificate_id, citizen=patient, caller=citizen(patient), now=NOW
    )


def lock_waits(db: Engine) -> int:
    with db.connect() as watcher:
        found = watcher.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        )
    return int(found or 0)


@pytest.mark.parametrize(
    ("action", "change"),
    [("send", send), ("archive", archive_through_rest), ("archive", archive)],
)
async def test_a_withdrawal_during_a_citizens_change_waits_for_it_and_the_audit_trail_tells_that_order(
    postgres_url: str, db: Engine, action: str, change: Callable[[str, PersonId], Call]
) -> None:
    patient = person(1)
    kept_for_consent = certificate("cert-1", patient, care_available=False)
    engine = create_engine(postgres_url)
    try:
        async with SqlUnitOfWork(engine, KEYRING) as uow:
            await uow.certificates.add(kept_for_consent, document_of(kept_for_consent.id))
            await uow.consents.set(patient, given=True, at=SIGNED, caller=citizen(patient))
            await uow.commit()
        # The change has read consent (given) and waits; the withdrawal starts meanwhile.
        slow = FakePausingUnitOfWork(engine, KEYRING)
        late = asyncio.create_task(change("cert-1", patient)(slow))
        await asyncio.wait_for(slow.paused.wait(), timeout=10)
        withdrawal = asyncio.create_task(withdraw(patient)(SqlUnitOfWork(engine, KEYRING)))
        deadline = time.monotonic() + 10
        while not withdrawal.done() and lock_waits(db) < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

        assert not withdrawal.done(), "the withdrawal did not wait for the change that read consent"
        slow.resume.set()
        await asyncio.wait_for(late, timeout=10)
        withdrew = await asyncio.wait_for(withdrawal, timeout=10)
    finally:
        await dispose(engine)

    # The change committed first; the withdrawal then deleted the certificate, kept only for consent.
    assert withdrew.deleted == 1
    trail = select(audit_records.c.action, audit_records.c.outcome).order_by(audit_records.c.id)
    with db.connect() as connection:
        assert [tuple(r) for r in connection.execute(trail)] == [(action, "ok"), ("withdraw_consent", "ok")]
