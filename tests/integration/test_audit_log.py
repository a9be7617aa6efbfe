"""The tamper-evident audit log through the real store, the app and ``intygstjanst verify-audit`` (README
"Audit log").

Every operation's record, success or refusal, is written in the transaction of its effect and chained
after commit by the sealer (``store/audit_sealer.py``); concurrent writers and a sealer on PostgreSQL
keep one gapless chain, a record that took its id early and committed late is placed after what was
sealed before it, and a sealer that dies is replaced with nothing lost or doubled; checkpoints are
signed by the sealer every so many records and when the app stops, and logged; the migration chains
records stored before it; verify-audit reports the unsealed tail;
and hundreds of seeded tamperings of a chain of real records are all found at the right place, a
sample of them in the database itself through the command. The pure chain and each kind of tampering
on synthetic records are in ``tests/unit/test_audit_chain.py``; the kinds are in ``tests/tampering.py``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import logging
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from alembic import command
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from service import cli, errors, loader, operations
from service.app import create_app
from service.config import Settings
from service.model import Action, AuditRecord, Caller, CallerKind, Channel, Outcome, PersonId
from service.store import audit_chain, audit_sealer, migration
from service.store.audit_chain import Checkpoint, Head, Signer
from service.store.tables import audit_checkpoints, audit_head, audit_records, certificates
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from service.telemetry import json_formatter
from tests import audit_benchmark, tampering
from tests.fakes import an_issued_certificate, document_of
from tests.integration import soap as s
from tests.integration.conftest import sync_url
from tests.integration.test_store import STORE_FAILURE, refuse, revision_of
from tests.keys import KEYRING, settings_keys
from tests.reference import with_check_digit
from tests.tampering import Chain
from tests.unit.test_audit_chain import FIRST_WORDS, KINDS

NOW = dt.datetime(2024, 5, 17, 9, 30)
SIGNED = dt.datetime(2024, 5, 2, 10, 0)
CARE_GIVER = "SE2321000016-GIVER1"
CARE = Caller(CallerKind.CARE_SYSTEM, Channel.SOAP, "SE2321000016-WEBCERT", care_giver_id=CARE_GIVER)
OTHER_CARE = Caller(
    CallerKind.CARE_SYSTEM, Channel.SOAP, "SE2321000016-OTHER", care_giver_id="SE2321000016-GIVER2"
)


def person(serial: int) -> PersonId:
    return PersonId.parse(with_check_digit(f"19{serial % 90 + 10:02d}0101{serial % 1000:03d}"))


def citizen(patient: PersonId) -> Caller:
    return Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", citizen=patient)


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await dispose(engine)


def keys_of(*signers: Signer) -> dict[str, Any]:
    return {signer.key_id: signer.public_key for signer in signers}


async def seal(engine: AsyncEngine, signer: Signer | None = None, *, every: int = 1000) -> None:
    """The sealer's passes until nothing is left unsealed, as the service runs them after commit."""
    while True:
        async with engine.begin() as connection:
            sealed = await audit_sealer.seal(connection, signer=signer, now=NOW, checkpoint_every=every)
        if not sealed.full:
            return


async def stored_chain(engine: AsyncEngine) -> Chain:
    """Everything of the chain the database holds, read with Core (not through the code under test).
    The record's ``id`` is left out: it only orders the unsealed tail, and the chain does not cover it
    (the tamperer's write lets the database give ids anew)."""
    async with engine.connect() as connection:
        records = [
            {k: v for k, v in row._mapping.items() if k != "id"}
            for row in await connection.execute(
                select(audit_records).order_by(
                    audit_records.c.seq.is_(None), audit_records.c.seq, audit_records.c.id
                )
            )
        ]
        checkpoints = [
            Checkpoint(row.seq, row.hash, row.at, row.key_id, row.signature)
            for row in await connection.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
        ]
        head = (await connection.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
    return Chain(records, checkpoints, Head(head.seq, head.hash), logged=list(checkpoints))


async def chain_at(database_url: str) -> Chain:
    """``stored_chain`` of the database at ``database_url``, through an engine of its own."""
    engine = create_engine(database_url)
    try:
        return await stored_chain(engine)
    finally:
        await dispose(engine)


async def store_chain(engine: AsyncEngine, chain: Chain) -> None:
    """Replace what the database holds of the chain: the tamperer's write."""
    async with engine.begin() as connection:
        for table in (audit_records, audit_checkpoints, audit_head):
            await connection.execute(delete(table))
        if chain.records:
            await connection.execute(insert(audit_records), chain.records)
        if chain.checkpoints:
            await connection.execute(
                insert(audit_checkpoints), [dataclasses.asdict(c) for c in chain.checkpoints]
            )
        await connection.execute(
            insert(audit_head), {"id": 1, "seq": chain.head.seq, "hash": chain.head.hash}
        )


async def workload(uow: SqlUnitOfWork, rounds: int, *, prefix: str = "cert", start: int = 0) -> int:
    """Rounds of six operations, each audited once: a register, a care read and list, a consent given
    (even rounds) or withdrawn (odd), the citizen's read (refused without consent), and a removal
    refused to another care giver."""
    for index in range(start, start + rounds):
        patient = person(index)
        now = NOW + dt.timedelta(seconds=index)
        new = an_issued_certificate(f"{prefix}-{index}", patient=patient, signed_at=SIGNED)
        await operations.register_certificate(
            uow, new=operations.NewCertificate(new, document_of(new.id)), caller=CARE, now=now
        )
        await operations.get_certificate_for_care(uow, certificate_id=new.id, caller=CARE, now=now)
        await operations.list_certificates_for_care(uow, patient=patient, caller=CARE, now=now)
        if index % 2:
            await operations.set_consent(uow, citizen=patient, given=False, caller=citizen(patient), now=now)
        else:
            await operations.set_consent(uow, citizen=patient, given=True, caller=citizen(patient), now=now)
        read = operations.get_certificate_for_citizen(
            uow, certificate_id=new.id, citizen=patient, caller=citizen(patient), now=now
        )
        if index % 2:
            with pytest.raises(errors.ConsentRequired):
                await read
        else:
            await read
        with pytest.raises(errors.NotPermitted):
            await operations.remove_care_copy(
                uow, certificate_id=new.id, care_giver_id="SE2321000016-GIVER2", caller=OTHER_CARE, now=now
            )
    return rounds * 6


# --- the chain the store writes ------------------------------------------------------------------------


async def test_every_operations_record_success_and_refusal_is_chained_without_gaps(
    engine: AsyncEngine, signer: Signer
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)

    written = await workload(uow, 4)
    unsealed = await stored_chain(engine)
    await seal(engine, signer, every=10)

    chain = await stored_chain(engine)
    # Written without a place, in the transaction of each effect; placed after commit in that order.
    assert [(row["seq"], row["hash"]) for row in unsealed.records] == [(None, None)] * written
    assert unsealed.head == Head(0, audit_chain.GENESIS)
    assert [row["seq"] for row in chain.records] == list(range(1, written + 1))
    assert [row["at"] for row in chain.records] == [row["at"] for row in unsealed.records]
    assert {row["outcome"] for row in chain.records} == {"ok", "info", "denied"}
    assert chain.head == Head(written, chain.records[-1]["hash"])
    assert [c.seq for c in chain.checkpoints] == [10, 20]
    assert audit_chain.verify(chain.records, chain.checkpoints, chain.head, keys_of(signer)) == (
        audit_chain.Verdict(records=written, checkpoints=2, problem=None)
    )


async def test_a_refused_write_leaves_neither_the_effect_nor_its_record_nor_a_moved_head(
    engine: AsyncEngine, signer: Signer
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)
    await workload(uow, 1, start=1)  # cert-1, whose citizen has withdrawn consent
    await seal(engine, signer)
    before = await stored_chain(engine)
    await refuse(engine, "BEFORE DELETE", certificates)

    # Without consent the removal deletes the certificate (rule 5); the store refuses the delete.
    with pytest.raises(STORE_FAILURE):
        await operations.remove_care_copy(
            uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
        )

    after = await stored_chain(engine)
    assert (after.checkpoints, after.head) == (before.checkpoints, before.head)
    # The effect's record is not there; the failed attempt's, an unsealed error, is (STYLE.md, Audit).
    *kept, attempt = after.records
    assert kept == before.records
    assert (attempt["action"], attempt["outcome"], attempt["seq"]) == ("remove_care_copy", "error", None)


async def test_an_audit_write_the_store_refuses_undoes_the_operation(engine: AsyncEngine) -> None:
    # The effect and its audit record commit together or not at all (STYLE.md, Audit).
    uow = SqlUnitOfWork(engine, KEYRING)
    await refuse(engine, "BEFORE INSERT", audit_records)
    new = an_issued_certificate("cert-refused", signed_at=SIGNED)

    with pytest.raises(STORE_FAILURE):
        await operations.register_certificate(
            uow, new=operations.NewCertificate(new, document_of(new.id)), caller=CARE, now=NOW
        )

    async with engine.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(certificates)) == 0
    chain = await stored_chain(engine)
    assert (chain.records, chain.checkpoints, chain.head) == ([], [], Head(0, audit_chain.GENESIS))


async def test_an_aware_time_is_refused_before_it_could_read_back_as_another_value(
    engine: AsyncEngine,
) -> None:
    uow = SqlUnitOfWork(engine, KEYRING)

    with pytest.raises(ValueError, match="without a zone"):
        await operations.list_certificates_for_care(
            uow, patient=person(1), caller=CARE, now=NOW.replace(tzinfo=dt.UTC)
        )

    assert (await stored_chain(engine)).records == []


# --- the sealer ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("table", "when"), [(audit_head, "BEFORE UPDATE"), (audit_checkpoints, "BEFORE INSERT")]
)
async def test_a_seal_the_store_refuses_places_nothing_and_the_next_pass_places_everything(
    engine: AsyncEngine, signer: Signer, table: sqlalchemy.Table, when: str
) -> None:
    written = await workload(SqlUnitOfWork(engine, KEYRING), 1)
    await refuse(engine, when, table)

    with pytest.raises(DBAPIError):
        await seal(engine, signer, every=1)

    assert [row["seq"] for row in (await stored_chain(engine)).records] == [None] * written
    async with engine.begin() as connection:
        await connection.exec_driver_sql(
            f"DROP TRIGGER refuse_{when.lower().replace(' ', '_')}_{table.name}"
            + ("" if connection.dialect.name == "sqlite" else f" ON {table.name}")
        )
    await seal(engine, signer, every=1)
    chain = await stored_chain(engine)
    assert [row["seq"] for row in chain.records] == list(range(1, written + 1))
    assert [c.seq for c in chain.checkpoints] == list(range(1, written + 1))
    assert chain.verdict(keys_of(signer)).intact


def _a_record(serial: int) -> AuditRecord:
    return AuditRecord(
        at=NOW + dt.timedelta(milliseconds=serial),
        action=Action.READ,
        outcome=Outcome.OK,
        actor_kind=CallerKind.CARE_SYSTEM,
        actor_id=CARE.system_id,
        channel=Channel.SOAP,
        patient=person(serial),
        certificate_ids=(f"cert-{serial}",),
    )


async def test_a_record_that_took_its_id_early_and_committed_late_is_placed_after_what_was_sealed_before(
    engine: AsyncEngine, signer: Signer
) -> None:
    """The ordering problem of a sealer (shared/notes/sealing-an-append-only-log.md): ids are taken at
    insert, not at commit. The late record is neither skipped (as a sealer sealing "up to the highest id
    it saw" would) nor put behind the checkpoint already signed."""
    if engine.dialect.name == "sqlite":
        pytest.skip(
            "two writers are open at once on PostgreSQL only: SQLite serialises them at BEGIN IMMEDIATE"
        )
    async with SqlUnitOfWork(engine, KEYRING) as late:
        await late.audit.add(_a_record(1))  # inserted at once: the record has its id now
        async with SqlUnitOfWork(engine, KEYRING) as early:
            await early.audit.add(_a_record(2))
            await early.commit()
        await seal(engine, signer, every=1)  # seals the committed record, signs place 1
        await late.commit()
    await seal(engine, signer, every=1)

    chain = await stored_chain(engine)
    async with engine.connect() as connection:
        ids = dict((await connection.execute(select(audit_records.c.at, audit_records.c.id))).all())
    late_at, early_at = _a_record(1).at, _a_record(2).at
    assert ids[late_at] < ids[early_at]
    assert [(row["seq"], row["at"]) for row in chain.records] == [(1, early_at), (2, late_at)]
    assert [c.seq for c in chain.checkpoints] == [1, 2]
    assert chain.verdict(keys_of(signer)).intact


def _holder_of_the_sealer_lock(database_url: str) -> int | None:
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            pid = connection.scalar(
                sqlalchemy.text(
                    "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted"
                    " AND ((classid::bigint << 32) | objid::bigint) = :key"
                ),
                {"key": audit_sealer._SEALER_LOCK},
            )
            return None if pid is None else int(pid)
    finally:
        engine.dispose()


def test_writers_and_two_sealers_on_postgresql_keep_one_gapless_chain_through_a_sealer_crash(
    database_url: str, signer: Signer
) -> None:
    """Writers in threads with their own engines and event loops, like service processes, write at once
    while two sealers (as in two replicas) run: one is elected, the other stands by. The elected one's
    session is killed mid-run (a crashed replica); the other takes over. Every record is placed exactly
    once, without gaps, and the chain verifies."""
    if database_url.startswith("sqlite"):
        pytest.skip("sealers are elected on PostgreSQL only: on SQLite every pass holds the one write lock")
    writers, rounds = 4, 6
    started = threading.Barrier(writers + 1)
    stop = threading.Event()
    failures: list[BaseException] = []

    def in_thread(work: Callable[[AsyncEngine], Any]) -> threading.Thread:
        async def run() -> None:
            engine = create_engine(database_url, pool_size=2)
            try:
                await work(engine)
            finally:
                await dispose(engine)

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:  # reported below, not lost in the thread
                failures.append(exc)

        thread = threading.Thread(target=target, daemon=True)
        thread.start()
        return thread

    def writer(index: int) -> Callable[[AsyncEngine], Any]:
        async def work(engine: AsyncEngine) -> None:
            uow = SqlUnitOfWork(engine, KEYRING)
            started.wait(timeout=30)
            await workload(uow, rounds, prefix=f"writer{index}", start=index * 100)

        return work

    async def sealing(engine: AsyncEngine) -> None:
        stopping = asyncio.Event()
        sealer = audit_sealer.Sealer(
            engine, signer=signer, clock=lambda: NOW, checkpoint_every=7, checkpoint_seconds=3600, every=0.05
        )
        task = asyncio.create_task(sealer.run(stopping))
        while not stop.is_set():
            await asyncio.sleep(0.05)
        stopping.set()
        await asyncio.wait_for(task, 30)

    sealers = [in_thread(sealing) for _ in range(2)]
    deadline = time_after(30)
    while (first := _holder_of_the_sealer_lock(database_url)) is None:
        assert before(deadline), "no sealer was elected"
    threads = [in_thread(writer(i)) for i in range(writers)]
    started.wait(timeout=30)
    killer = sqlalchemy.create_engine(sync_url(database_url))
    with killer.connect() as connection:
        connection.execute(sqlalchemy.text("SELECT pg_terminate_backend(:pid)"), {"pid": first})
    killer.dispose()
    while _holder_of_the_sealer_lock(database_url) in (None, first):
        assert before(deadline), "no sealer took over"
    for thread in threads:
        thread.join(timeout=120)
    stop.set()
    for thread in sealers:
        thread.join(timeout=60)
    assert not any(t.is_alive() for t in threads + sealers), "a writer or sealer hangs"
    assert failures == []

    async def check() -> None:
        engine = create_engine(database_url)
        try:
            chain = await stored_chain(engine)
        finally:
            await dispose(engine)
        written = writers * rounds * 6
        assert [row["seq"] for row in chain.records] == list(range(1, written + 1))
        assert {c.seq for c in chain.checkpoints} >= set(range(7, written + 1, 7))
        assert chain.verdict(keys_of(signer)).intact

    asyncio.run(check())


def time_after(seconds: float) -> float:
    return time.monotonic() + seconds


def before(deadline: float) -> bool:
    time.sleep(0.02)
    return time.monotonic() < deadline


# --- checkpoints ---------------------------------------------------------------------------------------


async def test_a_committed_checkpoint_is_logged_with_places_and_hashes_only(
    engine: AsyncEngine, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="service.audit")
    await workload(SqlUnitOfWork(engine, KEYRING), 1)
    sealer = audit_sealer.Sealer(
        engine, signer=signer, clock=lambda: NOW, checkpoint_every=4, checkpoint_seconds=3600, every=1
    )

    await sealer.seal_once()

    logged = [json.loads(json_formatter().format(r)) for r in caplog.records if r.name == "service.audit"]
    stored = (await stored_chain(engine)).checkpoints
    assert [c.seq for c in stored] == [4, 6]  # every fourth place, and the head when sealing ends
    assert [entry["event"] for entry in logged] == ["audit_checkpoint"] * 2
    assert [{k: e[k] for k in ("seq", "at", "key_id", "hash_b64", "signature_b64")} for e in logged] == [
        c.as_logged() for c in stored
    ]
    assert [Checkpoint.from_logged(entry) for entry in logged] == stored
    assert person(0).value not in json.dumps(logged)


async def test_a_pass_signing_the_head_signs_it_once_the_chain_grew_and_not_again(
    engine: AsyncEngine, signer: Signer
) -> None:
    async def seal_and_sign() -> tuple[Checkpoint, ...]:
        async with engine.begin() as connection:
            sealed = await audit_sealer.seal(
                connection, signer=signer, now=NOW, checkpoint_every=1000, sign_head=True
            )
        return sealed.checkpoints

    assert await seal_and_sign() == ()  # an empty chain has nothing to sign
    await workload(SqlUnitOfWork(engine, KEYRING), 1)
    sealed = await seal_and_sign()
    again = await seal_and_sign()

    chain = await stored_chain(engine)
    assert again == ()
    assert (
        [(c.seq, c.hash) for c in sealed]
        == [(chain.head.seq, chain.head.hash)]
        == [(6, chain.records[-1]["hash"])]
    )
    assert chain.checkpoints == list(sealed)


def test_the_app_signs_with_its_key_and_seals_its_last_records_when_it_stops(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "audit-signing-key.pem"
    key = Ed25519PrivateKey.generate()
    key_file.write_bytes(key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    settings = Settings(
        database_url=database_url,
        audit_signing_key_file=key_file,
        audit_checkpoint_seconds=3600,
        dev_key_file=tmp_path / "dev-portal-key.json",
        **settings_keys(),
    )
    caplog.set_level(logging.INFO, logger="service.audit")

    with TestClient(create_app(settings)) as client:
        response = client.post(
            s.path_of("RegisterCertificate", 3),
            content=s.register_envelope("sealed-1", "191212121212"),
            headers={"Content-Type": "text/xml; charset=utf-8"},
        )
        assert response.status_code == 200

    stored = asyncio.run(chain_at(database_url))
    [checkpoint] = stored.checkpoints
    assert (
        (checkpoint.seq, checkpoint.hash)
        == (stored.head.seq, stored.head.hash)
        == (1, stored.records[0]["hash"])
    )
    assert checkpoint.key_id == audit_chain.key_id(key.public_key())
    assert [getattr(r, "seq", None) for r in caplog.records if r.name == "service.audit"] == [1]


def test_the_app_stops_its_sealer_between_passes_and_leaves_every_record_sealed_and_signed(
    database_url: str, tmp_path: Path
) -> None:
    """Stopped while its sealer passes come every few milliseconds, the app waits for
    the pass under way instead of cancelling it inside a transaction (which left SQLite's write lock
    to a dead transaction: the final seal then waited out the busy timeout and the last checkpoint was
    lost), seals the rest, signs the head, and is gone well within the shutdown grace."""
    settings = Settings(
        database_url=database_url,
        audit_seal_seconds=0.005,
        audit_checkpoint_seconds=3600,
        dev_key_file=tmp_path / "dev-portal-key.json",
        **settings_keys(),
    )
    stops = []
    for round_ in range(12):
        client = TestClient(create_app(settings))
        with client:
            response = client.post(
                s.path_of("RegisterCertificate", 3),
                content=s.register_envelope(f"stopping-{round_}", "191212121212"),
                headers={"Content-Type": "text/xml; charset=utf-8"},
            )
            assert response.status_code == 200
            stopping = time.monotonic()
        stops.append(time.monotonic() - stopping)

    stored = asyncio.run(chain_at(database_url))
    assert max(stops) < settings.shutdown_grace_seconds / 4, stops
    assert [row["seq"] for row in stored.records] == list(range(1, 13))
    assert stored.checkpoints[-1].seq == stored.head.seq == 12
    assert stored.verdict(loader.audit_verify_keys(settings)).intact


def test_the_development_key_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(dev_audit_key_file=tmp_path / "intygstjanst-dev-audit-key.pem")

    first = loader.audit_signer(settings)
    second = loader.audit_signer(settings)

    assert first.key_id == second.key_id
    assert settings.dev_audit_key_file.stat().st_mode & 0o077 == 0
    assert loader.audit_verify_keys(settings) == {first.key_id: first.public_key}
    # Production never trusts the development key.
    assert loader.audit_verify_keys(settings.model_copy(update={"profile": "production"})) == {}
    assert list(tmp_path.iterdir()) == [settings.dev_audit_key_file]  # no temporary file left


def test_the_production_profile_needs_the_audit_signing_key(tmp_path: Path) -> None:
    production = Settings(profile="production", database_url="postgresql://db/intyg")
    configured = production.model_copy(update={"audit_signing_key_file": tmp_path / "key.pem"})

    assert any("INTYG_AUDIT_SIGNING_KEY_FILE" in p for p in production.unfit_to_serve())
    assert not any("AUDIT" in p for p in configured.unfit_to_serve())


def test_serve_refuses_to_start_with_a_signing_key_that_cannot_sign(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    not_ed25519 = tmp_path / "rsa.pem"
    not_ed25519.write_bytes(
        rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
            Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()
        )
    )
    monkeypatch.setenv("INTYG_DATABASE_URL", f"sqlite:///{tmp_path / 'intyg.db'}")
    for key_file in (not_ed25519, tmp_path / "missing.pem"):
        monkeypatch.setenv("INTYG_AUDIT_SIGNING_KEY_FILE", str(key_file))
        root = logging.getLogger()
        kept = root.handlers[:], root.level
        try:
            code = cli.main(["serve", "--port", "1"])
        finally:
            root.handlers[:], level = kept
            root.setLevel(level)

        err = capsys.readouterr().err
        assert code == 2
        assert err.startswith("refusing to start: the audit log's signing key: ") and err.count("\n") == 1
    assert not (tmp_path / "intyg.db").exists()


# --- the migration ---------------------------------------------------------------------------------------


def test_the_migration_chains_the_records_stored_before_it_in_the_order_of_their_ids(
    empty_database_url: str, signer: Signer
) -> None:
    database_url = empty_database_url
    migration.upgrade(database_url, revision="0002")
    plain = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with plain.begin() as connection:
            # Ids with gaps, as rolled-back transactions leave them; inserted out of order.
            for old_id, second in ((9, 3), (3, 1), (5, 2)):
                connection.execute(
                    sqlalchemy.text(
                        "INSERT INTO audit_records (id, at, action, outcome, actor_kind, actor_id, channel,"
                        " patient_id, certificate_ids, detail) VALUES (:id, :at, 'read', 'ok', 'care_system',"
                        " 'SE2321000016-WEBCERT', 'soap', '191212121212', :ids, '')"
                    ),
                    {"id": old_id, "at": NOW + dt.timedelta(seconds=second), "ids": f"cert-{old_id}"},
                )
    finally:
        plain.dispose()

    migration.upgrade(database_url, keyring=KEYRING)

    async def after() -> Chain:
        engine = create_engine(database_url)
        try:
            await workload(SqlUnitOfWork(engine, KEYRING), 1)
            await seal(engine)
            return await stored_chain(engine)
        finally:
            await dispose(engine)

    chain = asyncio.run(after())
    assert [(row["seq"], row["certificate_ids"]) for row in chain.records[:3]] == [
        (1, "cert-3"),
        (2, "cert-5"),
        (3, "cert-9"),
    ]
    assert chain.verdict({}) == audit_chain.Verdict(records=9, checkpoints=0, problem=None)


def test_downgrading_below_the_sealer_chains_the_unsealed_tail_as_revision_0004_knows_none(
    database_url: str, signer: Signer
) -> None:
    """Migration 0005's way back: records written but not sealed yet get their places in the order of
    their ids (no checkpoint: signing needs the service's key), so the schema of 0004, where every
    record has its place, holds a chain that verifies."""

    async def written() -> None:
        engine = create_engine(database_url)
        try:
            await workload(SqlUnitOfWork(engine, KEYRING), 1)
            await seal(engine, signer, every=4)
            await workload(SqlUnitOfWork(engine, KEYRING), 1, start=1)  # left unsealed
        finally:
            await dispose(engine)

    asyncio.run(written())
    command.downgrade(migration.alembic_config(database_url), "0004")

    plain = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with plain.connect() as connection:
            # The tables as revision 0004 left them, read with their column types (times as times).
            old = sqlalchemy.MetaData()
            records_, head_, checkpoints_ = (
                sqlalchemy.Table(name, old, autoload_with=connection)
                for name in ("audit_records", "audit_head", "audit_checkpoints")
            )
            records = [row._mapping for row in connection.execute(select(records_).order_by(records_.c.seq))]
            head = connection.execute(select(head_.c.seq, head_.c.hash)).one()
            stored = [
                Checkpoint(r.seq, r.hash, r.at, r.key_id, r.signature)
                for r in connection.execute(select(checkpoints_).order_by(checkpoints_.c.seq))
            ]
    finally:
        plain.dispose()
    assert "id" not in records[0]
    assert [r["seq"] for r in records] == list(range(1, 13))
    verdict = audit_chain.verify(records, stored, Head(head.seq, head.hash), keys_of(signer))
    assert verdict == audit_chain.Verdict(records=12, checkpoints=1, problem=None)  # at 4: 7-12 unsigned
    # And up again, the records keeping their places (0007 opens the stored certificates with the keys).
    migration.upgrade(database_url, keyring=KEYRING)
    assert asyncio.run(chain_at(database_url)).verdict(keys_of(signer)).intact


def _records_at_revision_0005(database_url: str, signer: Signer) -> list[tuple[str, str]]:
    """Records of every kind, written, sealed and signed as revision 0005 wrote them: all they had beside
    their action in the strings ``action`` and ``detail``. Returns those strings, in the order of seq."""
    migration.upgrade(database_url, revision="0005")
    plain = sqlalchemy.create_engine(sync_url(database_url))
    last, words = audit_chain.GENESIS, []
    try:
        with plain.begin() as connection:
            for seq, (kind, (action, detail)) in enumerate(zip(KINDS, FIRST_WORDS, strict=True), start=1):
                row = {
                    "at": NOW + dt.timedelta(seconds=seq),
                    "action": action,
                    "outcome": kind["outcome"],
                    "actor_kind": "care_system",
                    "actor_id": "SE2321000016-WEBCERT",
                    "channel": "soap",
                    "certificate_ids": f"cert-{seq}",
                    "detail": detail,
                }
                digest = audit_chain.record_hash(last, row)
                connection.execute(
                    insert(
                        sqlalchemy.table(
                            "audit_records", *map(sqlalchemy.column, [*row, "id", "seq", "prev_hash", "hash"])
                        )
                    ),
                    {**row, "id": seq, "seq": seq, "prev_hash": last, "hash": digest},
                )
                last = digest
                words.append((action, detail))
            checkpoint = signer.sign(len(words), last, NOW)
            connection.execute(insert(audit_checkpoints), dataclasses.asdict(checkpoint))
            connection.execute(
                sqlalchemy.text("UPDATE audit_head SET seq = :seq, hash = :hash"),
                {"seq": len(words), "hash": last},
            )
    finally:
        plain.dispose()
    return words


def test_the_typed_vocabulary_migration_converts_every_record_and_changes_no_hash_either_way(
    empty_database_url: str, signer: Signer
) -> None:
    """Revision 0006: each record's strings become its action and typed columns; the chain and its signed
    checkpoint still verify; and on the way back each record has its strings again, verifying still."""
    database_url = empty_database_url
    words = _records_at_revision_0005(database_url, signer)

    migration.upgrade(database_url)

    chain = asyncio.run(chain_at(database_url))
    verdict = chain.verdict(keys_of(signer))
    assert (verdict.records, verdict.problem) == (len(words), None)
    assert verdict.checkpoints >= 1  # ours, at the last record, among them
    assert [
        {
            k: v
            for k, v in row.items()
            if k in ("action", "outcome", *audit_chain.TYPED_COLUMNS) and v is not None
        }
        for row in chain.records
    ] == KINDS
    assert "detail" not in chain.records[0]

    command.downgrade(migration.alembic_config(database_url), "0005")

    plain = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with plain.connect() as connection:
            back = connection.execute(
                sqlalchemy.text("SELECT action, detail FROM audit_records ORDER BY seq")
            )
            assert [tuple(row) for row in back] == words
    finally:
        plain.dispose()
    migration.upgrade(database_url)
    assert asyncio.run(chain_at(database_url)).verdict(keys_of(signer)).intact


def test_the_typed_vocabulary_migration_stops_at_a_record_of_no_known_form_and_changes_nothing(
    empty_database_url: str, signer: Signer
) -> None:
    database_url = empty_database_url
    _records_at_revision_0005(database_url, signer)
    plain = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with plain.begin() as connection:
            connection.execute(
                sqlalchemy.text("UPDATE audit_records SET detail = 'deleted many' WHERE seq = 10")
            )
    finally:
        plain.dispose()

    with pytest.raises(RuntimeError, match="audit record 10 has an action or detail of no known form"):
        migration.upgrade(database_url)

    assert revision_of(database_url) == "0005"
    plain = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with plain.connect() as connection:
            records = sqlalchemy.Table("audit_records", sqlalchemy.MetaData(), autoload_with=connection)
            assert "recipient" not in records.c  # the columns of revision 0005 only
            assert connection.scalar(select(records.c.detail).where(records.c.seq == 10)) == "deleted many"
    finally:
        plain.dispose()


# --- verify-audit ----------------------------------------------------------------------------------------

Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def verify_audit(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Run:
    """``intygstjanst verify-audit`` in this process, as an auditor runs it: the database URL and the
    public keys from the environment."""

    def run(url: str, *signers: Signer, args: tuple[str, ...] = ()) -> tuple[int, str, str]:
        monkeypatch.setenv("INTYG_DATABASE_URL", url)
        monkeypatch.setenv("INTYG_DEV_AUDIT_KEY_FILE", str(tmp_path / "no-dev-key.pem"))
        if signers:
            keys = tmp_path / "audit-verify-keys.pem"
            keys.write_bytes(b"".join(audit_benchmark.public_pem(signer) for signer in signers))
            monkeypatch.setenv("INTYG_AUDIT_VERIFY_KEYS_FILE", str(keys))
        root = logging.getLogger()
        kept = root.handlers[:], root.level
        try:
            code = cli.main(["verify-audit", *args])
        finally:
            root.handlers[:], level = kept
            root.setLevel(level)
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


async def test_verify_audit_finds_an_intact_chain_and_says_how_much_it_checked(
    engine: AsyncEngine, database_url: str, signer: Signer, verify_audit: Run
) -> None:
    # Keys rotate: checkpoints of an old and a new key both verify with the verify keys file.
    rotated = Signer(Ed25519PrivateKey.generate())
    await workload(SqlUnitOfWork(engine, KEYRING), 1)
    await seal(engine, rotated, every=5)
    await workload(SqlUnitOfWork(engine, KEYRING), 1, start=1)
    await seal(engine, signer, every=5)

    code, out, _ = verify_audit(database_url, rotated, signer)

    assert code == 0
    assert out.startswith("audit log intact: 12 records, 2 checkpoints, verified in ")
    assert out.rstrip().endswith("records/s); unsealed tail: 0 records") and out.count("\n") == 1


async def test_verify_audit_reports_the_unsealed_tail_and_finds_a_record_not_written_by_the_service(
    engine: AsyncEngine, database_url: str, signer: Signer, verify_audit: Run
) -> None:
    await workload(SqlUnitOfWork(engine, KEYRING), 1)
    await seal(engine, signer, every=5)
    await workload(SqlUnitOfWork(engine, KEYRING), 1, start=1)  # written, not sealed yet

    code, out, _ = verify_audit(database_url, signer)

    assert code == 0
    assert out.startswith("audit log intact: 6 records, 1 checkpoints, verified in ")
    tail = out.split("; ")[1]
    assert tail.startswith("unsealed tail: 6 records, the oldest ") and tail.endswith(
        " s old, each well-formed\n"
    )
    # A record given a hash but no place was not written by the service (nor placed by the sealer).
    async with engine.begin() as connection:
        first = await connection.scalar(
            select(func.min(audit_records.c.id)).where(audit_records.c.seq.is_(None))
        )
        await connection.execute(
            audit_records.update().where(audit_records.c.id == first).values(hash="0" * 64)
        )

    assert verify_audit(database_url, signer)[:2] == (
        1,
        f"audit log NOT intact: unsealed record {first}: has hash but no place in the chain\n",
    )


async def test_verify_audit_names_the_first_bad_record_and_never_its_content(
    engine: AsyncEngine, database_url: str, signer: Signer, verify_audit: Run
) -> None:
    await workload(SqlUnitOfWork(engine, KEYRING), 2)
    await seal(engine, signer, every=5)
    async with engine.begin() as connection:
        await connection.execute(
            audit_records.update()
            .where(audit_records.c.seq == 8)
            .values(patient_key=KEYRING.lookup(person(5).value))
        )

    code, out, err = verify_audit(database_url, signer)

    assert (code, out, err) == (
        1,
        "audit log NOT intact: record 8: its hash does not match its content\n",
        "",
    )
    assert person(1).value not in out and person(5).value not in out


def test_verify_audit_without_a_key_or_a_database_checks_nothing_and_says_why(
    tmp_path: Path, signer: Signer, verify_audit: Run
) -> None:
    missing = tmp_path / "nowhere.db"

    no_key = verify_audit(f"sqlite:///{missing}")
    no_database = verify_audit(f"sqlite:///{missing}", signer)

    assert no_key[0] == 2 and "INTYG_AUDIT_VERIFY_KEYS_FILE" in no_key[2]
    assert no_database[0] == 2 and "cannot read the audit log" in no_database[2]
    assert not missing.exists(), "the verifier opens read-only: it never creates a database"


@pytest.mark.parametrize("problem", ["missing", "a folder", "no key in it", "not PEM"])
def test_verify_audit_with_keys_it_cannot_use_says_why_in_one_line(
    tmp_path: Path, verify_audit: Run, monkeypatch: pytest.MonkeyPatch, problem: str
) -> None:
    keys = tmp_path / "verify-keys.pem"
    if problem == "a folder":
        keys.mkdir()
    elif problem == "no key in it":
        keys.write_text("nothing to see\n")
    elif problem == "not PEM":
        keys.write_bytes(b"-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n")
    monkeypatch.setenv("INTYG_AUDIT_VERIFY_KEYS_FILE", str(keys))

    code, out, err = verify_audit(f"sqlite:///{tmp_path / 'nowhere.db'}")

    assert (code, out) == (2, "")
    assert str(keys) in err and err.count("\n") == 1 and "Traceback" not in err


def test_verify_audit_with_a_checkpoint_log_it_cannot_read_says_why_in_one_line(
    tmp_path: Path, signer: Signer, verify_audit: Run
) -> None:
    log = tmp_path / "no-such.log"

    code, out, err = verify_audit(
        f"sqlite:///{tmp_path / 'nowhere.db'}", signer, args=("--checkpoint-log", str(log))
    )

    assert (code, out) == (2, "")
    assert err == f"cannot read {log}: No such file or directory\n"


def test_verify_audit_on_a_database_without_the_chain_says_so_without_sql(
    empty_database_url: str, signer: Signer, verify_audit: Run
) -> None:
    database_url = empty_database_url
    migration.upgrade(database_url, revision="0003")

    code, out, err = verify_audit(database_url, signer)

    assert (code, out) == (2, "")
    assert err.startswith("cannot read the audit log: ") and "audit_head" in err
    assert "SELECT" not in err and err.count("\n") == 1


async def test_verify_audit_finds_a_cut_only_the_logged_checkpoints_remember(
    engine: AsyncEngine, database_url: str, signer: Signer, verify_audit: Run, tmp_path: Path
) -> None:
    await workload(SqlUnitOfWork(engine, KEYRING), 2)
    await seal(engine, signer, every=5)
    chain = await stored_chain(engine)
    log = tmp_path / "service.log"
    log.write_text(
        "not json\n"
        + "".join(
            json.dumps({"message": "audit checkpoint", "event": "audit_checkpoint", **c.as_logged()}) + "\n"
            for c in chain.checkpoints
        ),
        "utf-8",
    )
    await store_chain(
        engine,
        dataclasses.replace(
            chain,
            records=chain.records[:7],
            head=Head(7, chain.records[6]["hash"]),
            checkpoints=chain.checkpoints[:1],
        ),
    )

    database_alone = verify_audit(database_url, signer)
    with_log = verify_audit(database_url, signer, args=("--checkpoint-log", str(log)))

    assert database_alone[0] == 0
    assert with_log[:2] == (
        1,
        "audit log NOT intact: records after 7 are missing: the checkpoint at 10 names it\n",
    )


# --- tampering: hundreds of trials on real records -------------------------------------------------------

TRIALS_PER_KIND = 30  # x 8 kinds = 240 trials


async def test_every_tampering_of_a_real_chain_is_found_at_its_place(
    engine: AsyncEngine, database_url: str, signer: Signer, verify_audit: Run, tmp_path: Path
) -> None:
    """A few hundred records of real operations, checkpoints every 50. Every trial (seeded, so a
    failure can be replayed) must be found, at the place ``tests/tampering.py`` says; one of each kind
    is then written into the database and found by ``verify-audit`` with the same words."""
    await workload(SqlUnitOfWork(engine, KEYRING), 50)
    await seal(engine, signer, every=50)
    chain = await stored_chain(engine)
    assert len(chain.records) == 300 and chain.verdict(keys_of(signer)).intact
    rng = random.Random(20261122)

    trials = [tampering.TAMPER[kind](chain, rng) for kind in tampering.KINDS for _ in range(TRIALS_PER_KIND)]

    missed = []
    for trial in trials:
        problem = trial.chain.verdict(keys_of(signer)).problem
        if problem is None or problem.seq != trial.expected:
            missed.append((trial.description, trial.expected, problem))
    assert missed == [], f"{len(missed)} of {len(trials)} trials not found at their place"
    assert chain.verdict(keys_of(signer)).intact

    log = tmp_path / "service.log"
    log.write_text(
        "".join(json.dumps({"event": "audit_checkpoint", **c.as_logged()}) + "\n" for c in chain.logged),
        "utf-8",
    )
    sample = [next(t for t in trials if t.kind == kind and tampering.storable(t)) for kind in tampering.KINDS]
    for trial in sample:
        await store_chain(engine, trial.chain)
        expected = trial.chain.verdict(keys_of(signer)).problem
        assert expected is not None

        code, out, _ = verify_audit(database_url, signer, args=("--checkpoint-log", str(log)))

        assert (code, out) == (1, f"audit log NOT intact: {expected.message}\n"), trial.description
    await store_chain(engine, chain)
    assert (verify_audit(database_url, signer))[0] == 0


# --- speed ------------------------------------------------------------------------------------------------


def test_verify_audit_checks_a_hundred_thousand_records_in_seconds(
    tmp_path: Path, signer: Signer, verify_audit: Run
) -> None:
    url = audit_benchmark.build(tmp_path / "audit.db", 100_000, signer, every=1000)

    code, out, _ = verify_audit(url, signer)

    assert code == 0, out
    assert out.startswith("audit log intact: 100000 records, 100 checkpoints, verified in ")
    seconds = float(out.split("verified in ")[1].split(" s")[0])
    assert seconds < 60, out  # a generous sanity bound; the rate is measured by tests/audit_benchmark.py
    print(out)


@pytest.fixture(autouse=True)
def _no_stray_dev_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Apps built here keep the development audit key in the test's folder."""
    monkeypatch.setenv("INTYG_DEV_AUDIT_KEY_FILE", str(tmp_path / "dev-audit-key.pem"))
    yield
