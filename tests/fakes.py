"""In-memory fakes of the ``UnitOfWork`` Protocol of ``service.operations``, and test data builders.

``FakeUnitOfWork`` is a small, real implementation: its repositories keep certificates, documents,
consents and audit records in dicts and lists. It keeps the transaction contract of the SQL unit of
work (``service/store/unit_of_work.py``):

- work staged inside an ``async with`` block is visible to that block at once, and to later blocks only
  after ``commit()``;
- ``rollback()``, or leaving the block without committing, discards it;
- the same object can be entered again and again (``operations`` retries by re-entering).

The integration tests of the SQL unit of work (``tests/integration/test_store.py``) run the same
contract against SQLite and PostgreSQL, so the fake and the real store cannot drift apart.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from service import errors, rules
from service.model import (
    AuditRecord,
    Caller,
    CallerKind,
    CareUnit,
    Certificate,
    CertificateWithDocument,
    Channel,
    Consent,
    IssuedCertificate,
    Outgoing,
    PersonId,
    Relation,
)
from service.relay import BrokerUnavailable, Message, Refused
from service.store.outbox import Failure

# ---------------------------------------------------------------------------------------------------
# Test data


def a_care_unit(
    *, unit_id: str = "SE2321000016-UNIT1", care_giver_id: str = "SE2321000016-GIVER1"
) -> CareUnit:
    return CareUnit(
        unit_id=unit_id,
        unit_name="Vårdcentralen Centrum",
        workplace_code="1234567890",
        care_giver_id=care_giver_id,
        care_giver_name="Region Exempel",
    )


def an_issued_certificate(
    certificate_id: str = "cert-1",
    *,
    patient: PersonId | str = "191212121212",
    care_giver_id: str = "SE2321000016-GIVER1",
    unit_id: str = "SE2321000016-UNIT1",
    signed_at: dt.datetime | None = dt.datetime(2024, 5, 2, 10, 0, tzinfo=dt.UTC),
    **changes: object,
) -> IssuedCertificate:
    """A certificate as a care system registers it, valid the day it was signed and relating to none;
    ``changes`` sets other fields."""
    issued = IssuedCertificate(
        id=certificate_id,
        id_root="1.2.752.129.2.1.2.1",
        type_code="LISJP",
        type_code_system="b64ea353-e8f6-4832-b563-fc7d46f29548",
        type_display_name="Läkarintyg för sjukpenning",
        type_version="1.3",
        patient=patient if isinstance(patient, PersonId) else PersonId.parse(patient),
        signed_at=signed_at,
        issuer_id="SE2321000016-DOC1",
        issuer_name="Doktor Exempel",
        care_unit=a_care_unit(unit_id=unit_id, care_giver_id=care_giver_id),
        valid_from=signed_at.date() if signed_at else None,
        valid_to=signed_at.date() if signed_at else None,
        relations=(),
    )
    return dataclasses.replace(issued, **changes)  # type: ignore[arg-type]


def a_certificate(
    certificate_id: str = "cert-1",
    *,
    patient: PersonId | str = "191212121212",
    care_giver_id: str = "SE2321000016-GIVER1",
    unit_id: str = "SE2321000016-UNIT1",
    signed_at: dt.datetime | None = dt.datetime(2024, 5, 2, 10, 0, tzinfo=dt.UTC),
    **changes: object,
) -> Certificate:
    """A stored certificate, with ``an_issued_certificate``'s fields, both flags true and no status
    events; ``changes`` sets flags, events and other fields."""
    issued = an_issued_certificate(
        certificate_id, patient=patient, care_giver_id=care_giver_id, unit_id=unit_id, signed_at=signed_at
    )
    certificate = Certificate(
        **{f.name: getattr(issued, f.name) for f in dataclasses.fields(issued)},
        registered_at=dt.datetime(2024, 5, 2, 10, 1, tzinfo=dt.UTC),
    )
    return dataclasses.replace(certificate, **changes)  # type: ignore[arg-type]


def document_of(certificate_id: str) -> bytes:
    """The document the fakes store for a seeded certificate: recognisable in any dump."""
    return f"<intyg id='{certificate_id}'>DOCUMENT-CONTENT diagnosis F32.1</intyg>".encode()


# ---------------------------------------------------------------------------------------------------
# The fake unit of work


@dataclass(frozen=True, slots=True)
class ConsentChange:
    """One row of a citizen's consent history: when, by whom, through which channel (DOMAIN.md)."""

    patient: PersonId = field(repr=False)
    given: bool
    at: dt.datetime
    actor_kind: CallerKind
    actor_id: str
    channel: Channel


@dataclass
class _State:
    """Everything the store holds. Values are frozen dataclasses, so a copy of the containers suffices."""

    certificates: dict[str, Certificate] = field(default_factory=dict)
    documents: dict[str, bytes] = field(default_factory=dict)
    consents: dict[PersonId, Consent] = field(default_factory=dict)
    consent_changes: list[ConsentChange] = field(default_factory=list)
    audit_records: list[AuditRecord] = field(default_factory=list)
    outbox: list[Outgoing] = field(default_factory=list)

    def copy(self) -> _State:
        return _State(
            certificates=dict(self.certificates),
            documents=dict(self.documents),
            consents=dict(self.consents),
            consent_changes=list(self.consent_changes),
            audit_records=list(self.audit_records),
            outbox=list(self.outbox),
        )


class FakeCertificateRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    def _related(self, certificate: Certificate) -> Certificate:
        """The certificate as the SQL store reads it: its relations by code and id, and with what the
        same patient's other certificates, not revoked, state of it, in the order they were registered."""
        others = sorted(
            (
                c
                for c in self._uow.working.certificates.values()
                if c.patient == certificate.patient and not c.revoked
            ),
            key=lambda c: (c.registered_at, c.id),
        )
        related_by = tuple(
            Relation(r.kind, other.id, other.id_root)
            for other in others
            for r in other.relations
            if r.certificate_id == certificate.id
        )
        relations = tuple(sorted(certificate.relations, key=lambda r: (r.kind.value, r.certificate_id)))
        return dataclasses.replace(certificate, relations=relations, related_by=related_by)

    async def get(self, certificate_id: str, *, for_update: bool = False) -> Certificate | None:
        self._uow.read(certificate_id)
        found = self._uow.working.certificates.get(certificate_id)
        return self._related(found) if found is not None else None

    async def get_with_document(self, certificate_id: str) -> CertificateWithDocument | None:
        self._uow.read(certificate_id)
        state = self._uow.working
        certificate, document = state.certificates.get(certificate_id), state.documents.get(certificate_id)
        if certificate is None or document is None:
            return None
        return CertificateWithDocument(self._related(certificate), document)

    async def add(self, certificate: Certificate, document: bytes) -> bool:
        state = self._uow.working
        if certificate.id in state.certificates:
            return False  # like the SQL store's insert that does nothing on a taken id
        state.certificates[certificate.id] = certificate
        state.documents[certificate.id] = document
        return True

    async def list_for_patient(
        self,
        patient: PersonId,
        *,
        types: Sequence[str] = (),
        care_unit_ids: Sequence[str] = (),
        care_giver_id: str | None = None,
        valid_between: tuple[dt.date | None, dt.date | None] = (None, None),
    ) -> list[Certificate]:
        first, last = valid_between
        found = [
            self._related(c)
            for c in self._uow.working.certificates.values()
            if c.patient == patient
            and (not types or c.type_code in types)
            and (not care_unit_ids or c.care_unit.unit_id in care_unit_ids)
            and (care_giver_id is None or c.care_unit.care_giver_id == care_giver_id)
            # Like SQL's comparisons with NULL: a certificate without a validity matches no filter on it.
            and (first is None or (c.valid_to is not None and c.valid_to >= first))
            and (last is None or (c.valid_from is not None and c.valid_from <= last))
        ]
        # The SQL store's order: newest signed first, unsigned last, then by id (sorts are stable).
        found.sort(key=lambda c: c.id)
        signed = [(c.signed_at, c) for c in found if c.signed_at is not None]
        signed.sort(key=lambda pair: pair[0], reverse=True)
        return [c for _, c in signed] + [c for c in found if c.signed_at is None]

    async def update(self, certificate: Certificate, decision: rules.Decision) -> None:
        state = self._uow.working
        stored = state.certificates.get(certificate.id)
        if stored is None:
            return  # like an UPDATE that matches no row
        events = stored.status_events + ((decision.event,) if decision.event is not None else ())
        state.certificates[certificate.id] = dataclasses.replace(
            stored,
            care_available=decision.care_available,
            citizen_available=decision.citizen_available,
            revoked=decision.revoked,
            status_events=events,
        )

    async def delete(self, certificate_ids: Sequence[str]) -> None:
        """Rule 9: the document, the metadata, the status history and its relations go; audit records
        stay."""
        state = self._uow.working
        for certificate_id in certificate_ids:
            state.certificates.pop(certificate_id, None)
            state.documents.pop(certificate_id, None)

    async def care_copies_of(self, care_giver_id: str, *, after: str, limit: int) -> list[str]:
        return sorted(
            c.id
            for c in self._uow.working.certificates.values()
            if c.care_unit.care_giver_id == care_giver_id and c.care_available and c.id > after
        )[:limit]


class FakeConsentRepository:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def get(self, patient: PersonId, *, for_update: bool = False, for_share: bool = False) -> Consent:
        # A citizen never seen has not given consent (DOMAIN.md).
        return self._uow.working.consents.get(patient, Consent(patient, given=False, changed_at=None))

    async def set(self, patient: PersonId, *, given: bool, at: dt.datetime, caller: Caller) -> None:
        state = self._uow.working
        state.consents[patient] = Consent(patient, given=given, changed_at=at)
        state.consent_changes.append(
            ConsentChange(patient, given, at, caller.kind, caller.system_id, caller.channel)
        )


class FakeAuditLog:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def add(self, record: AuditRecord) -> None:
        self._uow.working.audit_records.append(record)

    async def list_for_patient(
        self,
        patient: PersonId,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[AuditRecord], int]:
        found = [
            r
            for r in reversed(self._uow.working.audit_records)
            if r.patient == patient and (start is None or r.at >= start) and (end is None or r.at < end)
        ]
        # The SQL store's order: newest first, then the last added first.
        found.sort(key=lambda r: r.at, reverse=True)
        return found[offset : offset + limit], len(found)

    @property
    def records(self) -> list[AuditRecord]:
        """The committed audit records, oldest first."""
        return list(self._uow.stored.audit_records)


class FakeOutbox:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def add(self, events: Sequence[Outgoing], *, now: dt.datetime) -> None:
        self._uow.working.outbox.extend(events)

    @property
    def events(self) -> list[Outgoing]:
        """The committed events, in the order they were written."""
        return list(self._uow.stored.outbox)


class FakeUnitOfWork:
    """An in-memory unit of work with the SQL one's transaction semantics.

    ``committed`` counts successful commits, ``commits_tried`` every attempt. ``fail_commits`` makes the
    next so many commits fail with ``failing_with``: ``ConcurrentChange``, as the SQL unit of work
    reports a lost race, so tests can drive the retries, or ``StoreUnavailable``, as it reports a
    database that did not answer in time. ``fault_on_read``: every read of a certificate raises it, a
    fault of the store that nobody foresaw.
    """

    def __init__(
        self,
        *,
        certificates: Iterable[Certificate] = (),
        consent_given: Iterable[PersonId] = (),
        fail_commits: int = 0,
        failing_with: type[errors.ServiceError] = errors.ConcurrentChange,
        fault_on_read: Exception | None = None,
    ) -> None:
        self.stored = _State()
        for certificate in certificates:
            self.stored.certificates[certificate.id] = certificate
            self.stored.documents[certificate.id] = document_of(certificate.id)
        for patient in consent_given:
            self.stored.consents[patient] = Consent(patient, given=True, changed_at=None)
        self._working: _State | None = None
        self.committed = 0
        self.commits_tried = 0
        self.fail_commits = fail_commits
        self.failing_with = failing_with
        self.fault_on_read = fault_on_read
        self.certificates = FakeCertificateRepository(self)
        self.consents = FakeConsentRepository(self)
        self.audit = FakeAuditLog(self)
        self.outbox = FakeOutbox(self)

    @property
    def working(self) -> _State:
        if self._working is None:
            raise AssertionError("the repositories are used outside an `async with uow` block")
        return self._working

    async def __aenter__(self) -> Self:
        if self._working is not None:
            raise AssertionError("the unit of work is already open")
        self._working = self.stored.copy()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Whatever was not committed is discarded.
        self._working = None

    async def commit(self) -> None:
        working = self.working
        self.commits_tried += 1
        if self.fail_commits > 0:
            self.fail_commits -= 1
            raise self.failing_with("the commit failed")
        self.stored = working
        self._working = working.copy()
        self.committed += 1

    async def rollback(self) -> None:
        self._working = self.stored.copy()

    def read(self, certificate_id: str) -> None:
        """A read of a certificate by id, as the SQL store would meet it."""
        if "\x00" in certificate_id:
            # PostgreSQL's text cannot hold NUL: the driver refuses the parameter.
            raise ValueError("PostgreSQL text fields cannot contain NUL (0x00) bytes")
        if self.fault_on_read is not None:
            raise self.fault_on_read

    def reports_itself(self, failure: Exception) -> bool:
        # Its failures are ServiceErrors already (``fail_commits``), or faults of the test's making.
        return False

    # Reads of the committed state, for assertions.

    def certificate(self, certificate_id: str) -> Certificate | None:
        return self.stored.certificates.get(certificate_id)

    def document(self, certificate_id: str) -> bytes | None:
        return self.stored.documents.get(certificate_id)

    def consent_given(self, patient: PersonId) -> bool:
        consent = self.stored.consents.get(patient)
        return consent is not None and consent.given

    @property
    def consent_changes(self) -> list[ConsentChange]:
        return list(self.stored.consent_changes)


# ---------------------------------------------------------------------------------------------------
# The fake broker of the outbox relay (``service/relay.py``'s ``Broker`` Protocol)


class FakeBroker:
    """A broker in memory, for the relay's rounds without RabbitMQ (``tests/integration/test_relay_rounds.py``;
    the real one is ``service/broker.py``, tested in ``tests/integration/test_relay.py``).

    ``published`` keeps every message it confirmed, in order, duplicates included; ``dead_letters`` the
    messages given up on, with why. ``refusing`` refuses every message of a message id or a destination
    with its failure (as a nack or a basic.return); ``down`` makes it unreachable, connected or not;
    ``down_after`` takes that many more messages, then goes down; ``losing_confirms`` keeps each message
    and then fails as a confirm that never came (the broker has it, the relay does not know).
    """

    def __init__(self) -> None:
        self.published: list[Message] = []
        self.dead_letters: list[tuple[Message, Failure]] = []
        self.refusing: dict[str, Failure] = {}
        self.down = False
        self.down_after: int | None = None
        self.losing_confirms = False
        self.connections = 0

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[FakePublisher]:
        if self.down:
            raise BrokerUnavailable("ConnectionRefusedError")
        self.connections += 1
        yield FakePublisher(self)


class FakePublisher:
    def __init__(self, broker: FakeBroker) -> None:
        self._broker = broker

    async def publish(self, message: Message) -> None:
        broker = self._broker
        if broker.down_after is not None:
            if broker.down_after == 0:
                broker.down = True
            broker.down_after -= 1
        if broker.down:
            raise BrokerUnavailable("ConnectionResetError")
        refused = broker.refusing.get(message.message_id) or broker.refusing.get(message.destination)
        if refused is not None:
            raise Refused(refused)
        broker.published.append(message)
        if broker.losing_confirms:
            raise BrokerUnavailable("TimeoutError")

    async def dead_letter(self, message: Message, reason: Failure) -> None:
        if self._broker.down:
            raise BrokerUnavailable("ConnectionResetError")
        self._broker.dead_letters.append((message, reason))
