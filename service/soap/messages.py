"""SOAP messages: lxml elements <-> plain values, for every contract served.

Parsing is hardened (no DTD, no entities, no network, no huge trees) and every body is checked against
``contracts/service.xsd`` (compiled once) before it is read here. Contract names live only in ``soap/``.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast
from xml.sax.saxutils import quoteattr

from lxml import etree

from service import document, errors
from service.document import CORE3
from service.model import (
    CareUnit,
    Certificate,
    IssuedCertificate,
    Party,
    PersonId,
    Relation,
    StaffId,
    StatusCode,
    StatusEvent,
)

SOAP_ENV: Final = "http://schemas.xmlsoap.org/soap/envelope/"
REGISTRY: Final = "urn:riv:itintegration:registry:1"
WSA: Final = "http://www.w3.org/2005/08/addressing"
TYPES3: Final = document.TYPES3
CORE1: Final = "urn:riv:clinicalprocess:healthcond:certificate:1"
HEALTHREPORTING2: Final = "urn:riv:insuranceprocess:healthreporting:2"
INSURANCE_CERTIFICATE1: Final = "urn:riv:insuranceprocess:certificate:1"
# This project's own elements, in the ``##other`` extension points of the contracts it serves
# (contracts/README.md, "Relations to a certificate").
OWN_CORE1: Final = "urn:riv:intygstjanst:certificate:1"

PERSONNUMMER_ROOT: Final = "1.2.752.129.2.1.3.1"
SAMORDNINGSNUMMER_ROOT: Final = "1.2.752.129.2.1.3.3"
HSA_ROOT: Final = "1.2.752.129.2.1.4.1"
WORKPLACE_CODE_ROOT: Final = "1.2.752.29.4.71"
PART_CODE_SYSTEM: Final = "769bb12b-bd9f-4203-a5cd-fd14f2eb3b80"
RELATION_CODE_SYSTEM: Final = "c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146"  # KV_RELATION
STATUS_CODE_SYSTEM: Final = "9871cd17-8755-4ed9-b894-ff3729e775a4"

CONTRACTS: Final = Path(__file__).resolve().parents[2] / "contracts"

_PARSER: Final = document.PARSER


def q(namespace: str, name: str) -> str:
    return f"{{{namespace}}}{name}"


class MalformedMessage(Exception):
    """The message is not a SOAP 1.1 envelope with exactly one body element: a ``soap:Client`` fault."""


@dataclass(frozen=True, slots=True)
class Result:
    """A business outcome in a contract's ``result``: OK, INFO with a text, or ERROR with an errorId."""

    code: str
    text: str | None = None
    error_id: str | None = None


OK: Final = Result("OK")


@dataclass(frozen=True, slots=True)
class Envelope:
    header: etree._Element | None
    body: etree._Element


def parse_envelope(data: bytes) -> Envelope:
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError:
        raise MalformedMessage("the message is not well-formed XML") from None
    # lxml-stubs lack DocInfo.doctype; any document type declaration, internal or external, is refused.
    if cast(Any, root.getroottree().docinfo).doctype:
        raise MalformedMessage("a document type declaration is not accepted")
    if root.tag != q(SOAP_ENV, "Envelope"):
        raise MalformedMessage("the message is not a SOAP 1.1 envelope")
    children = [c for c in root if isinstance(c.tag, str)]
    headers = [c for c in children if c.tag == q(SOAP_ENV, "Header")]
    bodies = [c for c in children if c.tag == q(SOAP_ENV, "Body")]
    if len(bodies) != 1 or len(headers) > 1 or len(children) != len(headers) + len(bodies):
        raise MalformedMessage("an envelope holds one optional Header and one Body")
    content = [c for c in bodies[0] if isinstance(c.tag, str)]
    if len(content) != 1:
        raise MalformedMessage("the Body holds exactly one request element")
    return Envelope(headers[0] if headers else None, content[0])


def logical_address(header: etree._Element | None, *, bp20: bool) -> str | None:
    """The addressing header: LogicalAddress (RIVTA BP 2.1) or wsa:To (BP 2.0)."""
    if header is None:
        return None
    text = header.findtext(q(WSA, "To") if bp20 else q(REGISTRY, "LogicalAddress"))
    return text.strip() if text and text.strip() else None


def load_schema() -> etree.XMLSchema:
    """Our own contracts, compiled once at start-up."""
    document = etree.parse(str(CONTRACTS / "service.xsd"), _PARSER)
    return etree.XMLSchema(document)


def envelope(body: etree._Element) -> bytes:
    env = etree.Element(q(SOAP_ENV, "Envelope"), nsmap={"soap": SOAP_ENV})
    etree.SubElement(env, q(SOAP_ENV, "Header"))
    etree.SubElement(env, q(SOAP_ENV, "Body")).append(body)
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


def fault(code: str, message: str) -> bytes:
    """A SOAP 1.1 Fault; ``code`` is ``Client`` or ``Server``."""
    env = etree.Element(q(SOAP_ENV, "Envelope"), nsmap={"soap": SOAP_ENV})
    body = etree.SubElement(env, q(SOAP_ENV, "Body"))
    element = etree.SubElement(body, q(SOAP_ENV, "Fault"))
    etree.SubElement(element, "faultcode").text = f"soap:{code}"
    etree.SubElement(element, "faultstring").text = message
    return etree.tostring(env, xml_declaration=True, encoding="UTF-8")


# ---------------------------------------------------------------------------------------------------
# Reading values


def text(parent: etree._Element, *path: str) -> str:
    """The stripped text at a path that the schema has made sure exists (no path: the element's own)."""
    found = parent.find("/".join(path)) if path else parent
    if found is None or found.text is None:
        return ""
    return found.text.strip()


def optional_text(parent: etree._Element, *path: str) -> str | None:
    found = parent.find("/".join(path))
    return None if found is None or found.text is None else found.text.strip()


def timestamp(value: str) -> dt.datetime:
    try:
        return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S")
    except ValueError:
        raise errors.InvalidInput("a timestamp is YYYY-MM-DDThh:mm:ss and a real time") from None


def date_time(value: str) -> dt.datetime:
    """An ``xs:dateTime`` of the 2013 contracts, kept as the wall-clock time the caller wrote."""
    try:
        return dt.datetime.fromisoformat(value).replace(tzinfo=None)
    except ValueError:
        raise errors.InvalidInput("a time is an xs:dateTime") from None


def date(value: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise errors.InvalidInput("a date is YYYY-MM-DD and a real day") from None


def boolean(value: str) -> bool:
    return value in ("true", "1")


def person_id(element: etree._Element) -> PersonId:
    return PersonId.parse(text(element, q(TYPES3, "extension")))


def professional(parent: etree._Element, *path: str) -> StaffId | PersonId:
    """A professional as the II element at ``path`` (``personal-id``) names them: by personal identity
    number where its root says so, else by the id as given (an HSA id)."""
    extension = text(parent, *path, q(TYPES3, "extension"))
    if text(parent, *path, q(TYPES3, "root")) in (PERSONNUMMER_ROOT, SAMORDNINGSNUMMER_ROOT):
        return PersonId.parse(extension)
    return StaffId(extension)


def party(element: etree._Element) -> Party:
    code = text(element, q(TYPES3, "code"))
    try:
        return Party(code)
    except ValueError:
        raise errors.InvalidInput("unknown part code") from None


def status_code(element: etree._Element) -> StatusCode:
    code = text(element, q(TYPES3, "code"))
    try:
        return StatusCode(code)
    except ValueError:
        raise errors.InvalidInput("unknown status code") from None


def certificate_from_intyg(intyg: etree._Element) -> IssuedCertificate:
    """The list fields of a certificate (core 3 ``Intyg``), read once at registration: with its validity
    and relations (``document.validity``, ``document.relations``), whose errors are invalid input."""

    def c(*names: str) -> str:
        return "/".join(q(CORE3, n) for n in names)

    signed = optional_text(intyg, c("signeringstidpunkt"))
    author = intyg.find(c("skapadAv"))
    unit = intyg.find(c("skapadAv", "enhet"))
    patient = intyg.find(c("patient", "person-id"))
    assert author is not None and unit is not None and patient is not None  # schema-checked
    ext, root = q(TYPES3, "extension"), q(TYPES3, "root")
    # The contract types the id as any string; an empty one would name no certificate.
    certificate_id = text(intyg, c("intygs-id"), ext)
    if not certificate_id:
        raise errors.InvalidInput("a certificate needs a non-empty intygs-id")
    type_code = text(intyg, c("typ"), q(TYPES3, "code"))
    signed_at = timestamp(signed) if signed else None
    valid_from, valid_to = document.validity(intyg, type_code, signed_at)
    return IssuedCertificate(
        id=certificate_id,
        id_root=text(intyg, c("intygs-id"), root),
        type_code=type_code,
        type_code_system=text(intyg, c("typ"), q(TYPES3, "codeSystem")),
        type_display_name=text(intyg, c("typ"), q(TYPES3, "displayName")),
        type_version=text(intyg, c("version")),
        patient=person_id(patient),
        signed_at=signed_at,
        issuer_id=text(author, c("personal-id"), ext),
        issuer_name=text(author, c("fullstandigtNamn")),
        care_unit=CareUnit(
            unit_id=text(unit, c("enhets-id"), ext),
            unit_name=text(unit, c("enhetsnamn")),
            workplace_code=text(unit, c("arbetsplatskod"), ext),
            care_giver_id=text(unit, c("vardgivare", "vardgivare-id"), ext),
            care_giver_name=text(unit, c("vardgivare", "vardgivarnamn")),
        ),
        valid_from=valid_from,
        valid_to=valid_to,
        relations=document.relations(intyg),
    )


# ---------------------------------------------------------------------------------------------------
# Writing values


def sub(parent: etree._Element, namespace: str, name: str, value: str | None = None) -> etree._Element:
    element = etree.SubElement(parent, q(namespace, name))
    if value is not None:
        element.text = value
    return element


def stamp(value: dt.datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%S")


def _id(parent: etree._Element, name: str, root: str, extension: str, namespace: str = CORE3) -> None:
    element = sub(parent, namespace, name)
    sub(element, TYPES3, "root", root)
    sub(element, TYPES3, "extension", extension)


def _code(
    parent: etree._Element,
    name: str,
    code: str,
    system: str,
    display: str | None = None,
    namespace: str = CORE3,
) -> None:
    element = sub(parent, namespace, name)
    sub(element, TYPES3, "code", code)
    sub(element, TYPES3, "codeSystem", system)
    if display:
        sub(element, TYPES3, "displayName", display)


def status_element(event: StatusEvent) -> etree._Element:
    return _status(event.party.value, event.code.value, stamp(event.at))


def _status(party: str, code: str, at: str) -> etree._Element:
    element = etree.Element(q(CORE3, "status"))
    _code(element, "part", party, PART_CODE_SYSTEM)
    _code(element, "status", code, STATUS_CODE_SYSTEM)
    sub(element, CORE3, "tidpunkt", at)
    return element


# ``status_element`` serialised once with a hole for each value, so that a get writes an event's bytes
# without building its tree. The values need no escaping: two enum values and a time in digits.
_HOLE: Final = "\ue000"
_STATUS_PIECES: Final = etree.tostring(_status(_HOLE, _HOLE, _HOLE), encoding="UTF-8").split(_HOLE.encode())


def status_bytes(event: StatusEvent) -> bytes:
    """``etree.tostring(status_element(event), encoding="UTF-8")``, written from its pieces."""
    start, after_party, after_code, end = _STATUS_PIECES
    party, code, at = event.party.value.encode(), event.code.value.encode(), stamp(event.at).encode()
    return b"".join((start, party, after_party, code, after_code, at, end))


def person_root(patient: PersonId) -> str:
    return SAMORDNINGSNUMMER_ROOT if patient.is_coordination_number else PERSONNUMMER_ROOT


def intyg_from_columns(parent: etree._Element, namespace: str, certificate: Certificate) -> None:
    """A core 3 ``Intyg`` with the header of a listed certificate, built from columns only.

    Lists never parse stored documents: fields a list does not hold (the patient's name and address,
    the unit's address, the answers) are left empty where the contract requires the element.
    """
    intyg = sub(parent, namespace, "intyg")
    _id(intyg, "intygs-id", certificate.id_root, certificate.id)
    _code(intyg, "typ", certificate.type_code, certificate.type_code_system, certificate.type_display_name)
    sub(intyg, CORE3, "version", certificate.type_version)
    if certificate.signed_at is not None:
        sub(intyg, CORE3, "signeringstidpunkt", stamp(certificate.signed_at))
    patient = sub(intyg, CORE3, "patient")
    _id(patient, "person-id", person_root(certificate.patient), certificate.patient.value)
    for name in ("fornamn", "efternamn", "postadress", "postnummer", "postort"):
        sub(patient, CORE3, name, "")
    author = sub(intyg, CORE3, "skapadAv")
    _id(author, "personal-id", HSA_ROOT, certificate.issuer_id)
    sub(author, CORE3, "fullstandigtNamn", certificate.issuer_name)
    unit = sub(author, CORE3, "enhet")
    _id(unit, "enhets-id", HSA_ROOT, certificate.care_unit.unit_id)
    _id(unit, "arbetsplatskod", WORKPLACE_CODE_ROOT, certificate.care_unit.workplace_code)
    sub(unit, CORE3, "enhetsnamn", certificate.care_unit.unit_name)
    for name in ("postadress", "postnummer", "postort", "telefonnummer"):
        sub(unit, CORE3, name, "")
    giver = sub(unit, CORE3, "vardgivare")
    _id(giver, "vardgivare-id", HSA_ROOT, certificate.care_unit.care_giver_id)
    sub(giver, CORE3, "vardgivarnamn", certificate.care_unit.care_giver_name)
    for relation in certificate.relations:
        element = sub(intyg, CORE3, "relation")
        _code(element, "typ", relation.kind.value, RELATION_CODE_SYSTEM)
        _id(element, "intygs-id", relation.certificate_root, relation.certificate_id)
    intyg.extend(status_element(e) for e in certificate.status_events)


def related_by_elements(certificate: Certificate) -> list[etree._Element]:
    """The relations other certificates state to ``certificate``, as this project's ``relation`` elements
    for a response's ``##other`` extension point: ``intyg/relation`` cannot say them, as it reads "this
    certificate replaces that one" (contracts/README.md, "Relations to a certificate")."""
    return [_related_by(relation, certificate) for relation in certificate.related_by]


def _related_by(relation: Relation, certificate: Certificate) -> etree._Element:
    element = etree.Element(q(OWN_CORE1, "relation"), nsmap={"it": OWN_CORE1})
    _id(element, "fran-intygs-id", relation.certificate_root, relation.certificate_id, OWN_CORE1)
    _code(element, "typ", relation.kind.value, RELATION_CODE_SYSTEM, namespace=OWN_CORE1)
    _id(element, "till-intygs-id", certificate.id_root, certificate.id, OWN_CORE1)
    return element


# Elements of core 3 ``Intyg`` that follow ``status`` in its sequence.
_AFTER_STATUS: Final = frozenset(
    {q(CORE3, "svar"), q("urn:riv:clinicalprocess:healthcond:certificate:3.2", "underskrift")}
)


def document_of(intyg: etree._Element) -> bytes:
    """The certificate as received (the ``intyg`` element with its namespaces and comments), framed with
    the layout that lets a get answer without parsing it (``document.Layout``, ``intyg_envelope``)."""
    # Parsed again, so that every namespace the element has in scope is declared on the root.
    root = etree.fromstring(etree.tostring(intyg, encoding="UTF-8"), _PARSER)
    children = list(root)
    # Serialised with a marker after the start tag, before each child and before the end tag; the parser
    # removed every processing instruction, and the target is random, so no content can hold a marker.
    target = "splice" + secrets.token_hex(16)
    for child in children:
        child.addprevious(etree.ProcessingInstruction(target))
    first = etree.ProcessingInstruction(target)
    first.tail, root.text = root.text, None
    root.insert(0, first)
    root.append(etree.ProcessingInstruction(target))
    marker = etree.tostring(etree.ProcessingInstruction(target))
    # The start tag, the root's text, each child with its tail, the end tag.
    pieces = etree.tostring(root, encoding="UTF-8").split(marker)
    ends = list(itertools.accumulate(map(len, pieces)))
    before: list[document.Range] = [(ends[0], ends[1])]
    after: list[document.Range] = []
    ranges = before
    for child, start, end in zip(children, ends[1:], ends[2:], strict=False):
        if child.tag == q(CORE3, "status"):
            continue
        if ranges is before and child.tag in _AFTER_STATUS:
            ranges = after
        if ranges and ranges[-1][1] == start:
            ranges[-1] = (ranges[-1][0], end)
        else:
            ranges.append((start, end))
    prefix = "ns"
    while prefix in root.nsmap:
        prefix += "x"
    declarations = "".join(f" xmlns{':' + p if p else ''}={quoteattr(uri)}" for p, uri in root.nsmap.items())
    layout = document.Layout(prefix, declarations, tuple(before), tuple(after))
    return document.framed(root, b"".join(pieces), layout)


@functools.cache
def _around_last_child(response: Callable[[], etree._Element]) -> tuple[bytes, bytes]:
    """``envelope(response())`` cut where a last child of the response goes: the same bytes for every
    answer of a contract, so written once."""
    element = response()
    marker = etree.ProcessingInstruction("child")
    element.append(marker)
    head, tail = envelope(element).split(etree.tostring(marker))
    return head, tail


def intyg_envelope(
    response: Callable[[], etree._Element],
    namespace: str,
    stored: bytes,
    events: Iterable[StatusEvent],
    after: Iterable[etree._Element] = (),
) -> bytes:
    """``envelope(response())`` with the stored certificate as the response's last child, an ``intyg``
    of ``namespace`` holding the status history now: written as bytes around the stored ones. ``after``
    follows it, in the response's extension point."""
    content, frame = document.unframed(stored)
    if frame is None:
        # Registered before documents had a layout: rebuilt as a tree.
        element = response()
        element.append(intyg_from_document(content, q(namespace, "intyg"), events))
        element.extend(after)
        return envelope(element)
    layout = frame.layout
    head, tail = _around_last_child(response)
    tag = f"{layout.prefix}:intyg"
    return b"".join(
        (
            head,
            f"<{tag} xmlns:{layout.prefix}={quoteattr(namespace)}{layout.declarations}>".encode(),
            *(content[start:end] for start, end in layout.before),
            *(status_bytes(e) for e in events),
            *(content[start:end] for start, end in layout.after),
            f"</{tag}>".encode(),
            *(etree.tostring(e, encoding="UTF-8") for e in after),
            tail,
        )
    )


def intyg_from_document(content: bytes, name: str, events: Iterable[StatusEvent]) -> etree._Element:
    """The stored certificate under a response's element name, with its status history now, as a tree."""
    stored = document.parse(content)
    intyg = etree.Element(name, nsmap={k: v for k, v in stored.nsmap.items() if k is not None} or None)
    intyg.text = stored.text
    position = None
    for child in list(stored):
        if child.tag == q(CORE3, "status"):
            continue
        if position is None and child.tag in _AFTER_STATUS:
            position = len(intyg)
        intyg.append(child)
    statuses = [status_element(e) for e in events]
    if position is None:
        intyg.extend(statuses)
    else:
        for offset, element in enumerate(statuses):
            intyg.insert(position + offset, element)
    return intyg


def result_type(parent: etree._Element, namespace: str, core: str, result: Result) -> None:
    """A core 3 or core 1 ``ResultType``: resultCode, resultText, errorId (in that order)."""
    element = sub(parent, namespace, "result")
    sub(element, core, "resultCode", result.code)
    if result.text:
        sub(element, core, "resultText", result.text)
    if result.error_id:
        sub(element, core, "errorId", result.error_id)


def result_of_call(parent: etree._Element, namespace: str, result: Result) -> None:
    """The insuranceprocess ``ResultOfCall``: resultCode, infoText, errorId, errorText."""
    element = sub(parent, namespace, "result")
    sub(element, HEALTHREPORTING2, "resultCode", result.code)
    if result.code == "INFO" and result.text:
        sub(element, HEALTHREPORTING2, "infoText", result.text)
    if result.error_id:
        sub(element, HEALTHREPORTING2, "errorId", result.error_id)
        if result.text:
            sub(element, HEALTHREPORTING2, "errorText", result.text)


# The 2013 status words of core 1.0 ``StatusType`` for our status codes.
LEGACY_STATUS: Final = {
    StatusCode.RECEIV: "RECEIVED",
    StatusCode.SENTTO: "SENT",
    StatusCode.CANCEL: "CANCELLED",
    StatusCode.DELETE: "DELETED",
    StatusCode.RESTOR: "RESTORED",
}


def meta1(parent: etree._Element, namespace: str, certificate: Certificate) -> None:
    """A core 1.0 ``CertificateMetaType`` built from columns. Only the care reads answer with it, and
    they find only certificates care may read (rule 3): ``available`` is always true. ``validFrom`` and
    ``validTo``, optional, are the validity where core 1's ``Datum`` can hold it (years 1000 to 2999)."""
    meta = sub(parent, namespace, "meta")
    sub(meta, CORE1, "certificateId", certificate.id)
    sub(meta, CORE1, "certificateType", certificate.type_code)
    for name, day in (("validFrom", certificate.valid_from), ("validTo", certificate.valid_to)):
        if day is not None and 1000 <= day.year <= 2999:
            sub(meta, CORE1, name, day.isoformat())
    sub(meta, CORE1, "issuerName", certificate.issuer_name or "-")
    sub(meta, CORE1, "facilityName", certificate.care_unit.unit_name or "-")
    sub(meta, CORE1, "signDate", stamp(certificate.signed_at or certificate.registered_at))
    sub(meta, CORE1, "available", "true")
    for event in certificate.status_events:
        status = sub(meta, CORE1, "status")
        sub(status, CORE1, "target", event.party.value)
        sub(status, CORE1, "type", LEGACY_STATUS[event.code])
        sub(status, CORE1, "timestamp", stamp(event.at))


# The 2013 insuranceprocess StatusType knows no archive or restore: those events are not listed there.
INSURANCE_STATUS: Final = {
    StatusCode.RECEIV: "RECEIVED",
    StatusCode.SENTTO: "SENT",
    StatusCode.CANCEL: "CANCELLED",
}


def insurance_meta(parent: etree._Element, namespace: str, certificate: Certificate) -> None:
    """A 2013 insuranceprocess ``CertificateMetaType``, built from columns.

    ``validFrom``/``validTo`` are required dates: the certificate's validity (the period it states, else
    its signing day), and for one that has none, the day it was registered. ``available`` is the
    citizen's direct view: false while archived (rule 4).
    """
    ns = INSURANCE_CERTIFICATE1
    signed = (certificate.signed_at or certificate.registered_at).date()
    meta = sub(parent, namespace, "meta")
    sub(meta, ns, "certificateId", certificate.id)
    sub(meta, ns, "certificateType", certificate.type_code)
    sub(meta, ns, "validFrom", (certificate.valid_from or signed).isoformat())
    sub(meta, ns, "validTo", (certificate.valid_to or signed).isoformat())
    sub(meta, ns, "issuerName", certificate.issuer_name)
    sub(meta, ns, "facilityName", certificate.care_unit.unit_name)
    sub(meta, ns, "signDate", signed.isoformat())
    sub(meta, ns, "available", "true" if certificate.citizen_available else "false")
    for event in certificate.status_events:
        if event.code in INSURANCE_STATUS:
            status = sub(meta, ns, "status")
            sub(status, ns, "target", event.party.value)
            sub(status, ns, "type", INSURANCE_STATUS[event.code])
            sub(status, ns, "timestamp", stamp(event.at))
