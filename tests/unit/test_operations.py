"""Every use case of ``service.operations`` on the ``FakeUnitOfWork``: result, one commit, audit record.

A refusal is audited too (outcome ``denied`` or ``error``), committed, and only then raised, and it
applies no effect. The pure rules are tested in ``tests/unit/test_rules.py``; the SQL unit of work runs
the same store contract in ``tests/integration/test_store.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule
from prometheus_client import REGISTRY

from service import errors, metrics, operations
from service.model import (
    AuditRecord,
    Caller,
    CallerKind,
    Certificate,
    CertificateWithDocument,
    Channel,
    Delivery,
    EventKind,
    HandedOver,
    Outcome,
    Party,
    PersonId,
    Recipient,
    RuleFailure,
    StaffId,
    StatisticsEvent,
    StatusCode,
    StatusEvent,
)
from service.operations import NewCertificate, Removal
from service.rules import Registration
from tests.fakes import FakeUnitOfWork, a_certificate, an_issued_certificate, document_of

NOW = dt.datetime(2024, 5, 17, 9, 30, tzinfo=dt.UTC)
EARLIER = dt.datetime(2024, 5, 2, 10, 1, tzinfo=dt.UTC)
PATIENT = PersonId.parse("191212121212")
OTHER_PATIENT = PersonId.parse("194404041230")
CARE_GIVER = "SE2321000016-GIVER1"
OTHER_CARE_GIVER = "SE2321000016-GIVER2"

CARE = Caller(
    CallerKind.CARE_SYSTEM,
    Channel.SOAP,
    "SE2321000016-WEBCERT",
    professional=StaffId("SE2321000016-DOC1"),
    care_unit_id="SE2321000016-UNIT1",
    care_giver_id=CARE_GIVER,
)
CITIZEN = Caller(CallerKind.CITIZEN, Channel.REST, "1177", citizen=PATIENT)
RECIPIENT = Caller(CallerKind.RECIPIENT, Channel.SOAP, "FKASSA")
# A recipient that takes the certificates' type (LISJP), and one that does not.
RECIPIENTS = {
    "FKASSA": Recipient(Party.FKASSA, "Försäkringskassan", frozenset({"LISJP"})),
    "TRANSP": Recipient(Party.TRANSP, "Transportstyrelsen", frozenset({"TSTRK1007"})),
}


def stored(certificate_id: str = "cert-1", **changes: Any) -> Certificate:
    """A certificate as the store holds it after registration (RECEIV event included)."""
    changes.setdefault("status_events", (StatusEvent(StatusCode.RECEIV, Party.HSVARD, EARLIER),))
    return a_certificate(certificate_id, **changes)


def assert_one_commit_audited(
    uow: FakeUnitOfWork,
    *,
    action: str,
    outcome: Outcome,
    patient: PersonId | None,
    certificate_ids: tuple[str, ...],
    caller: Caller,
) -> AuditRecord:
    assert uow.committed == 1
    [record] = uow.audit.records
    assert (record.action, record.outcome, record.patient, record.certificate_ids) == (
        action,
        outcome,
        patient,
        certificate_ids,
    )
    assert (record.at, record.actor_kind, record.actor_id, record.channel) == (
        NOW,
        caller.kind,
        caller.system_id,
        caller.channel,
    )
    return record


# ---------------------------------------------------------------------------------------------------
# Rule 1: register


async def test_registering_stores_the_certificate_with_both_flags_true_and_a_received_event() -> None:
    uow = FakeUnitOfWork()

    result = await operations.register_certificate(
        uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=CARE, now=NOW
    )

    assert result is Registration.CREATE
    certificate = uow.certificate("cert-1")
    assert certificate is not None
    assert (certificate.care_available, certificate.citizen_available, certificate.revoked) == (
        True,
        True,
        False,
    )
    assert certificate.status_events == (StatusEvent(StatusCode.RECEIV, Party.HSVARD, NOW),)
    assert certificate.registered_at == NOW
    assert uow.document("cert-1") == b"<intyg/>"
    assert_one_commit_audited(
        uow, action="register", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )


@pytest.mark.parametrize("care_available", [True, False])
async def test_registering_the_same_id_for_the_same_patient_again_changes_nothing(
    care_available: bool,
) -> None:
    before = stored(care_available=care_available, citizen_available=False)
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    result = await operations.register_certificate(
        uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<other/>"), caller=CARE, now=NOW
    )

    assert result is Registration.ALREADY_EXISTS
    # care_available is never set true again (DOMAIN.md, state table).
    assert uow.certificate("cert-1") == before
    assert uow.document("cert-1") == document_of("cert-1")
    record = assert_one_commit_audited(
        uow,
        action="register",
        outcome=Outcome.INFO,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )
    assert record.certificate_type is None  # rule 1: nothing registered, outcome INFO says it exists


async def test_registering_the_same_id_for_another_patient_is_a_conflict_that_changes_nothing() -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before])

    with pytest.raises(errors.CertificateIdConflict):
        await operations.register_certificate(
            uow,
            new=NewCertificate(an_issued_certificate("cert-1", patient=OTHER_PATIENT), b"<other/>"),
            caller=CARE,
            now=NOW,
        )

    assert uow.certificate("cert-1") == before
    assert uow.document("cert-1") == document_of("cert-1")
    # The record names the patient of the request, not the holder of the id.
    assert_one_commit_audited(
        uow,
        action="register",
        outcome=Outcome.ERROR,
        patient=OTHER_PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )


async def test_a_certificate_that_breaks_its_type_s_rules_is_refused_audited_and_not_stored() -> None:
    # The rules are checked by the adapter before the transaction (service/business_rules.py); the
    # refusal is the operation's, audited in its unit of work (tests/integration/test_business_rules.py).
    uow = FakeUnitOfWork()
    broken = (RuleFailure("q32", "/RegisterCertificate[1]/intyg[1]", "Ett 'MU' måste ha ..."),)

    with pytest.raises(errors.BusinessRuleViolation) as refused:
        await operations.register_certificate(
            uow,
            new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>", broken),
            caller=CARE,
            now=NOW,
        )

    assert "[q32] /RegisterCertificate[1]/intyg[1]" in (refused.value.detail or "")

    assert uow.certificate("cert-1") is None
    record = assert_one_commit_audited(
        uow,
        action="register",
        outcome=Outcome.ERROR,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )
    assert record.reason is errors.BusinessRuleViolation


async def test_registering_runs_again_after_losing_a_race_and_commits_once() -> None:
    uow = FakeUnitOfWork(fail_commits=operations.RETRIES - 1)

    result = await operations.register_certificate(
        uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=CARE, now=NOW
    )

    assert result is Registration.CREATE
    assert_one_commit_audited(
        uow, action="register", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )


async def test_registering_gives_up_after_losing_every_race_and_leaves_nothing() -> None:
    uow = FakeUnitOfWork(fail_commits=operations.RETRIES)

    with pytest.raises(errors.ConcurrentChange):
        await operations.register_certificate(
            uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=CARE, now=NOW
        )

    assert uow.committed == 0
    assert uow.certificate("cert-1") is None
    assert uow.audit.records == []


async def test_a_store_that_does_not_answer_is_neither_run_again_nor_audited() -> None:
    # Unlike a lost race, a retry would only wait out the deadline again; and the audit record could
    # not be written either (its commit shares the fate of the effect's).
    uow = FakeUnitOfWork(fail_commits=1, failing_with=errors.StoreUnavailable)

    with pytest.raises(errors.StoreUnavailable):
        await operations.register_certificate(
            uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=CARE, now=NOW
        )

    assert uow.commits_tried == 1
    assert uow.certificate("cert-1") is None
    assert uow.audit.records == []


async def test_a_refusal_the_store_cannot_audit_is_answered_as_the_store_unavailable() -> None:
    # A refusal is told only once its audit record is committed; without a store there is neither.
    uow = FakeUnitOfWork(fail_commits=1, failing_with=errors.StoreUnavailable)

    with pytest.raises(errors.StoreUnavailable):
        await operations.get_certificate_for_care(uow, certificate_id="unknown", caller=CARE, now=NOW)

    assert uow.commits_tried == 1
    assert uow.audit.records == []


# ---------------------------------------------------------------------------------------------------
# Rule 3: care access


@pytest.mark.parametrize("consent", [True, False])
@pytest.mark.parametrize("citizen_available", [True, False])
async def test_care_reads_a_certificate_it_keeps_whatever_the_citizen_did(
    consent: bool, citizen_available: bool
) -> None:
    uow = FakeUnitOfWork(
        certificates=[stored(citizen_available=citizen_available)], consent_given=[PATIENT] if consent else []
    )

    result = await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)

    assert result.certificate == stored(citizen_available=citizen_available)
    assert result.document == document_of("cert-1")
    assert_one_commit_audited(
        uow, action="read", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )


async def test_care_does_not_see_a_certificate_whose_care_copy_was_removed() -> None:
    uow = FakeUnitOfWork(certificates=[stored(care_available=False)], consent_given=[PATIENT])

    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)

    assert_one_commit_audited(
        uow, action="read", outcome=Outcome.ERROR, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )


async def test_care_reading_an_unknown_id_is_not_found_and_audited() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_care(uow, certificate_id="nope", caller=CARE, now=NOW)

    assert_one_commit_audited(
        uow, action="read", outcome=Outcome.ERROR, patient=None, certificate_ids=("nope",), caller=CARE
    )


async def test_care_lists_exactly_the_certificates_it_keeps_archived_or_not() -> None:
    uow = FakeUnitOfWork(
        certificates=[
            stored("kept"),
            stored("archived", citizen_available=False),
            stored("removed", care_available=False),
            stored("another-patient", patient=OTHER_PATIENT),
        ],
        consent_given=[PATIENT],
    )

    found = await operations.list_certificates_for_care(uow, patient=PATIENT, caller=CARE, now=NOW)

    assert sorted(c.id for c in found) == ["archived", "kept"]
    record = assert_one_commit_audited(
        uow,
        action="list",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=tuple(c.id for c in found),
        caller=CARE,
    )
    assert record.care_giver_id == CARE_GIVER


async def test_care_lists_only_the_care_giver_and_units_asked_for() -> None:
    uow = FakeUnitOfWork(
        certificates=[
            stored("mine"),
            stored("other-unit", unit_id="SE2321000016-UNIT2"),
            stored("other-giver", care_giver_id=OTHER_CARE_GIVER, unit_id="SE2321000016-UNIT3"),
        ]
    )

    by_giver = await operations.list_certificates_for_care(
        uow, patient=PATIENT, care_giver_id=CARE_GIVER, caller=CARE, now=NOW
    )
    by_unit = await operations.list_certificates_for_care(
        uow, patient=PATIENT, care_unit_ids=["SE2321000016-UNIT1"], caller=CARE, now=NOW
    )

    assert sorted(c.id for c in by_giver) == ["mine", "other-unit"]
    assert [c.id for c in by_unit] == ["mine"]
    assert uow.committed == 2


# ---------------------------------------------------------------------------------------------------
# Rule 2: citizen access


@pytest.mark.parametrize(
    "certificate",
    [stored(), stored(citizen_available=False), stored(care_available=False), stored(revoked=True)],
    ids=["direct", "archived", "care-copy-removed", "revoked"],
)
async def test_a_citizen_with_consent_reads_their_own_certificate(certificate: Certificate) -> None:
    uow = FakeUnitOfWork(certificates=[certificate], consent_given=[PATIENT])

    result = await operations.get_certificate_for_citizen(
        uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
    )

    assert result.certificate == certificate
    assert result.document == document_of("cert-1")
    record = assert_one_commit_audited(
        uow, action="read", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=CITIZEN
    )
    # The citizen's access log says where the data came from.
    assert record.care_unit_id == certificate.care_unit.unit_id


async def test_a_citizen_without_consent_is_denied_a_read() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])

    with pytest.raises(errors.ConsentRequired):
        await operations.get_certificate_for_citizen(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        )

    assert_one_commit_audited(
        uow,
        action="read",
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )


async def test_a_citizen_reading_another_patients_certificate_finds_nothing() -> None:
    uow = FakeUnitOfWork(certificates=[stored(patient=OTHER_PATIENT)], consent_given=[PATIENT, OTHER_PATIENT])

    with pytest.raises(errors.NotPermitted):
        await operations.get_certificate_for_citizen(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        )

    record = uow.audit.records[0]
    assert (uow.committed, len(uow.audit.records), record.outcome) == (1, 1, Outcome.DENIED)


async def test_a_citizen_with_consent_lists_the_direct_view_or_the_archive() -> None:
    uow = FakeUnitOfWork(
        certificates=[
            stored("direct"),
            stored("archived", citizen_available=False),
            stored("removed", care_available=False),
            stored("another-patient", patient=OTHER_PATIENT),
        ],
        consent_given=[PATIENT, OTHER_PATIENT],
    )

    direct = await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=NOW)
    archive = await operations.list_certificates_for_citizen(
        uow, citizen=PATIENT, archived=True, caller=CITIZEN, now=NOW
    )

    assert sorted(c.id for c in direct) == ["direct", "removed"]
    assert [c.id for c in archive] == ["archived"]
    assert uow.committed == 2
    assert [(r.action, r.outcome, r.patient, set(r.certificate_ids)) for r in uow.audit.records] == [
        ("list", Outcome.OK, PATIENT, {"direct", "removed"}),
        ("list", Outcome.OK, PATIENT, {"archived"}),
    ]


async def test_a_citizen_lists_only_the_types_asked_for_valid_on_a_day_asked_for() -> None:
    def valid(first: dt.date, last: dt.date) -> dict[str, dt.date]:
        return {"valid_from": first, "valid_to": last}

    uow = FakeUnitOfWork(
        certificates=[
            stored("may", signed_at=dt.datetime(2024, 5, 2, tzinfo=dt.UTC)),
            stored("april", signed_at=dt.datetime(2024, 4, 2, tzinfo=dt.UTC)),
            # A sick leave signed in April whose period runs into May, and one that spans all of May: the
            # national service's filter, by either end alone, would leave the second out.
            stored("into-may", **valid(dt.date(2024, 4, 20), dt.date(2024, 5, 1))),
            stored("over-may", **valid(dt.date(2024, 4, 20), dt.date(2024, 6, 10))),
            stored("june", **valid(dt.date(2024, 6, 1), dt.date(2024, 6, 10))),
            stored("unsigned", signed_at=None),
            stored("other-type", type_code="AG7804"),
        ],
        consent_given=[PATIENT],
    )

    in_may = await operations.list_certificates_for_citizen(
        uow,
        citizen=PATIENT,
        types=["LISJP"],
        valid_between=(dt.date(2024, 5, 1), dt.date(2024, 5, 31)),
        caller=CITIZEN,
        now=NOW,
    )
    from_june = await operations.list_certificates_for_citizen(
        uow, citizen=PATIENT, valid_between=(dt.date(2024, 6, 1), None), caller=CITIZEN, now=NOW
    )

    assert sorted(c.id for c in in_may) == ["into-may", "may", "over-may"]
    assert sorted(c.id for c in from_june) == ["june", "over-may"]


async def test_a_citizen_without_consent_is_denied_a_list() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])

    with pytest.raises(errors.ConsentRequired):
        await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=NOW)

    assert_one_commit_audited(
        uow, action="list", outcome=Outcome.DENIED, patient=PATIENT, certificate_ids=(), caller=CITIZEN
    )


# ---------------------------------------------------------------------------------------------------
# Rule 4 and SetCertificateStatus


async def set_status(
    uow: FakeUnitOfWork,
    party: Party,
    code: StatusCode,
    *,
    caller: Caller = CITIZEN,
    citizen: PersonId | None = None,
) -> StatusEvent | None:
    if citizen is None and caller is CITIZEN:
        citizen = PATIENT
    return await operations.set_certificate_status(
        uow, certificate_id="cert-1", party=party, code=code, at=NOW, citizen=citizen, caller=caller, now=NOW
    )


# The audit action of an archive or restore, whichever channel sets the status.
ARCHIVE_ACTIONS = {StatusCode.DELETE: "archive", StatusCode.RESTOR: "restore"}


@pytest.mark.parametrize(
    ("code", "citizen_available", "after"),
    [(StatusCode.DELETE, True, False), (StatusCode.RESTOR, False, True)],
    ids=["archive", "restore"],
)
async def test_the_citizen_archives_and_restores_and_care_is_unaffected(
    code: StatusCode, citizen_available: bool, after: bool
) -> None:
    uow = FakeUnitOfWork(certificates=[stored(citizen_available=citizen_available)], consent_given=[PATIENT])

    event = await set_status(uow, Party.INVANA, code)

    assert event == StatusEvent(code, Party.INVANA, NOW)
    certificate = uow.certificate("cert-1")
    assert certificate is not None
    assert (certificate.citizen_available, certificate.care_available) == (after, True)
    assert certificate.status_events[-1] == event
    assert_one_commit_audited(
        uow,
        action=ARCHIVE_ACTIONS[code],
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )


async def test_archiving_an_archived_certificate_records_nothing_and_answers_info() -> None:
    before = stored(citizen_available=False)
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    event = await set_status(uow, Party.INVANA, StatusCode.DELETE)

    assert event is None
    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action="archive",
        outcome=Outcome.INFO,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )


@pytest.mark.parametrize("code", [StatusCode.DELETE, StatusCode.RESTOR])
async def test_a_citizen_without_consent_can_not_archive_or_restore(code: StatusCode) -> None:
    before = stored(citizen_available=code is StatusCode.DELETE)
    uow = FakeUnitOfWork(certificates=[before])

    with pytest.raises(errors.ConsentRequired):
        await set_status(uow, Party.INVANA, code)

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action=ARCHIVE_ACTIONS[code],
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )


async def test_a_citizen_can_not_archive_another_patients_certificate() -> None:
    before = stored(patient=OTHER_PATIENT)
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT, OTHER_PATIENT])

    with pytest.raises(errors.NotPermitted):
        await set_status(uow, Party.INVANA, StatusCode.DELETE)

    assert uow.certificate("cert-1") == before
    assert (uow.committed, [r.outcome for r in uow.audit.records]) == (1, [Outcome.DENIED])


async def test_a_recipient_reports_a_certificate_received() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])

    event = await set_status(uow, Party.FKASSA, StatusCode.RECEIV, caller=RECIPIENT)

    assert event == StatusEvent(StatusCode.RECEIV, Party.FKASSA, NOW)
    assert uow.certificate("cert-1").status_events[-1] == event  # type: ignore[union-attr]
    record = assert_one_commit_audited(
        uow,
        action="set_status",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=RECIPIENT,
    )
    assert (record.status, record.recipient) == (StatusCode.RECEIV, Party.FKASSA)


async def test_sending_twice_to_the_same_recipient_records_once() -> None:
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT])

    (_, first), (_, second) = await send(uow, "FKASSA"), await send(uow, "FKASSA")

    assert (first, second) == (False, True)
    assert uow.certificate("cert-1").status_events[-1] == StatusEvent(  # type: ignore[union-attr]
        StatusCode.SENTTO, Party.FKASSA, NOW
    )
    assert uow.certificate("cert-1").sent_to() == (Party.FKASSA,)  # type: ignore[union-attr]
    assert [r.outcome for r in uow.audit.records] == [Outcome.OK, Outcome.INFO]
    assert uow.committed == 2


async def test_sending_a_revoked_certificate_is_refused_and_records_nothing() -> None:
    before = stored(revoked=True)
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    with pytest.raises(errors.CertificateRevoked):
        await send(uow, "FKASSA")

    assert uow.certificate("cert-1") == before
    record = assert_one_commit_audited(
        uow,
        action="send",
        outcome=Outcome.ERROR,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )
    assert (record.recipient, record.reason) == (Party.FKASSA, errors.CertificateRevoked)


@pytest.mark.parametrize(
    ("party", "code", "action"),
    [
        (Party.HSVARD, StatusCode.DELETE, "archive"),
        (Party.FKASSA, StatusCode.RESTOR, "restore"),
        (Party.INVANA, StatusCode.CANCEL, "set_status"),
    ],
)
async def test_a_party_setting_a_status_that_is_not_its_own_is_refused_and_records_nothing(
    party: Party, code: StatusCode, action: str
) -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    with pytest.raises(errors.InvalidStatusChange):
        await set_status(uow, party, code, caller=RECIPIENT)

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action=action,
        outcome=Outcome.ERROR,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=RECIPIENT,
    )


async def send(uow: FakeUnitOfWork, recipient_id: str) -> tuple[Certificate, bool]:
    return await operations.send_certificate(
        uow,
        certificate_id="cert-1",
        citizen=PATIENT,
        recipient_id=recipient_id,
        recipients=RECIPIENTS,
        caller=CITIZEN,
        now=NOW,
    )


async def test_a_citizen_sends_a_certificate_to_the_recipient_its_id_names() -> None:
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT])

    changed, already_sent = await send(uow, "FKASSA")

    assert (changed.sent_to(), already_sent) == ((Party.FKASSA,), False)
    assert uow.certificate("cert-1") == changed
    record = assert_one_commit_audited(
        uow,
        action="send",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )
    assert record.recipient is Party.FKASSA


@pytest.mark.parametrize("recipient_id", ["NOPE", "fkassa", "INVANA", "HSVARD"])
async def test_sending_to_an_id_no_recipient_has_is_refused_before_the_unit_of_work(
    recipient_id: str,
) -> None:
    # Invalid input, refused as the adapters refuse theirs: before anything is read, and whatever the
    # certificate or the caller, so nothing is changed or audited.
    before = stored()
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    with pytest.raises(errors.UnknownRecipient):
        await send(uow, recipient_id)

    assert uow.certificate("cert-1") == before
    assert (uow.commits_tried, uow.audit.records) == (0, [])


async def test_sending_to_a_recipient_that_does_not_take_the_type_is_refused_and_audited() -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    with pytest.raises(errors.UnknownRecipient):
        await send(uow, "TRANSP")

    assert uow.certificate("cert-1") == before
    record = assert_one_commit_audited(
        uow,
        action="send",
        outcome=Outcome.ERROR,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )
    assert (record.recipient, record.reason) == (Party.TRANSP, errors.UnknownRecipient)


async def test_a_citizen_without_consent_can_not_send_a_certificate() -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before])

    with pytest.raises(errors.ConsentRequired):
        await send(uow, "FKASSA")

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action="send",
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CITIZEN,
    )


async def test_a_citizen_without_consent_learns_nothing_about_the_certificate_from_a_refusal() -> None:
    uow = FakeUnitOfWork(certificates=[stored(revoked=True)])

    with pytest.raises(errors.ConsentRequired):
        await send(uow, "FKASSA")
    assert [r.outcome for r in uow.audit.records] == [Outcome.DENIED]


# ---------------------------------------------------------------------------------------------------
# One operation for every send: a care system sends for the patient (rule 3, no consent), and a recipient
# records that it was sent one. Through SOAP: tests/integration/test_recipients.py.


async def care_sends(
    uow: FakeUnitOfWork, recipient_id: str = "FKASSA", *, patient: PersonId = PATIENT, caller: Caller = CARE
) -> tuple[Certificate, bool]:
    return await operations.send_certificate(
        uow,
        certificate_id="cert-1",
        recipient_id=recipient_id,
        recipients=RECIPIENTS,
        patient=patient,
        caller=caller,
        now=NOW,
    )


async def test_a_care_system_sends_a_certificate_for_the_patient_without_consent() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])

    changed, already_sent = await care_sends(uow)

    assert (changed.sent_to(), already_sent) == ((Party.FKASSA,), False)
    assert uow.certificate("cert-1") == changed
    assert [type(e) for e in uow.outbox.events] == [Delivery, StatisticsEvent]
    record = assert_one_commit_audited(
        uow, action="send", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )
    # The professional the request names, as a registration's record names its issuer.
    assert (record.recipient, record.actor_professional) == (Party.FKASSA, StaffId("SE2321000016-DOC1"))


async def test_a_care_systems_repeated_send_records_once_and_answers_already_sent() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])

    await care_sends(uow)
    _, already_sent = await care_sends(uow)

    assert already_sent is True
    assert uow.certificate("cert-1").sent_to() == (Party.FKASSA,)  # type: ignore[union-attr]
    assert len([e for e in uow.outbox.events if isinstance(e, Delivery)]) == 1
    assert [r.outcome for r in uow.audit.records] == [Outcome.OK, Outcome.INFO]


SCOPED_CARE = dataclasses.replace(CARE, care_giver_scope=frozenset({CARE_GIVER}))


@pytest.mark.parametrize(
    ("certificate", "patient", "recipient_id", "error", "outcome"),
    [
        (None, PATIENT, "FKASSA", errors.CertificateNotFound, Outcome.ERROR),
        (stored(care_giver_id=OTHER_CARE_GIVER), PATIENT, "FKASSA", errors.NotPermitted, Outcome.DENIED),
        (stored(care_available=False), PATIENT, "FKASSA", errors.CertificateNotFound, Outcome.ERROR),
        (stored(), OTHER_PATIENT, "FKASSA", errors.PatientMismatch, Outcome.ERROR),
        (stored(revoked=True), PATIENT, "FKASSA", errors.CertificateRevoked, Outcome.ERROR),
        (stored(), PATIENT, "TRANSP", errors.UnknownRecipient, Outcome.ERROR),
    ],
    ids=["unknown", "another care giver's", "care copy removed", "another patient", "revoked", "not taken"],
)
async def test_a_care_systems_refused_send_changes_nothing_delivers_nothing_and_is_audited(
    certificate: Certificate | None,
    patient: PersonId,
    recipient_id: str,
    error: type[errors.ServiceError],
    outcome: Outcome,
) -> None:
    uow = FakeUnitOfWork(certificates=[certificate] if certificate else [])

    with pytest.raises(error):
        await care_sends(uow, recipient_id, patient=patient, caller=SCOPED_CARE)

    assert uow.certificate("cert-1") == certificate
    assert uow.outbox.events == []
    assert uow.committed == 1
    [record] = uow.audit.records
    assert (record.action, record.outcome, record.reason, record.certificate_ids) == (
        "send",
        outcome,
        error,
        ("cert-1",),
    )


async def test_a_recipient_records_that_it_was_sent_a_certificate_at_the_time_it_states() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])
    fkassa = dataclasses.replace(RECIPIENT, part=Party.FKASSA)

    changed, _ = await operations.send_certificate(
        uow,
        certificate_id="cert-1",
        recipient_id="FKASSA",
        recipients=RECIPIENTS,
        at=EARLIER,
        caller=fkassa,
        now=NOW,
    )

    assert changed.status_events[-1] == StatusEvent(StatusCode.SENTTO, Party.FKASSA, EARLIER)
    assert_one_commit_audited(
        uow, action="send", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=fkassa
    )


async def test_a_system_that_is_not_forsakringskassan_can_not_record_a_send_as_it() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])
    transp = dataclasses.replace(RECIPIENT, part=Party.FKASSA, recipient_scope=frozenset({Party.TRANSP}))

    with pytest.raises(errors.CallerNotPermitted):
        await operations.send_certificate(
            uow, certificate_id="cert-1", recipient_id="FKASSA", recipients=RECIPIENTS, caller=transp, now=NOW
        )

    assert uow.certificate("cert-1") == stored()
    assert [(r.outcome, r.reason) for r in uow.audit.records] == [(Outcome.DENIED, errors.CallerNotPermitted)]


# ---------------------------------------------------------------------------------------------------
# Recipients read what was sent to them, with the history they may see (rules.as_recipient_sees).

SENT_TO_FK = StatusEvent(StatusCode.SENTTO, Party.FKASSA, EARLIER)
SENT_TO_AF = StatusEvent(StatusCode.SENTTO, Party.AF, EARLIER)
ARCHIVED = StatusEvent(StatusCode.DELETE, Party.INVANA, EARLIER)
REGISTERED_EVENT = StatusEvent(StatusCode.RECEIV, Party.HSVARD, EARLIER)


async def read_as(uow: FakeUnitOfWork, recipient: Party) -> CertificateWithDocument:
    return await operations.get_certificate_for_recipient(
        uow,
        certificate_id="cert-1",
        recipient=recipient,
        caller=dataclasses.replace(RECIPIENT, part=recipient),
        now=NOW,
    )


async def test_a_recipient_reads_a_certificate_sent_to_it_with_the_history_it_may_see() -> None:
    uow = FakeUnitOfWork(
        certificates=[stored(status_events=(REGISTERED_EVENT, SENT_TO_AF, ARCHIVED, SENT_TO_FK))]
    )

    found = await read_as(uow, Party.FKASSA)

    assert found.certificate.status_events == (REGISTERED_EVENT, SENT_TO_FK)
    assert found.document == document_of("cert-1")
    record = assert_one_commit_audited(
        uow,
        action="read",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=dataclasses.replace(RECIPIENT, part=Party.FKASSA),
    )
    assert record.actor_kind is CallerKind.RECIPIENT


@pytest.mark.parametrize(
    ("certificates", "error"),
    [
        ([stored(status_events=(REGISTERED_EVENT, SENT_TO_AF))], errors.NotPermitted),
        ([stored()], errors.NotPermitted),
        ([], errors.CertificateNotFound),
    ],
    ids=["sent to another recipient", "sent to none", "unknown"],
)
async def test_a_recipient_reading_what_was_not_sent_to_it_is_refused_as_an_unknown_id_and_audited(
    certificates: list[Certificate], error: type[errors.ServiceError]
) -> None:
    uow = FakeUnitOfWork(certificates=certificates)

    with pytest.raises(error):
        await read_as(uow, Party.FKASSA)

    assert errors.answered_as(error) is errors.CertificateNotFound
    [record] = uow.audit.records
    assert (record.action, record.outcome) == (
        "read",
        Outcome.DENIED if error is errors.NotPermitted else Outcome.ERROR,
    )


# ---------------------------------------------------------------------------------------------------
# State table, `revoked`: the issuer revokes; the certificate stays stored and reads show it revoked.


async def test_revoking_marks_the_certificate_revoked_and_keeps_it_readable() -> None:
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT])

    revoked = await operations.revoke_certificate(
        uow, certificate_id="cert-1", patient=PATIENT, caller=CARE, now=NOW
    )

    assert revoked is True
    assert_one_commit_audited(
        uow, action="revoke", outcome=Outcome.OK, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )
    for_care = await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)
    for_citizen = await operations.get_certificate_for_citizen(
        uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
    )
    assert for_care.certificate.revoked
    assert for_citizen.certificate.revoked
    assert for_care.certificate.status_events[-1] == StatusEvent(StatusCode.CANCEL, Party.HSVARD, NOW)


async def test_revoking_a_revoked_certificate_answers_info_and_records_nothing() -> None:
    before = stored(revoked=True)
    uow = FakeUnitOfWork(certificates=[before])

    revoked = await operations.revoke_certificate(
        uow, certificate_id="cert-1", patient=PATIENT, caller=CARE, now=NOW
    )

    assert revoked is False
    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow, action="revoke", outcome=Outcome.INFO, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )


async def test_revoking_with_another_patient_named_is_refused_and_changes_nothing() -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before])

    with pytest.raises(errors.PatientMismatch):
        await operations.revoke_certificate(
            uow, certificate_id="cert-1", patient=OTHER_PATIENT, caller=CARE, now=NOW
        )

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow, action="revoke", outcome=Outcome.ERROR, patient=PATIENT, certificate_ids=("cert-1",), caller=CARE
    )


async def test_revoking_an_unknown_id_is_not_found_and_audited() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(errors.CertificateNotFound):
        await operations.revoke_certificate(uow, certificate_id="nope", patient=PATIENT, caller=CARE, now=NOW)

    assert_one_commit_audited(
        uow, action="revoke", outcome=Outcome.ERROR, patient=PATIENT, certificate_ids=("nope",), caller=CARE
    )


# ---------------------------------------------------------------------------------------------------
# Rule 5: the care provider removes its copy


async def remove(uow: FakeUnitOfWork, care_giver_id: str = CARE_GIVER) -> Removal:
    return await operations.remove_care_copy(
        uow, certificate_id="cert-1", care_giver_id=care_giver_id, caller=CARE, now=NOW
    )


@pytest.mark.parametrize("citizen_available", [True, False], ids=["direct", "archived"])
async def test_removing_the_care_copy_with_consent_keeps_the_certificate_for_the_citizen_only(
    citizen_available: bool,
) -> None:
    uow = FakeUnitOfWork(certificates=[stored(citizen_available=citizen_available)], consent_given=[PATIENT])

    removal = await remove(uow)

    assert removal is Removal.KEPT_FOR_CITIZEN
    certificate = uow.certificate("cert-1")
    assert certificate is not None
    assert (certificate.care_available, certificate.citizen_available) == (False, citizen_available)
    record = assert_one_commit_audited(
        uow,
        action="remove_care_copy",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )
    assert record.deleted == 0

    read = await operations.get_certificate_for_citizen(
        uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
    )
    listed = await operations.list_certificates_for_citizen(
        uow, citizen=PATIENT, archived=not citizen_available, caller=CITIZEN, now=NOW
    )
    assert read.document == document_of("cert-1")
    assert [c.id for c in listed] == ["cert-1"]
    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)
    assert await operations.list_certificates_for_care(uow, patient=PATIENT, caller=CARE, now=NOW) == []


async def test_removing_the_care_copy_without_consent_deletes_the_certificate_for_everyone() -> None:
    uow = FakeUnitOfWork(certificates=[stored()])

    removal = await remove(uow)

    assert removal is Removal.DELETED
    assert uow.certificate("cert-1") is None
    assert uow.document("cert-1") is None
    record = assert_one_commit_audited(
        uow,
        action="remove_care_copy",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )
    assert record.deleted == 1

    await operations.set_consent(uow, citizen=PATIENT, given=True, caller=CITIZEN, now=NOW)
    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_citizen(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        )
    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)
    assert await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=NOW) == []
    # The audit trail of the deletion stays (rule 9).
    assert uow.audit.records[0] == record


async def test_another_care_giver_may_not_remove_the_care_copy() -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before])

    with pytest.raises(errors.NotPermitted):
        await remove(uow, care_giver_id=OTHER_CARE_GIVER)

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action="remove_care_copy",
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )


async def test_removing_a_care_copy_already_removed_finds_nothing_and_changes_nothing() -> None:
    before = stored(care_available=False)
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT])

    with pytest.raises(errors.CertificateNotFound):
        await remove(uow)

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action="remove_care_copy",
        outcome=Outcome.ERROR,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )


# ---------------------------------------------------------------------------------------------------
# Consent, rules 6 and 7


async def test_giving_consent_records_when_by_whom_and_through_which_channel() -> None:
    uow = FakeUnitOfWork()

    change = await operations.set_consent(uow, citizen=PATIENT, given=True, caller=CITIZEN, now=NOW)

    assert (change.consent.given, change.consent.changed_at, change.changed, change.deleted) == (
        True,
        NOW,
        True,
        0,
    )
    assert uow.consent_given(PATIENT)
    [history] = uow.consent_changes
    assert (history.given, history.at, history.actor_kind, history.actor_id, history.channel) == (
        True,
        NOW,
        CallerKind.CITIZEN,
        "1177",
        Channel.REST,
    )
    assert_one_commit_audited(
        uow, action="give_consent", outcome=Outcome.OK, patient=PATIENT, certificate_ids=(), caller=CITIZEN
    )


@pytest.mark.parametrize(("given", "action"), [(True, "give_consent"), (False, "withdraw_consent")])
async def test_setting_consent_to_what_it_is_changes_nothing_and_answers_info(
    given: bool, action: str
) -> None:
    uow = FakeUnitOfWork(consent_given=[PATIENT] if given else [])

    change = await operations.set_consent(uow, citizen=PATIENT, given=given, caller=CITIZEN, now=NOW)

    assert (change.changed, change.deleted, change.consent.given) == (False, 0, given)
    assert uow.consent_changes == []
    assert_one_commit_audited(
        uow, action=action, outcome=Outcome.INFO, patient=PATIENT, certificate_ids=(), caller=CITIZEN
    )


async def test_a_citizen_never_seen_has_not_given_consent() -> None:
    uow = FakeUnitOfWork()

    consent = await operations.get_consent(uow, citizen=PATIENT, caller=CITIZEN, now=NOW)

    assert (consent.given, consent.changed_at) == (False, None)
    assert_one_commit_audited(
        uow, action="read_consent", outcome=Outcome.OK, patient=PATIENT, certificate_ids=(), caller=CITIZEN
    )


async def test_withdrawing_consent_deletes_exactly_the_certificates_the_care_provider_removed() -> None:
    uow = FakeUnitOfWork(
        certificates=[
            stored("kept"),
            stored("kept-archived", citizen_available=False),
            stored("removed", care_available=False),
            stored("removed-archived", care_available=False, citizen_available=False),
            stored("another-patient-removed", patient=OTHER_PATIENT, care_available=False),
        ],
        consent_given=[PATIENT, OTHER_PATIENT],
    )

    change = await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)

    assert (change.consent.given, change.changed, change.deleted) == (False, True, 2)
    assert sorted(uow.stored.certificates) == ["another-patient-removed", "kept", "kept-archived"]
    assert uow.document("removed") is None
    assert uow.document("removed-archived") is None
    record = assert_one_commit_audited(
        uow,
        action="withdraw_consent",
        outcome=Outcome.OK,
        patient=PATIENT,
        certificate_ids=("removed", "removed-archived"),
        caller=CITIZEN,
    )
    assert record.deleted == 2

    # Care keeps what it kept; the citizen loses all access at once.
    for_care = await operations.list_certificates_for_care(uow, patient=PATIENT, caller=CARE, now=NOW)
    assert sorted(c.id for c in for_care) == ["kept", "kept-archived"]
    with pytest.raises(errors.ConsentRequired):
        await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=NOW)
    with pytest.raises(errors.ConsentRequired):
        await operations.get_certificate_for_citizen(
            uow, certificate_id="kept", citizen=PATIENT, caller=CITIZEN, now=NOW
        )


async def test_giving_consent_again_brings_no_deleted_certificate_back() -> None:
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT])
    await remove(uow)
    await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)

    change = await operations.set_consent(uow, citizen=PATIENT, given=True, caller=CITIZEN, now=NOW)

    assert (change.changed, change.deleted) == (True, 0)
    assert uow.certificate("cert-1") is None
    assert await operations.list_certificates_for_citizen(uow, citizen=PATIENT, caller=CITIZEN, now=NOW) == []
    assert (
        await operations.list_certificates_for_citizen(
            uow, citizen=PATIENT, archived=True, caller=CITIZEN, now=NOW
        )
        == []
    )
    with pytest.raises(errors.CertificateNotFound):
        await operations.get_certificate_for_citizen(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        )


async def test_removing_the_care_copy_and_withdrawing_consent_run_again_after_losing_a_race() -> None:
    # Both lock the citizen's consent row (rule 8); the loser of a race runs again and sees the winner.
    uow = FakeUnitOfWork(
        certificates=[stored()], consent_given=[PATIENT], fail_commits=operations.RETRIES - 1
    )

    removal = await remove(uow)
    uow.fail_commits = operations.RETRIES - 1
    change = await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)

    assert (removal, change.deleted) == (Removal.KEPT_FOR_CITIZEN, 1)
    assert uow.certificate("cert-1") is None
    assert uow.committed == 2
    assert [r.action for r in uow.audit.records] == ["remove_care_copy", "withdraw_consent"]


# ---------------------------------------------------------------------------------------------------
# Who calls what (DOMAIN.md; README "Callers"): a calling system acts only within the care givers its
# permissions name. Another care giver's certificate is refused exactly as if it did not exist
# (NotPermitted answers like not found), audited as denied, and changes nothing; every list leaves it out.

SCOPED = dataclasses.replace(CARE, care_giver_scope=frozenset({OTHER_CARE_GIVER}))
SCOPED_PORTAL = Caller(
    CallerKind.CITIZEN, Channel.SOAP, "SE2321000016-PORT", care_giver_scope=frozenset({OTHER_CARE_GIVER})
)

# Each single-certificate operation a care system or portal reaches, as (action, call).
SINGLE: dict[str, Callable[[FakeUnitOfWork], Awaitable[object]]] = {
    "read": lambda uow: operations.get_certificate_for_care(
        uow, certificate_id="cert-1", caller=SCOPED, now=NOW
    ),
    "revoke": lambda uow: operations.revoke_certificate(
        uow, certificate_id="cert-1", patient=PATIENT, caller=SCOPED, now=NOW
    ),
    "remove_care_copy": lambda uow: operations.remove_care_copy(
        uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=SCOPED, now=NOW
    ),
    "set_status": lambda uow: operations.set_certificate_status(
        uow,
        certificate_id="cert-1",
        party=Party.FKASSA,
        code=StatusCode.RECEIV,
        at=NOW,
        caller=SCOPED,
        now=NOW,
    ),
}


@pytest.mark.parametrize("action", SINGLE)
async def test_another_care_givers_certificate_is_refused_as_unknown_audited_and_unchanged(
    action: str,
) -> None:
    before = stored()
    uow = FakeUnitOfWork(certificates=[before])

    with pytest.raises(errors.NotPermitted):
        await SINGLE[action](uow)

    assert uow.certificate("cert-1") == before
    assert_one_commit_audited(
        uow,
        action=action,
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=SCOPED,
    )


# Ids that cannot be certificate ids (README "Input"): refused before they reach the store, where a NUL
# once made the SQL fail and the read went unaudited.
BAD_IDS = {"nul": "\x00", "nul inside": "a\x00b", "control": "a\nb", "empty": "", "too long": "x" * 129}

# Each operation that reads one certificate by the id a caller gives.
BY_ID: dict[str, Callable[[FakeUnitOfWork, str], Awaitable[object]]] = {
    "read (care)": lambda uow, i: operations.get_certificate_for_care(
        uow, certificate_id=i, caller=CARE, now=NOW
    ),
    "read (citizen)": lambda uow, i: operations.get_certificate_for_citizen(
        uow, certificate_id=i, citizen=PATIENT, caller=CITIZEN, now=NOW
    ),
    "archive": lambda uow, i: operations.archive_certificate(
        uow, certificate_id=i, citizen=PATIENT, caller=CITIZEN, now=NOW
    ),
    "revoke": lambda uow, i: operations.revoke_certificate(
        uow, certificate_id=i, patient=PATIENT, caller=CARE, now=NOW
    ),
    "register": lambda uow, i: operations.register_certificate(
        uow, new=NewCertificate(an_issued_certificate(i), b"<intyg/>"), caller=CARE, now=NOW
    ),
}


@pytest.mark.parametrize("certificate_id", BAD_IDS.values(), ids=BAD_IDS.keys())
@pytest.mark.parametrize("operation", BY_ID)
async def test_an_id_that_cannot_be_a_certificate_id_is_invalid_input_audited_without_it(
    operation: str, certificate_id: str
) -> None:
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT])

    with pytest.raises(errors.InvalidInput):
        await BY_ID[operation](uow, certificate_id)

    [record] = uow.audit.records
    assert (record.outcome, record.certificate_ids, record.reason) == (Outcome.ERROR, (), errors.InvalidInput)
    assert uow.certificate("cert-1") == stored()


@pytest.mark.parametrize("operation", [o for o in BY_ID if o != "register"])
async def test_a_fault_nobody_foresaw_is_audited_as_an_error_and_raised(operation: str) -> None:
    fault = RuntimeError("a fault of the store")
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT], fault_on_read=fault)

    with pytest.raises(RuntimeError) as raised:
        await BY_ID[operation](uow, "cert-1")

    assert raised.value is fault
    [record] = uow.audit.records
    assert (record.outcome, record.certificate_ids, record.reason) == (
        Outcome.ERROR,
        ("cert-1",),
        errors.UnexpectedError,
    )


# Each operation that acts for a citizen, as a system limited to one care giver would call it.
FOR_CITIZEN: dict[str, Callable[[FakeUnitOfWork], Awaitable[object]]] = {
    "withdraw_consent": lambda uow: operations.set_consent(
        uow, citizen=PATIENT, given=False, caller=SCOPED_PORTAL, now=NOW
    ),
    "give_consent": lambda uow: operations.set_consent(
        uow, citizen=PATIENT, given=True, caller=SCOPED_PORTAL, now=NOW
    ),
    "read_consent": lambda uow: operations.get_consent(uow, citizen=PATIENT, caller=SCOPED_PORTAL, now=NOW),
    "read": lambda uow: operations.get_certificate_for_citizen(
        uow, certificate_id="cert-1", citizen=PATIENT, caller=SCOPED_PORTAL, now=NOW
    ),
    "list": lambda uow: operations.list_certificates_for_citizen(
        uow, citizen=PATIENT, caller=SCOPED_PORTAL, now=NOW
    ),
    "archive": lambda uow: operations.archive_certificate(
        uow, certificate_id="cert-1", citizen=PATIENT, caller=SCOPED_PORTAL, now=NOW
    ),
    "send": lambda uow: operations.send_certificate(
        uow,
        certificate_id="cert-1",
        citizen=PATIENT,
        recipient_id="FKASSA",
        recipients=RECIPIENTS,
        caller=SCOPED_PORTAL,
        now=NOW,
    ),
    "status": lambda uow: operations.set_certificate_status(
        uow,
        certificate_id="cert-1",
        party=Party.INVANA,
        code=StatusCode.DELETE,
        at=NOW,
        caller=SCOPED_PORTAL,
        now=NOW,
    ),
}


@pytest.mark.parametrize("operation", FOR_CITIZEN)
async def test_a_system_limited_to_some_care_givers_may_not_act_for_a_citizen(operation: str) -> None:
    # The attack: the certificate of another care giver, kept only for the citizen's
    # consent (its care copy removed), which withdrawing consent would delete (rule 6).
    kept_for_citizen = stored(care_available=False)
    uow = FakeUnitOfWork(certificates=[kept_for_citizen], consent_given=[PATIENT])

    with pytest.raises(errors.CallerNotPermitted):
        await FOR_CITIZEN[operation](uow)

    assert uow.certificate("cert-1") == kept_for_citizen
    assert uow.stored.consents[PATIENT].given
    [record] = uow.audit.records
    assert (record.outcome, record.actor_id, record.actor_kind) == (
        Outcome.DENIED,
        SCOPED_PORTAL.system_id,
        CallerKind.CITIZEN,
    )
    assert uow.committed == 1


async def test_a_care_system_cannot_register_for_a_care_giver_outside_its_permissions() -> None:
    uow = FakeUnitOfWork()

    with pytest.raises(errors.CallerNotPermitted):
        await operations.register_certificate(
            uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=SCOPED, now=NOW
        )

    assert uow.certificate("cert-1") is None
    assert_one_commit_audited(
        uow,
        action="register",
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=SCOPED,
    )


async def test_lists_leave_out_the_certificates_of_care_givers_outside_the_callers_permissions() -> None:
    mine, theirs = stored("mine", care_giver_id=OTHER_CARE_GIVER), stored("theirs")
    uow = FakeUnitOfWork(certificates=[mine, theirs], consent_given=[PATIENT])

    for_care = await operations.list_certificates_for_care(uow, patient=PATIENT, caller=SCOPED, now=NOW)
    unscoped = await operations.list_certificates_for_care(uow, patient=PATIENT, caller=CARE, now=NOW)

    assert [c.id for c in for_care] == ["mine"]
    assert sorted(c.id for c in unscoped) == ["mine", "theirs"]
    # The audit record names what was shown, not what was left out.
    assert uow.audit.records[0].certificate_ids == ("mine",)


async def test_a_refused_call_is_audited_as_denied_and_committed_before_it_is_raised() -> None:
    uow = FakeUnitOfWork()
    refused = Caller(CallerKind.CARE_SYSTEM, Channel.SOAP, "unidentified")

    with pytest.raises(errors.CallerNotPermitted):
        await operations.refuse_call(
            uow,
            caller=refused,
            called="RegisterCertificate:3",
            now=NOW,
            error=errors.CallerNotPermitted("no verified client certificate"),
        )

    record = assert_one_commit_audited(
        uow,
        action="call",
        outcome=Outcome.DENIED,
        patient=None,
        certificate_ids=(),
        caller=refused,
    )
    assert (record.called, record.reason) == ("RegisterCertificate:3", errors.CallerNotPermitted)


# ---------------------------------------------------------------------------------------------------
# The certificate type table (service/certificate_type.py): only its types and versions are stored, and a
# citizen never reaches a type hidden from citizens (a death certificate), which care reads as any other.
# The rules alone: tests/unit/test_rules.py; through SOAP and REST: tests/integration/test_certificate_types.py.


@pytest.mark.parametrize(("type_code", "version"), [("NONSENSE", "1.0"), ("LUSE", "99.9"), ("AG114", "1.0")])
async def test_a_certificate_of_a_type_or_version_the_table_does_not_know_is_refused_stored_nowhere_and_audited(
    type_code: str, version: str
) -> None:
    uow = FakeUnitOfWork()
    issued = an_issued_certificate("cert-1", type_code=type_code, type_version=version)

    with pytest.raises(errors.UnknownCertificateType):
        await operations.register_certificate(
            uow, new=NewCertificate(issued, b"<intyg/>"), caller=CARE, now=NOW
        )

    assert uow.certificate("cert-1") is None
    record = assert_one_commit_audited(
        uow,
        action="register",
        outcome=Outcome.ERROR,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=CARE,
    )
    # A type only where a certificate was registered (model.AuditRecord): the reason says why not.
    assert (record.reason, record.certificate_type) == (errors.UnknownCertificateType, None)


async def test_a_registered_certificate_is_audited_with_its_type_as_the_metrics_count_it() -> None:
    uow = FakeUnitOfWork()
    issued = an_issued_certificate("cert-1", type_code="LUAE_NA", type_version="1.0")

    await operations.register_certificate(uow, new=NewCertificate(issued, b"<intyg/>"), caller=CARE, now=NOW)

    [record] = uow.audit.records
    assert (record.outcome, record.certificate_type) == (Outcome.OK, "LUAE_NA")


def death_certificate(type_code: str = "DB", **changes: Any) -> Certificate:
    return stored(type_code=type_code, type_version="1.0", type_display_name="Dödsbevis", **changes)


SKATTEVERKET = Recipient(Party.SKV, "Skatteverket", frozenset({"DB"}))

# Each way a citizen's channel reaches one certificate, as (audit action, call): REST (the citizen
# named), SOAP with the part INVANA (no citizen named), and the 2013 contracts (the citizen named).
AS_CITIZEN: dict[str, tuple[str, Callable[[FakeUnitOfWork], Awaitable[object]]]] = {
    "rest read": (
        "read",
        lambda uow: operations.get_certificate_for_citizen(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        ),
    ),
    "INVANA read": (
        "read",
        lambda uow: operations.get_certificate_for_citizen(
            uow, certificate_id="cert-1", citizen=None, caller=CITIZEN, now=NOW
        ),
    ),
    "rest archive": (
        "archive",
        lambda uow: operations.archive_certificate(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        ),
    ),
    "rest restore": (
        "restore",
        lambda uow: operations.restore_certificate(
            uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
        ),
    ),
    "rest send": (
        "send",
        lambda uow: operations.send_certificate(
            uow,
            certificate_id="cert-1",
            citizen=PATIENT,
            recipient_id="SKV",
            recipients={"SKV": SKATTEVERKET},
            caller=CITIZEN,
            now=NOW,
        ),
    ),
    "INVANA archive": (
        "archive",
        lambda uow: operations.set_certificate_status(
            uow,
            certificate_id="cert-1",
            party=Party.INVANA,
            code=StatusCode.DELETE,
            at=NOW,
            caller=CITIZEN,
            now=NOW,
        ),
    ),
    "2013 received": (
        "set_status",
        lambda uow: operations.set_certificate_status(
            uow,
            certificate_id="cert-1",
            party=Party.SKV,
            code=StatusCode.RECEIV,
            at=NOW,
            citizen=PATIENT,
            caller=RECIPIENT,
            now=NOW,
        ),
    ),
}


@pytest.mark.parametrize("consent", [True, False], ids=["consent", "no consent"])
@pytest.mark.parametrize("type_code", ["DB", "DOI"])
@pytest.mark.parametrize("channel", AS_CITIZEN)
async def test_a_citizen_channel_finds_no_death_certificate_and_the_refusal_is_audited(
    channel: str, type_code: str, consent: bool
) -> None:
    before = death_certificate(type_code)
    uow = FakeUnitOfWork(certificates=[before], consent_given=[PATIENT] if consent else [])
    action, call = AS_CITIZEN[channel]

    # NotPermitted is answered as CertificateNotFound (errors.ANSWERED_AS): with or without consent,
    # exactly as an unknown id.
    with pytest.raises(errors.NotPermitted):
        await call(uow)

    assert uow.certificate("cert-1") == before
    caller = RECIPIENT if channel == "2013 received" else CITIZEN
    record = assert_one_commit_audited(
        uow,
        action=action,
        outcome=Outcome.DENIED,
        patient=PATIENT,
        certificate_ids=("cert-1",),
        caller=caller,
    )
    assert record.reason is errors.NotPermitted


@pytest.mark.parametrize("archived", [False, True, None])
async def test_a_citizen_lists_no_death_certificate_even_when_asking_for_its_type(
    archived: bool | None,
) -> None:
    citizen_available = archived is not True
    uow = FakeUnitOfWork(
        certificates=[
            stored("sick-leave", citizen_available=citizen_available),
            death_certificate("DB", certificate_id="db", citizen_available=citizen_available),
            death_certificate("DOI", certificate_id="doi", citizen_available=citizen_available),
        ],
        consent_given=[PATIENT],
    )

    listed = await operations.list_certificates_for_citizen(
        uow, citizen=PATIENT, archived=archived, caller=CITIZEN, now=NOW
    )
    asked = await operations.list_certificates_for_citizen(
        uow, citizen=PATIENT, archived=archived, types=["DB", "DOI"], caller=CITIZEN, now=NOW
    )

    assert ([c.id for c in listed], asked) == (["sick-leave"], [])
    assert [set(r.certificate_ids) for r in uow.audit.records] == [{"sick-leave"}, set()]


async def test_care_reads_and_lists_a_death_certificate_as_any_other() -> None:
    uow = FakeUnitOfWork(certificates=[death_certificate()])

    found = await operations.get_certificate_for_care(uow, certificate_id="cert-1", caller=CARE, now=NOW)
    listed = await operations.list_certificates_for_care(uow, patient=PATIENT, caller=CARE, now=NOW)

    assert (found.certificate.type_code, [c.id for c in listed]) == ("DB", ["cert-1"])
    assert [r.outcome for r in uow.audit.records] == [Outcome.OK, Outcome.OK]


async def test_a_recipient_records_receipt_of_a_death_certificate() -> None:
    # The recipient's own act (SetCertificateStatus 2 with its part), not a citizen's.
    uow = FakeUnitOfWork(certificates=[death_certificate()])

    event = await set_status(uow, Party.SKV, StatusCode.RECEIV, caller=RECIPIENT)

    assert event == StatusEvent(StatusCode.RECEIV, Party.SKV, NOW)


# ---------------------------------------------------------------------------------------------------
# Rule 9: permanent deletion removes document, metadata and status history; the audit trail stays,
# without the document's content.


@pytest.mark.parametrize("cause", ["remove_care_copy_without_consent", "withdraw_consent"])
async def test_after_permanent_deletion_only_the_audit_trail_remains_and_it_holds_no_content(
    cause: str,
) -> None:
    history = (
        StatusEvent(StatusCode.RECEIV, Party.HSVARD, EARLIER),
        StatusEvent(StatusCode.SENTTO, Party.FKASSA, EARLIER),
    )
    uow = FakeUnitOfWork(certificates=[stored(status_events=history)], consent_given=[PATIENT])
    await operations.get_certificate_for_citizen(
        uow, certificate_id="cert-1", citizen=PATIENT, caller=CITIZEN, now=NOW
    )
    if cause == "withdraw_consent":
        await remove(uow)
        await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)
    else:
        await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)
        await remove(uow)

    assert uow.certificate("cert-1") is None
    assert uow.document("cert-1") is None
    async with uow:
        assert await uow.certificates.get("cert-1") is None
        assert await uow.certificates.get_with_document("cert-1") is None
        assert await uow.certificates.list_for_patient(PATIENT) == []

    records = uow.audit.records
    deleting = "remove_care_copy" if cause == "remove_care_copy_without_consent" else "withdraw_consent"
    assert [r.action for r in records if "cert-1" in r.certificate_ids] == [
        "read",
        *(["remove_care_copy"] if cause == "withdraw_consent" else []),
        deleting,
    ]
    for record in records:
        for value in (repr(record), *(str(v) for v in dataclasses.astuple(record))):
            assert "DOCUMENT-CONTENT" not in value


# ---------------------------------------------------------------------------------------------------
# The fake itself: the transaction contract every operation relies on.


async def test_work_left_uncommitted_is_discarded_and_committed_work_stays() -> None:
    uow = FakeUnitOfWork()

    async with uow:
        await uow.certificates.add(stored("discarded"), b"<a/>")
        assert await uow.certificates.get("discarded") is not None
    async with uow:
        await uow.certificates.add(stored("rolled-back"), b"<b/>")
        await uow.rollback()
        await uow.certificates.add(stored("committed"), b"<c/>")
        await uow.commit()

    assert sorted(uow.stored.certificates) == ["committed"]
    assert uow.committed == 1


# ---------------------------------------------------------------------------------------------------
# Rule 8, as a property over random sequences of operations: after every step every stored
# certificate has a keeper, and no step but a new registration of its id brings a deleted one back.

PATIENTS = [PATIENT, OTHER_PATIENT, PersonId.parse("191212721219")]
IDS = [f"cert-{n}" for n in range(4)]
CARE_GIVERS = [CARE_GIVER, OTHER_CARE_GIVER]


class EveryStoredCertificateHasAKeeper(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.uow = FakeUnitOfWork()
        self.deleted: set[str] = set()

    def step(self, operation: Awaitable[object], *, registering: str | None = None) -> None:
        before = set(self.uow.stored.certificates)
        commits, records = self.uow.committed, len(self.uow.audit.records)
        # A refusal is audited and committed all the same.
        with contextlib.suppress(errors.ServiceError):
            asyncio.run(operation)  # type: ignore[arg-type]
        after = set(self.uow.stored.certificates)
        assert (self.uow.committed, len(self.uow.audit.records)) == (commits + 1, records + 1)
        back = (after - before) & self.deleted
        # A care system registering the id again stores a new copy; nothing else may revive one (rule 7).
        assert back <= ({registering} if registering else set()), f"deleted {back} came back"
        self.deleted = (self.deleted - back) | (before - after)

    def patient_of(self, certificate_id: str) -> PersonId:
        certificate = self.uow.certificate(certificate_id)
        return certificate.patient if certificate is not None else PATIENT

    @rule(
        certificate_id=st.sampled_from(IDS),
        patient=st.sampled_from(PATIENTS),
        giver=st.sampled_from(CARE_GIVERS),
    )
    def register(self, certificate_id: str, patient: PersonId, giver: str) -> None:
        new = NewCertificate(
            an_issued_certificate(certificate_id, patient=patient, care_giver_id=giver), b"<intyg/>"
        )
        self.step(
            operations.register_certificate(self.uow, new=new, caller=CARE, now=NOW),
            registering=certificate_id,
        )

    @rule(certificate_id=st.sampled_from(IDS), code=st.sampled_from([StatusCode.DELETE, StatusCode.RESTOR]))
    def archive_or_restore(self, certificate_id: str, code: StatusCode) -> None:
        patient = self.patient_of(certificate_id)
        citizen = dataclasses.replace(CITIZEN, citizen=patient)
        self.step(
            operations.set_certificate_status(
                self.uow,
                certificate_id=certificate_id,
                party=Party.INVANA,
                code=code,
                at=NOW,
                citizen=patient,
                caller=citizen,
                now=NOW,
            )
        )

    @rule(certificate_id=st.sampled_from(IDS))
    def revoke(self, certificate_id: str) -> None:
        self.step(
            operations.revoke_certificate(
                self.uow,
                certificate_id=certificate_id,
                patient=self.patient_of(certificate_id),
                caller=CARE,
                now=NOW,
            )
        )

    @rule(certificate_id=st.sampled_from(IDS), giver=st.sampled_from(CARE_GIVERS))
    def remove_care_copy(self, certificate_id: str, giver: str) -> None:
        self.step(
            operations.remove_care_copy(
                self.uow, certificate_id=certificate_id, care_giver_id=giver, caller=CARE, now=NOW
            )
        )

    @rule(patient=st.sampled_from(PATIENTS), given=st.booleans())
    def set_consent(self, patient: PersonId, given: bool) -> None:
        citizen = dataclasses.replace(CITIZEN, citizen=patient)
        self.step(operations.set_consent(self.uow, citizen=patient, given=given, caller=citizen, now=NOW))

    @invariant()
    def every_stored_certificate_has_a_keeper(self) -> None:
        for certificate in self.uow.stored.certificates.values():
            assert certificate.care_available or self.uow.consent_given(certificate.patient), certificate.id

    @invariant()
    def a_document_is_stored_exactly_for_each_stored_certificate(self) -> None:
        assert set(self.uow.stored.documents) == set(self.uow.stored.certificates)

    @invariant()
    def no_deleted_certificate_is_stored(self) -> None:
        assert not self.deleted & set(self.uow.stored.certificates)

    @invariant()
    def statistics_hear_of_each_life_of_a_certificate_in_order(self) -> None:
        lives: dict[str, list[EventKind]] = {}
        for event in self.uow.outbox.events:
            assert isinstance(event, StatisticsEvent)  # nothing here is sent
            lives.setdefault(event.certificate_id, []).append(event.kind)
        for certificate_id, kinds in lives.items():
            # Each life: registered, perhaps revoked once, and deleted if it ended.
            text = "".join(LIFE_LETTERS[kind] for kind in kinds)
            assert re.fullmatch(r"(gv?d)*(gv?)?", text), (certificate_id, kinds)
            stored = self.uow.certificate(certificate_id)
            assert (kinds[-1] is EventKind.DELETED) == (stored is None), certificate_id
            if stored is not None:
                assert stored.revoked == (kinds[-1] is EventKind.REVOKED), certificate_id


LIFE_LETTERS = {
    EventKind.REGISTERED: "g",
    EventKind.REVOKED: "v",
    EventKind.DELETED: "d",
    EventKind.SENT: "s",
}
TestEveryStoredCertificateHasAKeeper = EveryStoredCertificateHasAKeeper.TestCase
TestEveryStoredCertificateHasAKeeper.settings = settings(
    max_examples=200, stateful_step_count=25, deadline=None
)


# ---------------------------------------------------------------------------------------------------
# An operator erases a care giver's copies at the end of its contract (DOMAIN.md, who calls what)

OPERATOR = Caller(
    CallerKind.OPERATOR,
    Channel.CLI,
    "intygstjanst-cli",
    professional=StaffId("SE2321000016-OPS1"),
    care_giver_id=CARE_GIVER,
)


async def test_erasing_a_care_giver_applies_rule_5_to_each_copy_it_keeps_and_to_nothing_else() -> None:
    uow = FakeUnitOfWork(
        certificates=[
            stored("a-kept", patient=PATIENT),
            stored("b-deleted", patient=OTHER_PATIENT),
            stored("c-already-removed", patient=PATIENT, care_available=False),
            stored("d-other-giver", patient=OTHER_PATIENT, care_giver_id=OTHER_CARE_GIVER),
        ],
        consent_given=[PATIENT],
    )

    erasure = await operations.erase_care_giver(
        lambda: uow, care_giver_id=CARE_GIVER, handed_over=None, caller=OPERATOR, clock=lambda: NOW, batch=1
    )

    assert erasure == operations.Erasure(kept_for_citizens=1, deleted=1)
    kept = uow.certificate("a-kept")
    assert kept is not None and (kept.care_available, kept.citizen_available) == (False, True)
    assert uow.certificate("b-deleted") is None and uow.document("b-deleted") is None
    assert uow.certificate("c-already-removed") == stored(
        "c-already-removed", patient=PATIENT, care_available=False
    )
    assert uow.certificate("d-other-giver") == stored(
        "d-other-giver", patient=OTHER_PATIENT, care_giver_id=OTHER_CARE_GIVER
    )
    # One removal, one transaction, one record each: the patient sees the operator in their access log.
    assert uow.committed == 2
    assert [(r.action, r.deleted, r.patient, r.certificate_ids, r.actor_kind) for r in uow.audit.records] == [
        ("remove_care_copy", 0, PATIENT, ("a-kept",), CallerKind.OPERATOR),
        ("remove_care_copy", 1, OTHER_PATIENT, ("b-deleted",), CallerKind.OPERATOR),
    ]
    assert {r.actor_professional for r in uow.audit.records} == {StaffId("SE2321000016-OPS1")}


async def test_erasing_a_care_giver_again_finds_nothing_left_to_remove() -> None:
    uow = FakeUnitOfWork(certificates=[stored("a"), stored("b")])

    def erase() -> Awaitable[operations.Erasure]:
        return operations.erase_care_giver(
            lambda: uow, care_giver_id=CARE_GIVER, handed_over=None, caller=OPERATOR, clock=lambda: NOW
        )

    assert await erase() == operations.Erasure(kept_for_citizens=0, deleted=2)
    assert await erase() == operations.Erasure(kept_for_citizens=0, deleted=0)
    assert uow.committed == 2


# A hand-over before erasure (README.md, "Hand-over before erasure"; the export's files:
# tests/unit/test_handover.py; through the command on both stores: tests/integration/test_handover.py)


def handed(certificate: Certificate) -> HandedOver:
    return HandedOver(certificate.id, certificate.registered_at, certificate.status_events)


async def test_exporting_a_care_giver_hands_each_copy_it_keeps_with_its_document_to_the_sink_and_nothing_else() -> (
    None
):
    uow = FakeUnitOfWork(
        certificates=[
            stored("a-kept", patient=PATIENT),
            stored("b-kept", patient=OTHER_PATIENT, revoked=True),
            stored("c-already-removed", patient=PATIENT, care_available=False),
            stored("d-other-giver", patient=OTHER_PATIENT, care_giver_id=OTHER_CARE_GIVER),
        ],
    )
    before = {c: uow.certificate(c) for c in ("a-kept", "b-kept", "c-already-removed", "d-other-giver")}
    sunk: list[CertificateWithDocument] = []

    count = await operations.export_care_giver(
        lambda: uow, care_giver_id=CARE_GIVER, sink=sunk.append, caller=OPERATOR, clock=lambda: NOW, batch=1
    )

    assert count == 2
    assert [(f.certificate.id, f.document) for f in sunk] == [
        ("a-kept", document_of("a-kept")),
        ("b-kept", document_of("b-kept")),
    ]
    assert [f.certificate for f in sunk] == [before["a-kept"], before["b-kept"]]
    # Nothing changes: an export only reads.
    assert {c: uow.certificate(c) for c in before} == before


async def test_exporting_a_care_giver_audits_each_certificate_as_an_export_of_its_patients_data() -> None:
    uow = FakeUnitOfWork(certificates=[stored("a", patient=PATIENT), stored("b", patient=OTHER_PATIENT)])

    await operations.export_care_giver(
        lambda: uow, care_giver_id=CARE_GIVER, sink=lambda _: None, caller=OPERATOR, clock=lambda: NOW
    )

    # One read, one transaction, one record each: the patient sees the operator's export in their access log.
    assert uow.committed == 2
    assert [(r.action, r.outcome, r.patient, r.certificate_ids, r.actor_kind) for r in uow.audit.records] == [
        ("export", Outcome.OK, PATIENT, ("a",), CallerKind.OPERATOR),
        ("export", Outcome.OK, OTHER_PATIENT, ("b",), CallerKind.OPERATOR),
    ]
    assert {(r.actor_professional, r.care_giver_id) for r in uow.audit.records} == {
        (StaffId("SE2321000016-OPS1"), CARE_GIVER)
    }


async def test_an_export_is_counted_from_its_committed_audit_records() -> None:
    uow = FakeUnitOfWork(certificates=[stored("a"), stored("b")])
    await operations.export_care_giver(
        lambda: uow, care_giver_id=CARE_GIVER, sink=lambda _: None, caller=OPERATOR, clock=lambda: NOW
    )
    before = REGISTRY.get_sample_value("intyg_certificates_exported_total") or 0.0

    for record in uow.audit.records:  # as the SQL unit of work does after each commit
        metrics.observe(record)

    assert REGISTRY.get_sample_value("intyg_certificates_exported_total") == before + 2


async def test_an_export_whose_sink_fails_stops_after_auditing_what_it_read() -> None:
    uow = FakeUnitOfWork(certificates=[stored("a"), stored("b")])

    def full(_: CertificateWithDocument) -> None:
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space left"):
        await operations.export_care_giver(
            lambda: uow, care_giver_id=CARE_GIVER, sink=full, caller=OPERATOR, clock=lambda: NOW
        )

    assert [r.certificate_ids for r in uow.audit.records] == [("a",)]


async def test_erasing_with_an_export_removes_only_the_certificates_it_holds_as_they_were_exported() -> None:
    exported, changed = stored("a-exported"), stored("b-changed")
    sent_since = (*changed.status_events, StatusEvent(StatusCode.SENTTO, Party.FKASSA, NOW))
    uow = FakeUnitOfWork(
        certificates=[exported, stored("b-changed", status_events=sent_since), stored("c-registered-after")]
    )
    export = {c.id: handed(c) for c in (exported, changed)}

    erasure = await operations.erase_care_giver(
        lambda: uow, care_giver_id=CARE_GIVER, handed_over=export, caller=OPERATOR, clock=lambda: NOW
    )

    assert erasure == operations.Erasure(
        kept_for_citizens=0, deleted=1, not_exported=1, changed_since_export=1
    )
    assert uow.certificate("a-exported") is None
    assert uow.certificate("b-changed") is not None and uow.certificate("b-changed").care_available  # type: ignore[union-attr]
    assert uow.certificate("c-registered-after") == stored("c-registered-after")
    # The changed one was looked at in a transaction of its own, audited as "nothing done"; the one not
    # exported was not read at all.
    assert uow.committed == 2
    assert [(r.action, r.outcome, r.certificate_ids, r.deleted) for r in uow.audit.records] == [
        ("remove_care_copy", Outcome.OK, ("a-exported",), 1),
        ("remove_care_copy", Outcome.INFO, ("b-changed",), 0),
    ]


async def test_a_certificate_registered_again_under_its_id_after_the_export_is_not_the_one_exported() -> None:
    uow = FakeUnitOfWork(certificates=[stored("a", registered_at=NOW)])
    export = {"a": handed(stored("a", registered_at=EARLIER))}

    erasure = await operations.erase_care_giver(
        lambda: uow, care_giver_id=CARE_GIVER, handed_over=export, caller=OPERATOR, clock=lambda: NOW
    )

    assert erasure.changed_since_export == 1 and uow.certificate("a") is not None


# ---------------------------------------------------------------------------------------------------
# What leaves the service is written in the transaction of its cause, or not at all (README.md, "Recipients
# and statistics"; the events themselves: tests/unit/test_rules.py).


async def test_a_registration_tells_statistics_in_its_own_commit() -> None:
    uow = FakeUnitOfWork()

    await operations.register_certificate(
        uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=CARE, now=NOW
    )
    await operations.register_certificate(
        uow, new=NewCertificate(an_issued_certificate("cert-1"), b"<intyg/>"), caller=CARE, now=NOW
    )

    [event] = uow.outbox.events
    assert isinstance(event, StatisticsEvent)
    assert (event.kind, event.certificate_id, event.at) == (EventKind.REGISTERED, "cert-1", NOW)


async def test_a_citizens_send_delivers_to_the_recipient_in_the_commit_of_the_send() -> None:
    uow = FakeUnitOfWork(certificates=[stored()], consent_given=[PATIENT])

    await send(uow, "FKASSA")
    await send(uow, "FKASSA")

    assert [type(e) for e in uow.outbox.events] == [Delivery, StatisticsEvent]
    assert uow.outbox.events[0] == Delivery(EventKind.SENT, Party.FKASSA, "cert-1", "LISJP", NOW)


async def test_a_refused_send_delivers_nothing() -> None:
    uow = FakeUnitOfWork(certificates=[stored(revoked=True)], consent_given=[PATIENT])

    with pytest.raises(errors.CertificateRevoked):
        await send(uow, "FKASSA")

    assert uow.outbox.events == []


async def test_a_send_whose_commit_fails_delivers_nothing() -> None:
    uow = FakeUnitOfWork(
        certificates=[stored()], consent_given=[PATIENT], fail_commits=3, failing_with=errors.StoreUnavailable
    )

    with pytest.raises(errors.StoreUnavailable):
        await send(uow, "FKASSA")

    assert (uow.outbox.events, uow.certificate("cert-1").sent_to()) == ([], ())  # type: ignore[union-attr]


async def test_a_revocation_follows_the_certificate_to_the_recipients_it_was_sent_to() -> None:
    sent = (
        StatusEvent(StatusCode.SENTTO, Party.FKASSA, EARLIER),
        StatusEvent(StatusCode.SENTTO, Party.AF, EARLIER),
    )
    uow = FakeUnitOfWork(certificates=[stored(status_events=sent)])

    await operations.revoke_certificate(uow, certificate_id="cert-1", patient=PATIENT, caller=CARE, now=NOW)

    deliveries = [e for e in uow.outbox.events if isinstance(e, Delivery)]
    assert deliveries == [
        Delivery(EventKind.REVOKED, Party.FKASSA, "cert-1", "LISJP", NOW),
        Delivery(EventKind.REVOKED, Party.AF, "cert-1", "LISJP", NOW),
    ]


async def test_withdrawing_consent_tells_statistics_of_each_certificate_it_deleted() -> None:
    uow = FakeUnitOfWork(
        certificates=[stored("kept"), stored("removed", care_available=False)], consent_given=[PATIENT]
    )

    await operations.set_consent(uow, citizen=PATIENT, given=False, caller=CITIZEN, now=NOW)

    assert [(e.kind, e.certificate_id) for e in uow.outbox.events] == [(EventKind.DELETED, "removed")]


async def test_removing_the_care_copy_of_a_certificate_no_consent_keeps_tells_statistics_it_was_deleted() -> (
    None
):
    uow = FakeUnitOfWork(certificates=[stored()])

    await operations.remove_care_copy(
        uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
    )

    assert [(e.kind, e.certificate_id, e.at) for e in uow.outbox.events] == [
        (EventKind.DELETED, "cert-1", NOW)
    ]
