"""Notifications to organization admins (R-CORE-8): the transitions someone has to act on are
shown in the web UI to every owner and admin of the organization and mailed to them.

``notify`` runs inside ``events.emit`` (same transaction as the change); mailing happens later,
outside it, through a :class:`entitle.delivery.mail.Mailer`.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.delivery.models import Notification
from entitle.platform.models import Event
from entitle.tenancy.models import Membership, Role

# The event types admins are told about, with the line they read. The payload fills the braces.
TITLES: dict[str, str] = {
    "axis.grace.started": "AXIS: the grace period of {product} started; allocate licenses before it ends.",
    "axis.grace.ending": "AXIS: the grace period of {product} ends in 7 days; allocate licenses now.",
    "axis.grace.ended": "AXIS: the grace period of {product} ended without full licensing.",
    "axis.growth_allowance.exceeded": "AXIS: {product} has grown past its growth allowance; allocate more licenses.",
    "axis.units.expired": "AXIS: license units in the wallet expired unused.",
    "ac.license_device.disconnected": "Access Commander: the license device of {installation} is disconnected; "
                                      "the protective period runs.",
    "ac.protective_period.ending": "Access Commander: the protective period of {installation} ends soon; "
                                   "reconnect the license device.",
    "ac.protective_period.ended": "Access Commander: the protective period of {installation} ended.",
    "ac.devices.inactive": "Access Commander: the devices of {installation} were made inactive.",
    "my2n.apartment.expiring": "My2N: the license of apartment {apartment} ({site}) lapses within 30 days.",
    "my2n.apartment.lapsed": "My2N: the license of apartment {apartment} ({site}) lapsed; its paid devices stopped.",
    "my2n.card_payment.failed": "My2N: a card payment for site {site} failed; check the card.",
    "my2n.site.custom_expiring": "My2N: the custom-model license of site {site} expires on {expires_on}; migrate "
                                 "the site to the apartment model before then.",
    "my2n.site.custom_expired": "My2N: the custom-model license of site {site} expired on {expires_on}; its paid "
                                "devices stopped: migrate the site to the apartment model.",
}


class _Blank(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        return "?"


def title_of(event: Event) -> str:
    return TITLES[event.type].format_map(_Blank(event.payload))[:300]


def notify(session: Session, event: Event) -> int:
    """One notification per owner and admin of the organization, for the types above."""
    if event.type not in TITLES:
        return 0
    admins = list(session.scalars(select(Membership.user_id).where(
        Membership.org_id == event.org_id, Membership.role.in_([Role.owner.value, Role.admin.value]))))
    if not admins:
        return 0
    session.flush()  # the event's id
    title = title_of(event)
    session.add_all(Notification(org_id=event.org_id, user_id=user_id, event_id=event.id, title=title,
                                 created_at=event.created_at) for user_id in admins)
    return len(admins)
