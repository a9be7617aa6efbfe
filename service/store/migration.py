"""Applies the Alembic migrations in ``store/migrations`` to a database.

Migrations that convert stored data find the keys of encryption at rest (``store/crypto.py``) in
``config.attributes["keyring"]``: 0003 encrypts documents and hashes identity numbers, and refuses to
run on rows without them.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from service import store
from service.store.crypto import KeyRing

MIGRATIONS = Path(__file__).with_name("migrations")


def alembic_config(url: str = "", keyring: KeyRing | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url)
    if keyring is not None:
        config.attributes["keyring"] = keyring
    return config


def upgrade(url: str, *, keyring: KeyRing | None = None, revision: str = "head") -> None:
    """Bring the database to the newest schema; a no-op at head. For the CLI, outside an event loop.
    ``keyring`` is needed where stored rows are to be encrypted (0003 says so if it is missing)."""
    with store.background():  # `serve` migrates before it serves: no request's statements
        command.upgrade(alembic_config(url, keyring=keyring), revision)


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as connection:
        return await connection.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
