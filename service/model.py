"""The domain model: certificates, their availability flags and status history, and consent.

Frozen dataclasses and enums; no I/O. The words follow ``DOMAIN.md``.

Glossary (Swedish terms of the contracts and the trade, used nowhere else in identifiers):
    intyg                  certificate
    intygs-id              certificate id
    makulera               revoke
    arkivera               archive (the citizen hides a certificate from the direct view)
    samtycke               consent
    vårdgivare             care giver (the organisation, e.g. a region), HSA id
    vårdenhet / enhet      care unit, HSA id
    arbetsplatskod         workplace code of a care unit
    personnummer           Swedish personal identity number, 12 digits YYYYMMDDNNNC
    samordningsnummer      co-ordination number: a personnummer whose day is raised by 60
    invånare (INVANA)      the citizen, as a party
    HSVARD                 health care, as a party
    Försäkringskassan      the Social Insurance Agency (party FKASSA), a recipient
    giltighet              validity: the period a certificate states (a sick leave's), else its signing day
    relation               a certificate's link to another: ersätter (ERSATT, replaces), kompletterar
                           (KOMPLT, complements), förlänger (FRLANG, extends), kopia (KOPIA, copies)
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, field

from service import errors


class StatusCode(enum.StrEnum):
    """Status history codes of DOMAIN.md."""

    RECEIV = "RECEIV"
    SENTTO = "SENTTO"
    CANCEL = "CANCEL"
    DELETE = "DELETE"
    RESTOR = "RESTOR"


class Party(enum.StrEnum):
    """The parties a status event relates to."""

    HSVARD = "HSVARD"
    INVANA = "INVANA"
    FKASSA = "FKASSA"
    TRANSP = "TRANSP"
    AF = "AF"
    SKV = "SKV"
    SOS = "SOS"

    @property
    def is_recipient(self) -> bool:
        return self not in (Party.HSVARD, Party.INVANA)

    @property
    def caller_kind(self) -> CallerKind:
        """Who acts where a request names this party as its own (the ``part`` of the contracts that
        serve more than one): the citizen, a recipient, or health care's system. What the caller may
        do, and whether consent is needed (rule 2), follows from it."""
        if self is Party.INVANA:
            return CallerKind.CITIZEN
        if self.is_recipient:
            return CallerKind.RECIPIENT
        return CallerKind.CARE_SYSTEM


class CallerKind(enum.StrEnum):
    CARE_SYSTEM = "care_system"
    CITIZEN = "citizen"
    RECIPIENT = "recipient"
    OPERATOR = "operator"


class Channel(enum.StrEnum):
    SOAP = "soap"
    REST = "rest"
    CLI = "cli"


class Outcome(enum.StrEnum):
    OK = "ok"
    INFO = "info"
    DENIED = "denied"
    ERROR = "error"


class Action(enum.StrEnum):
    """What an audit record says was done. The values are stored, and shown to the citizen in their access
    log as they are (README.md, "Access log"): a value keeps its meaning for good."""

    REGISTER = "register"  # a care system registered a certificate (rule 1)
    READ = "read"  # a certificate was read, with its document
    LIST = "list"  # a patient's certificates were listed
    REVOKE = "revoke"
    ARCHIVE = "archive"  # the citizen took a certificate out of their direct view (rule 4)
    RESTORE = "restore"  # ... and back into it
    SEND = "send"  # sent to ``recipient``
    SET_STATUS = "set_status"  # ``status`` set for ``recipient``, e.g. its receipt
    REMOVE_CARE_COPY = "remove_care_copy"  # rule 5
    GIVE_CONSENT = "give_consent"
    WITHDRAW_CONSENT = "withdraw_consent"  # rule 6
    READ_CONSENT = "read_consent"
    READ_ACCESS_LOG = "read_access_log"
    CALL = "call"  # a call refused before any operation; ``called`` names it
    EXPORT = "export"  # read, with its document, into an operator's hand-over export (README.md)


# A certificate id as the store keeps it (certificates.id, 128 characters): no control characters, NUL
# among them, which PostgreSQL's text cannot hold and no XML document can carry
# (README.md, "Input").
CERTIFICATE_ID_LENGTH = 128
# As a regular expression too, for the REST API's published contract (OpenAPI ``pattern``).
CERTIFICATE_ID_PATTERN = r"^[^\x00-\x1f\x7f]+$"
_CONTROL_CHARACTERS = frozenset(map(chr, (*range(0x20), 0x7F)))


def require_certificate_id(value: str) -> str:
    """``value``, if it can be a certificate id; else ``InvalidInput`` before it reaches the store."""
    if not 0 < len(value) <= CERTIFICATE_ID_LENGTH or not _CONTROL_CHARACTERS.isdisjoint(value):
        raise errors.InvalidInput(f"a certificate id has 1 to {CERTIFICATE_ID_LENGTH} printable characters")
    return value


def _luhn_ok(digits: str) -> bool:
    total = 0
    for index, char in enumerate(digits):
        product = int(char) * (2 if index % 2 == 0 else 1)
        total += product - 9 if product > 9 else product
    return total % 10 == 0


@dataclass(frozen=True, slots=True)
class PersonId:
    """A validated, normalised personnummer or samordningsnummer (12 digits, no separator).

    ``repr`` hides the number so that it cannot reach a log line by accident.
    """

    value: str = field(repr=False)

    @classmethod
    def parse(cls, raw: str) -> PersonId:
        text = raw.strip()
        # Callers write YYYYMMDD-NNNC as often as YYYYMMDDNNNC; the separator carries nothing.
        if len(text) == 13 and text[8] in "-+":
            text = text[:8] + text[9:]
        if len(text) != 12 or not text.isascii() or not text.isdigit():
            raise errors.InvalidPersonId("a personal identity number has 12 digits")
        year, month, day = int(text[:4]), int(text[4:6]), int(text[6:8])
        if day > 60:
            day -= 60
        try:
            dt.date(year, month, day)
        except ValueError:
            raise errors.InvalidPersonId("a personal identity number starts with a valid date") from None
        if not _luhn_ok(text[2:]):
            raise errors.InvalidPersonId("the check digit of the personal identity number is wrong")
        return cls(text)

    @property
    def is_coordination_number(self) -> bool:
        return int(self.value[6:8]) > 60


@dataclass(frozen=True, slots=True)
class StatusEvent:
    code: StatusCode
    party: Party
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class CareUnit:
    """Where the certificate was written: the care unit and its care giver, with HSA ids and names."""

    unit_id: str
    unit_name: str
    workplace_code: str
    care_giver_id: str
    care_giver_name: str


class RelationKind(enum.StrEnum):
    """What a certificate is to the one its relation names: the codes of KV_RELATION (code system
    c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146), the only ones a relation may have here."""

    REPLACES = "ERSATT"
    COMPLEMENTS = "KOMPLT"
    EXTENDS = "FRLANG"
    COPIES = "KOPIA"


@dataclass(frozen=True, slots=True)
class Relation:
    """One end of a relation between two certificates: ``kind`` and the other certificate's id (with the
    root it was named by). A certificate's own ``relations`` are what it states (it replaces the other);
    its ``related_by`` are what other certificates state of it (the other replaces it)."""

    kind: RelationKind
    certificate_id: str
    certificate_root: str


@dataclass(frozen=True, slots=True)
class IssuedCertificate:
    """A certificate as its care system issued it: the list fields the registering system states, and
    nothing the service gives it. ``rules.registered`` turns it into the stored ``Certificate`` (rule 1).

    ``valid_from`` and ``valid_to`` are its validity: the period it states where its type states one
    (``certificate_type.Validity``), else its signing day; none where it states neither. ``relations``
    are the certificates it replaces, complements, extends or copies, by code and id.
    """

    id: str
    id_root: str
    type_code: str
    type_code_system: str
    type_display_name: str
    type_version: str
    patient: PersonId
    signed_at: dt.datetime | None
    issuer_id: str
    issuer_name: str
    care_unit: CareUnit
    valid_from: dt.date | None
    valid_to: dt.date | None
    relations: tuple[Relation, ...]


@dataclass(frozen=True, slots=True)
class Certificate(IssuedCertificate):
    """One stored certificate: what its care system stated (``IssuedCertificate``), and what the service
    keeps of it (DOMAIN.md, State of one certificate): when it was registered, the two availability flags
    and the status history. The document (the certificate as the care system sent it) is kept apart and
    loaded only by a get.

    ``related_by``: the relations the same patient's other stored certificates state to this one, those
    not revoked (a revoked replacement replaces nothing), in the order they were registered.
    """

    registered_at: dt.datetime
    care_available: bool = True
    citizen_available: bool = True
    revoked: bool = False
    status_events: tuple[StatusEvent, ...] = ()
    related_by: tuple[Relation, ...] = ()

    def sent_to(self) -> tuple[Party, ...]:
        return tuple(dict.fromkeys(e.party for e in self.status_events if e.code is StatusCode.SENTTO))

    @property
    def replaced_by(self) -> str | None:
        """The id of the certificate that replaced this one, the latest where several did."""
        replacing = [r.certificate_id for r in self.related_by if r.kind is RelationKind.REPLACES]
        return replacing[-1] if replacing else None


@dataclass(frozen=True, slots=True)
class CertificateWithDocument:
    """A certificate and its document, as a get loads them together."""

    certificate: Certificate
    document: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class HandedOver:
    """A certificate as a verified hand-over export holds it (README.md, "Hand-over before erasure"): what
    tells whether it has changed since. Its document and what its care system stated never change after
    registration (rule 1), and every later change but the removal of the care copy appends a status event,
    so a certificate is unchanged while it is the same registration (``registered_at``) with the same
    status history."""

    certificate_id: str
    registered_at: dt.datetime
    status_events: tuple[StatusEvent, ...]


@dataclass(frozen=True, slots=True)
class RuleFailure:
    """One way a certificate breaks its type's business rules (``business_rules.py``): the rule (the
    pattern id of the national rule set, e.g. ``q32.2``), where in the certificate (an XPath without
    namespaces) and the rule's message, with any personal identity number it quoted masked."""

    rule: str
    location: str
    message: str


@dataclass(frozen=True, slots=True)
class Recipient:
    """A recipient a citizen may send certificates to, and the types of certificate it takes."""

    party: Party
    name: str
    certificate_types: frozenset[str]


class EventKind(enum.StrEnum):
    """What happened to a certificate, as it leaves the service (README.md, "Recipients and statistics").
    The values are written to the outbox and into the messages: a value keeps its meaning for good."""

    REGISTERED = "registered"  # rule 1
    SENT = "sent"  # SENTTO a recipient
    REVOKED = "revoked"
    DELETED = "deleted"  # deleted permanently (rules 5, 6 and 9)


@dataclass(frozen=True, slots=True)
class Delivery:
    """A certificate, or its revocation, on its way to a recipient that the certificate was sent to: written
    to the outbox in the transaction of the send or the revocation, published by the relay (``relay.py``).
    A ``SENT`` delivery carries the certificate as registered; the relay reads it when it publishes."""

    kind: EventKind
    recipient: Party
    certificate_id: str
    certificate_type: str
    at: dt.datetime


@dataclass(frozen=True, slots=True)
class StatisticsEvent:
    """What the statistics service is told of a certificate: its type, where it was written and when
    things happened to it; never its patient or its document. ``recipient`` of a ``SENT`` event."""

    kind: EventKind
    certificate_id: str
    certificate_type: str
    type_version: str
    care_unit_id: str
    care_giver_id: str
    signed_at: dt.datetime | None
    at: dt.datetime
    recipient: Party | None = None


Outgoing = Delivery | StatisticsEvent


@dataclass(frozen=True, slots=True)
class Consent:
    """The citizen's consent. A citizen never seen has not given it (DOMAIN.md)."""

    patient: PersonId
    given: bool
    changed_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class StaffId:
    """A person working in care, or operating the service, as the request names them: an HSA id, or
    another id their organisation gives them. Never a personal identity number: where a request names
    a professional by one (the id's root says so), it is a ``PersonId``."""

    value: str


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is calling: a care system (with the care unit/giver it acts for), a citizen, a recipient.

    ``system_id`` is the calling system (the HSA id of its certificate). ``citizen`` is the citizen who
    acts, where one does; ``professional`` the professional or operator the request names, by staff id
    or personal identity number. ``care_giver_scope`` is the care givers whose certificates the calling
    system may see or change (its permissions; ``None``: every care giver).

    ``part`` is the part the request names as the caller's own (GetCertificate 2's and
    SetCertificateStatus's ``part``), where it names one; ``recipient_scope`` the recipients' parts the
    calling system may act as (its permissions' recipient code: a recipient acts as itself only, any
    other system as none; ``None``: any, the development consumer's).
    """

    kind: CallerKind
    channel: Channel
    system_id: str
    citizen: PersonId | None = field(default=None, repr=False)
    professional: StaffId | PersonId | None = field(default=None, repr=False)
    care_unit_id: str | None = None
    care_giver_id: str | None = None
    care_giver_scope: frozenset[str] | None = None
    part: Party | None = None
    recipient_scope: frozenset[Party] | None = None


@dataclass(frozen=True, slots=True)
class AuditRecord:
    """Who did what to whose certificates, when, and how it ended (PDL).

    Beside ``action``, only the fields that action has: ``recipient`` (and ``status``) of a send or a
    status set for a recipient; ``certificate_type`` of a registered certificate; ``deleted``, how many
    certificates the operation deleted permanently (rules 5 and 6); ``called`` of a refused call;
    ``reason``, the error, of every refusal (outcome ``denied`` or ``error``).
    """

    at: dt.datetime
    action: Action
    outcome: Outcome
    actor_kind: CallerKind
    actor_id: str
    channel: Channel
    patient: PersonId | None = field(repr=False)
    certificate_ids: tuple[str, ...] = ()
    care_unit_id: str | None = None
    care_giver_id: str | None = None
    # The person who acted: the citizen, or the professional or operator. Read back from the store, a
    # citizen is known only where it is the record's own patient, a professional only by staff id.
    actor_citizen: PersonId | None = field(default=None, repr=False)
    actor_professional: StaffId | PersonId | None = field(default=None, repr=False)
    recipient: Party | None = None
    status: StatusCode | None = None
    certificate_type: str | None = None
    deleted: int = 0
    called: str | None = None
    reason: type[errors.ServiceError] | None = None
    care_unit_name: str | None = None
    care_giver_name: str | None = None
