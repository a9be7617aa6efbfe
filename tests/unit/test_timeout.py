"""The bounds of database work (``service/store/timeout.py``) on their own, with plain asyncio: the
deadline ends work that never finishes, also work that waits out the first cancellation as psycopg
does, and leaves alone both work that finishes and a cancellation from elsewhere.

Against a real, frozen PostgreSQL through the running service: ``tests/integration/test_bounded_waits.py``.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from service import errors
from service.config import Settings
from service.store.timeout import GRACE, MIGRATION_TIMEOUTS, Deadline, Timeouts

# A loaded two-core machine may run a timer late by this much.
SLACK = 0.5


async def _forever() -> None:
    await asyncio.Event().wait()


async def _like_psycopg() -> None:
    """A cancelled psycopg query first asks the server to cancel it and waits for that (5 s + 5 s
    against a frozen server); a second cancellation makes it give up the connection at once."""
    try:
        await _forever()
    except asyncio.CancelledError:
        await asyncio.sleep(10)
        raise


async def test_work_that_finishes_in_time_is_left_alone() -> None:
    async with Deadline(0.2):
        await asyncio.sleep(0.01)

    await asyncio.sleep(0.3)  # the timer is gone: nothing cancels us later
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0


@pytest.mark.parametrize("work", [_forever, _like_psycopg], ids=["never answers", "waits out one cancel"])
async def test_work_that_does_not_finish_ends_at_the_deadline_as_the_store_unavailable(work) -> None:
    began = time.monotonic()

    with pytest.raises(errors.StoreUnavailable):
        async with Deadline(0.3):
            await work()

    assert time.monotonic() - began < 0.3 + GRACE + SLACK
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0, "the deadline's cancellations are taken back"


async def test_a_cancellation_from_elsewhere_goes_on_as_a_cancellation() -> None:
    # At shutdown the server cancels a request: that is not the store failing.
    async def request() -> None:
        async with Deadline(10):
            await _forever()

    task = asyncio.create_task(request())
    await asyncio.sleep(0.05)
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_cancellation_from_elsewhere_after_the_deadline_passed_still_goes_on() -> None:
    async def request() -> None:
        async with Deadline(0.05):
            await _like_psycopg()

    task = asyncio.create_task(request())
    await asyncio.sleep(0.1)  # the deadline has cancelled once; psycopg waits
    task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await task


async def test_no_deadline_waits_as_long_as_the_work_takes() -> None:
    async with Deadline(None):
        await asyncio.sleep(0.05)


def test_the_server_side_timeouts_start_with_each_connection_in_milliseconds() -> None:
    timeouts = Timeouts(lock=0.5, statement=5, idle_in_transaction=10)

    assert timeouts.postgres_options() == (
        "-c lock_timeout=500 -c statement_timeout=5000 -c idle_in_transaction_session_timeout=10000"
    )


def test_a_migration_waits_for_locks_but_not_for_its_own_long_statements() -> None:
    # PostgreSQL reads 0 as no limit: 0003 rewrites every row, an index covers the whole store.
    assert "statement_timeout=0 " in MIGRATION_TIMEOUTS.postgres_options()
    assert "idle_in_transaction_session_timeout=0" in MIGRATION_TIMEOUTS.postgres_options()
    assert MIGRATION_TIMEOUTS.lock > 0


def test_the_settings_give_the_engine_its_timeouts_in_seconds() -> None:
    settings = Settings(
        db_lock_timeout_seconds=0.5,
        db_statement_timeout_seconds=4,
        db_idle_in_transaction_timeout_seconds=9,
        db_connect_timeout_seconds=2,
        db_pool_timeout_seconds=1,
    )

    assert settings.database_timeouts() == Timeouts(
        lock=0.5, statement=4, idle_in_transaction=9, connect=2, pool=1
    )


@pytest.mark.parametrize(
    "timeout",
    [
        "db_lock_timeout_seconds",
        "db_statement_timeout_seconds",
        "db_connect_timeout_seconds",
        "db_pool_timeout_seconds",
    ],
)
def test_the_deadline_must_leave_the_servers_timeouts_and_the_pools_wait_room_to_answer_first(
    timeout: str,
) -> None:
    # A timeout the server reports names its cause and keeps the connection; the deadline is for a
    # database that answers nothing.
    with pytest.raises(ValidationError, match="INTYG_DB_DEADLINE_SECONDS"):
        Settings.model_validate({"db_deadline_seconds": 3, timeout: 3})
