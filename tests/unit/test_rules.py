"""The rules of DOMAIN.md, one group per rule, on ``service.rules`` alone (pure: no store, no clock).

The same rules seen through a transaction (commit, audit record, permanent deletion in the unit of
work of its cause) are in ``tests/unit/test_operations.py``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Callable
from typing import Any

import pytest

from service import audit, errors, rules
from service.model import (
    Action,
    AuditRecord,
    Caller,
    CallerKind,
    Certificate,
    Channel,
    Consent,
    Delivery,
    EventKind,
    Outcome,
    Party,
    PersonId,
    Recipient,
    Relation,
    RelationKind,
    RuleFailure,
    StatisticsEvent,
    StatusCode,
    StatusEvent,
)
from tests.fakes import a_certificate, an_issued_certificate

NOW = dt.datetime(2024, 5, 17, 9, 30, tzinfo=dt.UTC)
PATIENT = PersonId.parse("191212121212")
OTHER_PATIENT = PersonId.parse("194404041230")
CARE_GIVER = "SE2321000016-GIVER1"
GIVEN = Consent(PATIENT, given=True, changed_at=NOW)
NOT_GIVEN = Consent(PATIENT, given=False, changed_at=None)
RECIPIENTS = [p for p in Party if p.is_recipient]
FLAGS = list(itertools.product([True, False], repeat=3))  # care_available, citizen_available, revoked
TWO_FLAGS = list(itertools.product([True, False], repeat=2))


def certificate(
    care_available: bool = True, citizen_available: bool = True, revoked: bool = False, **changes: Any
) -> Certificate:
    return a_certificate(
        care_available=care_available, citizen_available=citizen_available, revoked=revoked, **changes
    )


def flags(decision: rules.Decision) -> tuple[bool, bool, bool]:
    return decision.care_available, decision.citizen_available, decision.revoked


# ---------------------------------------------------------------------------------------------------
# Rule 1: register. A new id is created; the same id for the same patient changes nothing; the same id
# for another patient is a conflict.


def test_registering_a_new_id_creates_the_certificate() -> None:
    assert rules.register(None, an_issued_certificate()) is rules.Registration.CREATE


@pytest.mark.parametrize(("care_available", "citizen_available", "revoked"), FLAGS)
def test_registering_the_same_id_for_the_same_patient_again_changes_nothing(
    care_available: bool, citizen_available: bool, revoked: bool
) -> None:
    existing = certificate(care_available, citizen_available, revoked)

    assert rules.register(existing, an_issued_certificate()) is rules.Registration.ALREADY_EXISTS


def test_registering_the_same_id_for_another_patient_is_a_conflict() -> None:
    with pytest.raises(errors.CertificateIdConflict):
        rules.register(certificate(), an_issued_certificate(patient=OTHER_PATIENT))


@pytest.mark.parametrize("patient", [PATIENT, OTHER_PATIENT], ids=["same patient", "another patient"])
def test_registering_an_id_another_care_giver_holds_is_denied_whichever_patient_is_named(
    patient: PersonId,
) -> None:
    held = certificate(care_giver_id="SE2321000016-GIVER2")

    with pytest.raises(errors.CertificateIdTaken):
        rules.register(held, an_issued_certificate(patient=patient))


def test_a_care_system_naming_another_patient_than_the_certificates_is_refused() -> None:
    rules.require_patient(certificate(), PATIENT)
    with pytest.raises(errors.PatientMismatch):
        rules.require_patient(certificate(), OTHER_PATIENT)


def test_the_first_event_of_every_certificate_is_received_from_health_care() -> None:
    assert rules.received(now=NOW) == StatusEvent(StatusCode.RECEIV, Party.HSVARD, NOW)


def test_a_registered_certificate_starts_with_both_flags_true_unrevoked_and_received() -> None:
    stored = rules.registered(an_issued_certificate(), now=NOW)

    assert (stored.care_available, stored.citizen_available, stored.revoked) == (True, True, False)
    assert (stored.registered_at, stored.status_events) == (NOW, (rules.received(now=NOW),))


def test_a_registered_certificate_keeps_everything_its_care_system_stated() -> None:
    issued = an_issued_certificate(
        "cert-9", patient=OTHER_PATIENT, care_giver_id="SE2321000016-GIVER2", signed_at=None, type_code="LUSE"
    )

    stored = rules.registered(issued, now=NOW)

    assert {f.name: getattr(stored, f.name) for f in dataclasses.fields(issued)} == {
        f.name: getattr(issued, f.name) for f in dataclasses.fields(issued)
    }


# ---------------------------------------------------------------------------------------------------
# The type table (service/certificate_type.py) decides what is stored: its types, in their major versions.
# Refused otherwise, saying which, and quoting nothing the caller wrote but a code's shape or a number.


@pytest.mark.parametrize(
    ("type_code", "version"),
    [
        ("LISJP", "1.0"),
        ("LISJP", "1.3"),
        ("LISJP", "1"),
        ("LUSE", "1.0"),
        ("LUAE_FS", "1.0"),
        ("LUAE_NA", "1.0"),
        ("AG1-14", "1.0"),
        ("TSTRK1031", "4.0"),
        ("DB", "1.0"),
        ("DOI", "1.0"),
    ],
)
def test_a_type_and_major_version_of_the_type_table_is_stored(type_code: str, version: str) -> None:
    rules.require_known_type(an_issued_certificate(type_code=type_code, type_version=version))


@pytest.mark.parametrize(
    ("type_code", "version", "detail"),
    [
        ("NONSENSE", "1.0", "Unknown certificate type NONSENSE"),
        ("LUSE", "99.9", "LUSE has no version 99"),
        ("TSTRK1031", "2.0", "TSTRK1031 has no version 2"),
        ("LISJP", "", "LISJP has no version of that form"),
        ("LISJP", "one", "LISJP has no version of that form"),
        ("LISJP", "1000.0", "LISJP has no version of that form"),
        ("AG114", "1.0", "Unknown certificate type AG114"),  # the code is AG1-14
        # Codes the answer does not quote: not a code's shape, an identity number, free text, too long.
        ("lisjp", "1.0", "Unknown certificate type"),
        ("191212121212", "1.0", "Unknown certificate type"),
        ("<b>LISJP</b>", "1.0", "Unknown certificate type"),
        ("LISJP 1.0; see attached", "1.0", "Unknown certificate type"),
        ("A" * 21, "1.0", "Unknown certificate type"),
    ],
)
def test_a_type_or_version_the_table_does_not_know_is_refused_saying_which(
    type_code: str, version: str, detail: str
) -> None:
    with pytest.raises(errors.UnknownCertificateType) as refused:
        rules.require_known_type(an_issued_certificate(type_code=type_code, type_version=version))

    assert refused.value.detail == detail
    assert errors.told(refused.value) == detail


def test_an_unknown_type_is_invalid_input() -> None:
    # Audited with outcome "error", and answered VALIDATION_ERROR (tests/unit/test_error_maps.py).
    assert issubclass(errors.UnknownCertificateType, errors.InvalidInput)


# The business rules of the certificate's type: a certificate that breaks them is refused, the refusal
# naming the first few failures (the rules themselves: tests/unit/test_business_rules.py).


def _failure(n: int, message: str = "måste ha en 'Typ av diagnos'") -> RuleFailure:
    return RuleFailure(f"q{n}", f"/RegisterCertificate[1]/intyg[1]/svar[{n}]", message)


def test_a_certificate_that_follows_its_type_s_rules_passes() -> None:
    rules.require_follows_type_rules(())


def test_a_certificate_breaking_its_type_s_rules_is_refused_naming_each_rule_and_where() -> None:
    with pytest.raises(errors.BusinessRuleViolation) as refused:
        rules.require_follows_type_rules([_failure(1), _failure(2)])

    assert refused.value.detail == (
        "The certificate does not follow the rules of its type: [q1] /RegisterCertificate[1]/intyg[1]/svar[1]: måste ha en 'Typ av diagnos'; "
        "[q2] /RegisterCertificate[1]/intyg[1]/svar[2]: måste ha en 'Typ av diagnos'"
    )


def test_the_refusal_names_the_first_three_failures_each_shortened_and_counts_the_rest() -> None:
    with pytest.raises(errors.BusinessRuleViolation) as refused:
        rules.require_follows_type_rules([_failure(n, "x" * 1000) for n in range(10)])

    text = refused.value.detail or ""
    assert text.count("[q") == 3 and text.endswith("; and 7 more")
    assert len(text) < 900


def test_a_failure_of_no_particular_rule_is_named_by_its_message() -> None:
    with pytest.raises(errors.BusinessRuleViolation) as refused:
        rules.require_follows_type_rules([RuleFailure("", "", "could not be checked")])

    assert (
        refused.value.detail == "The certificate does not follow the rules of its type: could not be checked"
    )


# ---------------------------------------------------------------------------------------------------
# Rule 2: citizen access. Only the citizen's own certificates, only while consent is given.


@pytest.mark.parametrize(("consent", "allowed"), [(GIVEN, True), (NOT_GIVEN, False)])
def test_a_citizen_has_access_only_while_consent_is_given(consent: Consent, allowed: bool) -> None:
    if allowed:
        rules.require_consent(consent)
    else:
        with pytest.raises(errors.ConsentRequired):
            rules.require_consent(consent)


def test_a_missing_consent_is_a_denial() -> None:
    # Denials are audited with outcome "denied" (STYLE.md, Audit).
    assert issubclass(errors.ConsentRequired, errors.Denied)


def test_a_citizen_acts_on_their_own_certificate() -> None:
    rules.require_owner(certificate(), PATIENT)


def test_another_patients_certificate_is_refused_to_a_citizen_as_a_denial() -> None:
    # Audited as denied; the adapters answer it exactly like an unknown id (test_error_maps.py),
    # so the answer does not reveal that the id exists.
    with pytest.raises(errors.NotPermitted):
        rules.require_owner(certificate(), OTHER_PATIENT)


@pytest.mark.parametrize(
    ("citizen_available", "archived", "seen"),
    [
        (True, False, True),  # direct view shows what is not archived
        (False, False, False),
        (True, True, False),  # the archive shows what is archived
        (False, True, True),
    ],
)
def test_the_citizen_sees_the_direct_view_or_the_archive(
    citizen_available: bool, archived: bool, seen: bool
) -> None:
    for care_available in (True, False):
        subject = certificate(care_available, citizen_available)

        assert rules.citizen_sees(subject, archived=archived) is seen


@pytest.mark.parametrize("party", list(Party))
def test_a_citizen_setting_any_status_needs_consent(party: Party) -> None:
    assert rules.status_needs_consent(party, by_citizen=True)


@pytest.mark.parametrize(("party", "needs"), [(p, p is Party.INVANA) for p in Party])
def test_a_status_set_for_the_citizen_needs_consent_and_a_recipients_delivery_does_not(
    party: Party, needs: bool
) -> None:
    assert rules.status_needs_consent(party, by_citizen=False) is needs


@pytest.mark.parametrize(
    ("type_code", "seen"), [("DB", False), ("DOI", False), ("LISJP", True), ("AG7804", True)]
)
def test_a_citizen_never_sees_a_death_certificate(type_code: str, seen: bool) -> None:
    subject = certificate(type_code=type_code)

    assert rules.citizen_sees_type(subject) is seen
    assert [rules.citizen_sees(subject, archived=a) for a in (False, None)] == [seen, seen]
    assert not rules.citizen_sees(subject, archived=True)
    if seen:
        rules.require_citizen_sees_type(subject)
    else:
        # Audited as denied, answered as an unknown id (errors.ANSWERED_AS).
        with pytest.raises(errors.NotPermitted):
            rules.require_citizen_sees_type(subject)


def test_a_type_the_table_does_not_know_stays_the_citizens() -> None:
    # Stored before unknown types were refused; the table hides only the types it says a citizen does not see.
    assert rules.citizen_sees_type(certificate(type_code="NONSENSE"))


# ---------------------------------------------------------------------------------------------------
# Rule 3: care access. Care sees exactly what the care provider keeps; consent and archiving play no part.


@pytest.mark.parametrize(("care_available", "citizen_available", "revoked"), FLAGS)
def test_care_sees_a_certificate_exactly_while_the_care_provider_keeps_it(
    care_available: bool, citizen_available: bool, revoked: bool
) -> None:
    subject = certificate(care_available, citizen_available, revoked)

    assert rules.care_sees(subject) is care_available
    if care_available:
        rules.require_care_visible(subject)
    else:
        with pytest.raises(errors.CertificateNotFound):
            rules.require_care_visible(subject)


def test_archiving_by_the_citizen_is_invisible_to_care() -> None:
    archived = rules.archive(certificate(), now=NOW)

    assert rules.care_sees(certificate(care_available=archived.care_available, citizen_available=False))


# ---------------------------------------------------------------------------------------------------
# Rule 4: archive. The citizen archives (citizen_available false, event DELETE) and restores (true,
# event RESTOR); care is unaffected; doing it again records nothing.


@pytest.mark.parametrize(("care_available", "revoked"), TWO_FLAGS)
def test_archiving_hides_the_certificate_from_the_citizens_view_and_leaves_care_alone(
    care_available: bool, revoked: bool
) -> None:
    decision = rules.archive(certificate(care_available, True, revoked), now=NOW)

    assert flags(decision) == (care_available, False, revoked)
    assert decision.event == StatusEvent(StatusCode.DELETE, Party.INVANA, NOW)
    assert not decision.delete


@pytest.mark.parametrize(("care_available", "revoked"), TWO_FLAGS)
def test_restoring_brings_the_certificate_back_to_the_citizens_view_and_leaves_care_alone(
    care_available: bool, revoked: bool
) -> None:
    decision = rules.restore(certificate(care_available, False, revoked), now=NOW)

    assert flags(decision) == (care_available, True, revoked)
    assert decision.event == StatusEvent(StatusCode.RESTOR, Party.INVANA, NOW)
    assert not decision.delete


@pytest.mark.parametrize(
    ("action", "citizen_available"),
    [(rules.archive, False), (rules.restore, True)],
    ids=["archive", "restore"],
)
def test_archiving_or_restoring_twice_records_nothing_the_second_time(
    action: Callable[..., rules.Decision], citizen_available: bool
) -> None:
    subject = certificate(citizen_available=citizen_available)

    decision = action(subject, now=NOW)

    assert decision.event is None
    assert not decision.changes(subject)


# ---------------------------------------------------------------------------------------------------
# SetCertificateStatus: which party may set which status (rule 4 for the citizen, delivery for recipients).


@pytest.mark.parametrize(
    ("party", "code", "expected"),
    [
        (Party.INVANA, StatusCode.DELETE, StatusEvent(StatusCode.DELETE, Party.INVANA, NOW)),
        (Party.INVANA, StatusCode.RESTOR, None),  # not archived: already in force
        *[(p, StatusCode.RECEIV, StatusEvent(StatusCode.RECEIV, p, NOW)) for p in RECIPIENTS],
    ],
)
def test_a_party_sets_the_statuses_that_are_its_own(
    party: Party, code: StatusCode, expected: StatusEvent | None
) -> None:
    decision = rules.set_status(certificate(), party=party, code=code, at=NOW)

    assert decision.event == expected
    assert not decision.delete


@pytest.mark.parametrize(
    ("party", "code"),
    [
        # Archive and restore belong to the citizen alone (rule 4): a care system can't archive.
        *[(p, c) for p in Party if p is not Party.INVANA for c in (StatusCode.DELETE, StatusCode.RESTOR)],
        # Revoking is the issuer's RevokeCertificate; no party revokes by setting a status.
        *[(p, StatusCode.CANCEL) for p in Party],
        # A send is the send operation's (rules.send_to), whoever reports it; a recipient reports receipt.
        *[(p, StatusCode.SENTTO) for p in Party],
        (Party.INVANA, StatusCode.RECEIV),
        (Party.HSVARD, StatusCode.RECEIV),
    ],
)
def test_a_party_setting_a_status_that_is_not_its_own_is_refused(party: Party, code: StatusCode) -> None:
    with pytest.raises(errors.InvalidStatusChange):
        rules.set_status(certificate(), party=party, code=code, at=NOW)


def test_setting_the_archived_status_on_an_archived_certificate_records_nothing() -> None:
    decision = rules.set_status(
        certificate(citizen_available=False), party=Party.INVANA, code=StatusCode.DELETE, at=NOW
    )

    assert decision.event is None


def test_sending_to_the_same_recipient_twice_records_once() -> None:
    sent = certificate(status_events=(StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),))

    assert rules.send(sent, recipient=Party.FKASSA, now=NOW).event is None
    assert rules.send_to(sent, recipient=FORSAKRINGSKASSAN, now=NOW).event is None


def test_sending_to_another_recipient_after_one_is_recorded() -> None:
    sent = certificate(status_events=(StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),))

    decision = rules.send(sent, recipient=Party.AF, now=NOW)

    assert decision.event == StatusEvent(StatusCode.SENTTO, Party.AF, NOW)


@pytest.mark.parametrize("party", RECIPIENTS)
def test_sending_a_revoked_certificate_is_refused(party: Party) -> None:
    with pytest.raises(errors.CertificateRevoked):
        rules.send(certificate(revoked=True), recipient=party, now=NOW)


@pytest.mark.parametrize("party", [Party.INVANA, Party.HSVARD])
def test_sending_to_a_party_that_is_not_a_recipient_is_refused(party: Party) -> None:
    with pytest.raises(errors.InvalidStatusChange):
        rules.send(certificate(), recipient=party, now=NOW)


# ---------------------------------------------------------------------------------------------------
# Who calls what: the citizen sends a certificate on to a recipient, named by its id, that takes its type.

FORSAKRINGSKASSAN = Recipient(Party.FKASSA, "Försäkringskassan", frozenset({"LISJP"}))
TRANSPORTSTYRELSEN = Recipient(Party.TRANSP, "Transportstyrelsen", frozenset({"TSTRK1007"}))
RECIPIENT_TABLE = {"FKASSA": FORSAKRINGSKASSAN, "TRANSP": TRANSPORTSTYRELSEN}


@pytest.mark.parametrize("recipient", [FORSAKRINGSKASSAN, TRANSPORTSTYRELSEN], ids=lambda r: r.party.value)
def test_a_citizen_names_a_recipient_by_its_id(recipient: Recipient) -> None:
    assert rules.recipient(recipient.party.value, recipients=RECIPIENT_TABLE) is recipient


@pytest.mark.parametrize("recipient_id", ["NOPE", "fkassa", "FK", "AF", "INVANA", "HSVARD", ""])
def test_an_id_no_recipient_has_is_an_unknown_recipient(recipient_id: str) -> None:
    with pytest.raises(errors.UnknownRecipient):
        rules.recipient(recipient_id, recipients=RECIPIENT_TABLE)


def test_sending_to_a_recipient_that_takes_the_type_records_it_sent_there() -> None:
    decision = rules.send_to(certificate(), recipient=FORSAKRINGSKASSAN, now=NOW)

    assert decision.event == StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW)


def test_a_recipient_that_does_not_take_the_type_is_refused_as_an_unknown_recipient() -> None:
    with pytest.raises(errors.UnknownRecipient):
        rules.send_to(certificate(), recipient=TRANSPORTSTYRELSEN, now=NOW)


@pytest.mark.parametrize(
    ("recipient", "type_code", "takes"),
    [
        (FORSAKRINGSKASSAN, "LISJP", True),  # both say so
        (FORSAKRINGSKASSAN, "LUSE", False),  # the table says so, the recipient's entry does not
        (Recipient(Party.FKASSA, "Försäkringskassan", frozenset({"TSTRK1007"})), "TSTRK1007", False),
        (Recipient(Party.FKASSA, "Försäkringskassan", frozenset({"NONSENSE"})), "NONSENSE", False),
        (Recipient(Party.SKV, "Skatteverket", frozenset({"DB"})), "DB", True),
    ],
)
def test_a_recipient_takes_a_type_only_where_its_entry_and_the_type_table_both_say_so(
    recipient: Recipient, type_code: str, takes: bool
) -> None:
    assert rules.takes(recipient, type_code) is takes
    if not takes:
        with pytest.raises(errors.UnknownRecipient):
            rules.send_to(certificate(type_code=type_code), recipient=recipient, now=NOW)


# ---------------------------------------------------------------------------------------------------
# State table, `revoked`: the issuer revokes; the certificate stays stored and reads show it revoked.


@pytest.mark.parametrize(("care_available", "citizen_available"), TWO_FLAGS)
def test_revoking_marks_the_certificate_revoked_and_keeps_it(
    care_available: bool, citizen_available: bool
) -> None:
    decision = rules.revoke(certificate(care_available, citizen_available), now=NOW)

    assert flags(decision) == (care_available, citizen_available, True)
    assert decision.event == StatusEvent(StatusCode.CANCEL, Party.HSVARD, NOW)
    assert not decision.delete


def test_revoking_a_revoked_certificate_records_nothing() -> None:
    subject = certificate(revoked=True)

    decision = rules.revoke(subject, now=NOW)

    assert decision.event is None
    assert not decision.changes(subject)


# ---------------------------------------------------------------------------------------------------
# Who calls what (DOMAIN.md; README "Callers"): a calling system's permissions name the care givers whose
# certificates it may see or change; None means every care giver. The operations that apply this
# scope to every load and list are in test_operations.py.

SCOPES = [
    (None, True),
    (frozenset({CARE_GIVER}), True),
    (frozenset({CARE_GIVER, "SE2321000016-OTHER"}), True),
    (frozenset({"SE2321000016-OTHER"}), False),
    (frozenset(), False),
]


@pytest.mark.parametrize(("scope", "permitted"), SCOPES)
def test_a_certificate_is_within_a_scope_that_names_its_care_giver_or_all(
    scope: frozenset[str] | None, permitted: bool
) -> None:
    assert rules.care_giver_permitted(certificate(care_giver_id=CARE_GIVER), scope) is permitted


@pytest.mark.parametrize(("scope", "permitted"), SCOPES)
def test_another_care_givers_certificate_is_refused_as_not_permitted_which_answers_like_not_found(
    scope: frozenset[str] | None, permitted: bool
) -> None:
    if permitted:
        rules.require_care_giver_permitted(certificate(care_giver_id=CARE_GIVER), scope)
    else:
        with pytest.raises(errors.NotPermitted):
            rules.require_care_giver_permitted(certificate(care_giver_id=CARE_GIVER), scope)


@pytest.mark.parametrize(("scope", "permitted"), SCOPES)
def test_a_care_system_registers_only_for_the_care_givers_its_permissions_name(
    scope: frozenset[str] | None, permitted: bool
) -> None:
    if permitted:
        rules.require_may_register(an_issued_certificate(care_giver_id=CARE_GIVER), scope)
    else:
        with pytest.raises(errors.CallerNotPermitted):
            rules.require_may_register(an_issued_certificate(care_giver_id=CARE_GIVER), scope)


# ---------------------------------------------------------------------------------------------------
# Who calls what: recipients are callers like any other system, each with its recipient code. A recipient's
# part is acted as by that recipient only, and a recipient acts as no other part; None: any part (the
# development consumer). Through SOAP: tests/integration/test_recipients.py.

FKASSA_ONLY = frozenset({Party.FKASSA})
ACTING_AS = [
    (None, Party.FKASSA, True),
    (None, Party.HSVARD, True),
    (None, Party.INVANA, True),
    (FKASSA_ONLY, Party.FKASSA, True),
    (FKASSA_ONLY, Party.TRANSP, False),
    (FKASSA_ONLY, Party.HSVARD, False),
    (FKASSA_ONLY, Party.INVANA, False),
    (frozenset(), Party.HSVARD, True),
    (frozenset(), Party.INVANA, True),
    (frozenset(), Party.FKASSA, False),
    (frozenset(), Party.SOS, False),
]


@pytest.mark.parametrize(("scope", "part", "permitted"), ACTING_AS)
def test_a_recipients_part_is_acted_as_by_that_recipient_alone_which_acts_as_no_other(
    scope: frozenset[Party] | None, part: Party, permitted: bool
) -> None:
    assert rules.may_act_as(scope, part) is permitted


@pytest.mark.parametrize(("scope", "part", "permitted"), ACTING_AS)
def test_a_call_naming_a_part_the_system_may_not_act_as_is_refused_as_not_permitted(
    scope: frozenset[Party] | None, part: Party, permitted: bool
) -> None:
    caller = Caller(part.caller_kind, Channel.SOAP, "SE-SYSTEM", part=part, recipient_scope=scope)
    if permitted:
        rules.require_may_act_for(caller)
    else:
        with pytest.raises(errors.CallerNotPermitted):
            rules.require_may_act_for(caller)


def test_a_call_naming_no_part_is_left_to_the_permission_tables_operations() -> None:
    rules.require_may_act_for(
        Caller(CallerKind.RECIPIENT, Channel.SOAP, "SE-FK", recipient_scope=FKASSA_ONLY)
    )


# ---------------------------------------------------------------------------------------------------
# Recipients read what was sent to them (README.md, "Recipients"): a certificate not sent to the recipient
# is refused as NotPermitted (answered as an unknown id), and the history it sees is its own.

REGISTERED = StatusEvent(StatusCode.RECEIV, Party.HSVARD, NOW)
SENT_FK = StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW)
RECEIVED_FK = StatusEvent(StatusCode.RECEIV, Party.FKASSA, NOW)
SENT_AF = StatusEvent(StatusCode.SENTTO, Party.AF, NOW)
RECEIVED_AF = StatusEvent(StatusCode.RECEIV, Party.AF, NOW)
ARCHIVED = StatusEvent(StatusCode.DELETE, Party.INVANA, NOW)
RESTORED = StatusEvent(StatusCode.RESTOR, Party.INVANA, NOW)
REVOKED = StatusEvent(StatusCode.CANCEL, Party.HSVARD, NOW)


@pytest.mark.parametrize(
    ("events", "recipient", "permitted"),
    [
        ((REGISTERED, SENT_FK), Party.FKASSA, True),
        ((REGISTERED, SENT_FK, REVOKED), Party.FKASSA, True),
        ((REGISTERED, SENT_AF), Party.FKASSA, False),
        ((REGISTERED, RECEIVED_FK), Party.FKASSA, False),  # a receipt without a send is no send
        ((REGISTERED,), Party.FKASSA, False),
        ((REGISTERED, SENT_FK), Party.AF, False),
    ],
)
def test_a_recipient_reads_only_a_certificate_sent_to_it(
    events: tuple[StatusEvent, ...], recipient: Party, permitted: bool
) -> None:
    sent = certificate(status_events=events)
    if permitted:
        rules.require_sent_to(sent, recipient)
    else:
        with pytest.raises(errors.NotPermitted):
            rules.require_sent_to(sent, recipient)


@pytest.mark.parametrize(
    ("event", "seen"),
    [
        (REGISTERED, True),
        (SENT_FK, True),
        (RECEIVED_FK, True),
        (REVOKED, True),
        (SENT_AF, False),
        (RECEIVED_AF, False),
        (ARCHIVED, False),
        (RESTORED, False),
    ],
)
def test_forsakringskassan_sees_the_registration_its_own_events_and_the_revocation_only(
    event: StatusEvent, seen: bool
) -> None:
    assert rules.recipient_sees(event, Party.FKASSA) is seen


def test_a_certificate_as_a_recipient_sees_it_keeps_its_history_in_order_and_no_relations_to_it() -> None:
    replaced = Relation(RelationKind.REPLACES, "cert-2", "root")
    full = certificate(
        status_events=(REGISTERED, SENT_AF, SENT_FK, ARCHIVED, RECEIVED_FK, REVOKED), related_by=(replaced,)
    )
    seen = rules.as_recipient_sees(full, Party.FKASSA)
    assert seen.status_events == (REGISTERED, SENT_FK, RECEIVED_FK, REVOKED)
    assert seen.related_by == ()
    assert dataclasses.replace(seen, status_events=full.status_events, related_by=full.related_by) == full


# ---------------------------------------------------------------------------------------------------
# Rule 5: the care provider removes its copy. With consent the citizen keeps it (archived or not);
# without consent it is deleted permanently.


@pytest.mark.parametrize(("citizen_available", "revoked"), TWO_FLAGS)
def test_removing_the_care_copy_with_consent_keeps_the_certificate_for_the_citizen(
    citizen_available: bool, revoked: bool
) -> None:
    decision = rules.remove_care_copy(
        certificate(True, citizen_available, revoked), care_giver_id=CARE_GIVER, consent=GIVEN
    )

    assert flags(decision) == (False, citizen_available, revoked)
    assert not decision.delete


@pytest.mark.parametrize(("citizen_available", "revoked"), TWO_FLAGS)
def test_removing_the_care_copy_without_consent_deletes_the_certificate_permanently(
    citizen_available: bool, revoked: bool
) -> None:
    decision = rules.remove_care_copy(
        certificate(True, citizen_available, revoked), care_giver_id=CARE_GIVER, consent=NOT_GIVEN
    )

    assert decision.delete
    assert not decision.care_available


@pytest.mark.parametrize("consent", [GIVEN, NOT_GIVEN])
def test_another_care_giver_may_not_remove_the_care_copy(consent: Consent) -> None:
    with pytest.raises(errors.NotPermitted):
        rules.remove_care_copy(certificate(), care_giver_id="SE2321000016-GIVER2", consent=consent)


def test_removing_a_care_copy_already_removed_finds_nothing() -> None:
    with pytest.raises(errors.CertificateNotFound):
        rules.remove_care_copy(certificate(care_available=False), care_giver_id=CARE_GIVER, consent=GIVEN)


# ---------------------------------------------------------------------------------------------------
# Rule 6: consent withdrawn. Every certificate whose care copy was removed is deleted; the rest stay.


def test_withdrawing_consent_deletes_exactly_the_certificates_the_care_provider_removed() -> None:
    held = [
        certificate(care, citizen, revoked, certificate_id=f"cert-{care}-{citizen}-{revoked}")
        for care, citizen, revoked in FLAGS
    ]

    deleted = rules.deleted_on_withdrawal(held)

    assert {c.id for c in deleted} == {c.id for c in held if not c.care_available}
    assert len(deleted) == 4


def test_withdrawing_consent_with_nothing_removed_deletes_nothing() -> None:
    assert rules.deleted_on_withdrawal([certificate(), certificate(citizen_available=False)]) == []
    assert rules.deleted_on_withdrawal([]) == []


# ---------------------------------------------------------------------------------------------------
# Rule 7: nothing brings a deleted certificate back. In the rules this means no decision ever gives the
# care provider its copy back (`care_available` is never set true again), so consent given again finds
# no certificate to revive. The store side is in test_operations.py.


@pytest.mark.parametrize(("citizen_available", "revoked"), TWO_FLAGS)
def test_no_decision_gives_the_care_provider_its_copy_back(citizen_available: bool, revoked: bool) -> None:
    removed = certificate(False, citizen_available, revoked)
    decisions = [
        rules.archive(removed, now=NOW),
        rules.restore(removed, now=NOW),
        rules.revoke(removed, now=NOW),
        *[
            rules.set_status(removed, party=party, code=code, at=NOW)
            for party, code in [
                (Party.INVANA, StatusCode.DELETE),
                (Party.INVANA, StatusCode.RESTOR),
                (Party.FKASSA, StatusCode.RECEIV),
            ]
        ],
    ]
    if not revoked:
        decisions.append(rules.send(removed, recipient=Party.FKASSA, now=NOW))

    assert all(not d.care_available for d in decisions)


# ---------------------------------------------------------------------------------------------------
# Rule 8: a stored certificate always has a keeper, its care copy or the citizen's consent.


@pytest.mark.parametrize(
    ("care_available", "consent", "kept"),
    [(True, GIVEN, True), (True, NOT_GIVEN, True), (False, GIVEN, True), (False, NOT_GIVEN, False)],
)
def test_a_certificate_has_a_keeper_while_care_keeps_it_or_consent_is_given(
    care_available: bool, consent: Consent, kept: bool
) -> None:
    assert rules.has_keeper(certificate(care_available), consent) is kept


@pytest.mark.parametrize(
    ("consent", "citizen_available"), list(itertools.product([GIVEN, NOT_GIVEN], [True, False]))
)
def test_removing_the_care_copy_never_leaves_a_certificate_without_a_keeper(
    consent: Consent, citizen_available: bool
) -> None:
    subject = certificate(True, citizen_available)

    decision = rules.remove_care_copy(subject, care_giver_id=CARE_GIVER, consent=consent)

    after = certificate(decision.care_available, decision.citizen_available, decision.revoked)
    assert decision.delete or rules.has_keeper(after, consent)


def test_after_a_withdrawal_every_certificate_left_has_a_keeper() -> None:
    held = [certificate(care, citizen, certificate_id=f"c-{care}-{citizen}") for care, citizen, _ in FLAGS]
    deleted = {c.id for c in rules.deleted_on_withdrawal(held)}

    left = [c for c in held if c.id not in deleted]

    assert left
    assert all(rules.has_keeper(c, NOT_GIVEN) for c in left)


# ---------------------------------------------------------------------------------------------------
# Rule 9: permanent deletion removes document, metadata and history; the audit trail stays without the
# document's content. The pure part: an audit record has no place for content and names only ids.

CITIZEN = Caller(CallerKind.CITIZEN, Channel.REST, "1177", citizen=PATIENT)
CARE = Caller(
    CallerKind.CARE_SYSTEM,
    Channel.SOAP,
    "SE2321000016-WEBCERT",
    care_unit_id="SE2321000016-UNIT9",
    care_giver_id=CARE_GIVER,
)


def test_an_audit_record_has_no_field_for_document_content() -> None:
    names = {f for f in AuditRecord.__dataclass_fields__}

    assert names == {
        "at",
        "action",
        "outcome",
        "actor_kind",
        "actor_id",
        "channel",
        "patient",
        "certificate_ids",
        "care_unit_id",
        "care_giver_id",
        "actor_citizen",
        "actor_professional",
        "recipient",
        "status",
        "certificate_type",
        "deleted",
        "called",
        "reason",
        "care_unit_name",
        "care_giver_name",
    }


def test_the_audit_record_of_a_deletion_names_the_certificates_by_id_only() -> None:
    deleted = [certificate(False, certificate_id="cert-1"), certificate(False, certificate_id="cert-2")]

    record = audit.record(
        CITIZEN,
        action=Action.WITHDRAW_CONSENT,
        outcome=Outcome.OK,
        now=NOW,
        patient=PATIENT,
        certificates=deleted,
    )

    assert record.certificate_ids == ("cert-1", "cert-2")
    assert record.patient == PATIENT
    values = [str(getattr(record, name)) for name in AuditRecord.__dataclass_fields__]
    for text in (repr(record), *values):
        assert "DOCUMENT-CONTENT" not in text


def test_an_audit_record_names_the_care_unit_accessed_when_the_caller_names_none() -> None:
    read = certificate()

    record = audit.record(
        CITIZEN, action=Action.READ, outcome=Outcome.OK, now=NOW, patient=PATIENT, certificates=[read]
    )

    assert (record.care_unit_id, record.care_giver_id) == (
        read.care_unit.unit_id,
        read.care_unit.care_giver_id,
    )


def test_an_audit_record_names_the_care_unit_the_caller_acts_for() -> None:
    record = audit.record(
        CARE, action=Action.READ, outcome=Outcome.OK, now=NOW, patient=PATIENT, certificates=[certificate()]
    )

    assert (record.care_unit_id, record.care_giver_id) == ("SE2321000016-UNIT9", CARE_GIVER)
    assert (record.actor_kind, record.actor_id, record.channel) == (
        CallerKind.CARE_SYSTEM,
        "SE2321000016-WEBCERT",
        Channel.SOAP,
    )


def test_an_audit_record_lists_each_certificate_id_once() -> None:
    record = audit.record(
        CARE,
        action=Action.READ,
        outcome=Outcome.DENIED,
        now=NOW,
        patient=None,
        certificates=[certificate()],
        certificate_ids=["cert-1", "cert-9"],
    )

    assert record.certificate_ids == ("cert-1", "cert-9")


def test_the_repr_of_an_audit_record_never_shows_the_personal_identity_number() -> None:
    record = audit.record(CITIZEN, action=Action.LIST, outcome=Outcome.OK, now=NOW, patient=PATIENT)

    assert PATIENT.value not in repr(record)


# ---------------------------------------------------------------------------------------------------
# What leaves the service (README.md, "Recipients and statistics"): a send delivers the certificate to its
# recipient, a revocation follows it to every recipient it was sent to, and statistics hear of each
# registration, send, revocation and permanent deletion. The same through a transaction, written with its
# cause or not at all, is in tests/unit/test_operations.py; published through a real broker, in
# tests/integration/test_relay.py.

LATER = NOW + dt.timedelta(hours=1)


def statistics_of(
    subject: Certificate, kind: EventKind, at: dt.datetime, recipient: Party | None = None
) -> Any:
    unit = subject.care_unit
    return StatisticsEvent(
        kind,
        subject.id,
        subject.type_code,
        subject.type_version,
        unit.unit_id,
        unit.care_giver_id,
        subject.signed_at,
        at,
        recipient,
    )


@pytest.mark.parametrize("party", RECIPIENTS)
def test_a_send_delivers_the_certificate_to_its_recipient_and_tells_statistics(party: Party) -> None:
    subject = certificate()

    events = rules.outgoing(subject, rules.send(subject, recipient=party, now=NOW), now=LATER)

    assert events == (
        Delivery(EventKind.SENT, party, subject.id, subject.type_code, NOW),
        statistics_of(subject, EventKind.SENT, NOW, party),
    )


def test_a_send_to_a_recipient_that_has_it_already_tells_nobody() -> None:
    sent = certificate(status_events=(StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),))

    assert rules.outgoing(sent, rules.send(sent, recipient=Party.FKASSA, now=LATER), now=LATER) == ()


def test_a_revocation_follows_the_certificate_to_every_recipient_it_was_sent_to_once() -> None:
    sent = certificate(
        status_events=(
            StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),
            StatusEvent(StatusCode.RECEIV, Party.FKASSA, NOW),
            StatusEvent(StatusCode.SENTTO, Party.AF, NOW),
            StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),
        )
    )

    events = rules.outgoing(sent, rules.revoke(sent, now=LATER), now=LATER)

    assert events == (
        Delivery(EventKind.REVOKED, Party.FKASSA, sent.id, sent.type_code, LATER),
        Delivery(EventKind.REVOKED, Party.AF, sent.id, sent.type_code, LATER),
        statistics_of(sent, EventKind.REVOKED, LATER),
    )


def test_a_revocation_of_a_certificate_never_sent_tells_statistics_only() -> None:
    subject = certificate()

    events = rules.outgoing(subject, rules.revoke(subject, now=LATER), now=LATER)

    assert events == (statistics_of(subject, EventKind.REVOKED, LATER),)


def test_a_revocation_of_a_revoked_certificate_tells_nobody() -> None:
    subject = certificate(revoked=True, status_events=(StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW),))

    assert rules.outgoing(subject, rules.revoke(subject, now=LATER), now=LATER) == ()


@pytest.mark.parametrize(
    "decide",
    [
        lambda c: rules.archive(c, now=LATER),
        lambda c: rules.restore(c, now=LATER),
        lambda c: rules.set_status(c, party=Party.FKASSA, code=StatusCode.RECEIV, at=LATER),
        lambda c: rules.remove_care_copy(c, care_giver_id=CARE_GIVER, consent=GIVEN),
    ],
    ids=["archive", "restore", "received", "care copy removed, kept for the citizen"],
)
def test_what_only_the_stores_two_areas_see_tells_nobody(
    decide: Callable[[Certificate], rules.Decision],
) -> None:
    subject = certificate(citizen_available=False)

    assert rules.outgoing(subject, decide(subject), now=LATER) == ()


def test_a_permanent_deletion_tells_statistics_when_it_happened() -> None:
    subject = certificate()

    decision = rules.remove_care_copy(subject, care_giver_id=CARE_GIVER, consent=NOT_GIVEN)

    assert rules.outgoing(subject, decision, now=LATER) == (statistics_of(subject, EventKind.DELETED, LATER),)


def test_statistics_are_told_a_certificates_type_and_place_never_its_patient_or_document() -> None:
    fields = {f.name for f in dataclasses.fields(StatisticsEvent)} | {
        f.name for f in dataclasses.fields(Delivery)
    }

    assert not fields & {"patient", "document", "issuer_id", "issuer_name"}
