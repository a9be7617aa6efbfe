"""A certificate's validity and relations end to end: registered through RegisterCertificate 3 (the peer
requests), read back by the citizen (REST, ListCertificatesForCitizen 4) and by care (GetCertificate 2,
ListCertificatesForCare 3). Every SOAP answer is validated against our XSDs and the reference ones by
``SoapClient.post``.

What registration reads is in tests/unit/test_document.py; the store's side (both engines, the fake) in
test_repository_contract.py and test_store.py; the 2013 contracts' validFrom/validTo in
test_legacy_citizen_soap.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from lxml import etree

from service.config import Settings
from tests.integration import soap as s
from tests.integration.rest import (
    ANNA,
    BERTIL,
    CitizenApi,
    portal_settings,
    register,
    remove_for_care,
    revoke,
)
from tests.integration.soap import T3, Reply, SoapClient
from tests.reference import OWN_EXTENSIONS

pytestmark = pytest.mark.shared

GIVER = "SE2321000016-39KJ"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


@pytest.fixture
def anna(client: TestClient) -> CitizenApi:
    return CitizenApi(client, ANNA)


def register_relating(
    soap: SoapClient, certificate_id: str, code: str, related: str, *, citizen: str = ANNA
) -> Reply:
    """A LISJP peer request for ``citizen`` that states the relation ``code`` to ``related``."""
    relation = s.relation(code, related)
    envelope = s.register_envelope(certificate_id, citizen).replace(
        "</skapadAv>", "</skapadAv>" + relation, 1
    )
    return soap.post(s.path_of("RegisterCertificate", 3), envelope)


def summary(anna: CitizenApi, certificate_id: str) -> dict[str, Any]:
    response = anna.get(f"/certificates/{certificate_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def listed(anna: CitizenApi) -> dict[str, dict[str, Any]]:
    response = anna.get("/certificates")
    assert response.status_code == 200, response.text
    return {c["id"]: c for c in response.json()["certificates"]}


def list_for_citizen(soap: SoapClient, *, start: str | None = None, end: str | None = None) -> Reply:
    dates = (f"<r:fromDatum>{start}</r:fromDatum>" if start else "") + (
        f"<r:tomDatum>{end}</r:tomDatum>" if end else ""
    )
    body = s.list_for_citizen(ANNA).replace("</r:arkiverade>", "</r:arkiverade>" + dates)
    return soap.call("ListCertificatesForCitizen", 4, body)


def relations_stated(reply: Reply, certificate_id: str) -> list[tuple[str, str]]:
    """(code, id) of each ``intyg/relation`` of the listed or read certificate ``certificate_id``."""
    [intyg] = [
        i
        for i in reply.find_all("intyg")
        if i.findtext(f"{{{s.C3}}}intygs-id/{{{T3}}}extension") == certificate_id
    ]
    return [
        (
            r.findtext(f"{{{s.C3}}}typ/{{{T3}}}code") or "",
            r.findtext(f"{{{s.C3}}}intygs-id/{{{T3}}}extension") or "",
        )
        for r in intyg.iterchildren(f"{{{s.C3}}}relation")
    ]


def relations_to(reply: Reply) -> list[tuple[str, str, str]]:
    """(from, code, to) of each relation another certificate states, in the answer's extension point."""

    def ext(relation: etree._Element, name: str) -> str:
        return relation.findtext(f"{{{OWN_EXTENSIONS}}}{name}/{{{T3}}}extension") or ""

    return [
        (
            ext(r, "fran-intygs-id"),
            r.findtext(f"{{{OWN_EXTENSIONS}}}typ/{{{T3}}}code") or "",
            ext(r, "till-intygs-id"),
        )
        for r in reply.body.iter(f"{{{OWN_EXTENSIONS}}}relation")
    ]


def care_get(soap: SoapClient, certificate_id: str) -> Reply:
    return soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD"))


def care_list(soap: SoapClient) -> Reply:
    return soap.call("ListCertificatesForCare", 3, s.list_for_care(ANNA, care_giver=GIVER))


# --- Validity ---------------------------------------------------------------------------------------------


def test_a_sick_leave_is_stored_valid_from_its_first_to_its_last_day_and_the_lists_say_so(
    soap: SoapClient, anna: CitizenApi
) -> None:
    # The LISJP peer request: periods 2015-12-07..10, 12..14 and 15..20, signed 2015-12-07T15:48:05. The
    # LUSE peer request states no period: it is valid the day it was signed.
    register(soap, "lisjp", ANNA)
    register(soap, "luse", ANNA, kind="luse")
    anna.consent()

    found = listed(anna)

    assert (found["lisjp"]["valid_from"], found["lisjp"]["valid_to"]) == ("2015-12-07", "2015-12-20")
    assert (found["luse"]["valid_from"], found["luse"]["valid_to"]) == ("2015-12-07", "2015-12-07")
    assert summary(anna, "lisjp")["valid_to"] == "2015-12-20"


@pytest.mark.parametrize(
    ("start", "end", "expected"),
    [
        (None, None, ["lisjp", "luse"]),
        ("2015-12-15", "2015-12-31", ["lisjp"]),  # the sick leave's last period
        ("2015-12-01", "2015-12-07", ["lisjp", "luse"]),  # both valid on the 7th
        ("2015-12-08", None, ["lisjp"]),
        (None, "2015-12-06", []),
        ("2015-12-21", None, []),
    ],
)
def test_the_citizens_list_by_dates_holds_the_certificates_valid_on_a_day_between_them(
    soap: SoapClient, anna: CitizenApi, start: str | None, end: str | None, expected: list[str]
) -> None:
    register(soap, "lisjp", ANNA)
    register(soap, "luse", ANNA, kind="luse")
    anna.consent()

    assert sorted(s.listed_ids(list_for_citizen(soap, start=start, end=end))) == expected


# Refused as the request is read, before the store is reached: the outcome cannot depend on the database.
BEFORE_THE_STORE = "refused before the store is reached"


@pytest.mark.one_engine(BEFORE_THE_STORE)
@pytest.mark.parametrize(
    ("start", "end"),
    [("2015-12-07", "2015-12-01"), ("2015-12-07", "2015-12-32"), ("2015-12-07", " ")],
    ids=["ends before it starts", "no such day", "no end"],
)
def test_a_sick_leave_whose_period_is_not_two_days_in_order_is_refused_and_nothing_is_stored(
    soap: SoapClient, start: str, end: str
) -> None:
    envelope = s.register_envelope("lisjp", ANNA).replace(
        "<ns3:start>2015-12-07</ns3:start>\n          <ns3:end>2015-12-10</ns3:end>",
        f"<ns3:start>{start}</ns3:start>\n          <ns3:end>{end}</ns3:end>",
    )
    assert envelope != s.register_envelope("lisjp", ANNA)

    code, _, error_id = soap.post(s.path_of("RegisterCertificate", 3), envelope).result()

    # The contract's DateType refuses a day that is none; the order of the two, only the reading of it.
    assert (code, error_id) == ("ERROR", "VALIDATION_ERROR")
    assert care_get(soap, "lisjp").is_fault


# --- Relations --------------------------------------------------------------------------------------------


def test_a_replaced_certificate_is_shown_replaced_to_the_citizen_and_to_care(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "a", ANNA)
    assert register_relating(soap, "b", "ERSATT", "a").result() == ("OK", None, None)
    anna.consent()

    # REST: A is replaced by B; B replaces A.
    a, b = summary(anna, "a"), summary(anna, "b")
    assert (a["replaced_by"], a["related_by"], a["relations"]) == (
        "b",
        [{"type": "ERSATT", "certificate_id": "b"}],
        [],
    )
    assert (b["replaced_by"], b["related_by"], b["relations"]) == (
        None,
        [],
        [{"type": "ERSATT", "certificate_id": "a"}],
    )
    assert listed(anna)["a"]["replaced_by"] == "b"
    # SOAP: each intyg states its own relations, and the answer says which certificate replaced A.
    for reply in (care_list(soap), list_for_citizen(soap)):
        assert relations_stated(reply, "b") == [("ERSATT", "a")]
        assert relations_stated(reply, "a") == []
        assert relations_to(reply) == [("b", "ERSATT", "a")]
    replaced = care_get(soap, "a")
    assert relations_to(replaced) == [("b", "ERSATT", "a")]
    assert relations_stated(replaced, "a") == []
    replacing = care_get(soap, "b")
    assert (relations_stated(replacing, "b"), relations_to(replacing)) == ([("ERSATT", "a")], [])


def test_deleting_the_replacement_keeps_the_certificate_it_replaced_and_it_is_no_longer_replaced(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "a", ANNA)
    register_relating(soap, "b", "ERSATT", "a")
    assert relations_to(care_get(soap, "a")) == [("b", "ERSATT", "a")]

    # Rule 5 without consent: B is deleted for good; A is kept by its own flags.
    remove_for_care(soap, "b")

    assert care_get(soap, "b").is_fault
    assert relations_to(care_get(soap, "a")) == []
    anna.consent()
    assert (summary(anna, "a")["replaced_by"], list(listed(anna))) == (None, ["a"])


def test_a_revoked_replacement_replaces_nothing(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "a", ANNA)
    register_relating(soap, "b", "ERSATT", "a")

    revoke(soap, "b", ANNA)

    anna.consent()
    assert summary(anna, "a")["replaced_by"] is None
    assert summary(anna, "b")["relations"] == [{"type": "ERSATT", "certificate_id": "a"}]
    assert relations_to(care_get(soap, "a")) == []


def test_a_complement_is_stored_and_shown_from_both_sides(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "a", ANNA)
    register_relating(soap, "c", "KOMPLT", "a")
    anna.consent()

    a, c = summary(anna, "a"), summary(anna, "c")

    assert (a["replaced_by"], a["related_by"]) == (None, [{"type": "KOMPLT", "certificate_id": "c"}])
    assert c["relations"] == [{"type": "KOMPLT", "certificate_id": "a"}]
    assert relations_to(care_get(soap, "a")) == [("c", "KOMPLT", "a")]


def test_another_patients_certificate_naming_one_is_not_shown_with_it(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "a", ANNA)
    assert register_relating(soap, "theirs", "ERSATT", "a", citizen=BERTIL).result()[0] == "OK"
    anna.consent()

    assert (summary(anna, "a")["replaced_by"], summary(anna, "a")["related_by"]) == (None, [])
    assert relations_to(care_get(soap, "a")) == []


@pytest.mark.one_engine(BEFORE_THE_STORE)
@pytest.mark.parametrize(
    ("code", "related"), [("ERSATTER", "a"), ("ERSATT", "new")], ids=["unknown code", "itself"]
)
def test_a_relation_of_no_known_code_or_to_the_certificate_itself_is_refused_and_nothing_is_stored(
    soap: SoapClient, code: str, related: str
) -> None:
    register(soap, "a", ANNA)

    refused = register_relating(soap, "new", code, related)

    assert (refused.result()[0], refused.result()[2]) == ("ERROR", "VALIDATION_ERROR")
    assert care_get(soap, "new").is_fault
