"""The organization's home: the Attention list and the tiles of the licensing models it uses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.orm import Session

from entitle.attention import access_commander, axis, my2n, organization
from entitle.attention.items import Item, most_urgent_first


@dataclass(frozen=True)
class Home:
    now: datetime
    attention: list[Item]
    installations: list[access_commander.InstallationTile]
    products: list[axis.ProductTile]
    lots: list[axis.WalletLot]
    sites: list[my2n.SiteTile]
    webhooks: list[organization.FailingWebhook]

    @property
    def models(self) -> list[str]:
        """The licensing models the organization uses, in the order the tiles show them."""
        used = [("access_commander", self.installations), ("axis", self.products), ("my2n", self.sites)]
        return [name for name, rows in used if rows]

    def to_dict(self) -> dict[str, Any]:
        return {"now": self.now.isoformat(), "attention": [i.to_dict(self.now) for i in self.attention],
                "models": self.models,
                "access_commander": [t.to_dict() for t in self.installations],
                "axis": [t.to_dict() for t in self.products],
                "my2n": [t.to_dict() for t in self.sites]}


def home(session: Session, org_id: int, now: datetime, *, webhooks: bool = True) -> Home:
    """Everything the home page shows, right at ``now`` whether or not a sweep ran (R-CORE-7).
    ``webhooks``: include failing webhooks (their pages are for owners and admins only)."""
    installations = access_commander.installations(session, org_id, now)
    found = axis.products(session, org_id, now)
    sites = my2n.sites(session, org_id, now)
    failing = organization.failing_webhooks(session, org_id, now) if webhooks else []
    items = (access_commander.items(installations) + axis.items(found, now) + my2n.items(sites, now)
             + organization.items(failing))
    return Home(now, most_urgent_first(items), installations, found.products, found.lots, sites, failing)
