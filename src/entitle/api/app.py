"""The ASGI application: REST API under /api/v1, the web UI, static files, /healthz."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from entitle import __version__
from entitle.api import errors
from entitle.api.routes import access_commander, catalog, history, issuer, ledger, systems, tenancy
from entitle.clock import Clock
from entitle.config import Settings
from entitle.context import Context, build
from entitle.db import READ_ONLY
from entitle.logs import configure as configure_logging


def create_app(settings: Settings | None = None, clock: Clock | None = None,
               ctx: Context | None = None) -> FastAPI:
    ctx = ctx or build(settings, clock)
    configure_logging(ctx.settings)
    app = FastAPI(
        title="Entitle",
        version=__version__,
        description="License management for devices and device software. Errors always have the "
                    'shape {"error": {"code", "message", "detail"}}; POSTs that move units need an '
                    "Idempotency-Key header.",
        openapi_url="/openapi.json",
    )
    app.state.ctx = ctx
    errors.install(app)

    api = APIRouter(prefix="/api/v1", responses={401: {"model": errors_model()}, 404: {"model": errors_model()}})
    for module in (tenancy, ledger, history, catalog, issuer, systems, access_commander):
        api.include_router(module.router)
    app.include_router(api)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict[str, Any]:
        # Read-only: on SQLite a health check must not take (and queue for) the write lock.
        with ctx.engine.connect().execution_options(**{READ_ONLY: True}) as conn:
            conn.execute(text("SELECT 1"))
        return {"status": "ok", "database": ctx.engine.dialect.name, "version": __version__}

    from entitle.web import views as web

    web.install(app)
    return app


def errors_model() -> Any:
    from entitle.api.schemas import ErrorBody

    return ErrorBody


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): every worker builds its own engine from settings."""
    return create_app()
