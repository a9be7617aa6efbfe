"""The SQL unit of work, and the engine it runs on (embedded SQLite or PostgreSQL).

One ``async with`` block is one transaction: repositories stage work on its connection, ``commit()``
ends it, and leaving the block rolls back whatever was not committed. A failure that means "a
concurrent transaction won" becomes ``errors.ConcurrentChange`` so that ``operations`` can retry; one
that means "the database cannot serve now" (its deadline passed, a server-side timeout, no
connection) becomes ``errors.StoreUnavailable``.
"""

from __future__ import annotations

import logging
import weakref
from types import TracebackType
from typing import Any, Self

import psycopg
import psycopg_pool
from psycopg.rows import namedtuple_row
from sqlalchemy import Engine, event, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from service import errors, metrics, store
from service.store import statements
from service.store.crypto import KeyRing
from service.store.repositories import (
    SqlAuditLog,
    SqlCertificateRepository,
    SqlConsentRepository,
    SqlOutbox,
)
from service.store.timeout import DEFAULT_DEADLINE, DEFAULT_TIMEOUTS, Deadline, Timeouts

log = logging.getLogger("service.store")

# PostgreSQL's unique and foreign-key violations, serialization_failure and deadlock_detected: the
# transaction lost a race (another inserted the same key, or deleted what we refer to).
_RACE_SQLSTATES = {"23505", "23503", "40001", "40P01"}
# SQLite's words for the same.
_RACE_MESSAGES = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed", "database is locked")
# Waits PostgreSQL ended (store/timeout.py), and a server that is stopping, starting or full; with
# class 08, "connection exception". Named for the log line that says why a request got none.
_UNAVAILABLE_SQLSTATES = {
    "55P03": "lock timeout",
    "57014": "statement timeout",
    "25P03": "idle-in-transaction timeout",
    "57P01": "server shutting down",
    "57P02": "server crashed",
    "57P03": "server not accepting connections yet",
    "53300": "too many connections",
}
# Failures after which the pooled connections may no longer reach the server (it restarted or went away).
_DISCONNECTS = ("server shutting down", "server crashed", "no connection")

# On PostgreSQL, the pool of psycopg connections the units of work run on (statements.py says why),
# beside the engine's pool, which the sealer, the gauges and the command line use. Tied to the engine,
# so that whoever has the engine (the app, the command line, a test) runs requests the same way;
# ``dispose`` closes both.
_REQUEST_POOLS: weakref.WeakKeyDictionary[Engine, psycopg_pool.AsyncConnectionPool[Any]] = (
    weakref.WeakKeyDictionary()
)


def create_engine(url: str, *, pool_size: int = 10, timeouts: Timeouts = DEFAULT_TIMEOUTS) -> AsyncEngine:
    if url.startswith("sqlite"):
        # SQLite has one writer at a time and every operation writes: one connection queues them in
        # the pool, where several would wait in SQLite's busy handler, which sleeps (measured: p95
        # 950 ms with 16 concurrent callers against one connection's tens of ms; tests/benchmark).
        # Its busy timeout is its lock timeout: how long a writer waits for another process's lock.
        engine = create_async_engine(
            url,
            connect_args={"timeout": timeouts.lock},
            pool_size=1,
            max_overflow=0,
            pool_timeout=timeouts.pool,
        )
        _serialise_sqlite_writers(engine, busy_seconds=timeouts.lock)
    else:
        # The server-side timeouts go in the startup packet, after any ``options`` of the URL, so that
        # INTYG_DB_… is where they are set. This engine serves the background work and /readyz (the
        # requests have the pool below), so it pings a connection before handing it out: a connection a
        # database restart ended is replaced there, and never makes the first probe after the restart
        # answer "not ready". The requests' pool does not ping (one more round trip on every request, a
        # tenth of a get's time, measured with ``tests/benchmark``): a connection the server dropped fails
        # its first statement instead, the pool is drained, and one request per pool answers
        # "unavailable" while the next ones connect anew.
        connect_args = {"options": _startup_options(url, timeouts), "connect_timeout": timeouts.connect}
        engine = create_async_engine(
            url,
            connect_args=connect_args,
            pool_size=pool_size,
            max_overflow=pool_size,
            pool_timeout=timeouts.pool,
            pool_pre_ping=True,
        )
        # The same bounds: pool_size kept, as many again when busy, and the same wait for one.
        _REQUEST_POOLS[engine.sync_engine] = psycopg_pool.AsyncConnectionPool(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
            kwargs={**connect_args, "row_factory": namedtuple_row},
            min_size=pool_size,
            max_size=2 * pool_size,
            timeout=timeouts.pool,
            name="requests",
            open=False,
        )
        metrics.POOL_SIZE.inc(pool_size)
    _count_pool(engine)
    _count_statements(engine)
    return engine


def _startup_options(url: str, timeouts: Timeouts) -> str:
    given = make_url(url).query.get("options", ())
    return " ".join([*((given,) if isinstance(given, str) else given), timeouts.postgres_options()])


def request_pool(engine: AsyncEngine) -> psycopg_pool.AsyncConnectionPool[Any] | None:
    """The pool the units of work on ``engine`` draw from, where it is not the engine's own."""
    return _REQUEST_POOLS.get(engine.sync_engine)


async def dispose(engine: AsyncEngine) -> None:
    metrics.POOL_SIZE.dec(engine.pool.size())  # type: ignore[attr-defined]
    if (pool := _REQUEST_POOLS.pop(engine.sync_engine, None)) is not None:
        metrics.POOL_SIZE.dec(pool.min_size)
        await pool.close()
    await engine.dispose()


def _count_pool(engine: AsyncEngine) -> None:
    """The pool's size and connections in use, for the dashboard (summed over worker processes)."""
    metrics.POOL_SIZE.inc(engine.pool.size())  # type: ignore[attr-defined]

    @event.listens_for(engine.sync_engine, "checkout")
    def _out(*_: Any) -> None:
        metrics.POOL_IN_USE.inc()

    @event.listens_for(engine.sync_engine, "checkin")
    def _in(*_: Any) -> None:
        metrics.POOL_IN_USE.dec()


def _count_statements(engine: AsyncEngine) -> None:
    """Statements per request, counted (``tests/integration/test_round_trips.py``): every cursor execute, by
    who runs it (``store.source``). The pool's pre-ping and the driver's own BEGIN/COMMIT use no cursor event
    and are not counted."""
    counters = {source: metrics.DB_STATEMENTS.labels(source=source.value) for source in store.Source}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        counters[store.source()].inc()


def _serialise_sqlite_writers(engine: AsyncEngine, *, busy_seconds: float) -> None:
    """Every operation writes (at least its audit record), so each transaction takes SQLite's write
    lock at BEGIN: a deferred transaction that read first could not upgrade to a writer under load.
    WAL lets readers outside a transaction go on meanwhile; foreign keys are off unless asked for.
    secure_delete overwrites the bytes of deleted rows in the file: a permanent deletion (DOMAIN.md
    rules 5, 6 and 9) erases the certificate for good, not only unlinks pages that keep its wrapped
    data key and ciphertext until reused (README "Data at rest")."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute(f"PRAGMA busy_timeout={round(busy_seconds * 1000)}")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _driver_error(exc: BaseException | None) -> BaseException | None:
    """The driver's exception: as SQLAlchemy wrapped it (SQLite, the engine's pool), or psycopg's own
    (the request path on PostgreSQL)."""
    if isinstance(exc, DBAPIError):
        return exc.orig
    return exc if isinstance(exc, psycopg.Error) else None


def _unavailable(exc: BaseException | None) -> str | None:
    """What kind of failure means the store cannot serve now (a retry later may succeed), or None."""
    if isinstance(exc, PoolTimeout | psycopg_pool.PoolTimeout):
        return "pool timeout"
    error = _driver_error(exc)
    if error is None:
        return None
    sqlstate = getattr(error, "sqlstate", "")
    if sqlstate in _UNAVAILABLE_SQLSTATES:
        return _UNAVAILABLE_SQLSTATES[sqlstate]
    # psycopg's own failures carry no SQLSTATE (sqlite3's errors have no such attribute): the
    # connection could not be made, timed out, or broke.
    if (
        (sqlstate or "").startswith("08")
        or (isinstance(exc, DBAPIError) and exc.connection_invalidated)
        or (sqlstate is None and isinstance(error, psycopg.OperationalError))
    ):
        return f"no connection ({type(error).__name__})"
    return None


def _lost_a_race(exc: BaseException) -> bool:
    """Only a lost race is worth running the operation again; any other failure is a fault."""
    error = _driver_error(exc)
    if error is None:
        return False
    if getattr(error, "sqlstate", None) in _RACE_SQLSTATES:
        return True
    message = str(error)
    return any(words in message for words in _RACE_MESSAGES)


class SqlUnitOfWork:
    """``keyring``: the keys of encryption at rest; ``deadline``: seconds from entering the block to
    having left it, taking the connection and the rollback included (``INTYG_DB_DEADLINE_SECONDS``;
    store/timeout.py).

    The repositories work on a Core connection, not an ORM session: the store maps no classes, and the
    session's bookkeeping cost about a tenth of a get's time (measured with ``tests/benchmark``).
    """

    def __init__(
        self,
        engine: AsyncEngine,
        keyring: KeyRing,
        *,
        deadline: float | None = DEFAULT_DEADLINE,
    ) -> None:
        self._deadline_seconds = deadline
        self._deadline: Deadline | None = None
        self._engine = engine
        self._pool = request_pool(engine)
        self._keyring = keyring
        self._connection: AsyncConnection | statements.PsycopgStatements | None = None

    async def __aenter__(self) -> Self:
        deadline = Deadline(self._deadline_seconds).start()
        try:
            if self._pool is not None:
                connection: AsyncConnection | statements.PsycopgStatements = await statements.connect(
                    self._pool
                )
            else:
                connection = await self._engine.connect().start()
        except BaseException as exc:
            # No __aexit__ follows a failed __aenter__: the clock stops here, and the failure is told
            # as the block's would be.
            _unless_unavailable(deadline, exc)
            raise
        self._connection, self._deadline = connection, deadline
        self.certificates = SqlCertificateRepository(connection, self._keyring)
        self.consents = SqlConsentRepository(connection, self._keyring)
        self.audit = SqlAuditLog(connection, self._keyring)
        self.outbox = SqlOutbox(connection)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        connection, self._connection = self._connection, None
        deadline, self._deadline = self._deadline, None
        assert connection is not None and deadline is not None
        failure = exc
        try:
            try:
                await connection.rollback()
            finally:
                await connection.close()
        except BaseException as cleanup:
            failure = cleanup
        try:
            _unless_unavailable(deadline, failure)
        finally:
            if self._pool is not None and (_unavailable(failure) or "").startswith(_DISCONNECTS):
                # The idle connections went with the server: replaced now, rather than each failing a
                # request of its own (SQLAlchemy likewise invalidates its whole pool on a disconnect).
                await self._pool.drain()
        if failure is not exc:
            assert failure is not None
            raise failure
        if exc is not None and _lost_a_race(exc):
            raise errors.ConcurrentChange("a concurrent change won; try again") from exc

    async def commit(self) -> None:
        assert self._connection is not None
        pending, self.audit.pending = self.audit.pending, []
        try:
            await self._connection.commit()
        except Exception:
            if pending:
                metrics.AUDIT_WRITE_FAILURES.inc()
            raise
        for record in pending:
            metrics.observe(record)

    async def rollback(self) -> None:
        assert self._connection is not None
        self.audit.pending.clear()
        await self._connection.rollback()

    def reports_itself(self, failure: Exception) -> bool:
        return _lost_a_race(failure) or _unavailable(failure) is not None


def _unless_unavailable(deadline: Deadline, failure: BaseException | None) -> None:
    """Stop the deadline's clock; raise ``StoreUnavailable`` where ``failure`` means the store could not
    serve in time."""
    unavailable = "deadline passed" if deadline.end(failure) else _unavailable(failure)
    if unavailable:
        # Named by kind only: the exception's text may carry SQL and the values of the request.
        log.warning("store unavailable: %s", unavailable)
        raise errors.StoreUnavailable("the store did not answer in time; try again later") from failure
