"""The stored certificate document (a core 3 ``Intyg`` as registered), read for the citizen's
structured view: its answers (``svar``) and their parts (``delsvar``).

Read only by a get of one certificate, never on a list path. The document was checked against the
contract when it was registered; it is parsed here with the same hardened settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from lxml import etree

CORE3: Final = "{urn:riv:clinicalprocess:healthcond:certificate:3}"

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


def parse(document: bytes) -> etree._Element:
    """A stored certificate document, for a get (never on a list path)."""
    return etree.fromstring(document, PARSER)


def answers(document: bytes) -> tuple[Answer, ...]:
    intyg = parse(document)
    found = []
    for answer in intyg.iterfind(f"{CORE3}svar"):
        instance = answer.findtext(f"{CORE3}instans")
        parts = tuple(Part(p.get("id", ""), _value(p)) for p in answer.iterfind(f"{CORE3}delsvar"))
        found.append(Answer(answer.get("id", ""), int(instance) if instance else None, parts))
    return tuple(found)
