"""Health probes: ``/livez`` (the process answers) and ``/readyz`` (it can serve requests: database
reachable, migrations at head, schemas loaded, and not draining after SIGTERM).

``/readyz`` asks the database under a deadline of its own (``INTYG_DB_READY_DEADLINE_SECONDS``), within
the probe's timeout: a database that answers nothing makes it 503 in time, not a probe that times out."""

from __future__ import annotations

from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy.ext.asyncio import AsyncEngine

from service.store import migration
from service.store.timeout import Deadline


def health_router(engine: AsyncEngine, *, draining: Callable[[], bool], deadline: float) -> APIRouter:
    router = APIRouter(tags=["health"])
    head = migration.head_revision()

    @router.get("/livez")
    async def livez() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        checks = {
            # create_app compiles the schemas before it mounts this router: a served app has them.
            "schemas": True,
            "database": False,
            "migrations": False,
            "accepting": not draining(),
        }
        try:
            async with Deadline(deadline):
                checks["migrations"] = await migration.current_revision(engine) == head
            checks["database"] = True
        except Exception:  # any failure to reach the database means not ready
            checks["database"] = False
        ready = all(checks.values())
        return JSONResponse(
            {"status": "ok" if ready else "unavailable", "checks": checks}, 200 if ready else 503
        )

    return router
