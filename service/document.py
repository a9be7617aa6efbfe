"""The certificate document (a core 3 ``Intyg`` as registered), read for the citizen's structured view:
its answers (``svar``) and their parts (``delsvar``); and at registration (and by migration 0007, from
stored documents) for what the lists show of it: its validity period and its relations.

Read only by a get of one certificate, never on a list path. The document was checked against the
contract when it was registered; it is parsed here with the same hardened settings.

What the store seals is a frame holding the document's ``Layout`` and its answers, then the document's
bytes. The layout says where GetCertificate splices in the current status history, the answers are the
REST get's structured view; both are found once, at registration, so that a get never parses the
document ("never parse stored XML on a hot path"). Documents stored before frames are the bare bytes,
and those stored before answers were framed have a layout only; ``unframed`` tells them apart, and
their answers are read from the document itself.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Final

from lxml import etree

from service import errors
from service.certificate_type import TYPES, Validity
from service.model import Relation, RelationKind, require_certificate_id

# The namespace of core 3 ``Intyg``; the SOAP adapter writes the certificates it answers with in it too.
CORE3: Final = "urn:riv:clinicalprocess:healthcond:certificate:3"
TYPES3: Final = "urn:riv:clinicalprocess:healthcond:certificate:types:3"

# The one hardened parser for XML from outside: entities are never expanded, nothing is fetched, and
# depth is bounded by libxml2 itself (256 without huge_tree). The SOAP adapter parses with it too.
PARSER: Final = etree.XMLParser(
    resolve_entities=False,
    no_network=True,
    load_dtd=False,
    dtd_validation=False,
    huge_tree=False,
    remove_pis=True,
)

Value = str | dict[str, "Value"]


@dataclass(frozen=True, slots=True)
class Part:
    id: str
    value: Value


@dataclass(frozen=True, slots=True)
class Answer:
    id: str
    instance: int | None
    parts: tuple[Part, ...]


def _value(element: etree._Element) -> Value:
    """A part is text, or (a code, a period, a quantity...) elements whose leaves are text."""
    children = [c for c in element if isinstance(c.tag, str)]
    if not children:
        return (element.text or "").strip()
    return {etree.QName(c).localname: _value(c) for c in children}


Range = tuple[int, int]


@dataclass(frozen=True, slots=True)
class Layout:
    """The document's root as a get renames it, and the byte ranges of its content around the status
    history: ``before`` it and ``after`` it, without the document's own ``status`` elements."""

    prefix: str  # a prefix the document does not declare, for the root's new name
    declarations: str  # the root's namespace declarations, as attributes (its children use them)
    before: tuple[Range, ...]
    after: tuple[Range, ...]


# XML cannot begin with NUL (it is no XML character), so no bare document starts like a frame. Version 1
# holds the layout, version 2 the layout and the answers; both have the same length.
_FRAME: Final = b"\x00layout:2\n"
_FRAME_WITHOUT_ANSWERS: Final = b"\x00layout:1\n"


@dataclass(frozen=True, slots=True)
class Frame:
    layout: Layout
    answers: tuple[Answer, ...] | None  # None: framed before answers were


def framed(intyg: etree._Element, content: bytes, layout: Layout) -> bytes:
    """``content``, the serialised ``intyg``, behind the frame that lets a get answer without parsing it."""
    answers = [[a.id, a.instance, [[p.id, p.value] for p in a.parts]] for a in _answers(intyg)]
    header = [layout.prefix, layout.declarations, layout.before, layout.after, answers]
    return _FRAME + json.dumps(header, ensure_ascii=True).encode("ascii") + b"\n" + content


def unframed(stored: bytes) -> tuple[bytes, Frame | None]:
    """The document as registered, and its frame unless it was stored before frames were."""
    if not stored.startswith((_FRAME, _FRAME_WITHOUT_ANSWERS)):
        return stored, None
    end = stored.index(b"\n", len(_FRAME))
    prefix, declarations, before, after, *rest = json.loads(stored[len(_FRAME) : end])
    layout = Layout(prefix, declarations, tuple((a, b) for a, b in before), tuple((a, b) for a, b in after))
    answers = (
        tuple(
            Answer(i, instance, tuple(Part(p, value) for p, value in parts)) for i, instance, parts in rest[0]
        )
        if rest
        else None
    )
    return stored[end + 1 :], Frame(layout, answers)


def content(stored: bytes) -> bytes:
    return unframed(stored)[0]


def parse(stored: bytes) -> etree._Element:
    """A stored certificate document, for a get (never on a list path)."""
    return etree.fromstring(content(stored), PARSER)


def answers(stored: bytes) -> tuple[Answer, ...]:
    """The stored certificate's answers, from its frame; parsed from the document if stored before."""
    content, frame = unframed(stored)
    if frame is not None and frame.answers is not None:
        return frame.answers
    return _answers(etree.fromstring(content, PARSER))


def _answers(intyg: etree._Element) -> tuple[Answer, ...]:
    found = []
    for answer in intyg.iterfind(f"{{{CORE3}}}svar"):
        instance = answer.findtext(f"{{{CORE3}}}instans")
        parts = tuple(Part(p.get("id", ""), _value(p)) for p in answer.iterfind(f"{{{CORE3}}}delsvar"))
        found.append(Answer(answer.get("id", ""), int(instance) if instance else None, parts))
    return tuple(found)


# ``types:3 DateType``: an xs:date written YYYY-MM-DD, without a zone.
_DATE: Final = re.compile(r"\d{4}-\d\d-\d\d", re.ASCII)


def _day(element: etree._Element, name: str, where: str) -> dt.date:
    text = (element.findtext(f"{{{TYPES3}}}{name}") or "").strip()
    try:
        if _DATE.fullmatch(text):
            return dt.date.fromisoformat(text)
    except ValueError:
        pass
    raise errors.InvalidInput(f"{where}: the period's {name} is not a day written YYYY-MM-DD")


def period(intyg: etree._Element, validity: Validity) -> tuple[dt.date, dt.date] | None:
    """The period a certificate of a type with ``validity`` states: the earliest start and the latest end
    over every answer that states one (the sick-leave periods may have gaps between them); None where the
    type states no period or the certificate has no such answer (whether it must is the type's business
    rules'). An answer without its period, or a period that is not two days in order, is ``InvalidInput``.
    """
    if validity.answer is None:
        return None
    answer_id, part_id = validity.answer
    starts, ends = [], []
    for answer in intyg.iterfind(f"{{{CORE3}}}svar[@id='{answer_id}']"):
        where = f"answer {answer_id}"
        parts = answer.findall(f"{{{CORE3}}}delsvar[@id='{part_id}']/{{{TYPES3}}}datePeriod")
        if len(parts) != 1:
            raise errors.InvalidInput(f"{where} states its period in one {part_id} datePeriod")
        start, end = _day(parts[0], "start", where), _day(parts[0], "end", where)
        if end < start:
            raise errors.InvalidInput(f"{where}: the period ends before it starts")
        starts.append(start)
        ends.append(end)
    return (min(starts), max(ends)) if starts else None


def validity(
    intyg: etree._Element, type_code: str, signed: dt.datetime | None
) -> tuple[dt.date | None, dt.date | None]:
    """A certificate's validity (``model.IssuedCertificate``): the period it states where its type states
    one, else the day it was signed; none where it states neither. A type the service does not know
    states no period."""
    known = TYPES.get(type_code)
    stated = period(intyg, known.validity) if known is not None else None
    if stated is not None:
        return stated
    day = signed.date() if signed is not None else None
    return day, day


def relations(intyg: etree._Element) -> tuple[Relation, ...]:
    """The relations a certificate states (``relation``: ``typ/code`` and ``intygs-id``), each once, by
    code and id (as the store reads them back). A code KV_RELATION does not have, an id that can be no
    certificate's or the certificate's own is ``InvalidInput``: the national service, too, takes only its
    known codes."""
    own = (intyg.findtext(f"{{{CORE3}}}intygs-id/{{{TYPES3}}}extension") or "").strip()
    found: dict[tuple[RelationKind, str], Relation] = {}
    for relation in intyg.iterfind(f"{{{CORE3}}}relation"):
        code = (relation.findtext(f"{{{CORE3}}}typ/{{{TYPES3}}}code") or "").strip()
        try:
            kind = RelationKind(code)
        except ValueError:
            raise errors.InvalidInput(
                "a relation's code is one of ERSATT, KOMPLT, FRLANG and KOPIA"
            ) from None
        other = require_certificate_id(
            (relation.findtext(f"{{{CORE3}}}intygs-id/{{{TYPES3}}}extension") or "").strip()
        )
        if other == own:
            raise errors.InvalidInput("a certificate cannot relate to itself")
        root = (relation.findtext(f"{{{CORE3}}}intygs-id/{{{TYPES3}}}root") or "").strip()
        found.setdefault((kind, other), Relation(kind, other, root))
    return tuple(found[key] for key in sorted(found))
