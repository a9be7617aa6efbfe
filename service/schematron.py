"""A compiler of ISO Schematron (query binding ``xslt2``) to an XSLT 3.0 stylesheet that writes SVRL.

Why our own: the national business rules of the certificate types are ISO Schematron files
(``service/business_rules.py``), and an XSLT processor runs Schematron only once it is compiled to
XSLT. The maintained compilers (SchXslt, the ISO skeleton's XSLT 2 stylesheets) are not published on
any package registry this project installs from, and lxml's ``isoschematron`` has only the XSLT 1
skeleton, which cannot compile ``queryBinding='xslt2'``. The rule files use a small subset of the
language, so this module compiles exactly that subset and refuses everything else
(``UnsupportedSchematron``), so that a rule file using more fails at start instead of being checked
wrongly:

- ``schema`` (``queryBinding`` xslt2 or xslt3), ``title``, ``ns``;
- ``let`` in the schema, a pattern or a rule;
- ``pattern`` with its ``id``; ``rule`` with a ``context``, or abstract (``abstract="true"`` and an
  ``id``), and ``extends`` of an abstract rule;
- ``assert`` whose message is text and ``value-of``.

Not ``report``, ``phase``, ``include``, ``diagnostics``, ``name``, abstract patterns, nor any element of
another namespace (an embedded ``xsl:function``, say).

Semantics are ISO/IEC 19757-3's, as the ISO skeleton and SchXslt implement them: each pattern is a
pass of its own over the whole document (a mode of the stylesheet); within a pattern, a node is the
context of the first rule, in document order, whose context matches it, and of no other; an abstract
rule's lets and asserts are checked where a rule ``extends`` it, in that rule's context; a schema's or
pattern's ``let`` is evaluated once, with the document as its context, and a rule's for each node it
fires on. A failed assertion is reported with the XPath of its context node (``path()``).

One addition: each assertion is evaluated in ``xsl:try``, so that a test that cannot be evaluated on a
document (``xs:date('x')``: upstream's rules cast values without checking some) is reported as that
rule failing, with the error's code, rather than ending the whole check, and the processor prints
nothing about it: its message would quote the value.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Final, NamedTuple
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

SCHEMATRON: Final = "http://purl.oclc.org/dsdl/schematron"
SVRL: Final = "http://purl.oclc.org/dsdl/svrl"
XSL: Final = "http://www.w3.org/1999/XSL/Transform"
XS: Final = "http://www.w3.org/2001/XMLSchema"
ERR: Final = "http://www.w3.org/2005/xqt-errors"
_XSI: Final = "http://www.w3.org/2001/XMLSchema-instance"

# Each element of the subset, and the attributes it may have (besides xml: and xsi: ones, which say
# nothing of what is checked).
_SUBSET: Final[Mapping[str, frozenset[str]]] = {
    "schema": frozenset({"queryBinding", "schemaVersion"}),
    "title": frozenset(),
    "ns": frozenset({"prefix", "uri"}),
    "let": frozenset({"name", "value"}),
    "pattern": frozenset({"id"}),
    "rule": frozenset({"context", "id", "abstract"}),
    "extends": frozenset({"rule"}),
    "assert": frozenset({"test", "id"}),
    "value-of": frozenset({"select"}),
}
_QUERY_BINDINGS: Final = frozenset({"xslt2", "xslt3"})
# A pattern's templates outrank the pass's default template; within a pattern, earlier rules outrank later.
_RULE_PRIORITY: Final = 1000
# The parser of rule files: they come from the operator's configured directory, but are parsed as
# strictly as any input (no entities, nothing fetched).
_PARSER: Final = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
_Q_NAMES: Final = re.compile(r"Q\{[^}]*\}")


class UnsupportedSchematron(ValueError):
    """The rule file is not ISO Schematron this compiler handles: what and where, in one line."""


class Failure(NamedTuple):
    """A failed assertion: the id of its pattern, where (an XPath without namespaces, e.g.
    ``/RegisterCertificate[1]/intyg[1]/svar[7]``) and its message, whitespace normalised."""

    pattern: str
    location: str
    message: str


def _s(name: str) -> str:
    return f"{{{SCHEMATRON}}}{name}"


def _text(value: str | None) -> str:
    """A message's literal text, kept whole: XSLT would drop a text node of only spaces between two values."""
    return f"<xsl:text>{escape(value)}</xsl:text>" if value else ""


def _literal_in_template(value: str) -> str:
    """Text placed in an attribute value template, where braces are doubled to stay literal."""
    return quoteattr(value.replace("{", "{{").replace("}", "}}"))


def _required(element: etree._Element, name: str) -> str:
    value = element.get(name)
    if value is None or not value.strip():
        raise UnsupportedSchematron(
            f"{etree.QName(element).localname} at line {element.sourceline} needs @{name}"
        )
    return value


def _check_subset(root: etree._Element) -> None:
    for element in root.iter():
        if not isinstance(element.tag, str):
            continue  # comments and processing instructions say nothing
        name = etree.QName(element)
        if name.namespace != SCHEMATRON or name.localname not in _SUBSET:
            raise UnsupportedSchematron(f"element {name.text} at line {element.sourceline} is not supported")
        for attribute in element.attrib:
            attribute_name = etree.QName(attribute)
            if attribute_name.namespace in ("http://www.w3.org/XML/1998/namespace", _XSI):
                continue
            if (
                attribute_name.namespace is not None
                or attribute_name.localname not in _SUBSET[name.localname]
            ):
                raise UnsupportedSchematron(
                    f"attribute {attribute_name.text} of {name.localname} at line {element.sourceline} "
                    "is not supported"
                )


def _steps(path: str) -> list[str]:
    """The last step of each alternative of an XPath pattern, its predicates and quoted text removed."""
    plain, depth, quote = [], 0, ""
    for char in path:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
        elif depth == 0:
            plain.append(char)
    return [alternative.rsplit("/", 1)[-1].strip() for alternative in "".join(plain).split("|")]


_ELEMENT_STEP: Final = re.compile(
    r"^(?:(?:child|descendant|descendant-or-self|self)::)?(?:[\w.-]+:)?(?:[\w.-]+|\*)$|^element\(.*\)$"
)


def _element_context(rule: etree._Element) -> str:
    """A rule's context, which must match elements (or the document, ``/``): a pass visits only those,
    as visiting every attribute and text node too costs half as much again, and no rule file has needed
    them. A context that could match other nodes is refused."""
    context = _required(rule, "context")
    if context.strip() != "/" and not all(_ELEMENT_STEP.match(step) for step in _steps(context)):
        raise UnsupportedSchematron(
            f"rule at line {rule.sourceline}: its context {context!r} may match nodes other than elements"
        )
    return context


def to_xslt(schema: bytes) -> str:
    """The XSLT 3.0 stylesheet that checks a document against the Schematron ``schema`` and writes SVRL
    (its active patterns and failed assertions), or ``UnsupportedSchematron``."""
    try:
        root = etree.fromstring(schema, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise UnsupportedSchematron(f"not well-formed XML: {exc}") from None
    if root.tag != _s("schema"):
        raise UnsupportedSchematron("the root is not an ISO Schematron schema")
    _check_subset(root)
    binding = root.get("queryBinding", "xslt")
    if binding not in _QUERY_BINDINGS:
        raise UnsupportedSchematron(f"queryBinding {binding!r} is not supported (xslt2 or xslt3)")
    return "".join(_Stylesheet(root).lines())


class _Stylesheet:
    def __init__(self, root: etree._Element) -> None:
        self.root = root
        self.namespaces = {
            _required(ns, "prefix"): _required(ns, "uri") for ns in root.iterchildren(_s("ns"))
        }
        # The ISO skeleton's XSLT 2 stylesheets declare xs whatever the schema says; upstream's
        # fk7263sit.sch relies on it.
        self.namespaces.setdefault("xs", XS)
        for prefix, uri in (("xsl", XSL), ("svrl", SVRL), ("err", ERR)):
            if self.namespaces.get(prefix, uri) != uri:
                raise UnsupportedSchematron(f"the prefix {prefix} is the compiled stylesheet's own")
        self.abstract: dict[str, etree._Element] = {}
        for rule in root.iter(_s("rule")):
            if self._is_abstract(rule):
                name = _required(rule, "id")
                if name in self.abstract:
                    raise UnsupportedSchematron(
                        f"abstract rule {name} at line {rule.sourceline} is declared twice"
                    )
                self.abstract[name] = rule
        self.patterns = list(root.iterchildren(_s("pattern")))

    @staticmethod
    def _is_abstract(rule: etree._Element) -> bool:
        abstract = rule.get("abstract", "false")
        if abstract not in ("true", "false"):
            raise UnsupportedSchematron(f"rule at line {rule.sourceline}: abstract must be true or false")
        if abstract == "true" and rule.get("context") is not None:
            raise UnsupportedSchematron(f"abstract rule at line {rule.sourceline} has a context")
        return abstract == "true"

    def lines(self) -> Iterator[str]:
        declarations = "".join(f" xmlns:{prefix}={quoteattr(uri)}" for prefix, uri in self.namespaces.items())
        excluded = " ".join(["svrl", "err", *self.namespaces])
        yield (
            f'<xsl:stylesheet version="3.0" xmlns:xsl="{XSL}" xmlns:svrl="{SVRL}" xmlns:err="{ERR}"'
            f'{declarations} exclude-result-prefixes="{excluded}">\n'
        )
        yield '<xsl:output method="xml" indent="no"/>\n'
        yield from self._global_lets()
        yield '<xsl:template match="/">\n<svrl:schematron-output>\n'
        for index, pattern in enumerate(self.patterns):
            if self._concrete_rules(pattern):
                yield f"<svrl:active-pattern id={_literal_in_template(self._pattern_id(index, pattern))}/>\n"
                yield f'<xsl:apply-templates select="." mode="p{index}"/>\n'
        yield "</svrl:schematron-output>\n</xsl:template>\n"
        for index, pattern in enumerate(self.patterns):
            yield from self._pass(index, pattern)
        yield "</xsl:stylesheet>\n"

    @staticmethod
    def _pattern_id(index: int, pattern: etree._Element) -> str:
        return pattern.get("id") or f"pattern {index + 1}"

    def _global_lets(self) -> Iterator[str]:
        """The schema's and patterns' lets, evaluated with the document as context. One name twice would
        need a scope per pattern, which no rule file has needed: refused."""
        seen: set[str] = set()
        lets = [*self.root.iterchildren(_s("let"))]
        lets += [let for pattern in self.patterns for let in pattern.iterchildren(_s("let"))]
        for let in lets:
            name = _required(let, "name")
            if name in seen:
                raise UnsupportedSchematron(f"let {name} at line {let.sourceline} is declared twice")
            seen.add(name)
            yield f"<xsl:variable name={quoteattr(name)} select={quoteattr(_required(let, 'value'))}/>\n"

    def _concrete_rules(self, pattern: etree._Element) -> list[etree._Element]:
        return [rule for rule in pattern.iterchildren(_s("rule")) if not self._is_abstract(rule)]

    def _pass(self, index: int, pattern: etree._Element) -> Iterator[str]:
        """One pattern's pass: the document and every element are visited (``_element_context``); the
        first rule whose context matches fires."""
        rules = self._concrete_rules(pattern)
        if not rules:
            return
        mode = f"p{index}"
        visit = f'<xsl:apply-templates select="*" mode="{mode}"/>\n'
        yield f'<xsl:template match="document-node()|element()" mode="{mode}" priority="-1">\n{visit}</xsl:template>\n'
        for position, rule in enumerate(rules):
            context = _element_context(rule)
            priority = _RULE_PRIORITY + len(rules) - position
            yield f'<xsl:template match={quoteattr(context)} mode="{mode}" priority="{priority}">\n'
            yield from self._rule_body(rule, seen=())
            yield visit
            yield "</xsl:template>\n"

    def _rule_body(self, rule: etree._Element, *, seen: tuple[str, ...]) -> Iterator[str]:
        for child in rule:
            if not isinstance(child.tag, str):
                continue
            if child.tag == _s("let"):
                name, value = _required(child, "name"), _required(child, "value")
                yield f"<xsl:variable name={quoteattr(name)} select={quoteattr(value)}/>\n"
            elif child.tag == _s("extends"):
                target = _required(child, "rule")
                if target in seen:
                    raise UnsupportedSchematron(
                        f"extends at line {child.sourceline}: rule {target} extends itself, directly or not"
                    )
                if target not in self.abstract:
                    raise UnsupportedSchematron(
                        f"extends at line {child.sourceline}: no abstract rule {target}"
                    )
                yield from self._rule_body(self.abstract[target], seen=(*seen, target))
            elif child.tag == _s("assert"):
                yield from self._assert(child)
            else:
                raise UnsupportedSchematron(
                    f"{etree.QName(child).localname} at line {child.sourceline} is not supported in a rule"
                )

    def _assert(self, assertion: etree._Element) -> Iterator[str]:
        test = _required(assertion, "test")
        located = '<svrl:failed-assert location="{path()}">'
        yield f"<xsl:try>\n<xsl:if test={quoteattr(f'not({test})')}>\n{located}<svrl:text>"
        yield _text(assertion.text)
        for part in assertion:
            if isinstance(part.tag, str):
                if part.tag != _s("value-of"):
                    raise UnsupportedSchematron(
                        f"{etree.QName(part).localname} at line {part.sourceline} is not supported in a message"
                    )
                yield f"<xsl:value-of select={quoteattr(_required(part, 'select'))}/>"
            yield _text(part.tail)
        yield "</svrl:text></svrl:failed-assert>\n</xsl:if>\n"
        # Only the error's code: its description may quote the document's values.
        yield (
            f"<xsl:catch>{located}<svrl:text>The rule could not be evaluated on this document "
            '(<xsl:value-of select="local-name-from-QName($err:code)"/>)</svrl:text></svrl:failed-assert>'
            "</xsl:catch>\n</xsl:try>\n"
        )


def failures(svrl: str) -> list[Failure]:
    """The failed assertions of the SVRL a compiled stylesheet wrote, in order, each with its pattern."""
    pattern = ""
    found = []
    for element in etree.fromstring(svrl.encode(), _PARSER):
        if element.tag == f"{{{SVRL}}}active-pattern":
            pattern = element.get("id", "")
        elif element.tag == f"{{{SVRL}}}failed-assert":
            location = _Q_NAMES.sub("", element.get("location", ""))
            message = " ".join(
                etree.tostring(element, method="text", encoding="unicode", with_tail=False).split()
            )
            found.append(Failure(pattern, location, message))
    return found
