"""The databases as whoever obtains a copy of them sees them (issue 5, encryption at rest). No dump may
hold a personal identity number (PIN) in any common form, nor document text.

Two checks. Every SQLite file each test writes (under pytest's base temporary directory, with their
-wal and -journal files) is read byte for byte, free pages included, after that test, by the autouse
fixture of ``tests/conftest.py`` (``tests/leaks.py``). And one database per engine is populated here through the real app with the national service's peer requests and a
citizen's REST session, then dumped: the SQLite file (with its WAL, while the app still runs, and after
it has checkpointed) and ``pg_dump`` of the PostgreSQL database (the suite's own are dropped per test).
``pg_dump`` writes bytea as hex, so every needle is also looked for hex-encoded.

The store's encryption is in ``service/store/crypto.py``; its tests in
``tests/integration/test_encryption_at_rest.py``.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.store import migration
from tests.integration import soap as s
from tests.integration.rest import BERTIL, CECILIA, CitizenApi, portal_settings
from tests.integration.soap import SoapClient
from tests.leaks import DOCUMENT_TEXT, sqlite_files, valid_pins_in
from tests.postgres import PostgresUnavailable, find_bindir
from tests.reference import PERSONNUMMER, SAMORDNINGSNUMMER, need_shared, peer_requests, with_check_digit

# The operation each folder of peer requests is posted to.
OPERATIONS = {
    "getcertificate": ("GetCertificate", 2),
    "getcertificateinsuranceprocess": ("GetCertificate", 1),
    "listcertificates": ("ListCertificates", 1),
    "listcertificatesforcare": ("ListCertificatesForCare", 3),
    "listcertificatesforcitizen": ("ListCertificatesForCitizen", 4),
    "setcertificatestatus": ("SetCertificateStatus", 2),
    "setcertificatestatusinsuranceprocess": ("SetCertificateStatus", 1),
    "revokecertificate": ("RevokeCertificate", 2),
}
KINDS = ("default", "lisjp", "luaefs", "luaena", "luse")
PATIENTS = (SAMORDNINGSNUMMER, PERSONNUMMER, BERTIL, CECILIA, with_check_digit("19900202123"))


def forms(pid: str) -> list[str]:
    """A PIN as people and systems write it: 12 digits, with the separator, and the 10-digit forms."""
    return [pid, f"{pid[:8]}-{pid[8:]}", pid[2:], f"{pid[2:8]}-{pid[8:]}"]


def needles(pids: list[str]) -> dict[str, list[bytes]]:
    """What no dump may hold, each as text and as hex (``pg_dump``'s bytea)."""
    found: dict[str, list[bytes]] = {}
    for label in [*(f"PIN {form}" for pid in pids for form in forms(pid)), *DOCUMENT_TEXT]:
        text = label.removeprefix("PIN ").encode("utf-8")
        found[label] = [text, text.hex().encode("ascii")]
    return found


def assert_holds_none(dump: bytes, pids: list[str], what: str) -> None:
    held = [label for label, forms_ in needles(pids).items() if any(f in dump for f in forms_)]
    assert not held, f"{what} holds {held}"


# --- one database per engine, populated and dumped here -----------------------------------------------


def populate(client: TestClient) -> None:
    """Every peer request, and a citizen's session, through the real app."""
    soap = SoapClient(client)
    for kind, pid in zip(KINDS, PATIENTS, strict=True):
        reply = soap.post(
            s.path_of("RegisterCertificate", 3), s.register_envelope(str(uuid.uuid4()), pid, kind=kind)
        )
        assert reply.result()[0] == "OK"
    # The certificate the other peer requests name, and consent for the citizens' reads (legacy SOAP).
    assert (
        soap.post(s.path_of("RegisterCertificate", 3), s.peer_request("register/request_lisjp.stg")).result()[
            0
        ]
        == "OK"
    )
    for pid in (SAMORDNINGSNUMMER, PERSONNUMMER):
        assert soap.call("SetConsent", 1, s.set_consent(pid, True)).result()[0] == "OK"
    requests = sorted(
        (p for p in peer_requests() if p.id and p.id.split("/")[0] in OPERATIONS),
        key=lambda p: p.id.startswith("revokecertificate"),  # revoked last: the others read it first
    )
    for param in requests:
        operation, major = OPERATIONS[param.id.split("/")[0]]
        soap.post(s.path_of(operation, major), param.values[1])
    for pid in PATIENTS:
        care = soap.call("ListCertificatesForCare", 3, s.list_for_care(pid, care_giver="SE2321000016-39KJ"))
        for certificate_id in s.listed_ids(care):
            assert not soap.call("GetCertificate", 2, s.get_certificate(certificate_id, "HSVARD")).is_fault
    # A citizen's session: consent, lists, reads, sending, archiving, the access log, withdrawal.
    cecilia = CitizenApi(client, CECILIA)
    cecilia.consent()
    [mine] = cecilia.listed()
    assert cecilia.get(f"/certificates/{mine}").status_code == 200
    assert cecilia.get(f"/certificates/{mine}/document").status_code == 200
    assert cecilia.post(f"/certificates/{mine}/send", {"recipient": "FKASSA"}).status_code == 200
    assert cecilia.post(f"/certificates/{mine}/archive").status_code == 200
    assert cecilia.get("/access-log").status_code == 200
    bertil = CitizenApi(client, BERTIL)
    bertil.consent()
    [his] = bertil.listed()
    assert soap.call("RemoveCertificateForCare", 1, s.remove_for_care(his)).result()[0] == "OK"
    assert bertil.consent(False)["deleted"] == 1  # rule 6


def test_a_sqlite_database_populated_through_the_service_holds_no_pin_or_document_text(
    tmp_path: Path,
) -> None:
    need_shared()
    path = tmp_path / "dumped.db"
    url = f"sqlite+aiosqlite:///{path}"
    migration.upgrade(url)
    with TestClient(create_app(portal_settings(url, tmp_path / "service"))) as client:
        populate(client)
        files = sqlite_files(tmp_path)
        assert any(f.name.endswith("-wal") for f in files), "the WAL is part of what is read"
        running = b"".join(f.read_bytes() for f in files)
    closed = b"".join(f.read_bytes() for f in sqlite_files(tmp_path))

    for dump, what in ((running, "the SQLite files while serving"), (closed, "the SQLite file")):
        assert len(dump) > 10_000
        assert_holds_none(dump, list(PATIENTS), what)
        assert not valid_pins_in(dump), what


@pytest.mark.postgres
def test_pg_dump_of_a_database_populated_through_the_service_holds_no_pin_or_document_text(
    tmp_path: Path,
) -> None:
    need_shared()
    server = os.environ.get("INTYG_TEST_POSTGRES_URL")
    if not server:
        pytest.skip(
            "PostgreSQL: INTYG_TEST_POSTGRES_URL is not set (./dev test starts a server where one is installed)"
        )
    try:
        pg_dump = find_bindir() / "pg_dump"
    except PostgresUnavailable as exc:
        pytest.skip(f"no pg_dump: {exc}")
    import psycopg

    plain = server.replace("postgresql+psycopg://", "postgresql://", 1)
    name = f"intyg_dump_{uuid.uuid4().hex[:12]}"
    database = plain.rsplit("/", 1)[0] + f"/{name}"
    with psycopg.connect(plain, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
    try:
        url = database.replace("postgresql://", "postgresql+psycopg://", 1)
        migration.upgrade(url)
        with TestClient(create_app(portal_settings(url, tmp_path / "service"))) as client:
            populate(client)
        done = subprocess.run(
            [str(pg_dump), "--no-owner", f"--dbname={database}"],
            capture_output=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr.decode(errors="replace")
        dump = done.stdout
        assert b"COPY public.certificate_documents" in dump and len(dump) > 10_000
        assert_holds_none(dump, list(PATIENTS), "pg_dump")
        assert not valid_pins_in(dump), "pg_dump"
    finally:
        with psycopg.connect(plain, autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
