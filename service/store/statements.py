"""Statements on PostgreSQL for the request path, run by psycopg itself (README "Benchmark").

The repositories build their statements with SQLAlchemy Core, once, as module constants; on SQLite they
run them through SQLAlchemy's async connection. On PostgreSQL that layer cost more than the database:
in ``tests/benchmark`` a bare FastAPI route doing one select and one insert in a transaction ran at
0.13x a hello route through SQLAlchemy's pool and async connection, and at 0.25x through psycopg's own
pool and connection (December 2026, this machine). So here a statement is compiled by SQLAlchemy's
PostgreSQL dialect once, and its SQL and the caller's parameters go to psycopg as they are.

That is sound because, for the columns of ``tables.py``, SQLAlchemy's psycopg dialect converts no value
on its way in or out: psycopg adapts str, bytes, bool, naive datetimes, lists (arrays) and JSON itself
(``tests/integration/test_store.py`` runs every repository method on both engines). A statement that
carries values of its own (built for one call, or with an expanding IN) is compiled for that call.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus
from psycopg_pool import AsyncConnectionPool
from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler

from service import metrics, store

DIALECT = PGDialect_psycopg()  # type: ignore[no-untyped-call]
_COUNTED = {source: metrics.DB_STATEMENTS.labels(source=source.value) for source in store.Source}

Params = Mapping[str, Any]


class Rows:
    """What a statement returned: its rows (attribute access by column name) and its row count."""

    __slots__ = ("_rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows = rows
        self.rowcount = rowcount

    def __iter__(self) -> Iterator[Any]:
        return iter(self._rows)

    def first(self) -> Any | None:
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any | None:
        return self._rows[0][0] if self._rows else None


class Dialect:
    name = DIALECT.name


# SQL of the statements that take all their values as parameters, by statement and parameter names
# (an insert's columns are those it is given). The repositories' are module constants; a statement
# built for each call without values of its own would fill this, so it is bounded.
_SQL: dict[tuple[ClauseElement, tuple[str, ...]], str] = {}
_SQL_KEPT = 512


def _compiled(statement: ClauseElement, keys: tuple[str, ...]) -> SQLCompiler:
    return statement.compile(  # type: ignore[return-value]
        dialect=DIALECT, column_keys=list(keys), compile_kwargs={"render_postcompile": True}
    )


def sql_of(statement: ClauseElement, params: Params) -> tuple[str, Params]:
    keys = tuple(params)
    sql = _SQL.get((statement, keys))
    if sql is not None:
        return sql, params
    compiled = _compiled(statement, keys)
    if all(bind.required and not bind.expanding for bind in compiled.binds.values()):
        if len(_SQL) >= _SQL_KEPT:
            _SQL.clear()
        _SQL[(statement, keys)] = compiled.string
        return compiled.string, params
    return compiled.string, compiled.construct_params(params) or {}


class PsycopgStatements:
    """The slice of SQLAlchemy's ``AsyncConnection`` the repositories and the unit of work use, on a
    connection of psycopg's pool: ``close()`` gives it back."""

    dialect = Dialect()

    def __init__(self, pool: AsyncConnectionPool[Any], connection: psycopg.AsyncConnection[Any]) -> None:
        self.pool = pool
        self.connection = connection

    async def execute(
        self, statement: ClauseElement, params: Params | Sequence[Params] | None = None
    ) -> Rows:
        _COUNTED[store.source()].inc()
        async with self.connection.cursor() as cursor:
            if isinstance(params, Sequence):
                # One statement for several rows (the events of a register): psycopg's executemany.
                sql, _ = sql_of(statement, params[0])
                await cursor.executemany(sql, params)
                return Rows([], cursor.rowcount)
            sql, values = sql_of(statement, params or {})
            await cursor.execute(sql, values)
            # rownumber: None where the statement returned no rows to fetch; cheaper to ask than
            # description, which builds the columns' descriptions.
            return Rows(await cursor.fetchall() if cursor.rownumber is not None else [], cursor.rowcount)

    async def commit(self) -> None:
        await self.connection.commit()

    async def rollback(self) -> None:
        # A connection interrupted inside a statement (a deadline's cancellation) or broken has no
        # transaction to roll back here: the pool closes it when it is given back, and opens another.
        if self.connection.info.transaction_status in (TransactionStatus.INTRANS, TransactionStatus.INERROR):
            await self.connection.rollback()

    async def close(self) -> None:
        metrics.POOL_IN_USE.dec()
        await self.pool.putconn(self.connection)


async def connect(pool: AsyncConnectionPool[Any]) -> PsycopgStatements:
    if pool.closed:
        # Opened by its first user, on the event loop that will use it.
        await pool.open()
    connection = await pool.getconn()
    metrics.POOL_IN_USE.inc()
    return PsycopgStatements(pool, connection)
