"""A paused service process stops no one (README "Audit log": the sealer).

Two ``intygstjanst serve`` processes on one PostgreSQL database, as two replicas (or workers) are. The first
is the audit log's elected sealer; it is paused with SIGSTOP for two seconds (as a GC pause, a slow node or
a lost network path would pause it) while both take registrations. The other keeps completing requests the
whole time; once the paused one resumes, its requests complete too, and nothing is lost: every registration is
stored, and every audit record is sealed once, in one gapless chain that verifies. Before the sealer
(migration 0005) every transaction locked the chain's one head row, and a paused holder stopped the whole
service (4 times out of 4).
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import sqlalchemy
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat
from lxml import etree
from sqlalchemy import func, select

from service.store import audit_chain
from service.store.tables import audit_head, audit_records, certificates
from tests import server
from tests.integration import soap as s
from tests.integration.conftest import sync_url
from tests.reference import with_check_digit

# Twice the longest gap allowed below, so that a wait on the paused process shows.
PAUSE_SECONDS = 2.0
CONCURRENCY = 4
# The longest the running process may go without completing a request while the other is paused: a
# registration takes milliseconds; a wait on a lock the paused one holds would last the whole pause.
LONGEST_GAP = 1.0
# Completions each process reaches before the pause: both are under steady load by then.
UNDER_LOAD = 20


def person(serial: int) -> str:
    return with_check_digit(f"19{serial % 90 + 10:02d}0101{serial % 1000:03d}")


async def _register_until(
    base: str, prefix: str, stop: asyncio.Event, done: list[tuple[float, str]], errors: list[str]
) -> None:
    """Registrations with ``CONCURRENCY`` connections until ``stop``; each completion's time and id."""
    serial = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal serial
        while not stop.is_set():
            serial += 1
            certificate_id = f"{prefix}-{serial}"
            response = await client.post(
                s.path_of("RegisterCertificate", 3),
                content=s.register_envelope(certificate_id, person(serial)),
                headers={"Content-Type": "text/xml; charset=utf-8"},
            )
            codes = [
                e.text
                for e in etree.fromstring(response.content).iter()
                if isinstance(e.tag, str) and etree.QName(e).localname == "resultCode"
            ]
            if response.status_code == 200 and codes == ["OK"]:
                done.append((time.monotonic(), certificate_id))
            else:
                errors.append(f"{prefix}: HTTP {response.status_code} {codes}")

    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        await asyncio.gather(*(worker(client) for _ in range(CONCURRENCY)))


async def _until(condition: Callable[[], bool], seconds: float = 30) -> bool:
    """Waits, while the load goes on, until ``condition`` holds or ``seconds`` pass; whether it holds."""
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    return condition()


def _elected(metrics_port: int) -> bool:
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    return "intyg_audit_sealer_elected 1.0" in metrics


def test_a_paused_process_stops_no_other_and_loses_nothing(database_url: str, tmp_path: Path) -> None:
    if database_url.startswith("sqlite"):
        pytest.skip("several processes share one database on PostgreSQL: the embedded SQLite has one writer")
    key = tmp_path / "audit-signing-key.pem"
    signing = Ed25519PrivateKey.generate()
    key.write_bytes(signing.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()))
    env = {
        "INTYG_DATABASE_URL": database_url,
        "INTYG_KEK": f"k1:{base64.b64encode(os.urandom(32)).decode()}",
        "INTYG_LOOKUP_KEY": base64.b64encode(os.urandom(32)).decode(),
        "INTYG_AUDIT_SIGNING_KEY_FILE": str(key),
        "INTYG_LOG_LEVEL": "WARNING",
    }
    (tmp_path / "paused").mkdir()
    (tmp_path / "running").mkdir()
    metrics_port = server.free_port()
    with server.running(tmp_path / "paused", env={**env, "INTYG_METRICS_PORT": str(metrics_port)}) as (
        paused_base,
        paused,
    ):
        server.wait_until(lambda: _elected(metrics_port), 15, "the first process is the elected sealer")
        with server.running(tmp_path / "running", env=env) as (running_base, _):

            async def load() -> tuple[
                list[tuple[float, str]], list[tuple[float, str]], list[str], float, float
            ]:
                stop = asyncio.Event()
                on_paused: list[tuple[float, str]] = []
                on_running: list[tuple[float, str]] = []
                errors: list[str] = []
                tasks = [
                    asyncio.create_task(_register_until(paused_base, "paused", stop, on_paused, errors)),
                    asyncio.create_task(_register_until(running_base, "running", stop, on_running, errors)),
                ]
                # Both under load, the paused one mid-transaction as likely as not.
                assert await _until(lambda: min(len(on_paused), len(on_running)) >= UNDER_LOAD), errors
                os.kill(paused.pid, signal.SIGSTOP)
                paused_at = time.monotonic()
                try:
                    await asyncio.sleep(PAUSE_SECONDS)
                finally:
                    os.kill(paused.pid, signal.SIGCONT)
                resumed_at = time.monotonic()
                # Asserted below: the paused process completes requests again once resumed.
                await _until(lambda: any(at > resumed_at for at, _ in on_paused))
                stop.set()
                await asyncio.wait_for(asyncio.gather(*tasks), 60)
                return on_paused, on_running, errors, paused_at, resumed_at

            on_paused, on_running, errors, paused_at, resumed_at = asyncio.run(load())

    assert errors == []
    during = [at for at, _ in on_running if paused_at <= at <= resumed_at]
    marks = [paused_at, *during, resumed_at]
    gaps = [later - earlier for earlier, later in itertools.pairwise(marks)]
    assert len(during) >= 10, f"the running process completed only {len(during)} requests in the pause"
    assert max(gaps) < LONGEST_GAP, f"the running process stood still {max(gaps):.2f} s in the pause"
    assert any(at > resumed_at for at, _ in on_paused), (
        "the paused process completed nothing after it resumed"
    )

    # Both processes have stopped (SIGTERM) and sealed what they wrote: nothing lost, nothing doubled.
    engine = sqlalchemy.create_engine(sync_url(database_url))
    try:
        with engine.connect() as connection:
            stored = set(connection.scalars(select(certificates.c.id)))
            unsealed = connection.scalar(
                select(func.count()).select_from(audit_records).where(audit_records.c.seq.is_(None))
            )
            records = [
                row._mapping
                for row in connection.execute(select(audit_records).order_by(audit_records.c.seq))
            ]
            head = connection.execute(select(audit_head.c.seq, audit_head.c.hash)).one()
    finally:
        engine.dispose()
    registered = {certificate_id for _, certificate_id in on_paused + on_running}
    assert registered <= stored
    assert unsealed == 0
    assert len(records) >= len(registered)
    verdict = audit_chain.verify(records, [], audit_chain.Head(head.seq, head.hash), {})
    assert verdict.intact and verdict.records == len(records), verdict.problem
