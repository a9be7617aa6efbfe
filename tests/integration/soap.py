"""A SOAP client for end-to-end tests: posts envelopes through the app, and checks every answer.

Every non-fault response body is validated against our contracts and, where ../shared is present,
against the reference RIVTA XSD of its namespace, so each test also proves wire compatibility.
``zeep_service`` loads a reference WSDL in zeep, a real client, with a transport into the app.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import requests
from fastapi.testclient import TestClient
from lxml import etree
from requests.structures import CaseInsensitiveDict

from tests.reference import (
    BY_NAMESPACE,
    CONTRACTS_TABLE,
    PEER_REQUESTS,
    RIVTA,
    SOAP_ENV,
    assert_valid,
    need_shared,
    our_schema,
    parser,
    read_templates,
    reference_schema,
    render,
)

T3 = "urn:riv:clinicalprocess:healthcond:certificate:types:3"
C3 = "urn:riv:clinicalprocess:healthcond:certificate:3"
C1 = "urn:riv:clinicalprocess:healthcond:certificate:1"
HR2 = "urn:riv:insuranceprocess:healthreporting:2"


def path_of(operation: str, major: int) -> str:
    if operation in ("SetConsent", "GetConsent", "ListCertificates") or (
        major == 1 and operation in ("GetCertificate", "SetCertificateStatus")
    ):
        return f"/insuranceprocess/healthreporting/{operation}/{major}/rivtabp20"
    if operation == "RemoveCertificateForCare":
        return f"/intygstjanst/certificate/{operation}/{major}/rivtabp21"
    return f"/clinicalprocess/healthcond/certificate/{operation}/{major}/rivtabp21"


def envelope_for(operation: str, major: int, body: str, *, address: str = "SE2321000016-39KJ") -> bytes:
    """A body in an envelope with the contract's addressing header (LogicalAddress or wsa:To)."""
    header = (
        f'<wsa:To xmlns:wsa="http://www.w3.org/2005/08/addressing">{address}</wsa:To>'
        if path_of(operation, major).endswith("rivtabp20")
        else f'<la:LogicalAddress xmlns:la="urn:riv:itintegration:registry:1">{address}</la:LogicalAddress>'
    )
    return (
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Header>{header}</soapenv:Header>'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    ).encode()


@dataclass
class Reply:
    status: int
    root: etree._Element
    body: etree._Element  # the one element in soap:Body (a response or a Fault)

    @property
    def is_fault(self) -> bool:
        return self.body.tag == f"{{{SOAP_ENV}}}Fault"

    @property
    def fault_code(self) -> str | None:
        return self.body.findtext("faultcode") if self.is_fault else None

    @property
    def fault_string(self) -> str:
        return self.body.findtext("faultstring") or ""

    def result(self) -> tuple[str | None, str | None, str | None]:
        """resultCode, resultText (or infoText/errorText), errorId of the response's result."""
        result = next((e for e in self.body if etree.QName(e).localname == "result"), None)
        assert result is not None, "the response has no result"
        values = {etree.QName(e).localname: e.text for e in result}
        text = values.get("resultText") or values.get("infoText") or values.get("errorText")
        return values.get("resultCode"), text, values.get("errorId")

    def find_all(self, local_name: str) -> list[etree._Element]:
        return [
            e for e in self.body.iter() if isinstance(e.tag, str) and etree.QName(e).localname == local_name
        ]

    def texts(self, local_name: str) -> list[str]:
        return [e.text or "" for e in self.find_all(local_name)]


def validate_response(body: etree._Element) -> None:
    assert_valid(our_schema(), body, "our contracts")
    contract = BY_NAMESPACE[etree.QName(body).namespace]
    if contract.reference_xsd is not None and RIVTA.is_dir():
        assert_valid(reference_schema(contract.reference_xsd), body, "reference contract")


class SoapClient:
    """Posts envelopes through any httpx client: the app's TestClient, or a real socket."""

    def __init__(self, client: TestClient | httpx.Client) -> None:
        self.client = client

    def post(self, path: str, envelope: str | bytes, *, expect_status: int | None = None) -> Reply:
        data = envelope.encode("utf-8") if isinstance(envelope, str) else envelope
        response = self.client.post(path, content=data, headers={"Content-Type": "text/xml; charset=utf-8"})
        assert response.headers["content-type"].startswith("text/xml")
        root = etree.fromstring(response.content, parser())
        body = root.find(f"{{{SOAP_ENV}}}Body")
        assert body is not None
        (element,) = [e for e in body if isinstance(e.tag, str)]
        reply = Reply(response.status_code, root, element)
        if reply.is_fault:
            assert response.status_code == 500
        else:
            assert response.status_code == 200
            validate_response(element)
        if expect_status is not None:
            assert response.status_code == expect_status
        return reply

    def call(self, operation: str, major: int, body: str, *, address: str = "SE2321000016-39KJ") -> Reply:
        """Wrap a body in an envelope with the contract's addressing header, and post it."""
        return self.post(path_of(operation, major), envelope_for(operation, major, body, address=address))


# --- Requests as real callers write them: the peer-request templates ------------------------------------


def peer_request(folder: str, template: str = "request", **values: str) -> str:
    """A peer-request envelope rendered with the given placeholder values."""
    need_shared()
    found = list((PEER_REQUESTS / folder).glob("*.stg")) if (PEER_REQUESTS / folder).is_dir() else []
    path = PEER_REQUESTS / folder if folder.endswith(".stg") else found[0]
    return render(read_templates(path)[template], values)


def register_envelope(
    certificate_id: str,
    person_id: str,
    *,
    kind: str = "lisjp",
    care_unit: str = "SE2321000016-H489",
    care_giver: str = "SE2321000016-39KJ",
    version: str = "1.0",
) -> str:
    """A RegisterCertificate 3 request from the national service's own tests, for this patient/unit;
    ``version`` where the template takes one (LUSE's and the default's)."""
    envelope = peer_request(
        f"register/request_{kind}.stg",
        **{"data.intygsId": certificate_id, "data.personId": person_id, "data.intygsVersion": version},
    )
    # Registered under the samordningsnummer root; a personnummer goes under its own root.
    if int(person_id[6:8]) <= 60:
        envelope = envelope.replace("1.2.752.129.2.1.3.3", "1.2.752.129.2.1.3.1")
    return envelope.replace("SE2321000016-H489</", f"{care_unit}</").replace(
        "SE2321000016-39KJ</", f"{care_giver}</"
    )


def relation(code: str, certificate_id: str) -> str:
    """An ``intyg/relation`` as Webcert writes it after ``skapadAv``, for the register templates (their
    default namespace is core 3, ``ns3`` the types)."""
    return (
        f"<relation><typ><ns3:code>{code}</ns3:code><ns3:codeSystem>c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146"
        f"</ns3:codeSystem></typ><intygs-id><ns3:root>SE2321000016-H489</ns3:root><ns3:extension>"
        f"{certificate_id}</ns3:extension></intygs-id></relation>"
    )


# --- zeep, a real client, on the reference WSDLs ----------------------------------------------------------


def _app_transport(client: TestClient) -> Any:
    """zeep's Transport, posting into the app instead of over the network."""
    import zeep

    class AppTransport(zeep.Transport):
        def post_xml(
            self, address: str, envelope: etree._Element, headers: dict[str, str]
        ) -> requests.Response:
            reply = client.post(urlsplit(address).path, content=etree.tostring(envelope), headers=headers)
            response = requests.Response()
            response.status_code = reply.status_code
            response._content = reply.content
            response.headers = CaseInsensitiveDict(reply.headers)
            response.encoding = "utf-8"
            if reply.status_code == 200:
                body = etree.fromstring(reply.content, parser()).find(f"{{{SOAP_ENV}}}Body")
                assert body is not None
                validate_response(body[0])
            return response

    return AppTransport()


def zeep_service(client: TestClient, operation: str, major: int) -> Any:
    """A zeep service proxy for the reference WSDL of a contract, bound to the app's path for it."""
    import zeep

    need_shared()
    contract = next(c for c in CONTRACTS_TABLE if (c.operation, c.major) == (operation, major))
    assert contract.reference_wsdl is not None
    zeep_client = zeep.Client(
        str(RIVTA / contract.reference_wsdl),
        transport=_app_transport(client),
        settings=zeep.Settings(strict=True, raw_response=False),
    )
    binding = next(iter(zeep_client.wsdl.bindings))
    return zeep_client.create_service(binding, f"http://testserver{path_of(operation, major)}")


# --- Request bodies, written as a care system or portal would ----------------------------------------------

PART_SYSTEM = "769bb12b-bd9f-4203-a5cd-fd14f2eb3b80"
STATUS_SYSTEM = "9871cd17-8755-4ed9-b894-ff3729e775a4"
CP = "urn:riv:clinicalprocess:healthcond:certificate"
IP = "urn:riv:insuranceprocess:healthreporting"
OWN = "urn:riv:intygstjanst:certificate:RemoveCertificateForCareResponder:1"


def _root(person_id: str) -> str:
    return "1.2.752.129.2.1.3.3" if int(person_id[6:8]) > 60 else "1.2.752.129.2.1.3.1"


def get_certificate(certificate_id: str, part: str) -> str:
    return (
        f'<r:GetCertificate xmlns:r="{CP}:GetCertificateResponder:2" xmlns:t="{T3}">'
        f"<r:intygs-id><t:root>SE2321000016-H489</t:root><t:extension>{certificate_id}</t:extension></r:intygs-id>"
        f"<r:part><t:code>{part}</t:code><t:codeSystem>{PART_SYSTEM}</t:codeSystem></r:part></r:GetCertificate>"
    )


def list_for_care(person_id: str, *, care_giver: str | None = None, units: tuple[str, ...] = ()) -> str:
    scope = (
        f"<r:vardgivar-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{care_giver}</t:extension></r:vardgivar-id>"
        if care_giver
        else "".join(
            f"<r:enhets-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{u}</t:extension></r:enhets-id>"
            for u in units
        )
    )
    return (
        f'<r:ListCertificatesForCare xmlns:r="{CP}:ListCertificatesForCareResponder:3" xmlns:t="{T3}">'
        f"<r:person-id><t:root>{_root(person_id)}</t:root><t:extension>{person_id}</t:extension></r:person-id>"
        f"{scope}</r:ListCertificatesForCare>"
    )


def list_for_citizen(person_id: str, *, archived: bool = False) -> str:
    return (
        f'<r:ListCertificatesForCitizen xmlns:r="{CP}:ListCertificatesForCitizenResponder:4" xmlns:t="{T3}">'
        f"<r:person-id><t:root>{_root(person_id)}</t:root><t:extension>{person_id}</t:extension></r:person-id>"
        f"<r:arkiverade>{'true' if archived else 'false'}</r:arkiverade>"
        f"<r:part><t:code>INVANA</t:code><t:codeSystem>{PART_SYSTEM}</t:codeSystem></r:part>"
        "</r:ListCertificatesForCitizen>"
    )


def set_status(certificate_id: str, part: str, status: str, at: str = "2026-01-02T10:00:00") -> str:
    return (
        f'<r:SetCertificateStatus xmlns:r="{CP}:SetCertificateStatusResponder:2" xmlns:t="{T3}">'
        f"<r:intygs-id><t:root>x</t:root><t:extension>{certificate_id}</t:extension></r:intygs-id>"
        f"<r:part><t:code>{part}</t:code><t:codeSystem>{PART_SYSTEM}</t:codeSystem></r:part>"
        f"<r:status><t:code>{status}</t:code><t:codeSystem>{STATUS_SYSTEM}</t:codeSystem></r:status>"
        f"<r:tidpunkt>{at}</r:tidpunkt></r:SetCertificateStatus>"
    )


def send_to_recipient(
    certificate_id: str,
    recipient: str,
    patient: str,
    *,
    citizen: str | None = None,
    care_unit: str = "SE2321000016-H489",
    care_giver: str = "SE2321000016-39KJ",
) -> str:
    """A SendCertificateToRecipient 2: sent by a professional (``hosPersonal``) of the care unit named, or by
    ``citizen`` (``person-id``) through a portal."""
    if citizen is not None:
        sender = f"<r:person-id><t:root>{_root(citizen)}</t:root><t:extension>{citizen}</t:extension></r:person-id>"
    else:
        sender = (
            f'<r:hosPersonal xmlns:c="{C3}">'
            "<c:personal-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-6G5R</t:extension>"
            "</c:personal-id><c:fullstandigtNamn>Karl Karlsson</c:fullstandigtNamn><c:enhet>"
            f"<c:enhets-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{care_unit}</t:extension></c:enhets-id>"
            "<c:arbetsplatskod><t:root>1.2.752.29.4.71</t:root><t:extension>45312</t:extension></c:arbetsplatskod>"
            "<c:enhetsnamn>VE1</c:enhetsnamn><c:postadress/><c:postnummer/><c:postort/><c:telefonnummer/>"
            f"<c:vardgivare><c:vardgivare-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{care_giver}"
            "</t:extension></c:vardgivare-id><c:vardgivarnamn>VG1</c:vardgivarnamn></c:vardgivare>"
            "</c:enhet></r:hosPersonal>"
        )
    return (
        f'<r:SendCertificateToRecipient xmlns:r="{CP}:SendCertificateToRecipientResponder:2" xmlns:t="{T3}">'
        "<r:skickatTidpunkt>2026-01-02T10:00:00</r:skickatTidpunkt>"
        f"<r:intygs-id><t:root>x</t:root><t:extension>{certificate_id}</t:extension></r:intygs-id>"
        f"<r:patientPerson-id><t:root>{_root(patient)}</t:root><t:extension>{patient}</t:extension>"
        f"</r:patientPerson-id><r:mottagare><t:code>{recipient}</t:code><t:codeSystem>{PART_SYSTEM}"
        f"</t:codeSystem></r:mottagare><r:skickatAv>{sender}</r:skickatAv></r:SendCertificateToRecipient>"
    )


def remove_for_care(certificate_id: str, care_giver: str = "SE2321000016-39KJ") -> str:
    return (
        f'<r:RemoveCertificateForCare xmlns:r="{OWN}" xmlns:t="{T3}">'
        f"<r:intygs-id><t:root>x</t:root><t:extension>{certificate_id}</t:extension></r:intygs-id>"
        f"<r:vardgivare-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{care_giver}</t:extension>"
        "</r:vardgivare-id></r:RemoveCertificateForCare>"
    )


def set_consent(person_id: str, given: bool) -> str:
    return (
        f'<r:SetConsentRequest xmlns:r="{IP}:SetConsentResponder:1"><r:personnummer>{person_id}</r:personnummer>'
        f"<r:consent-given>{'true' if given else 'false'}</r:consent-given></r:SetConsentRequest>"
    )


def get_consent(person_id: str) -> str:
    return (
        f'<r:GetConsentRequest xmlns:r="{IP}:GetConsentResponder:1">'
        f"<r:personnummer>{person_id}</r:personnummer></r:GetConsentRequest>"
    )


KV_INTYGSTYP = "b64ea353-e8f6-4832-b563-fc7d46f29548"
KV_DODSPLATS_BOENDE = "65f0069f-14b5-4634-b187-5193580a3349"


def death_certificate(
    certificate_id: str,
    person_id: str,
    *,
    version: str = "1.0",
    care_unit: str = "SE2321000016-H489",
    care_giver: str = "SE2321000016-39KJ",
) -> str:
    """A RegisterCertificate 3 of a death certificate (Dödsbevis, DB) as a care system writes one. Its
    answers are those the type's business rules ask for (``db.v1.sch``, rivta/README.md "Per-type
    business rules"): how identity was established (1), a certain date of death (2), the place of death
    (3), not a newborn's death (4), no explosive implant (5), an examination (6), no police report (7)."""
    body = f"""
<r:RegisterCertificate xmlns:r="{CP}:RegisterCertificateResponder:3" xmlns="{C3}" xmlns:t="{T3}">
  <r:intyg>
    <intygs-id><t:root>{care_unit}</t:root><t:extension>{certificate_id}</t:extension></intygs-id>
    <typ><t:code>DB</t:code><t:codeSystem>{KV_INTYGSTYP}</t:codeSystem><t:displayName>Dödsbevis</t:displayName></typ>
    <version>{version}</version>
    <signeringstidpunkt>2026-11-28T09:12:00</signeringstidpunkt>
    <skickatTidpunkt>2026-11-28T09:12:00</skickatTidpunkt>
    <patient>
      <person-id><t:root>{_root(person_id)}</t:root><t:extension>{person_id}</t:extension></person-id>
      <fornamn>Tolvan</fornamn><efternamn>Tolvansson</efternamn>
      <postadress>Storgatan 1</postadress><postnummer>11111</postnummer><postort>Stadby</postort>
    </patient>
    <skapadAv>
      <personal-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>SE2321000016-6G5R</t:extension></personal-id>
      <fullstandigtNamn>Karl Karlsson</fullstandigtNamn>
      <enhet>
        <enhets-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{care_unit}</t:extension></enhets-id>
        <arbetsplatskod><t:root>1.2.752.29.4.71</t:root><t:extension>45312</t:extension></arbetsplatskod>
        <enhetsnamn>Vårdenheten</enhetsnamn>
        <postadress>Enhetsg. 1</postadress><postnummer>100 10</postnummer><postort>Stadby</postort>
        <telefonnummer>0812341234</telefonnummer>
        <vardgivare>
          <vardgivare-id><t:root>1.2.752.129.2.1.4.1</t:root><t:extension>{care_giver}</t:extension></vardgivare-id>
          <vardgivarnamn>Vårdgivaren</vardgivarnamn>
        </vardgivare>
      </enhet>
    </skapadAv>
    <svar id="1"><delsvar id="1.1">Körkort</delsvar></svar>
    <svar id="2"><delsvar id="2.1">true</delsvar><delsvar id="2.2">2026-11-27</delsvar></svar>
    <svar id="3">
      <delsvar id="3.1">Stadby</delsvar>
      <delsvar id="3.2"><t:cv><t:code>SJUKHUS</t:code><t:codeSystem>{KV_DODSPLATS_BOENDE}</t:codeSystem><t:displayName>Sjukhus</t:displayName></t:cv></delsvar>
    </svar>
    <svar id="4"><delsvar id="4.1">false</delsvar></svar>
    <svar id="5"><delsvar id="5.1">false</delsvar></svar>
    <svar id="6"><delsvar id="6.1">true</delsvar></svar>
    <svar id="7"><delsvar id="7.1">false</delsvar></svar>
  </r:intyg>
</r:RegisterCertificate>"""
    return envelope_for("RegisterCertificate", 3, body, address=care_giver).decode()


def listed_ids(reply: Reply) -> list[str]:
    """The ids of the certificates (``intyg``) in a response, in order; not ids a relation names."""
    return [
        intyg_id.findtext(f"{{{T3}}}extension") or ""
        for intyg in reply.find_all("intyg")
        for intyg_id in intyg
        if isinstance(intyg_id.tag, str) and etree.QName(intyg_id).localname == "intygs-id"
    ]


def statuses(reply: Reply) -> list[tuple[str | None, str | None]]:
    """(part, status) of each status event of the certificate in a GetCertificate 2 answer."""
    found = []
    for event in reply.find_all("status"):
        children = {etree.QName(c).localname: c for c in event if isinstance(c.tag, str)}
        if "part" in children and "tidpunkt" in children:
            found.append(
                (children["part"].findtext(f"{{{T3}}}code"), children["status"].findtext(f"{{{T3}}}code"))
            )
    return found
