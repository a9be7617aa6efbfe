"""The JSON of the citizen REST API: request and response bodies (pydantic). JSON names live only here.

Request bodies reject unknown fields. Conversions from the domain model are the ``of`` constructors.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field

from service import document
from service.model import Action, AuditRecord, Certificate, Consent, Relation, RelationKind, StatusCode


def aware(value: dt.datetime | None, zone: ZoneInfo) -> dt.datetime | None:
    """Stored times are the service's wall-clock time; the API gives them with their offset (RFC 3339)."""
    return value.replace(tzinfo=zone) if value is not None else None


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _In(BaseModel):
    # Strict: a boolean is true or false, not 0, 1 or "yes".
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class CertificateType(_Out):
    code: str
    name: str
    version: str


class Organisation(_Out):
    id: str = Field(description="HSA id")
    name: str


class Delivery(_Out):
    recipient: str
    at: dt.datetime


class RelatedCertificate(_Out):
    type: RelationKind = Field(
        description="ERSATT replaces, KOMPLT complements, FRLANG extends, KOPIA copies (KV_RELATION)"
    )
    certificate_id: str

    @classmethod
    def of(cls, relation: Relation) -> RelatedCertificate:
        return cls(type=relation.kind, certificate_id=relation.certificate_id)


class CertificateSummary(_Out):
    id: str
    type: CertificateType
    issued: dt.datetime | None = Field(description="when the certificate was signed")
    valid_from: dt.date | None = Field(
        description="first day of its validity: the period it states (a sick leave's), else the day it was signed"
    )
    valid_to: dt.date | None = Field(description="last day of its validity")
    care_unit: Organisation
    care_giver: Organisation
    signing_doctor: str
    revoked: bool
    archived: bool
    sent_to: list[Delivery]
    relations: list[RelatedCertificate] = Field(
        description="the certificates this one replaces, complements, extends or copies"
    )
    related_by: list[RelatedCertificate] = Field(
        description="the citizen's other certificates, not revoked, that replace, complement, extend or copy this one"
    )
    replaced_by: str | None = Field(
        description="the certificate that replaced this one (the latest, where several did), or null"
    )

    @classmethod
    def of(cls, certificate: Certificate, zone: ZoneInfo) -> CertificateSummary:
        unit = certificate.care_unit
        return cls(
            id=certificate.id,
            type=CertificateType(
                code=certificate.type_code,
                name=certificate.type_display_name,
                version=certificate.type_version,
            ),
            issued=aware(certificate.signed_at, zone),
            valid_from=certificate.valid_from,
            valid_to=certificate.valid_to,
            care_unit=Organisation(id=unit.unit_id, name=unit.unit_name),
            care_giver=Organisation(id=unit.care_giver_id, name=unit.care_giver_name),
            signing_doctor=certificate.issuer_name,
            revoked=certificate.revoked,
            archived=not certificate.citizen_available,
            sent_to=[
                Delivery(recipient=e.party.value, at=e.at.replace(tzinfo=zone))
                for e in certificate.status_events
                if e.code is StatusCode.SENTTO
            ],
            relations=[RelatedCertificate.of(r) for r in certificate.relations],
            related_by=[RelatedCertificate.of(r) for r in certificate.related_by],
            replaced_by=certificate.replaced_by,
        )


class CertificateList(_Out):
    certificates: list[CertificateSummary]


class AnswerPart(_Out):
    id: str
    value: str | dict[str, Any] = Field(description="text, or the coded value's fields (code, codeSystem...)")


class Answer(_Out):
    id: str
    instance: int | None
    parts: list[AnswerPart]


class CertificateDetail(CertificateSummary):
    answers: list[Answer]

    @classmethod
    def with_answers(cls, certificate: Certificate, content: bytes, zone: ZoneInfo) -> CertificateDetail:
        return cls(
            **CertificateSummary.of(certificate, zone).model_dump(),
            answers=[
                Answer(
                    id=a.id,
                    instance=a.instance,
                    parts=[AnswerPart(id=p.id, value=p.value) for p in a.parts],
                )
                for a in document.answers(content)
            ],
        )


class SendRequest(_In):
    recipient: Annotated[str, Field(min_length=1, max_length=16, description="recipient id, e.g. FKASSA")]


class SendResult(_Out):
    already_sent: bool
    certificate: CertificateSummary


class ConsentState(_Out):
    given: bool
    changed_at: dt.datetime | None

    @classmethod
    def of(cls, consent: Consent, zone: ZoneInfo) -> ConsentState:
        return cls(given=consent.given, changed_at=aware(consent.changed_at, zone))


class ConsentRequest(_In):
    given: bool


class ConsentResult(ConsentState):
    deleted: int = Field(description="certificates deleted permanently by this change (DOMAIN.md rule 6)")


# What each action of the access log means to the citizen; every action has its words here
# (tests/integration/test_access_log.py), and a value, once published, keeps its meaning (model.Action).
ACTION_MEANINGS: Final = {
    Action.REGISTER: "a care system stored the certificate here",
    Action.READ: "the certificate was read, with its content",
    Action.LIST: "a list of your certificates was read",
    Action.REVOKE: "the certificate was revoked by the care provider",
    Action.ARCHIVE: "the certificate was archived (taken out of your direct view)",
    Action.RESTORE: "the certificate was restored to your direct view",
    Action.SEND: "the certificate was sent to `recipient`",
    Action.SET_STATUS: "`status` was set for `recipient`, e.g. that it received the certificate",
    Action.REMOVE_CARE_COPY: "the care provider removed its copy; `deleted` 1 if it was then deleted for good",
    Action.GIVE_CONSENT: "you gave consent",
    Action.WITHDRAW_CONSENT: "you withdrew consent; `deleted` certificates were deleted for good",
    Action.READ_CONSENT: "your consent was read",
    Action.READ_ACCESS_LOG: "this access log was read",
    Action.CALL: "a call was refused before it reached your data",
    Action.EXPORT: "an operator exported the certificate, with its content, to hand it to the care provider "
    "before erasing the care provider's copies",
}


class AccessLogEntry(_Out):
    at: dt.datetime
    action: Action = Field(
        description="What was done: " + "; ".join(f"`{a.value}`, {m}" for a, m in ACTION_MEANINGS.items())
    )
    outcome: Literal["ok", "info", "denied", "error"]
    channel: str
    accessed_by: str = Field(description="care_system, citizen, recipient or operator")
    care_unit: Organisation | None
    care_giver: Organisation | None
    certificates: list[str]
    recipient: str | None = Field(description="where the certificate was sent, or whose status was set")
    status: StatusCode | None = Field(description="the status set (`set_status`)")
    deleted: int = Field(description="certificates deleted for good by this action (DOMAIN.md rules 5 and 6)")

    @classmethod
    def of(cls, record: AuditRecord, zone: ZoneInfo) -> AccessLogEntry:
        return cls(
            at=record.at.replace(tzinfo=zone),
            action=record.action,
            outcome=record.outcome.value,
            channel=record.channel.value,
            accessed_by=record.actor_kind.value,
            care_unit=Organisation(id=record.care_unit_id, name=record.care_unit_name or "")
            if record.care_unit_id
            else None,
            care_giver=Organisation(id=record.care_giver_id, name=record.care_giver_name or "")
            if record.care_giver_id
            else None,
            certificates=list(record.certificate_ids),
            recipient=record.recipient.value if record.recipient else None,
            status=record.status,
            deleted=record.deleted,
        )


class AccessLog(_Out):
    entries: list[AccessLogEntry]
    page: int
    page_size: int
    total: int


class Problem(_Out):
    """RFC 9457 problem details, with a stable machine-readable ``code``."""

    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str | None = None
