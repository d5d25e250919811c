from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response

from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging, client_id
from entitle.api.answers import remembered, valid_until
from entitle.api.routing import OneHopRoute, quick_read
from entitle.api.schemas import LedgerPage, RedeemIn, RedeemOut, WalletOut
from entitle.keys import services as keys
from entitle.ledger import services as ledger
from entitle.ledger.models import LedgerTransaction
from entitle.platform import idempotency

router = APIRouter(route_class=OneHopRoute, tags=["wallet"])


@router.get("/orgs/{org_id}/wallet", response_model=WalletOut)
@remembered
@quick_read
def wallet(org_id: int, actor: CurrentActor, db: DB, now: Now, request: Request) -> dict[str, object]:
    """Units redeemed into the organization and not yet allocated, per part number."""
    actor.require_member(org_id)
    lines = ledger.wallet(db, org_id, now=now)
    valid_until(request, ledger.wallet_changes_at(lines))  # a lot's five years end
    return {"org_id": org_id, "lines": [
        {"part_number": w.part_number, "name": w.name, "product": w.product,
         "grant_kind": w.grant_kind, "units": w.units} for w in lines]}


@router.post("/orgs/{org_id}/wallet/redeem", response_model=RedeemOut,
             responses={400: {}, 403: {}, 404: {}, 409: {}, 422: {}, 429: {}})
def redeem(org_id: int, body: RedeemIn, actor: CurrentActor, ctx: Ctx, request: Request,
           response: Response,
           idempotency_key: Annotated[str | None, Header(description="Required: a retry with the same key moves nothing.")] = None,
           ) -> dict[str, object]:
    """Redeem a license key into the wallet. Refusals: key_malformed, key_mistyped,
    key_unknown, key_already_redeemed, key_cancelled, key_wrong_region, key_is_voucher (a My2N
    voucher code: activate it on the site's Vouchers tab), rate_limited."""
    actor.require_licensing(org_id)
    key = idempotency.require_key(idempotency_key)
    ctx.redeem_limiter.hit(org_id=org_id, client=client_id(request))
    now = ctx.clock.now()
    outcome = idempotency.run(
        ctx.sessions, org_id=org_id, key=key, now=now,
        fp=idempotency.fingerprint("POST", request.url.path, body.model_dump()),
        work=lambda s: (200, keys.redeem(s, org_id=org_id, typed_key=body.key, actor=actor, now=now)),
        lock=True,  # the redeem takes the organization's lock first anyway
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return outcome.body


@router.get("/orgs/{org_id}/ledger", response_model=LedgerPage)
def ledger_page(org_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, object]:
    """The organization's ledger transactions, newest first; entries show both sides."""
    from sqlalchemy import select

    actor.require_member(org_id)
    stmt = select(LedgerTransaction).where(LedgerTransaction.org_id == org_id)
    if page.cursor is not None:
        stmt = stmt.where(LedgerTransaction.id < page.cursor)
    rows = list(db.scalars(stmt.order_by(LedgerTransaction.id.desc()).limit(page.limit + 1)))
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    items = [{"id": t.id, "kind": t.kind, "actor": t.actor, "memo": t.memo,
              "created_at": t.created_at.isoformat(),
              "entries": [{"account_kind": e.account.kind if e.account.org_id == org_id else "issuer",
                           "part_number": e.account.sku.part_number, "amount": e.amount}
                          for e in t.entries]} for t in rows]
    return {"items": items, "next_cursor": rows[-1].id if more else None}
