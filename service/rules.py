"""The rules of DOMAIN.md (1-9): availability flags, consent, archive and permanent deletion; and
what the certificate type table (``certificate_type``) decides: which types are stored, which a citizen
sees, which a recipient takes.

Pure functions. They take state and return a decision, or raise a refusal from ``errors``; they
never read the clock, the database or settings (``operations`` passes ``now`` in).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from service import certificate_type, errors
from service.model import (
    Caller,
    CallerKind,
    Certificate,
    Consent,
    Delivery,
    EventKind,
    HandedOver,
    IssuedCertificate,
    Outgoing,
    Party,
    PersonId,
    Recipient,
    RuleFailure,
    StatisticsEvent,
    StatusCode,
    StatusEvent,
)


class Registration(enum.Enum):
    CREATE = "create"
    ALREADY_EXISTS = "already_exists"


@dataclass(frozen=True, slots=True)
class Decision:
    """What an action does to one certificate: new flags, an event to append, or permanent deletion."""

    care_available: bool
    citizen_available: bool
    revoked: bool
    event: StatusEvent | None = None
    delete: bool = False

    def applied_to(self, certificate: Certificate) -> Certificate:
        """The certificate as it is after the decision (for answers; never for a deletion)."""
        events = (*certificate.status_events, self.event) if self.event else certificate.status_events
        return dataclasses.replace(
            certificate,
            care_available=self.care_available,
            citizen_available=self.citizen_available,
            revoked=self.revoked,
            status_events=events,
        )

    def changes(self, certificate: Certificate) -> bool:
        return self.delete or self.event is not None or self.changes_flags(certificate)

    def changes_flags(self, certificate: Certificate) -> bool:
        return (self.care_available, self.citizen_available, self.revoked) != (
            certificate.care_available,
            certificate.citizen_available,
            certificate.revoked,
        )


def _keep(certificate: Certificate, event: StatusEvent | None = None, **flags: bool) -> Decision:
    return Decision(
        care_available=flags.get("care_available", certificate.care_available),
        citizen_available=flags.get("citizen_available", certificate.citizen_available),
        revoked=flags.get("revoked", certificate.revoked),
        event=event,
    )


# Rule 1
def register(existing: Certificate | None, new: IssuedCertificate) -> Registration:
    """A new id is stored with both flags true; the same id again changes nothing. An id that another
    care giver's certificate holds is refused, and audited as denied, with one answer whichever patient
    ``new`` names: neither that it is stored nor whose it is is told (README "Callers")."""
    if existing is None:
        return Registration.CREATE
    if existing.care_unit.care_giver_id != new.care_unit.care_giver_id:
        raise errors.CertificateIdTaken("the id is held by another care giver's certificate")
    if existing.patient != new.patient:
        raise errors.CertificateIdConflict("a certificate with this id exists for another patient")
    return Registration.ALREADY_EXISTS


def received(*, now: dt.datetime) -> StatusEvent:
    """The first event of every certificate (DOMAIN.md: RECEIV on register)."""
    return StatusEvent(StatusCode.RECEIV, Party.HSVARD, now)


def registered(issued: IssuedCertificate, *, now: dt.datetime) -> Certificate:
    """Rule 1: a certificate as it is stored when registered: what its care system stated, registered
    now, both flags true, not revoked, RECEIV."""
    stated = {field.name: getattr(issued, field.name) for field in dataclasses.fields(IssuedCertificate)}
    return Certificate(
        **stated,
        registered_at=now,
        care_available=True,
        citizen_available=True,
        revoked=False,
        status_events=(received(now=now),),
    )


# What is stored: the types and versions of the type table. A type code a refusal may quote back has the
# shape of the table's codes, a letter first (so never an identity number) and short; any other code is
# a value the caller chose that the answer does not echo.
_QUOTABLE_CODE: Final = re.compile(r"[A-Z][A-Z0-9_-]{0,19}")


def require_known_type(issued: IssuedCertificate) -> None:
    """Only the types and major versions of the type table are stored; anything else is refused before
    it is stored, and the answer says whether the type or its version is unknown.

    The national service answers "Certificate with type: X does not support version: Y", echoing both
    as written; this one quotes a type code only where it has a code's shape, and a version only as its
    major number (at most three digits), so the answer never carries free text or an identity number.
    The national service also checks the minor version against the texts it keeps of each; this
    service keeps no texts and takes every minor version of a known major one."""
    if certificate_type.known(issued.type_code, issued.type_version) is not None:
        return
    code = issued.type_code
    if code not in certificate_type.TYPES:
        shown = f" {code}" if _QUOTABLE_CODE.fullmatch(code) else ""
        raise errors.UnknownCertificateType(
            "the type table has no such type", detail=f"Unknown certificate type{shown}"
        )
    major = certificate_type.major_version(issued.type_version)
    raise errors.UnknownCertificateType(
        "the type table has no such version of the type",
        detail=f"{code} has no version {major}"
        if major is not None
        else f"{code} has no version of that form",
    )


# The business rules of the certificate's type (business_rules.py): the answer names the first few
# failures, each shortened, so that it stays short whatever the certificate breaks.
_FAILURES_NAMED = 3
_MESSAGE_CHARACTERS = 200


def require_follows_type_rules(failures: Sequence[RuleFailure]) -> None:
    """A certificate that breaks its type's rules is not stored: refused, naming the first failures
    (each its rule, where in the certificate, and the rule's message) and how many more there are."""
    if not failures:
        return
    named = [_failure(failure) for failure in failures[:_FAILURES_NAMED]]
    if len(failures) > _FAILURES_NAMED:
        named.append(f"and {len(failures) - _FAILURES_NAMED} more")
    raise errors.BusinessRuleViolation(
        "the certificate breaks its type's rules",
        detail=f"The certificate does not follow the rules of its type: {'; '.join(named)}",
    )


def _failure(failure: RuleFailure) -> str:
    message = failure.message
    if len(message) > _MESSAGE_CHARACTERS:
        message = message[: _MESSAGE_CHARACTERS - 1] + "…"
    return f"[{failure.rule}] {failure.location}: {message}" if failure.rule else message


# Rule 2
def require_consent(consent: Consent) -> None:
    if not consent.given:
        raise errors.ConsentRequired("the citizen has not given consent")


def require_owner(certificate: Certificate, citizen: PersonId) -> None:
    """A citizen acts only on their own certificates. The refusal is audited as denied; adapters
    answer it exactly like an unknown id, so nothing leaks about another citizen's certificates."""
    if certificate.patient != citizen:
        raise errors.NotPermitted("the certificate belongs to another citizen")


def require_patient(certificate: Certificate, patient: PersonId) -> None:
    """A care system that names the patient (RevokeCertificate) must name the certificate's: a mismatch
    is the request's error, audited, and changes nothing."""
    if certificate.patient != patient:
        raise errors.PatientMismatch("the certificate belongs to another patient")


def citizen_sees_type(certificate: Certificate) -> bool:
    """Whether a citizen may see a certificate of its type at all: not a death certificate (DB, DOI), which
    concerns a deceased person and goes from care to its recipient only. As the national service does
    (its CitizenController.EXCLUDED_CITIZEN_CERTIFICATES), only the types the table hides are hidden; a
    type it does not know, stored before the table refused them, stays the citizen's."""
    found = certificate_type.TYPES.get(certificate.type_code)
    return found is None or found.citizen_sees


def citizen_sees(certificate: Certificate, *, archived: bool | None) -> bool:
    """The citizen's list shows the direct view, or the archive when ``archived`` is asked for, or
    both (``None``: the 2013 list, which marks archived ones as not available); never a type hidden
    from citizens."""
    return citizen_sees_type(certificate) and (archived is None or certificate.citizen_available != archived)


def require_citizen_sees_type(certificate: Certificate) -> None:
    """A citizen's read or change of a certificate of a type hidden from citizens is refused, audited as
    denied and answered exactly as an unknown id (``errors.ANSWERED_AS``): the citizen's channels do not
    tell that it exists. The national service leaves death certificates out of the citizen's lists; this
    service keeps them from every citizen channel, reads and changes too."""
    if not citizen_sees_type(certificate):
        raise errors.NotPermitted("a citizen does not see this type of certificate")


# Rule 3
def care_sees(certificate: Certificate) -> bool:
    """Care sees what the care provider keeps; consent and archiving play no part."""
    return certificate.care_available


def require_care_visible(certificate: Certificate) -> None:
    if not care_sees(certificate):
        raise errors.CertificateNotFound("no such certificate")


# Who calls what (DOMAIN.md): a care system sees only its own care givers' certificates
def care_giver_permitted(certificate: Certificate | IssuedCertificate, scope: frozenset[str] | None) -> bool:
    """Whether a certificate is within the care givers a calling system's permissions name
    (``None``: every care giver, as for the citizen's own channels)."""
    return scope is None or certificate.care_unit.care_giver_id in scope


def require_may_act_for(caller: Caller) -> None:
    """Acting for a citizen (their consent, lists, reads, sends and archive) reaches every care giver's
    certificates, and withdrawing consent deletes some (rule 6): a system limited to some care givers
    may not, whatever contract it calls (DOMAIN.md, Who calls what). A request that names a part as its
    own acts as that part only where the calling system may (``may_act_as``)."""
    if caller.kind is CallerKind.CITIZEN and caller.care_giver_scope is not None:
        raise errors.CallerNotPermitted("a system limited to some care givers may not act for a citizen")
    if caller.part is not None and not may_act_as(caller.recipient_scope, caller.part):
        raise errors.CallerNotPermitted("the calling system may not act as this part")


def may_act_as(recipient_scope: frozenset[Party] | None, part: Party) -> bool:
    """Recipients are callers like any other system, each with its recipient code (README.md, "Callers"):
    a recipient's part is acted as by that recipient only, and a recipient acts as no other part (not as
    care, nor as the citizen). ``None``: any part (the development consumer)."""
    if recipient_scope is None:
        return True
    return part in recipient_scope if part.is_recipient else not recipient_scope


def require_care_giver_permitted(certificate: Certificate, scope: frozenset[str] | None) -> None:
    """Another care giver's certificate is refused as if it did not exist: the refusal is audited as
    denied and answered exactly like an unknown id, so a care system cannot probe for ids."""
    if not care_giver_permitted(certificate, scope):
        raise errors.NotPermitted("the certificate belongs to a care giver outside the caller's permissions")


def require_may_register(issued: IssuedCertificate, scope: frozenset[str] | None) -> None:
    """A care system registers certificates only for the care givers its permissions name."""
    if not care_giver_permitted(issued, scope):
        raise errors.CallerNotPermitted("the certificate's care giver is outside the caller's permissions")


# Rule 4
def archive(certificate: Certificate, *, now: dt.datetime) -> Decision:
    if not certificate.citizen_available:
        return _keep(certificate)
    return _keep(certificate, StatusEvent(StatusCode.DELETE, Party.INVANA, now), citizen_available=False)


def restore(certificate: Certificate, *, now: dt.datetime) -> Decision:
    if certificate.citizen_available:
        return _keep(certificate)
    return _keep(certificate, StatusEvent(StatusCode.RESTOR, Party.INVANA, now), citizen_available=True)


def recipient(recipient_id: str, *, recipients: Mapping[str, Recipient]) -> Recipient:
    """The recipient a citizen sends to, by the id their request names. An id no recipient has is
    refused; so is a recipient that does not take the certificate's type, once it is read (``send_to``)."""
    found = recipients.get(recipient_id)
    if found is None:
        raise errors.UnknownRecipient("no such recipient")
    return found


def takes(recipient: Recipient, type_code: str) -> bool:
    """Whether a recipient takes a type: where both its recipients' entry and the type table say so."""
    found = certificate_type.TYPES.get(type_code)
    return (
        type_code in recipient.certificate_types and found is not None and recipient.party in found.recipients
    )


def send_to(certificate: Certificate, *, recipient: Recipient, now: dt.datetime) -> Decision:
    """A certificate is sent to a recipient that takes its type, whoever sends it (the citizen, a care
    system for the patient, or the recipient recording what it got)."""
    if not takes(recipient, certificate.type_code):
        raise errors.UnknownRecipient("the recipient does not take this type of certificate")
    return send(certificate, recipient=recipient.party, now=now)


def send(certificate: Certificate, *, recipient: Party, now: dt.datetime) -> Decision:
    """Record SENTTO; a revoked certificate is no longer valid to send, and sending twice records once."""
    if not recipient.is_recipient:
        raise errors.InvalidStatusChange("a certificate is sent to a recipient")
    if certificate.revoked:
        raise errors.CertificateRevoked("the certificate is revoked")
    if recipient in certificate.sent_to():
        return _keep(certificate)
    return _keep(certificate, StatusEvent(StatusCode.SENTTO, recipient, now))


# Recipients read what was sent to them
def require_sent_to(certificate: Certificate, recipient: Party) -> None:
    """A recipient reads a certificate only once it was sent to it. Anything else is refused as if it did
    not exist: audited as denied and answered exactly as an unknown id, so a recipient cannot probe for
    ids, nor learn what was sent elsewhere."""
    if recipient not in certificate.sent_to():
        raise errors.NotPermitted("the certificate was not sent to this recipient")


def recipient_sees(event: StatusEvent, recipient: Party) -> bool:
    """The status history a recipient sees (README.md, "Recipients"): that care registered the
    certificate (RECEIV by HSVARD), its own events (the SENTTO to it, its RECEIV) and a revocation
    (CANCEL), which it must see to stop acting on the certificate. Not the citizen's archive or restore,
    nor what another recipient was sent or did: neither is the recipient's business."""
    if event.code is StatusCode.CANCEL:
        return True
    if event.code is StatusCode.RECEIV and event.party is Party.HSVARD:
        return True
    return event.party is recipient


def as_recipient_sees(certificate: Certificate, recipient: Party) -> Certificate:
    """``certificate`` as ``recipient`` is answered it: the history it sees, and no relations other
    certificates state to it (those name certificates that may not have been sent to it)."""
    return dataclasses.replace(
        certificate,
        status_events=tuple(e for e in certificate.status_events if recipient_sees(e, recipient)),
        related_by=(),
    )


def revoke(certificate: Certificate, *, now: dt.datetime) -> Decision:
    """The issuer revokes; the certificate stays stored and reads show it revoked."""
    if certificate.revoked:
        return _keep(certificate)
    return _keep(certificate, StatusEvent(StatusCode.CANCEL, Party.HSVARD, now), revoked=True)


def set_status(certificate: Certificate, *, party: Party, code: StatusCode, at: dt.datetime) -> Decision:
    """SetCertificateStatus: which party may set which status.

    Archive (DELETE) and restore (RESTOR) belong to the citizen (rule 4): a care system can't archive.
    RECEIV records a recipient's receipt. SENTTO is a send, whoever reports it, and every send is
    ``send_to``'s (``operations.send_certificate``), so that each sender meets the same rules. CANCEL is
    never set by status: revoking is the issuer's RevokeCertificate, so neither a citizen nor a recipient
    can revoke this way.
    """
    if code in (StatusCode.DELETE, StatusCode.RESTOR):
        if party is not Party.INVANA:
            raise errors.InvalidStatusChange("only the citizen archives or restores a certificate")
        return archive(certificate, now=at) if code is StatusCode.DELETE else restore(certificate, now=at)
    if code is StatusCode.SENTTO:
        raise errors.InvalidStatusChange("a send is recorded by the send operation")
    if code is StatusCode.RECEIV and party.is_recipient:
        return _keep(certificate, StatusEvent(StatusCode.RECEIV, party, at))
    raise errors.InvalidStatusChange("this party may not set this status")


def status_needs_consent(party: Party, *, by_citizen: bool) -> bool:
    """Rule 2: the citizen acting (any status), or a status set for the citizen (archive, restore),
    needs consent. A recipient recording its delivery does not."""
    return by_citizen or party is Party.INVANA


# Rule 5
def remove_care_copy(certificate: Certificate, *, care_giver_id: str, consent: Consent) -> Decision:
    """The care provider removes its copy: the citizen keeps it with consent, else it is deleted."""
    if certificate.care_unit.care_giver_id != care_giver_id:
        raise errors.NotPermitted("the certificate belongs to another care giver")
    require_care_visible(certificate)
    if consent.given:
        return _keep(certificate, care_available=False)
    return Decision(
        care_available=False,
        citizen_available=certificate.citizen_available,
        revoked=certificate.revoked,
        delete=True,
    )


# An operator's hand-over before erasing a care giver (README.md, "Hand-over before erasure")
def require_kept_by(certificate: Certificate, care_giver_id: str) -> None:
    """A hand-over exports what the care giver still keeps, as rule 5 would remove it."""
    if certificate.care_unit.care_giver_id != care_giver_id:
        raise errors.NotPermitted("the certificate belongs to another care giver")
    require_care_visible(certificate)


def unchanged_since(certificate: Certificate, handed_over: HandedOver) -> bool:
    """Whether the certificate is still as the export holds it: the same registration with the same status
    history (``model.HandedOver`` says why that is all that can change). A certificate that changed is not
    in the receiver's hands as it is, so an erasure with that export leaves it."""
    return (certificate.registered_at, certificate.status_events) == (
        handed_over.registered_at,
        handed_over.status_events,
    )


# Rules 6 and 7
def deleted_on_withdrawal(certificates: Iterable[Certificate]) -> list[Certificate]:
    """Withdrawing consent deletes every certificate whose care copy is gone (no keeper is left).

    Giving consent again has no rule of its own: nothing deleted comes back (rule 7).
    """
    return [c for c in certificates if not c.care_available]


# Rule 8
def has_keeper(certificate: Certificate, consent: Consent) -> bool:
    """A stored certificate always has a keeper: the care provider's copy or the citizen's consent."""
    return certificate.care_available or consent.given


# What leaves the service (README.md, "Recipients and statistics"): written to the outbox in the
# transaction of its cause, so that nothing is told that did not happen and nothing that happened is lost.
def outgoing(certificate: Certificate, decision: Decision, *, now: dt.datetime) -> tuple[Outgoing, ...]:
    """What a decision applied to a certificate tells recipients and statistics: a send delivers the
    certificate to its recipient; a revocation follows it to every recipient it was sent to; a permanent
    deletion tells statistics only. A decision that changes nothing tells nobody anything (a send to a
    recipient that has it already, a revocation of a revoked certificate)."""
    if decision.delete:
        return (statistics(certificate, EventKind.DELETED, at=now),)
    event = decision.event
    if event is None:
        return ()
    if event.code is StatusCode.SENTTO:
        return (
            Delivery(EventKind.SENT, event.party, certificate.id, _type_label(certificate), event.at),
            statistics(certificate, EventKind.SENT, at=event.at, recipient=event.party),
        )
    if event.code is StatusCode.CANCEL:
        follows = tuple(
            Delivery(EventKind.REVOKED, party, certificate.id, _type_label(certificate), event.at)
            for party in certificate.sent_to()
        )
        return (*follows, statistics(certificate, EventKind.REVOKED, at=event.at))
    return ()


def statistics(
    certificate: Certificate, kind: EventKind, *, at: dt.datetime, recipient: Party | None = None
) -> StatisticsEvent:
    """What statistics is told of ``certificate``: ``kind`` happened ``at``."""
    return StatisticsEvent(
        kind,
        certificate.id,
        _type_label(certificate),
        certificate.type_version,
        certificate.care_unit.unit_id,
        certificate.care_unit.care_giver_id,
        certificate.signed_at,
        at,
        recipient,
    )


def _type_label(certificate: Certificate) -> str:
    return certificate_type.label(certificate.type_code)
