"""Nothing waits without bound (README "Operating", When the database does not answer): the real service
(``intygstjanst serve``) on a PostgreSQL cluster of this module's own, which the tests lock rows of, freeze
(SIGSTOP to the postmaster and every backend: it answers nothing, not even a timeout) and thaw; and the
embedded SQLite database, whose write lock another process holds.

- A row lock held by another transaction: a change that needs it fails at the lock timeout (0.5 s
  here), well before the deadline, with the contract's error; once released it succeeds.
- Frozen: SOAP with a result answers ERROR TECHNICAL_ERROR, SOAP without one a soap:Server fault, REST
  503 problem+json ``store_unavailable`` with Retry-After, each within the deadline (2.5 s here) and a
  margin; ``/readyz`` answers 503 within its own (1 s).
- Thawed: the same process answers again, without a restart (the pool replaced the connections it
  gave up on). A connection cut off in the middle of a transaction is closed, never pooled again.
- SQLite: a request waits for another process's write lock no longer than the lock (busy) timeout.

No answer and no log line holds a stack trace, SQL or the identity number. The mechanism on its own:
``tests/unit/test_timeout.py``; the error tables: ``tests/unit/test_error_maps.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from service import errors
from service.app import create_app
from service.config import Settings
from service.store import migration
from service.store.timeout import GRACE
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose, request_pool
from tests import leaks, postgres, server
from tests.integration import soap as s
from tests.integration.soap import Reply, SoapClient
from tests.keys import KEYRING, key_of, settings_keys
from tests.reference import need_shared

PATIENT = "191212121212"
LOCK, DEADLINE, READY_DEADLINE = 0.5, 2.5, 1.0
# A loaded two-core machine answers late by up to this much.
MARGIN = 1.5
TIMEOUTS = {
    "INTYG_DB_LOCK_TIMEOUT_SECONDS": str(LOCK),
    "INTYG_DB_STATEMENT_TIMEOUT_SECONDS": "1",
    "INTYG_DB_IDLE_IN_TRANSACTION_TIMEOUT_SECONDS": "3",
    "INTYG_DB_CONNECT_TIMEOUT_SECONDS": "2",
    "INTYG_DB_POOL_TIMEOUT_SECONDS": "1",
    "INTYG_DB_DEADLINE_SECONDS": str(DEADLINE),
    "INTYG_DB_READY_DEADLINE_SECONDS": str(READY_DEADLINE),
}


@dataclass
class Service:
    url: str  # the database's
    data: Path  # the cluster's data directory
    log: Path
    soap: SoapClient
    rest: httpx.Client  # as the citizen PATIENT; also the probes

    def log_lines(self) -> list[str]:
        return self.log.read_text(encoding="utf-8", errors="replace").splitlines()


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Path]]:
    """A cluster of this module's own (its URL and data directory): never the suite's shared one,
    since this one is frozen."""
    try:
        postgres.find_bindir()
    except postgres.PostgresUnavailable as exc:
        pytest.skip(f"PostgreSQL: {exc}")
    url, base = postgres.start()
    try:
        migration.upgrade(url)
        yield url, base / "data"
    finally:
        postgres.stop(base)


@pytest.fixture(scope="module")
def service(cluster: tuple[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    need_shared()  # the certificates registered are the national service's own test requests
    url, data = cluster
    workdir = tmp_path_factory.mktemp("bounded")
    log = workdir / "service.log"
    try:
        keys = {name: value.get_secret_value() for name, value in settings_keys().items()}
        env = {"INTYG_DATABASE_URL": url, "INTYG_KEK": keys["kek"], "INTYG_LOOKUP_KEY": keys["lookup_key"]}
        with (
            log.open("wb") as output,
            server.running(workdir, env={**env, **TIMEOUTS}, log=output) as (at, _),
        ):
            token = subprocess.run(
                [str(server.INTYGSTJANST), "dev-token", PATIENT],
                cwd=workdir,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
            bearer = {"Authorization": f"Bearer {token}"}
            with (
                httpx.Client(base_url=at, timeout=30) as soap,
                httpx.Client(base_url=at, timeout=30, headers=bearer) as rest,
            ):
                yield Service(url, data, log, SoapClient(soap), rest)
    finally:
        lines = log.read_text(encoding="utf-8", errors="replace").splitlines() if log.exists() else []
    # The service's own log, checked as tests/conftest.py checks what each test logs in process.
    leaked = leaks.in_log(lines)
    assert not leaked, "the service leaked in its log:\n" + "\n".join(leaked)


def _register(service: Service, certificate_id: str) -> None:
    reply = service.soap.post(
        s.path_of("RegisterCertificate", 3), s.register_envelope(certificate_id, PATIENT)
    )
    assert reply.result()[0] == "OK"


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    began = time.monotonic()
    answer = call()
    return time.monotonic() - began, answer


def _technical_error(reply: Reply) -> bool:
    code, text, error_id = reply.result()
    return (code, error_id) == ("ERROR", "TECHNICAL_ERROR") and "select" not in (text or "").lower()


def _store_unavailable(response: httpx.Response) -> bool:
    return (
        response.status_code == 503
        and response.headers["content-type"] == "application/problem+json"
        and response.json()["code"] == "store_unavailable"
        and int(response.headers["retry-after"]) > 0
    )


def _assert_logged_nothing_private(service: Service) -> None:
    lines = service.log_lines()
    assert any("store unavailable" in line for line in lines), "the operator is told why"
    for line in lines:
        assert "Traceback" not in line and "SELECT" not in line.upper(), line
        assert PATIENT not in line and PATIENT[2:] not in line, line


# --- a lock held by another transaction ------------------------------------------------------------


@contextlib.contextmanager
def _held(service: Service, sql: str, *params: str) -> Iterator[None]:
    """The rows ``sql`` selects FOR UPDATE, locked by another transaction until the block ends."""
    with psycopg.connect(service.url.replace("postgresql+psycopg://", "postgresql://")) as connection:
        assert connection.execute(sql, params).fetchone() is not None, "the row to lock exists"
        yield
        connection.rollback()


@pytest.mark.postgres
def test_a_change_that_waits_for_a_held_row_lock_fails_at_the_lock_timeout(service: Service) -> None:
    certificate = "bounded-locked-1"
    _register(service, certificate)
    soap = service.soap
    assert soap.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"
    change = s.set_status(certificate, "FKASSA", "SENTTO")

    with _held(service, "SELECT 1 FROM certificates WHERE id = %s FOR UPDATE", certificate):
        took, reply = _timed(lambda: soap.call("SetCertificateStatus", 2, change))
        assert _technical_error(reply)
        assert took < LOCK + MARGIN < DEADLINE, f"{took:.2f} s: the lock timeout answered, not the deadline"

        took, response = _timed(
            lambda: service.rest.post(f"/api/citizen/v1/certificates/{certificate}/archive")
        )
        assert _store_unavailable(response)
        assert took < LOCK + MARGIN

    with _held(service, "SELECT 1 FROM consents WHERE patient_key = %s FOR UPDATE", key_of(PATIENT)):
        took, reply = _timed(lambda: soap.call("SetConsent", 1, s.set_consent(PATIENT, False)))
        code, _, error_id = reply.result()
        assert (code, error_id) == ("ERROR", "TECHNICAL_ERROR")
        assert took < LOCK + MARGIN

    # Released: the same change goes through (its connection was kept: the server ended the wait).
    assert soap.call("SetCertificateStatus", 2, change).result()[0] == "OK"
    _assert_logged_nothing_private(service)


# --- a database that answers nothing ---------------------------------------------------------------


def _cluster_processes(data: Path) -> list[int]:
    """The postmaster (first line of postmaster.pid) and its children: every backend and worker."""
    postmaster = int((data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # pid (comm) state ppid ...: the command may hold spaces and parentheses.
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


@contextlib.contextmanager
def _frozen(data: Path) -> Iterator[None]:
    processes = _cluster_processes(data)
    try:
        for pid in processes:
            os.kill(pid, signal.SIGSTOP)
        yield
    finally:
        for pid in processes:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


def _wait_until(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"{what} within {seconds} s"
        time.sleep(0.2)


@pytest.mark.postgres
def test_a_frozen_database_gets_the_contracts_error_in_time_and_the_service_recovers(
    service: Service,
) -> None:
    certificate = "bounded-frozen-1"
    _register(service, certificate)
    assert service.soap.call("SetConsent", 1, s.set_consent(PATIENT, True)).result()[0] == "OK"
    get = s.get_certificate(certificate, "HSVARD")
    calls: dict[str, Callable[[], Any]] = {
        "get": lambda: service.soap.call("GetCertificate", 2, get),
        "register": lambda: service.soap.post(
            s.path_of("RegisterCertificate", 3), s.register_envelope("bounded-frozen-2", PATIENT)
        ),
        "rest": lambda: service.rest.get("/api/citizen/v1/certificates"),
        "ready": lambda: service.rest.get("/readyz"),
    }

    with _frozen(service.data), ThreadPoolExecutor(len(calls)) as pool:
        answers = dict(zip(calls, pool.map(_timed, calls.values()), strict=True))

    took, reply = answers["get"]  # GetCertificate 2 has no result: a fault
    assert reply.is_fault and reply.fault_code == "soap:Server", reply.fault_string
    assert took < DEADLINE + GRACE + MARGIN, f"GetCertificate took {took:.2f} s"
    took, reply = answers["register"]
    assert _technical_error(reply)
    assert took < DEADLINE + GRACE + MARGIN, f"RegisterCertificate took {took:.2f} s"
    took, response = answers["rest"]
    assert _store_unavailable(response), response.text
    assert took < DEADLINE + GRACE + MARGIN, f"the REST list took {took:.2f} s"
    took, response = answers["ready"]
    assert response.status_code == 503 and response.json()["checks"]["database"] is False
    assert took < READY_DEADLINE + GRACE + MARGIN, f"/readyz took {took:.2f} s"

    # Thawed: the same process serves again; the connections given up on were not returned to the pool.
    _wait_until(lambda: calls["ready"]().status_code == 200, 15, "ready again")
    _wait_until(lambda: not calls["get"]().is_fault, 15, "GetCertificate answers again")
    assert calls["rest"]().status_code == 200
    assert calls["register"]().result()[0] == "OK"
    _assert_logged_nothing_private(service)


@pytest.mark.postgres
def test_after_a_database_restart_at_most_one_request_fails_and_the_service_serves_again(
    service: Service,
) -> None:
    """The requests' pool does not ping a connection before each use (a round trip on every request):
    a connection the restart ended fails its first statement instead, the pool is drained, and the
    requests after it connect anew. The engine that answers /readyz pings, so the first probe after the
    restart is ready already. No restart of the service is needed."""
    certificate = "bounded-restart-1"
    _register(service, certificate)
    get = s.get_certificate(certificate, "HSVARD")
    assert not service.soap.call("GetCertificate", 2, get).is_fault  # pooled connections to end

    postgres.restart(service.data)
    replies = [service.soap.call("GetCertificate", 2, get) for _ in range(5)]

    failed = [reply for reply in replies if reply.is_fault]
    assert len(failed) <= 1, [reply.fault_string for reply in failed]
    assert all(reply.fault_code == "soap:Server" for reply in failed)
    assert not replies[-1].is_fault
    assert service.rest.get("/readyz").status_code == 200


@pytest.mark.postgres
async def test_a_connection_cut_off_in_the_middle_of_a_transaction_is_closed_not_pooled(
    cluster: tuple[str, Path],
) -> None:
    url, data = cluster
    engine = create_engine(url, pool_size=1)
    pool = request_pool(engine)
    assert pool is not None
    uow = SqlUnitOfWork(engine, KEYRING, deadline=1.0)

    async def backend() -> int:
        pid = (await uow.certificates.connection.execute(text("SELECT pg_backend_pid()"))).scalar()
        assert pid is not None
        return int(pid)

    try:
        began = time.monotonic()
        with pytest.raises(errors.StoreUnavailable):
            async with uow:
                cut_off = await backend()  # the transaction has begun
                with _frozen(data):
                    await uow.certificates.get("bounded-none")
        assert time.monotonic() - began < 1.0 + GRACE + MARGIN
        assert pool.get_stats().get("returns_bad") == 1, "the connection is given up on"

        # Thawed: a new connection serves the next unit of work, and the one cut off is gone from
        # the server too (its backend saw the socket closed, and its transaction went with it).
        async with uow:
            serving = await backend()
            assert await uow.certificates.get("bounded-none") is None
        assert serving != cut_off

        async def backends_alive() -> list[int]:
            async with engine.connect() as connection:
                found = await connection.exec_driver_sql("SELECT pid FROM pg_stat_activity")
                return list(found.scalars())

        deadline = time.monotonic() + 10
        while cut_off in await backends_alive():
            assert time.monotonic() < deadline, "the backend cut off is gone within 10 s"
            await asyncio.sleep(0.1)
    finally:
        await dispose(engine)


# --- SQLite: another process holds the write lock ---------------------------------------------------


def test_a_request_waits_for_sqlites_write_lock_no_longer_than_the_lock_timeout(tmp_path: Path) -> None:
    path = tmp_path / "intyg.db"
    migration.upgrade(f"sqlite+aiosqlite:///{path}")
    settings = Settings(
        database_url=f"sqlite:///{path}",
        db_lock_timeout_seconds=LOCK,
        dev_audit_key_file=tmp_path / "dev-audit-key.pem",
        **settings_keys(),
    )
    get = s.get_certificate("bounded-unknown", "HSVARD")
    with TestClient(create_app(settings)) as client, contextlib.closing(sqlite3.connect(path)) as other:
        soap = SoapClient(client)
        other.isolation_level = None
        other.execute("BEGIN IMMEDIATE")  # as a second worker, or an operator's command, would
        took, reply = _timed(lambda: soap.call("GetCertificate", 2, get))
        other.execute("ROLLBACK")

        # Every operation writes its audit record, so it waits for the write lock: once here, where
        # GetCertificate is not run again (a busy SQLite counts as a lost race, store/unit_of_work.py).
        assert reply.is_fault and reply.fault_code == "soap:Server", reply.fault_string
        assert took < LOCK + MARGIN, f"{took:.2f} s"
        # Released: the store answers (the certificate does not exist: the caller's error).
        assert soap.call("GetCertificate", 2, get).fault_code == "soap:Client"
