"""``create_app(settings)``: the engine, the compiled XSD, the routers and error handlers. All wiring."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from zoneinfo import ZoneInfo

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.config import Settings
from service.rest import errors as rest_errors
from service.rest.auth import TokenVerifier, portal_keys
from service.rest.health import health_router
from service.rest.routes import citizen_router
from service.soap import messages
from service.soap.endpoint import SoapEndpoint
from service.store.unit_of_work import SqlUnitOfWork, create_engine, sessions_for


def create_app(settings: Settings) -> FastAPI:
    engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
    sessions = sessions_for(engine)
    zone = ZoneInfo(settings.timezone)

    def clock() -> dt.datetime:
        # The contracts' timestamps are local wall-clock times without a zone (rivta/README.md).
        return dt.datetime.now(zone).replace(tzinfo=None)

    soap = SoapEndpoint(
        schema=messages.load_schema(),
        unit_of_work=lambda: SqlUnitOfWork(sessions),
        clock=clock,
        max_request_bytes=settings.max_request_bytes,
    )

    verifier = TokenVerifier(
        portal_keys(settings),
        issuer=settings.portal_issuer,
        audience=settings.portal_audience,
        leeway=settings.token_leeway_seconds,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await engine.dispose()

    app = FastAPI(
        title="Intygstjänsten",
        version="0.1.0",
        summary="The store of medical certificates: the citizen REST API (the SOAP contracts are in contracts/)",
        lifespan=lifespan,
    )
    app.state.engine = engine
    rest_errors.install(app)
    app.include_router(health_router(engine, schema_loaded=True))
    app.include_router(soap.router())
    app.include_router(
        citizen_router(
            verifier=verifier,
            unit_of_work=lambda: SqlUnitOfWork(sessions),
            clock=clock,
            recipients=settings.recipients(),
            zone=zone,
            max_body_bytes=settings.max_json_bytes,
        )
    )
    app.mount("/contracts", StaticFiles(directory=messages.CONTRACTS), name="contracts")
    return app
