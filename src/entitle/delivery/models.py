"""Events delivered (R-CORE-8): webhook endpoints, one delivery per (endpoint, event) with its
attempts, notifications to organization admins, and the marks that make each time-driven
transition recorded once by the sweep."""

from __future__ import annotations

from datetime import datetime
from sqlalchemy import JSON, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId


class WebhookEndpoint(Base):
    """An organization's webhook: where to POST, which event types (empty: all), and the secret
    the deliveries are signed with (sealed at rest with the server's secret key)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    url: Mapped[str] = mapped_column(String(2000))
    event_types: Mapped[list[str]] = mapped_column(JSON)  # empty: every type
    secret_sealed: Mapped[bytes] = mapped_column(LargeBinary)
    active: Mapped[bool] = mapped_column(default=True)
    description: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[datetime]


class WebhookDelivery(Base):
    """One event to one endpoint: ``pending`` until a 2xx answer (``delivered``) or until the
    retry window closes (``failed``); ``next_attempt_at`` is also the lease a worker takes."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (UniqueConstraint("endpoint_id", "event_id"),
                      Index("ix_webhook_deliveries_due", "state", "next_attempt_at"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    state: Mapped[str] = mapped_column(String(16))  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_status: Mapped[int | None]
    last_error: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime]
    delivered_at: Mapped[datetime | None]


class WebhookAttempt(Base):
    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    delivery_id: Mapped[int] = mapped_column(ForeignKey("webhook_deliveries.id"), index=True)
    attempted_at: Mapped[datetime]
    status_code: Mapped[int | None]  # None: no answer (refused, time-out)
    error: Mapped[str | None] = mapped_column(String(500))
    duration_ms: Mapped[int]


class Notification(Base):
    """An event shown to one admin of the organization in the web UI, and mailed to them."""

    __tablename__ = "notifications"
    __table_args__ = (UniqueConstraint("user_id", "event_id"),
                      Index("ix_notifications_unmailed", "emailed_at", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int] = mapped_column(ForeignKey("events.id"))
    title: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime]
    read_at: Mapped[datetime | None]
    emailed_at: Mapped[datetime | None]
    mail_error: Mapped[str | None] = mapped_column(String(500))
    # entitle.delivery.mail: failed attempts so far, and the time before which no worker mails it
    # (the lease of the worker sending it, or the back-off after a failure; null: due now).
    mail_attempts: Mapped[int] = mapped_column(default=0, server_default="0")
    mail_next_at: Mapped[datetime | None]


class SweepMark(Base):
    """A time-driven transition the sweep has recorded: its kind and its subject's key (e.g. an
    apartment and the paid-through date that lapsed) are unique, so two sweeps at once, or a
    sweep run again after being killed, record it once."""

    __tablename__ = "sweep_marks"
    __table_args__ = (UniqueConstraint("kind", "subject"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(255))
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    due_at: Mapped[datetime]  # when the transition happened
    recorded_at: Mapped[datetime]
    event_id: Mapped[int | None] = mapped_column(ForeignKey("events.id"))

