"""The tamper-evident audit log through the real store, the app and ``intygstjanst verify-audit`` (issue 5).

Every operation's record, success or refusal, is chained in the transaction of its effect; concurrent
writers on PostgreSQL keep one gapless chain; checkpoints are signed in the transaction every so many
records, by the sealer when the app stops, and logged; the migration chains records stored before it;
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
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from service import cli, errors, operations
from service.app import create_app
from service.config import Settings
from service.model import Caller, CallerKind, Channel, PersonId
from service.store import audit_chain, audit_key, migration
from service.store.audit_chain import Checkpoint, Head, Signer
from service.store.repositories import seal_audit_chain
from service.store.tables import audit_checkpoints, audit_head, audit_records, certificates
from service.store.unit_of_work import SqlUnitOfWork, create_engine, sessions_for
from service.telemetry import json_formatter
from tests import audit_benchmark, tampering
from tests.fakes import a_certificate, document_of
from tests.integration import soap as s
from tests.integration.test_encryption_at_rest import sync_url
from tests.integration.test_store import STORE_FAILURE, refuse
from tests.keys import KEYRING, settings_keys
from tests.reference import with_check_digit
from tests.tampering import Chain

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
    return Caller(CallerKind.CITIZEN, Channel.REST, "1177-portal", person_id=patient.value)


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


def keys_of(*signers: Signer) -> dict[str, Any]:
    return {signer.key_id: signer.public_key for signer in signers}


async def stored_chain(engine: AsyncEngine) -> Chain:
    """Everything of the chain the database holds, read with Core (not through the code under test)."""
    async with engine.connect() as connection:
        records = [
            dict(row._mapping)
            for row in await connection.execute(select(audit_records).order_by(audit_records.c.seq))
        ]
        checkpoints = [
            Checkpoint(row.seq, row.hash, row.at, row.key_id, row.signature)
            for row in await connection.execute(select(audit_checkpoints).order_by(audit_checkpoints.c.seq))
        ]
        head = (await connection.execute(select(audit_head.c.seq, audit_head.c.hash))).one()
    return Chain(records, checkpoints, Head(head.seq, head.hash), logged=list(checkpoints))


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
        new = a_certificate(f"{prefix}-{index}", patient=patient, signed_at=SIGNED, registered_at=SIGNED)
        await operations.register_certificate(
            uow, new=operations.NewCertificate(new, document_of(new.id)), caller=CARE, now=now
        )
        await operations.get_certificate_for_care(uow, certificate_id=new.id, caller=CARE, now=now)
        await operations.list_certificates_for_care(uow, patient=patient, caller=CARE, now=now)
        if index % 2:
            await operations.withdraw_consent(uow, citizen=patient, caller=citizen(patient), now=now)
        else:
            await operations.give_consent(uow, citizen=patient, caller=citizen(patient), now=now)
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
    uow = SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=10)

    written = await workload(uow, 4)

    chain = await stored_chain(engine)
    assert [row["seq"] for row in chain.records] == list(range(1, written + 1))
    assert {row["outcome"] for row in chain.records} == {"ok", "info", "denied"}
    assert chain.head == Head(written, chain.records[-1]["hash"])
    assert [c.seq for c in chain.checkpoints] == [10, 20]
    assert audit_chain.verify(chain.records, chain.checkpoints, chain.head, keys_of(signer)) == (
        audit_chain.Verdict(records=written, checkpoints=2, problem=None)
    )


async def test_a_refused_write_leaves_neither_the_effect_nor_a_record_nor_a_moved_head(
    engine: AsyncEngine, signer: Signer
) -> None:
    uow = SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer)
    await workload(uow, 1, start=1)  # cert-1, whose citizen has withdrawn consent
    before = await stored_chain(engine)
    await refuse(engine, "BEFORE DELETE", certificates)

    # Without consent the removal deletes the certificate (rule 5); the store refuses the delete.
    with pytest.raises(STORE_FAILURE):
        await operations.remove_care_copy(
            uow, certificate_id="cert-1", care_giver_id=CARE_GIVER, caller=CARE, now=NOW
        )

    assert await stored_chain(engine) == before


@pytest.mark.parametrize(
    ("table", "when"),
    [(audit_records, "BEFORE INSERT"), (audit_head, "BEFORE UPDATE"), (audit_checkpoints, "BEFORE INSERT")],
)
async def test_a_chain_write_the_store_refuses_undoes_the_operation(
    engine: AsyncEngine, signer: Signer, table: sqlalchemy.Table, when: str
) -> None:
    # The effect and every part of its audit trail commit together or not at all (STYLE.md, Audit).
    uow = SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=1)
    await refuse(engine, when, table)
    new = a_certificate("cert-refused", signed_at=SIGNED, registered_at=SIGNED)

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
    uow = SqlUnitOfWork(sessions_for(engine), KEYRING)

    with pytest.raises(ValueError, match="without a zone"):
        await operations.list_certificates_for_care(
            uow, patient=person(1), caller=CARE, now=NOW.replace(tzinfo=dt.UTC)
        )

    assert (await stored_chain(engine)).records == []


def test_concurrent_operations_on_postgresql_keep_one_gapless_valid_chain(
    database_url: str, signer: Signer
) -> None:
    """Threads with their own engine and event loop, like service processes, write at once."""
    if database_url.startswith("sqlite"):
        pytest.skip("writers race on PostgreSQL only: SQLite serialises every writer at BEGIN IMMEDIATE")
    writers, rounds = 6, 5
    barrier = threading.Barrier(writers)
    failures: list[BaseException] = []

    def write(index: int) -> None:
        async def run() -> None:
            engine = create_engine(database_url, pool_size=1)
            try:
                async with engine.connect():
                    pass
                uow = SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=7)
                barrier.wait(timeout=30)
                await workload(uow, rounds, prefix=f"writer{index}", start=index * 100)
            finally:
                await engine.dispose()

        try:
            asyncio.run(run())
        except BaseException as exc:  # reported below, not lost in the thread
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,), daemon=True) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer hangs (a lock that is never released?)"
    assert failures == []

    async def check() -> None:
        engine = create_engine(database_url)
        try:
            chain = await stored_chain(engine)
        finally:
            await engine.dispose()
        written = writers * rounds * 6
        assert [row["seq"] for row in chain.records] == list(range(1, written + 1))
        assert [c.seq for c in chain.checkpoints] == list(range(7, written + 1, 7))
        verdict = audit_chain.verify(chain.records, chain.checkpoints, chain.head, keys_of(signer))
        assert verdict == audit_chain.Verdict(records=written, checkpoints=written // 7, problem=None)

    asyncio.run(check())


# --- checkpoints ---------------------------------------------------------------------------------------


async def test_a_committed_checkpoint_is_logged_with_places_and_hashes_only(
    engine: AsyncEngine, signer: Signer, caplog: pytest.LogCaptureFixture
) -> None:
    uow = SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=4)
    caplog.set_level(logging.INFO, logger="service.audit")

    await workload(uow, 1)

    [logged] = [json.loads(json_formatter().format(r)) for r in caplog.records if r.name == "service.audit"]
    [stored] = (await stored_chain(engine)).checkpoints
    assert logged["event"] == "audit_checkpoint"
    assert {k: logged[k] for k in ("seq", "at", "key_id", "hash_b64", "signature_b64")} == stored.as_logged()
    assert Checkpoint.from_logged(logged) == stored
    assert person(0).value not in json.dumps(logged)


async def test_the_sealer_signs_the_head_once_the_chain_grew_and_not_again(
    engine: AsyncEngine, signer: Signer
) -> None:
    sessions = sessions_for(engine)

    async def seal() -> Checkpoint | None:
        async with sessions() as session, session.begin():
            return await seal_audit_chain(session, signer, at=NOW)

    assert await seal() is None  # an empty chain has nothing to seal
    await workload(SqlUnitOfWork(sessions, KEYRING), 1)
    sealed = await seal()
    again = await seal()

    chain = await stored_chain(engine)
    assert sealed is not None and again is None
    assert (sealed.seq, sealed.hash) == (chain.head.seq, chain.head.hash)
    assert chain.checkpoints == [sealed]


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

    async def chain() -> Chain:
        engine = create_engine(database_url)
        try:
            return await stored_chain(engine)
        finally:
            await engine.dispose()

    stored = asyncio.run(chain())
    [checkpoint] = stored.checkpoints
    assert (
        (checkpoint.seq, checkpoint.hash)
        == (stored.head.seq, stored.head.hash)
        == (1, stored.records[0]["hash"])
    )
    assert checkpoint.key_id == audit_chain.key_id(key.public_key())
    assert [getattr(r, "seq", None) for r in caplog.records if r.name == "service.audit"] == [1]


def test_the_development_key_is_made_once_readable_by_its_owner_only(tmp_path: Path) -> None:
    settings = Settings(dev_audit_key_file=tmp_path / "intygstjanst-dev-audit-key.pem")

    first = audit_key.signer(settings)
    second = audit_key.signer(settings)

    assert first.key_id == second.key_id
    assert settings.dev_audit_key_file.stat().st_mode & 0o077 == 0
    assert audit_key.verify_keys(settings) == {first.key_id: first.public_key}
    # Production never trusts the development key.
    assert audit_key.verify_keys(settings.model_copy(update={"profile": "production"})) == {}
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
            await workload(SqlUnitOfWork(sessions_for(engine), KEYRING), 1)
            return await stored_chain(engine)
        finally:
            await engine.dispose()

    chain = asyncio.run(after())
    assert [(row["seq"], row["certificate_ids"]) for row in chain.records[:3]] == [
        (1, "cert-3"),
        (2, "cert-5"),
        (3, "cert-9"),
    ]
    assert chain.verdict({}) == audit_chain.Verdict(records=9, checkpoints=0, problem=None)


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
    await workload(SqlUnitOfWork(sessions_for(engine), KEYRING, signer=rotated, checkpoint_every=5), 1)
    await workload(
        SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=5), 1, start=1
    )

    code, out, _ = verify_audit(database_url, rotated, signer)

    assert code == 0
    assert out.startswith("audit log intact: 12 records, 2 checkpoints, verified in ")
    assert out.rstrip().endswith("records/s)") and out.count("\n") == 1


async def test_verify_audit_names_the_first_bad_record_and_never_its_content(
    engine: AsyncEngine, database_url: str, signer: Signer, verify_audit: Run
) -> None:
    await workload(SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=5), 2)
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
    uow = SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=5)
    await workload(uow, 2)
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
    await workload(SqlUnitOfWork(sessions_for(engine), KEYRING, signer=signer, checkpoint_every=50), 50)
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
