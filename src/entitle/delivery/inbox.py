"""A user's notifications as the API and the web UI show them (R-CORE-8): newest first, only
those of organizations the user is still a member of (someone removed from an organization
stops seeing its events, R-CORE-1), read or unread.

Marking read is the user's own bookkeeping, not a change to the organization: no history entry.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, select, update
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.delivery.models import Notification
from entitle.errors import NotFound
from entitle.platform.models import Event
from entitle.tenancy.models import Organization


def _mine(actor: Actor) -> list[ColumnElement[bool]]:
    return [Notification.user_id == (actor.user_id or 0), Notification.org_id.in_(list(actor.roles))]


def page(session: Session, actor: Actor, *, unread_only: bool = False, limit: int = 50,
         before_id: int | None = None) -> list[dict[str, Any]]:
    stmt = (select(Notification, Event.type, Organization.name)
            .join(Event, Event.id == Notification.event_id)
            .join(Organization, Organization.id == Notification.org_id).where(*_mine(actor)))
    if unread_only:
        stmt = stmt.where(Notification.read_at.is_(None))
    if before_id is not None:
        stmt = stmt.where(Notification.id < before_id)
    rows = session.execute(stmt.order_by(Notification.id.desc()).limit(limit)).all()
    return [to_dict(n, event_type, org_name) for n, event_type, org_name in rows]


def unread_count(session: Session, actor: Actor) -> int:
    return int(session.scalar(select(func.count()).select_from(Notification)
                              .where(*_mine(actor), Notification.read_at.is_(None))) or 0)


def mark_read(session: Session, actor: Actor, notification_id: int, *, now: datetime) -> dict[str, Any]:
    """Mark one of the user's notifications read (again: no change); anyone else's is not found."""
    found = session.execute(select(Notification, Event.type, Organization.name)
                            .join(Event, Event.id == Notification.event_id)
                            .join(Organization, Organization.id == Notification.org_id)
                            .where(Notification.id == notification_id, *_mine(actor))).one_or_none()
    if found is None:
        raise NotFound("notification", notification_id=notification_id)
    n, event_type, org_name = found
    if n.read_at is None:
        n.read_at = now
        session.flush()
    return to_dict(n, event_type, org_name)


def mark_all_read(session: Session, actor: Actor, *, now: datetime) -> int:
    return session.execute(update(Notification).where(*_mine(actor), Notification.read_at.is_(None))
                           .values(read_at=now).execution_options(synchronize_session=False)).rowcount


def to_dict(n: Notification, event_type: str, org_name: str) -> dict[str, Any]:
    return {"id": n.id, "org_id": n.org_id, "organization": org_name, "title": n.title,
            "event": {"id": f"evt_{n.event_id}", "type": event_type},
            "created_at": n.created_at.isoformat(), "read": n.read_at is not None,
            "read_at": n.read_at.isoformat() if n.read_at else None,
            "emailed_at": n.emailed_at.isoformat() if n.emailed_at else None}
