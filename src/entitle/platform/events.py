"""Recording events in the caller's transaction (the outbox, R-CORE-8). Delivery comes later."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from entitle.platform.models import Event


def emit(session: Session, *, org_id: int, type: str, now: datetime, **payload: Any) -> Event:
    event = Event(org_id=org_id, type=type, payload=payload, created_at=now)
    session.add(event)
    return event
