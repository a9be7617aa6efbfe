"""The certificate types' business rules (``service/business_rules.py``), compiled by our Schematron
compiler and run by Saxon: the ISO semantics on small schemas, and the national rule set on the examples
that come with it (rivta/README.md, "Per-type business rules"). A register refused for them, end to end
through SOAP, is in ``tests/integration/test_business_rules.py``.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from service import business_rules, certificate_type
from service.business_rules import RuleSet, RuleSetUnusable
from service.config import Settings
from service.model import RuleFailure
from tests.reference import BUSINESS_RULES, RULE_EXAMPLES, need_business_rules

NS = "urn:example"


def check(body: str, document: str, *, lets: str = "") -> list[RuleFailure]:
    schema = (
        '<schema xmlns="http://purl.oclc.org/dsdl/schematron" queryBinding="xslt2">'
        f'<ns prefix="gn" uri="{NS}"/>{lets}{body}</schema>'
    ).encode()
    return list(RuleSet.of({("X", 1): schema}).check(document, type_code="X", version="1.0"))


def test_within_a_pattern_the_first_rule_whose_context_matches_fires_and_no_other() -> None:
    failures = check(
        '<pattern id="p">'
        '<rule context="//gn:a[@k = \'1\']"><assert test="false()">first</assert></rule>'
        '<rule context="//gn:a"><assert test="false()">second</assert></rule>'
        "</pattern>",
        f'<r xmlns="{NS}"><a k="1"/><a k="2"/></r>',
    )

    assert failures == [RuleFailure("p", "/r[1]/a[1]", "first"), RuleFailure("p", "/r[1]/a[2]", "second")]


def test_each_pattern_is_a_pass_of_its_own_and_a_fired_rule_s_descendants_are_still_visited() -> None:
    rule = '<rule context="//gn:a"><assert test="false()">no a</assert></rule>'
    failures = check(
        f'<pattern id="p">{rule}</pattern><pattern id="q">{rule}</pattern>',
        f'<r xmlns="{NS}"><a><a/></a></r>',
    )

    assert [(f.rule, f.location) for f in failures] == [
        ("p", "/r[1]/a[1]"),
        ("p", "/r[1]/a[1]/a[1]"),
        ("q", "/r[1]/a[1]"),
        ("q", "/r[1]/a[1]/a[1]"),
    ]


def test_abstract_rules_lets_at_every_level_and_values_in_messages_are_checked_in_the_rule_s_context() -> (
    None
):
    failures = check(
        '<pattern id="p"><let name="limit" value="count(//gn:a) - 1"/>'
        '<rule id="bounded" abstract="true"><let name="n" value="number(@n)"/>'
        '<assert test="$n le $limit + $slack">a is <value-of select="$n"/>, over <value-of select="$limit"/></assert>'
        "</rule>"
        '<rule context="//gn:a"><extends rule="bounded"/></rule></pattern>',
        f'<r xmlns="{NS}"><a n="1"/><a n="5"/><a n="2"/></r>',
        lets='<let name="slack" value="0"/>',
    )

    assert failures == [RuleFailure("p", "/r[1]/a[2]", "a is 5, over 2")]


def test_a_message_keeps_the_space_between_two_values() -> None:
    failures = check(
        '<pattern id="p"><rule context="/"><assert test="false()"><value-of select="1"/> <value-of select="2"/></assert></rule></pattern>',
        f'<r xmlns="{NS}"/>',
    )

    assert failures == [RuleFailure("p", "/", "1 2")]


def test_a_rule_that_cannot_be_evaluated_fails_with_the_error_code_and_prints_nothing(
    capfd: pytest.CaptureFixture[str],
) -> None:
    # Upstream's ag7804.v1.sch casts a value to a date without checking it first.
    failures = check(
        '<pattern id="dated"><rule context="//gn:d"><assert test="xs:date(.) le current-date()">past</assert></rule></pattern>',
        f'<r xmlns="{NS}"><d>2020-01-01</d><d>19121212-1212</d></r>',
    )

    assert failures == [
        RuleFailure("dated", "/r[1]/d[2]", "The rule could not be evaluated on this document (FORG0001)")
    ]
    assert capfd.readouterr() == ("", "")


def test_a_personal_identity_number_a_message_quotes_is_masked() -> None:
    failures = check(
        '<pattern id="p"><rule context="//gn:svar"><assert test="false()">svar <value-of select="@id"/></assert></rule></pattern>',
        f'<r xmlns="{NS}"><svar id="19121212-1212"/><svar id="191212121212"/><svar id="121212+1212"/><svar id="32"/></r>',
    )

    assert [f.message for f in failures] == [f"svar {business_rules.MASK}"] * 3 + ["svar 32"]


def test_a_certificate_of_a_type_without_rules_here_has_no_failures() -> None:
    rules = RuleSet.of({})
    assert rules.check(f'<r xmlns="{NS}"/>', type_code="X", version="1") == ()
    assert rules.rules_for("X", "1") is None


# --- The national rule set ----------------------------------------------------------------------------


def test_every_rule_file_is_for_a_type_and_version_the_service_stores_and_every_one_has_its_file() -> None:
    stored = {(t.code, v) for t in certificate_type.TYPES.values() for v in t.major_versions}
    covered = {
        (code, version)
        for code, major in business_rules.FILES.values()
        for version in (certificate_type.TYPES[code].major_versions if major is None else {major})
    }
    assert covered == stored


def test_the_production_profile_refuses_to_serve_without_the_business_rules(tmp_path: Path) -> None:
    production = Settings(profile="production", database_url="postgresql://db/intyg")
    configured = production.model_copy(update={"business_rules_dir": tmp_path})

    assert any("INTYG_BUSINESS_RULES_DIR" in problem for problem in production.unfit_to_serve())
    assert not any("INTYG_BUSINESS_RULES_DIR" in problem for problem in configured.unfit_to_serve())
    # The development profile serves without them, and says so (tests/integration/test_cli.py).
    assert not any(
        "INTYG_BUSINESS_RULES_DIR" in p
        for p in Settings(database_url=production.database_url).unfit_to_serve()
    )


def test_the_rule_set_is_compiled_once_per_process() -> None:
    need_business_rules()
    assert business_rules.compiled(BUSINESS_RULES) is business_rules.compiled(BUSINESS_RULES)


def test_a_rule_set_with_a_file_the_service_does_not_know_or_without_one_it_needs_is_refused(
    tmp_path: Path,
) -> None:
    need_business_rules()
    unknown = tmp_path / "unknown"
    shutil.copytree(BUSINESS_RULES, unknown)
    (unknown / "lisjp.v2.sch").write_bytes((BUSINESS_RULES / "lisjp.v1.sch").read_bytes())
    lacking = tmp_path / "lacking"
    shutil.copytree(BUSINESS_RULES, lacking)
    (lacking / "luse.v1.sch").unlink()

    with pytest.raises(RuleSetUnusable, match=r"does not know the type of: lisjp\.v2\.sch"):
        business_rules.compiled(unknown)
    with pytest.raises(RuleSetUnusable, match=r"lacks luse\.v1\.sch"):
        business_rules.compiled(lacking)


def test_a_value_ag7804_s_rules_cannot_evaluate_is_a_failure_of_that_rule() -> None:
    need_business_rules()
    document = (
        '<rg:RegisterCertificate xmlns:rg="urn:riv:clinicalprocess:healthcond:certificate:RegisterCertificateResponder:3" '
        'xmlns="urn:riv:clinicalprocess:healthcond:certificate:3"><rg:intyg>'
        '<svar id="1"><instans>1</instans><delsvar id="1.2">not a date</delsvar></svar></rg:intyg></rg:RegisterCertificate>'
    )

    failures = business_rules.compiled(BUSINESS_RULES).check(document, type_code="AG7804", version="1.0")

    assert (
        RuleFailure(
            "R35-1.2",
            "/RegisterCertificate[1]/intyg[1]/svar[1]/delsvar[1]",
            "The rule could not be evaluated on this document (FORG0001)",
        )
        in failures
    )


# The two examples refused by another rule than their name says (the rule file says so of v3's R19).
REFUSED_BY_ANOTHER = {("v3", "fail-R19.xml"): "q8", ("v4", "fail-R27-2.xml"): "q200"}


def examples() -> list[object]:
    if not RULE_EXAMPLES.is_dir():
        return [pytest.param(None, id="rule-examples-absent")]
    return [
        pytest.param(path, id=f"{path.parent.name}/{path.name}")
        for version in ("v3", "v4")
        for path in sorted((RULE_EXAMPLES / "tstrk1031" / version).glob("*.xml"))
    ]


@pytest.mark.parametrize("example", examples())
def test_each_tstrk1031_example_passes_or_is_refused_for_the_rule_it_names(example: Path | None) -> None:
    need_business_rules()
    assert example is not None
    version = example.parent.name
    # The examples are dated when they were written; some rules compare with today's date (current-date()).
    failures = business_rules.compiled(BUSINESS_RULES).check(
        example.read_text(encoding="utf-8"), type_code="TSTRK1031", version=f"{version[1:]}.0"
    )

    if example.name.startswith("pass"):
        assert failures == ()
        return
    assert failures
    failed = {f.rule for f in failures}
    if (version, example.name) in REFUSED_BY_ANOTHER:
        assert REFUSED_BY_ANOTHER[version, example.name] in failed
        return
    # fail-R23-R24.xml breaks R23 and R24; fail-R15_1.xml R15; a pattern's id names its rules (R19-R20-R21-R22).
    for rule in re.findall(r"R(\d+)", example.name):
        assert any(re.search(rf"(^|\D)R{rule}(\D|$)", pattern) for pattern in failed), (rule, failures)
