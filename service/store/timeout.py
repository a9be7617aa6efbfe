"""How long database work may wait (README "Operating": nothing waits without bound).

``Timeouts``: what each connection starts with (``create_engine``). PostgreSQL ends a wait it is
still able to end: for a lock, for a statement, and a transaction left idle (a worker paused while
holding one would hold its row locks meanwhile). The pool bounds the wait for a free connection, and
libpq the wait for a new one.

``Deadline``: a server that is frozen (SIGSTOP, a stalled VM) or cut off behind something that keeps
the TCP connection open answers nothing, and only the client can bound that wait: at the deadline the
task is cancelled, as ``asyncio.timeout`` does.

Why not ``asyncio.timeout`` itself: psycopg answers the cancellation of a running query by asking the
server to cancel it (a new connection to the postmaster, waited for up to 5 s) and then waiting up
to 5 s more for the query to end (``psycopg.AsyncConnection.wait``). Against a frozen server one
cancellation thus took 10.5 s to arrive (measured, psycopg 3.3). A second cancellation while psycopg
waits makes it close the connection at once (0.8 s): so the deadline cancels once, leaves a live
server ``GRACE`` to stop the statement politely, and then cancels again.

The connection interrupted is never reused: SQLAlchemy treats a cancellation inside a statement,
commit or rollback as a disconnect and invalidates the connection
(``Connection._handle_dbapi_exception``, ``is_exit_exception``); the pool opens a new one on a later
checkout. ``tests/integration/test_bounded_waits.py`` pauses a real PostgreSQL to prove both.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from types import TracebackType
from typing import Final, Self

from service import errors


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Seconds (``INTYG_DB_…``, README). 0 for a PostgreSQL setting: no limit (migrations only)."""

    lock: float = 2.0
    statement: float = 5.0
    idle_in_transaction: float = 10.0
    connect: int = 3  # libpq counts whole seconds, and waits at least 2
    pool: float = 3.0

    def postgres_options(self) -> str:
        """The settings as libpq's ``options``: applied as the connection starts, so no request pays
        a round trip to set them."""
        settings = (
            ("lock_timeout", self.lock),
            ("statement_timeout", self.statement),
            ("idle_in_transaction_session_timeout", self.idle_in_transaction),
        )
        return " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in settings)


# A migration may rewrite every row (0003) or index the whole store: it takes what that takes. It
# still waits for a lock no longer than a request would: queued behind one request's row lock, its
# own lock on the table would hold up every request after it.
MIGRATION_TIMEOUTS: Final = Timeouts(statement=0, idle_in_transaction=0)

DEFAULT_TIMEOUTS: Final = Timeouts()

# Seconds a request's unit of work may take (``INTYG_DB_DEADLINE_SECONDS``): above the statement
# timeout, so that a database that answers ends a slow statement itself, with its connection kept.
DEFAULT_DEADLINE: Final = 8.0

# Enough for a live server to answer psycopg's cancel request on a local network; a frozen one never will.
GRACE: Final = 0.25


class Deadline:
    """``seconds`` from ``start()`` the current task is cancelled (twice, ``GRACE`` apart) until
    ``end()``. ``None``: no deadline. Also an async context manager raising ``StoreUnavailable``."""

    def __init__(self, seconds: float | None) -> None:
        self._seconds = seconds
        self._task: asyncio.Task[object] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cancels = 0
        self._cancelling = 0

    def start(self) -> Self:
        if self._seconds is None:
            return self
        task = asyncio.current_task()
        assert task is not None, "a deadline bounds the work of a task"
        self._task = task
        self._cancelling = task.cancelling()
        self._timer = asyncio.get_running_loop().call_later(self._seconds, self._expire)
        return self

    def _expire(self) -> None:
        assert self._task is not None
        self._cancels += 1
        self._task.cancel()
        if self._cancels == 1:
            self._timer = asyncio.get_running_loop().call_later(GRACE, self._expire)

    def end(self, failure: BaseException | None) -> bool:
        """Stop the clock; whether the deadline is what made the work fail with ``failure``. A
        cancellation from elsewhere (shutdown) is left to go on."""
        if self._timer is not None:
            self._timer.cancel()
        if not self._cancels:
            return False
        assert self._task is not None
        for _ in range(self._cancels):
            self._task.uncancel()
        return failure is not None and self._task.cancelling() <= self._cancelling

    async def __aenter__(self) -> Self:
        return self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.end(exc):
            raise errors.StoreUnavailable("the store did not answer within its deadline") from None
