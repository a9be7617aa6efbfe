"""Every class of ``service.errors`` has an answer in each adapter's error table (STYLE.md principle 6).

The SOAP table is ``service.soap.faults.ERRORS``; a REST table joins it later. The error ids are read
from our own contracts (``contracts/xsd``), so a table entry can never put a value on the wire that
the contract's enumeration rejects. The answers themselves are tested end to end in
``tests/integration/test_soap_robustness.py``.
"""

from __future__ import annotations

import re

from functools import cache
from typing import Any

import pytest
from lxml import etree

from service import errors
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


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_every_service_error_has_its_own_entry_in_the_soap_table(cls: type[errors.ServiceError]) -> None:
    assert cls in faults.ERRORS, f"service.soap.faults.ERRORS has no entry for {cls.__name__}"


@pytest.mark.parametrize("cls", ERROR_CLASSES, ids=lambda cls: cls.__name__)
def test_an_error_is_answered_by_its_own_entry_not_a_parents(cls: type[errors.ServiceError]) -> None:
    assert faults.soap_error(cls("detail")) is faults.ERRORS[cls]


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
    answer = entry.answer
    assert (answer.code, answer.text, answer.error_id) == ("ERROR", entry.text, entry.error_id)


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
    assert server == {errors.ServiceError, errors.ConcurrentChange}
    assert faults.INTERNAL.fault_code == "Server"


def test_texts_shown_to_callers_never_hold_a_personal_identity_number() -> None:
    for entry in [*faults.ERRORS.values(), faults.INTERNAL]:
        assert not any(ch.isdigit() for ch in entry.text), entry.text
