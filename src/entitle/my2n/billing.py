"""Paying apartment licenses by card, with automatic recurring payment (R-MY-5).

A site's :class:`~entitle.my2n.models.PaymentPlan` holds its customer at the payment provider,
the card, and whether automatic recurring payment is on. Recurring payment is one annual
subscription whose quantity is the number of apartments that need a license when it is turned
on; each time it is paid (the first year at once, then every year) that many apartments are paid
one year: the ones whose license ends first (``rules.apartments_to_pay``).

What makes it safe:

- **Nothing half-paid.** The provider is called before anything is written; a declined card, a
  provider error or a time-out raises, the caller's transaction rolls back, and no apartment is
  paid and no credit is taken. (On SQLite the transaction holds the database's write lock during
  the call; on PostgreSQL the organization lock is taken only after it.)
- **Paid once.** Every card payment is stored under the provider's invoice / payment id, which is
  unique: the answer to our call, the webhook of the same invoice, and a webhook delivered twice
  all pay it once. Webhook events are also kept by event id (``my2n_webhook_events``) and a
  delivery of an event already handled is answered ``duplicate`` and changes nothing.
- **Retries are the same request.** Idempotency keys are derived from what is stored (site id,
  the plan's ``version``), so a start retried after a time-out reuses the key and the provider
  returns the subscription it made, not a second one; turning recurring payment off moves the
  version on, so the next start is a new request.
- **A payment we did not see answered** (the call timed out, then the provider's ``invoice.paid``
  arrives) is found by the site reference in the event's metadata and adopted.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.errors import Conflict, EntitleError
from entitle.history import services as history
from entitle.my2n import access, board, rules, services
from entitle.my2n.models import Apartment, CardPayment, PaymentPlan, Site, SiteDevice, WebhookEvent
from entitle.my2n.payments import PaymentEvent, PaymentProvider
from entitle.platform import events

PROVIDER = Actor(label="payment-provider")


def site_reference(site: Site) -> str:
    """What the provider's objects carry in their metadata to name the site."""
    return f"site-{site.id}"


def _site_of_reference(session: Session, reference: str | None) -> Site | None:
    if not reference or not reference.startswith("site-") or not reference[5:].isdigit():
        return None
    return session.get(Site, int(reference[5:]))


def _plan(session: Session, site: Site) -> PaymentPlan | None:
    return session.scalars(select(PaymentPlan).where(PaymentPlan.site_id == site.id)).one_or_none()


def _rule_rows(session: Session, site: Site) -> tuple[list[rules.Apartment], list[rules.Device]]:
    apartments = [rules.Apartment(a.id, a.paid_through)
                  for a in session.scalars(select(Apartment).where(Apartment.site_id == site.id).order_by(Apartment.id))]
    devices = [services.rule_device(d) for d in session.scalars(
        select(SiteDevice).where(SiteDevice.site_id == site.id, SiteDevice.apartment_id.is_not(None)))]
    return apartments, devices


def needing_license(session: Session, site: Site) -> int:
    return sum(1 for row in board.apartment_rows(session, site) if row.billable > 0)


def plan_to_dict(session: Session, *, site: Site, actor: Actor, now: datetime,
                 price_minor: int, currency: str) -> dict[str, Any]:
    """The site's payment set-up. Prices (``price_minor`` an apartment-year, from the settings)
    are shown only to those who may pay (R-MY-5)."""
    actor.require_member(site.org_id)
    plan = _plan(session, site)
    needing = needing_license(session, site)
    out: dict[str, Any] = {
        "site": site.id, "card": plan.card_label if plan else None,
        "recurring": bool(plan and plan.recurring), "apartments_covered": plan.apartments if plan and plan.recurring else 0,
        "activated_at": plan.activated_at.isoformat() if plan and plan.activated_at else None,
        "deactivated_at": plan.deactivated_at.isoformat() if plan and plan.deactivated_at else None,
        "needing_license": needing, "may_pay": access.can_pay(session, actor, site),
    }
    if out["may_pay"]:
        out["price"] = {"per_apartment_year_minor": price_minor, "currency": currency.upper(),
                        "year_total_minor": price_minor * needing}
    return out


def set_card(session: Session, *, site: Site, payment_method: str, actor: Actor, now: datetime,
             provider: PaymentProvider, email: str | None = None) -> dict[str, Any]:
    """Make the card the site pays with (the id of a card entered in the provider's own form).
    Refused while recurring payment is on: turn it off first (R-MY-5)."""
    access.require_payer(session, actor, site)
    payment_method = payment_method.strip()
    if not 1 <= len(payment_method) <= 255:
        raise EntitleError("payment_method_invalid", "Give the card's payment-method id from the payment form.")
    plan = _plan(session, site)
    rules.check_card_change(recurring_active=bool(plan and plan.recurring))
    customer = plan.customer_id if plan else None
    if customer is None:
        customer = provider.create_customer(site_reference(site), name=site.name, email=email,
                                            idempotency_key=f"entitle-{site_reference(site)}-customer")
    label = provider.set_card(customer, payment_method=payment_method,
                              idempotency_key=f"entitle-{site_reference(site)}-card-{payment_method}")
    history.lock_organization(session, site.org_id)
    plan = _plan(session, site)
    if plan is None:
        plan = PaymentPlan(org_id=site.org_id, site_id=site.id, recurring=False, apartments=0, version=1,
                           created_at=now)
        session.add(plan)
    before = plan.card_label
    plan.customer_id, plan.card, plan.card_label = customer, payment_method, label
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.card.set",
                   object_type="my2n_site", object_id=site.id, before={"card": before}, after={"card": label})
    return {"card": label}


def activate_recurring(session: Session, *, site: Site, actor: Actor, now: datetime,
                       provider: PaymentProvider) -> dict[str, Any]:
    """Turn automatic recurring payment on: the first year of every apartment that needs a
    license is paid now, by the card on file, or nothing happens."""
    access.require_payer(session, actor, site)
    rules.check_prolongation(services.rule_site(site))
    plan = _plan(session, site)
    if plan is None or plan.card is None or plan.customer_id is None:
        raise Conflict("card_missing", "The site has no card yet; add a card, then turn recurring payment on.")
    if plan.recurring:
        raise Conflict("recurring_payment_active", "Automatic recurring payment is already on for this site.")
    count = needing_license(session, site)
    if count == 0:
        raise Conflict("nothing_to_pay", "No apartment of this site needs a license (no paid device outside local "
                       "mode), so there is nothing to pay.")
    sub = provider.start_recurring(plan.customer_id, site_reference=site_reference(site), apartments=count,
                                   idempotency_key=f"entitle-{site_reference(site)}-recurring-{plan.version}")
    history.lock_organization(session, site.org_id)
    session.refresh(plan)
    if plan.recurring and plan.subscription_id != sub.id:
        raise Conflict("recurring_payment_active", "Automatic recurring payment is already on for this site.")
    plan.recurring, plan.subscription_id, plan.apartments = True, sub.id, sub.apartments
    plan.activated_at, plan.deactivated_at = now, None
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.recurring.activated",
                   object_type="my2n_site", object_id=site.id, after={"apartments": sub.apartments,
                                                                     "subscription": sub.id})
    paid: list[str] = []
    if sub.latest_payment_id:
        payment = _apply_payment(session, site=site, payment_id=sub.latest_payment_id, subscription_id=sub.id,
                                 count=sub.apartments, amount_minor=sub.amount_minor, currency=sub.currency, actor=actor,
                                 now=now)
        paid = _names(session, payment.apartments)
    return {"recurring": True, "apartments_covered": sub.apartments, "paid": paid}


def deactivate_recurring(session: Session, *, site: Site, actor: Actor, now: datetime,
                         provider: PaymentProvider) -> dict[str, Any]:
    """Turn automatic recurring payment off. What was paid stays paid until its date."""
    access.require_payer(session, actor, site)
    plan = _plan(session, site)
    if plan is None or not plan.recurring or plan.subscription_id is None:
        raise Conflict("recurring_payment_off", "Automatic recurring payment is not on for this site.")
    provider.stop_recurring(plan.subscription_id)
    history.lock_organization(session, site.org_id)
    _turn_off(plan, now)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.recurring.deactivated",
                   object_type="my2n_site", object_id=site.id, before={"subscription": plan.subscription_id})
    return {"recurring": False}


def _turn_off(plan: PaymentPlan, now: datetime) -> None:
    plan.recurring, plan.deactivated_at, plan.version = False, now, plan.version + 1


def _names(session: Session, apartment_ids: list[int]) -> list[str]:
    if not apartment_ids:
        return []
    by_id = {i: name for i, name in session.execute(select(Apartment.id, Apartment.name)
                                                      .where(Apartment.id.in_(apartment_ids)))}
    return [by_id[i] for i in apartment_ids]


def _apply_payment(session: Session, *, site: Site, payment_id: str, subscription_id: str | None, count: int,
                   amount_minor: int | None, currency: str | None, actor: Actor, now: datetime) -> CardPayment:
    """Pay ``count`` apartment-years of the site for this card payment, once: a payment id seen
    before returns what it paid and changes nothing."""
    history.lock_organization(session, site.org_id)
    seen = session.scalars(select(CardPayment).where(CardPayment.payment_id == payment_id)).one_or_none()
    if seen is not None:
        return seen
    apartments, devices = _rule_rows(session, site)
    chosen = rules.apartments_to_pay(apartments, devices, count)
    payment = CardPayment(org_id=site.org_id, site_id=site.id, payment_id=payment_id, subscription_id=subscription_id,
                          apartments=chosen, amount_minor=amount_minor, currency=currency, paid_at=now)
    session.add(payment)
    session.flush()  # the unique payment id: a concurrent second report of it fails here, before paying
    rows = {a.id: a for a in session.scalars(select(Apartment).where(Apartment.id.in_(chosen)))} if chosen else {}
    for apt_id in chosen:
        apt = rows[apt_id]
        apt.paid_through = rules.extend_paid_through(apt.paid_through, now)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.card_payment.received",
                   object_type="my2n_site", object_id=site.id,
                   after={"payment": payment_id, "apartments": len(chosen), "amount_minor": amount_minor,
                          "paid_through": {rows[i].name: rows[i].paid_through.isoformat()  # type: ignore[union-attr]
                                           for i in chosen}})
    events.emit(session, org_id=site.org_id, type="my2n.apartments.paid", now=now, site=site.id,
                apartments=len(chosen), payment=payment_id)
    return payment


def handle_webhook(session: Session, *, payload: bytes, signature: str, provider: PaymentProvider,
                   now: datetime) -> dict[str, Any]:
    """A provider webhook: verified, handled once per event id. Answer 200 with the outcome for
    anything verified (even events that concern nothing of ours), so the provider stops sending it."""
    event = provider.parse_webhook(payload, signature)  # webhook_signature_invalid
    if session.get(WebhookEvent, event.event_id) is not None:
        return {"event": event.event_id, "outcome": "duplicate"}
    site = _site_of_reference(session, event.site_reference)
    # Claim the event id first: a second delivery running at the same time waits here for this
    # transaction and then finds the id taken.
    claim = WebhookEvent(event_id=event.event_id, provider_type=event.provider_type[:64], outcome="handling",
                         site_id=site.id if site else None, received_at=now)
    try:
        with session.begin_nested():
            session.add(claim)
    except IntegrityError:
        return {"event": event.event_id, "outcome": "duplicate"}
    claim.outcome = _handle(session, event, site, now) if site is not None else "ignored"
    session.flush()
    return {"event": event.event_id, "outcome": claim.outcome}


def _handle(session: Session, event: PaymentEvent, site: Site, now: datetime) -> str:
    plan = _plan(session, site)
    if event.type == "payment_succeeded" and event.subscription_id and event.payment_id:
        if plan is not None and plan.subscription_id != event.subscription_id:
            # Our start timed out but the provider made the subscription: adopt it.
            plan.recurring, plan.subscription_id = True, event.subscription_id
            plan.apartments = event.apartments or plan.apartments
            plan.activated_at = plan.activated_at or now
        count = event.apartments or (plan.apartments if plan else 0)
        _apply_payment(session, site=site, payment_id=event.payment_id, subscription_id=event.subscription_id,
                       count=count, amount_minor=event.amount_minor, currency=event.currency, actor=PROVIDER, now=now)
        return "paid"
    if event.type == "payment_failed":
        history.record(session, org_id=site.org_id, actor=PROVIDER, now=now, action="my2n.card_payment.failed",
                       object_type="my2n_site", object_id=site.id,
                       after={"payment": event.payment_id, "message": event.failure_message})
        events.emit(session, org_id=site.org_id, type="my2n.card_payment.failed", now=now, site=site.id,
                    payment=event.payment_id)
        return "payment_failed"
    if event.type == "subscription_cancelled":
        if plan is not None and plan.recurring and plan.subscription_id == event.subscription_id:
            history.lock_organization(session, site.org_id)
            _turn_off(plan, now)
            history.record(session, org_id=site.org_id, actor=PROVIDER, now=now,
                           action="my2n.recurring.deactivated", object_type="my2n_site", object_id=site.id,
                           before={"subscription": event.subscription_id}, after={"by": "provider"})
            return "recurring_stopped"
        return "ignored"
    return "ignored"


def payments_of(session: Session, site: Site) -> list[dict[str, Any]]:
    rows = session.scalars(select(CardPayment).where(CardPayment.site_id == site.id).order_by(CardPayment.id.desc()))
    return [{"payment": p.payment_id, "paid_at": p.paid_at.isoformat(), "apartments": len(p.apartments),
             "amount_minor": p.amount_minor, "currency": p.currency.upper() if p.currency else None} for p in rows]
