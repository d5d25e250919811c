"""One error shape for every refusal: {"error": {"code", "message", "detail"}} (SPEC §5)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, DBAPIError, OperationalError
from starlette.exceptions import HTTPException

from entitle.api.guard import BodyTooLarge
from entitle.errors import EntitleError, retry_after
from entitle.text import CONTROL_CHARACTERS

_HTTP_CODES = {
    400: ("bad_request", "The request is not valid."),
    401: ("authentication_required", "Sign in or send an API token."),
    403: ("forbidden", "You may not do this."),
    404: ("not_found", "There is nothing at this address."),
    405: ("method_not_allowed", "This address does not accept that method."),
    409: ("conflict", "The request conflicts with the current state."),
}


def error_body(code: str, message: str, detail: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "detail": detail or {}}}


async def _entitle_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, EntitleError)
    wait = retry_after(exc)
    headers = {"Retry-After": str(wait)} if wait is not None else None
    if exc.status == 401:
        headers = {"WWW-Authenticate": "Bearer"}
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    raw = exc.errors()
    errors = [{"at": ".".join(str(p) for p in e.get("loc", ())), "problem": e.get("msg", "")} for e in raw]
    first = errors[0] if errors else {"at": "", "problem": ""}
    detail: dict[str, Any] = {"errors": errors}
    code = "invalid_request"
    if raw and raw[0].get("type") == CONTROL_CHARACTERS:
        # The services' code for the same refusal (entitle.text.single_line), with its numbers.
        code, ctx = CONTROL_CHARACTERS, raw[0].get("ctx") or {}
        detail.update(field=first["at"], character=ctx.get("character"), position=ctx.get("position"))
    return JSONResponse(error_body(code, f"The request is not valid: {first['at']}: {first['problem']}.", detail),
                        status_code=422)


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    if isinstance(exc, BodyTooLarge):
        return JSONResponse(exc.error.to_dict(), status_code=413, headers={"Connection": "close"})
    code, message = _HTTP_CODES.get(exc.status_code, ("error", "The request failed."))
    if isinstance(exc.detail, str) and exc.detail and exc.status_code not in _HTTP_CODES:
        message = exc.detail
    return JSONResponse(error_body(code, message), status_code=exc.status_code,
                        headers=getattr(exc, "headers", None))


async def _data_error(request: Request, exc: Exception) -> JSONResponse:
    # The database refused a value the request carried (a NUL character or an over-long text on
    # PostgreSQL, a number out of range): the caller's mistake, not a server failure.
    return JSONResponse(error_body("value_invalid", "A value in the request cannot be stored: "
                                   "remove control characters, shorten long texts and keep numbers "
                                   "in range."), status_code=400)


_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def unavailable(exc: DBAPIError) -> bool:
    """The database is away or busy, not refusing this request: a connection found dead (the
    dialect's disconnect check invalidated it), a connection that could not be made (no statement
    ran), or SQLite's lock held past the busy timeout. Anything else (a statement past
    PostgreSQL's 65,535 parameters is an OperationalError too) is a failure of the server's own."""
    if exc.connection_invalidated or (isinstance(exc, OperationalError) and exc.statement is None):
        return True
    return isinstance(exc, OperationalError) and "database is locked" in str(exc.orig)


async def _database_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """The database cannot be reached or is busy (a PostgreSQL server restarted under the pool's
    connections, a network cut, SQLite's lock held past the busy timeout): 503 with Retry-After,
    not a 500 — the transaction was rolled back (unless the connection died during its commit,
    which an Idempotency-Key makes safe to repeat), and trying again shortly works. A connection
    found dead is dropped from the pool with every other connection of its age (SQLAlchemy's pool
    invalidation), so the next request opens a fresh one: no per-checkout ping is needed
    (docs/architecture.md)."""
    assert isinstance(exc, DBAPIError)
    if not unavailable(exc):
        return await _unhandled(request, exc)
    structlog.get_logger("entitle").warning("database.unavailable", method=request.method, path=request.url.path,
                                            error=type(exc.orig).__name__ if exc.orig else type(exc).__name__,
                                            invalidated=exc.connection_invalidated)
    return JSONResponse(error_body("database_unavailable", "The database cannot be reached just now. Try again in "
                                   "a moment; a request with an Idempotency-Key is safe to repeat."),
                        status_code=503, headers={"Retry-After": "1"})


async def _unhandled(request: Request, exc: Exception) -> JSONResponse:
    """Any error no handler knows: the error shape with a request id that the log line carries
    too, never a plain-text 500 (Starlette's last-resort middleware calls this, then re-raises
    so that the server logs the traceback)."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    # A fresh logger (not the module's cached one): rare, and it follows the current configuration.
    structlog.get_logger("entitle").error("request.failed", request_id=request_id, method=request.method, path=request.url.path,
              error=type(exc).__name__)
    return JSONResponse(error_body("internal_error", "Something went wrong on the server. Quote request id "
                                   f"{request_id} when you report it.", {"request_id": request_id}),
                        status_code=500, headers={"X-Request-ID": request_id})


def install(app: FastAPI) -> None:
    app.add_exception_handler(Exception, _unhandled)
    app.add_exception_handler(EntitleError, _entitle_error)
    app.add_exception_handler(DataError, _data_error)
    app.add_exception_handler(DBAPIError, _database_unavailable)
    # SQLite's driver raises a bare OverflowError for an integer beyond 64 bits.
    app.add_exception_handler(OverflowError, _data_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
