"""The domain model: ``PersonId.parse`` accepts exactly the valid personnummer and samordningsnummer,
the known certificate types cover the default recipients', a stored certificate is its issued one and
what registering gives it, and the part a request names says who acts."""

from __future__ import annotations

import dataclasses

import pytest

from service import certificate_type, errors
from service.config import DEFAULT_RECIPIENTS
from service.model import (
    CallerKind,
    Certificate,
    IssuedCertificate,
    Party,
    PersonId,
)

# 191212121212 is the Swedish tax agency's test personnummer. 191212721219 is its samordningsnummer
# (day 12 + 60) with the check digit computed by the Luhn algorithm over the last ten digits.
VALID = [
    ("191212121212", "191212121212", False),
    ("19121212-1212", "191212121212", False),
    ("19121212+1212", "191212121212", False),  # '+' marks a person over 100; it carries nothing here
    ("  191212121212\n", "191212121212", False),
    ("194404041230", "194404041230", False),
    ("200002299873", "200002299873", False),  # 29 February of a leap year
    ("191212721219", "191212721219", True),
    ("19121272-1219", "191212721219", True),
]

INVALID = [
    ("", "12 digits"),
    ("1912121212", "12 digits"),  # ten digits: the century is required
    ("1912121212120", "12 digits"),
    ("19121212--1212", "12 digits"),
    ("1912121-21212", "12 digits"),  # separator in the wrong place
    ("19121212 1212", "12 digits"),
    ("19121212121X", "12 digits"),
    ("abcdefghijkl", "12 digits"),
    ("١٩١٢١٢١٢١٢١٢", "12 digits"),  # Arabic-Indic digits: str.isdigit() alone would accept them
    ("".join(chr(0xFF10 + int(d)) for d in "191212121212"), "12 digits"),  # full-width digits
    ("191213121212", "valid date"),  # month 13
    ("191200121212", "valid date"),  # month 0
    ("191212321212", "valid date"),  # day 32
    ("191212001212", "valid date"),  # day 0
    ("190002301212", "valid date"),  # 30 February
    ("190002291212", "valid date"),  # 29 February of 1900, not a leap year
    ("191212921212", "valid date"),  # samordningsnummer day 92 is day 32
    ("191212601212", "valid date"),  # samordningsnummer day 60 is day 0
    ("191212121213", "check digit"),
    ("191212721212", "check digit"),
]


@pytest.mark.parametrize(("raw", "value", "coordination"), VALID)
def test_a_valid_number_is_parsed_to_twelve_digits(raw: str, value: str, coordination: bool) -> None:
    person = PersonId.parse(raw)

    assert person.value == value
    assert person.is_coordination_number is coordination
    assert person == PersonId.parse(value)


@pytest.mark.parametrize(("raw", "reason"), INVALID)
def test_an_invalid_number_is_refused_with_a_reason(raw: str, reason: str) -> None:
    with pytest.raises(errors.InvalidPersonId, match=reason):
        PersonId.parse(raw)


@pytest.mark.parametrize("raw", [raw for raw, _ in INVALID if raw.strip()])
def test_the_error_message_never_holds_the_number(raw: str) -> None:
    with pytest.raises(errors.InvalidPersonId) as refused:
        PersonId.parse(raw)

    assert raw.strip() not in str(refused.value)


def test_an_invalid_person_id_is_invalid_input() -> None:
    assert issubclass(errors.InvalidPersonId, errors.InvalidInput)


@pytest.mark.parametrize("raw", ["191212121212", "191212721219"])
def test_the_repr_never_shows_the_number(raw: str) -> None:
    person = PersonId.parse(raw)

    for text in (repr(person), str(person), f"{person!r}", repr([person])):
        assert raw not in text
        assert raw[:8] not in text


def test_every_national_recipient_takes_exactly_the_types_the_type_table_sends_it() -> None:
    for recipient in DEFAULT_RECIPIENTS:
        assert recipient.certificate_types == {
            t.code for t in certificate_type.TYPES.values() if recipient.party in t.recipients
        }
        assert recipient.certificate_types
    assert certificate_type.OTHER not in certificate_type.TYPES


@pytest.mark.parametrize(
    ("code", "version", "known"),
    [
        ("LISJP", "1.3", True),
        ("LISJP", "1", True),
        ("LISJP", "2.0", False),
        ("TSTRK1031", "4.0", True),
        ("TSTRK1031", "2.9", False),
        ("NONSENSE", "1.0", False),
        ("LUSE", "99.9", False),
        ("LUSE", "", False),
        ("LUSE", "x.1", False),
        ("AG114", "1.0", False),  # the code is AG1-14
    ],
)
def test_a_type_is_known_by_its_code_and_major_version(code: str, version: str, known: bool) -> None:
    assert (certificate_type.known(code, version) is not None) is known
    assert certificate_type.label(code) == (code if code in certificate_type.TYPES else "other")


@pytest.mark.parametrize(
    ("party", "codes", "reason"),
    [
        (Party.FKASSA, ["LISJP", "LUSE", "FK7263"], None),
        (Party.SKV, ["DB"], None),
        (Party.AF, [], None),
        (
            Party.FKASSA,
            ["LISJP", "NONSENSE"],
            "FKASSA is given 'NONSENSE', which is not a type of the type table",
        ),
        (Party.FKASSA, ["lisjp"], "FKASSA is given 'lisjp', which is not a type of the type table"),
        (Party.FKASSA, ["TSTRK1007"], "FKASSA is given TSTRK1007, which the type table sends to TRANSP only"),
        (Party.SOS, ["DB"], "SOS is given DB, which the type table sends to SKV only"),
        (Party.FKASSA, ["AG7804"], "FKASSA is given AG7804, which the type table sends to no recipient"),
    ],
)
def test_a_recipients_entry_may_give_a_recipient_only_the_types_the_type_table_sends_it(
    party: Party, codes: list[str], reason: str | None
) -> None:
    if reason is None:
        certificate_type.require_sent_to(party, codes)
    else:
        with pytest.raises(ValueError) as refused:
            certificate_type.require_sent_to(party, codes)
        assert str(refused.value) == reason


def test_a_stored_certificate_is_its_issued_one_and_what_registering_gives_it() -> None:
    # A stored certificate is what its care system stated and, after it, only what registering gives it
    # (rule 1) and what other certificates stored later state of it: nothing a care system states is left
    # to a default.
    stored = [f.name for f in dataclasses.fields(Certificate)]
    issued = [f.name for f in dataclasses.fields(IssuedCertificate)]
    assert stored[: len(issued)] == issued
    assert stored[len(issued) :] == [
        "registered_at",
        "care_available",
        "citizen_available",
        "revoked",
        "status_events",
        "related_by",
    ]


@pytest.mark.parametrize(
    ("part", "kind"),
    [
        (Party.INVANA, CallerKind.CITIZEN),
        (Party.HSVARD, CallerKind.CARE_SYSTEM),
        *[(p, CallerKind.RECIPIENT) for p in Party if p.is_recipient],
    ],
)
def test_the_part_a_request_names_says_who_acts(part: Party, kind: CallerKind) -> None:
    # Who acts decides what is refused: a system limited to some care givers may not act as the citizen,
    # and a status set as the citizen needs consent (rule 2) where a recipient's delivery does not.
    assert part.caller_kind is kind
