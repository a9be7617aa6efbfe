"""Every class of ``service.errors`` has an answer in each adapter's error table (STYLE.md principle 6),
its own or that of the error it is answered as (``errors.ANSWERED_AS``).

The SOAP table is ``service.soap.faults.ERRORS``; the REST table is ``service.rest.errors.ERRORS``. The error ids are read
from our own contracts (``contracts/xsd``), so a table entry can never put a value on the wire that
the contract's enumeration rejects. The answers themselves are tested end to end in
``tests/integration/test_soap_robustness.py`` and ``tests/integration/test_rest_api.py``.
"""

from __future__ import annotations

import re
from functools import cache
from typing import Any

import pytest
from lxml import etree

from service import errors
from service.rest import errors as rest_errors
from service.soap import faults
from tests.reference import CONTRACTS, parser

XS = "http://www.w3.org/2001/XMLSchema"


def _all_subclasses(cls: type[errors.ServiceError]) -> list[type[errors.ServiceError]]:
    found = [cls]
    for sub in cls.__subclasses__():
        found.extend(_all_subclasses(sub))
    return found


ERROR_CLASSES = _all_subclasses(errors.ServiceError)


@cache
def _enumeration(xsd: str, type_name: str) -> frozenset[str]:
    tree = etree.parse(str(CONTRACTS / "xsd" / xsd), parser())
    values: Any = tree.xpath(
        "//xs:simpleType[@name=$name]//xs:enumeration/@value", namespaces={"xs": XS}, name=type_name
    )
    assert values, f"{type_name} not found in {xsd}"
    return frozenset(str(v) for v in values)


def result_type_error_ids() -> frozenset[str]:
    return _enumeration("certificate-3.xsd", "ErrorIdType")


def test_the_walk_finds_the_whole_documented_tree() -> None:
    # A guard on the walk itself: it finds exactly the classes the docstring of service.errors draws.
    drawn = re.findall(r"(?:^    |── )(\w+)", errors.__doc__ or "", re.M)
    assert sorted(drawn) == sorted(cls.__name__ for cls in ERROR_CLASSES)
    assert len(set(ERROR_CLASSES)) == len(ERROR_CLASSES)


def test_a_refusal_answered_as_another_error_is_answered_as_one_of_the_tree_not_a_parent() -> None:
    # errors.ANSWERED_AS: answered (and counted, and logged) as another error of the tree, which has an
    # entry of its own in both tables; never as a parent, whose answer would differ.
    for error, answered in errors.ANSWERED_AS.items():
        assert answered in ERROR_CLASSES and answered not in errors.ANSWERED_AS
        assert not issubclass(error, answered)
    assert {errors.NotPermitted: errors.CertificateNotFound} == errors.ANSWERED_AS


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_service_error_has_its_own_entry_in_the_soap_table(cls: type[errors.ServiceError]) -> None:
    answered = errors.answered_as(cls)
    assert answered in faults.ERRORS, f"service.soap.faults.ERRORS has no entry for {answered.__name__}"
    # One source of the disguise: a table entry of its own could drift from the unknown id's answer.
    assert (cls in faults.ERRORS) == (cls is answered)


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_an_error_is_answered_by_its_own_entry_not_a_parents(cls: type[errors.ServiceError]) -> None:
    entry = faults.ERRORS[errors.answered_as(cls)]
    assert faults.soap_error(cls("detail")) is entry


def test_the_soap_table_names_no_class_outside_the_tree() -> None:
    assert set(faults.ERRORS) <= set(ERROR_CLASSES)


@pytest.mark.parametrize(
    "entry",
    [*faults.ERRORS.values(), faults.INTERNAL],
    ids=[*(cls.__name__ for cls in faults.ERRORS), "INTERNAL"],
)
def test_every_soap_answer_is_a_result_type_error_id_and_a_soap_fault_code(entry: faults.SoapError) -> None:
    assert entry.error_id in result_type_error_ids()
    assert entry.fault_code in {"Client", "Server"}
    assert entry.text.strip()
    result = entry.result
    assert (result.code, result.text, result.error_id) == ("ERROR", entry.text, entry.error_id)


@pytest.mark.parametrize(
    "entry",
    [*faults.ERRORS.values(), faults.INTERNAL],
    ids=[*(cls.__name__ for cls in faults.ERRORS), "INTERNAL"],
)
def test_every_soap_answer_is_also_a_result_of_call_error_id_once_translated(entry: faults.SoapError) -> None:
    # The insuranceprocess ResultOfCall has its own ErrorIdEnum (no REVOKED).
    translated = faults.RESULT_OF_CALL_ERROR_IDS.get(entry.error_id, entry.error_id)
    assert translated in _enumeration("insuranceprocess-healthreporting-2.xsd", "ErrorIdEnum")


def test_a_server_fault_is_kept_for_failures_that_are_not_the_callers() -> None:
    # soap:Server tells the caller a retry may succeed; soap:Client tells it to fix the request.
    server = {cls for cls, entry in faults.ERRORS.items() if entry.fault_code == "Server"}
    assert server == {
        errors.ServiceError,
        errors.ConcurrentChange,
        errors.StoreUnavailable,
        errors.StoredDataUnreadable,
        errors.KekMissing,
        errors.UnexpectedError,
    }
    assert faults.INTERNAL.fault_code == "Server"


def test_a_stored_ciphertext_that_fails_its_check_is_answered_as_any_internal_error() -> None:
    # Encryption at rest (README "Data at rest"): a tampered or unreadable row says nothing more than that.
    for cls in (errors.StoredDataUnreadable, errors.KekMissing):
        assert (faults.ERRORS[cls].text, faults.ERRORS[cls].error_id) == (
            faults.INTERNAL.text,
            faults.INTERNAL.error_id,
        )
        assert rest_errors.ERRORS[cls] == rest_errors.ERRORS[errors.ServiceError]


def test_a_refusal_that_says_which_value_is_refused_is_answered_with_that_detail() -> None:
    refused = errors.UnknownCertificateType("no such type", detail="Unknown certificate type NONSENSE")
    answer = faults.soap_error(refused)
    assert (answer.error_id, answer.fault_code, answer.text) == (
        "VALIDATION_ERROR",
        "Client",
        "Unknown certificate type NONSENSE",
    )
    assert faults.soap_error(errors.UnknownCertificateType("no such type")) is faults.ERRORS[type(refused)]


def test_a_refusal_answered_as_another_error_tells_no_detail_of_its_own() -> None:
    # The disguise is the whole answer (errors.ANSWERED_AS): a detail would tell the id exists.
    refused = errors.NotPermitted("a citizen does not see this type", detail="a death certificate")
    assert errors.told(refused) is None
    assert faults.soap_error(refused) is faults.soap_error(errors.CertificateNotFound("no such certificate"))


def test_texts_shown_to_callers_never_hold_a_personal_identity_number() -> None:
    for entry in [*faults.ERRORS.values(), faults.INTERNAL]:
        assert not any(ch.isdigit() for ch in entry.text), entry.text


# --- REST: problem+json (RFC 9457) ------------------------------------------------------------------------


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_service_error_has_its_own_entry_in_the_rest_table(cls: type[errors.ServiceError]) -> None:
    answered = errors.answered_as(cls)
    assert answered in rest_errors.ERRORS, f"service.rest.errors.ERRORS has no entry for {answered.__name__}"
    assert (cls in rest_errors.ERRORS) == (cls is answered)
    assert rest_errors.rest_error(cls("detail")) is rest_errors.ERRORS[answered]


def test_the_rest_table_names_no_class_outside_the_tree() -> None:
    assert set(rest_errors.ERRORS) <= set(ERROR_CLASSES)


@pytest.mark.parametrize(
    "entry", list(rest_errors.ERRORS.values()), ids=[cls.__name__ for cls in rest_errors.ERRORS]
)
def test_every_rest_answer_is_an_error_status_with_a_stable_code_and_a_safe_title(
    entry: rest_errors.RestError,
) -> None:
    assert 400 <= entry.status <= 599
    assert re.fullmatch(r"[a-z]+(_[a-z]+)*", entry.code), entry.code
    assert entry.title.strip() and not any(ch.isdigit() for ch in entry.title), entry.title


def test_a_missing_consent_is_403_consent_required() -> None:
    entry = rest_errors.ERRORS[errors.ConsentRequired]
    assert (entry.status, entry.code) == (403, "consent_required")


def test_another_citizens_or_care_givers_certificate_is_answered_exactly_like_an_unknown_one() -> None:
    # Nothing may tell a citizen or a care system that an id they may not see exists (DOMAIN.md rule 2,
    # README "Callers").
    refused = errors.NotPermitted("the certificate belongs to another citizen")
    unknown = errors.CertificateNotFound("no such certificate")
    assert rest_errors.rest_error(refused) is rest_errors.rest_error(unknown)
    assert rest_errors.rest_error(unknown).status == 404
    assert faults.soap_error(refused) is faults.soap_error(unknown)


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (errors.Unauthenticated, 401, "unauthenticated"),
        (errors.InvalidInput, 422, "invalid_input"),
        (errors.UnknownRecipient, 422, "unknown_recipient"),
        (errors.UnknownCertificateType, 422, "unknown_certificate_type"),
        (errors.CertificateRevoked, 409, "revoked"),
        (errors.ServiceError, 500, "internal_error"),
    ],
)
def test_the_rest_answers_the_issue_names(cls: type[errors.ServiceError], status: int, code: str) -> None:
    entry = rest_errors.ERRORS[cls]
    assert (entry.status, entry.code) == (status, code)


def test_a_server_error_status_is_kept_for_failures_that_are_not_the_callers() -> None:
    server = {cls for cls, entry in rest_errors.ERRORS.items() if entry.status >= 500}
    assert server == {
        errors.ServiceError,
        errors.ConcurrentChange,
        errors.StoreUnavailable,
        errors.StoredDataUnreadable,
        errors.KekMissing,
        errors.UnexpectedError,
    }


def test_a_store_that_does_not_answer_is_a_technical_error_and_a_503_to_retry_later() -> None:
    # README "Operating": a frozen or unreachable database, or a lock held past the lock timeout.
    soap = faults.ERRORS[errors.StoreUnavailable]
    assert (soap.error_id, soap.fault_code) == ("TECHNICAL_ERROR", "Server")
    rest = rest_errors.ERRORS[errors.StoreUnavailable]
    assert (rest.status, rest.code) == (503, "store_unavailable")
    assert rest.retry_after is not None and rest.retry_after > 0


def test_every_503_says_when_to_try_again() -> None:
    for entry in rest_errors.ERRORS.values():
        response = rest_errors.problem(entry.status, entry.code, entry.title, retry_after=entry.retry_after)
        assert (entry.status == 503) == (entry.retry_after is not None), entry.code
        if entry.status == 503:
            assert response.headers["retry-after"] == str(entry.retry_after)
        else:
            assert "retry-after" not in response.headers


def test_every_problem_is_problem_json_and_a_401_challenges_for_a_bearer_token() -> None:
    for entry in rest_errors.ERRORS.values():
        response = rest_errors.problem(entry.status, entry.code, entry.title)
        assert response.media_type == rest_errors.PROBLEM_JSON
        assert ("www-authenticate" in response.headers) == (entry.status == 401)
    challenge = rest_errors.problem(401, "unauthenticated", "x").headers["www-authenticate"]
    assert challenge.startswith("Bearer ")
