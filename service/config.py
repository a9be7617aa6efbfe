"""Settings, read from the environment (prefix ``INTYG_``) and validated once at start-up.

Only this module reads the environment; ``create_app(settings)`` and the CLI take a ``Settings``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def default_database_url() -> str:
    """The embedded default: a SQLite file in the working directory, so one command starts the service."""
    return f"sqlite+aiosqlite:///{Path.cwd() / 'intygstjanst.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTYG_", extra="forbid", frozen=True)

    database_url: str = Field(default_factory=default_database_url)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Wall-clock zone of the contracts' timestamps, which carry no zone (rivta/README.md).
    timezone: str = "Europe/Stockholm"
    # Largest SOAP request accepted; the biggest real certificate is a few tens of kB.
    max_request_bytes: int = Field(default=2_000_000, ge=10_000)
    log_level: str = "INFO"

    @field_validator("database_url")
    @classmethod
    def _async_driver(cls, url: str) -> str:
        """Accept the plain URL forms operators write and pick the async driver the service runs on."""
        for plain, driver in (
            ("postgresql://", "postgresql+psycopg://"),
            ("postgres://", "postgresql+psycopg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        if not url.startswith(("postgresql+psycopg://", "sqlite+aiosqlite://")):
            raise ValueError("database_url must be a PostgreSQL or SQLite URL")
        return url

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
