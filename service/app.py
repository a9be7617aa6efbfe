"""``create_app(settings)``: the engine, the compiled XSD, the routers and error handlers. All wiring."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import signal
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib.metadata import version
from types import FrameType
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service import metrics, store
from service.config import Settings
from service.rest import errors as rest_errors
from service.rest.auth import TokenVerifier, portal_keys
from service.rest.health import health_router
from service.rest.limit import BodyLimit
from service.rest.routes import PREFIX as CITIZEN_API
from service.rest.routes import citizen_router
from service.soap import messages
from service.soap.caller import Callers, ClientCertificates
from service.soap.endpoint import SoapEndpoint
from service.store import audit_key
from service.store.audit_chain import Signer
from service.store.repositories import log_checkpoint, seal_audit_chain, store_statistics
from service.store.unit_of_work import SqlUnitOfWork, create_engine, dispose, sessions_for
from service.telemetry import TelemetryMiddleware, configure_logging

log = logging.getLogger("service")


async def _refresh_store_gauges(sessions: async_sessionmaker[AsyncSession], every: float) -> None:
    """Keep the stored-state gauges current, off the request path (a scrape never queries the store)."""
    while True:
        try:
            async with sessions() as session:
                with store.background():
                    stats = await store_statistics(session)
            for care in (True, False):
                for citizen in (True, False):
                    metrics.STORED.labels(
                        care_available=str(care).lower(), citizen_available=str(citizen).lower()
                    ).set(stats.certificates.get((care, citizen), 0))
            metrics.CITIZENS_WITH_CONSENT.set(stats.citizens_with_consent)
            metrics.AUDIT_RECORDS.set(stats.audit_records)
        except Exception as exc:  # the gauges wait for the next round; the service goes on
            log.warning("store gauges not refreshed: %s", type(exc).__name__)
        await asyncio.sleep(every)


async def _seal(sessions: async_sessionmaker[AsyncSession], signer: Signer, at: dt.datetime) -> None:
    """Sign a checkpoint at the audit chain's head if it grew, in a transaction of its own."""
    try:
        async with sessions() as session, session.begin():
            with store.background():
                checkpoint = await seal_audit_chain(session, signer, at=at)
    except Exception as exc:  # the next round tries again; the service goes on
        log.warning("audit chain not sealed: %s", type(exc).__name__)
        return
    if checkpoint is not None:
        log_checkpoint(checkpoint)


async def _keep_sealing(
    sessions: async_sessionmaker[AsyncSession],
    signer: Signer,
    clock: Callable[[], dt.datetime],
    every: float,
) -> None:
    """Issue 5: a quiet service still gets its newest records under a signed checkpoint within
    ``every`` seconds, where the in-transaction checkpoints come only every so many records."""
    while True:
        await _seal(sessions, signer, clock())
        await asyncio.sleep(every)


def create_app_from_environment() -> FastAPI:
    """The app of ``intygstjanst serve``: each worker process builds its own from the environment."""
    settings = Settings()
    configure_logging(settings.log_level)
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


def callers(settings: Settings) -> Callers:
    """Who calls the SOAP endpoint: with a permission table, the system its client certificate
    proves; without one (the development default) the development consumer (issue 5)."""
    return Callers(
        table=settings.permissions(),
        certificates=(
            ClientCertificates.from_file(settings.tls_client_ca_file) if settings.tls_client_ca_file else None
        ),
        trusted_proxies=settings.trusted_proxies,
        client_cert_header=settings.client_cert_header,
    )


def create_app(settings: Settings) -> FastAPI:
    soap_callers = callers(settings)
    # Read once: the keys of encryption at rest (issue 5), shared by every unit of work.
    keyring = settings.keyring()
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = sessions_for(engine)
    zone = ZoneInfo(settings.timezone)
    recipients = settings.recipients()
    signer = audit_key.signer(settings)

    def unit_of_work() -> SqlUnitOfWork:
        return SqlUnitOfWork(
            sessions, keyring, signer=signer, checkpoint_every=settings.audit_checkpoint_every
        )

    def clock() -> dt.datetime:
        # The contracts' timestamps are local wall-clock times without a zone (rivta/README.md).
        return dt.datetime.now(zone).replace(tzinfo=None)

    soap = SoapEndpoint(
        schema=messages.load_schema(),
        unit_of_work=unit_of_work,
        clock=clock,
        max_request_bytes=settings.max_request_bytes,
        recipients=recipients,
        callers=soap_callers,
    )
    verifier = TokenVerifier(
        portal_keys(settings),
        issuer=settings.portal_issuer,
        audience=settings.portal_audience,
        leeway=settings.token_leeway_seconds,
    )
    metrics.BUILD_INFO.labels(version=version("intygstjanst")).set(1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        refresher = asyncio.create_task(_refresh_store_gauges(sessions, settings.metrics_refresh_seconds))
        sealer = asyncio.create_task(
            _keep_sealing(sessions, signer, clock, settings.audit_checkpoint_seconds)
        )
        restore_signal = _drain_on_sigterm(app)
        yield
        restore_signal()
        for task in (refresher, sealer):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        # The last records served get their checkpoint before the process goes.
        await _seal(sessions, signer, clock())
        await dispose(engine)

    app = FastAPI(
        title="Intygstjänsten",
        version=version("intygstjanst"),
        summary="The store of medical certificates: the citizen REST API (the SOAP contracts are in contracts/)",
        lifespan=lifespan,
    )
    app.state.engine = engine
    app.state.draining = False
    rest_errors.install(app)
    app.include_router(health_router(engine, schema_loaded=True, draining=lambda: bool(app.state.draining)))
    app.include_router(soap.router())
    app.include_router(
        citizen_router(
            verifier=verifier,
            unit_of_work=unit_of_work,
            clock=clock,
            recipients=recipients,
            zone=zone,
        )
    )

    @app.get("/metrics", include_in_schema=False)
    def prometheus_metrics() -> Response:
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    app.mount("/contracts", StaticFiles(directory=messages.CONTRACTS), name="contracts")
    app.add_middleware(BodyLimit, prefix=CITIZEN_API, max_bytes=settings.max_json_bytes)
    app.add_middleware(TelemetryMiddleware, soap_operations=soap.operations())
    return app
