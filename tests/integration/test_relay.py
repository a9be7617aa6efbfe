"""The outbox relay against a real RabbitMQ (``tests/broker.py`` starts a private node for the module):
the operations fill the outbox, the relay publishes it, and a consumer of every queue compares what
arrived with what was written, the document of each sent certificate included. The broker killed with
SIGKILL mid-stream and started again, and the relay killed with SIGKILL mid-stream and started again,
lose nothing, and what comes twice comes with the same message id; an unroutable destination is retried
and dead-lettered, reaching the dead-letter queue with its message id.

The relay's rounds against the ``FakeBroker`` are ``tests/integration/test_relay_rounds.py``.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service import app, broker
from service.config import Settings
from service.model import EventKind
from service.store.tables import STATISTICS, outbox
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests import broker as throwaway
from tests.fakes import document_of
from tests.integration.test_relay_rounds import RECIPIENTS, lives, rows
from tests.keys import KEYRING, settings_keys

QUEUES = (*RECIPIENTS, STATISTICS)
WAIT = 90.0  # seconds, generous for a loaded machine: a broker restart takes about 5


@pytest.fixture(scope="module")
def node() -> Iterator[throwaway.Broker]:
    try:
        started = throwaway.start()
    except throwaway.BrokerUnavailable as exc:
        pytest.skip(f"RabbitMQ: {exc}")
    try:
        yield started
    finally:
        throwaway.stop(started)


@pytest.fixture
def exchange() -> str:
    """Each test its own exchange, and so its own queues, on the module's node."""
    return f"intyg-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await dispose(engine)


def relay_settings(database_url: str, node: throwaway.Broker, exchange: str, **changes: object) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=node.url,
        broker_exchange=exchange,
        broker_timeout_seconds=2.0,
        broker_reconnect_seconds=0.1,
        relay_backoff_seconds=0.05,
        relay_longest_backoff_seconds=0.2,
        relay_every_seconds=0.02,
        **settings_keys(),
        **changes,  # type: ignore[arg-type]
    )


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    kind: str
    certificate_id: str
    content_type: str
    body: bytes
    headers: dict[str, object]


async def drain(url: str, queue: str) -> list[Received]:
    """Every message of ``queue``, in order, taken off it."""
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        found = await channel.get_queue(queue, ensure=True)
        taken: list[Received] = []
        while (message := await found.get(no_ack=True, fail=False)) is not None:
            taken.append(_received(message))
        return taken


def _received(message: AbstractIncomingMessage) -> Received:
    assert message.message_id and message.type and message.content_type
    assert message.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert message.timestamp is not None
    headers = dict(message.headers)
    return Received(
        message.message_id,
        message.type,
        str(headers["certificate-id"]),
        message.content_type,
        message.body,
        headers,
    )


async def everything(url: str, exchange: str) -> dict[str, list[Received]]:
    return {q: await drain(url, broker.queue_name(exchange, q)) for q in QUEUES}


async def pending(engine: AsyncEngine) -> int:
    async with engine.connect() as connection:
        return int(
            await connection.scalar(
                select(func.count()).select_from(outbox).where(outbox.c.dead_at.is_(None))
            )
            or 0
        )


async def until(check: Callable[[], Awaitable[bool]], what: str, seconds: float = WAIT) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        await asyncio.sleep(0.05)


async def empty(engine: AsyncEngine) -> bool:
    return await pending(engine) == 0


# What each certificate's life (``lives``) tells, in order: (destination, kind).
LIFE = (
    (STATISTICS, "registered"),
    ("FKASSA", "sent"),
    (STATISTICS, "sent"),
    ("FKASSA", "revoked"),
    (STATISTICS, "revoked"),
)


def assert_nothing_lost(
    certificate_ids: list[str], queues: dict[str, list[Received]]
) -> collections.Counter[str]:
    """Every event of the certificates' lives arrived in its destination's queue, each certificate's in
    order, and an event that arrived more than once carried the same message id each time; returns how
    often each message id arrived."""
    ids_of: dict[tuple[str, str, str], set[str]] = collections.defaultdict(set)
    for destination, messages in queues.items():
        for m in messages:
            ids_of[(m.certificate_id, destination, m.kind)].add(m.message_id)
    assert set(ids_of) == {(c, d, k) for c in certificate_ids for d, k in LIFE}
    assert [event for event, ids in ids_of.items() if len(ids) != 1] == []
    for destination, messages in queues.items():
        for certificate_id in certificate_ids:
            kinds = [m.kind for m in messages if m.certificate_id == certificate_id]
            # In order; a duplicate may come again after the events published before it was.
            assert list(dict.fromkeys(kinds)) == [k for d, k in LIFE if d == destination], certificate_id
    return collections.Counter(m.message_id for messages in queues.values() for m in messages)


async def test_the_relay_publishes_every_event_to_its_queue_with_the_sent_document_and_its_message_id(
    engine: AsyncEngine, database_url: str, node: throwaway.Broker, exchange: str
) -> None:
    ids = await lives(SqlUnitOfWork(engine, KEYRING), 10)
    written = await rows(engine)
    stop = asyncio.Event()
    relay = app.relay(relay_settings(database_url, node, exchange), engine, KEYRING, list(RECIPIENTS))
    running = asyncio.create_task(relay.run(stop))
    await until(lambda: empty(engine), "the outbox published")
    stop.set()
    await running

    queues = await everything(node.url, exchange)
    arrived = assert_nothing_lost(ids, queues)
    assert set(arrived.values()) == {1}  # nothing failed, nothing came twice
    assert set(arrived) == {r.message_id for r in written}  # the outbox's message ids
    fkassa = queues["FKASSA"]
    assert [(m.kind, m.certificate_id) for m in fkassa if m.certificate_id == ids[0]] == [
        ("sent", ids[0]),
        ("revoked", ids[0]),
    ]
    for message in fkassa:
        assert message.headers["recipient"] == "FKASSA"
        assert message.headers["certificate-type"] == "LISJP"
        if message.kind == EventKind.SENT:
            assert message.content_type == "application/xml"
            assert message.body == document_of(message.certificate_id)
        else:
            assert message.content_type == "application/json"
    assert {m.kind for m in queues[STATISTICS]} == {"registered", "sent", "revoked"}
    assert all(b"DOCUMENT-CONTENT" not in m.body for m in queues[STATISTICS])
    assert not any(queues[q] for q in QUEUES if q not in ("FKASSA", STATISTICS))


class Writer:
    """Certificates' lives written while the relay runs: the stream the kills interrupt."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._uow = SqlUnitOfWork(engine, KEYRING)
        self._stop = asyncio.Event()
        self.written = 0
        self._task = asyncio.create_task(self._write())

    async def _write(self) -> None:
        while not self._stop.is_set():
            await lives(self._uow, 1, prefix="stream", start=self.written)
            self.written += 1
            await asyncio.sleep(0.005)

    @property
    def certificate_ids(self) -> list[str]:
        return [f"stream-{index}" for index in range(self.written)]

    async def stop(self) -> None:
        self._stop.set()
        await self._task


async def test_a_broker_killed_mid_stream_and_started_again_loses_nothing(
    engine: AsyncEngine, database_url: str, node: throwaway.Broker, exchange: str
) -> None:
    stop = asyncio.Event()
    relay = app.relay(relay_settings(database_url, node, exchange), engine, KEYRING, list(RECIPIENTS))
    running = asyncio.create_task(relay.run(stop))
    declared = time.monotonic()
    writer = Writer(engine)
    try:
        await until(lambda: _published_some(node, exchange), "some events published")
        # RabbitMQ 3.10 records a new quorum queue's Ra server on disk a moment after declaring it: a
        # node killed within that moment (well under 3 s, measured) comes back without the queue's
        # leader, and every publish to it times out. Production queues are declared once, long before.
        await asyncio.sleep(max(0.0, declared + 3.5 - time.monotonic()))
        await asyncio.to_thread(node.kill)
        down_at = writer.written
        await asyncio.sleep(1.0)
        # The events written meanwhile wait in the outbox, no attempt counted for any.
        assert writer.written > down_at
        assert all(r.attempts == 0 for r in await rows(engine))
        await asyncio.to_thread(node.start)
        await asyncio.sleep(0.5)
    finally:
        await writer.stop()
    await until(lambda: empty(engine), "the outbox published after the restart")
    stop.set()
    await running

    queues = await everything(node.url, exchange)
    assert_nothing_lost(writer.certificate_ids, queues)


async def _published_some(node: throwaway.Broker, exchange: str) -> bool:
    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(broker.queue_name(exchange, STATISTICS), passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return (queue.declaration_result.message_count or 0) >= 20
