from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response, status

from entitle.api.deps import DB, Ctx, CurrentActor, Paging, refusals
from entitle.api.routing import OneHopRoute
from entitle.api.schemas import BatchPage, CancelIn, CancelOut, MintIn, MintOut
from entitle.db import transaction
from entitle.keys import services as keys
from entitle.platform import idempotency
from entitle.tenancy import services as tenancy

router = APIRouter(route_class=OneHopRoute, prefix="/issuer", tags=["issuer"])

IdemKey = Annotated[str | None, Header(description="Required: a retry with the same key mints nothing.")]


def _issuer_org_id(ctx: Ctx) -> int:
    with transaction(ctx.sessions) as s:
        return tenancy.issuer_organization(s, now=ctx.clock.now()).id


@router.post("/key-batches", response_model=MintOut, status_code=status.HTTP_201_CREATED,
             responses=refusals(403, 404, 409))
def mint(body: MintIn, actor: CurrentActor, ctx: Ctx, request: Request, response: Response,
         idempotency_key: IdemKey = None) -> dict[str, Any]:
    """Mint a batch of license keys (issuer only). The codes are in this answer only."""
    actor.require_issuer()
    key = idempotency.require_key(idempotency_key)
    now = ctx.clock.now()

    def work(s: Any) -> tuple[int, dict[str, Any]]:
        m = keys.mint(s, sku_part=body.part_number, quantity_per_key=body.quantity_per_key,
                      count=body.count, name=body.name, actor=actor, now=now, keep_codes=True)
        return 201, {"batch": keys.batch_to_dict(m.batch), "keys": m.codes}

    outcome = idempotency.run(
        ctx.sessions, org_id=_issuer_org_id(ctx), key=key, now=now,
        fp=idempotency.fingerprint("POST", request.url.path, body.model_dump()), work=work,
        stored=lambda b: {**b, "keys": None},  # codes are never stored in clear
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return outcome.body


@router.get("/key-batches", response_model=BatchPage, responses=refusals(403))
def list_batches(actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    actor.require_issuer()
    rows = keys.batches(db, limit=page.limit + 1, before_id=page.cursor)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {"items": [keys.batch_to_dict(b) for b in rows], "next_cursor": rows[-1].id if more else None}


@router.post("/keys/cancel", response_model=CancelOut, responses=refusals(403, 404, 409))
def cancel_key(body: CancelIn, actor: CurrentActor, ctx: Ctx, request: Request, response: Response,
               idempotency_key: IdemKey = None) -> dict[str, Any]:
    """Cancel an unredeemed key (issuer only); its units leave the batch."""
    actor.require_issuer()
    key = idempotency.require_key(idempotency_key)
    now = ctx.clock.now()
    outcome = idempotency.run(
        ctx.sessions, org_id=_issuer_org_id(ctx), key=key, now=now,
        fp=idempotency.fingerprint("POST", request.url.path, body.model_dump()),
        work=lambda s: (200, keys.cancel(s, typed_key=body.key, actor=actor, now=now)),
    )
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return outcome.body
