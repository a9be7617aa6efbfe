"""The SQL unit of work, and the engine it runs on (embedded SQLite or PostgreSQL).

One ``async with`` block is one transaction: repositories stage work in the session, ``commit()``
ends it, and leaving the block rolls back whatever was not committed. A failure that means "a
concurrent transaction won" becomes ``errors.ConcurrentChange`` so that ``operations`` can retry.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, Self

from sqlalchemy import event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from service import errors, metrics, store
from service.store.audit_chain import Signer
from service.store.crypto import KeyRing
from service.store.repositories import (
    SqlAuditLog,
    SqlCertificateRepository,
    SqlConsentRepository,
    log_checkpoint,
)

# PostgreSQL's unique and foreign-key violations, serialization_failure and deadlock_detected: the
# transaction lost a race (another inserted the same key, or deleted what we refer to).
_RACE_SQLSTATES = {"23505", "23503", "40001", "40P01"}
# SQLite's words for the same.
_RACE_MESSAGES = ("UNIQUE constraint failed", "FOREIGN KEY constraint failed", "database is locked")


def create_engine(url: str, *, pool_size: int = 10) -> AsyncEngine:
    if url.startswith("sqlite"):
        # SQLite has one writer at a time and every operation writes: one connection queues them in
        # the pool, where several would wait in SQLite's busy handler, which sleeps (measured: p95
        # 950 ms with 16 concurrent callers against one connection's tens of ms; tests/benchmark.py).
        engine = create_async_engine(url, connect_args={"timeout": 30}, pool_size=1, max_overflow=0)
        _serialise_sqlite_writers(engine)
    else:
        engine = create_async_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)
    _count_pool(engine)
    _count_statements(engine)
    return engine


async def dispose(engine: AsyncEngine) -> None:
    metrics.POOL_SIZE.dec(engine.pool.size())  # type: ignore[attr-defined]
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
    """Statements per request, counted (issue 9): every cursor execute, by who runs it (``store.source``).
    The pool's pre-ping and the driver's own BEGIN/COMMIT use no cursor event and are not counted."""
    counters = {source: metrics.DB_STATEMENTS.labels(source=source.value) for source in store.Source}

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def _count(*_: Any) -> None:
        counters[store.source()].inc()


def _serialise_sqlite_writers(engine: AsyncEngine) -> None:
    """Every operation writes (at least its audit record), so each transaction takes SQLite's write
    lock at BEGIN: a deferred transaction that read first could not upgrade to a writer under load.
    WAL lets readers outside a transaction go on meanwhile; foreign keys are off unless asked for.
    secure_delete overwrites the bytes of deleted rows in the file: a permanent deletion (DOMAIN.md
    rules 5, 6 and 9) erases the certificate for good, not only unlinks pages that keep its wrapped
    data key and ciphertext until reused (issue 5)."""

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def _lost_a_race(exc: BaseException) -> bool:
    """Only a lost race is worth running the operation again; any other failure is a fault."""
    if not isinstance(exc, DBAPIError):
        return False
    if getattr(exc.orig, "sqlstate", None) in _RACE_SQLSTATES:
        return True
    message = str(exc.orig)
    return any(words in message for words in _RACE_MESSAGES)


class SqlUnitOfWork:
    """``keyring``: encryption at rest; ``signer`` and ``checkpoint_every``: the audit log's
    in-transaction checkpoints (``SqlAuditLog``)."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        keyring: KeyRing,
        *,
        signer: Signer | None = None,
        checkpoint_every: int = 1000,
    ) -> None:
        self._sessions = sessions
        self._keyring = keyring
        self._session: AsyncSession | None = None
        self._signer = signer
        self._checkpoint_every = checkpoint_every

    async def __aenter__(self) -> Self:
        self._session = self._sessions()
        self.certificates = SqlCertificateRepository(self._session, self._keyring)
        self.consents = SqlConsentRepository(self._session, self._keyring)
        self.audit = SqlAuditLog(
            self._session, self._keyring, signer=self._signer, checkpoint_every=self._checkpoint_every
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        assert session is not None
        try:
            await session.rollback()
        finally:
            await session.close()
        if exc is not None and _lost_a_race(exc):
            raise errors.ConcurrentChange("a concurrent change won; try again") from exc

    async def commit(self) -> None:
        assert self._session is not None
        pending, self.audit.pending = self.audit.pending, []
        checkpoints, self.audit.checkpoints = self.audit.checkpoints, []
        try:
            await self._session.commit()
        except Exception:
            if pending:
                metrics.AUDIT_WRITE_FAILURES.inc()
            raise
        for record in pending:
            metrics.observe(record)
        for checkpoint in checkpoints:
            log_checkpoint(checkpoint)

    async def rollback(self) -> None:
        assert self._session is not None
        self.audit.pending.clear()
        self.audit.checkpoints.clear()
        await self._session.rollback()


def sessions_for(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
