"""The outbox relay (README.md, "Recipients and statistics"): publishes what the operations wrote to the
outbox, to a message broker, at least once.

A background job (``operations.py`` lists it): it runs in the service's lifespan where a broker is
configured, and as ``intygstjanst relay``; exactly one process relays at a time (``store/election.py``:
an advisory lock on PostgreSQL, a ``flock`` beside the database on SQLite). A round:

1. reads the due events in order (``store/outbox.due``, one short transaction);
2. publishes them, the events of one certificate one after another in order and stopping at the first
   that fails, the certificates side by side; each publish returns once the broker has confirmed it
   (publisher confirms), within the broker's timeout;
3. records the answers (``store/outbox.settle``, one short transaction): a confirmed event is deleted;
   a refused one (nacked, unroutable, a message that cannot be made) counts an attempt and waits its
   backoff, holding its certificate's later events back, until after ``max_attempts`` it is given up on:
   marked dead, published to the dead-letter destination where the broker takes it, and counted.

At least once: an event is deleted only after its confirm, so a relay that dies between the two
publishes it again in its next term, with the same message id (the recipient de-duplicates on it). A
broker that cannot be reached, or that stops answering, is no event's fault: no attempt is counted, the
relay reconnects after a growing wait, and the events wait in the outbox. The relay looks at its stop
event between rounds, never inside a transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncEngine

from service import metrics
from service.model import EventKind
from service.store import background, election
from service.store import outbox as store
from service.store.crypto import KeyRing
from service.store.election import Target, connected
from service.store.outbox import Event, Failure, Refusal

log = logging.getLogger("service.relay")

# The advisory lock that elects the relay: a fixed 64-bit number no other user of the database takes
# ("intyg-rel" in ASCII, the sealer's is "intyg-se").
RELAY_LOCK = 0x696E7479672D7265
# How often a standing-by relay tries to take over.
STANDBY_SECONDS = 1.0
# The longest wait before reconnecting to a broker that could not be reached.
LONGEST_RECONNECT_SECONDS = 30.0

JSON = "application/json"
XML = "application/xml"


@dataclass(frozen=True, slots=True)
class Message:
    """One AMQP message as the relay makes it from an outbox event (README.md, "Message format").
    ``destination``: the routing key, a recipient's part code or ``statistics``."""

    message_id: str
    destination: str
    kind: EventKind
    content_type: str
    body: bytes
    timestamp: dt.datetime
    headers: dict[str, str]


class BrokerUnavailable(Exception):
    """The broker cannot be reached or did not answer in time: no event's fault. Its text names the
    kind of failure only."""


class Refused(Exception):
    """The broker did not take this one message (``failure`` says how)."""

    def __init__(self, failure: Failure) -> None:
        super().__init__(failure.value)
        self.failure = failure


class Publisher(Protocol):
    async def publish(self, message: Message) -> None:
        """Returns once the broker has confirmed the message; raises ``Refused`` where it did not take
        it, ``BrokerUnavailable`` where it did not answer."""
        ...

    async def dead_letter(self, message: Message, reason: Failure) -> None:
        """Publishes a message given up on to the dead-letter destination, confirmed, with ``reason``."""
        ...


class Broker(Protocol):
    def connected(self) -> contextlib.AbstractAsyncContextManager[Publisher]:
        """A publisher on a connection with the topology declared; ``BrokerUnavailable`` where none can be
        made within the broker's timeout."""
        ...


def message(event: Event, *, zone: ZoneInfo) -> Message:
    """The message of ``event``; ``Refused`` where none can be made. A delivery of a sent certificate
    carries the certificate's document as registered, and its fields in the headers; every other event
    carries its fields as JSON. No identity number: the events hold none, and the document goes only to
    the recipient it was sent to."""
    if event.unpublishable is not None:
        raise Refused(event.unpublishable)
    try:
        fields = store.body_fields(event)
    except ValueError:
        raise Refused(Failure.UNBUILDABLE) from None
    headers = {
        "certificate-id": event.certificate_id,
        "certificate-type": str(fields.get("certificate_type", "")),
        "recipient": str(fields.get("recipient") or ""),
        "kind": event.kind.value,
    }
    timestamp = event.created_at.replace(tzinfo=zone)
    if event.delivers_document:
        if event.document is None:
            raise Refused(Failure.UNBUILDABLE)
        headers |= {f"event-{name}": str(value) for name, value in fields.items()}
        return Message(
            event.message_id, event.destination, event.kind, XML, event.document, timestamp, headers
        )
    return Message(
        event.message_id, event.destination, event.kind, JSON, event.body.encode(), timestamp, headers
    )


def dead_letter(event: Event, *, zone: ZoneInfo) -> Message:
    """What the dead-letter destination is told of an event given up on: its fields and its message id,
    never the document (of a deleted certificate, rule 9, none survives)."""
    headers = {
        "certificate-id": event.certificate_id,
        "kind": event.kind.value,
        "destination": event.destination,
    }
    timestamp = event.created_at.replace(tzinfo=zone)
    return Message(
        event.message_id, event.destination, event.kind, JSON, event.body.encode(), timestamp, headers
    )


class Relay:
    """The background job (``run``); ``relay_once`` is one round, on whatever ``Target`` the election gave.
    ``reconnect``: the first wait before trying an unreachable broker again, doubled per try up to
    ``LONGEST_RECONNECT_SECONDS``; ``first_backoff`` and ``longest_backoff``: an event's after a refusal."""

    def __init__(
        self,
        engine: AsyncEngine,
        keyring: KeyRing,
        broker: Broker,
        *,
        clock: Callable[[], dt.datetime],
        zone: ZoneInfo,
        max_attempts: int,
        first_backoff: float,
        longest_backoff: float,
        every: float,
        batch: int,
        reconnect: float = 1.0,
        destinations: Iterable[str] = (),
        lock_file: Path | None = None,
    ) -> None:
        self._engine = engine
        self._keyring = keyring
        self._broker = broker
        self._clock = clock
        self._zone = zone
        self._max_attempts = max_attempts
        self._first_backoff = first_backoff
        self._longest_backoff = longest_backoff
        self._every = every
        self._batch = batch
        self._reconnect = reconnect
        self._lock_file = lock_file
        self._destinations = tuple(destinations)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay while elected and connected, stand by otherwise, until ``stop`` is set."""
        with background():  # its statements are counted as no request's
            await self._run(stop)

    async def _run(self, stop: asyncio.Event) -> None:
        reconnect = self._reconnect
        while not stop.is_set():
            try:
                async with election.elected(self._engine, RELAY_LOCK, lock_file=self._lock_file) as target:
                    if target is None:
                        await self._measure(self._engine)
                        await _wait(stop, STANDBY_SECONDS)
                        continue
                    async with self._broker.connected() as publisher:
                        reconnect = self._reconnect
                        metrics.RELAY_ELECTED.set(1)
                        log.info("relaying the outbox to the broker")
                        while not stop.is_set():
                            full = await self.relay_once(target, publisher)
                            await self._measure(target)
                            if not full:
                                await _wait(stop, self._every)
            except BrokerUnavailable as exc:
                metrics.OUTBOX_PUBLISH_FAILURES.labels(reason=BROKER_UNAVAILABLE).inc()
                log.warning(
                    "the broker is unavailable (%s): the events wait in the outbox; reconnecting in %.1f s",
                    exc,
                    reconnect,
                )
                await self._measure_quietly()
                await _wait(stop, reconnect)
                reconnect = min(reconnect * 2, LONGEST_RECONNECT_SECONDS)
            except Exception as exc:  # the next round tries again; the service goes on
                log.warning("outbox not relayed: %s", type(exc).__name__)
                await _wait(stop, self._every)
            finally:
                metrics.RELAY_ELECTED.set(0)

    async def relay_once(self, target: Target, publisher: Publisher) -> bool:
        """One round: publish what is due, then record the answers; whether its batch was full (more may
        be due now). ``BrokerUnavailable`` once what was confirmed before the broker went is recorded."""
        events = await store.due(target, self._keyring, now=self._clock(), limit=self._batch)
        published: list[Event] = []
        refused: list[Refusal] = []
        outcomes = await asyncio.gather(
            *(
                self._publish_in_order(publisher, group, published, refused)
                for group in _by_certificate(events)
            ),
            return_exceptions=True,
        )
        dead = [r for r in refused if r.final]
        for refusal in dead:
            await self._dead_letter(publisher, refusal)
        await store.settle(
            target,
            published=published,
            refused=refused,
            now=self._clock(),
            first_backoff=self._first_backoff,
            longest_backoff=self._longest_backoff,
        )
        for event in published:
            metrics.OUTBOX_PUBLISHED.labels(destination=event.destination).inc()
        for refusal in refused:
            metrics.OUTBOX_PUBLISH_FAILURES.labels(reason=refusal.failure.value).inc()
        for refusal in dead:
            metrics.OUTBOX_DEAD_LETTERED.labels(reason=refusal.failure.value).inc()
            # Its message id is left out as the certificate's is: `intygstjanst outbox` lists it.
            log.warning(
                "an event was dead-lettered (`intygstjanst outbox` lists it): to %s, %s, after %d attempts (%s)",
                refusal.event.destination,
                refusal.event.kind.value,
                refusal.event.attempts + 1,
                refusal.failure.value,
            )
        for outcome in outcomes:
            if isinstance(outcome, BaseException):
                raise outcome
        return len(events) == self._batch

    async def _publish_in_order(
        self, publisher: Publisher, events: Sequence[Event], published: list[Event], refused: list[Refusal]
    ) -> None:
        """A certificate's events one after another, in order; a refused one holds the rest back, unless it
        is given up on."""
        for event in events:
            try:
                await publisher.publish(message(event, zone=self._zone))
            except Refused as exc:
                refusal = store.refusal(event, exc.failure, max_attempts=self._max_attempts)
                refused.append(refusal)
                if not refusal.final:
                    return
                # Given up on, it holds nothing back: what follows it goes now.
                continue
            published.append(event)

    async def _dead_letter(self, publisher: Publisher, refusal: Refusal) -> None:
        # Where the dead-letter destination does not take it either, the event is still given up on:
        # the outbox keeps it, marked dead, for `intygstjanst outbox`.
        with contextlib.suppress(Refused, BrokerUnavailable):
            await publisher.dead_letter(dead_letter(refusal.event, zone=self._zone), refusal.failure)

    async def _measure(self, target: Target) -> None:
        async with connected(target) as connection:
            found = await store.backlog(connection)
            await connection.commit()
        observe_backlog(found, now=self._clock(), destinations=self._destinations)

    async def _measure_quietly(self) -> None:
        try:
            await self._measure(self._engine)
        except Exception as exc:
            log.warning("outbox gauges not refreshed: %s", type(exc).__name__)


# A reason of OUTBOX_PUBLISH_FAILURES beside the refusals' (store/outbox.Failure).
BROKER_UNAVAILABLE = "broker unavailable"


def count_from_zero(destinations: Iterable[str]) -> None:
    """Gives the outbox counters their series at 0 (each destination, each reason), so that a panel or
    an alert sees "none yet" rather than no series, also where no relay runs."""
    for destination in destinations:
        metrics.OUTBOX_PUBLISHED.labels(destination=destination)
    for failure in Failure:
        metrics.OUTBOX_PUBLISH_FAILURES.labels(reason=failure.value)
        metrics.OUTBOX_DEAD_LETTERED.labels(reason=failure.value)
    metrics.OUTBOX_PUBLISH_FAILURES.labels(reason=BROKER_UNAVAILABLE)


def observe_backlog(found: store.Backlog, *, now: dt.datetime, destinations: Iterable[str]) -> None:
    """Sets the outbox gauges (the relay after each round; the store gauges where no relay runs): every
    destination of ``destinations`` has its series, 0 where nothing waits for it."""
    by_destination = found.pending_by_destination()
    for destination in {*destinations, *by_destination, *found.dead}:
        metrics.OUTBOX_PENDING.labels(destination=destination).set(by_destination.get(destination, 0))
        metrics.OUTBOX_DEAD.labels(destination=destination).set(found.dead.get(destination, 0))
    age = 0.0 if found.oldest is None else max(0.0, (now - found.oldest).total_seconds())
    metrics.OUTBOX_OLDEST_AGE.set(age)


def _by_certificate(events: Sequence[Event]) -> list[list[Event]]:
    groups: dict[str, list[Event]] = {}
    for event in events:
        groups.setdefault(event.certificate_id, []).append(event)
    return list(groups.values())


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)
