"""What the organization as a whole shows: webhooks whose deliveries fail (R-CORE-8), and the
units in its wallet per product over time, from the ledger (R-CORE-5)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from entitle.attention.items import Item, day
from entitle.catalog.models import Product, Sku
from entitle.delivery.models import WebhookDelivery, WebhookEndpoint
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.text import plural

FAILURES_SHOWN_FOR = timedelta(days=7)  # a delivery given up longer ago than this is history


@dataclass(frozen=True, slots=True)
class FailingWebhook:
    id: int
    url: str
    failed: int  # deliveries given up within FAILURES_SHOWN_FOR
    retrying: int  # deliveries still being retried after a failed attempt
    last_error: str | None
    since: datetime


def failing_webhooks(session: Session, org_id: int, now: datetime) -> list[FailingWebhook]:
    failed = WebhookDelivery.state == "failed"
    retrying = (WebhookDelivery.state == "pending") & (WebhookDelivery.attempts > 0)
    rows = session.execute(
        select(WebhookEndpoint.id, WebhookEndpoint.url, func.count().filter(failed), func.count().filter(retrying),
               func.min(WebhookDelivery.created_at), func.max(WebhookDelivery.id))
        .join(WebhookDelivery, WebhookDelivery.endpoint_id == WebhookEndpoint.id)
        .where(WebhookEndpoint.org_id == org_id, WebhookEndpoint.active.is_(True),
               WebhookDelivery.created_at >= now - FAILURES_SHOWN_FOR, failed | retrying)
        .group_by(WebhookEndpoint.id, WebhookEndpoint.url).order_by(WebhookEndpoint.id)).all()
    if not rows:
        return []
    errors = dict(session.execute(select(WebhookDelivery.id, WebhookDelivery.last_error)
                                  .where(WebhookDelivery.id.in_([r[5] for r in rows]))).all())
    return [FailingWebhook(eid, url, int(n_failed), int(n_retrying), errors.get(last), since)
            for eid, url, n_failed, n_retrying, since, last in rows]


def items(webhooks: list[FailingWebhook]) -> list[Item]:
    out = []
    for w in webhooks:
        parts = [p for p in (f"{plural(w.failed, 'delivery', 'deliveries')} given up" if w.failed else "",
                             f"{plural(w.retrying, 'delivery', 'deliveries')} being retried" if w.retrying else "")
                 if p]
        error = f" The last answer: {w.last_error}." if w.last_error else ""
        out.append(Item("webhook.failing", "critical" if w.failed else "warning", "organization", w.url,
                        f"Events do not reach the webhook {w.url} since {day(w.since)}: {' and '.join(parts)}."
                        f"{error}", f"/webhooks/{w.id}", "Open the webhook", None))
    return out


@dataclass(frozen=True, slots=True)
class WalletSeries:
    product: str
    points: tuple[tuple[datetime, int], ...]  # (moment, units in the wallet after it), oldest first


def wallet_over_time(session: Session, org_id: int, now: datetime) -> list[WalletSeries]:
    """Units in the wallet per product after each moment they changed, from the ledger's wallet
    entries, and at ``now`` (where lots past their five years count as gone, recorded or not)."""
    rows = session.execute(
        select(Product.name, Entry.created_at, func.sum(Entry.amount))
        .select_from(Entry).join(Account, Account.id == Entry.account_id)
        .join(Sku, Sku.id == Account.sku_id).join(Product, Product.id == Sku.product_id)
        .where(Account.org_id == org_id, Account.kind == "wallet")
        .group_by(Product.name, Entry.created_at).order_by(Entry.created_at)).all()
    if not rows:
        return []
    series: dict[str, list[tuple[datetime, int]]] = {}
    for product, at, amount in rows:
        points = series.setdefault(product, [])
        points.append((at, (points[-1][1] if points else 0) + int(amount)))
    current: dict[str, int] = {}
    for line in ledger.wallet(session, org_id, now=now):
        current[line.product] = current.get(line.product, 0) + max(line.units, 0)
    out = []
    for product, points in sorted(series.items()):
        if points[-1][0] < now:
            points.append((now, current.get(product, 0)))
        out.append(WalletSeries(product, tuple(points)))
    return out
