"""My2N's time-driven transitions for the sweep (R-MY-5, R-MY-6, R-CORE-8).

Events: an apartment license that lapses within 30 days (``my2n.apartment.expiring``) and one
that lapsed (``my2n.apartment.lapsed``), for apartments that need a license (a paid device
outside local mode). The subject is the apartment and the end of its cover -- its paid-through
date, or recurring payment's cover when that is later (``rules.covered_until``) -- so each paid
year lapses (and warns) once. A warning is sent only while it is still ahead of the lapse (a
sweep that first runs after it sends the lapse only). A custom-model site is announced the same
way: 30 days before its license expires (``my2n.site.custom_expiring``) and when it expired
(``my2n.site.custom_expired``), so that it is migrated in time (issue 14 point 7).

Money, each a transition that records itself (``Transition.record``), in the sweep's transaction:

- **recurring payment follows the apartments** (``billing.sync_quantity``): an apartment that
  started needing a license is charged for the rest of the billing year;
- **renewal at the anniversary** (``billing.renew``), tried once a day through the retry window;
  a declined or failed charge records ``my2n.card_payment.failed`` (admins are notified) and
  is tried again the next day; after the window, recurring payment is stopped
  (``billing.stop_lapsed``);
- **credit used automatically** (``services.pay_lapsing_from_credit``): on the day an apartment
  would lapse (from a day before its paid-through), its next year is paid from the site credit
  pool when the site's ``auto_credit`` is on and the pool holds enough; and an apartment paid per
  device for fewer devices than it has now is topped up from the pool's device-years at once
  (``services.top_up_from_credit``).

A provider that does not answer leaves the transition unrecorded: the next sweep tries it again
with the same idempotency key. What a state is never depends on whether the sweep ran: the
apartments recurring payment covers work until the cover ends (``rules.Recurring.cover``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from entitle.db import chunks
from entitle.delivery.models import SweepMark
from entitle.delivery.sweep import Finder, Transition, record_once
from entitle.errors import EntitleError
from entitle.my2n import billing, rules, services
from entitle.my2n.models import Apartment, PaymentPlan, Site, SiteDevice
from entitle.my2n.payments import PaymentProvider
from entitle.platform.models import Event

LOOK_BACK = timedelta(days=90)  # older lapses are not announced any more (a sweep off for months)
CREDIT_AHEAD = rules.DAY  # credit is used from a day before the lapse, so none is seen lapsed
FAILED = "my2n.card_payment.failed"

_configured: PaymentProvider | None = None


def configured_provider() -> PaymentProvider:
    """The provider of this process's settings (``entitle sweep``, ``entitle serve --sweep-every``)."""
    global _configured
    if _configured is None:
        from entitle.clock import FrozenClock, SystemClock
        from entitle.config import get_settings
        from entitle.context import payment_provider

        settings = get_settings()
        _configured = payment_provider(settings, FrozenClock(settings.now) if settings.now else SystemClock())
    return _configured


def finder(provider: PaymentProvider | None = None) -> Finder:
    """The finder, charging through ``provider`` (None: the configured one, made when needed)."""
    return lambda session, now: _find(session, now, lambda: provider or configured_provider())


def find(session: Session, now: datetime) -> Iterator[Transition]:
    return _find(session, now, configured_provider)


def _find(session: Session, now: datetime, provider: Callable[[], PaymentProvider]) -> Iterator[Transition]:
    recurring = {site_id: rules.Recurring(end, failed) for site_id, end, failed in session.execute(
        select(PaymentPlan.site_id, PaymentPlan.period_end, PaymentPlan.charge_failed_at)
        .where(PaymentPlan.recurring.is_(True), PaymentPlan.period_end.is_not(None)))}
    # Recurring payment stopped after its cover ran out (a renewal never paid): the apartments it
    # covered lapsed at the end of that cover, and are announced so once.
    ran_out = {site_id: end + rules.RENEWAL_RETRY_WINDOW for site_id, end, off in session.execute(
        select(PaymentPlan.site_id, PaymentPlan.period_end, PaymentPlan.deactivated_at)
        .where(PaymentPlan.recurring.is_(False), PaymentPlan.period_end.is_not(None),
               PaymentPlan.deactivated_at.is_not(None)))
        if off >= end + rules.RENEWAL_RETRY_WINDOW}
    yield from _money(session, now, recurring, provider)
    yield from _custom_expiry(session, now)
    credit_sites = _sites_with_credit(session)
    yield from _top_ups(session, now, sorted(credit_sites - set(recurring)))
    billable = (select(SiteDevice.apartment_id).where(SiteDevice.kind.in_(sorted(rules.PAID_KINDS)),
                                                      SiteDevice.local_mode.is_(False),
                                                      SiteDevice.apartment_id == Apartment.id).exists())
    covering = sorted(set(recurring) | set(ran_out))
    apartments = (select(Apartment.id, Apartment.name, Apartment.paid_through, Apartment.org_id, Site.id, Site.name)
                  .join(Site, Site.id == Apartment.site_id).where(Site.model == "apartment", billable))
    # The paid apartments, and the unpaid ones of the sites that recurring payment covers (read in
    # bounded parts of that list: it can hold every site).
    rows = [*session.execute(apartments.where(Apartment.paid_through.is_not(None))),
            *(row for part in chunks(covering) for row in session.execute(
                apartments.where(Apartment.paid_through.is_(None), Site.id.in_(part))))]
    rows.sort(key=lambda row: row[0])
    for apt_id, apt_name, paid_through, org_id, site_id, site_name in rows:
        plan = recurring.get(site_id)
        end = rules.covered_until(paid_through, plan)
        if site_id in ran_out and (paid_through is None or paid_through < ran_out[site_id]):
            end = ran_out[site_id]
        if end is None:
            continue
        payload = {"site": site_name, "site_id": site_id, "apartment": apt_name, "apartment_id": apt_id,
                   "paid_through": end.isoformat()}
        credit = (plan is None and site_id in credit_sites and paid_through is not None
                  and now - LOOK_BACK < paid_through <= now + CREDIT_AHEAD)
        if credit:
            yield _credit(org_id, site_id, apt_id, paid_through, payload)  # type: ignore[arg-type]
        if not now - LOOK_BACK < end <= now + rules.LAPSE_WARNING:
            continue
        subject = f"apt/{apt_id}/{end.isoformat()}"
        if not rules.is_lapsed(end, now):
            # A warning that is already too late is not sent; none while recurring payment renews.
            if rules.lapse_warning_due(paid_through, plan, now):
                yield Transition("my2n.apartment.expiring", subject, org_id, end - rules.LAPSE_WARNING, payload)
            continue
        lapse = Transition("my2n.apartment.lapsed", subject, org_id, end, payload)
        # The credit above may pay it first in this very sweep: then it did not lapse.
        yield _recheck(lapse, apt_id, paid_through) if credit else lapse


def _custom_expiry(session: Session, now: datetime) -> Iterator[Transition]:
    """R-MY-1, R-MY-6: a custom-model site is announced like an apartment, 30 days before its
    license expires (``my2n.site.custom_expiring``) and when it expired
    (``my2n.site.custom_expired``), once per expiry date; a warning already too late is not sent."""
    for site_id, org_id, name, expires in session.execute(
            select(Site.id, Site.org_id, Site.name, Site.custom_expires_at)
            .where(Site.model == "custom", Site.custom_expires_at.is_not(None),
                   Site.custom_expires_at > now - LOOK_BACK, Site.custom_expires_at <= now + rules.LAPSE_WARNING)
            .order_by(Site.id)):
        payload = {"site": name, "site_id": site_id, "expires_at": expires.isoformat(),
                   "expires_on": rules.moment_text(expires)}
        subject = f"site/{site_id}/{expires.isoformat()}"
        if rules.is_lapsed(expires, now):
            yield Transition("my2n.site.custom_expired", subject, org_id, expires, payload)
        else:
            yield Transition("my2n.site.custom_expiring", subject, org_id, expires - rules.LAPSE_WARNING, payload)


def _top_ups(session: Session, now: datetime, site_ids: list[int]) -> Iterator[Transition]:
    """R-MY-5, per-device vouchers counted per device: on a site that uses credit automatically
    (with credit in its pool, recurring payment off), an apartment paid per device for fewer
    devices than it has now is topped up from the pool at once
    (``services.top_up_from_credit``), before its newest device is seen stopped for long."""
    billable = (select(func.count()).where(SiteDevice.apartment_id == Apartment.id,
                                           SiteDevice.kind.in_(sorted(rules.PAID_KINDS)),
                                           SiteDevice.local_mode.is_(False)).scalar_subquery())
    for part in chunks(site_ids):
        for apt_id, org_id, site_id, name, paid_through, paid_for in session.execute(
                select(Apartment.id, Apartment.org_id, Apartment.site_id, Apartment.name, Apartment.paid_through,
                       Apartment.devices_paid_for)
                .where(Apartment.site_id.in_(part), Apartment.devices_paid_for.is_not(None),
                       Apartment.paid_through > now, billable > Apartment.devices_paid_for)
                .order_by(Apartment.id)):
            yield _top_up(org_id, site_id, apt_id, paid_through, paid_for, now,
                          {"site_id": site_id, "apartment": name, "apartment_id": apt_id})


def _top_up(org_id: int, site_id: int, apartment_id: int, paid_through: datetime, paid_for: int, now: datetime,
            payload: dict[str, Any]) -> Transition:
    def record(session: Session, at: datetime) -> Event | None:
        site = session.get(Site, site_id)
        if site is None:
            return None
        return services.top_up_from_credit(session, site=site, apartment_id=apartment_id, paid_through=paid_through,
                                           devices_paid_for=paid_for, now=at)

    return Transition("my2n.apartments.paid", f"apt/{apartment_id}/{paid_through.isoformat()}/devices/{paid_for}",
                      org_id, now, payload, record=record)


def _sites_with_credit(session: Session) -> set[int]:
    sites = session.scalars(select(Site).where(Site.auto_credit.is_(True), Site.model == "apartment"))
    return {site.id for site in sites if any(services.credit_pool(session, site).values())}


def _recheck(t: Transition, apartment_id: int, paid_through: datetime | None) -> Transition:
    def record(session: Session, now: datetime) -> Event | None:
        apt = session.get(Apartment, apartment_id)
        if apt is None or apt.paid_through != paid_through:
            return None
        return record_once(session, t, now=now)

    return Transition(t.kind, t.subject, t.org_id, t.due_at, t.payload, record=record)


def _credit(org_id: int, site_id: int, apartment_id: int, paid_through: datetime,
            payload: dict[str, Any]) -> Transition:
    def record(session: Session, now: datetime) -> Event | None:
        site = session.get(Site, site_id)
        if site is None:
            return None
        return services.pay_lapsing_from_credit(session, site=site, apartment_id=apartment_id,
                                                paid_through=paid_through, now=now)

    return Transition("my2n.apartments.paid", f"apt/{apartment_id}/{paid_through.isoformat()}/credit", org_id,
                      paid_through - CREDIT_AHEAD, payload, record=record)


def _money(session: Session, now: datetime, recurring: dict[int, rules.Recurring],
           provider: Callable[[], PaymentProvider]) -> Iterator[Transition]:
    for site_id, plan in recurring.items():
        site = session.get(Site, site_id)
        if site is None:
            continue
        payload = {"site": site.name, "site_id": site.id}
        day = now.date().isoformat()
        if now >= plan.cover and now >= plan.period_end:
            yield _charge(site, FAILED, f"site/{site.id}/stopped/{plan.period_end.isoformat()}", plan.cover,
                          payload | {"charge": "recurring_stopped"}, provider,
                          lambda s, st, n, p: billing.stop_lapsed(s, site=st, now=n, provider=p), "stop")
        elif plan.renewal_due(now):
            yield _charge(site, FAILED, f"site/{site.id}/renewal/{plan.period_end.isoformat()}/{day}",
                          plan.period_end, payload | {"charge": "renewal"}, provider,
                          lambda s, st, n, p: billing.renew(s, site=st, now=n, provider=p), "renewal")
        elif (due := billing.quantity_due(session, site, now)) is not None:
            yield _charge(site, FAILED, f"site/{site.id}/quantity/{due}/{day}", now,
                          payload | {"charge": "apartments_added"}, provider,
                          lambda s, st, n, p: billing.sync_quantity(s, site=st, now=n, provider=p), "added")


def _charge(site: Site, kind: str, subject: str, due_at: datetime, payload: dict[str, Any],
            provider: Callable[[], PaymentProvider],
            work: Callable[[Session, Site, datetime, PaymentProvider], Any], what: str) -> Transition:
    site_id, org_id = site.id, site.org_id
    failed = Transition(kind, subject, org_id, due_at, payload)

    def record(session: Session, now: datetime) -> Event | None:
        if session.scalar(select(SweepMark.id).where(SweepMark.kind == kind, SweepMark.subject == subject[:255])):
            return None  # this attempt failed earlier today: the next one is tomorrow
        current = session.get(Site, site_id)
        if current is None:
            return None
        session.info.pop("my2n.paid_event", None)
        try:
            with session.begin_nested():
                done = work(session, current, now, provider())
        except EntitleError as error:
            if error.code == "payment_provider_unreachable" or what == "stop":
                return None  # not recorded: the next sweep tries again, with the same key
            billing.charge_failed(session, site=current, now=now, error=error, what=what)
            return record_once(session, Transition(kind, subject, org_id, due_at,
                                                   payload | {"code": error.code}), now=now)
        if not done:
            return None
        event: Event | None = session.info.pop("my2n.paid_event", None)
        return event

    return Transition(failed.kind, failed.subject, failed.org_id, failed.due_at, failed.payload, record=record)
