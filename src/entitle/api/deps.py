"""Request plumbing shared by the API routes: the context, the acting user, pagination."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Annotated, Any, TypeVar

import anyio.to_thread
from fastapi import Depends, Header, Query, Request
from sqlalchemy import event
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.context import Context
from entitle.db import reading, request_reads
from entitle.errors import Unauthorized
from entitle.tenancy import services as tenancy

# The dependencies below are ``async def`` and touch no database themselves: FastAPI runs a
# plain ``def`` dependency in its thread pool, one hop (~0.1-0.3 ms here) each. The database
# work happens in the route's own thread (docs/benchmarks.md, "The API layer"). They take the
# context from the request rather than from ``Ctx``: FastAPI solves a dependency again wherever
# it appears in the tree (its cache only saves the call), ~20 µs each time.


async def get_ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[Context, Depends(get_ctx)]

_CONNECTED = "entitle_connected"


@event.listens_for(Session, "after_begin")
def _connected(session: Session, _transaction: Any, _connection: Any) -> None:
    session.info[_CONNECTED] = True  # the request's session holds a connection: end it in a thread


class RequestSession:
    """The one session (and connection) of an API request, shared by authentication and the
    route, made on first use. A ``GET`` or ``HEAD`` reads (``db.request_reads``); any other
    method is one transaction, committed when the route returns, before the answer is sent."""

    def __init__(self, ctx: Context, request: Request) -> None:
        self.ctx = ctx
        self.reads = request.method in ("GET", "HEAD")
        self.session: Session | None = None

    def get(self) -> Session:
        if self.session is None:
            # No I/O here: the connection is taken (and BEGIN sent) by the first statement.
            session = (self.ctx.sessions(bind=request_reads(self.ctx.engine)) if self.reads
                       else self.ctx.sessions())
            session.begin()
            self.session = session
        return self.session

    def end_here(self, *, ok: bool) -> None:
        """End the request's transaction now, where the route ran (its thread, or the event loop
        for a quick read: see ``entitle.api.routing``); the request's end then has nothing to do."""
        session, self.session = self.session, None
        if session is None:
            return
        if session.info.get(_CONNECTED):
            _finish(session, ok)
        else:
            session.close()

    async def end(self, *, ok: bool) -> None:
        session, self.session = self.session, None
        if session is None:
            return
        if not session.info.get(_CONNECTED):
            session.close()  # never used: nothing to send
        elif self.reads:
            # A read ends without waiting on anything (SQLite: end of a read transaction;
            # PostgreSQL: autocommit, nothing open): not worth a thread.
            _finish(session, ok)
        else:
            await anyio.to_thread.run_sync(_finish, session, ok)


def _finish(session: Session, ok: bool) -> None:
    try:
        if ok:
            session.commit()
        else:
            session.rollback()
    finally:
        session.close()


REQUEST_SESSION = "entitle.request_session"  # where the route class finds it (request.scope)


async def request_session(request: Request) -> AsyncIterator[RequestSession]:
    held = request.scope[REQUEST_SESSION] = RequestSession(request.app.state.ctx, request)
    try:
        yield held
    except BaseException:
        await held.end(ok=False)
        raise
    await held.end(ok=True)


# "function": the transaction ends when the route returns, before the answer is sent.
Held = Annotated[RequestSession, Depends(request_session, scope="function")]


async def db_session(held: Held) -> Session:
    """A transaction per request for routes that read or make one change."""
    return held.get()


DB = Annotated[Session, Depends(db_session)]


async def current_time(request: Request) -> datetime:
    return request.app.state.ctx.clock.now()  # type: ignore[no-any-return]


Now = Annotated[datetime, Depends(current_time)]


def bearer_token_hash(authorization: str | None) -> str | None:
    """The hash of the API token an ``Authorization: Bearer <token>`` header carries."""
    if not authorization or not authorization.lower().startswith("bearer "):
        return None
    return tenancy.sha256(authorization.split(None, 1)[1].strip())


async def current_actor(held: Held, authorization: Annotated[str | None, Header()] = None) -> Actor:
    token_hash = bearer_token_hash(authorization)
    if token_hash is None:
        raise Unauthorized("authentication_required",
                           "Send an API token as 'Authorization: Bearer <token>' "
                           "(create one with POST /api/v1/auth/token or in the web UI).")
    ctx = held.ctx
    actors = ctx.token_actors
    actor = actors.get(token_hash)
    if actor is None:
        if held.reads:  # the request's own read session, which the route then uses too
            actor = await anyio.to_thread.run_sync(actors.look_up, held.get(), token_hash)
        else:
            # Read-only: on SQLite, looking up the token must not take (and queue for) the write lock.
            actor = await anyio.to_thread.run_sync(_look_up_reading, ctx, token_hash)
        if actor is None:
            raise Unauthorized("token_invalid", "This API token is unknown or was revoked; create a new one.")
    return actor


def _look_up_reading(ctx: Context, token_hash: str) -> Actor | None:
    with reading(ctx.sessions) as session:
        return ctx.token_actors.look_up(session, token_hash)


CurrentActor = Annotated[Actor, Depends(current_actor)]

R = TypeVar("R")


Limit = Annotated[int, Query(ge=1, le=500, description="Items per page.")]
Cursor = Annotated[int | None, Query(ge=0, le=2**63 - 1,  # a database integer
                                     description="next_cursor of the previous page")]


class Page:
    """``limit`` and ``cursor`` of a list: every list answers ``{"items": [...], "next_cursor": ...}``
    in a keyset order (by id, or newest first), and ``next_cursor`` (the id of the page's last
    item) brings the page after it; null on the last page (docs/api.md)."""

    def __init__(self, limit: int, cursor: int | None) -> None:
        self.limit = limit
        self.cursor = cursor

    @property
    def fetch(self) -> int:
        """Rows to read: one more than a page shows tells whether another page follows."""
        return self.limit + 1

    def answer(self, rows: Sequence[R], item: Callable[[R], Any],
               key: Callable[[R], int] = lambda row: row.id) -> dict[str, Any]:  # type: ignore[attr-defined]
        """The page of ``rows`` (read with ``limit=page.fetch``): its items and the next cursor."""
        shown = rows[: self.limit]
        return {"items": [item(r) for r in shown],
                "next_cursor": key(shown[-1]) if len(rows) > self.limit else None}


async def paging(limit: Limit = 50, cursor: Cursor = None) -> Page:
    return Page(limit, cursor)


Paging = Annotated[Page, Depends(paging)]


def refusals(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for the statuses a route's own rules refuse with (403, 409, 429, …), beyond
    those every operation documents from its shape (400 and 422 with input, 401 with a token, 404
    with a path, 413 with a body, 500): ``entitle.api.app.document_errors`` gives each the error
    shape (docs/api.md)."""
    return {status: {} for status in statuses}


def client_id(request: Request) -> str:
    return request.client.host if request.client else "unknown"
