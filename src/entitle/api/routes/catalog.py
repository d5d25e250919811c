from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from entitle.api.deps import DB, CurrentActor, Now
from entitle.api.schemas import CatalogLoadOut
from entitle.catalog import services as catalog

router = APIRouter(tags=["catalog"])


@router.get("/catalog/products")
def list_products(actor: CurrentActor, db: DB) -> list[dict[str, Any]]:
    """Products and their SKUs: part numbers, what one unit grants, term, regions."""
    return [catalog.product_to_dict(p) for p in catalog.products(db)]


@router.post("/catalog", response_model=CatalogLoadOut)
def load_catalog(actor: CurrentActor, db: DB, now: Now, doc: dict[str, Any] = Body(...)) -> dict[str, int]:
    """Issuer only: create or update products and SKUs from a catalog document."""
    actor.require_issuer()
    parsed = catalog.parse_obj(doc)
    return catalog.load(db, parsed, actor=actor, now=now)
