"""The Schematron compiler (``service/schematron.py``): the subset it compiles, and everything else
refused loudly. What the compiled rules find, run by Saxon, is in ``tests/unit/test_business_rules.py``.
"""

from __future__ import annotations

import pytest
from lxml import etree

from service import business_rules, schematron
from service.schematron import UnsupportedSchematron
from tests.reference import BUSINESS_RULES, need_business_rules

RULE = '<rule context="//gn:a"><assert test="true()">a</assert></rule>'


def schema(body: str, *, binding: str = "xslt2", extra: str = "") -> bytes:
    return (
        f'<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="{binding}" {extra}>'
        f'<ns prefix="gn" uri="urn:example"/>{body}</schema>'
    ).encode()


UNSUPPORTED = {
    "report": '<pattern id="p"><rule context="//gn:a"><report test="true()">r</report></rule></pattern>',
    "phase": f'<phase id="f"><active pattern="p"/></phase><pattern id="p">{RULE}</pattern>',
    "include": '<include href="other.sch"/>',
    "diagnostics": f'<pattern id="p">{RULE}</pattern><diagnostics/>',
    "name in a message": '<pattern id="p"><rule context="//gn:a"><assert test="false()"><name/></assert></rule></pattern>',
    "an element of XSLT": '<xsl:function xmlns:xsl="http://www.w3.org/1999/XSL/Transform" name="gn:f"/>',
    "an abstract pattern": f'<pattern id="p" abstract="true">{RULE}</pattern>',
    "an instance of a pattern": '<pattern id="q" is-a="p"/>',
    "a rule with neither context nor abstract": '<pattern id="p"><rule><assert test="true()">a</assert></rule></pattern>',
    "a context matching attributes": '<pattern id="p"><rule context="//gn:a/@id"><assert test="true()">a</assert></rule></pattern>',
    "a context matching text": '<pattern id="p"><rule context="//gn:a/text()"><assert test="true()">a</assert></rule></pattern>',
    "an extends of no abstract rule": '<pattern id="p"><rule context="//gn:a"><extends rule="nothing"/></rule></pattern>',
    "an abstract rule extending itself": (
        '<pattern id="p"><rule id="r" abstract="true"><extends rule="r"/></rule>'
        '<rule context="//gn:a"><extends rule="r"/></rule></pattern>'
    ),
    "a prefix of the compiled stylesheet": f'<ns prefix="xsl" uri="urn:other"/><pattern id="p">{RULE}</pattern>',
    "one let name twice": (
        f'<let name="x" value="1"/><pattern id="p"><let name="x" value="2"/>{RULE}</pattern>'
    ),
}


@pytest.mark.parametrize("body", UNSUPPORTED.values(), ids=UNSUPPORTED.keys())
def test_a_rule_file_beyond_the_subset_is_refused_saying_what(body: str) -> None:
    with pytest.raises(UnsupportedSchematron) as refused:
        schematron.to_xslt(schema(body))

    assert "\n" not in str(refused.value)


def test_a_schematron_element_the_compiler_does_not_know_is_refused_with_its_line() -> None:
    with pytest.raises(
        UnsupportedSchematron, match=r"element \{http://purl.oclc.org/dsdl/schematron\}report at line 1"
    ):
        schematron.to_xslt(schema(UNSUPPORTED["report"]))


@pytest.mark.parametrize("binding", ["xslt", "xpath", "exslt"])
def test_a_query_binding_other_than_xslt2_is_refused(binding: str) -> None:
    with pytest.raises(UnsupportedSchematron, match="queryBinding"):
        schematron.to_xslt(schema(f'<pattern id="p">{RULE}</pattern>', binding=binding))


@pytest.mark.parametrize("document", [b"<schema", b"<other/>"], ids=["malformed", "not schematron"])
def test_a_file_that_is_no_schematron_schema_is_refused(document: bytes) -> None:
    with pytest.raises(UnsupportedSchematron):
        schematron.to_xslt(document)


def test_the_compiled_stylesheet_is_xslt_3_with_one_mode_per_pattern() -> None:
    stylesheet = etree.fromstring(
        schematron.to_xslt(
            schema(f'<pattern id="p">{RULE}</pattern><pattern id="q">{RULE}</pattern>')
        ).encode()
    )

    xsl = "{http://www.w3.org/1999/XSL/Transform}"
    assert stylesheet.tag == f"{xsl}stylesheet" and stylesheet.get("version") == "3.0"
    modes = {t.get("mode") for t in stylesheet.iter(f"{xsl}template")} - {None}
    assert modes == {"p0", "p1"}


def test_every_national_rule_file_is_within_the_subset() -> None:
    need_business_rules()
    for name in business_rules.FILES:
        assert schematron.to_xslt((BUSINESS_RULES / name).read_bytes()).startswith("<xsl:stylesheet")
