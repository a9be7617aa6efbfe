"""Our own SOAP contracts in contracts/ are wire-compatible with the public RIVTA contracts.

contracts/ holds this project's own WSDL/XSD files. These tests prove, against the untouched reference
copies in ../shared/rivta and the real peer requests in ../shared/peer-requests, that:

- contracts/service.xsd compiles offline with lxml (the service compiles it once at start);
- every peer request body validates against our schema and against the reference responder schema;
- zeep sees the same operations, SOAPActions, body and header elements, and the same element tree
  in our WSDLs as in the reference WSDLs;
- hand-written response bodies of the shapes the service produces validate against both.

Tests that need ../shared skip, saying why, where it is absent.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from tests.reference import (
    BY_NAMESPACE,
    CONTRACTS,
    CONTRACTS_TABLE,
    CP,
    IP,
    OWN,
    OWN_EXTENSIONS,
    PERSONNUMMER,
    REFERENCED,
    REGISTRY,
    RIVTA,
    SAMORDNINGSNUMMER,
    SOAP_ENV,
    WSA,
    Contract,
    assert_valid,
    assert_valid_everywhere,
    need_shared,
    our_schema,
    parser,
    peer_requests,
    with_check_digit,
)


def test_the_test_identity_numbers_have_valid_check_digits() -> None:
    assert with_check_digit(PERSONNUMMER[:11]) == PERSONNUMMER
    assert SAMORDNINGSNUMMER == "191212721219"


# --- service.xsd ----------------------------------------------------------------------------------


def test_service_schema_compiles_offline_with_lxml() -> None:
    schema = our_schema()
    assert isinstance(schema, etree.XMLSchema)


def test_service_schema_imports_every_responder_namespace() -> None:
    tree = etree.parse(str(CONTRACTS / "service.xsd"), parser())
    imported = {imp.get("namespace") for imp in tree.iter("{http://www.w3.org/2001/XMLSchema}import")}
    assert {c.responder for c in CONTRACTS_TABLE} | {REGISTRY, WSA, OWN_EXTENSIONS} == imported


def test_contract_files_are_our_own_and_schema_locations_stay_inside_contracts() -> None:
    files = sorted(CONTRACTS.rglob("*.xsd")) + sorted(CONTRACTS.rglob("*.wsdl"))
    assert len(files) >= 14 * 2 + 1
    for path in files:
        text = path.read_text(encoding="utf-8")
        assert "Licensed to the Apache" not in text and "GNU General Public" not in text, path
        for location in re.findall(r'schemaLocation="([^"]+)"', text):
            target = (path.parent / location).resolve()
            assert target.is_file(), f"{path}: {location}"
            assert CONTRACTS in target.parents, f"{path}: {location} leaves contracts/"


def test_every_wildcard_is_lax_and_other_except_the_signature() -> None:
    # Contract rule: unknown elements in other namespaces are accepted and ignored, never checked.
    for path in sorted(CONTRACTS.rglob("*.xsd")):
        for wildcard in etree.parse(str(path), parser()).iter("{http://www.w3.org/2001/XMLSchema}any"):
            assert wildcard.get("processContents") == "lax", path
            if path.name != "certificate-types-3.xsd":
                assert wildcard.get("namespace") == "##other", path


@pytest.mark.shared
@pytest.mark.parametrize(("path", "envelope"), peer_requests())
def test_peer_request_body_validates_against_ours_and_the_reference(path: Path | None, envelope: str) -> None:
    need_shared()
    root = etree.fromstring(envelope.encode("utf-8"), parser())
    body = root.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    element = next(child for child in body if isinstance(child.tag, str))
    contract = BY_NAMESPACE[etree.QName(element).namespace]
    assert etree.QName(element).localname == contract.request
    header = root.find(f"{{{SOAP_ENV}}}Header")
    routing = header.find(contract.header) if header is not None else None
    assert routing is not None
    assert_valid_everywhere(element)
    assert_valid(our_schema(), routing, "our contracts (header)")


# --- WSDLs through zeep ---------------------------------------------------------------------------


def _zeep_client(wsdl: Path) -> Any:
    zeep = pytest.importorskip("zeep")
    return zeep.Client(str(wsdl))


def _operations(client: Any) -> dict[str, tuple[Any, ...]]:
    ops = {}
    for binding in client.wsdl.bindings.values():
        for name, op in binding._operations.items():
            headers = tuple(str(el.qname) for _, el in op.input.header.type.elements)
            ops[name] = (
                binding.port_name.text,
                op.soapaction,
                op.style,
                str(op.input.body.qname),
                str(op.output.body.qname),
                headers,
            )
    return ops


_SIGNATURE_HOLDER = f"{{{CP}:types:3}}UnderskriftType"


def _shape(element: Any, seen: frozenset[int] = frozenset()) -> Any:
    """The element tree zeep builds: names, occurrences, type names, wildcards, attributes."""
    from zeep.xsd.elements.any import Any as AnyElement

    if isinstance(element, AnyElement):
        # zeep keeps no namespace for a wildcard; test_every_wildcard_is_lax_and_other checks it.
        return ("any", element.process_contents, element.min_occurs, element.max_occurs)
    xsd_type = element.type
    type_name = str(xsd_type.qname) if xsd_type.qname is not None else None
    node: tuple[Any, ...] = (str(element.qname), element.min_occurs, element.max_occurs, type_name)
    # Our one intended difference: the xmldsig Signature is a lax wildcard (see certificate-types-3.xsd).
    if type_name == _SIGNATURE_HOLDER or id(xsd_type) in seen or not hasattr(xsd_type, "elements"):
        return node
    inner = seen | {id(xsd_type)}
    children = tuple(_shape(child, inner) for _, child in xsd_type.elements)
    attributes = tuple(sorted((name, str(attr.type.qname)) for name, attr in xsd_type.attributes))
    return (*node, children, attributes)


@pytest.mark.shared
@pytest.mark.parametrize("contract", REFERENCED, ids=lambda c: c.id)
def test_our_wsdl_offers_the_reference_operations_soapactions_and_elements(contract: Contract) -> None:
    need_shared()
    reference = _zeep_client(RIVTA / str(contract.reference_wsdl))
    ours = _zeep_client(contract.wsdl)

    assert _operations(ours) == _operations(reference)
    (op,) = _operations(ours).values()
    assert op[1] == f"{contract.responder}:{contract.operation}"
    assert op[3] == f"{{{contract.responder}}}{contract.request}"
    assert op[5] == (contract.header,)
    assert set(ours.wsdl.messages) == set(reference.wsdl.messages)
    assert [s.name for s in ours.wsdl.services.values()] == [s.name for s in reference.wsdl.services.values()]


@pytest.mark.shared
@pytest.mark.parametrize("contract", REFERENCED, ids=lambda c: c.id)
def test_our_body_elements_have_the_reference_element_tree(contract: Contract) -> None:
    need_shared()
    reference = _zeep_client(RIVTA / str(contract.reference_wsdl))
    ours = _zeep_client(contract.wsdl)
    for name in (contract.request, f"{contract.operation}Response"):
        qname = f"{{{contract.responder}}}{name}"
        assert _shape(ours.get_element(qname)) == _shape(reference.get_element(qname)), name


def test_remove_certificate_for_care_wsdl_is_rivta_bp21_style() -> None:
    contract = BY_NAMESPACE[OWN]
    ops = _operations(_zeep_client(contract.wsdl))
    assert ops == {
        "RemoveCertificateForCare": (
            "{urn:riv:intygstjanst:certificate:RemoveCertificateForCare:1:rivtabp21}"
            "RemoveCertificateForCareResponderInterface",
            "urn:riv:intygstjanst:certificate:RemoveCertificateForCareResponder:1:RemoveCertificateForCare",
            "document",
            f"{{{contract.responder}}}RemoveCertificateForCare",
            f"{{{contract.responder}}}RemoveCertificateForCareResponse",
            (f"{{{REGISTRY}}}LogicalAddress",),
        )
    }


# --- hand-written bodies of the shapes the service produces ---------------------------------------

T3 = f'xmlns:t="{CP}:types:3"'
C3 = f'xmlns:c="{CP}:3"'

INTYG = f"""
  <c:intygs-id><t:root>SE2321000016-H489</t:root><t:extension>intyg-1</t:extension></c:intygs-id>
  <c:typ><t:code>LISJP</t:code><t:codeSystem>b64ea353-e8f6-4832-b563-fc7d46f29548</t:codeSystem></c:typ>
  <c:version>1.0</c:version>
  <c:signeringstidpunkt>2016-05-16T10:15:00</c:signeringstidpunkt>
  <c:patient>
    <c:person-id><t:root>1.2.752.129.2.1.3.1</t:root><t:extension>{PERSONNUMMER}</t:extension></c:person-id>
    <c:fornamn></c:fornamn><c:efternamn></c:efternamn>
    <c:postadress></c:postadress><c:postnummer></c:postnummer><c:postort></c:postort>
  </c:patient>
  <c:skapadAv>
    <c:personal-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-6G5R</t:extension></c:personal-id>
    <c:fullstandigtNamn>Karl Karlsson</c:fullstandigtNamn>
    <c:enhet>
      <c:enhets-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-H489</t:extension></c:enhets-id>
      <c:arbetsplatskod><t:root>1.2.752.29.4.71</t:root><t:extension>45312</t:extension></c:arbetsplatskod>
      <c:enhetsnamn>VE1</c:enhetsnamn>
      <c:postadress></c:postadress><c:postnummer></c:postnummer><c:postort></c:postort>
      <c:telefonnummer></c:telefonnummer>
      <c:vardgivare>
        <c:vardgivare-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-39KJ</t:extension></c:vardgivare-id>
        <c:vardgivarnamn>VG1</c:vardgivarnamn>
      </c:vardgivare>
    </c:enhet>
  </c:skapadAv>
  <c:status>
    <c:part><t:code>HSVARD</t:code><t:codeSystem>769bb12b-bd9f-4203-a5cd-fd14f2eb3b80</t:codeSystem></c:part>
    <c:status><t:code>RECEIV</t:code><t:codeSystem>9871cd17-8755-4ed9-b894-ff3729e775a4</t:codeSystem></c:status>
    <c:tidpunkt>2016-05-16T10:15:00</c:tidpunkt>
  </c:status>
  <c:svar id="1"><c:delsvar id="1.1">Plain text answer</c:delsvar></c:svar>
  <c:svar id="2">
    <c:delsvar id="2.1">
      <t:datePeriod><t:start>2016-05-16</t:start><t:end>2016-06-16</t:end></t:datePeriod>
    </c:delsvar>
  </c:svar>
  <s:underskrift xmlns:s="{CP}:3.2">
    <ds:Signature xmlns:ds="http://www.w3.org/2000/09/xmldsig#">
      <ds:SignedInfo>
        <ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>
        <ds:SignatureMethod Algorithm="http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"/>
        <ds:Reference URI="">
          <ds:DigestMethod Algorithm="http://www.w3.org/2001/04/xmlenc#sha256"/>
          <ds:DigestValue>AAAA</ds:DigestValue>
        </ds:Reference>
      </ds:SignedInfo>
      <ds:SignatureValue>AAAA</ds:SignatureValue>
    </ds:Signature>
  </s:underskrift>
"""

# The certificate's own relation (intyg/relation: it replaces intyg-0), and this project's element for
# one another certificate states to it (intyg-2 replaces it), in a response's extension point.
RELATION = """
  <c:relation>
    <c:typ><t:code>ERSATT</t:code><t:codeSystem>c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146</t:codeSystem></c:typ>
    <c:intygs-id><t:root>SE2321000016-H489</t:root><t:extension>intyg-0</t:extension></c:intygs-id>
  </c:relation>
"""
RELATION_TO = f"""
  <i:relation xmlns:i="{OWN_EXTENSIONS}">
    <i:fran-intygs-id><t:root>SE2321000016-H489</t:root><t:extension>intyg-2</t:extension></i:fran-intygs-id>
    <i:typ><t:code>ERSATT</t:code><t:codeSystem>c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146</t:codeSystem></i:typ>
    <i:till-intygs-id><t:root>SE2321000016-H489</t:root><t:extension>intyg-1</t:extension></i:till-intygs-id>
  </i:relation>
"""

RIV1 = f'xmlns:c="{CP}:1" xmlns:t="{CP}:types:1"'
META_1 = """
  <r:meta>
    <c:certificateId>intyg-1</c:certificateId><c:certificateType>fk7263</c:certificateType>
    <c:validFrom>2016-05-16</c:validFrom><c:validTo>2016-06-16</c:validTo>
    <c:issuerName>Karl Karlsson</c:issuerName><c:facilityName>VE1</c:facilityName>
    <c:signDate>2016-05-16T10:15:00</c:signDate><c:available>true</c:available>
    <c:status><c:target>HSVARD</c:target><c:type>RECEIVED</c:type><c:timestamp>2016-05-16T10:15:00</c:timestamp></c:status>
  </r:meta>
"""

HAND_WRITTEN = {
    "RegisterCertificateResponse OK": f"""
<r:RegisterCertificateResponse xmlns:r="{CP}:RegisterCertificateResponder:3" {C3}>
  <r:result><c:resultCode>OK</c:resultCode></r:result>
</r:RegisterCertificateResponse>""",
    "RegisterCertificateResponse INFO repeat": f"""
<r:RegisterCertificateResponse xmlns:r="{CP}:RegisterCertificateResponder:3" {C3}>
  <r:result>
    <c:resultCode>INFO</c:resultCode><c:resultText>Certificate already exists</c:resultText>
  </r:result>
</r:RegisterCertificateResponse>""",
    "RevokeCertificateResponse ERROR": f"""
<r:RevokeCertificateResponse xmlns:r="{CP}:RevokeCertificateResponder:2" {C3}>
  <r:result><c:resultCode>ERROR</c:resultCode><c:resultText>no such certificate</c:resultText>
    <c:errorId>APPLICATION_ERROR</c:errorId></r:result>
</r:RevokeCertificateResponse>""",
    "GetCertificateResponse with intyg": f"""
<r:GetCertificateResponse xmlns:r="{CP}:GetCertificateResponder:2" {C3} {T3}>
  <r:intyg>{INTYG}</r:intyg>
</r:GetCertificateResponse>""",
    "ListCertificatesForCareResponse 3": f"""
<r:ListCertificatesForCareResponse xmlns:r="{CP}:ListCertificatesForCareResponder:3" {C3} {T3}>
  <r:intygsLista><r:intyg>{INTYG}</r:intyg></r:intygsLista>
</r:ListCertificatesForCareResponse>""",
    "GetCertificateResponse with intyg, its relation and a relation to it": f"""
<r:GetCertificateResponse xmlns:r="{CP}:GetCertificateResponder:2" {C3} {T3}>
  <r:intyg>{INTYG.replace("</c:skapadAv>", "</c:skapadAv>" + RELATION)}</r:intyg>
  {RELATION_TO}
</r:GetCertificateResponse>""",
    "ListCertificatesForCitizenResponse 4 with a relation to a listed intyg": f"""
<r:ListCertificatesForCitizenResponse xmlns:r="{CP}:ListCertificatesForCitizenResponder:4" {C3} {T3}>
  <r:intygsLista><r:intyg>{INTYG}</r:intyg>{RELATION_TO}</r:intygsLista>
</r:ListCertificatesForCitizenResponse>""",
    "ListCertificatesForCitizenResponse 4 empty": f"""
<r:ListCertificatesForCitizenResponse xmlns:r="{CP}:ListCertificatesForCitizenResponder:4">
  <r:intygsLista/>
</r:ListCertificatesForCitizenResponse>""",
    "ListCertificatesForCareResponse 1": f"""
<r:ListCertificatesForCareResponse xmlns:r="{CP}:ListCertificatesForCareResponder:1" {RIV1}>
  {META_1}
  <r:result><c:resultCode>OK</c:resultCode></r:result>
</r:ListCertificatesForCareResponse>""",
    "GetCertificateForCareResponse 1": f"""
<r:GetCertificateForCareResponse xmlns:r="{CP}:GetCertificateForCareResponder:1" {RIV1}>
  {META_1}
  <r:certificate>
    <c:utlatande-id root="SE2321000016-H489" extension="intyg-1"/>
    <c:typAvUtlatande code="fk7263" codeSystem="f6fb361a-e31d-48b8-8657-99b63912dd9b"
                      codeSystemName="kv_utlåtandetyp_intyg" displayName="Läkarintyg FK 7263"/>
    <c:signeringsdatum>2016-05-16T10:15:00</c:signeringsdatum>
    <c:patient>
      <c:person-id root="1.2.752.129.2.1.3.1" extension="19121212-1212"/>
      <c:efternamn>Tolvansson</c:efternamn>
    </c:patient>
    <c:skapadAv>
      <c:personal-id root="1.2.752.129.2.1.4.1" extension="SE2321000016-6G5R"/>
      <c:enhet>
        <c:enhets-id root="1.2.752.129.2.1.4.1" extension="SE2321000016-H489"/>
        <c:enhetsnamn>VE1</c:enhetsnamn>
        <c:vardgivare>
          <c:vardgivare-id root="1.2.752.129.2.1.4.1" extension="SE2321000016-39KJ"/>
          <c:vardgivarnamn>VG1</c:vardgivarnamn>
        </c:vardgivare>
      </c:enhet>
    </c:skapadAv>
  </r:certificate>
  <r:result><c:resultCode>OK</c:resultCode></r:result>
</r:GetCertificateForCareResponse>""",
    "SetConsentResponse": f"""
<r:SetConsentResponse xmlns:r="{IP}:SetConsentResponder:1" xmlns:h="{IP}:2">
  <r:result><h:resultCode>OK</h:resultCode></r:result>
</r:SetConsentResponse>""",
    "GetConsentResponse": f"""
<r:GetConsentResponse xmlns:r="{IP}:GetConsentResponder:1" xmlns:h="{IP}:2">
  <r:consent-given>true</r:consent-given>
  <r:result><h:resultCode>OK</h:resultCode></r:result>
</r:GetConsentResponse>""",
    "SetConsentRequest": f"""
<r:SetConsentRequest xmlns:r="{IP}:SetConsentResponder:1">
  <r:personnummer>{PERSONNUMMER}</r:personnummer><r:consent-given>false</r:consent-given>
</r:SetConsentRequest>""",
    "GetConsentRequest": f"""
<r:GetConsentRequest xmlns:r="{IP}:GetConsentResponder:1">
  <r:personnummer>{PERSONNUMMER}</r:personnummer>
</r:GetConsentRequest>""",
    "ListCertificatesResponse with meta": f"""
<r:ListCertificatesResponse xmlns:r="{IP}:ListCertificatesResponder:1"
    xmlns:m="urn:riv:insuranceprocess:certificate:1" xmlns:h="{IP}:2">
  <r:meta>
    <m:certificateId>intyg-1</m:certificateId><m:certificateType>fk7263</m:certificateType>
    <m:validFrom>2016-05-16</m:validFrom><m:validTo>2016-06-16</m:validTo>
    <m:issuerName>Karl Karlsson</m:issuerName><m:facilityName>VE1</m:facilityName>
    <m:signDate>2016-05-16</m:signDate><m:available>true</m:available>
    <m:status><m:target>FKASSA</m:target><m:type>SENT</m:type><m:timestamp>2016-05-16T10:15:00</m:timestamp></m:status>
  </r:meta>
  <r:result><h:resultCode>OK</h:resultCode></r:result>
</r:ListCertificatesResponse>""",
    "ListCertificatesResponse NOCONSENT": f"""
<r:ListCertificatesResponse xmlns:r="{IP}:ListCertificatesResponder:1" xmlns:h="{IP}:2">
  <r:result><h:resultCode>INFO</h:resultCode><h:infoText>NOCONSENT</h:infoText></r:result>
</r:ListCertificatesResponse>""",
    "GetCertificateResponse 1 with certificate": f"""
<r:GetCertificateResponse xmlns:r="{IP}:GetCertificateResponder:1" xmlns:h="{IP}:2">
  <r:certificate><x:document xmlns:x="urn:example:certificate"/></r:certificate>
  <r:result><h:resultCode>OK</h:resultCode></r:result>
</r:GetCertificateResponse>""",
    "RemoveCertificateForCare": f"""
<r:RemoveCertificateForCare xmlns:r="{OWN}" {T3}>
  <r:intygs-id><t:root>SE2321000016-H489</t:root><t:extension>intyg-1</t:extension></r:intygs-id>
  <r:vardgivare-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-39KJ</t:extension></r:vardgivare-id>
  <x:trace xmlns:x="urn:example:extension">ignored</x:trace>
</r:RemoveCertificateForCare>""",
    "RemoveCertificateForCareResponse OK": f"""
<r:RemoveCertificateForCareResponse xmlns:r="{OWN}"
                                    {C3}>
  <r:result><c:resultCode>OK</c:resultCode></r:result>
</r:RemoveCertificateForCareResponse>""",
    "RemoveCertificateForCareResponse ERROR": f"""
<r:RemoveCertificateForCareResponse xmlns:r="{OWN}"
                                    {C3}>
  <r:result><c:resultCode>ERROR</c:resultCode><c:resultText>Certificate not found</c:resultText>
    <c:errorId>APPLICATION_ERROR</c:errorId></r:result>
</r:RemoveCertificateForCareResponse>""",
}


@pytest.mark.shared
@pytest.mark.parametrize("xml", HAND_WRITTEN.values(), ids=HAND_WRITTEN.keys())
def test_hand_written_body_validates_against_ours_and_the_reference(xml: str) -> None:
    need_shared()
    assert_valid_everywhere(etree.fromstring(xml.encode("utf-8"), parser()))


def test_the_examples_in_the_readme_are_valid() -> None:
    # RemoveCertificateForCare in its envelope, and our relation element for the extension points.
    text = (CONTRACTS / "README.md").read_text(encoding="utf-8")
    envelope, relation = (
        etree.fromstring(e.encode(), parser()) for e in re.findall(r"```xml\n(.*?)```", text, re.S)
    )
    body = envelope.find(f"{{{SOAP_ENV}}}Body")
    assert body is not None
    assert_valid(our_schema(), body[0], "README example")
    assert relation.tag == f"{{{OWN_EXTENSIONS}}}relation"
    assert_valid(our_schema(), relation, "README example")


INVALID = {
    "result missing": f'<r:RegisterCertificateResponse xmlns:r="{CP}:RegisterCertificateResponder:3"/>',
    "unknown element in the responder namespace": f"""
<r:SetConsentResponse xmlns:r="{IP}:SetConsentResponder:1" xmlns:h="{IP}:2">
  <r:result><h:resultCode>OK</h:resultCode></r:result><r:extra/>
</r:SetConsentResponse>""",
    "our relation element without the certificate it names": f"""
<r:GetCertificateResponse xmlns:r="{CP}:GetCertificateResponder:2" {C3} {T3}>
  <r:intyg>{INTYG}</r:intyg>
  {RELATION_TO.replace("till-intygs-id", "other-intygs-id")}
</r:GetCertificateResponse>""",
    "HSA-id with a wrong root": f"""
<r:RemoveCertificateForCare xmlns:r="{OWN}" {T3}>
  <r:intygs-id><t:root>SE2321000016-H489</t:root><t:extension>intyg-1</t:extension></r:intygs-id>
  <r:vardgivare-id><t:root>1.2.3</t:root><t:extension>SE2321000016-39KJ</t:extension></r:vardgivare-id>
</r:RemoveCertificateForCare>""",
    "personnummer with a dash": f"""
<r:ListCertificatesForCitizen xmlns:r="{CP}:ListCertificatesForCitizenResponder:4" {T3}>
  <r:person-id><t:root>1.2.752.129.2.1.3.1</t:root><t:extension>19121212-1212</t:extension></r:person-id>
  <r:arkiverade>false</r:arkiverade>
  <r:part><t:code>INVANA</t:code><t:codeSystem>769bb12b-bd9f-4203-a5cd-fd14f2eb3b80</t:codeSystem></r:part>
</r:ListCertificatesForCitizen>""",
    "resultText after errorId": f"""
<r:RevokeCertificateResponse xmlns:r="{CP}:RevokeCertificateResponder:2" {C3}>
  <r:result><c:resultCode>ERROR</c:resultCode><c:errorId>APPLICATION_ERROR</c:errorId>
    <c:resultText>x</c:resultText></r:result>
</r:RevokeCertificateResponse>""",
    "a timestamp with a zone": f"""
<r:SetCertificateStatus xmlns:r="{CP}:SetCertificateStatusResponder:2" {T3}>
  <r:intygs-id><t:root>x</t:root><t:extension>intyg-1</t:extension></r:intygs-id>
  <r:part><t:code>FKASSA</t:code><t:codeSystem>769bb12b-bd9f-4203-a5cd-fd14f2eb3b80</t:codeSystem></r:part>
  <r:status><t:code>RECEIV</t:code><t:codeSystem>9871cd17-8755-4ed9-b894-ff3729e775a4</t:codeSystem></r:status>
  <r:tidpunkt>2016-05-16T10:15:00Z</r:tidpunkt>
</r:SetCertificateStatus>""",
}


@pytest.mark.parametrize("xml", INVALID.values(), ids=INVALID.keys())
def test_our_schema_rejects_bodies_the_contract_rejects(xml: str) -> None:
    assert not our_schema().validate(etree.fromstring(xml.encode("utf-8"), parser()))
