"""Alembic environment: runs the migrations on the engine the service uses (async SQLite or PostgreSQL).

``service/store/migration.py`` names the database and hands over the keys. The bare ``alembic`` command
(pyproject.toml's ``[tool.alembic]``) names neither: the settings (INTYG_...) give the database, the keys
and the log, as to ``intygstjanst migrate``."""

from __future__ import annotations

import asyncio
from typing import Any

from alembic import context, util
from sqlalchemy import event
from sqlalchemy.engine import Connection

from service import loader
from service.config import InvalidSettings, from_environment
from service.store.tables import metadata
from service.store.timeout import MIGRATION_TIMEOUTS
from service.store.unit_of_work import create_engine, dispose
from service.telemetry import configure_logging


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite alters tables by copying them; batch mode makes later migrations portable.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _migrate(url: str) -> None:
    engine = create_engine(url, timeouts=MIGRATION_TIMEOUTS)
    if engine.dialect.name == "sqlite":
        # Batch mode copies a table and drops the old one; with foreign keys on, dropping
        # ``certificates`` would first delete its documents and status events (ON DELETE CASCADE).
        # Set after the service's own connect hook, which turns them on.
        @event.listens_for(engine.sync_engine, "connect")
        def _foreign_keys_off(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=OFF")
            cursor.close()

    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await dispose(engine)


def _database_of_the_settings() -> str:
    """The settings' database; their keys, for the migrations that convert stored rows; their log."""
    try:
        settings = from_environment()
        configure_logging(settings)
        context.config.attributes["keyring"] = loader.migration_keyring(settings)
    except (InvalidSettings, loader.Unusable) as exc:
        raise util.CommandError(str(exc)) from None  # one line, as `intygstjanst` answers it
    return settings.database_url


if context.config.cmd_opts is None:
    asyncio.run(_migrate(context.config.get_main_option("sqlalchemy.url") or ""))
else:  # only alembic's own command line gives its options
    try:
        asyncio.run(_migrate(_database_of_the_settings()))
    except RuntimeError as exc:  # a migration that cannot convert the stored rows says why
        raise util.CommandError(f"migration stopped: {exc}") from None
