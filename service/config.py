"""Settings, read from the environment (prefix ``INTYG_``) and validated once at start-up.

Only this module reads the environment. Settings are plain validated values: paths, numbers, strings,
URLs. The files they name are read once, by ``service/loader.py``, into the objects they describe
(the key ring, the permission table, the recipients, the audit log's signing key); this module holds
only those files' shapes. ``create_app`` and the CLI take a ``Settings`` and what was loaded from it.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Literal, Self
from zoneinfo import ZoneInfo

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from service import certificate_type
from service.model import Party, Recipient
from service.store.timeout import DEFAULT_DEADLINE, DEFAULT_TIMEOUTS, Timeouts

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
# How log lines are written (README.md, "Logs"; service/telemetry.py).
LogFormat = Literal["auto", "json", "text"]
LOOPBACK_NAMES = frozenset({"localhost"})

# The national recipients, when no recipients file is given, each taking the types the type table
# sends to it.
DEFAULT_RECIPIENTS = tuple(
    Recipient(
        party, name, frozenset(t.code for t in certificate_type.TYPES.values() if party in t.recipients)
    )
    for party, name in (
        (Party.FKASSA, "Försäkringskassan"),
        (Party.TRANSP, "Transportstyrelsen"),
        (Party.AF, "Arbetsförmedlingen"),
        (Party.SKV, "Skatteverket"),
        (Party.SOS, "Socialstyrelsen"),
    )
)


class InvalidSettings(ValueError):
    """Settings or a settings file that do not validate, said in one line that quotes no value (a
    value may be a key)."""


def _one_line(exc: ValidationError, where: str) -> InvalidSettings:
    # Each error's place and pydantic's message, which never quotes the value (``str(exc)`` would).
    reasons = (
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" if e["loc"] else e["msg"] for e in exc.errors()
    )
    return InvalidSettings(f"{where}: {'; '.join(reasons)}")


# --- The files the settings name, as operators write them. Their shape is checked here; what they
# --- mean is checked where they are loaded (service/loader.py).


class RecipientEntry(BaseModel):
    """One recipient of the recipients file (README.md, "Configuration")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Party
    name: str = Field(min_length=1)
    certificate_types: list[str]


class RecipientsFile(RootModel[list[RecipientEntry]]):
    model_config = ConfigDict(frozen=True)

    @classmethod
    def parse(cls, data: bytes, where: str) -> list[RecipientEntry]:
        try:
            return cls.model_validate_json(data).root
        except ValidationError as exc:
            raise _one_line(exc, where) from None


class ConsumerEntry(BaseModel):
    """One calling system of the permission table (README.md, "Callers"). Every list is explicit:
    ["*"] means all. Which operations exist, and which a system limited to some care givers may not
    be granted, is ``access.permission_table``'s to check."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    hsa_id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    operations: list[str] = Field(min_length=1)
    care_givers: list[str] = Field(min_length=1)
    logical_addresses: list[str] = Field(min_length=1)
    # A recipient's system (Försäkringskassan's...) names its part code: it reads what was sent to it, and
    # sets its statuses, as that part only (README.md, "Callers").
    recipient: Party | None = None

    @field_validator("recipient")
    @classmethod
    def _a_recipient(cls, value: Party | None) -> Party | None:
        if value is not None and not value.is_recipient:
            raise ValueError(f"{value} is not a recipient's part code")
        return value

    @field_validator("operations", "care_givers", "logical_addresses")
    @classmethod
    def _star_alone(cls, values: list[str]) -> list[str]:
        if "*" in values and values != ["*"]:
            raise ValueError('"*" (all) stands alone')
        if any(not value.strip() for value in values):
            raise ValueError("an entry is blank")
        return values


class PermissionsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    consumers: list[ConsumerEntry]

    @classmethod
    def parse(cls, data: bytes, where: str) -> PermissionsFile:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise _one_line(exc, where) from None


def is_loopback(host: str) -> bool:
    """Whether a listening address is reachable from this machine only."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeksEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    current: str
    keys: dict[str, str]


class KeysFile(BaseModel):
    """``{"kek": {"current": "<id>", "keys": {"<id>": "<base64 of 32 bytes>", ...}}, "lookup_key":
    "<base64 of 32 bytes>"}`` (README.md, "Data at rest"). The keys stay base64 text here;
    ``store/crypto.py`` decodes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kek: KeksEntry
    lookup_key: str

    @classmethod
    def parse(cls, data: bytes, where: str) -> KeysFile:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            # Where, not what: the values are keys.
            places = sorted({".".join(str(p) for p in e["loc"]) or "(the whole file)" for e in exc.errors()})
            raise InvalidSettings(f"{where} is not a keys file: check {', '.join(places)}") from None


def from_environment() -> Settings:
    """The settings of the environment, or ``InvalidSettings`` saying in one line what is wrong."""
    try:
        return Settings()
    except ValidationError as exc:
        raise _one_line(exc, "the settings (INTYG_...)") from None


def default_database_url() -> str:
    """The embedded default: a SQLite file in the working directory, so one command starts the service."""
    return f"sqlite+aiosqlite:///{Path.cwd() / 'intygstjanst.db'}"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="INTYG_", extra="forbid", frozen=True)

    # "production" (the Helm chart's default) refuses to start on development defaults.
    profile: Literal["development", "production"] = "development"
    database_url: str = Field(default_factory=default_database_url)
    db_pool_size: int = Field(default=10, ge=1, le=200)
    # Nothing waits without bound (README.md, "Configuration"; service/store/timeout.py). PostgreSQL ends each wait for a
    # lock, each statement, and each transaction left idle (its locks with it) after these; on SQLite
    # the lock timeout is the busy timeout. Connecting (libpq: whole seconds, at least 2) and waiting
    # for a free connection of the pool are bounded too.
    db_lock_timeout_seconds: float = Field(default=DEFAULT_TIMEOUTS.lock, gt=0, le=600)
    db_statement_timeout_seconds: float = Field(default=DEFAULT_TIMEOUTS.statement, gt=0, le=3600)
    db_idle_in_transaction_timeout_seconds: float = Field(
        default=DEFAULT_TIMEOUTS.idle_in_transaction, gt=0, le=3600
    )
    db_connect_timeout_seconds: int = Field(default=DEFAULT_TIMEOUTS.connect, ge=2, le=600)
    db_pool_timeout_seconds: float = Field(default=DEFAULT_TIMEOUTS.pool, gt=0, le=600)
    # A frozen or unreachable database answers nothing, not even a timeout: each request's unit of
    # work ends within this, on the client's own clock. /readyz has its own, shorter one, within
    # the readiness probe's timeout (3 s in the Helm chart).
    db_deadline_seconds: float = Field(default=DEFAULT_DEADLINE, gt=0, le=3600)
    db_ready_deadline_seconds: float = Field(default=1.5, gt=0, le=60)
    # Wall-clock zone of the contracts' timestamps, which carry no zone (rivta/README.md).
    timezone: str = "Europe/Stockholm"
    # Largest SOAP request accepted; the biggest real certificate is a few tens of kB.
    max_request_bytes: int = Field(default=2_000_000, ge=10_000)
    log_level: str = "INFO"
    # "json": one JSON object per line, for a log collector; "text": short lines for a person; "auto": text
    # where stdout is a terminal outside the production profile, JSON everywhere else (`--log-format`
    # of any command overrides it).
    log_format: LogFormat = "auto"

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
    # it the built-in national recipients (DEFAULT_RECIPIENTS) apply; service/loader.py reads it.
    recipients_file: Path | None = None
    max_json_bytes: int = Field(default=65_536, ge=1_024)
    # The national business rules of the certificate types (README.md, "Certificate types";
    # service/business_rules.py): the folder of the Schematron rule files, one per type and major
    # version, each RegisterCertificate 3 checked against its type's. Without it the development profile
    # checks types and versions only, and says so loudly; the production profile refuses to start.
    business_rules_dir: Path | None = None
    # Refusals of callers that proved no identity (no valid token or client certificate) are audited
    # one by one up to a burst, refilled at this rate, per worker; past it they are only counted
    # (intyg_refusals_not_audited_total), so that a flood cannot grow the audit trail without bound.
    audit_unidentified_burst: int = Field(default=100, ge=1, le=100_000)
    audit_unidentified_per_second: float = Field(default=10.0, gt=0, le=10_000)
    # How often the stored-state gauges (certificates by availability, consents, audit records) are
    # recounted; a scrape never queries the database.
    metrics_refresh_seconds: float = Field(default=30.0, gt=0)
    # The port of /metrics, on the address the service listens on (`serve --host`) and apart from the
    # API's port, so that a network policy admits Prometheus to it and no caller of the API (README.md, "Configuration").
    # 9464 is the port OpenTelemetry's Prometheus exporter takes by default.
    metrics_port: int = Field(default=9464, ge=1, le=65535)
    # On SIGTERM: stop accepting, let requests in flight finish for at most this long, then exit
    # (below Kubernetes' terminationGracePeriodSeconds, default 30).
    shutdown_grace_seconds: int = Field(default=20, ge=1, le=600)
    # Slow and silent clients (README.md, "Input"; service/connection.py): in direct mode no ingress bounds
    # them. A request's headers must be complete within `header_deadline_seconds` of the connection's
    # opening (or of the request's first byte on a kept-alive one), else 408 and the connection closes;
    # its body within `body_deadline_seconds` of its headers (2 MB at 200 kB/s), else the channel's
    # error. Each worker holds at most `max_connections` open; the next is answered 503 and closed.
    header_deadline_seconds: float = Field(default=5.0, gt=0, le=300)
    body_deadline_seconds: float = Field(default=10.0, gt=0, le=600)
    max_connections: int = Field(default=500, ge=1, le=10_000)
    # Encryption at rest (README.md, "Data at rest"; service/store/crypto.py): the key-encryption keys
    # (KEKs) that wrap each certificate's data key, and the lookup key that hashes personal identity
    # numbers for lookups. Either a keys file (JSON, see KeysFile; mode 0600, e.g. a mounted secret) or
    # INTYG_KEK ("<id>:<base64>[,<id>:<base64>...]", the first current, the others decrypt-only) with
    # INTYG_LOOKUP_KEY (base64 of 32 bytes). With neither, the development profile on the embedded
    # SQLite database generates keys once into `dev_keys_file` (lose it and the data is lost); on
    # PostgreSQL or in production the service refuses to start.
    keys_file: Path | None = None
    kek: SecretStr | None = None
    lookup_key: SecretStr | None = None
    dev_keys_file: Path = Field(default_factory=lambda: Path.cwd() / "intygstjanst-dev-keys.json")

    @model_validator(mode="after")
    def _one_source_of_keys(self) -> Self:
        if self.keys_file is not None and (self.kek is not None or self.lookup_key is not None):
            raise ValueError("set either INTYG_KEYS_FILE or INTYG_KEK with INTYG_LOOKUP_KEY, not both")
        if (self.kek is None) != (self.lookup_key is None):
            raise ValueError("INTYG_KEK and INTYG_LOOKUP_KEY are set together")
        return self

    # SOAP callers (care systems) prove who they are with a client certificate (mutual TLS; README.md, "Callers").
    # The service terminates TLS itself with its certificate and key (PEM); client certificates must
    # chain to the CA bundle (SITHS). Without these, `serve` is the embedded development default:
    # plain HTTP on loopback only, every SOAP caller the development consumer.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Which calling system (the HSA id in its certificate) may call which operation, for which care
    # givers and logical addresses: a JSON file {"consumers": [...]} (README.md, service/access.py).
    permissions_file: Path | None = None
    # Behind a TLS-terminating ingress that verifies client certificates itself: the ingress's
    # addresses (IPs or CIDRs, comma-separated or a JSON list). Only a connection from these may name
    # the client certificate in `client_cert_header` (URL-encoded PEM, as ingress-nginx's
    # auth-tls-pass-certificate-to-upstream sends it); the service verifies it again.
    trusted_proxies: Annotated[list[IPNetwork], NoDecode] = Field(default_factory=list)
    client_cert_header: str = Field(default="ssl-client-cert", pattern=r"^[A-Za-z0-9-]+$")
    # Where callers reach the service (scheme, host and any path prefix of the ingress), for the
    # ``soap:address`` of each served WSDL. Without it, a trusted proxy's X-Forwarded-Proto, -Host and
    # -Prefix say it, and otherwise the listening socket does; never a request's own Host header.
    public_base_url: str | None = Field(
        default=None, pattern=r"^https?://[A-Za-z0-9.\[\]:-]+(/[A-Za-z0-9._~/-]*)?$"
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _networks(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else [p for p in text.split(",") if p.strip()]
        if isinstance(value, list):
            # A host address is its own /32 (/128); a network with host bits set is a mistake.
            return [ipaddress.ip_network(str(p).strip()) for p in value]
        return value

    @model_validator(mode="after")
    def _caller_settings_fit_together(self) -> Self:
        """The TLS and permission settings come in the combinations that identify callers."""
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("INTYG_TLS_CERT_FILE and INTYG_TLS_KEY_FILE go together")
        if (self.tls_client_ca_file is None) != (self.permissions_file is None):
            raise ValueError(
                "INTYG_TLS_CLIENT_CA_FILE and INTYG_PERMISSIONS_FILE go together: the CA bundle proves "
                "who calls, the permission table says what they may do"
            )
        if self.tls_cert_file is not None and self.tls_client_ca_file is None:
            raise ValueError(
                "INTYG_TLS_CERT_FILE needs INTYG_TLS_CLIENT_CA_FILE: SOAP callers use mutual TLS"
            )
        if self.trusted_proxies and self.tls_client_ca_file is None:
            raise ValueError(
                "INTYG_TRUSTED_PROXIES needs INTYG_TLS_CLIENT_CA_FILE to verify what they forward"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None and not self.trusted_proxies:
            raise ValueError(
                "INTYG_TLS_CLIENT_CA_FILE needs INTYG_TLS_CERT_FILE (the service terminates TLS) or "
                "INTYG_TRUSTED_PROXIES (a TLS-terminating ingress forwards the client certificate)"
            )
        return self

    # The audit log is a hash chain (README.md, "Audit log"; service/store/audit_chain.py); checkpoints signed with an
    # Ed25519 key the database never holds make rewriting it detectable. The signing key: PEM, PKCS#8.
    # Without it the development profile generates `dev_audit_key_file` once; production refuses.
    audit_signing_key_file: Path | None = None
    # Public keys (PEM, one or more Ed25519) `intygstjanst verify-audit` checks checkpoints with: an
    # auditor needs no private key, and keys rotated out stay here so their checkpoints still verify.
    audit_verify_keys_file: Path | None = None
    # The sealer (store/audit_sealer.py) gives committed records their place in the chain every
    # `audit_seal_seconds`, signs a checkpoint at every place that is a multiple of
    # `audit_checkpoint_every`, and at the head every `audit_checkpoint_seconds` if the chain grew
    # meanwhile: the seal lag and these bound the records a rewrite of the database alone could alter
    # undetected (audit_chain.py).
    audit_seal_seconds: float = Field(default=0.25, gt=0, le=60)
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_seconds: float = Field(default=300.0, gt=0)
    dev_audit_key_file: Path = Field(default_factory=lambda: Path.cwd() / "intygstjanst-dev-audit-key.pem")

    # The broker the outbox relay publishes to (README.md, "Recipients and statistics"; service/relay.py):
    # amqp:// or amqps:// (RabbitMQ), user and password in the URL (a Secret in the Helm chart). Without it
    # (the embedded default) no relay runs: events stay in the outbox (`intygstjanst outbox`), and the
    # service says so at start; the production profile refuses to start.
    broker_url: SecretStr | None = None
    # The exchange the relay publishes to; each destination's queue is `<exchange>.<destination>`.
    broker_exchange: str = Field(default="intygstjanst", pattern=r"^[A-Za-z0-9_.-]{1,100}$")
    # Connecting, declaring the topology and each publisher confirm end after this.
    broker_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # The first wait before connecting again to a broker that could not be reached, doubled per try up to 30 s.
    broker_reconnect_seconds: float = Field(default=1.0, gt=0, le=30)
    # Deliveries of a message to consumers (rejected or unacknowledged) before the broker dead-letters it.
    broker_delivery_limit: int = Field(default=20, ge=1, le=10_000)
    # An event the broker refuses is tried again after `relay_backoff_seconds`, doubled per attempt up to
    # `relay_longest_backoff_seconds`, and given up on (dead-lettered) after `relay_max_attempts`.
    relay_max_attempts: int = Field(default=10, ge=1, le=100)
    relay_backoff_seconds: float = Field(default=1.0, gt=0, le=3600)
    relay_longest_backoff_seconds: float = Field(default=600.0, gt=0, le=86_400)
    # Events per round (one read and one write transaction), and the pause after a round that was not full.
    relay_batch: int = Field(default=500, ge=1, le=10_000)
    relay_every_seconds: float = Field(default=0.2, gt=0, le=60)

    @field_validator("broker_url")
    @classmethod
    def _amqp(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None and not url.get_secret_value().startswith(("amqp://", "amqps://")):
            raise ValueError("the broker URL is amqp://... or amqps://...")
        return url

    @model_validator(mode="after")
    def _deadline_after_the_timeouts(self) -> Self:
        """The server's timeouts and the pool's wait answer with the error they name, and a timeout of
        the server keeps its connection; the deadline is for a database that answers nothing."""
        longest = max(
            self.db_lock_timeout_seconds,
            self.db_statement_timeout_seconds,
            self.db_connect_timeout_seconds,
            self.db_pool_timeout_seconds,
        )
        if self.db_deadline_seconds <= longest:
            raise ValueError(
                "INTYG_DB_DEADLINE_SECONDS must exceed the lock, statement, connect and pool timeouts "
                f"(the longest is {longest} s)"
            )
        return self

    def database_timeouts(self) -> Timeouts:
        return Timeouts(
            lock=self.db_lock_timeout_seconds,
            statement=self.db_statement_timeout_seconds,
            idle_in_transaction=self.db_idle_in_transaction_timeout_seconds,
            connect=self.db_connect_timeout_seconds,
            pool=self.db_pool_timeout_seconds,
        )

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
    def identifies_callers(self) -> bool:
        """SOAP callers prove who they are (the validator above makes the rest of the set complete)."""
        return self.permissions_file is not None

    def unfit_to_serve(self, *, host: str = "127.0.0.1", port: int | None = None) -> list[str]:
        """Why these settings may not serve requests on ``host`` (and the API on ``port``): the
        production profile refuses development defaults, only loopback may be served without identified
        SOAP callers, no profile encrypts a shared database under generated keys (README.md, "Data at
        rest"), and the metrics have a port of their own (README.md, "Configuration"). (Migrating needs
        none of them, so only ``serve`` asks.)"""
        problems = []
        if port == self.metrics_port:
            problems.append(
                f"the metrics port (INTYG_METRICS_PORT) is the API's port {port}: give it another"
            )
        callers = (
            "SOAP callers are not identified: set INTYG_TLS_CLIENT_CA_FILE, INTYG_PERMISSIONS_FILE and "
            "INTYG_TLS_CERT_FILE with INTYG_TLS_KEY_FILE (or INTYG_TRUSTED_PROXIES behind a "
            "TLS-terminating ingress)"
        )
        if not self.identifies_callers and not is_loopback(host):
            problems.append(f"listening on {host}, beyond loopback: {callers}")
        if self.profile == "production":
            if not self.identifies_callers and is_loopback(host):
                problems.append(callers)
            if not self.portal_key_configured:
                problems.append(
                    "the production profile needs the portal's key "
                    "(INTYG_PORTAL_JWKS_FILE or INTYG_PORTAL_PUBLIC_KEY_FILE)"
                )
            if self.is_sqlite:
                problems.append(
                    "the production profile needs PostgreSQL, not the embedded SQLite default (INTYG_DATABASE_URL)"
                )
            if self.audit_signing_key_file is None:
                problems.append("the audit log's signing key (INTYG_AUDIT_SIGNING_KEY_FILE) is not set")
            if self.broker_url is None:
                problems.append(
                    "the production profile needs the broker (INTYG_BROKER_URL): without it nothing "
                    "sent or revoked would reach recipients or statistics"
                )
            if self.business_rules_dir is None:
                problems.append(
                    "the certificate types' business rules (INTYG_BUSINESS_RULES_DIR, the national "
                    "Schematron rule set) are not set: certificates would be stored unchecked"
                )
        if not self.keys_configured and not self.may_generate_keys:
            problems.append(
                "no key-encryption key and lookup key are configured (INTYG_KEYS_FILE, or INTYG_KEK with "
                "INTYG_LOOKUP_KEY); generated development keys serve only the embedded SQLite database "
                "of the development profile"
            )
        return problems

    def clock(self) -> Callable[[], dt.datetime]:
        """The clock of the contracts' timestamps: local wall-clock time in ``timezone``, without a zone
        (rivta/README.md)."""
        zone = ZoneInfo(self.timezone)
        return lambda: dt.datetime.now(zone).replace(tzinfo=None)

    @property
    def may_generate_keys(self) -> bool:
        """Keys generated into a local file fit only a local database: every process of a shared
        PostgreSQL would make its own, and each would lose the others' certificates."""
        return self.profile == "development" and self.is_sqlite

    @property
    def keys_configured(self) -> bool:
        return self.keys_file is not None or self.kek is not None

    @property
    def portal_key_configured(self) -> bool:
        return self.portal_jwks_file is not None or self.portal_public_key_file is not None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")
