"""The citizen REST API end to end: every endpoint's success and its refusals, through the app.

Care systems register, revoke and remove through SOAP (the peer-request envelopes), the citizen acts
through REST with a token of the test portal (``tests/integration/rest.py``), and the effects are read
back through both channels. The rules themselves are in tests/unit/test_rules.py and the operations in
tests/unit/test_operations.py; authentication is in test_rest_auth.py.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from httpx2 import Response
from lxml import etree

from service.app import create_app
from service.config import Settings
from service.rest.routes import PREFIX
from tests.integration import soap as s
from tests.integration.observation import observed
from tests.integration.rest import (
    ANNA,
    BERTIL,
    OPERATIONS,
    PROBLEM_JSON,
    CitizenApi,
    assert_problem,
    portal_settings,
    register,
    remove_for_care,
    revoke,
)
from tests.integration.soap import SoapClient

# Refused by the API's own schema and limits (or answered by no operation) before the store is reached:
# the outcome cannot depend on the database.
BEFORE_THE_STORE = "refused before the store is reached"

pytestmark = pytest.mark.shared

UNIT = "SE2321000016-H489"
GIVER = "SE2321000016-39KJ"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


@pytest.fixture
def anna(client: TestClient) -> CitizenApi:
    return CitizenApi(client, ANNA)


@pytest.fixture
def bertil(client: TestClient) -> CitizenApi:
    return CitizenApi(client, BERTIL)


def care_statuses(soap: SoapClient, certificate_id: str) -> list[tuple[str | None, str | None]]:
    """(part, status) of the certificate's history, as care reads it (GetCertificate 2, HSVARD)."""
    return s.statuses(soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD")))


def care_lists(soap: SoapClient, citizen: str = ANNA) -> list[str]:
    return sorted(
        s.listed_ids(soap.call("ListCertificatesForCare", 3, s.list_for_care(citizen, care_giver=GIVER)))
    )


# --- GET /certificates ------------------------------------------------------------------------------------


def test_the_list_shows_the_citizens_own_certificates_and_no_one_elses(
    soap: SoapClient, anna: CitizenApi, bertil: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    register(soap, "c-2", ANNA, kind="luse")
    register(soap, "b-1", BERTIL)
    anna.consent()
    bertil.consent()

    response = anna.get("/certificates")

    assert response.status_code == 200
    listed = {c["id"]: c for c in response.json()["certificates"]}
    assert sorted(listed) == ["c-1", "c-2"]
    first = listed["c-1"]
    assert first["type"]["code"] == "LISJP" and first["type"]["name"]
    assert first["care_unit"]["id"] == UNIT and first["care_unit"]["name"]
    assert first["care_giver"]["id"] == GIVER and first["care_giver"]["name"]
    assert first["signing_doctor"]
    assert (first["revoked"], first["archived"], first["sent_to"]) == (False, False, [])
    assert listed["c-2"]["type"]["code"] == "LUSE"
    assert bertil.listed() == ["b-1"]


def test_the_list_without_consent_is_refused_with_consent_required(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    assert_problem(anna.get("/certificates"), 403, "consent_required")
    anna.consent()
    assert anna.listed() == ["c-1"]
    anna.consent(False)
    assert_problem(anna.get("/certificates", archived="true"), 403, "consent_required")


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_the_list_refuses_an_archived_value_that_is_not_a_boolean(anna: CitizenApi) -> None:
    anna.consent()
    assert_problem(anna.get("/certificates", archived="maybe"), 422, "invalid_request")


# --- GET /certificates/{id} and /document ------------------------------------------------------------------


def test_a_certificate_is_read_with_its_content_as_structured_answers(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()

    response = anna.get("/certificates/c-1")

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["id"] == "c-1" and body["type"]["code"] == "LISJP"
    answers = body["answers"]
    assert answers and all(a["id"] and a["parts"] for a in answers)
    values = [p["value"] for a in answers for p in a["parts"]]
    assert any(isinstance(v, str) and v for v in values), "free-text answers are strings"
    assert any(isinstance(v, dict) for v in values), "coded answers are objects"
    # Every answer id of the registered certificate is there (delsvar under svar).
    document = etree.fromstring(anna.get("/certificates/c-1/document").content)
    svar_ids = {
        e.get("id") for e in document.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "svar"
    }
    assert {a["id"] for a in answers} == svar_ids


def test_the_document_is_the_stored_xml(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()

    response = anna.get("/certificates/c-1/document")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    root = etree.fromstring(response.content)
    assert etree.QName(root).localname == "intyg"
    texts = {e.text for e in root.iter() if isinstance(e.tag, str)}
    assert "c-1" in texts and ANNA in texts


@pytest.mark.parametrize("path", ["/certificates/c-1", "/certificates/c-1/document"])
def test_reading_a_certificate_without_consent_is_refused(
    soap: SoapClient, anna: CitizenApi, path: str
) -> None:
    register(soap, "c-1", ANNA)
    assert_problem(anna.get(path), 403, "consent_required")


def test_a_revoked_certificate_reads_as_revoked(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    revoke(soap, "c-1", ANNA)
    assert anna.get("/certificates/c-1").json()["revoked"] is True
    (listed,) = anna.get("/certificates").json()["certificates"]
    assert listed["revoked"] is True


def test_a_certificate_id_longer_than_the_api_allows_is_invalid(anna: CitizenApi) -> None:
    anna.consent()
    assert_problem(anna.get("/certificates/" + "x" * 200), 422, "invalid_request")


# --- Another citizen's certificate: exactly an unknown id ----------------------------------------------------

CERTIFICATE_ACTIONS = [
    ("GET", "", None),
    ("GET", "/document", None),
    ("POST", "/archive", None),
    ("POST", "/restore", None),
    ("POST", "/send", {"recipient": "FKASSA"}),
]


@pytest.mark.parametrize(("method", "suffix", "body"), CERTIFICATE_ACTIONS, ids=lambda v: str(v))
def test_another_citizens_certificate_answers_exactly_like_an_unknown_id(
    soap: SoapClient,
    client: TestClient,
    anna: CitizenApi,
    bertil: CitizenApi,
    method: str,
    suffix: str,
    body: Any,
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    bertil.consent()

    def as_bertil(certificate_id: str) -> Response:
        return client.request(
            method, f"{PREFIX}/certificates/{certificate_id}{suffix}", json=body, headers=bertil.headers
        )

    others = as_bertil("c-1")
    unknown = as_bertil("no-such-id")

    assert_problem(others, 404, "not_found")
    assert (others.status_code, others.json(), others.headers.get("content-type")) == (
        unknown.status_code,
        unknown.json(),
        unknown.headers.get("content-type"),
    )
    # Nothing happened to Anna's certificate.
    (mine,) = anna.get("/certificates").json()["certificates"]
    assert (mine["archived"], mine["sent_to"]) == (False, [])
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]


def test_another_citizens_certificate_is_counted_and_logged_as_an_unknown_id(
    soap: SoapClient, client: TestClient, anna: CitizenApi, bertil: CitizenApi
) -> None:
    """The metrics and the request log (README "Callers") tell the two apart no more than the answer does; the
    audit trail keeps the truth (tests/integration/test_access_log.py)."""
    register(soap, "c-1", ANNA)
    anna.consent()
    bertil.consent()
    for method, suffix, body in CERTIFICATE_ACTIONS:
        with observed() as unknown:
            client.request(
                method, f"{PREFIX}/certificates/no-such-id{suffix}", json=body, headers=bertil.headers
            )
        with observed() as others:
            client.request(method, f"{PREFIX}/certificates/c-1{suffix}", json=body, headers=bertil.headers)

        assert others.counted == unknown.counted, (method, suffix)
        assert others.logged == unknown.logged
        assert len(others.logged) == 1


def test_another_citizens_certificate_is_not_found_even_without_consent(
    soap: SoapClient, anna: CitizenApi, bertil: CitizenApi
) -> None:
    # Bertil has no consent: answering 403 would still tell him the id exists.
    register(soap, "c-1", ANNA)
    assert bertil.get("/certificates/c-1").json() == bertil.get("/certificates/nope").json()


# --- archive / restore (rule 4) ------------------------------------------------------------------------------


def test_archive_and_restore_are_idempotent_and_move_the_certificate_between_the_lists(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    register(soap, "c-2", ANNA)
    anna.consent()

    for _ in range(2):
        archived = anna.post("/certificates/c-1/archive")
        assert archived.status_code == 200, archived.text
        assert archived.json()["id"] == "c-1" and archived.json()["archived"] is True
    assert anna.listed() == ["c-2"]
    assert anna.listed(archived=True) == ["c-1"]
    # Archiving is invisible to care (rule 4) and recorded once.
    assert care_lists(soap) == ["c-1", "c-2"]
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV"), ("INVANA", "DELETE")]

    for _ in range(2):
        restored = anna.post("/certificates/c-1/restore")
        assert restored.status_code == 200, restored.text
        assert restored.json()["archived"] is False
    assert sorted(anna.listed()) == ["c-1", "c-2"]
    assert anna.listed(archived=True) == []
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV"), ("INVANA", "DELETE"), ("INVANA", "RESTOR")]


def test_an_archived_certificate_can_still_be_read(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    anna.post("/certificates/c-1/archive")
    response = anna.get("/certificates/c-1")
    assert response.status_code == 200 and response.json()["archived"] is True


@pytest.mark.parametrize("action", ["archive", "restore"])
def test_archive_and_restore_need_consent(soap: SoapClient, anna: CitizenApi, action: str) -> None:
    register(soap, "c-1", ANNA)
    assert_problem(anna.post(f"/certificates/c-1/{action}"), 403, "consent_required")
    anna.consent()
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]


def test_archiving_an_unknown_id_is_not_found(anna: CitizenApi) -> None:
    anna.consent()
    assert_problem(anna.post("/certificates/nope/archive"), 404, "not_found")


# --- send ----------------------------------------------------------------------------------------------------


def test_sending_records_sentto_once_and_says_when_it_was_already_sent(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()

    first = anna.post("/certificates/c-1/send", {"recipient": "FKASSA"})
    again = anna.post("/certificates/c-1/send", {"recipient": "FKASSA"})

    assert first.status_code == 200, first.text
    assert first.json()["already_sent"] is False
    assert [d["recipient"] for d in first.json()["certificate"]["sent_to"]] == ["FKASSA"]
    assert again.status_code == 200, again.text
    assert again.json()["already_sent"] is True
    assert [d["recipient"] for d in again.json()["certificate"]["sent_to"]] == ["FKASSA"]
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV"), ("FKASSA", "SENTTO")]
    (listed,) = anna.get("/certificates").json()["certificates"]
    assert [d["recipient"] for d in listed["sent_to"]] == ["FKASSA"]


@pytest.mark.parametrize("recipient", ["NOPE", "fkassa", "INVANA", "HSVARD"])
def test_sending_to_an_unknown_recipient_is_unknown_recipient(
    soap: SoapClient, anna: CitizenApi, recipient: str
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    assert_problem(anna.post("/certificates/c-1/send", {"recipient": recipient}), 422, "unknown_recipient")
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]


def test_sending_to_a_recipient_that_does_not_take_the_type_is_refused(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)  # LISJP: Försäkringskassan's, not Transportstyrelsen's
    anna.consent()
    assert_problem(anna.post("/certificates/c-1/send", {"recipient": "TRANSP"}), 422, "unknown_recipient")
    assert care_statuses(soap, "c-1") == [("HSVARD", "RECEIV")]


def test_sending_a_revoked_certificate_is_a_conflict(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    revoke(soap, "c-1", ANNA)
    assert_problem(anna.post("/certificates/c-1/send", {"recipient": "FKASSA"}), 409, "revoked")
    assert ("FKASSA", "SENTTO") not in care_statuses(soap, "c-1")


def test_sending_needs_consent(soap: SoapClient, anna: CitizenApi) -> None:
    register(soap, "c-1", ANNA)
    assert_problem(anna.post("/certificates/c-1/send", {"recipient": "FKASSA"}), 403, "consent_required")


@pytest.mark.parametrize(
    "body",
    [{"recipient": "FKASSA", "copy_to": "me"}, {}, {"recipient": ""}, {"recipient": 7}, [], "FKASSA"],
    ids=["unknown field", "empty", "empty recipient", "number", "list", "string"],
)
@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_send_body_that_does_not_follow_the_api_is_invalid(
    soap: SoapClient, anna: CitizenApi, body: Any
) -> None:
    register(soap, "c-1", ANNA)
    anna.consent()
    assert_problem(anna.post("/certificates/c-1/send", body), 422, "invalid_request")


# --- consent (rules 6 and 7) -----------------------------------------------------------------------------------


def test_consent_is_not_given_until_the_citizen_gives_it(anna: CitizenApi) -> None:
    assert anna.get("/consent").json() == {"given": False, "changed_at": None}
    given = anna.consent()
    assert given["given"] is True and given["changed_at"] and given["deleted"] == 0
    assert anna.get("/consent").json() == {"given": True, "changed_at": given["changed_at"]}


def test_giving_consent_twice_changes_nothing_the_second_time(anna: CitizenApi) -> None:
    first = anna.consent()
    second = anna.consent()
    assert second == first
    assert anna.get("/consent").json()["changed_at"] == first["changed_at"]


def test_withdrawing_consent_deletes_what_the_care_provider_removed_and_reports_how_many(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "kept", ANNA)
    register(soap, "removed-1", ANNA)
    register(soap, "removed-2", ANNA)
    anna.consent()
    remove_for_care(soap, "removed-1")
    remove_for_care(soap, "removed-2")
    anna.post("/certificates/removed-2/archive")
    assert sorted(anna.listed() + anna.listed(archived=True)) == ["kept", "removed-1", "removed-2"]

    withdrawn = anna.consent(False)

    assert (withdrawn["given"], withdrawn["deleted"]) == (False, 2)
    assert anna.get("/consent").json()["given"] is False
    assert care_lists(soap) == ["kept"]
    # Withdrawing again deletes nothing more; giving consent again brings nothing back (rule 7).
    assert anna.consent(False)["deleted"] == 0
    anna.consent()
    assert anna.listed() == ["kept"] and anna.listed(archived=True) == []
    assert soap.call("GetCertificate", 2, s.get_certificate("removed-1", "HSVARD")).is_fault


@pytest.mark.parametrize(
    "body",
    [{"given": True, "note": "x"}, {}, {"given": None}, {"given": [True]}, [True]],
    ids=["unknown field", "empty", "null", "list value", "list"],
)
@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_consent_body_that_does_not_follow_the_api_is_invalid(anna: CitizenApi, body: Any) -> None:
    assert_problem(anna.put("/consent", body), 422, "invalid_request")
    assert anna.get("/consent").json()["given"] is False


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_consent_body_that_is_not_json_is_invalid(client: TestClient, anna: CitizenApi) -> None:
    for content in (b'{"given": tr', b"given=true"):
        response = client.put(
            f"{PREFIX}/consent", content=content, headers={**anna.headers, "Content-Type": "application/json"}
        )
        assert_problem(response, 422, "invalid_request")


@pytest.mark.parametrize(
    "content",
    [b'{"given": true, "given": false}', b'{"given": false, "given": true}', b"[" * 30_000 + b"]" * 30_000],
    ids=["a key given twice", "the same key twice, the other way round", "nested 30 000 deep"],
)
@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_an_ambiguous_or_deeply_nested_consent_body_is_invalid_and_changes_nothing(
    client: TestClient, anna: CitizenApi, content: bytes
) -> None:
    response = client.put(
        f"{PREFIX}/consent", content=content, headers={**anna.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 422, "invalid_request")
    assert anna.get("/consent").json()["given"] is False


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_body_over_the_size_limit_is_413_problem_json(
    client: TestClient, settings: Settings, anna: CitizenApi
) -> None:
    padding = "x" * (settings.max_json_bytes + 1)
    response = client.put(
        f"{PREFIX}/consent",
        content=f'{{"given": true, "pad": "{padding}"}}'.encode(),
        headers={**anna.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 413, "request_too_large")


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_body_over_the_size_limit_is_refused_with_413(
    client: TestClient, settings: Settings, anna: CitizenApi
) -> None:
    padding = "x" * (settings.max_json_bytes + 1)
    response = client.put(
        f"{PREFIX}/consent",
        content=f'{{"given": true, "pad": "{padding}"}}'.encode(),
        headers={**anna.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert anna.get("/consent").json()["given"] is False


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_streamed_body_over_the_size_limit_is_413_problem_json(
    client: TestClient, settings: Settings, anna: CitizenApi
) -> None:
    # No Content-Length: the limit is found while reading.
    def chunks() -> Iterator[bytes]:
        yield b'{"given": true, "pad": "'
        for _ in range(settings.max_json_bytes // 1000 + 2):
            yield b"x" * 1000
        yield b'"}'

    response = client.put(
        f"{PREFIX}/consent", content=chunks(), headers={**anna.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 413, "request_too_large")
    assert anna.get("/consent").json()["given"] is False


def test_concurrent_consent_changes_never_fail_and_leave_a_valid_state(
    soap: SoapClient, client: TestClient, anna: CitizenApi
) -> None:
    register(soap, "kept", ANNA)
    register(soap, "removed", ANNA)
    anna.consent()
    remove_for_care(soap, "removed")
    barrier = threading.Barrier(10)
    answers: list[Response] = []
    lock = threading.Lock()

    def change(given: bool) -> None:
        barrier.wait()
        response = client.put(f"{PREFIX}/consent", json={"given": given}, headers=anna.headers)
        with lock:
            answers.append(response)

    threads = [threading.Thread(target=change, args=(i % 2 == 1,)) for i in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert len(answers) == 10
    assert [r.status_code for r in answers if r.status_code != 200] == [], [r.text for r in answers]
    # The one certificate without a care copy was deleted by exactly one withdrawal (rule 6).
    assert sum(r.json()["deleted"] for r in answers) == 1
    final = anna.get("/consent").json()
    assert isinstance(final["given"], bool) and final["changed_at"]
    anna.consent()
    assert anna.listed() == ["kept"]


# --- the API as published --------------------------------------------------------------------------------------


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_the_openapi_document_publishes_every_operation_of_the_citizen_api(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    operations = {
        (method.upper(), path.removeprefix(PREFIX))
        for path, item in document["paths"].items()
        if path.startswith(PREFIX)
        for method in item
    }
    assert operations == set(OPERATIONS)
    for path, item in document["paths"].items():
        if path.startswith(PREFIX):
            for operation in item.values():
                assert PROBLEM_JSON in operation["responses"]["401"]["content"], (path, operation)


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_an_unknown_path_and_a_wrong_method_answer_problem_json(client: TestClient, anna: CitizenApi) -> None:
    assert_problem(client.get(f"{PREFIX}/nothing-here", headers=anna.headers), 404, "not_found")
    assert_problem(client.delete(f"{PREFIX}/consent", headers=anna.headers), 405, "method_not_allowed")


# --- Findings: each fails until the service is fixed (see the reasons) ---------------------------------------------

RFC_3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")


def test_every_time_in_a_response_is_an_rfc_3339_date_time_with_an_offset(
    soap: SoapClient, anna: CitizenApi
) -> None:
    register(soap, "c-1", ANNA)
    given = anna.consent()
    sent = anna.post("/certificates/c-1/send", {"recipient": "FKASSA"}).json()["certificate"]
    times = [
        given["changed_at"],
        anna.get("/consent").json()["changed_at"],
        sent["issued"],
        *(d["at"] for d in sent["sent_to"]),
        *(e["at"] for e in anna.get("/access-log").json()["entries"]),
    ]
    assert [t for t in times if not RFC_3339.match(t)] == []


@pytest.mark.one_engine(BEFORE_THE_STORE)
@pytest.mark.parametrize("value", [0, 1, "yes", "false", 1.0])
def test_consent_must_be_a_json_boolean(anna: CitizenApi, value: Any) -> None:
    assert_problem(anna.put("/consent", {"given": value}), 422, "invalid_request")


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_body_that_is_not_utf8_is_invalid_input(client: TestClient, anna: CitizenApi) -> None:
    response = client.put(
        f"{PREFIX}/consent",
        content=b'{"given": "\xff\xfe"}',
        headers={**anna.headers, "Content-Type": "application/json"},
    )
    assert_problem(response, 422, "invalid_request")


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_an_access_log_bound_that_is_not_a_date_time_is_invalid(anna: CitizenApi) -> None:
    assert_problem(anna.get("/access-log", **{"from": "1700000000"}), 422, "invalid_request")


@pytest.mark.parametrize("bound", ["9999-12-31T23:59:59Z", "0001-01-01T00:00:00+05:00"])
def test_an_access_log_bound_at_the_end_of_time_is_not_a_server_error(anna: CitizenApi, bound: str) -> None:
    for name in ("from", "to"):
        response = anna.get("/access-log", **{name: bound})
        assert response.status_code in (200, 422), response.text


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_the_openapi_document_declares_bearer_authentication_for_every_operation(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    schemes = document.get("components", {}).get("securitySchemes", {})
    bearer_schemes = {
        name for name, s in schemes.items() if s.get("type") == "http" and s.get("scheme") == "bearer"
    }
    assert bearer_schemes
    for path, item in document["paths"].items():
        if path.startswith(PREFIX):
            for operation in item.values():
                assert any(set(requirement) & bearer_schemes for requirement in operation.get("security", []))


@pytest.mark.parametrize("certificate_id", ["%00", "a%00b", "a%0Ab", "a%7Fb"])
def test_an_id_that_cannot_be_a_certificate_id_does_not_follow_the_api(
    anna: CitizenApi, certificate_id: str
) -> None:
    # A NUL once reached PostgreSQL, which refused it with a 500 and an unaudited read. The
    # published contract says what an id may hold; operations check it again for every channel.
    assert_problem(anna.get(f"/certificates/{certificate_id}"), 422, "invalid_request")

    assert anna.get("/access-log").json()["entries"] == []


@pytest.mark.one_engine(BEFORE_THE_STORE)
def test_a_fault_nobody_foresaw_is_a_problem_and_one_log_line_without_its_message(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(settings)
    secret = "SELECT * FROM certificates WHERE patient = '191212121212'"

    @app.get("/api/citizen/v1/fault")
    def fault() -> None:
        raise RuntimeError(secret)

    caplog.set_level(logging.INFO)
    # TestClient raises what the app raises: a 500 answered without raising is the app's own.
    with TestClient(app) as client:
        response = client.get("/api/citizen/v1/fault")
        after = client.get("/livez")

    assert_problem(response, 500, "internal_error")
    assert after.status_code == 200
    [line] = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert line.getMessage().startswith("request failed: RuntimeError at tests/integration/test_rest_api.py:")
    assert getattr(line, "request_id", None) == response.headers["x-request-id"]
    logged = " ".join(repr(r.__dict__) for r in caplog.records)
    assert "191212121212" not in logged and "SELECT" not in logged and "Traceback" not in logged


def test_the_citizen_apis_answers_are_kept_by_no_cache_and_never_sniffed(anna: CitizenApi) -> None:
    for response in (anna.get("/certificates"), anna.get("/certificates/no-such-id")):
        assert response.headers["cache-control"] == "no-store"
        assert response.headers["x-content-type-options"] == "nosniff"
        # Plain HTTP here: HSTS only where the service terminates TLS (test_mutual_tls.py).
        assert "strict-transport-security" not in response.headers
