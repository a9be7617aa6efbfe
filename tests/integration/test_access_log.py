"""The citizen's own access log (PDL 8 kap. 5 §): every access to their certificates, newest first.

Accesses are made the way they happen in production, care systems through SOAP and the citizen
through REST, and the extract (GET /access-log) must list exactly those, with who accessed (care unit
and care giver, HSA id and name, or the channel), and nothing of another citizen. The audit record
itself is built in service/audit.py and tested in tests/unit/test_operations.py.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.config import Settings
from service.model import Action
from tests.integration import soap as s
from tests.integration.rest import ANNA, BERTIL, CitizenApi, assert_problem, portal_settings, register
from tests.integration.soap import SoapClient

pytestmark = pytest.mark.shared

UNIT = "SE2321000016-H489"
GIVER = "SE2321000016-39KJ"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


def extract(api: CitizenApi, **params: Any) -> dict[str, Any]:
    response = api.get("/access-log", **params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def summary(entry: dict[str, Any]) -> tuple[Any, ...]:
    unit = entry["care_unit"]["id"] if entry["care_unit"] else None
    giver = entry["care_giver"]["id"] if entry["care_giver"] else None
    return (
        entry["action"],
        entry["outcome"],
        entry["channel"],
        entry["accessed_by"],
        unit,
        giver,
        entry["certificates"],
    )


def accesses(soap: SoapClient, client: TestClient) -> tuple[CitizenApi, CitizenApi]:
    """Anna's certificate is registered, read and listed by care, and read and sent by Anna; Bertil,
    another citizen, does the same with his own."""
    anna, bertil = CitizenApi(client, ANNA), CitizenApi(client, BERTIL)
    register(soap, "c-1", ANNA)
    register(soap, "b-1", BERTIL, care_unit="SE2321000016-OTHER", care_giver="SE2321000016-OTHERG")
    bertil.consent()
    anna.consent()
    assert not soap.call("GetCertificate", 2, s.get_certificate("c-1", "HSVARD")).is_fault
    assert s.listed_ids(soap.call("ListCertificatesForCare", 3, s.list_for_care(ANNA, care_giver=GIVER))) == [
        "c-1"
    ]
    assert bertil.get("/certificates/b-1").status_code == 200
    assert anna.get("/certificates/c-1").status_code == 200
    assert s.listed_ids(
        soap.call("ListCertificatesForCare", 3, s.list_for_care(BERTIL, units=("SE2321000016-OTHER",)))
    ) == ["b-1"]
    assert anna.post("/certificates/c-1/send", {"recipient": "FKASSA"}).status_code == 200
    assert bertil.post("/certificates/b-1/archive").status_code == 200
    return anna, bertil


def test_the_extract_lists_exactly_the_accesses_to_the_citizens_certificates_newest_first(
    soap: SoapClient, client: TestClient
) -> None:
    anna, _ = accesses(soap, client)

    log = extract(anna)

    assert [summary(e) for e in log["entries"]] == [
        ("send", "ok", "rest", "citizen", UNIT, GIVER, ["c-1"]),
        ("read", "ok", "rest", "citizen", UNIT, GIVER, ["c-1"]),
        ("list", "ok", "soap", "care_system", None, GIVER, ["c-1"]),
        ("read", "ok", "soap", "care_system", UNIT, GIVER, ["c-1"]),
        ("give_consent", "ok", "rest", "citizen", None, None, []),
        ("register", "ok", "soap", "care_system", UNIT, GIVER, ["c-1"]),
    ]
    assert log["total"] == 6 and (log["page"], log["page_size"]) == (1, 50)
    # What an action has beside it, in fields of its own: where the certificate went.
    assert [(e["recipient"], e["status"], e["deleted"]) for e in log["entries"][:2]] == [
        ("FKASSA", None, 0),
        (None, None, 0),
    ]
    times = [dt.datetime.fromisoformat(e["at"]) for e in log["entries"]]
    assert times == sorted(times, reverse=True)
    # Care's reads name where the data was read from, by name as well as HSA id.
    care_read = log["entries"][3]
    assert care_read["care_unit"]["name"] and care_read["care_giver"]["name"]
    assert log["entries"][2]["care_giver"]["name"]


def test_the_extract_holds_nothing_of_another_citizen(soap: SoapClient, client: TestClient) -> None:
    anna, bertil = accesses(soap, client)

    mine, his = extract(anna), extract(bertil)

    assert all("b-1" not in e["certificates"] for e in mine["entries"])
    assert all("SE2321000016-OTHER" not in str(e) for e in mine["entries"])
    assert all("c-1" not in e["certificates"] for e in his["entries"])
    assert [summary(e)[0] for e in his["entries"]] == [
        "archive",
        "list",
        "read",
        "give_consent",
        "register",
    ]
    assert ANNA not in str(his) and BERTIL not in str(mine)


def test_another_citizens_attempt_is_in_the_owners_extract_without_who_it_was(
    soap: SoapClient, client: TestClient
) -> None:
    anna, bertil = accesses(soap, client)
    assert_problem(bertil.get("/certificates/c-1"), 404, "not_found")

    newest = extract(anna)["entries"][0]

    # The access log records the attempt on Anna's certificate (refusals are audited), but the
    # extract names no other citizen.
    assert (newest["action"], newest["outcome"], newest["accessed_by"]) == ("read", "denied", "citizen")
    assert BERTIL not in str(newest) and BERTIL[2:] not in str(newest)
    assert all("c-1" not in e["certificates"] for e in extract(bertil)["entries"])


def test_reading_the_extract_is_itself_logged_and_the_extract_pages(
    soap: SoapClient, client: TestClient
) -> None:
    anna, _ = accesses(soap, client)
    first = extract(anna)

    again = extract(anna)
    # Bounded before the extract was first read, the pages hold a fixed set.
    until = (dt.datetime.fromisoformat(first["entries"][0]["at"]) + dt.timedelta(microseconds=1)).isoformat()
    pages = [extract(anna, page=p, page_size=4, to=until) for p in (1, 2, 3)]

    assert again["total"] == first["total"] + 1
    assert again["entries"][0]["action"] == "read_access_log"
    assert [len(p["entries"]) for p in pages] == [4, 2, 0]
    assert {p["total"] for p in pages} == {6}
    assert [e for p in pages for e in p["entries"]] == first["entries"]
    assert_problem(anna.get("/access-log", page=0), 422, "invalid_request")
    assert_problem(anna.get("/access-log", page_size=1000), 422, "invalid_request")


def test_the_extract_is_filtered_by_time(soap: SoapClient, client: TestClient) -> None:
    anna, _ = accesses(soap, client)
    entries = extract(anna)["entries"]
    care_read, care_list = entries[3]["at"], entries[2]["at"]

    between = extract(anna, **{"from": care_read, "to": care_list})["entries"]
    since = extract(anna, **{"from": care_list})["entries"]

    assert [summary(e)[:2] for e in between] == [("read", "ok")]
    assert between[0]["channel"] == "soap"
    assert [e["action"] for e in since][-3:] == ["send", "read", "list"]
    assert_problem(anna.get("/access-log", **{"from": "yesterday"}), 422, "invalid_request")


def test_the_extract_is_given_without_consent(soap: SoapClient, client: TestClient) -> None:
    register(soap, "c-1", ANNA)
    soap.call("GetCertificate", 2, s.get_certificate("c-1", "HSVARD"))
    anna = CitizenApi(client, ANNA)
    assert [summary(e)[:4] for e in extract(anna)["entries"]] == [
        ("read", "ok", "soap", "care_system"),
        ("register", "ok", "soap", "care_system"),
    ]


def test_every_care_access_in_the_extract_names_the_care_unit_and_giver(
    soap: SoapClient, client: TestClient
) -> None:
    anna, _ = accesses(soap, client)
    for entry in extract(anna)["entries"]:
        for organisation in (entry["care_unit"], entry["care_giver"]):
            if organisation is not None:
                assert organisation["name"], entry


def test_every_action_the_extract_can_show_is_a_documented_value_of_the_api(client: TestClient) -> None:
    """The citizen reads stable values whose meanings the API publishes, one for each action there is."""
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    action = schemas["AccessLogEntry"]["properties"]["action"]

    assert set(action.get("enum") or schemas["Action"]["enum"]) == {a.value for a in Action}
    assert all(f"`{a.value}`" in action["description"] for a in Action)
