"""The outbox relay's short transactions (``service/relay.py``; README.md, "Recipients and statistics").

The operations write an event to ``tables.outbox`` in the transaction of its cause
(``repositories.SqlOutbox``). The relay, a background job, takes them out again in transactions of its
own, each ended before anything is published and begun again once the broker has answered, so that no
transaction stays open while the relay waits on the broker and no request waits on the relay:

- ``due``: the events to publish now, in order of ``id``, and the document of each delivery of a sent
  certificate, read through the store as registered (one read-only transaction);
- ``settle``: what the broker answered: confirmed events are deleted, refused ones counted an attempt
  and given their next time, or given up on (dead-lettered) after their attempts (one transaction);
- ``backlog``: what waits, for the metrics and ``intygstjanst outbox``; ``retry_dead`` puts
  dead-lettered events back (the command's ``--retry-dead``).

Order per certificate: an event is due only while no earlier event of its certificate waits for a
retry (``_WAITING``): one that failed holds the later ones of its certificate back until it is
published or given up on, and the other certificates' events go on.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from service import errors
from service.model import EventKind
from service.store.crypto import KeyRing
from service.store.election import Target, connected
from service.store.repositories import SqlCertificateRepository
from service.store.tables import STATISTICS, outbox


class Failure(enum.StrEnum):
    """Why an event was not published, as ``outbox.last_error`` keeps it: a value keeps its meaning."""

    NACKED = "nacked"  # the broker refused it (basic.nack)
    UNROUTABLE = "unroutable"  # no queue takes its destination (basic.return of a mandatory message)
    UNBUILDABLE = "unbuildable"  # its message could not be made (an unreadable body or document)
    CERTIFICATE_DELETED = "certificate deleted"  # DOMAIN.md rule 9: no copy outlives a deletion


# Failures no later attempt can mend: the event is given up on at once.
FINAL = frozenset({Failure.CERTIFICATE_DELETED})


@dataclass(frozen=True, slots=True)
class Event:
    """An event of the outbox, as the relay publishes it. ``document``: the certificate as registered,
    for a delivery of a sent certificate; ``unpublishable`` where its message cannot be made."""

    id: int
    message_id: str
    destination: str
    kind: EventKind
    certificate_id: str
    body: str
    created_at: dt.datetime
    attempts: int
    document: bytes | None = field(default=None, repr=False)
    unpublishable: Failure | None = None

    @property
    def delivers_document(self) -> bool:
        return self.kind is EventKind.SENT and self.destination != STATISTICS


@dataclass(frozen=True, slots=True)
class Refusal:
    """An event the broker did not take, and why; ``final`` where it is given up on now."""

    event: Event
    failure: Failure
    final: bool


@dataclass(frozen=True, slots=True)
class DeadEvent:
    message_id: str
    destination: str
    kind: EventKind
    attempts: int
    dead_at: dt.datetime
    reason: str


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in the outbox: pending events by (destination, kind), when the oldest was written, and
    the dead-lettered events by destination."""

    pending: Mapping[tuple[str, EventKind], int]
    oldest: dt.datetime | None
    dead: Mapping[str, int]

    def pending_by_destination(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for (destination, _), count in self.pending.items():
            counts[destination] = counts.get(destination, 0) + count
        return counts


_PENDING = outbox.c.dead_at.is_(None)
# Certificates with an event waiting for its retry: their later events wait too.
_WAITING = select(outbox.c.certificate_id).where(_PENDING, outbox.c.next_attempt_at > bindparam("now"))
_DUE = (
    select(
        outbox.c.id,
        outbox.c.message_id,
        outbox.c.destination,
        outbox.c.kind,
        outbox.c.certificate_id,
        outbox.c.body,
        outbox.c.created_at,
        outbox.c.attempts,
    )
    .where(
        _PENDING,
        or_(outbox.c.next_attempt_at.is_(None), outbox.c.next_attempt_at <= bindparam("now")),
        outbox.c.certificate_id.not_in(_WAITING.scalar_subquery()),
    )
    .order_by(outbox.c.id)
    .limit(bindparam("limit"))
)
_DELETE = delete(outbox).where(outbox.c.id == bindparam("event_id"))
_RETRY = (
    update(outbox)
    .where(outbox.c.id == bindparam("event_id"))
    .values(attempts=bindparam("tried"), next_attempt_at=bindparam("next"), last_error=bindparam("why"))
)
_GIVE_UP = (
    update(outbox)
    .where(outbox.c.id == bindparam("event_id"))
    .values(attempts=bindparam("tried"), dead_at=bindparam("dead"), last_error=bindparam("why"))
)
_PENDING_COUNTS = (
    select(outbox.c.destination, outbox.c.kind, func.count(), func.min(outbox.c.created_at))
    .where(_PENDING)
    .group_by(outbox.c.destination, outbox.c.kind)
)
_DEAD_COUNTS = (
    select(outbox.c.destination, func.count())
    .where(outbox.c.dead_at.is_not(None))
    .group_by(outbox.c.destination)
)
_DEAD = (
    select(
        outbox.c.message_id,
        outbox.c.destination,
        outbox.c.kind,
        outbox.c.attempts,
        outbox.c.dead_at,
        outbox.c.last_error,
    )
    .where(outbox.c.dead_at.is_not(None))
    .order_by(outbox.c.id)
)
_REVIVE = (
    update(outbox)
    .where(outbox.c.dead_at.is_not(None))
    .values(dead_at=None, attempts=0, next_attempt_at=None, last_error=None)
)


def backoff(attempts: int, *, first: float, longest: float) -> dt.timedelta:
    """How long an event waits after its ``attempts``-th failed attempt: ``first`` doubled per attempt,
    at most ``longest``."""
    return dt.timedelta(seconds=min(longest, first * 2 ** max(0, attempts - 1)))


async def due(target: Target, keyring: KeyRing, *, now: dt.datetime, limit: int) -> list[Event]:
    """Up to ``limit`` events to publish now, in order; each delivery of a sent certificate with the
    certificate's document as registered (none where the certificate was deleted since)."""
    async with connected(target) as connection, connection.begin():
        rows = (await connection.execute(_DUE, {"now": now, "limit": limit})).all()
        certificates = SqlCertificateRepository(connection, keyring)
        events = []
        for row in rows:
            event = Event(
                row.id,
                row.message_id,
                row.destination,
                EventKind(row.kind),
                row.certificate_id,
                row.body,
                row.created_at,
                row.attempts,
            )
            if event.delivers_document:
                event = await _with_document(certificates, event)
            events.append(event)
        return events


async def _with_document(certificates: SqlCertificateRepository, event: Event) -> Event:
    try:
        found = await certificates.get_with_document(event.certificate_id)
    except errors.StoredDataUnreadable:
        return dataclasses.replace(event, unpublishable=Failure.UNBUILDABLE)
    if found is None:
        return dataclasses.replace(event, unpublishable=Failure.CERTIFICATE_DELETED)
    return dataclasses.replace(event, document=found.document)


def refusal(event: Event, failure: Failure, *, max_attempts: int) -> Refusal:
    """The refusal of ``event`` for ``failure``: final where no later attempt can mend it, or where this
    was its last attempt."""
    return Refusal(event, failure, final=failure in FINAL or event.attempts + 1 >= max_attempts)


async def settle(
    target: Target,
    *,
    published: Sequence[Event],
    refused: Sequence[Refusal],
    now: dt.datetime,
    first_backoff: float,
    longest_backoff: float,
) -> None:
    """Records what the broker answered, in one transaction: published events are deleted; a refused
    one has its attempt counted and waits its backoff, or is given up on where its refusal is final."""
    retried = [r for r in refused if not r.final]
    dead = tuple(r for r in refused if r.final)
    async with connected(target) as connection, connection.begin():
        if published:
            await connection.execute(_DELETE, [{"event_id": e.id} for e in published])
        if retried:
            await connection.execute(
                _RETRY,
                [
                    {
                        "event_id": r.event.id,
                        "tried": r.event.attempts + 1,
                        "next": now
                        + backoff(r.event.attempts + 1, first=first_backoff, longest=longest_backoff),
                        "why": r.failure.value,
                    }
                    for r in retried
                ],
            )
        if dead:
            await connection.execute(
                _GIVE_UP,
                [
                    {
                        "event_id": r.event.id,
                        "tried": r.event.attempts + 1,
                        "dead": now,
                        "why": r.failure.value,
                    }
                    for r in dead
                ],
            )


async def backlog(connection: AsyncConnection) -> Backlog:
    """What waits, counted in the caller's transaction."""
    pending: dict[tuple[str, EventKind], int] = {}
    oldest: dt.datetime | None = None
    for destination, kind, count, first in await connection.execute(_PENDING_COUNTS):
        pending[(destination, EventKind(kind))] = int(count)
        oldest = first if oldest is None else min(oldest, first)
    dead = {destination: int(count) for destination, count in await connection.execute(_DEAD_COUNTS)}
    return Backlog(pending, oldest, dead)


async def dead_events(connection: AsyncConnection) -> list[DeadEvent]:
    """The events given up on, in order, with why: their message ids, never a certificate's or a
    person's."""
    return [
        DeadEvent(r.message_id, r.destination, EventKind(r.kind), r.attempts, r.dead_at, r.last_error or "")
        for r in await connection.execute(_DEAD)
    ]


async def retry_dead(target: Target) -> int:
    """Puts every dead-lettered event back in the outbox, its attempts counted from nothing again: the
    relay publishes it with its message id of old (a recipient that got the dead letter can tell)."""
    async with connected(target) as connection, connection.begin():
        done = await connection.execute(_REVIVE)
        return int(done.rowcount)


def body_fields(event: Event) -> dict[str, Any]:
    """The event's fields (``model.Delivery`` or ``model.StatisticsEvent``), as written."""
    fields = json.loads(event.body)
    if not isinstance(fields, dict):
        raise ValueError("an outbox body is a JSON object")
    return fields
