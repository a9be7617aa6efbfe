"""``create_app(settings, loaded)``: the engine, the compiled XSD, the routers and error handlers, built
from the settings and what was loaded from the files they name (``service/loader.py``). All wiring."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from importlib.metadata import version
from types import FrameType
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from sqlalchemy.ext.asyncio import AsyncEngine

from service import metrics, store
from service.audit import RefusalBudget
from service.broker import AmqpBroker
from service.config import Settings
from service.connection import BodyDeadline
from service.loader import Loaded, load
from service.relay import Relay, count_from_zero, observe_backlog
from service.rest import errors as rest_errors
from service.rest.auth import TokenVerifier
from service.rest.headers import SecurityHeaders
from service.rest.health import health_router
from service.rest.limit import BodyLimit
from service.rest.routes import PREFIX as CITIZEN_API
from service.rest.routes import citizen_router
from service.soap import messages
from service.soap.caller import Callers
from service.soap.endpoint import ContractPosts, SoapEndpoint
from service.store import election, outbox
from service.store.audit_sealer import Sealer
from service.store.crypto import KeyRing
from service.store.repositories import store_statistics
from service.store.tables import STATISTICS
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose
from service.telemetry import TelemetryMiddleware, configure_logging

log = logging.getLogger("service")

# How long background jobs get to stop after the requests have drained: the final seal of the last
# records takes milliseconds; this bounds a database that does not answer.
_BACKGROUND_STOP_SECONDS = 5.0


async def _refresh_store_gauges(
    engine: AsyncEngine,
    every: float,
    stop: asyncio.Event,
    *,
    clock: Callable[[], dt.datetime],
    destinations: Sequence[str],
) -> None:
    """Keep the stored-state gauges current, off the request path (a scrape never queries the store):
    the outbox's too, so that a growing outbox shows where no relay runs. Stops at ``stop``, between two
    rounds, never inside a transaction."""
    while not stop.is_set():
        try:
            async with engine.connect() as connection:
                with store.background():
                    stats = await store_statistics(connection)
                    waiting = await outbox.backlog(connection)
            for care in (True, False):
                for citizen in (True, False):
                    metrics.STORED.labels(
                        care_available=str(care).lower(), citizen_available=str(citizen).lower()
                    ).set(stats.certificates.get((care, citizen), 0))
            metrics.CITIZENS_WITH_CONSENT.set(stats.citizens_with_consent)
            metrics.AUDIT_RECORDS.set(stats.audit_records)
            observe_backlog(waiting, now=clock(), destinations=destinations)
        except Exception as exc:  # the gauges wait for the next round; the service goes on
            log.warning("store gauges not refreshed: %s", type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every)


# Said once at start where no relay runs (README.md, "Recipients and statistics").
NO_BROKER = (
    "NO BROKER: INTYG_BROKER_URL is not set, so no relay runs: deliveries to recipients and statistics "
    "events stay in the outbox, unpublished (`intygstjanst outbox` shows them)"
)


def destinations(recipients: Sequence[str]) -> tuple[str, ...]:
    """Where events go: each recipient (by part code) and statistics."""
    return (*recipients, STATISTICS)


def relay(settings: Settings, engine: AsyncEngine, keyring: KeyRing, recipients: Sequence[str]) -> Relay:
    """The outbox relay of ``settings`` (which name a broker) on ``engine``: the service's lifespan and
    ``intygstjanst relay`` run it."""
    assert settings.broker_url is not None
    to = destinations(recipients)
    broker = AmqpBroker(
        settings.broker_url.get_secret_value(),
        exchange=settings.broker_exchange,
        destinations=to,
        timeout=settings.broker_timeout_seconds,
        delivery_limit=settings.broker_delivery_limit,
    )
    return Relay(
        engine,
        keyring,
        broker,
        clock=settings.clock(),
        zone=ZoneInfo(settings.timezone),
        max_attempts=settings.relay_max_attempts,
        first_backoff=settings.relay_backoff_seconds,
        longest_backoff=settings.relay_longest_backoff_seconds,
        every=settings.relay_every_seconds,
        batch=settings.relay_batch,
        reconnect=settings.broker_reconnect_seconds,
        destinations=to,
        lock_file=election.lock_file_beside(settings.database_url, "relay.lock")
        if settings.is_sqlite
        else None,
    )


def create_app_from_environment() -> FastAPI:
    """The app of ``intygstjanst serve --workers N`` (N > 1): each worker process builds its own from the
    environment, loading the files once; a single worker is given the app ``serve`` built."""
    settings = Settings()
    configure_logging(settings)
    return create_app(settings)


def _drain_on_sigterm(app: FastAPI) -> Callable[[], None]:
    """Readiness turns false the moment SIGTERM arrives, before the server's own handler stops it
    accepting; returns what puts the previous handler back."""
    previous = signal.getsignal(signal.SIGTERM)

    def handler(signum: int, frame: FrameType | None) -> None:
        app.state.draining = True
        if callable(previous):
            previous(signum, frame)

    try:
        signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (an app in a test client): the server owns signals
        return lambda: None

    def restore() -> None:
        signal.signal(signal.SIGTERM, previous)

    return restore


def callers(settings: Settings, loaded: Loaded) -> Callers:
    """Who calls the SOAP endpoint: with a permission table, the system its client certificate
    proves; without one (the development default) the development consumer (README.md, "Callers")."""
    return Callers(
        table=loaded.permissions,
        certificates=loaded.client_certificates,
        trusted_proxies=settings.trusted_proxies,
        client_cert_header=settings.client_cert_header,
    )


def create_app(settings: Settings, loaded: Loaded | None = None) -> FastAPI:
    """The app of ``settings``, built from ``loaded`` (read from the files they name when not given)."""
    if loaded is None:
        loaded = load(settings)
    soap_callers = callers(settings, loaded)
    # One key ring, shared by every unit of work.
    keyring = loaded.keyring
    engine = create_engine(
        settings.database_url, pool_size=settings.db_pool_size, timeouts=settings.database_timeouts()
    )
    zone = ZoneInfo(settings.timezone)
    recipients = loaded.recipients
    signer = loaded.signer

    def unit_of_work() -> SqlUnitOfWork:
        return SqlUnitOfWork(engine, keyring, deadline=settings.db_deadline_seconds)

    clock = settings.clock()
    # One budget for both channels: a flood through one leaves none for the other to add.
    unidentified = RefusalBudget(
        per_second=settings.audit_unidentified_per_second,
        burst=settings.audit_unidentified_burst,
        on_skipped=metrics.REFUSALS_NOT_AUDITED.inc,
    )

    soap = SoapEndpoint(
        schema=messages.load_schema(),
        unit_of_work=unit_of_work,
        clock=clock,
        max_request_bytes=settings.max_request_bytes,
        recipients=recipients,
        business_rules=loaded.business_rules,
        callers=soap_callers,
        unidentified=unidentified,
        public_base_url=settings.public_base_url,
    )
    verifier = TokenVerifier(
        loaded.portal_keys,
        issuer=settings.portal_issuer,
        audience=settings.portal_audience,
        leeway=settings.token_leeway_seconds,
    )
    metrics.BUILD_INFO.labels(version=version("intygstjanst")).set(1)
    # Where events go (each recipient, and statistics): the outbox gauges' and counters' series.
    outgoing = destinations(list(recipients))
    count_from_zero(outgoing)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        sealer = Sealer(
            engine,
            signer=signer,
            clock=clock,
            checkpoint_every=settings.audit_checkpoint_every,
            checkpoint_seconds=settings.audit_checkpoint_seconds,
            every=settings.audit_seal_seconds,
        )
        background = [
            asyncio.create_task(
                _refresh_store_gauges(
                    engine,
                    settings.metrics_refresh_seconds,
                    stop,
                    clock=clock,
                    destinations=outgoing,
                )
            ),
            # The sealer seals what is left and signs the head once stopped: the last records served
            # get their checkpoint before the process goes.
            asyncio.create_task(sealer.run(stop)),
        ]
        if settings.broker_url is not None:
            background.append(
                asyncio.create_task(relay(settings, engine, keyring, list(recipients)).run(stop))
            )
        else:
            log.warning(NO_BROKER)
        restore_signal = _drain_on_sigterm(app)
        yield
        restore_signal()
        stop.set()
        # Each stops between two transactions; only one stuck on an unanswering database is cancelled.
        _done, stuck = await asyncio.wait(background, timeout=_BACKGROUND_STOP_SECONDS)
        for task in stuck:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await dispose(engine)

    # /docs and /redoc load their JavaScript and CSS from the service itself, not from a CDN: a care network
    # such as Sjunet reaches no internet, and the pages would stay blank (README.md, "Citizen REST API").
    app = FastAPIOffline(
        title="Intygstjänsten",
        version=version("intygstjanst"),
        summary="The store of medical certificates: the citizen REST API (the SOAP contracts are in contracts/)",
        lifespan=lifespan,
        # A path with a slash too many is an unknown one: Starlette's redirect would name the request's
        # Host header, which anyone may write, and drop the prefix an ingress adds (README.md, "Behind an
        # ingress").
        redirect_slashes=False,
    )
    app.state.engine = engine
    app.state.draining = False
    rest_errors.install(app)
    app.include_router(
        health_router(
            engine,
            draining=lambda: bool(app.state.draining),
            deadline=settings.db_ready_deadline_seconds,
        )
    )
    app.include_router(
        citizen_router(
            verifier=verifier,
            unit_of_work=unit_of_work,
            clock=clock,
            recipients=recipients,
            zone=zone,
            unidentified=unidentified,
        )
    )
    app.include_router(soap.router())

    app.mount("/contracts", StaticFiles(directory=messages.CONTRACTS), name="contracts")
    app.add_middleware(ContractPosts, endpoint=soap)
    app.add_middleware(BodyLimit, prefix=CITIZEN_API, max_bytes=settings.max_json_bytes)
    app.add_middleware(BodyDeadline, seconds=settings.body_deadline_seconds)
    app.add_middleware(rest_errors.Unforeseen)
    app.add_middleware(SecurityHeaders, private_prefix=CITIZEN_API, https=settings.tls_cert_file is not None)
    app.add_middleware(TelemetryMiddleware, soap_operations=soap.operations())
    return app
