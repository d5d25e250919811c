"""Request plumbing shared by the API routes: the context, the acting user, pagination."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Header, Query, Request
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.context import Context
from entitle.db import reading, transaction
from entitle.errors import Unauthorized
from entitle.tenancy import services as tenancy


def get_ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


Ctx = Annotated[Context, Depends(get_ctx)]


def db_session(ctx: Ctx, request: Request) -> Iterator[Session]:
    """A transaction per request for routes that read or make one change."""
    scope = reading if request.method in ("GET", "HEAD") else transaction
    with scope(ctx.sessions) as session:
        yield session


DB = Annotated[Session, Depends(db_session)]


def current_time(ctx: Ctx) -> datetime:
    return ctx.clock.now()


Now = Annotated[datetime, Depends(current_time)]


def current_actor(ctx: Ctx, authorization: Annotated[str | None, Header()] = None) -> Actor:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("authentication_required",
                           "Send an API token as 'Authorization: Bearer <token>' "
                           "(create one with POST /api/v1/auth/token or in the web UI).")
    token = authorization.split(None, 1)[1].strip()
    # Read-only: on SQLite, looking up the token must not take (and queue for) the write lock.
    with reading(ctx.sessions) as session:
        user = tenancy.user_for_token(session, token)
        if user is None:
            raise Unauthorized("token_invalid", "This API token is unknown or was revoked; create a new one.")
        return tenancy.actor_for(user)


CurrentActor = Annotated[Actor, Depends(current_actor)]


class Page:
    def __init__(self, limit: Annotated[int, Query(ge=1, le=500)] = 50,
                 cursor: Annotated[int | None, Query(ge=0, le=2**63 - 1,  # a database integer
                                                     description="next_cursor of the previous page")] = None) -> None:
        self.limit = limit
        self.cursor = cursor


Paging = Annotated[Page, Depends(Page)]


def client_id(request: Request) -> str:
    return request.client.host if request.client else "unknown"
