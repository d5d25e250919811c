"""Webhooks (R-CORE-8): endpoints per organization, deliveries signed with HMAC-SHA256, retried
with exponential back-off and jitter for a bounded time, each attempt kept.

**At least once, in order per endpoint.** ``fan_out`` runs inside ``events.emit``, in the
transaction of the change: an event and its deliveries commit together or not at all (the
outbox). ``deliver_due`` sends what is due: for each endpoint only its oldest pending delivery
(a later event never overtakes an earlier one), claimed by moving ``next_attempt_at`` a lease
ahead in a short transaction of its own, so that several workers (processes, machines) never
send the same delivery at once and a worker killed mid-send leaves it to be sent again once the
lease runs out. The HTTP call happens outside any transaction. The same event always goes out
under the same event id (``Entitle-Event-Id``, and ``id`` in the body): a receiver that sees an id
twice has seen a retry, not a new event.

**The signature.** ``Entitle-Signature: t=<unix seconds>,v1=<hex>`` where ``<hex>`` is
HMAC-SHA256 with the endpoint's secret over ``"<t>.<raw body>"``; docs/webhooks.md has a receiver
that checks it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import random
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import httpx
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from entitle.actors import Actor
from entitle.delivery.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from entitle.errors import EntitleError, NotFound
from entitle.history import services as history
from entitle.platform.models import Event
from entitle.signing.secrets import seal, unseal
from entitle.text import single_line

SIGNATURE_HEADER = "Entitle-Signature"
EVENT_ID_HEADER = "Entitle-Event-Id"
SECRET_CONTEXT = "webhook-secret"
FIRST_RETRY = timedelta(seconds=10)
MAX_RETRY = timedelta(hours=1)
RETRY_WINDOW = timedelta(hours=24)  # after this long since the event, a delivery is given up (failed)
LEASE = timedelta(seconds=60)  # a claimed delivery is someone's for this long
TIMEOUT_SECONDS = 10.0
MAX_ENDPOINTS = 20  # per organization


# --- signing ----------------------------------------------------------------------------------------

def sign(secret: str, body: bytes, timestamp: int) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def verify(secret: str, body: bytes, header: str, *, now: float, tolerance: float = 300) -> bool:
    """What a receiver does (and the tests): the HMAC matches and the timestamp is recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


def backoff(attempts: int, rng: Callable[[], float] = random.random) -> timedelta:
    """The wait after ``attempts`` failed attempts: 10 s doubling up to an hour, times a jitter
    between 0.5 and 1 so that many failing deliveries do not retry in step."""
    # The exponent is capped: past the hour cap it changes nothing, and 10 s x 2^43 overflows timedelta.
    base = min(MAX_RETRY, FIRST_RETRY * (2 ** min(max(0, attempts - 1), 20)))
    return base * (0.5 + rng() / 2)


# --- endpoints --------------------------------------------------------------------------------------

def _check_url(url: str) -> str:
    url = single_line(url, "endpoint URL", field="url").strip()
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.netloc or len(url) > 2000:
        raise EntitleError("webhook_url_invalid", "Give the endpoint's full http(s) URL (at most 2,000 characters).",
                           url=url[:200])
    return url


def _check_types(types: list[str]) -> list[str]:
    cleaned = sorted({t.strip() for t in types if t.strip()})
    for t in cleaned:
        if len(t) > 64 or not all(c.isalnum() or c in "._*" for c in t):
            raise EntitleError("event_type_invalid", f"{t[:64]!r} is not an event type (e.g. my2n.apartment.lapsed, "
                               "or my2n.* for all of an area).", event_type=t[:64])
    return cleaned


def matches(types: list[str], event_type: str) -> bool:
    """Empty: every event; ``area.*``: every event of an area; else the exact type."""
    if not types:
        return True
    return any(t == event_type or (t.endswith(".*") and event_type.startswith(t[:-1])) for t in types)


def create_endpoint(session: Session, *, org_id: int, url: str, event_types: list[str], actor: Actor,
                    now: datetime, key: bytes, description: str = "") -> tuple[WebhookEndpoint, str]:
    """A new endpoint and its secret (shown once; sealed at rest)."""
    actor.require_licensing(org_id)
    url, types = _check_url(url), _check_types(event_types)
    single_line(description, "endpoint description", field="description", max_length=200)
    history.lock_organization(session, org_id)
    count = session.scalar(select(func.count()).select_from(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id))
    if (count or 0) >= MAX_ENDPOINTS:
        raise EntitleError("webhook_endpoints_full", f"An organization has at most {MAX_ENDPOINTS} webhook endpoints; "
                           "remove one first.", status=409, limit=MAX_ENDPOINTS)
    secret = "whsec_" + secrets.token_urlsafe(32)
    endpoint = WebhookEndpoint(org_id=org_id, url=url, event_types=types, active=True, description=description[:200],
                               secret_sealed=seal(key, secret.encode(), context=SECRET_CONTEXT), created_at=now)
    session.add(endpoint)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="webhook.endpoint.created",
                   object_type="webhook_endpoint", object_id=endpoint.id, after={"url": url, "event_types": types})
    return endpoint, secret


def endpoint_secret(endpoint: WebhookEndpoint, key: bytes) -> str:
    return unseal(key, endpoint.secret_sealed, context=SECRET_CONTEXT).decode()


def get_endpoint(session: Session, org_id: int, endpoint_id: int) -> WebhookEndpoint:
    found = session.get(WebhookEndpoint, endpoint_id)
    if found is None or found.org_id != org_id:
        raise NotFound("webhook_endpoint", endpoint_id=endpoint_id)
    return found


def endpoints_of(session: Session, org_id: int) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).where(WebhookEndpoint.org_id == org_id)
                                .order_by(WebhookEndpoint.id)))


def update_endpoint(session: Session, *, org_id: int, endpoint_id: int, actor: Actor, now: datetime,
                    url: str | None = None, event_types: list[str] | None = None,
                    active: bool | None = None) -> WebhookEndpoint:
    actor.require_licensing(org_id)
    history.lock_organization(session, org_id)
    endpoint = get_endpoint(session, org_id, endpoint_id)
    before = endpoint_to_dict(endpoint)
    if url is not None:
        endpoint.url = _check_url(url)
    if event_types is not None:
        endpoint.event_types = _check_types(event_types)
    if active is not None:
        endpoint.active = active
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="webhook.endpoint.updated",
                   object_type="webhook_endpoint", object_id=endpoint.id, before=before,
                   after=endpoint_to_dict(endpoint))
    return endpoint


def endpoint_to_dict(e: WebhookEndpoint) -> dict[str, Any]:
    return {"id": e.id, "url": e.url, "event_types": list(e.event_types), "active": e.active,
            "description": e.description, "created_at": e.created_at.isoformat()}


# --- the outbox: deliveries made with the event ----------------------------------------------------

# Built once: every event of every write runs it.
_ACTIVE_ENDPOINTS = select(WebhookEndpoint.id, WebhookEndpoint.event_types).where(
    WebhookEndpoint.org_id == bindparam("org_id"), WebhookEndpoint.active.is_(True))


def fan_out(session: Session, event: Event) -> int:
    """One pending delivery per active endpoint of the event's organization that wants its type,
    in the caller's transaction (called by ``events.emit``)."""
    endpoints = session.execute(_ACTIVE_ENDPOINTS, {"org_id": event.org_id}).all()
    wanted = [endpoint_id for endpoint_id, types in endpoints if matches(list(types), event.type)]
    if not wanted:
        return 0
    session.flush()  # the event's id
    session.add_all(WebhookDelivery(org_id=event.org_id, endpoint_id=endpoint_id, event_id=event.id, state="pending",
                                    attempts=0, next_attempt_at=event.created_at, created_at=event.created_at)
                    for endpoint_id in wanted)
    return len(wanted)


def event_body(event: Event) -> bytes:
    return json.dumps({"id": f"evt_{event.id}", "type": event.type, "org_id": event.org_id,
                       "created_at": event.created_at.isoformat(), "data": event.payload},
                      separators=(",", ":"), sort_keys=True).encode()


# --- the worker -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claimed:
    delivery_id: int
    url: str
    secret: str
    body: bytes
    event_id: int
    event_created_at: datetime
    attempts: int


def _claim(factory: sessionmaker[Session], *, now: datetime, limit: int, key: bytes) -> list[Claimed]:
    """Take up to ``limit`` due deliveries, the oldest pending one of each endpoint, by moving
    their ``next_attempt_at`` a lease ahead (a compare-and-set: two workers never both win)."""
    # Each endpoint's head: its lowest pending id (a later event never overtakes it); claimable
    # when due. Found directly, reading the pending deliveries once (docs/benchmarks.md, "Events").
    heads = (select(WebhookDelivery.endpoint_id, func.min(WebhookDelivery.id).label("head"))
             .where(WebhookDelivery.state == "pending").group_by(WebhookDelivery.endpoint_id).subquery())
    with factory.begin() as s:
        # A switched-off endpoint gets nothing, not even what was waiting (it goes out if switched on again).
        due = s.execute(select(WebhookDelivery.id, WebhookDelivery.next_attempt_at)
                        .join(heads, heads.c.head == WebhookDelivery.id)
                        .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                        .where(WebhookDelivery.next_attempt_at <= now, WebhookEndpoint.active.is_(True))
                        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id).limit(limit)).all()
        won = []
        for delivery_id, seen in due:
            taken = s.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                            WebhookDelivery.state == "pending",
                                                            WebhookDelivery.next_attempt_at == seen)
                              .values(next_attempt_at=now + LEASE)
                              .execution_options(synchronize_session=False)).rowcount
            if taken == 1:
                won.append(delivery_id)
        out = []
        for d, endpoint, event in s.execute(
                select(WebhookDelivery, WebhookEndpoint, Event)
                .join(WebhookEndpoint, WebhookEndpoint.id == WebhookDelivery.endpoint_id)
                .join(Event, Event.id == WebhookDelivery.event_id).where(WebhookDelivery.id.in_(won))
                .order_by(WebhookDelivery.id)):
            out.append(Claimed(d.id, endpoint.url, endpoint_secret(endpoint, key), event_body(event), event.id,
                               event.created_at, d.attempts))
    return out


@dataclass
class Sent:
    status_code: int | None
    error: str | None
    duration_ms: int

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _send(client: httpx.Client, claimed: Claimed, now: datetime) -> Sent:
    headers = {"Content-Type": "application/json", EVENT_ID_HEADER: f"evt_{claimed.event_id}",
               SIGNATURE_HEADER: sign(claimed.secret, claimed.body, int(now.timestamp())),
               "User-Agent": "Entitle-Webhooks/1"}
    started = time.perf_counter()
    try:
        answer = client.post(claimed.url, content=claimed.body, headers=headers)
        return Sent(answer.status_code, None if answer.is_success else f"HTTP {answer.status_code}",
                    int((time.perf_counter() - started) * 1000))
    except httpx.HTTPError as exc:
        return Sent(None, f"{type(exc).__name__}: {exc}"[:500], int((time.perf_counter() - started) * 1000))


def _record(factory: sessionmaker[Session], claimed: Claimed, sent: Sent, now: datetime,
            rng: Callable[[], float]) -> str:
    with factory.begin() as s:
        d = s.get(WebhookDelivery, claimed.delivery_id)
        assert d is not None
        s.add(WebhookAttempt(delivery_id=d.id, attempted_at=now, status_code=sent.status_code, error=sent.error,
                             duration_ms=sent.duration_ms))
        d.attempts += 1
        d.last_status, d.last_error = sent.status_code, sent.error
        if sent.ok:
            d.state, d.delivered_at = "delivered", now
        else:
            retry_at = now + backoff(d.attempts, rng)
            if retry_at - claimed.event_created_at > RETRY_WINDOW:
                d.state = "failed"
            d.next_attempt_at = retry_at
        return d.state


def deliver_due(factory: sessionmaker[Session], *, now: Callable[[], datetime], key: bytes, limit: int = 100,
                client: httpx.Client | None = None, rng: Callable[[], float] = random.random) -> dict[str, int]:
    """Send every due delivery once (at most ``limit``); returns how many were delivered, will be
    retried, and failed for good."""
    counts = {"delivered": 0, "pending": 0, "failed": 0}
    own = client is None
    http = client or httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False)
    try:
        for claimed in _claim(factory, now=now(), limit=limit, key=key):
            at = now()
            counts[_record(factory, claimed, _send(http, claimed, at), at, rng)] += 1
    finally:
        if own:
            http.close()
    return counts


# --- what admins see --------------------------------------------------------------------------------

def redeliver(session: Session, *, org_id: int, delivery_id: int, actor: Actor, now: datetime) -> WebhookDelivery:
    """Send a delivery again now (a failed one, or a delivered one the receiver lost)."""
    actor.require_licensing(org_id)
    d = session.get(WebhookDelivery, delivery_id)
    if d is None or d.org_id != org_id:
        raise NotFound("webhook_delivery", delivery_id=delivery_id)
    d.state, d.next_attempt_at = "pending", now
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="webhook.delivery.redelivered",
                   object_type="webhook_delivery", object_id=d.id)
    return d


def delivery_to_dict(d: WebhookDelivery, event: Event, attempts: list[WebhookAttempt] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": d.id, "endpoint_id": d.endpoint_id, "event": {"id": f"evt_{event.id}", "type": event.type,
                                                            "created_at": event.created_at.isoformat()},
        "state": d.state, "attempts": d.attempts, "last_status": d.last_status, "last_error": d.last_error,
        "next_attempt_at": d.next_attempt_at.isoformat() if d.state == "pending" else None,
        "delivered_at": d.delivered_at.isoformat() if d.delivered_at else None}
    if attempts is not None:
        out["attempt_log"] = [{"at": a.attempted_at.isoformat(), "status_code": a.status_code, "error": a.error,
                               "duration_ms": a.duration_ms} for a in attempts]
    return out


def deliveries_of(session: Session, *, org_id: int, endpoint_id: int, limit: int = 50,
                  before_id: int | None = None) -> list[dict[str, Any]]:
    stmt = (select(WebhookDelivery, Event).join(Event, Event.id == WebhookDelivery.event_id)
            .where(WebhookDelivery.org_id == org_id, WebhookDelivery.endpoint_id == endpoint_id))
    if before_id is not None:
        stmt = stmt.where(WebhookDelivery.id < before_id)
    rows = session.execute(stmt.order_by(WebhookDelivery.id.desc()).limit(limit)).all()
    ids = [d.id for d, _ in rows]
    attempts: dict[int, list[WebhookAttempt]] = {i: [] for i in ids}
    if ids:
        for a in session.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(ids))
                                 .order_by(WebhookAttempt.id)):
            attempts[a.delivery_id].append(a)
    return [delivery_to_dict(d, e, attempts[d.id]) for d, e in rows]


# --- event types, the test event, one delivery (API, CLI and web UI alike) ------------------------

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
    "my2n.site.custom_expired": "My2N: a custom-model site's license expired (it was not migrated in time).",
    "my2n.site.custom_expiring": "My2N: a custom-model site's license expires within 30 days; migrate the site.",
    "my2n.site.model_changed": "My2N: a site's licensing model was changed.",
    TEST_EVENT: "A test event, sent to one endpoint when asked (POST …/webhooks/{endpoint_id}/test).",
}


def check_event_types(types: list[str]) -> list[str]:
    """Each filter names a known type, or ``area.*`` of an area that has one: a mistyped filter
    would otherwise quietly receive nothing."""
    for wanted in types:
        wanted = wanted.strip()
        known = any(matches([wanted], t) for t in EVENT_TYPES) if wanted.endswith(".*") \
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
    endpoint = get_endpoint(session, org_id, endpoint_id)
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
    return delivery_to_dict(d, event, attempts)
