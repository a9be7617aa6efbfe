"""Statements per request, counted (README "Benchmark"): each operation's database statements through the app,
on SQLite and PostgreSQL, so that a change that adds a round trip shows here.

Every statement a request runs is seen beside the service's own counter (``intyg_db_statements_total``):
by SQLAlchemy's event on SQLite, and where psycopg is given its SQL on PostgreSQL (store/statements.py).
Each is sorted by what it touches:

- ``store``: certificates, documents, status events, consents. Asserted exactly, the same on both
  engines: these are the repositories' statements.
- ``audit``: the audit log's tables (``audit_*``): exactly the record's insert. No head is locked or
  moved in the request's transaction; the sealer chains the record after commit (store/audit_sealer.py).
- SQLite's ``BEGIN IMMEDIATE``, which the service issues, one per transaction. PostgreSQL's BEGIN and
  every COMMIT are the driver's own: no cursor executes, not counted.

The counter's ``request`` series must grow by exactly what the listener saw; the background loops
(gauges, sealer), which may run meanwhile, count as ``background``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from sqlalchemy import event, select

from service import store
from service.config import Settings
from service.store import statements as sql_statements
from service.store.unit_of_work import create_engine, dispose
from tests.integration import soap as s
from tests.integration.rest import ANNA, CitizenApi, portal_settings
from tests.integration.soap import SoapClient

GIVER = "SE2321000016-39KJ"
AUDIT_TABLES = ("audit_records", "audit_head", "audit_checkpoints")


@dataclass(frozen=True)
class Counted:
    store: int
    audit: int
    begin: int


class Statements:
    """The statements a request runs, sorted by what they touch (the module docstring)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, _conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        if store.source() is store.Source.REQUEST:
            self.seen.append(statement)

    def during(self, request: Callable[[], object]) -> Counted:
        self.seen.clear()
        before = _requests_counted()
        request()
        kinds = Counter(_kind(statement) for statement in self.seen)
        # The service's counter sees what the listener sees: every statement of the request.
        assert _requests_counted() - before == len(self.seen)
        return Counted(kinds["store"], kinds["audit"], kinds["begin"])


def _kind(statement: str) -> str:
    if statement == "BEGIN IMMEDIATE":
        return "begin"
    return "audit" if any(table in statement for table in AUDIT_TABLES) else "store"


def _requests_counted() -> float:
    return _counted(store.Source.REQUEST)


def _counted(source: store.Source) -> float:
    return REGISTRY.get_sample_value("intyg_db_statements_total", {"source": source.value}) or 0.0


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return portal_settings(database_url, tmp_path)


@pytest.fixture
def statements(client: TestClient, monkeypatch: pytest.MonkeyPatch) -> Iterator[Statements]:
    listener = Statements()
    engine = client.app.state.engine.sync_engine  # type: ignore[attr-defined]
    event.listen(engine, "before_cursor_execute", listener)
    # PostgreSQL's request path runs its statements on psycopg (store/statements.py), past SQLAlchemy's
    # events: seen where each gets its SQL.
    sql_of = sql_statements.sql_of

    def seen(statement: Any, params: Any) -> Any:
        sql, values = sql_of(statement, params)
        listener(None, None, sql)
        return sql, values

    monkeypatch.setattr(sql_statements, "sql_of", seen)
    yield listener
    event.remove(engine, "before_cursor_execute", listener)


@pytest.mark.shared
def test_each_operation_runs_the_statements_it_needs_and_no_more(
    soap: SoapClient, client: TestClient, statements: Statements, database_url: str
) -> None:
    anna = CitizenApi(client, ANNA)

    def register(certificate_id: str, *, replacing: str | None = None) -> None:
        envelope = s.register_envelope(certificate_id, ANNA)
        if replacing is not None:
            envelope = envelope.replace("</skapadAv>", "</skapadAv>" + s.relation("ERSATT", replacing), 1)
        reply = soap.post(s.path_of("RegisterCertificate", 3), envelope)
        assert reply.result()[0] in ("OK", "INFO")

    def ok(response: Any) -> None:
        assert response.status_code == 200, response.text

    def soap_ok(operation: str, major: int, body: str) -> Callable[[], None]:
        def call() -> None:
            reply = soap.call(operation, major, body)
            assert not reply.is_fault, reply.fault_string
            assert reply.texts("resultCode") in ([], ["OK"])  # GetCertificate answers without one

        return call

    counted = {
        "register": statements.during(lambda: register("c-1")),
        "register again": statements.during(lambda: register("c-1")),
    }
    counted["register replacing"] = statements.during(lambda: register("c-2", replacing="c-1"))
    anna.consent()
    counted |= {
        "care get": statements.during(soap_ok("GetCertificate", 2, s.get_certificate("c-1", "HSVARD"))),
        "care list": statements.during(
            soap_ok("ListCertificatesForCare", 3, s.list_for_care(ANNA, care_giver=GIVER))
        ),
        "citizen get": statements.during(lambda: ok(anna.get("/certificates/c-1"))),
        "citizen list": statements.during(lambda: ok(anna.get("/certificates"))),
        "set status": statements.during(
            soap_ok("SetCertificateStatus", 2, s.set_status("c-1", "FKASSA", "SENTTO"))
        ),
        "archive": statements.during(lambda: ok(anna.post("/certificates/c-1/archive"))),
    }

    print(f"\n{database_url.split(':')[0]}: statements per request")
    for operation, found in counted.items():
        print(f"  {operation:16} store {found.store}  audit {found.audit}  begin {found.begin}")
    assert {operation: found.store for operation, found in counted.items()} == {
        # the certificate if its id is free (rule 1), its document, its RECEIV event, statistics' event
        "register": 4,
        "register again": 2,  # the insert that finds the id taken, the certificate read for rule 1
        "register replacing": 5,  # as a register, and the relations it states, one insert for them all
        "care get": 1,  # certificate, history, relations and document
        "care list": 1,  # certificates, histories and relations
        "citizen get": 2,  # certificate, history, relations and document; consent (rule 2)
        "citizen list": 2,  # consent (rule 2); certificates, histories and relations
        # certificate with history, locked; the event (a recipient's: flags stay); the delivery to the
        # recipient and statistics' event, one insert for both
        "set status": 3,
        "archive": 4,  # certificate with history, locked; consent; flags; the event
    }
    for found in counted.values():
        assert found.audit == 1
        assert found.begin == (1 if database_url.startswith("sqlite") else 0)


async def test_statements_of_background_work_are_counted_apart_from_requests(database_url: str) -> None:
    engine = create_engine(database_url)
    request, background = _counted(store.Source.REQUEST), _counted(store.Source.BACKGROUND)
    try:
        async with engine.connect() as connection:
            with store.background():
                await connection.execute(select(1))
                await connection.execute(select(1))
            await connection.execute(select(1))
    finally:
        await dispose(engine)

    begin = 1 if database_url.startswith("sqlite") else 0  # BEGIN IMMEDIATE, at the first statement
    assert _counted(store.Source.BACKGROUND) - background == 2 + begin
    assert _counted(store.Source.REQUEST) - request == 1
