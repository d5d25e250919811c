"""Recording events in the caller's transaction (the outbox, R-CORE-8): the event, one webhook
delivery per endpoint that wants it, and a notification per admin for the types admins act on,
all committed with the change that caused them (``entitle.delivery``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from entitle.platform.models import Event


def emit(session: Session, *, org_id: int, type: str, now: datetime, webhooks: bool = True,
         **payload: Any) -> Event:
    """Record the event. ``webhooks=False``: the caller read, under the organization's lock, that
    it has no active webhook endpoint, so there is nothing to fan out to."""
    # Imported by the first event: the delivery area (HTTP client, sealed secrets) costs a command
    # that only reads (`entitle ac status`) a third of a second.
    from entitle.delivery import notifications, webhooks as delivery

    event = Event(org_id=org_id, type=type, payload=payload, created_at=now)
    session.add(event)
    if webhooks:
        delivery.fan_out(session, event)
    notifications.notify(session, event)
    return event
