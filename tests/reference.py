"""What the tests know of ../shared: the reference RIVTA contracts, and the peer requests rendered.

Shared by the contract tests (tests/unit/test_contracts.py) and the end-to-end SOAP tests
(tests/integration/). Tests that need ../shared call ``need_shared()``, which skips saying why.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
CONTRACTS = ROOT / "contracts"
SHARED = ROOT.parent / "shared"
RIVTA = SHARED / "rivta"
PEER_REQUESTS = (
    SHARED / "peer-requests/sklintyg-intygstjanst@b8179ee09/web/src/test/resources/integrationtests"
)
# The national business rules of the certificate types (rivta/README.md, "Per-type business rules"), and
# the examples that come with them.
_SCHEMATRON = RIVTA / "sklintyg-schemas@5237465/intyg/clinicalprocess-healthcond-certificate-schematron/src"
BUSINESS_RULES = _SCHEMATRON / "main/resources"
RULE_EXAMPLES = _SCHEMATRON / "test/resources"

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
CP = "urn:riv:clinicalprocess:healthcond:certificate"
IP = "urn:riv:insuranceprocess:healthreporting"
REGISTRY = "urn:riv:itintegration:registry:1"
WSA = "http://www.w3.org/2005/08/addressing"

_CP3 = "sklintyg-schemas@5237465/rivta/clinicalprocess-healthcond-certificate/schemas/interactions"
_CP1 = "sklintyg-schemas@bffe5f0/intyg/clinicalprocess-healthcond-certificate/schemas/interactions"
_IP = "sklintyg-schemas@5237465/rivta/insuranceprocess-healthreporting/schemas/interactions"
_IPC = "sklintyg-schemas@e804b16/intyg/insuranceprocess-healthreporting/schemas/interactions"


@dataclass(frozen=True)
class Contract:
    operation: str
    major: int
    responder: str  # responder namespace
    request: str  # local name of the request body element
    header: str  # Clark name of the routing header element
    reference_wsdl: str | None  # relative to shared/rivta; None for our own contract
    reference_xsd: str | None

    @property
    def id(self) -> str:
        return f"{self.operation}_{self.major}"

    @property
    def wsdl(self) -> Path:
        return CONTRACTS / "interactions" / self.id / f"{self.operation}Interaction_{self.major}.wsdl"


def _cp(op: str, major: int, xsd_version: str, base: str = _CP3) -> Contract:
    folder = f"{base}/{op}Interaction"
    return Contract(
        operation=op,
        major=major,
        responder=f"{CP}:{op}Responder:{major}",
        request=op,
        header=f"{{{REGISTRY}}}LogicalAddress",
        reference_wsdl=f"{folder}/{op}Interaction_{major}.0_RIVTABP21.wsdl",
        reference_xsd=f"{folder}/{op}Responder_{xsd_version}.xsd",
    )


def _ip(op: str, base: str = _IP) -> Contract:
    folder = f"{base}/{op}Interaction"
    return Contract(
        operation=op,
        major=1,
        responder=f"{IP}:{op}Responder:1",
        request=f"{op}Request",
        header=f"{{{WSA}}}To",
        reference_wsdl=f"{folder}/{op}Interaction_1.0_rivtabp20.wsdl",
        reference_xsd=f"{folder}/{op}Responder_1.0.xsd",
    )


OWN = "urn:riv:intygstjanst:certificate:RemoveCertificateForCareResponder:1"
# This project's own elements for the responses' extension points (contracts/README.md).
OWN_EXTENSIONS = "urn:riv:intygstjanst:certificate:1"
CONTRACTS_TABLE = [
    _cp("RegisterCertificate", 3, "3.1"),
    _cp("GetCertificate", 2, "2.1"),
    _cp("ListCertificatesForCare", 3, "3.1"),
    _cp("ListCertificatesForCitizen", 4, "4.0"),
    _cp("SetCertificateStatus", 2, "2.0"),
    _cp("RevokeCertificate", 2, "2.1"),
    _cp("SendCertificateToRecipient", 2, "2.1"),
    _cp("ListCertificatesForCare", 1, "1.0"),
    _cp("GetCertificateForCare", 1, "1.0", base=_CP1),
    _ip("GetCertificate"),
    _ip("ListCertificates"),
    _ip("SetCertificateStatus"),
    _ip("SetConsent", base=_IPC),
    _ip("GetConsent", base=_IPC),
    Contract(
        operation="RemoveCertificateForCare",
        major=1,
        responder=OWN,
        request="RemoveCertificateForCare",
        header=f"{{{REGISTRY}}}LogicalAddress",
        reference_wsdl=None,
        reference_xsd=None,
    ),
]
REFERENCED = [c for c in CONTRACTS_TABLE if c.reference_wsdl]
BY_NAMESPACE = {c.responder: c for c in CONTRACTS_TABLE}


def parser() -> etree.XMLParser:
    # Entities off and no network: the same settings the service uses for untrusted input.
    return etree.XMLParser(resolve_entities=False, no_network=True)


def need_shared() -> None:
    if not RIVTA.is_dir() or not PEER_REQUESTS.is_dir():
        pytest.skip(f"reference contracts and peer requests not found at {SHARED} (expected ../shared)")


def need_business_rules() -> None:
    if not BUSINESS_RULES.is_dir() or not RULE_EXAMPLES.is_dir():
        pytest.skip(f"the national business rules are not found at {BUSINESS_RULES} (expected ../shared)")


def business_rules_settings() -> dict[str, Any]:
    """``Settings`` arguments that check certificates against the national business rules where ../shared
    has them (the rule set is compiled once per test process: ``business_rules.compiled``)."""
    return {"business_rules_dir": BUSINESS_RULES} if BUSINESS_RULES.is_dir() else {}


@cache
def our_schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(CONTRACTS / "service.xsd"), parser()))


@cache
def reference_schema(relative: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(RIVTA / relative), parser()))


def assert_valid(schema: etree.XMLSchema, element: etree._Element, what: str) -> None:
    ok = schema.validate(element)
    assert ok, f"{what}: {etree.QName(element).text} invalid: {schema.error_log}"


def assert_valid_everywhere(element: etree._Element) -> None:
    assert_valid(our_schema(), element, "our contracts")
    contract = BY_NAMESPACE[etree.QName(element).namespace]
    if contract.reference_xsd is not None:
        assert_valid(reference_schema(contract.reference_xsd), element, "reference contract")


# --- personnummer / samordningsnummer -------------------------------------------------------------


def _luhn_check_digit(nine_digits: str) -> str:
    total = 0
    for index, char in enumerate(nine_digits):
        product = int(char) * (2 if index % 2 == 0 else 1)
        total += product // 10 + product % 10
    return str((10 - total % 10) % 10)


def with_check_digit(first_eleven: str) -> str:
    """YYYYMMDDNNN -> YYYYMMDDNNNC, the check digit computed over YYMMDDNNN."""
    return first_eleven + _luhn_check_digit(first_eleven[2:])


PERSONNUMMER = "191212121212"
# Samordningsnummer: the birth day plus 60 (12 -> 72), then a fresh check digit.
SAMORDNINGSNUMMER = with_check_digit("19121272121")


# --- peer requests --------------------------------------------------------------------------------

PLACEHOLDER_VALUES = {
    "data.intygsId": "8c1d5c4e-7a5b-4a3f-9e57-2f0f2b6c1a11",
    "intygId": "8c1d5c4e-7a5b-4a3f-9e57-2f0f2b6c1a11",
    "data.intygsVersion": "1.0",
    "data.type": "LISJP",
    "target": "FKASSA",
    "status": "RECEIVED",
    "timestamp": "2016-05-16T10:15:00",
    "fromDate": "2016-01-01",
    "toDate": "2016-12-31",
    "certificateType": "fk7263",
    "doctorId": "SE2321000016-6G5R",
    "doctorName": "Karl Karlsson",
    "careProviderId": "SE2321000016-39KJ",
    "unitId": "SE2321000016-H489",
    "careUnitId": "SE2321000016-H489",
    "diagnosisCode": "J22",
    "signedAndSentDateTime": "2016-05-16T10:15:00",
    "relationCode": "ERSATT",
    "relationName": "Ersätter",
    "relationId": "5a0c0e3a-3b0b-4a4a-8f3c-aaaaaaaaaaaa",
}
_TEMPLATE = re.compile(r"^(\w+)\(([^)]*)\)\s*::=\s*<<\n?(.*?)\n?>>", re.S | re.M)
_PLACEHOLDER = re.compile(r"\$([A-Za-z.]+)\$")


def read_templates(path: Path) -> dict[str, str]:
    return {m.group(1): m.group(3) for m in _TEMPLATE.finditer(path.read_text(encoding="utf-8"))}


def render(template: str, extra: dict[str, str]) -> str:
    # The register templates put the patient under the samordningsnummer root: give them one.
    person = SAMORDNINGSNUMMER if "1.2.752.129.2.1.3.3" in template else PERSONNUMMER
    values = {**PLACEHOLDER_VALUES, "data.personId": person, "personId": person, **extra}
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)


def peer_requests() -> list[Any]:
    if not PEER_REQUESTS.is_dir():
        return [pytest.param(None, None, id="peer-requests-absent")]
    params = []
    for path in sorted(PEER_REQUESTS.rglob("*.stg")):
        templates = read_templates(path)
        # A fragment (the relation of requestParameterizedRelation) is spliced into other templates.
        fragments = {name: t for name, t in templates.items() if "Envelope" not in t}
        extra = {"relation": render(fragments["requestParameterizedRelation"], {})} if fragments else {}
        for name, template in templates.items():
            if name not in fragments:
                label = f"{path.relative_to(PEER_REQUESTS).with_suffix('')}:{name}"
                params.append(pytest.param(path, render(template, extra), id=label))
    return params
