"""Events delivered, in the web UI (R-CORE-8): the signed-in user's Notifications (the unread
count is in the navigation) and the organization's Webhooks — endpoints (added with a secret
shown once; event types and on/off edited), each one's deliveries with every attempt (time,
status code or error) and a Redeliver button.

Webhooks need an owner or admin of the organization, as in the API: an endpoint's URL often
carries a credential of the receiving system. Every action re-renders its page (only the content
for htmx) with the outcome; a refusal keeps the page and shows the error's code and message.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Path, Query, Request, Response
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from entitle.delivery.webhooks import EVENT_TYPES, check_event_types
from entitle.db import reading, transaction
from entitle.delivery import inbox, webhooks
from entitle.delivery.models import WebhookDelivery
from entitle.errors import EntitleError, NotFound
from entitle.text import plural
from entitle.web.views import (PAGE_SIZE, AnyViewer, OrgChoice, PostingViewer, Viewer, WebRoute, _ctx, is_htmx,
                               render, templates)

router = APIRouter(route_class=WebRoute, include_in_schema=False)

DbId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # a database integer
DELIVERIES_SHOWN = 25
STATE_NAMES = {"pending": "Pending", "delivered": "Delivered", "failed": "Failed"}


def unread_notifications(request: Request, viewer: Viewer | None) -> int | None:
    """The count in the navigation; None when it cannot be had (then the link shows no count)."""
    if viewer is None:
        return None
    try:
        with reading(_ctx(request).sessions) as s:
            return inbox.unread_count(s, viewer.actor)
    except SQLAlchemyError:  # an error page must still render when the database is away
        return None


templates.env.globals["unread_notifications"] = unread_notifications
def _moment(value: str | None) -> str:
    """An ISO time from the services as the pages show it: 2026-01-15 09:00:00 UTC."""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


templates.env.filters.update(delivery_state=lambda s: STATE_NAMES.get(s, s), moment=_moment)


# --- notifications -----------------------------------------------------------------------------

def _notifications(request: Request, viewer: Viewer, *, unread_only: bool = False, cursor: int | None = None,
                   message: str | None = None) -> Response:
    with reading(_ctx(request).sessions) as s:
        rows = inbox.page(s, viewer.actor, unread_only=unread_only, limit=PAGE_SIZE + 1, before_id=cursor)
        unread = inbox.unread_count(s, viewer.actor)
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    return render(request, "events_notifications.html", viewer=viewer, active="notifications", rows=rows,
                  unread=unread, unread_only=unread_only, cursor=cursor,
                  next_cursor=rows[-1]["id"] if more else None, message=message,
                  # the navigation is not swapped by htmx: its count goes out of band
                  oob_count=is_htmx(request) and request.method == "POST")


@router.get("/notifications")
def notifications_page(request: Request, viewer: AnyViewer, show: str = "all",
                       cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Response:
    return _notifications(request, viewer, unread_only=show == "unread", cursor=cursor)


@router.post("/notifications/{notification_id}/read")
def read_notification(request: Request, viewer: PostingViewer, notification_id: DbId,
                      show: Annotated[str, Form()] = "all") -> Response:
    ctx = _ctx(request)
    with transaction(ctx.sessions) as s:
        inbox.mark_read(s, viewer.actor, notification_id, now=ctx.clock.now())
    return _notifications(request, viewer, unread_only=show == "unread")


@router.post("/notifications/read-all")
def read_all_notifications(request: Request, viewer: PostingViewer) -> Response:
    ctx = _ctx(request)
    with transaction(ctx.sessions) as s:
        marked = inbox.mark_all_read(s, viewer.actor, now=ctx.clock.now())
    return _notifications(request, viewer, message=f"{plural(marked, 'notification')} marked read.")


# --- webhooks ----------------------------------------------------------------------------------

def _licensing_org(viewer: Viewer) -> OrgChoice:
    org = viewer.require_org()
    viewer.actor.require_licensing(org.id)
    return org


def _types(text: str) -> list[str]:
    """Event types as typed: separated by commas, spaces or new lines; none means every type."""
    return check_event_types([t for t in re.split(r"[\s,]+", text) if t])


def _webhooks(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
              error: EntitleError | None = None, created: dict[str, Any] | None = None,
              form: dict[str, Any] | None = None) -> Response:
    org = _licensing_org(viewer)
    with reading(_ctx(request).sessions) as s:
        endpoints = [webhooks.endpoint_to_dict(e) for e in webhooks.endpoints_of(s, org.id)]
        counts: dict[int, dict[str, int]] = {}
        for endpoint_id, state, n in s.execute(
                select(WebhookDelivery.endpoint_id, WebhookDelivery.state, func.count())
                .where(WebhookDelivery.org_id == org.id)
                .group_by(WebhookDelivery.endpoint_id, WebhookDelivery.state)):
            counts.setdefault(endpoint_id, {})[state] = n
    for e in endpoints:
        e["counts"] = counts.get(e["id"], {})
    return render(request, "events_webhooks.html", viewer=viewer, active="webhooks", status=status, org=org,
                  endpoints=endpoints, event_types=EVENT_TYPES, message=message, error=error, created=created,
                  form=form or {}, switch_next="/webhooks")


@router.get("/webhooks")
def webhooks_page(request: Request, viewer: AnyViewer) -> Response:
    return _webhooks(request, viewer)


@router.post("/webhooks")
def add_endpoint(request: Request, viewer: PostingViewer, url: Annotated[str, Form()] = "",
                 event_types: Annotated[str, Form()] = "", description: Annotated[str, Form()] = "") -> Response:
    """A new endpoint; its signing secret is in this answer only."""
    ctx = _ctx(request)
    org = _licensing_org(viewer)
    form = {"url": url, "event_types": event_types, "description": description}
    try:
        with transaction(ctx.sessions) as s:
            endpoint, secret = webhooks.create_endpoint(s, org_id=org.id, url=url, event_types=_types(event_types),
                                                        actor=viewer.actor, now=ctx.clock.now(), key=ctx.secret,
                                                        description=description.strip())
            created = {"id": endpoint.id, "url": endpoint.url, "secret": secret}
    except EntitleError as exc:
        return _webhooks(request, viewer, status=exc.status, error=exc, form=form)
    return _webhooks(request, viewer, created=created,
                     message=f"Endpoint {created['url']} added: it receives the events from now on.")


def _endpoint(request: Request, viewer: Viewer, endpoint_id: int, *, status: int = 200, message: str | None = None,
              error: EntitleError | None = None, cursor: int | None = None,
              form: dict[str, Any] | None = None) -> Response:
    org = _licensing_org(viewer)
    with reading(_ctx(request).sessions) as s:
        endpoint = webhooks.endpoint_to_dict(webhooks.get_endpoint(s, org.id, endpoint_id))
        deliveries = webhooks.deliveries_of(s, org_id=org.id, endpoint_id=endpoint_id, limit=DELIVERIES_SHOWN + 1,
                                            before_id=cursor)
    more = len(deliveries) > DELIVERIES_SHOWN
    deliveries = deliveries[:DELIVERIES_SHOWN]
    return render(request, "events_webhook.html", viewer=viewer, active="webhooks", status=status, org=org,
                  endpoint=endpoint, deliveries=deliveries, cursor=cursor,
                  next_cursor=deliveries[-1]["id"] if more else None, message=message, error=error,
                  form=form or {"url": endpoint["url"], "event_types": " ".join(endpoint["event_types"])},
                  event_types=EVENT_TYPES, switch_next="/webhooks")


@router.get("/webhooks/{endpoint_id}")
def endpoint_page(request: Request, viewer: AnyViewer, endpoint_id: DbId,
                  cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Response:
    return _endpoint(request, viewer, endpoint_id, cursor=cursor)


@router.post("/webhooks/{endpoint_id}")
def edit_endpoint(request: Request, viewer: PostingViewer, endpoint_id: DbId, url: Annotated[str, Form()] = "",
                  event_types: Annotated[str, Form()] = "", active: Annotated[str, Form()] = "") -> Response:
    """Change the URL, the event types (none: every type) and whether the endpoint is on."""
    ctx = _ctx(request)
    org = _licensing_org(viewer)
    form = {"url": url, "event_types": event_types}
    try:
        with transaction(ctx.sessions) as s:
            e = webhooks.update_endpoint(s, org_id=org.id, endpoint_id=endpoint_id, actor=viewer.actor,
                                         now=ctx.clock.now(), url=url, event_types=_types(event_types),
                                         active=active == "on")
            state = "on" if e.active else "off: it receives nothing until switched on again"
    except EntitleError as exc:
        if isinstance(exc, NotFound):
            raise
        return _endpoint(request, viewer, endpoint_id, status=exc.status, error=exc, form=form)
    return _endpoint(request, viewer, endpoint_id, message=f"Endpoint saved; it is {state}.")


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver")
def redeliver(request: Request, viewer: PostingViewer, endpoint_id: DbId, delivery_id: DbId) -> Response:
    """Send a delivery again, now (the worker sends it on its next round)."""
    ctx = _ctx(request)
    org = _licensing_org(viewer)
    with transaction(ctx.sessions) as s:
        found = s.get(WebhookDelivery, delivery_id)
        if found is None or found.org_id != org.id or found.endpoint_id != endpoint_id:
            raise NotFound("webhook_delivery", delivery_id=delivery_id)
        webhooks.redeliver(s, org_id=org.id, delivery_id=delivery_id, actor=viewer.actor, now=ctx.clock.now())
        event_id = found.event_id
    return _endpoint(request, viewer, endpoint_id,
                     message=f"evt_{event_id} will be sent again shortly, under the same event id.")
