"""Webhooks of an organization (R-CORE-8): endpoints (URL, the event types wanted, a secret shown
once), their deliveries with every attempt, manual redelivery, a test event, and the list of
event types there are. docs/webhooks.md describes what a receiver gets and how to check it.

Every route needs an owner or admin of the organization (a viewer is refused): an endpoint's URL
often carries a credential of the receiving system. The worker that sends deliveries is
``entitle deliver`` (``entitle.delivery.webhooks.deliver_due``); these routes only record.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, status
from pydantic import BaseModel, Field

from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging, refusals
from entitle.api.routing import OneHopRoute
from entitle.delivery import notifications, webhooks
from entitle.delivery.webhooks import EVENT_TYPES, check_event_types, delivery_detail, send_test_event
from entitle.text import SingleLine

router = APIRouter(route_class=OneHopRoute, tags=["webhooks"])

MAX_ID = 2**63 - 1  # a database integer
EndpointId = Annotated[int, Path(ge=1, le=MAX_ID)]
DeliveryId = Annotated[int, Path(ge=1, le=MAX_ID)]
REFUSALS = refusals(403, 409)  # a viewer may not; at most 20 endpoints, a delivery in flight

# --- bodies --------------------------------------------------------------------------------------

Url = Annotated[str, Field(min_length=1, max_length=2000,
                           pattern=r"^[^\x00-\x20\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]+$",
                           description="The full http(s) URL deliveries are POSTed to.")]
EventTypes = Annotated[list[Annotated[str, Field(min_length=1, max_length=64)]], Field(
    max_length=50, description="The types wanted (see GET /api/v1/webhooks/event-types); area.* for every type "
                               "of an area (e.g. my2n.*); empty: every type.")]


class EndpointIn(BaseModel):
    url: Url
    event_types: EventTypes = []
    description: SingleLine = Field(default="", max_length=200)


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


@router.get("/orgs/{org_id}/webhooks", response_model=list[EndpointOut], responses=refusals(403))
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


@router.get("/orgs/{org_id}/webhooks/{endpoint_id}", response_model=EndpointOut, responses=refusals(403))
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


@router.get("/orgs/{org_id}/webhooks/{endpoint_id}/deliveries", response_model=DeliveryPage, responses=refusals(403))
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
