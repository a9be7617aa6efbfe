"""What registration reads of a certificate document for the lists (``service/document.py``): its validity,
by its type's ``certificate_type.Validity``, and the relations it states. Unreadable ones are invalid input
(VALIDATION_ERROR at register).

The same through RegisterCertificate 3 and the lists, with the peer requests, is in
tests/integration/test_peer_requests.py; migration 0007's reading of stored documents in
tests/integration/test_store.py.
"""

from __future__ import annotations

import datetime as dt

import pytest
from lxml import etree

from service import document, errors
from service.model import Relation, RelationKind

T3 = document.TYPES3
SIGNED = dt.datetime(2015, 12, 7, 15, 48, 5)


def intyg(*content: str, certificate_id: str = "this") -> etree._Element:
    return etree.fromstring(
        f'<intyg xmlns="{document.CORE3}" xmlns:t="{T3}">'
        f"<intygs-id><t:root>SE2321000016-H489</t:root><t:extension>{certificate_id}</t:extension></intygs-id>"
        f"{''.join(content)}</intyg>"
    )


def period(answer: str, start: str, end: str, *, part: str | None = None) -> str:
    return (
        f'<svar id="{answer}"><delsvar id="{part or answer + ".1"}">x</delsvar>'
        f'<delsvar id="{part or answer + ".2"}"><t:datePeriod><t:start>{start}</t:start><t:end>{end}</t:end>'
        "</t:datePeriod></delsvar></svar>"
    )


def relation(code: str, certificate_id: str, root: str = "SE2321000016-H489") -> str:
    return (
        f"<relation><typ><t:code>{code}</t:code><t:codeSystem>c2362fcd-eda0-4f9a-bd13-b3bbaf7f2146"
        f"</t:codeSystem></typ><intygs-id><t:root>{root}</t:root><t:extension>{certificate_id}"
        "</t:extension></intygs-id></relation>"
    )


# --- Validity ------------------------------------------------------------------------------------------


def test_a_sick_leave_is_valid_from_its_earliest_start_to_its_latest_end() -> None:
    # The LISJP peer request's three periods (register/request_lisjp.stg), gaps and all, in any order.
    lisjp = intyg(
        period("32", "2015-12-12", "2015-12-14"),
        period("32", "2015-12-15", "2015-12-20"),
        period("32", "2015-12-07", "2015-12-10"),
    )

    assert document.validity(lisjp, "LISJP", SIGNED) == (dt.date(2015, 12, 7), dt.date(2015, 12, 20))


@pytest.mark.parametrize(
    ("type_code", "answer"),
    [("LISJP", "32"), ("AG7804", "32"), ("FK7263", "32"), ("AG1-14", "7"), ("AF00251", "6")],
)
def test_each_type_with_a_period_states_it_in_its_own_answer(type_code: str, answer: str) -> None:
    stated = intyg(period(answer, " 2024-01-02 ", "2024-02-03"), period("99", "2020-01-01", "2030-01-01"))

    assert document.validity(stated, type_code, SIGNED) == (dt.date(2024, 1, 2), dt.date(2024, 2, 3))


@pytest.mark.parametrize(
    ("type_code", "signed", "valid"),
    [
        ("LUSE", SIGNED, SIGNED.date()),  # a type without a period
        ("TSTRK1031", SIGNED, SIGNED.date()),
        ("AF00251", SIGNED, SIGNED.date()),  # a type whose period may be left out, left out
        ("NOSUCHTYPE", SIGNED, SIGNED.date()),  # a type the service does not know states none
        ("LUSE", None, None),  # neither a period nor a signing time
    ],
)
def test_a_certificate_stating_no_period_is_valid_the_day_it_was_signed(
    type_code: str, signed: dt.datetime | None, valid: dt.date | None
) -> None:
    # A period in the answer another type keeps it in is not this type's.
    assert document.validity(intyg(period("32", "2024-01-02", "2024-02-03")), type_code, signed) == (
        valid,
        valid,
    )


@pytest.mark.parametrize(
    "answer",
    [
        period("32", "2015-12-10", "2015-12-07"),  # ends before it starts
        period("32", "2015-02-30", "2015-03-07"),  # no such day
        period("32", "2015-12-7", "2015-12-10"),  # not YYYY-MM-DD
        period("32", "20151207", "2015-12-10"),  # ISO 8601's basic format, not xs:date's
        period("32", "2015-12-07Z", "2015-12-10"),  # DateType has no zone
        period("32", "\u0662\u0660\u0661\u0665-12-07", "2015-12-10"),  # digits, but not ASCII ones
        period("32", "2015-12-07", ""),  # no end
        '<svar id="32"><delsvar id="32.2"><t:datePeriod><t:start>2015-12-07</t:start></t:datePeriod>'
        "</delsvar></svar>",
        '<svar id="32"><delsvar id="32.1">HALFTEN</delsvar></svar>',  # the answer without its period
        '<svar id="32"><delsvar id="32.2">2015-12-07</delsvar></svar>',  # not a datePeriod
    ],
    ids=[
        "end before start",
        "no such day",
        "one-digit day",
        "basic format",
        "zone",
        "other digits",
        "empty end",
        "no end",
        "no period",
        "text",
    ],
)
def test_a_period_that_is_not_two_days_in_order_is_invalid_input(answer: str) -> None:
    with pytest.raises(errors.InvalidInput):
        document.validity(intyg(period("32", "2015-12-01", "2015-12-02"), answer), "LISJP", SIGNED)


# --- Relations -----------------------------------------------------------------------------------------


def test_the_relations_a_certificate_states_are_read_each_once_by_code_and_id() -> None:
    stated = intyg(
        relation("KOMPLT", "b"),
        relation("ERSATT", "a", root=""),
        relation("KOMPLT", "b"),
        relation("KOPIA", "a"),
    )

    assert document.relations(stated) == (
        Relation(RelationKind.REPLACES, "a", ""),
        Relation(RelationKind.COMPLEMENTS, "b", "SE2321000016-H489"),
        Relation(RelationKind.COPIES, "a", "SE2321000016-H489"),
    )
    assert document.relations(intyg()) == ()


@pytest.mark.parametrize(
    "stated",
    [
        relation("ERSATTER", "a"),  # not a code of KV_RELATION: the national service takes only its own
        relation("ersatt", "a"),
        relation("ERSATT", ""),
        relation("ERSATT", "x" * 129),  # longer than any certificate id
        relation("ERSATT", "this"),  # the certificate itself
    ],
    ids=["unknown code", "lower case", "no id", "too long", "itself"],
)
def test_a_relation_that_names_no_other_certificate_by_a_known_code_is_invalid_input(stated: str) -> None:
    with pytest.raises(errors.InvalidInput):
        document.relations(intyg(stated))
