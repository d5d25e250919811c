from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Body

from entitle.api.deps import DB, CurrentActor, Now, Paging, refusals
from entitle.api.routing import OneHopRoute
from entitle.api.schemas import CatalogLoadOut, CatalogProductPage
from entitle.catalog import services as catalog

router = APIRouter(route_class=OneHopRoute, tags=["catalog"])


@router.get("/catalog/products", response_model=CatalogProductPage)
def list_products(actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """Products and their SKUs: part numbers, what one unit grants, term, regions; in the order
    the catalog was loaded."""
    return page.answer(catalog.products_page(db, after_id=page.cursor, limit=page.fetch), catalog.product_to_dict)


@router.post("/catalog", response_model=CatalogLoadOut, responses=refusals(403))
def load_catalog(actor: CurrentActor, db: DB, now: Now, doc: dict[str, Any] = Body(...)) -> dict[str, int]:
    """Issuer only: create or update products and SKUs from a catalog document."""
    actor.require_issuer()
    parsed = catalog.parse_obj(doc)
    return catalog.load(db, parsed, actor=actor, now=now)
