"""The SOAP contracts this service serves, each defined just before its handler.

A handler reads the (schema-checked) request body into plain values, calls one function of
``service.operations`` and renders the answer: a response element, or for contracts whose response is
only a ``result``, a ``Result``. Errors are left to ``endpoint``, which maps them through ``faults``.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

import anyio
from lxml import etree

from service import document, errors, operations, rules
from service.access import Consumer
from service.business_rules import RuleSet
from service.document import CORE3
from service.model import (
    Caller,
    CallerKind,
    Certificate,
    Channel,
    IssuedCertificate,
    Party,
    PersonId,
    Recipient,
    RuleFailure,
    StaffId,
    StatusCode,
)
from service.soap import faults
from service.soap import messages as m
from service.soap.messages import CORE1, OK, TYPES3, Result, q


@dataclass(frozen=True, slots=True)
class Call:
    """One permitted request: a fresh unit of work, the time, and the calling system (from its client
    certificate) with its permissions."""

    uow: operations.UnitOfWork
    now: dt.datetime
    consumer: Consumer
    recipients: Mapping[str, Recipient] = field(default_factory=dict)
    # The certificate types' business rules, where configured.
    business_rules: RuleSet | None = None

    def caller(
        self,
        kind: CallerKind,
        *,
        citizen: PersonId | None = None,
        professional: StaffId | PersonId | None = None,
        care_unit_id: str | None = None,
        care_giver_id: str | None = None,
        part: Party | None = None,
    ) -> Caller:
        # The audit trail names the system its certificate proves, not the address it wrote (README.md,
        # "Callers").
        return Caller(
            kind,
            Channel.SOAP,
            self.consumer.hsa_id,
            citizen=citizen,
            professional=professional,
            care_unit_id=care_unit_id,
            care_giver_id=care_giver_id,
            care_giver_scope=self.consumer.care_givers,
            part=part,
            recipient_scope=self.consumer.recipient_scope,
        )


# A handler answers with a response element, a ``Result``, or a whole envelope it wrote as bytes.
Handler = Callable[[Call, etree._Element], Awaitable["etree._Element | Result | bytes"]]


class ResultKind(enum.Enum):
    NONE = "none"  # errors are SOAP Faults
    CORE3 = "core3"  # ResultType of urn:riv:clinicalprocess:healthcond:certificate:3
    CORE1 = "core1"  # the same shape, in core 1.0
    RESULT_OF_CALL = "result_of_call"  # insuranceprocess ResultOfCall


class Domain(enum.Enum):
    """The RIVTA service domain of a contract, which names its responder namespace and its path."""

    CLINICAL = "clinicalprocess:healthcond:certificate"
    # This project's own contract (contracts/README.md).
    INTYGSTJANST = "intygstjanst:certificate"
    # The 2013 contracts: RIVTA BP 2.0, addressed with ``wsa:To``; their request elements end in Request.
    INSURANCE = "insuranceprocess:healthreporting"

    @property
    def bp20(self) -> bool:
        return self is Domain.INSURANCE


@dataclass(frozen=True, slots=True)
class Contract:
    operation: str
    major: int
    result: ResultKind
    domain: Domain = Domain.CLINICAL
    # Only ever acts for a citizen, across every care giver: never granted to a system limited to some
    # care givers (``config``'s permission table; the mixed contracts are refused at the call, by rules).
    for_citizen: bool = False
    # Elements the response requires before its ``result``, with the values an answer of only a result
    # gives them (GetConsent 1: an error reports no consent).
    before_result: tuple[tuple[str, str], ...] = ()

    @property
    def namespace(self) -> str:
        return f"urn:riv:{self.domain.value}:{self.operation}Responder:{self.major}"

    @property
    def request(self) -> str:
        suffix = "Request" if self.domain is Domain.INSURANCE else ""
        return q(self.namespace, self.operation + suffix)

    @property
    def path(self) -> str:
        profile = "rivtabp20" if self.domain.bp20 else "rivtabp21"
        return f"/{self.domain.value.replace(':', '/')}/{self.operation}/{self.major}/{profile}"

    @property
    def folder(self) -> str:
        return f"{self.operation}_{self.major}"

    def response(self) -> etree._Element:
        return etree.Element(q(self.namespace, f"{self.operation}Response"), nsmap={"ns": self.namespace})

    def result_response(self, result: Result) -> etree._Element:
        response = self.response()
        for name, value in self.before_result:
            m.sub(response, self.namespace, name, value)
        add_result(self, response, result)
        return response


def add_result(contract: Contract, response: etree._Element, result: Result) -> None:
    if contract.result is ResultKind.RESULT_OF_CALL:
        error_id = faults.RESULT_OF_CALL_ERROR_IDS.get(result.error_id or "", result.error_id)
        m.result_of_call(response, contract.namespace, Result(result.code, result.text, error_id))
    else:
        m.result_type(
            response, contract.namespace, CORE1 if contract.result is ResultKind.CORE1 else CORE3, result
        )


def _ext(element: etree._Element, *path: str) -> str:
    return m.text(element, *path, q(TYPES3, "extension"))


def _citizen(call: Call, body: etree._Element, *path: str) -> tuple[PersonId, Caller]:
    """The citizen whose identity number is at ``path`` in the request, and the caller acting for them."""
    citizen = PersonId.parse(m.text(body, *path))
    return citizen, call.caller(CallerKind.CITIZEN, citizen=citizen)


def _care_caller(call: Call, body: etree._Element, *path: str) -> Caller:
    """The care system acting for the professional (``HosPersonal``) at ``path`` in the request, with the
    care unit and care giver the professional names."""
    unit = (*path, q(CORE3, "enhet"))
    return call.caller(
        CallerKind.CARE_SYSTEM,
        professional=m.professional(body, *path, q(CORE3, "personal-id")),
        care_unit_id=_ext(body, *unit, q(CORE3, "enhets-id")),
        care_giver_id=_ext(body, *unit, q(CORE3, "vardgivare"), q(CORE3, "vardgivare-id")),
    )


# --- Care systems: RegisterCertificate 3 (rule 1) -------------------------------------------------------

REGISTER_3: Final = Contract("RegisterCertificate", 3, ResultKind.CORE3)


async def register_certificate(call: Call, body: etree._Element) -> Result:
    intyg = body.find(q(REGISTER_3.namespace, "intyg"))
    assert intyg is not None  # schema-checked
    issued = m.certificate_from_intyg(intyg)
    caller = call.caller(
        CallerKind.CARE_SYSTEM,
        professional=m.professional(intyg, q(CORE3, "skapadAv"), q(CORE3, "personal-id")),
        care_unit_id=issued.care_unit.unit_id,
        care_giver_id=issued.care_unit.care_giver_id,
    )
    failures = await _rule_failures(call.business_rules, body, issued)
    registration = await operations.register_certificate(
        call.uow,
        new=operations.NewCertificate(issued, m.document_of(intyg), failures),
        caller=caller,
        now=call.now,
    )
    if registration is rules.Registration.ALREADY_EXISTS:
        # Webcert compares this exact text (rivta/README.md).
        return Result("INFO", "Certificate already exists")
    return OK


async def _rule_failures(
    business_rules: RuleSet | None, body: etree._Element, issued: IssuedCertificate
) -> tuple[RuleFailure, ...]:
    """How the certificate breaks its type's rules, checked before the transaction and in a worker
    thread. Saxon is given the request as this service parsed it (no DTD, no entities) and wrote it out
    again: never the request's own bytes, as Saxon's parser resolves external entities."""
    if business_rules is None or business_rules.rules_for(issued.type_code, issued.type_version) is None:
        return ()
    check = functools.partial(
        business_rules.check,
        etree.tostring(body, encoding="unicode"),
        type_code=issued.type_code,
        version=issued.type_version,
    )
    return await anyio.to_thread.run_sync(check)


# --- GetCertificate 2: HSVARD is the care read (rule 3), INVANA the citizen read (rule 2), a recipient's part
# --- the recipient's read of what was sent to it ------------------------------------------------------------

GET_CERTIFICATE_2: Final = Contract("GetCertificate", 2, ResultKind.NONE)


async def get_certificate(call: Call, body: etree._Element) -> bytes:
    ns = GET_CERTIFICATE_2.namespace
    certificate_id = _ext(body, q(ns, "intygs-id"))
    part_element = body.find(q(ns, "part"))
    assert part_element is not None
    part = m.party(part_element)
    caller = call.caller(part.caller_kind, part=part)
    if part is Party.HSVARD:
        found = await operations.get_certificate_for_care(
            call.uow, certificate_id=certificate_id, caller=caller, now=call.now
        )
    elif part is Party.INVANA:
        found = await operations.get_certificate_for_citizen(
            call.uow, certificate_id=certificate_id, citizen=None, caller=caller, now=call.now
        )
    else:
        found = await operations.get_certificate_for_recipient(
            call.uow, certificate_id=certificate_id, recipient=part, caller=caller, now=call.now
        )
    certificate = found.certificate
    return m.intyg_envelope(
        GET_CERTIFICATE_2.response,
        ns,
        found.document,
        certificate.status_events,
        after=m.related_by_elements(certificate),
    )


# --- ListCertificatesForCare 3 and 1, GetCertificateForCare 1 (rule 3) -----------------------------------

LIST_FOR_CARE_3: Final = Contract("ListCertificatesForCare", 3, ResultKind.NONE)


async def list_certificates_for_care(call: Call, body: etree._Element) -> etree._Element:
    ns = LIST_FOR_CARE_3.namespace
    patient_element = body.find(q(ns, "person-id"))
    assert patient_element is not None
    units = [_ext(e) for e in body.iterfind(q(ns, "enhets-id"))]
    giver = body.find(q(ns, "vardgivar-id"))
    giver_id = _ext(giver) if giver is not None else None
    listed = await operations.list_certificates_for_care(
        call.uow,
        patient=m.person_id(patient_element),
        care_unit_ids=units,
        care_giver_id=giver_id,
        caller=call.caller(
            CallerKind.CARE_SYSTEM, care_unit_id=units[0] if len(units) == 1 else None, care_giver_id=giver_id
        ),
        now=call.now,
    )
    return _listed(LIST_FOR_CARE_3, listed)


def _listed(contract: Contract, listed: list[Certificate]) -> etree._Element:
    """An ``intygsLista`` of the listed certificates, then in its extension point the relations others
    state to them (``messages.related_by_elements``)."""
    response = contract.response()
    lista = m.sub(response, contract.namespace, "intygsLista")
    for certificate in listed:
        m.intyg_from_columns(lista, contract.namespace, certificate)
    for certificate in listed:
        lista.extend(m.related_by_elements(certificate))
    return response


LIST_FOR_CARE_1: Final = Contract("ListCertificatesForCare", 1, ResultKind.CORE1)


async def list_certificates_for_care_1(call: Call, body: etree._Element) -> etree._Element:
    ns = LIST_FOR_CARE_1.namespace
    units = [m.text(e) for e in body.iterfind(q(ns, "enhet"))]
    listed = await operations.list_certificates_for_care(
        call.uow,
        patient=PersonId.parse(m.text(body, q(ns, "person-id"))),
        care_unit_ids=units,
        caller=call.caller(CallerKind.CARE_SYSTEM, care_unit_id=units[0] if len(units) == 1 else None),
        now=call.now,
    )
    response = LIST_FOR_CARE_1.response()
    for certificate in listed:
        m.meta1(response, ns, certificate)
    add_result(LIST_FOR_CARE_1, response, OK)
    return response


GET_FOR_CARE_1: Final = Contract("GetCertificateForCare", 1, ResultKind.CORE1)


async def get_certificate_for_care_1(call: Call, body: etree._Element) -> etree._Element:
    ns = GET_FOR_CARE_1.namespace
    found = await operations.get_certificate_for_care(
        call.uow,
        certificate_id=m.text(body, q(ns, "certificateId")),
        caller=call.caller(CallerKind.CARE_SYSTEM),
        now=call.now,
    )
    response = GET_FOR_CARE_1.response()
    m.meta1(response, ns, found.certificate)
    # ErrorIdType REVOKED: the certificate exists but is revoked; the meta still says so.
    add_result(
        GET_FOR_CARE_1,
        response,
        Result("ERROR", "Certificate is revoked", "REVOKED") if found.certificate.revoked else OK,
    )
    return response


# --- ListCertificatesForCitizen 4 (rule 2) -----------------------------------------------------------------

LIST_FOR_CITIZEN_4: Final = Contract("ListCertificatesForCitizen", 4, ResultKind.NONE, for_citizen=True)


async def list_certificates_for_citizen(call: Call, body: etree._Element) -> etree._Element:
    ns = LIST_FOR_CITIZEN_4.namespace
    part_element = body.find(q(ns, "part"))
    assert part_element is not None
    if m.party(part_element) is not Party.INVANA:
        raise errors.InvalidInput("ListCertificatesForCitizen serves the part INVANA")
    start, end = m.optional_text(body, q(ns, "fromDatum")), m.optional_text(body, q(ns, "tomDatum"))
    citizen, caller = _citizen(call, body, q(ns, "person-id"), q(TYPES3, "extension"))
    listed = await operations.list_certificates_for_citizen(
        call.uow,
        citizen=citizen,
        archived=m.boolean(m.text(body, q(ns, "arkiverade"))),
        types=[m.text(e, q(TYPES3, "code")) for e in body.iterfind(q(ns, "intygTyp"))],
        valid_between=(m.date(start) if start else None, m.date(end) if end else None),
        caller=caller,
        now=call.now,
    )
    return _listed(LIST_FOR_CITIZEN_4, listed)


# --- SetCertificateStatus 2 (rule 4 and recipients' delivery) ----------------------------------------------

SET_STATUS_2: Final = Contract("SetCertificateStatus", 2, ResultKind.CORE3)


async def set_certificate_status(call: Call, body: etree._Element) -> Result:
    ns = SET_STATUS_2.namespace
    part_element, status_element = body.find(q(ns, "part")), body.find(q(ns, "status"))
    assert part_element is not None and status_element is not None
    part = m.party(part_element)
    code = m.status_code(status_element)
    certificate_id = _ext(body, q(ns, "intygs-id"))
    at = m.timestamp(m.text(body, q(ns, "tidpunkt")))
    caller = call.caller(part.caller_kind, part=part)
    if code is StatusCode.SENTTO:
        # The recipient records that it was sent the certificate: a send like any other.
        await operations.send_certificate(
            call.uow,
            certificate_id=certificate_id,
            recipient_id=part.value,
            recipients=call.recipients,
            at=at,
            caller=caller,
            now=call.now,
        )
        return OK
    await operations.set_certificate_status(
        call.uow, certificate_id=certificate_id, party=part, code=code, at=at, caller=caller, now=call.now
    )
    return OK


# --- RevokeCertificate 2 -----------------------------------------------------------------------------------

REVOKE_2: Final = Contract("RevokeCertificate", 2, ResultKind.CORE3)


async def revoke_certificate(call: Call, body: etree._Element) -> Result:
    ns = REVOKE_2.namespace
    patient_element = body.find(q(ns, "patientPerson-id"))
    assert patient_element is not None
    revoked = await operations.revoke_certificate(
        call.uow,
        certificate_id=_ext(body, q(ns, "intygs-id")),
        patient=m.person_id(patient_element),
        caller=_care_caller(call, body, q(ns, "skickatAv")),
        now=call.now,
    )
    return OK if revoked else Result("INFO", "Certificate already revoked")


# --- SendCertificateToRecipient 2: care sends for the patient (rule 3), or the citizen (rule 2) -------------

SEND_TO_RECIPIENT_2: Final = Contract("SendCertificateToRecipient", 2, ResultKind.CORE3)


async def send_certificate_to_recipient(call: Call, body: etree._Element) -> Result:
    """``skickatAv`` says who sends: ``hosPersonal``, a professional through a care system, or
    ``person-id``, the citizen through a portal. The answers follow the national service's: a repeated
    send is INFO, and so is the send of a revoked certificate (README.md, "Recipients")."""
    ns = SEND_TO_RECIPIENT_2.namespace
    patient_element, recipient_element = body.find(q(ns, "patientPerson-id")), body.find(q(ns, "mottagare"))
    sender = body.find(q(ns, "skickatAv"))
    assert patient_element is not None and recipient_element is not None and sender is not None
    recipient = m.party(recipient_element)
    citizen_element = sender.find(q(ns, "person-id"))
    citizen: PersonId | None = None
    if citizen_element is not None:
        citizen = m.person_id(citizen_element)
        caller = call.caller(CallerKind.CITIZEN, citizen=citizen)
    else:
        caller = _care_caller(call, sender, q(ns, "hosPersonal"))
    try:
        _, already_sent = await operations.send_certificate(
            call.uow,
            certificate_id=_ext(body, q(ns, "intygs-id")),
            recipient_id=recipient.value,
            recipients=call.recipients,
            citizen=citizen,
            patient=m.person_id(patient_element),
            caller=caller,
            now=call.now,
        )
    except errors.CertificateRevoked:
        return Result("INFO", "Certificate has been revoked")
    return Result("INFO", f"Certificate already sent to {recipient}") if already_sent else OK


# --- RemoveCertificateForCare 1 (this project's contract; rule 5) ------------------------------------------

REMOVE_FOR_CARE_1: Final = Contract("RemoveCertificateForCare", 1, ResultKind.CORE3, Domain.INTYGSTJANST)


async def remove_certificate_for_care(call: Call, body: etree._Element) -> Result:
    ns = REMOVE_FOR_CARE_1.namespace
    giver = _ext(body, q(ns, "vardgivare-id"))
    await operations.remove_care_copy(
        call.uow,
        certificate_id=_ext(body, q(ns, "intygs-id")),
        care_giver_id=giver,
        caller=call.caller(CallerKind.CARE_SYSTEM, care_giver_id=giver),
        now=call.now,
    )
    return OK


# --- SetConsent 1 and GetConsent 1 (rules 6 and 7) ---------------------------------------------------------

SET_CONSENT_1: Final = Contract(
    "SetConsent", 1, ResultKind.RESULT_OF_CALL, Domain.INSURANCE, for_citizen=True
)


async def set_consent(call: Call, body: etree._Element) -> Result:
    ns = SET_CONSENT_1.namespace
    citizen, caller = _citizen(call, body, q(ns, "personnummer"))
    await operations.set_consent(
        call.uow,
        citizen=citizen,
        given=m.boolean(m.text(body, q(ns, "consent-given"))),
        caller=caller,
        now=call.now,
    )
    return OK


GET_CONSENT_1: Final = Contract(
    "GetConsent",
    1,
    ResultKind.RESULT_OF_CALL,
    Domain.INSURANCE,
    for_citizen=True,
    before_result=(("consent-given", "false"),),
)


async def get_consent(call: Call, body: etree._Element) -> etree._Element:
    ns = GET_CONSENT_1.namespace
    citizen, caller = _citizen(call, body, q(ns, "personnummer"))
    consent = await operations.get_consent(call.uow, citizen=citizen, caller=caller, now=call.now)
    response = GET_CONSENT_1.response()
    m.sub(response, ns, "consent-given", "true" if consent.given else "false")
    add_result(GET_CONSENT_1, response, OK)
    return response


# --- The 2013 citizen contracts for legacy portals: GetCertificate 1, ListCertificates 1,
# --- SetCertificateStatus 1 (rule 2; the same operations as the current contracts) ----------------------

GET_CERTIFICATE_1: Final = Contract(
    "GetCertificate", 1, ResultKind.RESULT_OF_CALL, Domain.INSURANCE, for_citizen=True
)


async def get_certificate_1(call: Call, body: etree._Element) -> etree._Element:
    ns = GET_CERTIFICATE_1.namespace
    citizen, caller = _citizen(call, body, q(ns, "nationalIdentityNumber"))
    found = await operations.get_certificate_for_citizen(
        call.uow,
        certificate_id=m.text(body, q(ns, "certificateId")),
        citizen=citizen,
        caller=caller,
        now=call.now,
    )
    response = GET_CERTIFICATE_1.response()
    if found.certificate.revoked:
        # A revoked certificate is no longer shown to the citizen: INFO, and no body.
        add_result(GET_CERTIFICATE_1, response, Result("INFO", "Certificate is revoked"))
        return response
    m.insurance_meta(response, ns, found.certificate)
    # The certificate travels as opaque content: the document as it was registered.
    m.sub(response, ns, "certificate").append(document.parse(found.document))
    add_result(GET_CERTIFICATE_1, response, OK)
    return response


LIST_CERTIFICATES_1: Final = Contract(
    "ListCertificates", 1, ResultKind.RESULT_OF_CALL, Domain.INSURANCE, for_citizen=True
)


async def list_certificates_1(call: Call, body: etree._Element) -> etree._Element:
    ns = LIST_CERTIFICATES_1.namespace
    citizen, caller = _citizen(call, body, q(ns, "nationalIdentityNumber"))
    start, end = m.optional_text(body, q(ns, "fromDate")), m.optional_text(body, q(ns, "toDate"))
    response = LIST_CERTIFICATES_1.response()
    try:
        listed = await operations.list_certificates_for_citizen(
            call.uow,
            citizen=citizen,
            archived=None,
            types=[m.text(e) for e in body.iterfind(q(ns, "certificateType"))],
            valid_between=(m.date(start) if start else None, m.date(end) if end else None),
            caller=caller,
            now=call.now,
        )
    except errors.ConsentRequired:
        # The 2013 list answers a missing consent with INFO NOCONSENT (DOMAIN.md rule 2).
        add_result(LIST_CERTIFICATES_1, response, faults.NO_CONSENT)
        return response
    for certificate in listed:
        m.insurance_meta(response, ns, certificate)
    add_result(LIST_CERTIFICATES_1, response, OK)
    return response


SET_STATUS_1: Final = Contract("SetCertificateStatus", 1, ResultKind.RESULT_OF_CALL, Domain.INSURANCE)

# The 2013 recipient names, beside the current part codes.
_LEGACY_TARGET: Final = {"FK": Party.FKASSA.value, "TS": Party.TRANSP.value}


async def set_certificate_status_1(call: Call, body: etree._Element) -> Result:
    """SENT: the citizen's portal has sent the certificate on, as REST's send (consent, a recipient
    that takes the type). RECEIVED: the recipient reports receipt (DOMAIN.md: recipients mark
    received), so it is the recipient's act, not the citizen's. Nothing else is set this way."""
    ns = SET_STATUS_1.namespace
    citizen, citizen_caller = _citizen(call, body, q(ns, "nationalIdentityNumber"))
    status, written = m.text(body, q(ns, "status")), m.text(body, q(ns, "target"))
    target = _LEGACY_TARGET.get(written, written)
    certificate_id = m.text(body, q(ns, "certificateId"))
    if status == "SENT":
        await operations.send_certificate(
            call.uow,
            certificate_id=certificate_id,
            citizen=citizen,
            recipient_id=target,
            recipients=call.recipients,
            caller=citizen_caller,
            now=call.now,
        )
        return OK
    party = Party(target) if target in Party.__members__ else None
    if status == "RECEIVED" and party is not None and party.is_recipient:
        at = m.optional_text(body, q(ns, "timestamp"))
        await operations.set_certificate_status(
            call.uow,
            certificate_id=certificate_id,
            party=party,
            code=StatusCode.RECEIV,
            at=m.date_time(at) if at else call.now,
            citizen=citizen,
            caller=call.caller(party.caller_kind, part=party),
            now=call.now,
        )
        return OK
    raise errors.InvalidStatusChange("this status is not set through SetCertificateStatus")


# Each contract served, and its handler.
CONTRACTS: Final[Mapping[Contract, Handler]] = {
    REGISTER_3: register_certificate,
    GET_CERTIFICATE_2: get_certificate,
    LIST_FOR_CARE_3: list_certificates_for_care,
    LIST_FOR_CITIZEN_4: list_certificates_for_citizen,
    SET_STATUS_2: set_certificate_status,
    REVOKE_2: revoke_certificate,
    SEND_TO_RECIPIENT_2: send_certificate_to_recipient,
    LIST_FOR_CARE_1: list_certificates_for_care_1,
    GET_FOR_CARE_1: get_certificate_for_care_1,
    REMOVE_FOR_CARE_1: remove_certificate_for_care,
    SET_CONSENT_1: set_consent,
    GET_CONSENT_1: get_consent,
    GET_CERTIFICATE_1: get_certificate_1,
    LIST_CERTIFICATES_1: list_certificates_1,
    SET_STATUS_1: set_certificate_status_1,
}
