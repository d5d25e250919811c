"""The caller's notifications (R-CORE-8): the transitions owners and admins have to act on, also
mailed to them (``entitle.delivery.mail``). Each user sees their own, of the organizations they
are still a member of; routes only translate to ``entitle.delivery.inbox``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from entitle.api.deps import DB, CurrentActor, Now, Paging
from entitle.api.routing import OneHopRoute
from entitle.delivery import inbox

router = APIRouter(route_class=OneHopRoute, tags=["notifications"])

NotificationId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # a database integer


class NotificationEventOut(BaseModel):
    id: str = Field(description="The event's id, as webhooks send it (evt_<n>).")
    type: str


class NotificationOut(BaseModel):
    id: int
    org_id: int
    organization: str
    title: str
    event: NotificationEventOut
    created_at: str
    read: bool
    read_at: str | None
    emailed_at: str | None = Field(description="When it was mailed to you; null while not (yet).")


class NotificationPage(BaseModel):
    items: list[NotificationOut]
    next_cursor: int | None = None
    unread: int = Field(description="How many of your notifications are unread (all pages).")


@router.get("/notifications", response_model=NotificationPage)
def list_notifications(actor: CurrentActor, db: DB, page: Paging,
                       unread: Annotated[bool, Query(description="Only the unread ones.")] = False) -> dict[str, Any]:
    """Your notifications, newest first."""
    rows = inbox.page(db, actor, unread_only=unread, limit=page.limit + 1, before_id=page.cursor)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {"items": rows, "next_cursor": rows[-1]["id"] if more else None, "unread": inbox.unread_count(db, actor)}


@router.post("/notifications/{notification_id}/read", response_model=NotificationOut)
def read_notification(notification_id: NotificationId, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Mark one of your notifications read (again: no change)."""
    return inbox.mark_read(db, actor, notification_id, now=now)
