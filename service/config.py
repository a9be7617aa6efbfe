"""Settings, read from the environment (prefix ``INTYG_``) and validated once at start-up.

Only this module reads the environment; ``create_app(settings)`` and the CLI take a ``Settings``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from service.model import Party, Recipient

# The national recipients and the certificate types each takes, when no recipients file is given.
DEFAULT_RECIPIENTS = (
    Recipient(
        Party.FKASSA, "Försäkringskassan", frozenset({"LISJP", "LUSE", "LUAE_NA", "LUAE_FS", "FK7263"})
    ),
    Recipient(
        Party.TRANSP, "Transportstyrelsen", frozenset({"TSTRK1007", "TSTRK1031", "TSTRK1009", "TSTRK1062"})
    ),
    Recipient(Party.AF, "Arbetsförmedlingen", frozenset({"AF00213", "AF00251"})),
    Recipient(Party.SKV, "Skatteverket", frozenset({"DB"})),
    Recipient(Party.SOS, "Socialstyrelsen", frozenset({"DOI"})),
)


class _RecipientEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Party
    name: str = Field(min_length=1)
    certificate_types: list[str]


def default_database_url() -> str:
    """The embedded default: a SQLite file in the working directory, so one command starts the service."""
    return f"sqlite+aiosqlite:///{Path.cwd() / 'intygstjanst.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTYG_", extra="forbid", frozen=True)

    # "production" (the Helm chart's default) refuses to start on development defaults.
    profile: Literal["development", "production"] = "development"
    database_url: str = Field(default_factory=default_database_url)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Wall-clock zone of the contracts' timestamps, which carry no zone (rivta/README.md).
    timezone: str = "Europe/Stockholm"
    # Largest SOAP request accepted; the biggest real certificate is a few tens of kB.
    max_request_bytes: int = Field(default=2_000_000, ge=10_000)
    log_level: str = "INFO"

    # Citizen REST API: the portal signs a bearer token (ES256 or RS256) naming the citizen in `sub`.
    # Its public key(s): a JWKS file or a PEM file. With neither, only the development key in
    # `dev_key_file` is accepted (`intygstjanst dev-token`), and `serve` says so loudly.
    portal_jwks_file: Path | None = None
    portal_public_key_file: Path | None = None
    portal_issuer: str = "intygstjanst-dev-portal"
    portal_audience: str = "intygstjanst"
    token_leeway_seconds: int = Field(default=30, ge=0, le=300)
    dev_key_file: Path = Field(default_factory=lambda: Path.cwd() / "intygstjanst-dev-portal-key.json")
    # Recipients a citizen may send to: a JSON list of {"id", "name", "certificate_types"}; without
    # it the built-in registry of the national recipients (service/recipient.py) applies.
    recipients_file: Path | None = None
    max_json_bytes: int = Field(default=65_536, ge=1_024)
    # How often the stored-state gauges (certificates by availability, consents, audit records) are
    # recounted; a scrape never queries the database.
    metrics_refresh_seconds: float = Field(default=30.0, gt=0)
    # On SIGTERM: stop accepting, let requests in flight finish for at most this long, then exit
    # (below Kubernetes' terminationGracePeriodSeconds, default 30).
    shutdown_grace_seconds: int = Field(default=20, ge=1, le=600)

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

    def recipients(self) -> dict[str, Recipient]:
        """The recipient registry, by id: the configured file, or the national recipients."""
        if self.recipients_file is None:
            return {r.party.value: r for r in DEFAULT_RECIPIENTS}
        entries = [
            _RecipientEntry.model_validate(e) for e in json.loads(self.recipients_file.read_text("utf-8"))
        ]
        return {e.id.value: Recipient(e.id, e.name, frozenset(e.certificate_types)) for e in entries}

    def unfit_to_serve(self) -> list[str]:
        """Why these settings may not serve requests: the production profile refuses development
        defaults. (Migrating needs none of them, so only ``serve`` asks.)"""
        problems = []
        if self.profile == "production":
            if not self.portal_key_configured:
                problems.append(
                    "the portal's key (INTYG_PORTAL_JWKS_FILE or INTYG_PORTAL_PUBLIC_KEY_FILE) is not set"
                )
            if self.is_sqlite:
                problems.append(
                    "the database is the embedded SQLite default, not PostgreSQL (INTYG_DATABASE_URL)"
                )
        return problems

    @property
    def portal_key_configured(self) -> bool:
        return self.portal_jwks_file is not None or self.portal_public_key_file is not None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
