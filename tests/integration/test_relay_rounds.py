"""The outbox relay's rounds (``service/relay.py``, ``service/store/outbox.py``) on the real store and the
``FakeBroker`` (``tests/fakes.py``), on SQLite and PostgreSQL: order per certificate, deletion after the
confirm only, backoff, dead letters, a broker that is down, a delivery whose certificate was deleted, the
election of one relay, the ``outbox`` command and the start-up line where no broker is configured.

The same relay against a real RabbitMQ, killed mid-stream, is ``tests/integration/test_relay.py``; what
the operations write to the outbox is ``tests/unit/test_operations.py`` and ``tests/unit/test_rules.py``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from pydantic import SecretStr
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from service import operations
from service.app import NO_BROKER, create_app
from service.config import DEFAULT_RECIPIENTS, Settings
from service.model import Caller, CallerKind, Channel, EventKind, PersonId
from service.relay import JSON, XML, Relay
from service.store import election, outbox
from service.store.outbox import Failure
from service.store.tables import STATISTICS
from service.store.tables import outbox as outbox_table
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests.fakes import FakeBroker, an_issued_certificate, document_of
from tests.integration.test_cli import COMMAND, clean_environment
from tests.keys import KEYRING
from tests.leaks import PIN_LIKE
from tests.reference import with_check_digit

NOW = dt.datetime(2024, 5, 17, 9, 30)
ZONE = ZoneInfo("Europe/Stockholm")
RECIPIENTS = {r.party.value: r for r in DEFAULT_RECIPIENTS}
CARE = Caller(
    CallerKind.CARE_SYSTEM, Channel.SOAP, "SE2321000016-WEBCERT", care_giver_id="SE2321000016-GIVER1"
)
DESTINATIONS = ("FKASSA", STATISTICS)
MAX_ATTEMPTS = 3
FIRST_BACKOFF = 10.0


def person(serial: int) -> PersonId:
    return PersonId.parse(with_check_digit(f"19{serial % 90 + 10:02d}0101{serial % 1000:03d}"))


class Clock:
    def __init__(self) -> None:
        self.now = NOW + dt.timedelta(hours=1)

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


async def lives(uow: SqlUnitOfWork, count: int, *, prefix: str = "cert", start: int = 0) -> list[str]:
    """Certificates registered, sent to FKASSA by their citizen and revoked: five events each (statistics
    registered; delivery and statistics sent; delivery and statistics revoked)."""
    ids = []
    for index in range(start, start + count):
        patient = person(index)
        citizen = Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", citizen=patient)
        new = an_issued_certificate(f"{prefix}-{index}", patient=patient)
        await operations.register_certificate(
            uow, new=operations.NewCertificate(new, document_of(new.id)), caller=CARE, now=NOW
        )
        await operations.set_consent(uow, citizen=patient, given=True, caller=citizen, now=NOW)
        await operations.send_certificate(
            uow,
            certificate_id=new.id,
            citizen=patient,
            recipient_id="FKASSA",
            recipients=RECIPIENTS,
            caller=citizen,
            now=NOW,
        )
        await operations.revoke_certificate(uow, certificate_id=new.id, patient=patient, caller=CARE, now=NOW)
        ids.append(new.id)
    return ids


@dataclass(frozen=True, slots=True)
class Row:
    message_id: str
    destination: str
    kind: EventKind
    certificate_id: str
    attempts: int
    dead: bool


async def rows(engine: AsyncEngine) -> list[Row]:
    """The outbox, in order, read with Core (not through the code under test)."""
    async with engine.connect() as connection:
        found = await connection.execute(select(outbox_table).order_by(outbox_table.c.id))
        return [
            Row(
                r.message_id,
                r.destination,
                EventKind(r.kind),
                r.certificate_id,
                r.attempts,
                r.dead_at is not None,
            )
            for r in found
        ]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await dispose(engine)


def a_relay(engine: AsyncEngine, broker: FakeBroker, clock: Clock, *, batch: int = 100) -> Relay:
    return Relay(
        engine,
        KEYRING,
        broker,
        clock=clock,
        zone=ZONE,
        max_attempts=MAX_ATTEMPTS,
        first_backoff=FIRST_BACKOFF,
        longest_backoff=60.0,
        every=0.01,
        batch=batch,
        reconnect=0.05,
        destinations=DESTINATIONS,
    )


async def one_round(relay: Relay, engine: AsyncEngine, broker: FakeBroker) -> None:
    async with broker.connected() as publisher:
        await relay.relay_once(engine, publisher)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_a_round_publishes_every_event_in_order_and_deletes_it_once_confirmed(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)
    await lives(uow, 3)
    written = await rows(engine)
    broker = FakeBroker()

    await one_round(a_relay(engine, broker, Clock()), engine, broker)

    assert len(written) == 15
    # Every event once, with its outbox message id; each certificate's in the order written.
    assert sorted(m.message_id for m in broker.published) == sorted(r.message_id for r in written)
    for certificate_id in {r.certificate_id for r in written}:
        assert [m.message_id for m in broker.published if m.headers["certificate-id"] == certificate_id] == [
            r.message_id for r in written if r.certificate_id == certificate_id
        ]
    assert [(m.destination, m.kind) for m in broker.published[:5]] == [
        (STATISTICS, EventKind.REGISTERED),
        ("FKASSA", EventKind.SENT),
        (STATISTICS, EventKind.SENT),
        ("FKASSA", EventKind.REVOKED),
        (STATISTICS, EventKind.REVOKED),
    ]
    assert await rows(engine) == []


async def test_a_sent_delivery_carries_the_registered_document_and_no_message_an_identity_number(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)
    [certificate_id] = await lives(uow, 1)
    broker = FakeBroker()

    await one_round(a_relay(engine, broker, Clock()), engine, broker)

    by_kind = {(m.destination, m.kind): m for m in broker.published}
    sent = by_kind[("FKASSA", EventKind.SENT)]
    assert sent.content_type == XML
    assert sent.body == document_of(certificate_id)
    assert sent.headers["certificate-id"] == certificate_id
    assert sent.headers["certificate-type"] == "LISJP"
    assert sent.headers["recipient"] == "FKASSA"
    assert sent.headers["event-kind"] == "sent"
    revoked = by_kind[("FKASSA", EventKind.REVOKED)]
    assert revoked.content_type == JSON
    assert json.loads(revoked.body)["recipient"] == "FKASSA"
    statistics = json.loads(by_kind[(STATISTICS, EventKind.SENT)].body)
    assert statistics["care_giver_id"] == "SE2321000016-GIVER1"
    assert statistics["certificate_type"] == "LISJP"
    for message in broker.published:
        assert message.timestamp.tzinfo is ZONE
        assert not PIN_LIKE.search(message.body), message.kind
        assert not any(PIN_LIKE.search(value.encode()) for value in message.headers.values())
        if message.content_type == JSON:
            assert b"DOCUMENT-CONTENT" not in message.body


async def test_a_refused_event_waits_its_backoff_and_holds_back_only_its_own_certificates_later_events(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)
    first, second = await lives(uow, 2)
    written = await rows(engine)
    [refused] = [
        r
        for r in written
        if r.certificate_id == first and r.kind is EventKind.SENT and r.destination == "FKASSA"
    ]
    broker = FakeBroker()
    broker.refusing[refused.message_id] = Failure.NACKED
    clock = Clock()
    relay = a_relay(engine, broker, clock)
    failures = sample("intyg_outbox_publish_failures_total", reason="nacked")

    await one_round(relay, engine, broker)

    # The first certificate's registration went; its refused send and everything after it wait; the
    # second certificate's events all went.
    left = await rows(engine)
    assert [r.message_id for r in left] == [r.message_id for r in written if r.certificate_id == first][1:]
    assert [r.attempts for r in left] == [1, 0, 0, 0]
    assert {m.headers["certificate-id"] for m in broker.published} == {first, second}
    assert sample("intyg_outbox_publish_failures_total", reason="nacked") == failures + 1

    # Within its backoff nothing of the certificate goes, not even the events behind the refused one.
    del broker.refusing[refused.message_id]
    clock.advance(FIRST_BACKOFF - 1)
    await one_round(relay, engine, broker)
    assert len(await rows(engine)) == 4
    clock.advance(1)
    await one_round(relay, engine, broker)
    assert await rows(engine) == []
    assert [m.message_id for m in broker.published if m.headers["certificate-id"] == first] == [
        r.message_id for r in written if r.certificate_id == first
    ]


async def test_an_event_refused_at_every_attempt_is_dead_lettered_counted_and_its_certificate_goes_on(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)
    await lives(uow, 1)
    written = await rows(engine)
    broker = FakeBroker()
    broker.refusing["FKASSA"] = Failure.UNROUTABLE
    clock = Clock()
    relay = a_relay(engine, broker, clock)
    dead_before = sample("intyg_outbox_dead_lettered_total", reason="unroutable")

    for attempt in range(MAX_ATTEMPTS):
        await one_round(relay, engine, broker)
        clock.advance(FIRST_BACKOFF * 2**attempt)

    sent = written[1]
    assert (sent.destination, sent.kind) == ("FKASSA", EventKind.SENT)
    [(letter, reason)] = broker.dead_letters[:1]
    assert (letter.message_id, reason) == (sent.message_id, Failure.UNROUTABLE)
    assert sample("intyg_outbox_dead_lettered_total", reason="unroutable") == dead_before + 1
    # Given up on, the send no longer holds its certificate back: the statistics behind it went in the
    # same round, and the revocation to FKASSA has attempts of its own.
    assert {(m.destination, m.kind) for m in broker.published} == {
        (STATISTICS, EventKind.REGISTERED),
        (STATISTICS, EventKind.SENT),
    }
    assert [(r.kind, r.destination, r.attempts, r.dead) for r in await rows(engine)] == [
        (EventKind.SENT, "FKASSA", MAX_ATTEMPTS, True),
        (EventKind.REVOKED, "FKASSA", 1, False),
        (EventKind.REVOKED, STATISTICS, 0, False),
    ]
    for _ in range(MAX_ATTEMPTS + 1):
        clock.advance(120)
        await one_round(relay, engine, broker)
    assert [(r.kind, r.dead) for r in await rows(engine)] == [
        (EventKind.SENT, True),
        (EventKind.REVOKED, True),
    ]
    assert {m.kind for m in broker.published if m.destination == STATISTICS} == {
        EventKind.REGISTERED,
        EventKind.SENT,
        EventKind.REVOKED,
    }

    # Put back, they are published with their message ids of old once FKASSA takes them.
    assert await outbox.retry_dead(engine) == 2
    del broker.refusing["FKASSA"]
    await one_round(relay, engine, broker)
    assert await rows(engine) == []
    assert [m.message_id for m in broker.published if m.destination == "FKASSA"] == [
        written[1].message_id,
        written[3].message_id,
    ]


async def test_a_lost_confirm_publishes_the_event_again_with_the_same_message_id(engine: AsyncEngine) -> None:
    """At least once: an event is deleted only once confirmed; the broker that had it gets it again, with
    the message id a recipient de-duplicates on."""
    uow = SqlUnitOfWork(engine, KEYRING)
    await lives(uow, 1)
    written = await rows(engine)
    broker = FakeBroker()
    broker.losing_confirms = True
    relay = a_relay(engine, broker, Clock())

    with pytest.raises(Exception, match="TimeoutError"):
        await one_round(relay, engine, broker)
    assert await rows(engine) == written  # nothing deleted, no attempt counted

    broker.losing_confirms = False
    await one_round(relay, engine, broker)
    assert await rows(engine) == []
    first = written[0].message_id
    assert [m.message_id for m in broker.published].count(first) == 2
    assert {m.message_id for m in broker.published} == {r.message_id for r in written}


async def test_a_broker_going_down_mid_round_keeps_what_it_confirmed_and_counts_no_attempt(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)
    await lives(uow, 4)
    written = await rows(engine)
    broker = FakeBroker()
    broker.down_after = 7
    stop = asyncio.Event()
    relay = a_relay(engine, broker, Clock())
    running = asyncio.create_task(relay.run(stop))

    while not broker.down:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)
    left = await rows(engine)
    assert len(left) == len(written) - 7
    assert all(r.attempts == 0 for r in left)
    # It waits, and comes back as the broker does.
    broker.down, broker.down_after = False, None
    for _ in range(500):
        if not await rows(engine):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await running
    assert await rows(engine) == []
    assert sorted(m.message_id for m in broker.published) == sorted(r.message_id for r in written)
    assert broker.connections >= 2


async def test_a_delivery_of_a_certificate_deleted_before_it_was_published_is_dead_lettered_without_its_document(
    engine: AsyncEngine,
) -> None:
    """DOMAIN.md rule 9: no copy survives a deletion, so the relay does not send one after it."""
    uow = SqlUnitOfWork(engine, KEYRING)
    patient = person(1)
    citizen = Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", citizen=patient)
    [certificate_id] = await lives(uow, 1, start=1)
    await operations.remove_care_copy(
        uow, certificate_id=certificate_id, care_giver_id="SE2321000016-GIVER1", caller=CARE, now=NOW
    )
    await operations.set_consent(uow, citizen=patient, given=False, caller=citizen, now=NOW)  # rule 6
    assert (await rows(engine))[-1].kind is EventKind.DELETED
    broker = FakeBroker()

    await one_round(a_relay(engine, broker, Clock()), engine, broker)

    [(letter, reason)] = broker.dead_letters
    assert reason is Failure.CERTIFICATE_DELETED
    assert letter.kind is EventKind.SENT and letter.destination == "FKASSA"
    assert b"DOCUMENT-CONTENT" not in letter.body and letter.content_type == JSON
    assert not any(m.content_type == XML for m in broker.published)
    # The revocation that followed it, and the statistics (the deletion last), went.
    assert [(m.destination, m.kind) for m in broker.published] == [
        (STATISTICS, EventKind.REGISTERED),
        (STATISTICS, EventKind.SENT),
        ("FKASSA", EventKind.REVOKED),
        (STATISTICS, EventKind.REVOKED),
        (STATISTICS, EventKind.DELETED),
    ]
    [dead] = await rows(engine)
    assert dead.dead and dead.attempts == 1


async def test_one_relay_is_elected_and_another_takes_over_when_it_goes(
    database_url: str, tmp_path: Path
) -> None:
    """PostgreSQL: the advisory lock of the relay; SQLite: the flock of a file beside the database."""
    first, second = create_engine(database_url), create_engine(database_url)
    lock_file = (
        election.lock_file_beside(database_url, "relay.lock") if database_url.startswith("sqlite") else None
    )
    try:
        async with election.elected(first, 1234, lock_file=lock_file) as held:
            assert held is not None
            async with election.elected(second, 1234, lock_file=lock_file) as other:
                assert other is None
        async with election.elected(second, 1234, lock_file=lock_file) as taken:
            assert taken is not None
    finally:
        await dispose(first)
        await dispose(second)
        if lock_file is not None:
            lock_file.unlink(missing_ok=True)


def test_without_a_broker_the_app_says_so_at_start_and_its_gauges_show_the_outbox_growing(
    settings: Settings, nothing_leaks: list[str]
) -> None:
    async def fill() -> None:
        engine = create_engine(settings.database_url)
        try:
            await lives(SqlUnitOfWork(engine, KEYRING), 2)
        finally:
            await dispose(engine)

    asyncio.run(fill())
    assert settings.broker_url is None
    with TestClient(create_app(settings)):
        # The store gauges' first round runs at start.
        deadline = time.monotonic() + 10
        while sample("intyg_outbox_pending_events", destination="FKASSA") != 4:
            assert time.monotonic() < deadline, "the outbox gauges were not refreshed"
            time.sleep(0.02)
        assert sample("intyg_outbox_pending_events", destination=STATISTICS) == 6
        assert sample("intyg_outbox_pending_events", destination="SOS") == 0
        assert sample("intyg_outbox_oldest_pending_age_seconds") > 0
    assert sum(NO_BROKER in line for line in nothing_leaks) == 1


def test_the_outbox_command_shows_what_waits_and_puts_dead_letters_back(
    database_url: str, tmp_path: Path
) -> None:
    async def fill() -> None:
        engine = create_engine(database_url)
        try:
            await lives(SqlUnitOfWork(engine, KEYRING), 2)
            broker = FakeBroker()
            broker.refusing["FKASSA"] = Failure.UNROUTABLE
            clock = Clock()
            relay = a_relay(engine, broker, clock)
            for _ in range(MAX_ATTEMPTS + 2):
                await one_round(relay, engine, broker)
                clock.advance(120)
        finally:
            await dispose(engine)

    asyncio.run(fill())
    # No keys: the command reads no certificate.
    env = clean_environment(INTYG_DATABASE_URL=database_url)

    def command(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(COMMAND), "outbox", *args], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    shown = command()
    assert shown.returncode == 1, shown.stderr  # dead letters remain
    lines = shown.stdout.splitlines()
    assert lines[0] == "outbox: 0 events wait to be published; 4 dead-lettered"
    assert "no broker is configured (INTYG_BROKER_URL)" in lines[1]
    assert sum("FKASSA sent" in line and "unroutable" in line for line in lines) == 2
    assert not PIN_LIKE.search(shown.stdout.encode()) and "cert-" not in shown.stdout

    retried = command("--retry-dead")
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.splitlines()[:3] == [
        "put 4 dead-lettered events back in the outbox",
        retried.stdout.splitlines()[1],
        "no broker is configured (INTYG_BROKER_URL): no relay publishes them",
    ]
    assert retried.stdout.splitlines()[1].startswith(
        "outbox: 4 events wait to be published, the oldest written"
    )
    assert "  FKASSA       revoked     2" in retried.stdout
    assert "  FKASSA       sent        2" in retried.stdout


def test_the_production_profile_refuses_to_start_without_a_broker_and_takes_only_amqp_urls() -> None:
    production = Settings(profile="production", database_url="postgresql://db/intyg")
    assert any("INTYG_BROKER_URL" in problem for problem in production.unfit_to_serve())
    with_broker = Settings(
        profile="production", database_url="postgresql://db/intyg", broker_url=SecretStr("amqp://mq/")
    )
    assert not any("INTYG_BROKER_URL" in problem for problem in with_broker.unfit_to_serve())
    with pytest.raises(ValueError, match="amqp://"):
        Settings(broker_url=SecretStr("http://mq/"))
