"""My2N's time-driven transitions for the sweep (R-MY-6, R-CORE-8): an apartment license that
lapses within 30 days (``my2n.apartment.expiring``) and one that lapsed (``my2n.apartment.lapsed``),
for apartments that need a license (a paid device outside local mode). The subject is the
apartment and its paid-through date, so each paid year lapses (and warns) once. A warning is sent
only while it is still ahead of the lapse (a sweep that first runs after it sends the lapse only)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.delivery.sweep import Transition
from entitle.my2n import rules
from entitle.my2n.models import Apartment, Site, SiteDevice

LOOK_BACK = timedelta(days=90)  # older lapses are not announced any more (a sweep off for months)


def find(session: Session, now: datetime) -> Iterator[Transition]:
    billable = (select(SiteDevice.apartment_id).where(SiteDevice.kind.in_(sorted(rules.PAID_KINDS)),
                                                      SiteDevice.local_mode.is_(False),
                                                      SiteDevice.apartment_id == Apartment.id).exists())
    rows = session.execute(
        select(Apartment.id, Apartment.name, Apartment.paid_through, Apartment.org_id, Site.id, Site.name)
        .join(Site, Site.id == Apartment.site_id)
        .where(Site.model == "apartment", Apartment.paid_through.is_not(None),
               Apartment.paid_through > now - LOOK_BACK, Apartment.paid_through <= now + rules.LAPSE_WARNING,
               billable)
        .order_by(Apartment.id))
    for apt_id, apt_name, paid_through, org_id, site_id, site_name in rows:
        subject = f"apt/{apt_id}/{paid_through.isoformat()}"
        payload = {"site": site_name, "site_id": site_id, "apartment": apt_name, "apartment_id": apt_id,
                   "paid_through": paid_through.isoformat()}
        if not rules.is_lapsed(paid_through, now):  # a warning that is already too late is not sent
            yield Transition("my2n.apartment.expiring", subject, org_id, paid_through - rules.LAPSE_WARNING, payload)
        else:
            yield Transition("my2n.apartment.lapsed", subject, org_id, paid_through, payload)
