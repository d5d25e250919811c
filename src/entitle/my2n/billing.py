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

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.clock import add_years
from entitle.db import chunks
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
    apartments = [services.rule_apartment(a)
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
        "renews_at": plan.period_end.isoformat() if plan and plan.period_end else None,
        "covered_until": None, "charge_failing": False,
    }
    recurring = services.recurring_of(session, site)
    if recurring is not None:
        out["covered_until"] = recurring.cover.isoformat()
        out["charge_failing"] = recurring.failed_at is not None or recurring.renewal_due(now)
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


def _price(provider: PaymentProvider, site: Site) -> tuple[int, str]:
    """An apartment-year at the site's region's price and currency (issue 14 point 8)."""
    return provider.price(site.region)


def _lines(session: Session, site: Site, *, start: datetime, period_end: datetime,
           provider: PaymentProvider) -> list[rules.ChargeLine]:
    apartments, devices = _rule_rows(session, site)
    return rules.charge_lines(apartments, devices, start=start, period_end=period_end,
                              price_minor=_price(provider, site)[0])


def _lines_out(session: Session, lines: list[rules.ChargeLine], start: datetime, period_end: datetime,
               currency: str) -> dict[str, Any]:
    names = dict(zip([line.apartment_id for line in lines], _names(session, [line.apartment_id for line in lines]),
                     strict=True))
    return {"amount_minor": sum(line.amount_minor for line in lines), "currency": currency.upper(),
            "renews_at": period_end.isoformat(), "year_days": rules.year_days(period_end),
            "lines": [{"apartment": names[line.apartment_id], "days": line.days, "amount_minor": line.amount_minor}
                      for line in lines],
            "from": start.isoformat()}


def activation_preview(session: Session, *, site: Site, actor: Actor, now: datetime,
                       provider: PaymentProvider) -> dict[str, Any]:
    """What turning recurring payment on at ``now`` would charge, before it does (R-MY-5): each
    apartment needing a license that is not paid through the site's anniversary, pro rata by day
    (``rules.charge_lines``); nothing when everything is paid. Only payers see it (prices)."""
    access.require_payer(session, actor, site)
    plan = _plan(session, site)
    period_end = rules.billing_period_end(plan.period_end if plan else None, now)
    lines = _lines(session, site, start=now, period_end=period_end, provider=provider)
    return {"apartments_covered": needing_license(session, site),
            **_lines_out(session, lines, now, period_end, _price(provider, site)[1])}


def activate_recurring(session: Session, *, site: Site, actor: Actor, now: datetime,
                       provider: PaymentProvider, expected_amount_minor: int | None = None) -> dict[str, Any]:
    """Turn automatic recurring payment on: the subscription covers every apartment that needs a
    license and renews at the site's anniversary; the card pays now only what is not paid
    through it (``activation_preview``), or nothing happens. Turned on again before the
    anniversary (after changing the card), it charges nothing for what is paid."""
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
    period_end = rules.billing_period_end(plan.period_end, now)
    lines = _lines(session, site, start=now, period_end=period_end, provider=provider)
    amount = sum(line.amount_minor for line in lines)
    if expected_amount_minor is not None and expected_amount_minor != amount:
        raise Conflict("charge_changed", f"Turning recurring payment on now charges {amount} (minor units), not the "
                       f"{expected_amount_minor} shown before; look at the new amount and confirm again.",
                       amount_minor=amount, expected_amount_minor=expected_amount_minor)
    sub = provider.start_recurring(plan.customer_id, site_reference=site_reference(site), apartments=count,
                                   renews_at=period_end, amount_minor=amount, region=site.region,
                                   idempotency_key=f"entitle-{site_reference(site)}-recurring-{plan.version}")
    history.lock_organization(session, site.org_id)
    session.refresh(plan)
    if plan.recurring and plan.subscription_id != sub.id:
        raise Conflict("recurring_payment_active", "Automatic recurring payment is already on for this site.")
    plan.recurring, plan.subscription_id, plan.apartments = True, sub.id, sub.apartments
    plan.activated_at, plan.deactivated_at, plan.period_end, plan.charge_failed_at = now, None, period_end, None
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.recurring.activated",
                   object_type="my2n_site", object_id=site.id,
                   after={"apartments": sub.apartments, "subscription": sub.id, "renews_at": period_end.isoformat(),
                          "charged_minor": amount})
    paid: list[str] = []
    if sub.latest_payment_id:
        payment = _record_payment(session, site=site, payment_id=sub.latest_payment_id, subscription_id=sub.id,
                                  apartment_ids=[line.apartment_id for line in lines], period_end=period_end,
                                  amount_minor=sub.amount_minor, currency=sub.currency, purpose="activation",
                                  actor=actor, now=now)
        paid = _names(session, payment.apartments)
    return {"recurring": True, "apartments_covered": sub.apartments, "paid": paid, "charged_minor": amount,
            "currency": _price(provider, site)[1].upper(), "renews_at": period_end.isoformat()}


def deactivate_recurring(session: Session, *, site: Site, actor: Actor, now: datetime,
                         provider: PaymentProvider) -> dict[str, Any]:
    """Turn automatic recurring payment off. What was paid stays paid until its date; the site's
    anniversary is kept, so turning it on again before then continues the same billing year."""
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
    plan.charge_failed_at = None


# --- time-driven: the subscription follows the apartments, renews, lapses (the sweep) -------------

SWEEP = Actor(label="sweep")


def _key(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:24]


def quantity_due(session: Session, site: Site, now: datetime) -> str | None:
    """The idempotency subject of the quantity update the site's subscription needs at ``now``
    (apartments needing a license not paid through the anniversary, or a different count of
    them), or None when it follows the apartments already or renews first."""
    plan = _plan(session, site)
    if plan is None or not plan.recurring or plan.period_end is None or now >= plan.period_end:
        return None
    apartments, devices = _rule_rows(session, site)
    count = needing_license(session, site)
    unpaid = sorted(line.apartment_id for line in rules.charge_lines(
        apartments, devices, start=now, period_end=plan.period_end, price_minor=1))
    if not unpaid and count == plan.apartments:
        return None
    return _key(plan.version, plan.period_end.isoformat(), count, unpaid)


def sync_quantity(session: Session, *, site: Site, now: datetime, provider: PaymentProvider,
                  actor: Actor = SWEEP) -> dict[str, Any] | None:
    """R-MY-5: the subscription follows the apartments. Its quantity becomes the number needing
    a license; each of them not paid through the anniversary is charged pro rata by day for the
    rest of the billing year (a subscription-quantity update with proration) and paid through
    it. Fewer apartments: the quantity goes down, nothing is refunded, and those no longer
    needing a license are not renewed. None when there is nothing to do."""
    due = quantity_due(session, site, now)
    plan = _plan(session, site)
    if due is None or plan is None or plan.period_end is None or plan.subscription_id is None:
        return None
    period_end, count = plan.period_end, needing_license(session, site)
    lines = _lines(session, site, start=now, period_end=period_end, provider=provider)
    amount = sum(line.amount_minor for line in lines)
    if count == 0:  # nothing needs a license: keep the subscription at one until it renews
        count = plan.apartments
    sub = provider.update_quantity(plan.subscription_id, site_reference=site_reference(site), apartments=count,
                                   amount_minor=amount, region=site.region,
                                   idempotency_key=f"entitle-{site_reference(site)}-qty-{due}")
    history.lock_organization(session, site.org_id)
    session.refresh(plan)
    before, plan.apartments, plan.charge_failed_at = plan.apartments, count, None
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.recurring.quantity_changed",
                   object_type="my2n_site", object_id=site.id, before={"apartments": before},
                   after={"apartments": count, "charged_minor": amount})
    paid: list[str] = []
    if sub.latest_payment_id:
        payment = _record_payment(session, site=site, payment_id=sub.latest_payment_id, subscription_id=sub.id,
                                  apartment_ids=[line.apartment_id for line in lines], period_end=period_end,
                                  amount_minor=sub.amount_minor, currency=sub.currency, purpose="added",
                                  actor=actor, now=now)
        paid = _names(session, payment.apartments)
    return {"apartments": count, "paid": paid, "charged_minor": amount}


def renew(session: Session, *, site: Site, now: datetime, provider: PaymentProvider,
          actor: Actor = SWEEP) -> dict[str, Any] | None:
    """R-MY-5: at the anniversary, charge the next billing year of every apartment needing a
    license (from the anniversary, so a retry during the window charges the same), move their
    paid-through to the next anniversary, and the anniversary with it. Apartments paid past it
    already (vouchers) are charged only for what is not paid. None when it is not due."""
    plan = _plan(session, site)
    if plan is None or not plan.recurring or plan.period_end is None or plan.subscription_id is None \
            or now < plan.period_end:
        return None
    start, period_end = plan.period_end, add_years(plan.period_end, 1)
    lines = _lines(session, site, start=start, period_end=period_end, provider=provider)
    amount, count = sum(line.amount_minor for line in lines), needing_license(session, site)
    sub_id = plan.subscription_id
    if amount > 0:
        sub = provider.renew(sub_id, site_reference=site_reference(site), apartments=max(count, 1),
                             amount_minor=amount, renews_at=period_end, region=site.region,
                             idempotency_key=f"entitle-{site_reference(site)}-renewal-{_key(plan.version, start)}")
    history.lock_organization(session, site.org_id)
    session.refresh(plan)
    if plan.period_end != start:  # renewed meanwhile (its webhook, another sweep)
        return None
    plan.period_end, plan.charge_failed_at = period_end, None
    if count:
        plan.apartments = count
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.recurring.renewed",
                   object_type="my2n_site", object_id=site.id, before={"renews_at": start.isoformat()},
                   after={"renews_at": period_end.isoformat(), "charged_minor": amount, "apartments": len(lines)})
    paid: list[str] = []
    if amount > 0 and sub.latest_payment_id:
        payment = _record_payment(session, site=site, payment_id=sub.latest_payment_id, subscription_id=sub_id,
                                  apartment_ids=[line.apartment_id for line in lines], period_end=period_end,
                                  amount_minor=sub.amount_minor, currency=sub.currency, purpose="renewal",
                                  actor=actor, now=now)
        paid = _names(session, payment.apartments)
    return {"renews_at": period_end.isoformat(), "paid": paid, "charged_minor": amount}


def charge_failed(session: Session, *, site: Site, now: datetime, error: EntitleError, what: str,
                  actor: Actor = SWEEP) -> None:
    """A charge of recurring payment was declined: recorded in history, and the first decline
    starts the retry window of the apartments it was for (``rules.Recurring.cover``). The event
    that tells the admins is recorded by the caller (once per attempt)."""
    history.lock_organization(session, site.org_id)
    plan = _plan(session, site)
    if plan is None or not plan.recurring:
        return
    if plan.charge_failed_at is None:
        plan.charge_failed_at = now
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.card_payment.failed",
                   object_type="my2n_site", object_id=site.id,
                   after={"charge": what, "code": error.code, "message": error.message,
                          "works_until": rules.Recurring(plan.period_end or now, plan.charge_failed_at)
                          .cover.isoformat()})


def stop_lapsed(session: Session, *, site: Site, now: datetime, provider: PaymentProvider) -> bool:
    """After the retry window of a renewal that was never paid, recurring payment is stopped
    (the subscription cancelled) and the apartments it did not pay lapse. False when not due."""
    plan = _plan(session, site)
    if plan is None or not plan.recurring or plan.period_end is None or plan.subscription_id is None:
        return False
    if now < rules.Recurring(plan.period_end, plan.charge_failed_at).cover or now < plan.period_end:
        return False
    provider.stop_recurring(plan.subscription_id)
    history.lock_organization(session, site.org_id)
    session.refresh(plan)
    if not plan.recurring:
        return False
    sub_id = plan.subscription_id
    _turn_off(plan, now)
    session.flush()
    history.record(session, org_id=site.org_id, actor=SWEEP, now=now, action="my2n.recurring.deactivated",
                   object_type="my2n_site", object_id=site.id, before={"subscription": sub_id},
                   after={"by": "renewal_not_paid"})
    return True


def _names(session: Session, apartment_ids: list[int]) -> list[str]:
    if not apartment_ids:
        return []
    by_id = {i: name for part in chunks(apartment_ids)
             for i, name in session.execute(select(Apartment.id, Apartment.name).where(Apartment.id.in_(part)))}
    return [by_id[i] for i in apartment_ids]


def _record_payment(session: Session, *, site: Site, payment_id: str, subscription_id: str | None,
                    apartment_ids: list[int], period_end: datetime, amount_minor: int | None, currency: str | None,
                    purpose: str, actor: Actor, now: datetime) -> CardPayment:
    """Pay these apartments through ``period_end`` for this card payment, once: a payment id
    seen before returns what it paid and changes nothing. Paid-through never moves back. The
    event it emits is kept in ``session.info["my2n.paid_event"]`` for the sweep's count."""
    history.lock_organization(session, site.org_id)
    seen = session.scalars(select(CardPayment).where(CardPayment.payment_id == payment_id)).one_or_none()
    if seen is not None:
        return seen
    payment = CardPayment(org_id=site.org_id, site_id=site.id, payment_id=payment_id, subscription_id=subscription_id,
                          apartments=list(apartment_ids), amount_minor=amount_minor, currency=currency, paid_at=now,
                          purpose=purpose, period_end=period_end)
    session.add(payment)
    session.flush()  # the unique payment id: a concurrent second report of it fails here, before paying
    rows = {a.id: a for part in chunks(apartment_ids)
            for a in session.scalars(select(Apartment).where(Apartment.id.in_(part)))}
    for apt_id in apartment_ids:
        apt = rows[apt_id]
        apt.paid_through = period_end if apt.paid_through is None else max(apt.paid_through, period_end)
        apt.devices_paid_for = None  # a card pays the whole apartment, every device (R-MY-5)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.card_payment.received",
                   object_type="my2n_site", object_id=site.id,
                   after={"payment": payment_id, "purpose": purpose, "apartments": len(apartment_ids),
                          "amount_minor": amount_minor,
                          "paid_through": {rows[i].name: rows[i].paid_through.isoformat()  # type: ignore[union-attr]
                                           for i in apartment_ids}})
    session.info["my2n.paid_event"] = events.emit(session, org_id=site.org_id, type="my2n.apartments.paid", now=now,
                                                  site=site.id, apartments=len(apartment_ids), payment=payment_id)
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
        if session.scalars(select(CardPayment.id).where(CardPayment.payment_id == event.payment_id)).first():
            return "paid"  # our call's answer recorded it already
        if plan is None:
            return "ignored"
        history.lock_organization(session, site.org_id)
        if plan.subscription_id != event.subscription_id:
            # Our start timed out but the provider made the subscription: adopt it.
            plan.recurring, plan.subscription_id = True, event.subscription_id
            plan.apartments = event.apartments or plan.apartments
            plan.activated_at = plan.activated_at or now
            plan.period_end = rules.billing_period_end(plan.period_end, now)
        elif plan.period_end is not None and now >= plan.period_end:
            # The provider renewed on its own at the anniversary (Stripe does): the next year.
            plan.period_end, plan.charge_failed_at = add_years(plan.period_end, 1), None
        period_end = plan.period_end or add_years(now, 1)
        apartments, devices = _rule_rows(session, site)
        unpaid = [line.apartment_id for line in rules.charge_lines(apartments, devices, start=now,
                                                                   period_end=period_end, price_minor=1)]
        _record_payment(session, site=site, payment_id=event.payment_id, subscription_id=event.subscription_id,
                        apartment_ids=unpaid, period_end=period_end, amount_minor=event.amount_minor,
                        currency=event.currency, purpose="provider", actor=PROVIDER, now=now)
        return "paid"
    if event.type == "payment_failed":
        history.record(session, org_id=site.org_id, actor=PROVIDER, now=now, action="my2n.card_payment.failed",
                       object_type="my2n_site", object_id=site.id,
                       after={"payment": event.payment_id, "message": event.failure_message})
        events.emit(session, org_id=site.org_id, type="my2n.card_payment.failed", now=now, site=site.name,
                    site_id=site.id, payment=event.payment_id)
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
    return [payment_to_dict(p) for p in card_payments(session, site)]


def card_payments(session: Session, site: Site, *, before_id: int | None = None,
                  limit: int | None = None) -> list[CardPayment]:
    """The site's card payments, newest first; a page of them with ``before_id`` and ``limit``."""
    stmt = select(CardPayment).where(CardPayment.site_id == site.id)
    if before_id is not None:
        stmt = stmt.where(CardPayment.id < before_id)
    return list(session.scalars(stmt.order_by(CardPayment.id.desc()).limit(limit)))


def payment_to_dict(p: CardPayment) -> dict[str, Any]:
    return {"payment": p.payment_id, "paid_at": p.paid_at.isoformat(), "apartments": len(p.apartments),
            "amount_minor": p.amount_minor, "currency": p.currency.upper() if p.currency else None,
            "purpose": p.purpose, "paid_through": p.period_end.isoformat() if p.period_end else None}
