"""One function per use case: the only place a transaction begins and ends.

Every function follows the same steps: open the unit of work, load through repositories, ask
``rules``, apply the decision, add the audit record, commit. Leaving the block rolls back whatever
was not committed. A refusal is audited (outcome ``denied`` or ``error``) and committed before the
domain error is raised. Permanent deletion (rules 5 and 6) happens in the unit of work of its cause.

Adapters (``soap``, ``rest``) call these with plain values; they never test a flag or consent.

Every other transaction is maintenance: it reads or writes no certificate content, consent or
audit record on anyone's behalf, so it has no operation of its own, and it owns its short
transactions because no request may wait on it. That is all of them:

- the audit log's sealer (``store/audit_sealer.py``): gives the records these functions committed
  their place in the chain (``seq``, ``prev_hash``, ``hash``) and writes the signed checkpoints;
- the store gauges (``app.py``): counts, read only;
- the readiness probe (``rest/health.py``, ``store/migration.current_revision``): reads the schema's
  revision;
- KEK rotation (``store/rotation.py``, ``intygstjanst rotate-kek``): re-wraps data keys, leaving every
  ciphertext and every value as it was;
- migrations (``store/migration.py``, ``store/migrations/``): change the schema, and convert stored
  values where a revision says so;
- ``verify-audit`` (``store/audit_verification.py``): reads the chain in one read-only transaction;
- the outbox relay (``relay.py``, its transactions in ``store/outbox.py``; ``intygstjanst relay``):
  reads the events these functions wrote to the outbox with the documents of sent certificates,
  publishes them, and deletes each once the broker confirmed it, or counts its failed attempt, each
  step in a short transaction of its own, none open while it waits on the broker; ``intygstjanst
  outbox`` reads what waits and puts dead-lettered events back.

An operator's erasure of a care giver (``erase_care_giver``), and the export handed over before it
(``export_care_giver``), are use cases, and are here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import NoReturn, Protocol, Self, TypeVar

from service import audit, certificate_type, errors, rules
from service.model import (
    Action,
    AuditRecord,
    Caller,
    CallerKind,
    Certificate,
    CertificateWithDocument,
    Consent,
    EventKind,
    HandedOver,
    IssuedCertificate,
    Outcome,
    Outgoing,
    Party,
    PersonId,
    Recipient,
    RuleFailure,
    StatusCode,
    StatusEvent,
    require_certificate_id,
)

T = TypeVar("T")

# A concurrent transaction on the same certificate or citizen makes ours fail at commit; running
# the whole operation again sees the winner's result (e.g. rule 1's "already exists").
RETRIES = 3


class CertificateRepository(Protocol):
    async def get(self, certificate_id: str, *, for_update: bool = False) -> Certificate | None: ...

    async def get_with_document(self, certificate_id: str) -> CertificateWithDocument | None: ...

    async def add(self, certificate: Certificate, document: bytes) -> bool:
        """Store a new certificate; False, storing nothing, where its id is taken already."""
        ...

    async def list_for_patient(
        self,
        patient: PersonId,
        *,
        types: Sequence[str] = (),
        care_unit_ids: Sequence[str] = (),
        care_giver_id: str | None = None,
        valid_between: tuple[dt.date | None, dt.date | None] = (None, None),
    ) -> list[Certificate]: ...

    async def update(self, certificate: Certificate, decision: rules.Decision) -> None: ...

    async def delete(self, certificate_ids: Sequence[str]) -> None: ...

    async def care_copies_of(self, care_giver_id: str, *, after: str, limit: int) -> list[str]: ...


class ConsentRepository(Protocol):
    async def get(self, patient: PersonId, *, for_update: bool = False, for_share: bool = False) -> Consent:
        """``for_update`` locks the consent against every other lock on it (a change of consent);
        ``for_share`` against a change only (an operation that depends on consent: ``_held``)."""
        ...

    async def set(self, patient: PersonId, *, given: bool, at: dt.datetime, caller: Caller) -> None: ...


class AuditLog(Protocol):
    async def add(self, record: AuditRecord) -> None: ...

    async def list_for_patient(
        self,
        patient: PersonId,
        *,
        start: dt.datetime | None,
        end: dt.datetime | None,
        limit: int,
        offset: int,
    ) -> tuple[list[AuditRecord], int]: ...


class Outbox(Protocol):
    async def add(self, events: Sequence[Outgoing], *, now: dt.datetime) -> None:
        """Write what leaves the service, in the transaction of its cause (at ``now``); the relay
        publishes it after commit (README.md, "Recipients and statistics")."""
        ...


class UnitOfWork(Protocol):
    @property
    def certificates(self) -> CertificateRepository: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def consents(self) -> ConsentRepository: ...

    @property
    def audit(self) -> AuditLog: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    def reports_itself(self, failure: Exception) -> bool:
        """Whether leaving the block turns ``failure`` into an error of its own: a lost race
        (``ConcurrentChange``) or a store that cannot serve now (``StoreUnavailable``)."""
        ...


@dataclass(frozen=True, slots=True)
class NewCertificate:
    """What a care system registers: the list fields read from the certificate, and the document."""

    issued: IssuedCertificate
    document: bytes = field(repr=False)
    # How it breaks its type's business rules, found by the adapter before the transaction (a check is
    # CPU work no transaction should wait on: business_rules.py).
    rule_failures: tuple[RuleFailure, ...] = ()


class Removal(enum.Enum):
    KEPT_FOR_CITIZEN = "kept_for_citizen"
    DELETED = "deleted"
    # Left as it is: it changed after the export the erasure goes by (README.md, "Hand-over before erasure")
    CHANGED_SINCE_EXPORT = "changed_since_export"


@dataclass(frozen=True, slots=True)
class ConsentChange:
    consent: Consent
    changed: bool
    deleted: int


class _Attempt:
    """Holds what an operation has learnt, so that a refusal is audited with it and committed."""

    def __init__(
        self,
        uow: UnitOfWork,
        caller: Caller,
        action: Action,
        now: dt.datetime,
        *,
        recipient: Party | None = None,
        status: StatusCode | None = None,
        called: str | None = None,
    ) -> None:
        self.uow = uow
        self.caller = caller
        self.action = action
        self.now = now
        self.recipient = recipient
        self.status = status
        self.called = called
        self.patient: PersonId | None = None
        self.certificates: list[Certificate] = []
        self.certificate_ids: list[str] = []

    def about(self, *certificates: Certificate, patient: PersonId | None = None) -> None:
        self.certificates.extend(certificates)
        if patient is not None:
            self.patient = patient
        elif certificates:
            self.patient = certificates[0].patient

    async def succeed(
        self, outcome: Outcome = Outcome.OK, *, certificate_type: str | None = None, deleted: int = 0
    ) -> None:
        await self.uow.audit.add(self._record(outcome, certificate_type=certificate_type, deleted=deleted))
        await self.uow.commit()

    def _record(
        self,
        outcome: Outcome,
        *,
        reason: type[errors.ServiceError] | None = None,
        certificate_type: str | None = None,
        deleted: int = 0,
    ) -> AuditRecord:
        return audit.record(
            self.caller,
            action=self.action,
            outcome=outcome,
            now=self.now,
            patient=self.patient,
            certificates=self.certificates,
            certificate_ids=self.certificate_ids,
            recipient=self.recipient,
            status=self.status,
            certificate_type=certificate_type,
            deleted=deleted,
            called=self.called,
            reason=reason,
        )

    async def __aenter__(self) -> Self:
        try:
            rules.require_may_act_for(self.caller)
        except errors.ServiceError as refusal:
            await self.__aexit__(type(refusal), refusal, refusal.__traceback__)
            raise
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # A refusal is audited in the same unit of work, rolled back to before it and committed. Not
        # a lost race, which is run again; nor a store that did not answer, which cannot take the
        # record either (trying would only wait again): nothing was disclosed or changed, or, where
        # the commit itself timed out, the effect and its record share one fate.
        if isinstance(exc, errors.ServiceError) and not isinstance(
            exc, (errors.ConcurrentChange, errors.StoreUnavailable)
        ):
            outcome = Outcome.DENIED if isinstance(exc, errors.Denied) else Outcome.ERROR
            await self._audit_refusal(outcome, type(exc))
        elif (
            isinstance(exc, Exception)
            and not isinstance(exc, errors.ServiceError)
            and not self.uow.reports_itself(exc)
        ):
            # A fault nobody foresaw, where a patient's data may have been asked for: the attempt is
            # audited as an error if the store still takes it. If it does not, the fault itself is what
            # the caller is answered and the log tells, not this second one.
            with contextlib.suppress(Exception):
                await self._audit_refusal(Outcome.ERROR, errors.UnexpectedError)

    async def _audit_refusal(self, outcome: Outcome, reason: type[errors.ServiceError]) -> None:
        await self.uow.rollback()
        await self.uow.audit.add(self._record(outcome, reason=reason))
        await self.uow.commit()


async def _retrying(run: Callable[[], Awaitable[T]]) -> T:
    for _ in range(RETRIES - 1):
        try:
            return await run()
        except errors.ConcurrentChange:
            continue
    return await run()


async def _load(
    uow: UnitOfWork, attempt: _Attempt, certificate_id: str, *, for_update: bool = False
) -> Certificate:
    """Load a certificate; ``for_update`` locks its row so that a concurrent change to its flags
    waits for ours instead of writing back what it read before (a lost update). A certificate of a
    care giver outside the caller's permissions is refused as if it did not exist (audited as denied)."""
    attempt.certificate_ids.append(require_certificate_id(certificate_id))
    certificate = await uow.certificates.get(certificate_id, for_update=for_update)
    if certificate is None:
        raise errors.CertificateNotFound("no such certificate")
    _loaded(attempt, certificate)
    return certificate


async def _load_with_document(
    uow: UnitOfWork, attempt: _Attempt, certificate_id: str
) -> CertificateWithDocument:
    """``_load`` for a read that answers with the document: both come in one statement."""
    attempt.certificate_ids.append(require_certificate_id(certificate_id))
    found = await uow.certificates.get_with_document(certificate_id)
    if found is None:
        raise errors.CertificateNotFound("no such certificate")
    _loaded(attempt, found.certificate)
    return found


async def _held(uow: UnitOfWork, patient: PersonId) -> Consent:
    """The consent an operation depends on (rule 2), locked against a change until the operation
    commits: a withdrawal committed before it is seen, and one that comes during it waits, so no effect
    of the citizen's lands after their withdrawal (rules 2 and 6). A withdrawal locks consent, then the
    certificates it deletes: operations that lock a certificate too take consent first where they can."""
    return await uow.consents.get(patient, for_share=True)


def _loaded(attempt: _Attempt, certificate: Certificate) -> None:
    attempt.about(certificate)
    rules.require_care_giver_permitted(certificate, attempt.caller.care_giver_scope)


async def _apply(
    uow: UnitOfWork, certificate: Certificate, decision: rules.Decision, now: dt.datetime
) -> None:
    """Apply a decision, and write what it tells recipients and statistics in the same transaction."""
    if decision.delete:
        await uow.certificates.delete([certificate.id])
    elif decision.changes(certificate):
        await uow.certificates.update(certificate, decision)
    if events := rules.outgoing(certificate, decision, now=now):
        await uow.outbox.add(events, now=now)


# Rule 1
async def register_certificate(
    uow: UnitOfWork, *, new: NewCertificate, caller: Caller, now: dt.datetime
) -> rules.Registration:
    issued = new.issued

    async def run() -> rules.Registration:
        async with uow, _Attempt(uow, caller, Action.REGISTER, now) as attempt:
            require_certificate_id(issued.id)
            stored = rules.registered(issued, now=now)
            attempt.about(stored)
            rules.require_may_register(issued, caller.care_giver_scope)
            rules.require_known_type(issued)
            rules.require_follows_type_rules(new.rule_failures)
            # Rule 1 asks whether the id is taken; the insert answers in the same statement, storing
            # nothing where it is. Only a taken id is read, for the rule to tell "already exists" from
            # another patient's or another care giver's certificate.
            existing = None
            if not await uow.certificates.add(stored, new.document):
                existing = await uow.certificates.get(issued.id)
                if existing is None:  # taken, and deleted before we read it (rule 5 or 6): run again
                    raise errors.ConcurrentChange("the certificate was deleted meanwhile")
            registration = rules.register(existing, issued)
            if registration is rules.Registration.CREATE:
                await uow.outbox.add([rules.statistics(stored, EventKind.REGISTERED, at=now)], now=now)
                # The record names the type as the metrics' label does: a code of the type table. Only
                # here: a refusal's record names its reason (audit_chain.first_written hashes a type with
                # a registered certificate only, in the words records were first written in).
                await attempt.succeed(certificate_type=certificate_type.label(issued.type_code))
            else:
                await attempt.succeed(Outcome.INFO)  # rule 1: it exists already
            return registration

    return await _retrying(run)


# Rule 3
async def get_certificate_for_care(
    uow: UnitOfWork, *, certificate_id: str, caller: Caller, now: dt.datetime
) -> CertificateWithDocument:
    async with uow, _Attempt(uow, caller, Action.READ, now) as attempt:
        found = await _load_with_document(uow, attempt, certificate_id)
        rules.require_care_visible(found.certificate)
        await attempt.succeed()
        return found


async def list_certificates_for_care(
    uow: UnitOfWork,
    *,
    patient: PersonId,
    care_unit_ids: Sequence[str] = (),
    care_giver_id: str | None = None,
    caller: Caller,
    now: dt.datetime,
) -> list[Certificate]:
    async with uow, _Attempt(uow, caller, Action.LIST, now) as attempt:
        attempt.patient = patient
        found = await uow.certificates.list_for_patient(
            patient, care_unit_ids=care_unit_ids, care_giver_id=care_giver_id
        )
        visible = [
            c for c in found if rules.care_sees(c) and rules.care_giver_permitted(c, caller.care_giver_scope)
        ]
        attempt.about(*visible, patient=patient)
        await attempt.succeed()
        return visible


# Rule 2
async def get_certificate_for_citizen(
    uow: UnitOfWork,
    *,
    certificate_id: str,
    citizen: PersonId | None,
    caller: Caller,
    now: dt.datetime,
) -> CertificateWithDocument:
    """The citizen's read. ``citizen`` is the authenticated citizen where the channel names one."""
    async with uow, _Attempt(uow, caller, Action.READ, now) as attempt:
        # Whatever the read meets, it is in that citizen's access log (the certificate's own patient's,
        # if it is another's).
        attempt.patient = citizen
        found = await _load_with_document(uow, attempt, certificate_id)
        if citizen is not None:
            rules.require_owner(found.certificate, citizen)
        # Answered as an unknown id, so before consent, whose refusal would tell that it exists.
        rules.require_citizen_sees_type(found.certificate)
        rules.require_consent(await _held(uow, found.certificate.patient))
        await attempt.succeed()
        return found


async def list_certificates_for_citizen(
    uow: UnitOfWork,
    *,
    citizen: PersonId,
    archived: bool | None = False,
    types: Sequence[str] = (),
    valid_between: tuple[dt.date | None, dt.date | None] = (None, None),
    caller: Caller,
    now: dt.datetime,
) -> list[Certificate]:
    """``valid_between``: only certificates whose validity overlaps these days (README.md, "Lists" under
    "SOAP contracts served")."""
    async with uow, _Attempt(uow, caller, Action.LIST, now) as attempt:
        attempt.patient = citizen
        rules.require_consent(await _held(uow, citizen))
        found = await uow.certificates.list_for_patient(citizen, types=types, valid_between=valid_between)
        visible = [c for c in found if rules.citizen_sees(c, archived=archived)]
        attempt.about(*visible, patient=citizen)
        await attempt.succeed()
        return visible


# Rules 2 and 4, and recipients' delivery status
async def set_certificate_status(
    uow: UnitOfWork,
    *,
    certificate_id: str,
    party: Party,
    code: StatusCode,
    at: dt.datetime,
    citizen: PersonId | None = None,
    caller: Caller,
    now: dt.datetime,
) -> StatusEvent | None:
    """Set a status; returns the event appended, or None where the status was already in force."""

    async def run() -> StatusEvent | None:
        async with uow, _status_attempt(uow, caller, party, code, now) as attempt:
            certificate = await _load(uow, attempt, certificate_id, for_update=True)
            if citizen is not None:
                rules.require_owner(certificate, citizen)
            needs_consent = rules.status_needs_consent(party, by_citizen=caller.kind is CallerKind.CITIZEN)
            # A citizen's channel (the citizen's status, or a 2013 request naming the citizen) never
            # reaches a type hidden from citizens: answered as an unknown id, so before consent.
            if needs_consent or citizen is not None:
                rules.require_citizen_sees_type(certificate)
            # Consent first: a refusal for another reason would tell a citizen without consent about
            # the certificate (rule 2). Its patient is known only now, so consent is locked after the
            # certificate, the other way round from a withdrawal: a deadlock between them is a lost
            # race, run again.
            if needs_consent:
                rules.require_consent(await _held(uow, certificate.patient))
            decision = rules.set_status(certificate, party=party, code=code, at=at)
            await _apply(uow, certificate, decision, now)
            await attempt.succeed(Outcome.OK if decision.event else Outcome.INFO)
            return decision.event

    return await _retrying(run)


async def _citizen_change(
    uow: UnitOfWork,
    *,
    action: Action,
    certificate_id: str,
    citizen: PersonId,
    decide: Callable[[Certificate], rules.Decision],
    caller: Caller,
    now: dt.datetime,
) -> tuple[Certificate, rules.Decision]:
    """A change the authenticated citizen makes to their own certificate, with consent (rule 2)."""
    async with uow, _Attempt(uow, caller, action, now) as attempt:
        consent = await _held(uow, citizen)
        certificate = await _load(uow, attempt, certificate_id, for_update=True)
        rules.require_owner(certificate, citizen)
        rules.require_citizen_sees_type(certificate)
        rules.require_consent(consent)
        decision = decide(certificate)
        await _apply(uow, certificate, decision, now)
        await attempt.succeed(Outcome.OK if decision.event else Outcome.INFO)
        return decision.applied_to(certificate), decision


# Rule 4
async def archive_certificate(
    uow: UnitOfWork, *, certificate_id: str, citizen: PersonId, caller: Caller, now: dt.datetime
) -> Certificate:
    changed, _ = await _citizen_change(
        uow,
        action=Action.ARCHIVE,
        certificate_id=certificate_id,
        citizen=citizen,
        decide=lambda c: rules.archive(c, now=now),
        caller=caller,
        now=now,
    )
    return changed


async def restore_certificate(
    uow: UnitOfWork, *, certificate_id: str, citizen: PersonId, caller: Caller, now: dt.datetime
) -> Certificate:
    changed, _ = await _citizen_change(
        uow,
        action=Action.RESTORE,
        certificate_id=certificate_id,
        citizen=citizen,
        decide=lambda c: rules.restore(c, now=now),
        caller=caller,
        now=now,
    )
    return changed


# Every send, whoever sends: the citizen (rule 2), a care system for the patient (rule 3), or the recipient
# recording that it was sent the certificate (a SENTTO status it sets)
async def send_certificate(
    uow: UnitOfWork,
    *,
    certificate_id: str,
    recipient_id: str,
    recipients: Mapping[str, Recipient],
    citizen: PersonId | None = None,
    patient: PersonId | None = None,
    at: dt.datetime | None = None,
    caller: Caller,
    now: dt.datetime,
) -> tuple[Certificate, bool]:
    """Send a certificate on to the recipient ``recipient_id`` names, one of ``recipients`` that takes its
    type; returns it and whether it had been sent there already (nothing is recorded again).

    Who sends is ``caller``: the citizen ``citizen`` sends their own certificate, with consent (rule 2); a
    care system sends one of its care givers' certificates that its care giver still keeps (rule 3), no
    consent needed, as care's act; a recipient records that it was sent one. ``patient``: the patient the
    request names, which must be the certificate's. ``at``: when it was sent, as the request says (now,
    where it says nothing)."""
    # An id no recipient has is invalid input, refused before the unit of work as the adapters refuse
    # theirs: nobody's data is read, and the answer depends neither on the certificate nor on the caller.
    recipient = rules.recipient(recipient_id, recipients=recipients)
    by_citizen = caller.kind is CallerKind.CITIZEN

    async def run() -> tuple[Certificate, bool]:
        async with uow, _Attempt(uow, caller, Action.SEND, now, recipient=recipient.party) as attempt:
            if by_citizen:
                if citizen is None:
                    raise errors.InvalidInput("a citizen's send names the citizen")
                # Consent before the certificate, as a withdrawal locks them (``_held``).
                consent = await _held(uow, citizen)
                certificate = await _load(uow, attempt, certificate_id, for_update=True)
                rules.require_owner(certificate, citizen)
                rules.require_citizen_sees_type(certificate)
                rules.require_consent(consent)
            else:
                certificate = await _load(uow, attempt, certificate_id, for_update=True)
                if caller.kind is CallerKind.CARE_SYSTEM:
                    rules.require_care_visible(certificate)
            if patient is not None:
                rules.require_patient(certificate, patient)
            decision = rules.send_to(certificate, recipient=recipient, now=at or now)
            await _apply(uow, certificate, decision, now)
            await attempt.succeed(Outcome.OK if decision.event else Outcome.INFO)
            return decision.applied_to(certificate), decision.event is None

    return await _retrying(run)


# Recipients read what was sent to them
async def get_certificate_for_recipient(
    uow: UnitOfWork, *, certificate_id: str, recipient: Party, caller: Caller, now: dt.datetime
) -> CertificateWithDocument:
    """``recipient`` reads a certificate that was sent to it, with the status history it may see
    (``rules.as_recipient_sees``); any other is answered as an unknown id (audited as denied)."""
    async with uow, _Attempt(uow, caller, Action.READ, now) as attempt:
        found = await _load_with_document(uow, attempt, certificate_id)
        rules.require_sent_to(found.certificate, recipient)
        await attempt.succeed()
        return CertificateWithDocument(rules.as_recipient_sees(found.certificate, recipient), found.document)


@dataclass(frozen=True, slots=True)
class AccessLogPage:
    records: list[AuditRecord]
    total: int


# PDL 8 kap. 5 §: the citizen's own extract of who accessed their data
async def access_log(
    uow: UnitOfWork,
    *,
    citizen: PersonId,
    start: dt.datetime | None,
    end: dt.datetime | None,
    limit: int,
    offset: int,
    caller: Caller,
    now: dt.datetime,
) -> AccessLogPage:
    async with uow, _Attempt(uow, caller, Action.READ_ACCESS_LOG, now) as attempt:
        attempt.patient = citizen
        records, total = await uow.audit.list_for_patient(
            citizen, start=start, end=end, limit=limit, offset=offset
        )
        await attempt.succeed()
        return AccessLogPage(records, total)


def _status_attempt(
    uow: UnitOfWork, caller: Caller, party: Party, code: StatusCode, now: dt.datetime
) -> _Attempt:
    """A status change is audited in the same words as the citizen's own actions where it is one."""
    if code is StatusCode.DELETE:
        return _Attempt(uow, caller, Action.ARCHIVE, now)
    if code is StatusCode.RESTOR:
        return _Attempt(uow, caller, Action.RESTORE, now)
    if code is StatusCode.SENTTO:
        return _Attempt(uow, caller, Action.SEND, now, recipient=party)
    return _Attempt(uow, caller, Action.SET_STATUS, now, recipient=party, status=code)


async def revoke_certificate(
    uow: UnitOfWork, *, certificate_id: str, patient: PersonId, caller: Caller, now: dt.datetime
) -> bool:
    """Revoke; returns False where the certificate was already revoked."""
    async with uow, _Attempt(uow, caller, Action.REVOKE, now) as attempt:
        attempt.patient = patient
        certificate = await _load(uow, attempt, certificate_id, for_update=True)
        rules.require_patient(certificate, patient)
        decision = rules.revoke(certificate, now=now)
        await _apply(uow, certificate, decision, now)
        await attempt.succeed(Outcome.OK if decision.event else Outcome.INFO)
        return decision.event is not None


# Rule 5
async def remove_care_copy(
    uow: UnitOfWork,
    *,
    certificate_id: str,
    care_giver_id: str,
    handed_over: HandedOver | None = None,
    caller: Caller,
    now: dt.datetime,
) -> Removal:
    """``handed_over``: the certificate as an operator's export holds it; only if it is still so is it
    removed (an erasure with that export), else the attempt is audited as ``info``, changing nothing."""

    async def run() -> Removal:
        async with uow, _Attempt(uow, caller, Action.REMOVE_CARE_COPY, now) as attempt:
            certificate = await _load(uow, attempt, certificate_id, for_update=True)
            if handed_over is not None and not rules.unchanged_since(certificate, handed_over):
                await attempt.succeed(Outcome.INFO)
                return Removal.CHANGED_SINCE_EXPORT
            # The consent row is locked so that a concurrent withdrawal sees this removal (rule 8).
            consent = await uow.consents.get(certificate.patient, for_update=True)
            decision = rules.remove_care_copy(certificate, care_giver_id=care_giver_id, consent=consent)
            await _apply(uow, certificate, decision, now)
            removal = Removal.DELETED if decision.delete else Removal.KEPT_FOR_CITIZEN
            await attempt.succeed(deleted=1 if decision.delete else 0)
            return removal

    return await _retrying(run)


@dataclass(frozen=True, slots=True)
class Erasure:
    kept_for_citizens: int  # the citizen's consent keeps them (rule 5)
    deleted: int  # deleted permanently (rules 5 and 9)
    # Left to the care giver, erasing with an export: copies it does not hold, and copies changed since.
    not_exported: int = 0
    changed_since_export: int = 0


async def erase_care_giver(
    units: Callable[[], UnitOfWork],
    *,
    care_giver_id: str,
    handed_over: Mapping[str, HandedOver] | None,
    caller: Caller,
    clock: Callable[[], dt.datetime],
    batch: int = 200,
) -> Erasure:
    """An operator erases a whole care giver's copies at the end of its contract (DOMAIN.md, who calls
    what): rule 5 for every certificate the care giver still keeps. Each removal is an operation of its
    own, one transaction with its audit record (which the patient sees in their access log), so that a
    care giver of millions of certificates never holds the store in one transaction, and a run cut off
    is simply run again: what it already removed is no longer a care copy.

    ``handed_over``: the certificates of the verified export the care giver was handed (by id). Only
    those are removed, and only while they are as exported (``rules.unchanged_since``); the rest stay
    and are counted. ``None``: every copy, without an export, on the operator's word (README.md,
    "Hand-over before erasure")."""
    kept = deleted = not_exported = changed = 0
    async for found in _care_copies(units, care_giver_id, batch):
        for certificate_id in found:
            exported = None if handed_over is None else handed_over.get(certificate_id)
            if handed_over is not None and exported is None:
                not_exported += 1  # registered after the export, or left out of it: nothing is read
                continue
            try:
                removal = await remove_care_copy(
                    units(),
                    certificate_id=certificate_id,
                    care_giver_id=care_giver_id,
                    handed_over=exported,
                    caller=caller,
                    now=clock(),
                )
            except errors.CertificateNotFound:
                continue  # its care system removed it meanwhile, or a withdrawal deleted it (rule 6)
            if removal is Removal.DELETED:
                deleted += 1
            elif removal is Removal.CHANGED_SINCE_EXPORT:
                changed += 1
            else:
                kept += 1
    return Erasure(kept, deleted, not_exported, changed)


async def export_care_giver(
    units: Callable[[], UnitOfWork],
    *,
    care_giver_id: str,
    sink: Callable[[CertificateWithDocument], None],
    caller: Caller,
    clock: Callable[[], dt.datetime],
    batch: int = 200,
) -> int:
    """An operator exports every copy a care giver keeps, to hand it over before its erasure (README.md,
    "Hand-over before erasure"); returns how many. Each certificate is read with its document in a
    transaction of its own and audited there as an ``export`` of its patient's data (they see it in their
    access log), then given to ``sink``, which writes it where the operator said, outside any
    transaction. A sink that fails stops the export with its own error."""
    exported = 0
    async for found in _care_copies(units, care_giver_id, batch):
        for certificate_id in found:
            try:
                certificate = await _export_one(
                    units(),
                    certificate_id=certificate_id,
                    care_giver_id=care_giver_id,
                    caller=caller,
                    now=clock(),
                )
            except errors.CertificateNotFound:
                continue  # removed or deleted since the page was read: no longer the care giver's to hand over
            sink(certificate)
            exported += 1
    return exported


async def _export_one(
    uow: UnitOfWork, *, certificate_id: str, care_giver_id: str, caller: Caller, now: dt.datetime
) -> CertificateWithDocument:
    async with uow, _Attempt(uow, caller, Action.EXPORT, now) as attempt:
        found = await _load_with_document(uow, attempt, certificate_id)
        rules.require_kept_by(found.certificate, care_giver_id)
        await attempt.succeed()
        return found


async def count_care_copies(units: Callable[[], UnitOfWork], *, care_giver_id: str) -> int:
    """How many copies ``erase_care_giver`` would remove now (the operator's dry run)."""
    return sum([len(found) async for found in _care_copies(units, care_giver_id, 1000)])


async def _care_copies(
    units: Callable[[], UnitOfWork], care_giver_id: str, batch: int
) -> AsyncIterator[list[str]]:
    """The care giver's copies, a page at a time, each read in a short transaction of its own."""
    after = ""
    while True:
        async with units() as uow:
            found = await uow.certificates.care_copies_of(care_giver_id, after=after, limit=batch)
        if not found:
            return
        yield found
        after = found[-1]


# Rules 6 and 7
async def set_consent(
    uow: UnitOfWork, *, citizen: PersonId, given: bool, caller: Caller, now: dt.datetime
) -> ConsentChange:
    action = Action.GIVE_CONSENT if given else Action.WITHDRAW_CONSENT

    async def run() -> ConsentChange:
        async with uow, _Attempt(uow, caller, action, now) as attempt:
            attempt.patient = citizen
            current = await uow.consents.get(citizen, for_update=True)
            deleted: list[Certificate] = []
            if not given:
                deleted = rules.deleted_on_withdrawal(await uow.certificates.list_for_patient(citizen))
                await uow.certificates.delete([c.id for c in deleted])
                await uow.outbox.add(
                    [rules.statistics(c, EventKind.DELETED, at=now) for c in deleted], now=now
                )
                attempt.about(*deleted, patient=citizen)
            changed = current.given != given
            if changed:
                await uow.consents.set(citizen, given=given, at=now, caller=caller)
            await attempt.succeed(Outcome.OK if changed else Outcome.INFO, deleted=len(deleted))
            consent = Consent(citizen, given, now if changed else current.changed_at)
            return ConsentChange(consent, changed, len(deleted))

    return await _retrying(run)


async def refuse_call(
    uow: UnitOfWork,
    *,
    caller: Caller,
    called: str,
    now: dt.datetime,
    error: errors.Denied,
    budget: audit.RefusalBudget | None = None,
) -> NoReturn:
    """A call refused before it reaches an operation (an unidentified system or citizen, or a system
    whose permissions do not cover it) is audited as denied, committed, and only then raised; within
    ``budget``, for a caller that proved no identity. ``called`` names the contract or route."""
    if budget is not None and not budget.take():
        raise error
    async with uow, _Attempt(uow, caller, Action.CALL, now, called=called):
        raise error


async def get_consent(uow: UnitOfWork, *, citizen: PersonId, caller: Caller, now: dt.datetime) -> Consent:
    async with uow, _Attempt(uow, caller, Action.READ_CONSENT, now) as attempt:
        attempt.patient = citizen
        consent = await uow.consents.get(citizen)
        await attempt.succeed()
        return consent
