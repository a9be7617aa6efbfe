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
import os
import signal
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import aio_pika
import pytest
from aio_pika.abc import AbstractIncomingMessage
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service import app, broker, relay
from service.app import create_app
from service.config import Settings
from service.model import EventKind
from service.store import outbox as outbox_store
from service.store.tables import STATISTICS, outbox
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests import broker as throwaway
from tests.fakes import document_of
from tests.integration.test_cli import COMMAND, clean_environment
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
        broker_url=SecretStr(node.url),
        broker_exchange=exchange,
        broker_timeout_seconds=2.0,
        broker_reconnect_seconds=0.1,
        relay_backoff_seconds=0.05,
        relay_longest_backoff_seconds=0.2,
        relay_every_seconds=0.02,
        **settings_keys(),
        **changes,  # type: ignore[arg-type]
    )


def topology(settings: Settings) -> broker.AmqpBroker:
    """The relay's broker adapter of ``settings``: connecting declares the topology as the relay does."""
    assert settings.broker_url is not None
    return broker.AmqpBroker(
        settings.broker_url.get_secret_value(),
        exchange=settings.broker_exchange,
        destinations=app.destinations(list(RECIPIENTS)),
        timeout=settings.broker_timeout_seconds,
        delivery_limit=settings.broker_delivery_limit,
    )


@dataclass(frozen=True, slots=True)
class Received:
    message_id: str
    kind: str
    certificate_id: str
    content_type: str
    body: bytes
    headers: Mapping[str, object]


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


@pytest.mark.one_engine(
    "the broker's failure: the store meets the same statements as in the relay's other tests, which run on both"
)
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
    return await _holds(node, broker.queue_name(exchange, STATISTICS), 20)


async def _holds(node: throwaway.Broker, queue_name: str, count: int) -> bool:
    """Whether ``queue_name`` exists and holds at least ``count`` messages."""
    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return False
        return (queue.declaration_result.message_count or 0) >= count


async def test_a_relay_stopping_between_confirm_and_delete_publishes_again_with_the_same_message_ids(
    engine: AsyncEngine, database_url: str, node: throwaway.Broker, exchange: str
) -> None:
    """What a round does up to the confirms, without its last transaction (as a relay killed there):
    the next relay publishes the same events again, each with its message id."""
    ids = await lives(SqlUnitOfWork(engine, KEYRING), 2)
    settings = relay_settings(database_url, node, exchange)
    events = await outbox_store.due(engine, KEYRING, now=settings.clock()(), limit=100)
    amqp = topology(settings)
    async with amqp.connected() as publisher:
        for event in events:
            await publisher.publish(relay.message(event, zone=ZoneInfo(settings.timezone)))
    assert len(await rows(engine)) == len(events) == 10

    stop = asyncio.Event()
    running = asyncio.create_task(app.relay(settings, engine, KEYRING, list(RECIPIENTS)).run(stop))
    await until(lambda: empty(engine), "the outbox published")
    stop.set()
    await running

    arrived = assert_nothing_lost(ids, await everything(node.url, exchange))
    assert arrived == collections.Counter({e.message_id: 2 for e in events})


def relay_process(
    database_url: str, node: throwaway.Broker, exchange: str, cwd: Path
) -> subprocess.Popen[bytes]:
    keys = {f"INTYG_{name.upper()}": secret.get_secret_value() for name, secret in settings_keys().items()}
    env = clean_environment(
        INTYG_DATABASE_URL=database_url,
        INTYG_BROKER_URL=node.url,
        INTYG_BROKER_EXCHANGE=exchange,
        INTYG_RELAY_EVERY_SECONDS="0.02",
        INTYG_BROKER_RECONNECT_SECONDS="0.1",
        **keys,
    )
    return subprocess.Popen(
        [str(COMMAND), "relay"], env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def test_a_relay_killed_mid_stream_loses_nothing_and_its_successor_sends_duplicates_with_their_ids(
    engine: AsyncEngine, database_url: str, node: throwaway.Broker, exchange: str, tmp_path: Path
) -> None:
    first = relay_process(database_url, node, exchange, tmp_path)
    writer = Writer(engine)
    second = None
    try:
        await until(lambda: _published_some(node, exchange), "some events published by the first relay")
        os.kill(first.pid, signal.SIGKILL)
        first.wait(10)
        await asyncio.sleep(0.5)  # the stream goes on, into the outbox
        second = relay_process(database_url, node, exchange, tmp_path)
        await asyncio.sleep(0.5)
    finally:
        await writer.stop()
        if first.poll() is None:
            first.kill()
    try:
        await until(lambda: empty(engine), "the outbox published by the second relay")
    finally:
        assert second is not None
        second.send_signal(signal.SIGTERM)
        assert second.wait(20) == 0

    arrived = assert_nothing_lost(writer.certificate_ids, await everything(node.url, exchange))
    assert len(arrived) == 5 * writer.written


async def test_an_unroutable_destination_is_retried_and_dead_lettered_with_its_message_id(
    engine: AsyncEngine, database_url: str, node: throwaway.Broker, exchange: str
) -> None:
    settings = relay_settings(database_url, node, exchange, relay_max_attempts=3)
    failures = REGISTRY.get_sample_value("intyg_outbox_publish_failures_total", {"reason": "unroutable"}) or 0
    stop = asyncio.Event()
    running = asyncio.create_task(app.relay(settings, engine, KEYRING, list(RECIPIENTS)).run(stop))

    async def connected() -> bool:
        return REGISTRY.get_sample_value("intyg_outbox_relay_elected") == 1

    # Once the relay has declared its topology (binding every queue), FKASSA's queue is unbound.
    await until(connected, "the relay connected")
    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(broker.queue_name(exchange, "FKASSA"))
        await queue.unbind(exchange, routing_key="FKASSA")
    [certificate_id] = await lives(SqlUnitOfWork(engine, KEYRING), 1)
    # Kept in the outbox until given up on, and then still, marked dead.
    to_fkassa = [r for r in await rows(engine) if r.destination == "FKASSA"]
    await until(lambda: empty(engine), "the events given up on")
    stop.set()
    await running

    dead = await drain(node.url, broker.dead_letter_name(exchange))
    assert [(m.message_id, m.kind, m.headers["x-death-reason"]) for m in dead] == [
        (r.message_id, r.kind.value, "unroutable") for r in to_fkassa
    ]
    assert all(m.certificate_id == certificate_id and m.headers["destination"] == "FKASSA" for m in dead)
    assert [(r.attempts, r.dead) for r in await rows(engine)] == [(3, True), (3, True)]
    assert (
        REGISTRY.get_sample_value("intyg_outbox_publish_failures_total", {"reason": "unroutable"})
        == failures + 6
    )
    queues = await everything(node.url, exchange)
    assert [m.kind for m in queues[STATISTICS]] == ["registered", "sent", "revoked"]
    assert queues["FKASSA"] == []


@pytest.mark.one_engine("the broker's topology decides it; the store only fills the outbox")
async def test_a_message_a_consumer_keeps_rejecting_is_dead_lettered_by_the_queues_delivery_limit(
    engine: AsyncEngine, database_url: str, node: throwaway.Broker, exchange: str
) -> None:
    settings = relay_settings(database_url, node, exchange, broker_delivery_limit=2)
    await lives(SqlUnitOfWork(engine, KEYRING), 1)
    stop = asyncio.Event()
    running = asyncio.create_task(app.relay(settings, engine, KEYRING, list(RECIPIENTS)).run(stop))
    await until(lambda: empty(engine), "the outbox published")
    stop.set()
    await running

    # A consumer of FKASSA that rejects the sent certificate each time it is delivered (requeueing it).
    connection = await aio_pika.connect(node.url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(broker.queue_name(exchange, "FKASSA"))
        rejected: list[str] = []
        for _ in range(10):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            if message.type == "sent":
                rejected.append(str(message.message_id))
                await message.reject(requeue=True)
            else:
                await message.ack()
    # Delivered the first time and twice again, then dead-lettered with its message id.
    assert len(rejected) == 3 and len(set(rejected)) == 1
    await until(lambda: _holds(node, broker.dead_letter_name(exchange), 1), "the dead letter")
    dead = await drain(node.url, broker.dead_letter_name(exchange))
    assert [(m.message_id, m.kind) for m in dead] == [(rejected[0], "sent")]


def test_the_service_runs_the_relay_in_its_lifespan_where_a_broker_is_configured(
    database_url: str, node: throwaway.Broker, exchange: str, tmp_path: Path, nothing_leaks: list[str]
) -> None:
    settings = relay_settings(database_url, node, exchange, dev_audit_key_file=tmp_path / "audit-key.pem")

    async def fill() -> list[str]:
        engine = create_engine(database_url)
        try:
            return await lives(SqlUnitOfWork(engine, KEYRING), 2)
        finally:
            await dispose(engine)

    async def left() -> int:
        engine = create_engine(database_url)
        try:
            return await pending(engine)
        finally:
            await dispose(engine)

    ids = asyncio.run(fill())
    with TestClient(create_app(settings)):
        deadline = time.monotonic() + WAIT
        while asyncio.run(left()):
            assert time.monotonic() < deadline, "the service's relay did not publish the outbox"
            time.sleep(0.05)
    assert_nothing_lost(ids, asyncio.run(everything(node.url, exchange)))
    assert not any(app.NO_BROKER in line for line in nothing_leaks)
