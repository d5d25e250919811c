"""Webhooks of an organization (R-CORE-8): endpoints (URL, the event types wanted, a secret shown
once), their deliveries with every attempt, manual redelivery, a test event, and the list of
event types there are. docs/webhooks.md describes what a receiver gets and how to check it.

Every route needs an owner or admin of the organization (a viewer is refused): an endpoint's URL
often carries a credential of the receiving system. The worker that sends deliveries is
``entitle deliver`` (``entitle.delivery.webhooks.deliver_due``); these routes only record.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging
from entitle.delivery import notifications, webhooks
from entitle.delivery.models import WebhookAttempt, WebhookDelivery
from entitle.errors import EntitleError, NotFound
from entitle.history import services as history
from entitle.platform.models import Event

router = APIRouter(tags=["webhooks"])

MAX_ID = 2**63 - 1  # a database integer
EndpointId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]
REFUSALS: dict[int | str, dict[str, Any]] = {400: {}, 403: {}, 404: {}, 409: {}, 422: {}}
TEST_EVENT = "webhook.test"

# Every event type the software emits, with what it means; an endpoint's filter names these
# (or ``area.*``). Kept by hand: tests/test_webhooks_api.py fails when code emits a type that is
# not here (it reads the ``events.emit`` calls and the finders' ``Transition("…")``) or when
# notifications.TITLES has one that is not.
EVENT_TYPES: dict[str, str] = {
    "ac.devices.inactive": "Access Commander: the protective period ended and the installation's devices were "
                           "made inactive.",
    "ac.license.added": "Access Commander: a license file was added to an installation (it replaces the old one).",
    "ac.license_device.disconnected": "Access Commander: the license device disconnected; the protective period "
                                      "started.",
    "ac.protective_period.ended": "Access Commander: the protective period ended without the license device.",
    "ac.protective_period.ending": "Access Commander: the protective period ends soon.",
    "axis.fully_licensed": "AXIS: a product's current subscription year became fully licensed.",
    "axis.grace.ended": "AXIS: a grace period ended without full licensing.",
    "axis.grace.ending": "AXIS: a grace period ends in 7 days.",
    "axis.grace.started": "AXIS: a grace period started (a subscription year began).",
    "axis.growth_allowance.exceeded": "AXIS: a product grew past its growth allowance.",
    "axis.units.expired": "AXIS: license units in the wallet expired unused.",
    "key.redeemed": "A license key was redeemed into the organization's wallet.",
    "my2n.apartment.expiring": "My2N: an apartment license lapses within 30 days.",
    "my2n.apartment.lapsed": "My2N: an apartment license lapsed; its paid devices stopped.",
    "my2n.apartments.paid": "My2N: apartments of a site were paid for (card or credit).",
    "my2n.card_payment.failed": "My2N: a card payment for a site failed.",
    "my2n.site.model_changed": "My2N: a site's licensing model was changed.",
    TEST_EVENT: "A test event, sent to one endpoint when asked (POST …/webhooks/{endpoint_id}/test).",
}


def check_event_types(types: list[str]) -> list[str]:
    """Each filter names a known type, or ``area.*`` of an area that has one: a mistyped filter
    would otherwise quietly receive nothing."""
    for wanted in types:
        wanted = wanted.strip()
        known = any(webhooks.matches([wanted], t) for t in EVENT_TYPES) if wanted.endswith(".*") \
            else wanted in EVENT_TYPES
        if wanted and not known:
            raise EntitleError("event_type_unknown", f"{wanted[:64]!r} is no event type; see GET "
                               "/api/v1/webhooks/event-types (or `entitle webhook types`), or use area.* "
                               "(e.g. my2n.*).", event_type=wanted[:64])
    return types


def send_test_event(session: Session, *, org_id: int, endpoint_id: int, actor: Actor,
                    now: datetime) -> WebhookDelivery:
    """A ``webhook.test`` event for one endpoint only, whatever its filter (other endpoints and
    admins' notifications are not involved). It is queued like any event: behind the
    endpoint's earlier pending deliveries, sent by the worker."""
    actor.require_licensing(org_id)
    endpoint = webhooks.get_endpoint(session, org_id, endpoint_id)
    if not endpoint.active:
        raise EntitleError("webhook_endpoint_inactive", "This endpoint is switched off and gets nothing; "
                           "switch it on (active: true) first.", status=409, endpoint_id=endpoint_id)
    event = Event(org_id=org_id, type=TEST_EVENT, created_at=now,
                  payload={"endpoint_id": endpoint.id, "message": "A test event from Entitle."})
    session.add(event)
    session.flush()
    delivery = WebhookDelivery(org_id=org_id, endpoint_id=endpoint.id, event_id=event.id, state="pending",
                               attempts=0, next_attempt_at=now, created_at=now)
    session.add(delivery)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="webhook.endpoint.tested",
                   object_type="webhook_endpoint", object_id=endpoint.id, after={"event": f"evt_{event.id}"})
    return delivery


def delivery_detail(db: Session, org_id: int, endpoint_id: int, delivery_id: int) -> dict[str, Any]:
    """One delivery of this endpoint with its attempts (another endpoint's looks like none)."""
    row = db.execute(select(WebhookDelivery, Event).join(Event, Event.id == WebhookDelivery.event_id).where(
        WebhookDelivery.id == delivery_id, WebhookDelivery.org_id == org_id,
        WebhookDelivery.endpoint_id == endpoint_id)).first()
    if row is None:
        raise NotFound("webhook_delivery", delivery_id=delivery_id)
    d, event = row
    attempts = list(db.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == d.id)
                               .order_by(WebhookAttempt.id)))
    return webhooks.delivery_to_dict(d, event, attempts)


# --- bodies --------------------------------------------------------------------------------------

Url = Annotated[str, Field(min_length=1, max_length=2000, pattern=r"^[^\x00-\x20\x7f]+$",
                           description="The full http(s) URL deliveries are POSTed to.")]
EventTypes = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(
    max_length=50, description="The types wanted (see GET /api/v1/webhooks/event-types); area.* for every type "
                               "of an area (e.g. my2n.*); empty: every type.")]


class EndpointIn(BaseModel):
    url: Url
    event_types: EventTypes = []
    description: str = Field(default="", max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class EndpointPatch(BaseModel):
    url: Url | None = None
    event_types: EventTypes | None = None
    active: bool | None = Field(default=None, description="false: the endpoint gets nothing, not even what was "
                                                          "waiting for it, until switched on again.")


class EndpointOut(BaseModel):
    id: int
    url: str
    event_types: list[str]
    active: bool
    description: str
    created_at: str


class EndpointCreatedOut(EndpointOut):
    secret: str = Field(description="Shown once: deliveries are signed with it (docs/webhooks.md).")


class EventRefOut(BaseModel):
    id: str = Field(description="evt_<n>: the same on every attempt and redelivery.")
    type: str
    created_at: str


class AttemptOut(BaseModel):
    at: str
    status_code: int | None = Field(description="The receiver's answer; null: none (refused, time-out).")
    error: str | None
    duration_ms: int


class DeliveryOut(BaseModel):
    id: int
    endpoint_id: int
    event: EventRefOut
    state: str = Field(description="pending (retried until the retry window closes), delivered or failed.")
    attempts: int
    last_status: int | None
    last_error: str | None
    next_attempt_at: str | None
    delivered_at: str | None
    attempt_log: list[AttemptOut] = Field(description="Every attempt, oldest first.")


class DeliveryPage(BaseModel):
    items: list[DeliveryOut] = Field(description="Newest first.")
    next_cursor: int | None = None


class EventTypeOut(BaseModel):
    type: str
    description: str
    notifies_admins: bool = Field(description="Also shown (and mailed) to the organization's owners and admins.")


# --- routes --------------------------------------------------------------------------------------

@router.get("/webhooks/event-types", response_model=list[EventTypeOut])
def event_types(actor: CurrentActor) -> list[dict[str, Any]]:
    """Every event type an endpoint can ask for."""
    return [{"type": t, "description": d, "notifies_admins": t in notifications.TITLES}
            for t, d in sorted(EVENT_TYPES.items())]


@router.get("/orgs/{org_id}/webhooks", response_model=list[EndpointOut])
def list_endpoints(org_id: int, actor: CurrentActor, db: DB) -> list[dict[str, Any]]:
    """The organization's webhook endpoints (at most 20), oldest first; secrets are never shown again."""
    actor.require_licensing(org_id)
    return [webhooks.endpoint_to_dict(e) for e in webhooks.endpoints_of(db, org_id)]


@router.post("/orgs/{org_id}/webhooks", response_model=EndpointCreatedOut, status_code=status.HTTP_201_CREATED,
             responses=REFUSALS)
def create_endpoint(org_id: int, body: EndpointIn, actor: CurrentActor, ctx: Ctx, db: DB,
                    now: Now) -> dict[str, Any]:
    """A new endpoint; the answer carries its secret, shown this once (deliveries are signed
    with it). Refusals: webhook_url_invalid, event_type_invalid, event_type_unknown,
    webhook_endpoints_full (409, at most 20)."""
    actor.require_licensing(org_id)
    check_event_types(body.event_types)
    endpoint, secret = webhooks.create_endpoint(db, org_id=org_id, url=body.url, event_types=body.event_types,
                                                actor=actor, now=now, key=ctx.secret,
                                                description=body.description)
    return {**webhooks.endpoint_to_dict(endpoint), "secret": secret}


@router.get("/orgs/{org_id}/webhooks/{endpoint_id}", response_model=EndpointOut)
def get_endpoint(org_id: int, endpoint_id: EndpointId, actor: CurrentActor, db: DB) -> dict[str, Any]:
    actor.require_licensing(org_id)
    return webhooks.endpoint_to_dict(webhooks.get_endpoint(db, org_id, endpoint_id))


@router.patch("/orgs/{org_id}/webhooks/{endpoint_id}", response_model=EndpointOut, responses=REFUSALS)
def update_endpoint(org_id: int, endpoint_id: EndpointId, body: EndpointPatch, actor: CurrentActor, db: DB,
                    now: Now) -> dict[str, Any]:
    """Change the URL, the event types (replaced whole) or switch the endpoint off and on.
    Refusals: webhook_url_invalid, event_type_invalid, event_type_unknown."""
    actor.require_licensing(org_id)
    webhooks.get_endpoint(db, org_id, endpoint_id)  # another organization's endpoint: none, whatever the body
    if body.event_types is not None:
        check_event_types(body.event_types)
    endpoint = webhooks.update_endpoint(db, org_id=org_id, endpoint_id=endpoint_id, actor=actor, now=now,
                                        url=body.url, event_types=body.event_types, active=body.active)
    return webhooks.endpoint_to_dict(endpoint)


@router.get("/orgs/{org_id}/webhooks/{endpoint_id}/deliveries", response_model=DeliveryPage)
def list_deliveries(org_id: int, endpoint_id: EndpointId, actor: CurrentActor, db: DB,
                    page: Paging) -> dict[str, Any]:
    """The endpoint's deliveries, newest first, each with its attempts (when, the status code
    answered, the error)."""
    actor.require_licensing(org_id)
    webhooks.get_endpoint(db, org_id, endpoint_id)
    rows = webhooks.deliveries_of(db, org_id=org_id, endpoint_id=endpoint_id, limit=page.limit + 1,
                                  before_id=page.cursor)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {"items": rows, "next_cursor": rows[-1]["id"] if more else None}


@router.post("/orgs/{org_id}/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver",
             response_model=DeliveryOut, status_code=status.HTTP_202_ACCEPTED, responses=REFUSALS)
def redeliver(org_id: int, endpoint_id: EndpointId, delivery_id: DeliveryId, actor: CurrentActor, db: DB,
              now: Now) -> dict[str, Any]:
    """Send a delivery again (a failed one, or a delivered one the receiver lost): it becomes
    pending, due now, under the same event id; the worker sends it in its endpoint's order."""
    actor.require_licensing(org_id)
    webhooks.get_endpoint(db, org_id, endpoint_id)
    delivery_detail(db, org_id, endpoint_id, delivery_id)  # this endpoint's, or none
    webhooks.redeliver(db, org_id=org_id, delivery_id=delivery_id, actor=actor, now=now)
    return delivery_detail(db, org_id, endpoint_id, delivery_id)


@router.post("/orgs/{org_id}/webhooks/{endpoint_id}/test", response_model=DeliveryOut,
             status_code=status.HTTP_202_ACCEPTED, responses=REFUSALS)
def test_endpoint(org_id: int, endpoint_id: EndpointId, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Queue a webhook.test event for this endpoint only (whatever its event types). Refusal:
    webhook_endpoint_inactive."""
    delivery = send_test_event(db, org_id=org_id, endpoint_id=endpoint_id, actor=actor, now=now)
    return delivery_detail(db, org_id, endpoint_id, delivery.id)
