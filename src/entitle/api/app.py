"""The ASGI application: REST API under /api/v1, the web UI, static files, /healthz."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts

from entitle import __version__
from entitle.access_commander import heartbeat
from entitle.api import answers, errors
from entitle.api.deps import current_actor
from entitle.api.routes import (access_commander, attention, axis, catalog, history, issuer, ledger, my2n, my2n_csv,
                                notifications, systems, tenancy, webhooks)
from entitle.api.schemas import ErrorBody
from entitle.clock import Clock
from entitle.config import Settings
from entitle.context import Context, build
from entitle.db import HealthCheck
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
            await database_answers.aclose()

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
                   webhooks, notifications, attention):
        app.include_router(module.router, prefix="/api/v1")

    database_answers = HealthCheck(ctx.engine)
    app.state.answers = answers.Answers(mark=database_answers, now=ctx.clock.now, check=ctx.settings.answers_check,
                                        enabled=ctx.settings.remember_answers)

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict[str, Any]:
        # On the event loop, on a connection of its own (db.HealthCheck): no thread, no pool, no lock.
        await database_answers()
        return {"status": "ok", "database": ctx.engine.dialect.name, "version": __version__}

    # Load balancers call it often: first, like the fleet's paths (the router tries routes in order).
    app.router.routes.insert(0, app.router.routes.pop())

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
    document_errors(app)
    serve_openapi_once(app)
    from entitle.api.guard import Guard
    from entitle.my2n.csvio import MAX_BYTES as CSV_BYTES

    s = ctx.settings
    app.add_middleware(Guard, default=s.max_request_bytes, hsts=s.cookie_secure, larger=[
        (r"/api/v1/catalog", s.max_catalog_bytes), (r"/issuer/catalog", s.max_catalog_bytes),
        # A batch of up to 100,000 devices (axis.MAX_DEVICES_PER_CALL) is about 8 MB of JSON.
        (r"/api/v1/orgs/[^/]+/axis/systems/[^/]+/devices(/remove)?", DEVICE_BATCH_BYTES),
        (r"/api/v1/orgs/[^/]+/sites/[^/]+/import", CSV_BYTES), (r"/my2n/sites/[^/]+/import", CSV_BYTES)])
    return app


DEVICE_BATCH_BYTES = 32 * 1024 * 1024  # 100,000 devices with serials and hardware names at their longest


# What each error status means, in every operation that can answer it (docs/api.md).
ERROR_STATUSES = {
    400: "Refused: error.code says why (a rule of the request, e.g. catalog_invalid or key_malformed; "
         "value_invalid: a value the database cannot store; bad_request: a body that is not UTF-8 JSON).",
    401: "authentication_required or token_invalid: send a valid token as 'Authorization: Bearer <token>'.",
    402: "payment_declined or payment_method_missing: nothing was charged.",
    403: "The caller may not do this: role_insufficient, issuer_only or a rule of the request.",
    404: "Nothing by that name or id here (another organization's objects look the same, R-CORE-1).",
    409: "The request conflicts with the current state (e.g. *_exists, insufficient_units).",
    413: "request_too_large: the body is over this address's limit (detail.limit_bytes).",
    422: "invalid_request (detail.errors names each field) or idempotency_key_reused.",
    429: "rate_limited: try again after Retry-After seconds.",
    500: "internal_error: a failure on the server; quote detail.request_id (also in the server's log).",
    502: "payment_provider_error: the payment provider answered with an error.",
    503: "Busy or unreachable (database_unavailable, password_checks_busy, payment_provider_unreachable): retry "
         "after Retry-After.",
}


def route_dependants(dependant: Dependant) -> Iterator[Dependant]:
    """The route's own parameters and those of every dependency it uses (CurrentActor, Paging…)."""
    yield dependant
    for sub in dependant.dependencies:
        yield from route_dependants(sub)


def shape_statuses(route: Any) -> set[int]:
    """The error statuses an operation can answer because of its shape, whatever its rules: 422
    with any parameter or body (validation); 400 with a body, a path or a query parameter other
    than ``limit`` and ``cursor`` (a value the database cannot store; a body that is not UTF-8
    JSON); 413 with a body (over its limit); 404 with a path parameter; 401 with an API token;
    500 and 503 (the database unreachable or busy: database_unavailable) for every one."""
    every = list(route_dependants(route.dependant))
    path = [p for d in every for p in d.path_params]
    query = [p for d in every for p in d.query_params]
    body = [p for d in every for p in d.body_params]
    others = [p for d in every for p in (*d.header_params, *d.cookie_params)]
    statuses = {500, 503}
    if path or query or body or others:
        statuses.add(422)
    if body or path or [p for p in query if p.name not in ("limit", "cursor")]:  # paging: in range by design
        statuses.add(400)
    if body:
        statuses.add(413)
    if path:
        statuses.add(404)
    if any(d.call is current_actor for d in every):
        statuses.add(401)
    return statuses


def document_errors(app: FastAPI) -> None:
    """Make the OpenAPI document list, for every operation, each error status it can answer,
    with the error shape: those of its shape (``shape_statuses``) and those its route declares
    (``responses=refusals(...)``, api/deps.py). FastAPI's own 422 schema is not what the API
    answers: it is replaced too."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        error = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
        components.update(error.pop("$defs", {}))
        components["ErrorBody"] = error
        content = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
        for route in iter_route_contexts(app.routes):  # the included routers' routes too
            if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
                continue
            for method in route.methods:
                responses = schema["paths"][route.path_format][method.lower()]["responses"]
                declared = {int(s) for s in responses if s.isdigit() and int(s) >= 400}
                for status in sorted(declared | shape_statuses(route)):
                    documented = responses.setdefault(str(status), {})
                    if documented.get("description") in (None, "", "Additional Response", "Validation Error"):
                        documented["description"] = ERROR_STATUSES.get(status, "Refused: error.code says why.")
                    documented["content"] = content
        for unused in ("HTTPValidationError", "ValidationError"):
            components.pop(unused, None)
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def serve_openapi_once(app: FastAPI) -> None:
    """``/openapi.json`` from bytes made on the first request (per root path), not the document
    built and encoded again for every request (~14 ms each): the routes do not change while the
    process runs. Wraps whatever ``app.openapi`` is (``document_errors`` above)."""
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route, request_response

    encoded: dict[str, bytes] = {}

    async def openapi_json(request: Any) -> Response:
        root_path = request.scope.get("root_path", "").rstrip("/")
        body = encoded.get(root_path)
        if body is None:
            schema = app.openapi()
            if root_path and app.root_path_in_servers:  # as FastAPI's own handler does
                if root_path not in {s.get("url") for s in schema.get("servers", [])}:
                    schema = {**schema, "servers": [{"url": root_path}, *schema.get("servers", [])]}
            body = encoded.setdefault(root_path, JSONResponse(schema).body)
        return Response(body, media_type="application/json")

    for route in app.router.routes:
        if isinstance(route, Route) and route.path == app.openapi_url:
            route.endpoint, route.app = openapi_json, request_response(openapi_json)


def app_from_env() -> FastAPI:
    """Factory for uvicorn (``--factory``): every worker builds its own engine from settings."""
    return create_app()
