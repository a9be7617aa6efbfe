"""Builds the audit record of an operation (PDL: who, where, whose data, what, when, outcome). Pure.

``operations`` adds the record in the same unit of work as the effect, so both commit or neither does;
a refusal is recorded too, with outcome ``denied``. Records never hold document content.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable

from service import errors
from service.model import Action, AuditRecord, Caller, Certificate, Outcome, Party, PersonId, StatusCode


def record(
    caller: Caller,
    *,
    action: Action,
    outcome: Outcome,
    now: dt.datetime,
    patient: PersonId | None,
    certificates: Iterable[Certificate] = (),
    certificate_ids: Iterable[str] = (),
    recipient: Party | None = None,
    status: StatusCode | None = None,
    certificate_type: str | None = None,
    deleted: int = 0,
    called: str | None = None,
    reason: type[errors.ServiceError] | None = None,
) -> AuditRecord:
    certificates = tuple(certificates)
    ids = tuple(dict.fromkeys([*(c.id for c in certificates), *certificate_ids]))
    # Where the caller does not name the care unit it acts for, the record names the unit whose
    # record was accessed, so the citizen's log extract can still say where the data came from.
    unit = caller.care_unit_id
    giver = caller.care_giver_id
    if unit is None and giver is None and len(certificates) == 1:
        unit = certificates[0].care_unit.unit_id
        giver = certificates[0].care_unit.care_giver_id
    # Names, for the citizen's extract (PDL): known from a certificate of that unit or care giver.
    units = {c.care_unit.unit_id: c.care_unit.unit_name for c in certificates}
    givers = {c.care_unit.care_giver_id: c.care_unit.care_giver_name for c in certificates}
    return AuditRecord(
        at=now,
        action=action,
        outcome=outcome,
        actor_kind=caller.kind,
        actor_id=caller.system_id,
        channel=caller.channel,
        patient=patient,
        certificate_ids=ids,
        care_unit_id=unit,
        care_giver_id=giver,
        actor_citizen=caller.citizen,
        actor_professional=caller.professional,
        recipient=recipient,
        status=status,
        certificate_type=certificate_type,
        deleted=deleted,
        called=called,
        reason=reason,
        care_unit_name=units.get(unit) if unit else None,
        care_giver_name=givers.get(giver) if giver else None,
    )


class RefusalBudget:
    """How many refusals of callers that proved no identity (no valid client certificate, no valid
    token) are audited one by one: a bucket of ``burst`` records, refilled at ``per_second``. Past it a
    refusal is answered alike but only counted (``on_skipped``, a metric), so that a flood of them
    cannot grow the audit trail without bound. Nothing is lost to the citizen's extract: such a caller
    reached no operation and named nobody whose data it was given (README.md, "Input")."""

    def __init__(
        self,
        *,
        per_second: float,
        burst: int,
        on_skipped: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_second = per_second
        self._burst = burst
        self._on_skipped = on_skipped
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()

    def take(self) -> bool:
        """Whether this refusal is audited."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._at) * self._per_second)
        self._at = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        self._on_skipped()
        return False
