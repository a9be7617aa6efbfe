"""Encryption at rest (README "Data at rest") through the real store and the app, on SQLite and PostgreSQL.

What the store writes of a certificate is ciphertext under a data key of its own, wrapped under a
KEK; what it keeps of a personal identity number (PIN) for lookups is a keyed hash. A ciphertext or
wrapped key moved to another row is refused with a clean internal error, never another row's data;
a permanent deletion takes the ciphertext and its wrapped key in one transaction; a KEK rotation
re-wraps every data key while the service keeps reading; migration 0003 converts stored rows.

The primitives are tested in ``tests/unit/test_crypto.py``; the database files each test writes are
read after it (``tests/conftest.py``), and dumps in ``tests/integration/test_database_dump.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from fastapi.testclient import TestClient
from lxml import etree
from sqlalchemy import Column, Engine, Table, func, select, text, update

from service.app import create_app
from service.errors import KekMissing
from service.model import PersonId
from service.store import migration, rotation
from service.store.crypto import KeyRing, Purpose, WrappedKey, open_sealed
from service.store.tables import audit_records, certificates, consent_changes, consents, documents, metadata
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from tests.fakes import a_certificate
from tests.fakes import document_of as fake_document
from tests.integration import soap as s
from tests.integration.conftest import sync_url
from tests.integration.rest import ANNA, BERTIL, CitizenApi, assert_problem, portal_settings, register
from tests.integration.soap import SoapClient
from tests.keys import KEYRING, NEW_KEK, OLD_KEK, key_of, keyring, settings_keys
from tests.reference import parser

pytestmark = pytest.mark.shared

GIVER = "SE2321000016-39KJ"
# Text only the documents hold: the patient's name and address, and answers of the peer certificates.
LISJP_TEXT = ("Olivia", "Pgatan 2", "Klämskada skuldra")
LUSE_TEXT = ("Olivia", "Klockarevägen", "Arbetsplatsolycka", "Skada på multipla")


@contextlib.contextmanager
def service(
    database_url: str, folder: Path, ring: KeyRing = KEYRING
) -> Iterator[tuple[SoapClient, TestClient]]:
    """The app on the test database with these keys (several may serve one database, as during a
    rolling restart)."""
    settings = portal_settings(database_url, folder, **settings_keys(ring))
    with TestClient(create_app(settings)) as client:
        yield SoapClient(client), client


@pytest.fixture
def app(database_url: str, tmp_path: Path) -> Iterator[tuple[SoapClient, TestClient]]:
    with service(database_url, tmp_path) as running:
        yield running


def every_value(db: Engine) -> list[Any]:
    """Every value of every row of every table of the schema."""
    with db.connect() as connection:
        return [
            value
            for table in metadata.sorted_tables
            for row in connection.execute(select(table))
            for value in row
        ]


def holds(values: list[Any], needle: str) -> bool:
    data = needle.encode("utf-8")
    return any(
        (isinstance(v, str) and needle in v) or (isinstance(v, bytes | memoryview) and data in bytes(v))
        for v in values
    )


def one(db: Engine, column: Column[Any], where: Any) -> Any:
    with db.connect() as connection:
        return connection.execute(select(column).where(where)).scalar_one()


def count(db: Engine, table: Table, where: Any) -> int:
    with db.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(table).where(where)) or 0)


def read_for_care(soap: SoapClient, certificate_id: str) -> s.Reply:
    return soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD"))


# --- what is stored ---------------------------------------------------------------------------------


def test_the_store_holds_documents_as_ciphertext_and_identity_numbers_as_keyed_hashes(
    app: tuple[SoapClient, TestClient], db: Engine
) -> None:
    soap, client = app
    register(soap, "c-1", ANNA)
    anna = CitizenApi(client, ANNA)
    anna.consent()
    assert anna.get("/certificates/c-1").status_code == 200

    stored = one(db, documents.c.ciphertext, documents.c.certificate_id == "c-1")
    assert not any(t.encode() in stored for t in LISJP_TEXT)
    assert one(db, certificates.c.patient_key, certificates.c.id == "c-1") == key_of(ANNA)
    assert one(db, certificates.c.kek_id, certificates.c.id == "c-1") == OLD_KEK[0]
    # What is stored is the document sealed under the row's data key, which the KEK unwraps.
    wrapped = WrappedKey(OLD_KEK[0], one(db, certificates.c.wrapped_data_key, certificates.c.id == "c-1"))
    opened = open_sealed(KEYRING.unwrap("c-1", wrapped), "c-1", Purpose.DOCUMENT, stored)
    assert all(t.encode() in opened for t in LISJP_TEXT)
    assert one(db, consents.c.patient_key, consents.c.given) == key_of(ANNA)
    # Anna acted herself (consent, read): her audit records name her by the hash, not the number.
    with db.connect() as connection:
        actors = set(connection.scalars(select(audit_records.c.actor_person_id).distinct()))
    assert key_of(ANNA) in actors
    values = every_value(db)
    for secret in (ANNA, f"{ANNA[:8]}-{ANNA[8:]}", ANNA[2:], *LISJP_TEXT):
        assert not holds(values, secret), secret
    # ...and the service gives back exactly what was registered.
    document = anna.get("/certificates/c-1/document")
    assert document.status_code == 200 and all(t in document.text for t in LISJP_TEXT)


def test_lookups_by_identity_number_find_lists_consent_and_the_access_log(
    app: tuple[SoapClient, TestClient],
) -> None:
    soap, client = app
    register(soap, "c-1", ANNA)
    register(soap, "b-1", BERTIL)
    anna = CitizenApi(client, ANNA)
    anna.consent()

    assert anna.listed() == ["c-1"]
    assert anna.get("/consent").json()["given"] is True
    care = soap.call("ListCertificatesForCare", 3, s.list_for_care(ANNA, care_giver=GIVER))
    assert s.listed_ids(care) == ["c-1"]
    assert s.listed_ids(soap.call("ListCertificatesForCitizen", 4, s.list_for_citizen(ANNA))) == ["c-1"]
    assert soap.call("GetConsent", 1, s.get_consent(ANNA)).texts("consent-given") == ["true"]
    log = anna.get("/access-log").json()
    assert {e["action"] for e in log["entries"]} >= {"register", "give_consent", "list"}
    assert all("b-1" not in e["certificates"] for e in log["entries"])
    assert CitizenApi(client, BERTIL).get("/consent").json()["given"] is False


# --- a ciphertext moved to another row --------------------------------------------------------------


def swap(db: Engine, table: Table, column: Column[Any], key: Column[Any], first: str, second: str) -> None:
    with db.begin() as connection:
        a = connection.execute(select(column).where(key == first)).scalar_one()
        b = connection.execute(select(column).where(key == second)).scalar_one()
        connection.execute(update(table).where(key == first).values({column.name: b}))
        connection.execute(update(table).where(key == second).values({column.name: a}))


SWAPS = {
    "document": [(documents, documents.c.ciphertext, documents.c.certificate_id)],
    "wrapped data key": [(certificates, certificates.c.wrapped_data_key, certificates.c.id)],
    "patient": [(certificates, certificates.c.patient_ciphertext, certificates.c.id)],
    "all of them": [
        (documents, documents.c.ciphertext, documents.c.certificate_id),
        (certificates, certificates.c.wrapped_data_key, certificates.c.id),
        (certificates, certificates.c.patient_ciphertext, certificates.c.id),
    ],
}


@pytest.mark.parametrize("moved", sorted(SWAPS))
def test_a_ciphertext_moved_to_another_row_is_refused_cleanly_and_shows_nothing_of_that_row(
    moved: str, app: tuple[SoapClient, TestClient], db: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    soap, client = app
    register(soap, "c-1", ANNA)
    register(soap, "b-1", BERTIL, kind="luse")
    anna, bertil = CitizenApi(client, ANNA), CitizenApi(client, BERTIL)
    anna.consent()
    bertil.consent()
    for table, column, key in SWAPS[moved]:
        swap(db, table, column, key, "c-1", "b-1")

    with caplog.at_level(logging.ERROR):
        for certificate_id, citizen, others in (
            ("c-1", anna, (*LUSE_TEXT, BERTIL)),
            ("b-1", bertil, (ANNA,)),
        ):
            care = read_for_care(soap, certificate_id)
            assert (care.fault_code, care.fault_string) == ("soap:Server", "Internal error")
            legacy = soap.call(
                "GetCertificateForCare",
                1,
                f'<r:GetCertificateForCare xmlns:r="urn:riv:clinicalprocess:healthcond:certificate:'
                f'GetCertificateForCareResponder:1"><r:certificateId>{certificate_id}</r:certificateId>'
                "</r:GetCertificateForCare>",
            )
            assert legacy.result()[0] == "ERROR" and legacy.result()[2] == "TECHNICAL_ERROR"
            for path in (f"/certificates/{certificate_id}", f"/certificates/{certificate_id}/document"):
                answer = citizen.get(path)
                assert_problem(answer, 500, "internal_error")
                assert not any(o in answer.text for o in others)
            assert not any(o in care.fault_string for o in others)

    assert any("stored certificate unreadable" in r.getMessage() for r in caplog.records)
    # Each failed read is in the audit trail, as an error of the store.
    with db.connect() as connection:
        failed = connection.execute(
            select(audit_records.c.certificate_ids).where(
                audit_records.c.outcome == "error", audit_records.c.reason == "StoredDataUnreadable"
            )
        ).scalars()
        assert set(failed) == {"c-1", "b-1"}
    assert not any("c-1" in r.getMessage() or "b-1" in r.getMessage() for r in caplog.records)
    # Lists decrypt nothing: they go on working, each patient's own rows.
    assert anna.listed() == ["c-1"] and bertil.listed() == ["b-1"]


# --- permanent deletion -------------------------------------------------------------------------------


def gone(db: Engine, certificate_id: str) -> bool:
    """Neither the ciphertext nor the row holding its wrapped data key is left."""
    return (
        count(db, documents, documents.c.certificate_id == certificate_id) == 0
        and count(db, certificates, certificates.c.id == certificate_id) == 0
    )


def test_removing_the_care_copy_without_consent_deletes_the_ciphertext_and_its_wrapped_key(
    app: tuple[SoapClient, TestClient], db: Engine
) -> None:
    soap, _ = app
    register(soap, "c-1", ANNA)
    register(soap, "c-2", ANNA)

    assert soap.call("RemoveCertificateForCare", 1, s.remove_for_care("c-1")).result()[0] == "OK"  # rule 5

    assert gone(db, "c-1") and not gone(db, "c-2")
    assert not read_for_care(soap, "c-2").is_fault


def test_withdrawing_consent_deletes_the_ciphertext_and_wrapped_key_of_removed_care_copies(
    app: tuple[SoapClient, TestClient], db: Engine
) -> None:
    soap, client = app
    anna = CitizenApi(client, ANNA)
    anna.consent()
    register(soap, "c-1", ANNA)
    register(soap, "c-2", ANNA)
    assert soap.call("RemoveCertificateForCare", 1, s.remove_for_care("c-1")).result()[0] == "OK"
    assert not gone(db, "c-1")  # kept for the citizen (rule 5 with consent)

    assert anna.consent(False)["deleted"] == 1  # rule 6

    assert gone(db, "c-1") and not gone(db, "c-2")


def intygstjanst(
    database_url: str, folder: Path, *args: str, ring: KeyRing = KEYRING
) -> subprocess.CompletedProcess[str]:
    """The ``intygstjanst`` command as an operator runs it on the store, with ``ring``'s keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INTYG_")}
    keys = {f"INTYG_{k.upper()}": v.get_secret_value() for k, v in settings_keys(ring).items()}
    return subprocess.run(
        [str(Path(sys.executable).parent / "intygstjanst"), *args],
        cwd=folder,
        env={**env, **keys, "INTYG_DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def erase_care_giver(database_url: str, folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return intygstjanst(database_url, folder, "erase-care-giver", *args)


def test_erasing_a_care_giver_deletes_the_ciphertext_and_wrapped_key_of_each_copy_no_consent_holds(
    app: tuple[SoapClient, TestClient], db: Engine, database_url: str, tmp_path: Path
) -> None:
    soap, client = app
    anna = CitizenApi(client, ANNA)
    anna.consent()
    register(soap, "c-anna", ANNA)
    register(soap, "c-bertil", BERTIL)
    register(soap, "c-other", BERTIL, care_giver="SE2321000016-OTHER")
    operator = ("SE2321000016-39KJ", "--operator", "SE2321000016-OPS1")

    counted = erase_care_giver(database_url, tmp_path, *operator)
    assert (counted.returncode, counted.stdout) == (
        0,
        "2 care copies of SE2321000016-39KJ would be removed; nothing changed (run with --yes)\n",
    )
    assert not gone(db, "c-anna") and not gone(db, "c-bertil")

    done = erase_care_giver(database_url, tmp_path, *operator, "--without-export", "--yes")

    assert done.returncode == 0, done.stderr
    assert done.stdout == (
        "removed 2 care copies of SE2321000016-39KJ: 1 kept for citizens with consent, 1 deleted permanently\n"
    )
    assert gone(db, "c-bertil")  # no consent held it (rule 5): ciphertext and wrapped key went with it
    assert not gone(db, "c-anna") and not gone(db, "c-other")
    assert read_for_care(soap, "c-anna").is_fault and not read_for_care(soap, "c-other").is_fault
    assert anna.get("/certificates/c-anna").status_code == 200  # hers to keep, with consent
    # Anna sees in her access log that an operator removed the care copy.
    [entry] = [e for e in anna.get("/access-log").json()["entries"] if e["action"] == "remove_care_copy"]
    assert (entry["accessed_by"], entry["certificates"], entry["channel"]) == ("operator", ["c-anna"], "cli")
    again = erase_care_giver(database_url, tmp_path, *operator, "--without-export", "--yes")
    assert again.stdout.startswith("removed 0 care copies")


@pytest.mark.parametrize("ids", [("", "--operator", "ops"), ("SE1", "--operator", "two words")])
def test_erasing_with_an_id_that_is_no_id_changes_nothing(
    app: tuple[SoapClient, TestClient], db: Engine, database_url: str, tmp_path: Path, ids: tuple[str, ...]
) -> None:
    register(app[0], "c-1", ANNA)

    refused = erase_care_giver(database_url, tmp_path, *ids, "--without-export", "--yes")

    assert refused.returncode == 2 and "printable" in refused.stderr and "Traceback" not in refused.stderr
    assert not gone(db, "c-1")


def test_sqlite_overwrites_a_permanently_deleted_certificate_in_the_file(tmp_path: Path) -> None:
    # PRAGMA secure_delete (store/unit_of_work.py): rules 5 and 6 erase for good, not only unlink.
    path = tmp_path / "intyg.db"
    url = f"sqlite+aiosqlite:///{path}"
    migration.upgrade(url)

    async def add() -> tuple[bytes, bytes]:
        engine = create_engine(url)
        try:
            uow = SqlUnitOfWork(engine, KEYRING)
            async with uow:
                for certificate_id in ("c-1", "c-2"):
                    await uow.certificates.add(
                        a_certificate(certificate_id), fake_document(certificate_id) * 20
                    )
                await uow.commit()
            async with engine.connect() as connection:
                where = documents.c.certificate_id == "c-1"
                sealed = (await connection.execute(select(documents.c.ciphertext).where(where))).scalar_one()
                where = certificates.c.id == "c-1"
                wrapped = (
                    await connection.execute(select(certificates.c.wrapped_data_key).where(where))
                ).scalar_one()
            return sealed, wrapped
        finally:
            await dispose(engine)  # checkpoints the WAL into the file

    async def delete() -> None:
        engine = create_engine(url)
        try:
            uow = SqlUnitOfWork(engine, KEYRING)
            async with uow:
                await uow.certificates.delete(["c-1"])
                await uow.commit()
        finally:
            await dispose(engine)

    sealed, wrapped = asyncio.run(add())
    assert sealed[100:164] in path.read_bytes() and wrapped in path.read_bytes()

    asyncio.run(delete())

    assert not path.with_name("intyg.db-wal").exists()
    content = path.read_bytes()
    assert sealed[100:164] not in content and wrapped not in content


# --- rotation ----------------------------------------------------------------------------------------


def all_readable(soap: SoapClient, client: TestClient, ids: list[str]) -> None:
    """Every certificate reads in full, by care (SOAP) and by its citizen (REST)."""
    for certificate_id in ids:
        reply = read_for_care(soap, certificate_id)
        assert not reply.is_fault, (certificate_id, reply.fault_string)
        citizen = CitizenApi(client, ANNA if certificate_id.startswith("a") else BERTIL)
        document = citizen.get(f"/certificates/{certificate_id}/document")
        assert document.status_code == 200 and "Olivia" in document.text, document.text


def kek_ids(db: Engine) -> dict[str, int]:
    with db.connect() as connection:
        rows = connection.execute(select(certificates.c.kek_id, func.count()).group_by(certificates.c.kek_id))
        return {kek_id: int(n) for kek_id, n in rows}


def registered_under_the_old_kek(database_url: str, folder: Path, n: int) -> list[str]:
    ids = [f"{'a' if i % 2 else 'b'}-{i:02d}" for i in range(n)]
    with service(database_url, folder, keyring(OLD_KEK)) as (soap, client):
        for certificate_id in ids:
            register(soap, certificate_id, ANNA if certificate_id.startswith("a") else BERTIL)
        CitizenApi(client, ANNA).consent()
        CitizenApi(client, BERTIL).consent()
    return ids


def test_every_read_succeeds_between_any_two_batches_of_a_rotation_and_after_it(
    database_url: str, tmp_path: Path, db: Engine
) -> None:
    ids = registered_under_the_old_kek(database_url, tmp_path / "old", 7)
    rolled = keyring(NEW_KEK, OLD_KEK)  # the new KEK current, the old one kept to read with

    async def batch(after: str) -> tuple[int, str] | None:
        engine = create_engine(database_url)
        try:
            return await rotation.rewrap_batch(engine, rolled, after=after, limit=3)
        finally:
            await dispose(engine)

    with service(database_url, tmp_path / "rolled", rolled) as (soap, client):
        all_readable(soap, client, ids)
        register(soap, "a-new", ANNA)  # a rolled instance writes under the new KEK at once
        assert kek_ids(db) == {OLD_KEK[0]: 7, NEW_KEK[0]: 1}
        after, batches = "", 0
        while (done := asyncio.run(batch(after))) is not None:
            after, batches = done[1], batches + 1
            all_readable(soap, client, [*ids, "a-new"])
        assert batches == 3
    assert kek_ids(db) == {NEW_KEK[0]: 8}

    with service(database_url, tmp_path / "new", keyring(NEW_KEK)) as (soap, client):
        all_readable(soap, client, [*ids, "a-new"])


def test_reads_through_the_service_all_succeed_while_rotate_kek_runs(
    database_url: str, tmp_path: Path, db: Engine
) -> None:
    ids = registered_under_the_old_kek(database_url, tmp_path / "old", 24)
    rolled = keyring(NEW_KEK, OLD_KEK)
    failures: list[str] = []
    during = []
    started, rotating, finished = threading.Event(), threading.Event(), threading.Event()
    read_during = threading.Event()

    with service(database_url, tmp_path / "rolled", rolled) as (soap, _):

        def reader() -> None:
            while not finished.is_set():
                for certificate_id in ids:
                    began = rotating.is_set()
                    reply = read_for_care(soap, certificate_id)
                    if reply.is_fault:
                        failures.append(reply.fault_string)
                    if began and rotating.is_set():
                        during.append(certificate_id)
                        read_during.set()
                    started.set()

        async def rotate() -> rotation.Rotation:
            engine = create_engine(database_url)
            transactions = itertools.count(1)

            @sqlalchemy.event.listens_for(engine.sync_engine, "checkout")
            def _let_a_read_in(*_: object) -> None:
                # Between two batches (before the third transaction takes a connection, so holding
                # no lock), until a read has run wholly within the rotation: on two busy cores the
                # rotation could otherwise end before the reader's thread got a turn.
                if next(transactions) == 3:
                    read_during.wait(30)

            try:
                return await rotation.rotate(engine, rolled, batch_size=1)
            finally:
                await dispose(engine)

        thread = threading.Thread(target=reader)
        thread.start()
        try:
            assert started.wait(30)
            rotating.set()
            done = asyncio.run(rotate())
            rotating.clear()
        finally:
            finished.set()
            thread.join(60)

    assert failures == []
    assert during, "no read ran wholly within the rotation"
    assert (done.rewrapped, done.remaining) == (24, 0)
    assert kek_ids(db) == {NEW_KEK[0]: 24}


def test_a_key_ring_without_the_kek_of_a_row_fails_clearly(
    database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ids = registered_under_the_old_kek(database_url, tmp_path / "old", 2)

    with (
        service(database_url, tmp_path / "new", keyring(NEW_KEK)) as (soap, client),
        caplog.at_level(logging.ERROR),
    ):
        reply = read_for_care(soap, ids[0])
        assert (reply.fault_code, reply.fault_string) == ("soap:Server", "Internal error")
        assert_problem(CitizenApi(client, BERTIL).get(f"/certificates/{ids[0]}"), 500, "internal_error")
    assert any(OLD_KEK[0] in r.getMessage() and "not configured" in r.getMessage() for r in caplog.records)

    async def rotate() -> None:
        engine = create_engine(database_url)
        try:
            await rotation.rotate(engine, keyring(NEW_KEK))
        finally:
            await dispose(engine)

    with pytest.raises(KekMissing, match=rf"2 under '{OLD_KEK[0]}'"):
        asyncio.run(rotate())


def test_the_rotate_kek_command_reports_what_it_rewrapped_and_what_remains(
    tmp_path: Path, db: Engine, database_url: str
) -> None:
    registered_under_the_old_kek(database_url, tmp_path / "old", 5)

    def run(ring: KeyRing) -> subprocess.CompletedProcess[str]:
        return intygstjanst(database_url, tmp_path, "rotate-kek", "--batch-size", "2", ring=ring)

    refused = run(keyring(NEW_KEK))
    assert refused.returncode == 2 and f"5 under '{OLD_KEK[0]}'" in refused.stderr
    assert kek_ids(db) == {OLD_KEK[0]: 5}

    done = run(keyring(NEW_KEK, OLD_KEK))
    assert done.returncode == 0, done.stderr
    assert f"re-wrapped 5 data keys under the current KEK '{NEW_KEK[0]}'; 0 remain" in done.stdout
    assert kek_ids(db) == {NEW_KEK[0]: 5}

    again = run(keyring(NEW_KEK, OLD_KEK))
    assert "re-wrapped 0 data keys" in again.stdout and again.returncode == 0


# --- migration 0003 ----------------------------------------------------------------------------------


def rows_before_encryption(url: str) -> None:
    """A database at 0002 with what the service stored then: PINs and documents in the clear."""
    migration.upgrade(url, revision="0002")
    engine = sqlalchemy.create_engine(sync_url(url))
    envelope = etree.fromstring(s.register_envelope("m-1", ANNA, kind="luse").encode(), parser())
    [intyg] = [e for e in envelope.iter() if isinstance(e.tag, str) and etree.QName(e).localname == "intyg"]
    # The bare document, as RegisterCertificate stored it before documents had a layout: GetCertificate
    # 2 answers it by building the tree (messages.intyg_envelope).
    document = etree.tostring(intyg, encoding="UTF-8")
    with engine.begin() as connection:
        connection.execute(
            text(
                "INSERT INTO certificates (id, id_root, type_code, type_code_system, type_display_name,"
                " type_version, patient_id, signed_at, issuer_id, issuer_name, care_unit_id, care_unit_name,"
                " workplace_code, care_giver_id, care_giver_name, registered_at, care_available,"
                " citizen_available, revoked) VALUES (:id, 'root', 'LUSE', 'kv', 'Läkarutlåtande', '1.0',"
                " :patient, '2024-05-02 10:00:00', 'SE2321000016-6G5R', 'Karl Karlsson', 'SE2321000016-H489',"
                " 'Enheten', '1234', :giver, 'Vårdgivaren', '2024-05-02 10:01:00', :true, :true, :false)"
            ),
            [
                {"id": "m-1", "patient": ANNA, "giver": GIVER, "true": True, "false": False},
                {"id": "m-2", "patient": BERTIL, "giver": GIVER, "true": True, "false": False},
            ],
        )
        connection.execute(
            text("INSERT INTO certificate_documents (certificate_id, content) VALUES (:id, :content)"),
            [
                {"id": "m-1", "content": document},
                {"id": "m-2", "content": document.replace(ANNA.encode(), BERTIL.encode())},
            ],
        )
        connection.execute(
            text(
                "INSERT INTO status_events (certificate_id, code, party, at) VALUES (:id, 'RECEIV', 'HSVARD', :at)"
            ),
            [{"id": "m-1", "at": "2024-05-02 10:01:00"}, {"id": "m-2", "at": "2024-05-02 10:01:00"}],
        )
        connection.execute(
            text(
                "INSERT INTO consents (patient_id, given, changed_at) VALUES (:p, :given, '2024-05-03 08:00:00')"
            ),
            {"p": ANNA, "given": True},
        )
        connection.execute(
            text(
                "INSERT INTO consent_changes (patient_id, given, at, actor_kind, actor_id, channel)"
                " VALUES (:p, :given, '2024-05-03 08:00:00', 'citizen', 'citizen-portal', 'rest')"
            ),
            {"p": ANNA, "given": True},
        )
        connection.execute(
            text(
                "INSERT INTO audit_records (at, action, outcome, actor_kind, actor_id, actor_person_id, channel,"
                " patient_id, certificate_ids, care_unit_id, care_giver_id, detail) VALUES"
                " (:at, :action, 'ok', :kind, :actor, :person, :channel, :p, :ids, NULL, NULL, '')"
            ),
            [
                {
                    "at": "2024-05-02 10:01:00",
                    "action": "register",
                    "kind": "care_system",
                    "actor": "SE1",
                    "person": "SE2321000016-6G5R",
                    "channel": "soap",
                    "p": ANNA,
                    "ids": "m-1",
                },
                {
                    "at": "2024-05-03 08:00:00",
                    "action": "give_consent",
                    "kind": "citizen",
                    "actor": "citizen-portal",
                    "person": ANNA,
                    "channel": "rest",
                    "p": ANNA,
                    "ids": "",
                },
                {
                    "at": "2024-05-03 09:00:00",
                    "action": "read",
                    "kind": "citizen",
                    "actor": "legacy",
                    "person": f"{ANNA[:8]}-{ANNA[8:]}",
                    "channel": "soap",
                    "p": ANNA,
                    "ids": "m-1",
                },
            ],
        )
    engine.dispose()


def test_migrating_stored_rows_without_the_keys_fails_clearly_and_changes_nothing(
    empty_database_url: str,
) -> None:
    rows_before_encryption(empty_database_url)

    with pytest.raises(RuntimeError, match="INTYG_KEYS_FILE") as refused:
        migration.upgrade(empty_database_url)

    assert ANNA not in str(refused.value)
    engine = sqlalchemy.create_engine(sync_url(empty_database_url))
    try:
        with engine.connect() as connection:
            assert connection.scalar(text("SELECT version_num FROM alembic_version")) == "0002"
            assert connection.scalar(text("SELECT patient_id FROM certificates WHERE id = 'm-1'")) == ANNA
    finally:
        engine.dispose()


def test_migration_0003_encrypts_stored_certificates_and_hashes_every_stored_number(
    empty_database_url: str, tmp_path: Path
) -> None:
    url = empty_database_url
    rows_before_encryption(url)

    migration.upgrade(url, keyring=KEYRING)

    engine = sqlalchemy.create_engine(sync_url(url))
    try:
        values = every_value(engine)
        with engine.connect() as connection:
            actors = set(connection.scalars(select(audit_records.c.actor_person_id)))
            changes = list(connection.scalars(select(consent_changes.c.patient_key)))
    finally:
        engine.dispose()
    for secret in (ANNA, BERTIL, ANNA[2:], f"{ANNA[:8]}-{ANNA[8:]}", *LUSE_TEXT):
        assert not holds(values, secret), secret
    assert actors == {
        "SE2321000016-6G5R",
        key_of(ANNA),
    }  # HSA ids stay; the citizen's number in any form is hashed
    assert changes == [key_of(ANNA)]
    if url.startswith("sqlite"):  # nothing left in the file's free pages either (secure_delete)
        raw = Path(url.split("///", 1)[1]).read_bytes()
        assert ANNA.encode() not in raw and b"Arbetsplatsolycka" not in raw

    with service(url, tmp_path) as (soap, client):
        anna = CitizenApi(client, ANNA)
        assert anna.listed() == ["m-1"]
        document = anna.get("/certificates/m-1/document")
        assert document.status_code == 200 and "Arbetsplatsolycka" in document.text
        assert not read_for_care(soap, "m-2").is_fault
        assert s.listed_ids(
            soap.call("ListCertificatesForCare", 3, s.list_for_care(BERTIL, care_giver=GIVER))
        ) == ["m-2"]
        entries = anna.get("/access-log").json()["entries"]
        assert [e["action"] for e in entries][-3:] == ["read", "give_consent", "register"]
        assert PersonId.parse(ANNA).value not in str(entries)
