"""Electing the one process that runs a background job, across processes and replicas.

The audit log's sealer (``audit_sealer.py``) and the outbox relay (``relay.py``) each run in exactly one
place at a time on PostgreSQL: the process that holds the job's session-level advisory lock on its
connection. The others stand by and try again; when the holder's connection ends (its process died, or
it stood still past ``idle_session_timeout`` or ``idle_in_transaction_session_timeout``), the lock goes
with it and another takes over.

On SQLite every writing transaction takes the one write lock, which serialises the sealer's passes just
as well, so it needs no election (``lock_file`` None). The relay does need one there, since it publishes
outside any transaction: the processes of one machine that share the database file share its directory
too, and an exclusive ``flock`` on a file beside the database elects one of them (the kernel releases it
when its process dies).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

# An elected job's session ends after standing still this long (a paused or cut-off process), so that
# another takes over; the jobs use their connection far more often than this.
IDLE_SESSION_SECONDS = 10

# Where a job works: the connection held for its term (PostgreSQL), or the engine to take one from per
# transaction (SQLite, whose one connection requests need between the job's transactions).
Target = AsyncConnection | AsyncEngine


def connected(target: Target) -> contextlib.AbstractAsyncContextManager[AsyncConnection]:
    """A connection of ``target``: the held one itself, or one taken from the engine for the block."""
    return contextlib.nullcontext(target) if isinstance(target, AsyncConnection) else target.connect()


def lock_file_beside(database_url: str, suffix: str) -> Path | None:
    """The file whose ``flock`` elects a job on the SQLite database of ``database_url`` (None for an
    in-memory one, which only its own process sees)."""
    database = make_url(database_url).database
    if not database or database == ":memory:":
        return None
    return Path(f"{database}.{suffix}")


@contextlib.asynccontextmanager
async def elected(
    engine: AsyncEngine, key: int, *, lock_file: Path | None = None
) -> AsyncIterator[Target | None]:
    """What to work on while this process is the one elected for the job of ``key``, None while another
    one is. On PostgreSQL the connection that holds the advisory lock ``key``, given up (closed for real)
    when the block ends; on SQLite the engine, once this process holds the ``flock`` of ``lock_file``
    where one is named."""
    if engine.dialect.name != "postgresql":
        with _flocked(lock_file) as held:
            yield engine if held else None
        return
    async with engine.connect() as connection:
        won = await connection.scalar(text("SELECT pg_try_advisory_lock(:key)"), {"key": key})
        if won and (connection.dialect.server_version_info or (0,)) >= (14,):
            await connection.execute(
                text("SELECT set_config('idle_session_timeout', :ms, false)"),
                {"ms": str(IDLE_SESSION_SECONDS * 1000)},
            )
        await connection.commit()
        if not won:
            yield None
            return
        try:
            yield connection
        finally:
            # The lock belongs to the session: closing the connection for real ends both, where handing
            # it back to the pool would keep the lock with an idle connection.
            await connection.invalidate()


@contextlib.contextmanager
def _flocked(path: Path | None) -> Iterator[bool]:
    if path is None:
        yield True
        return
    handle = os.open(path, os.O_CREAT | os.O_RDWR, 0o600)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(handle)  # releases the lock with the file
