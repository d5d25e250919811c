"""The ASGI application: REST API under /api/v1, the web UI, static files, /healthz."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy import text

from entitle import __version__
from entitle.access_commander import heartbeat
from entitle.api import errors
from entitle.api.routes import (access_commander, axis, catalog, history, issuer, ledger, my2n, my2n_csv,
                                notifications, systems, tenancy, webhooks)
from entitle.clock import Clock
from entitle.config import Settings
from entitle.context import Context, build
from entitle.db import READ_ONLY
from entitle.logs import configure as configure_logging
from entitle.logs import log


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               ctx: Context | None = None) -> FastAPI:
    ctx = ctx or build(settings, clock)
    ctx.prepare()
    configure_logging(ctx.settings)
    heartbeats = heartbeat.Heartbeats(ctx)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # The heartbeat flusher runs while the server does; on shutdown it writes what is left.
        heartbeats.start()
        try:
            yield
        finally:
            try:
                await anyio.to_thread.run_sync(heartbeats.stop)
            except Exception as exc:  # the database is gone: what was buffered is lost
                log.error("heartbeat.final_flush_failed", error=str(exc),
                          devices_lost=heartbeats.pending_devices())

    app = FastAPI(
        title="Entitle",
        version=__version__,
        description="License management for devices and device software. Errors always have the "
                    'shape {"error": {"code", "message", "detail"}}; POSTs that move units need an '
                    "Idempotency-Key header.",
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.ctx = ctx
    app.state.heartbeats = heartbeats
    errors.install(app)

    # Each area's router straight into the app, with the prefix given here: the same routes and
    # OpenAPI document as one /api/v1 router holding them all, but FastAPI then does not build
    # every route a second time to check that none has an empty path (~0.5 s per app).
    for module in (tenancy, ledger, history, catalog, issuer, systems, access_commander, axis, my2n, my2n_csv,
                   webhooks, notifications):
        app.include_router(module.router, prefix="/api/v1",
                           responses={401: {"model": errors_model()}, 404: {"model": errors_model()}})

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        # Read-only: on SQLite a health check must not take (and queue for) the write lock.
        with ctx.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "database": ctx.engine.dialect.name, "version": __version__}

    from entitle.web import views as web

    web.install(app)

    @app.get("/api/v1/ping", tags=["health"])
    async def ping() -> dict[str, bool]:
        """The app's bare JSON endpoint (no database): the ceiling the heartbeat benchmark
        compares against."""
        return {"pong": True}

    # The paths a whole fleet calls go first (the router tries routes in order); the bare
    # endpoint sits beside them so that the benchmark compares like with like.
    app.router.routes.insert(0, app.router.routes.pop())
    heartbeat.install(app, heartbeats)
    from entitle.api.guard import Guard
    from entitle.my2n.csvio import MAX_BYTES as CSV_BYTES

    s = ctx.settings
    app.add_middleware(Guard, default=s.max_request_bytes, hsts=s.cookie_secure, larger=[
        (r"/api/v1/catalog", s.max_catalog_bytes),
        # A batch of up to 100,000 devices (axis.MAX_DEVICES_PER_CALL) is about 8 MB of JSON.
        (r"/api/v1/orgs/[^/]+/axis/systems/[^/]+/devices(/remove)?", DEVICE_BATCH_BYTES),
        (r"/api/v1/orgs/[^/]+/sites/[^/]+/import", CSV_BYTES), (r"/my2n/sites/[^/]+/import", CSV_BYTES)])
    return app


DEVICE_BATCH_BYTES = 32 * 1024 * 1024  # 100,000 devices with serials and hardware names at their longest


def errors_model() -> Any:
    from entitle.api.schemas import ErrorBody

    return ErrorBody


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): every worker builds its own engine from settings."""
    return create_app()
