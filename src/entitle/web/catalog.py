"""The catalog in the web UI (R-CORE-3), for the issuer: every product and the SKUs it is sold
as (part number, what one unit grants, term, regions), and loading a new catalog document
(YAML or JSON, the same document as ``entitle catalog load`` and ``POST /api/v1/catalog``).
Loading creates or updates by product code and part number and never deletes, so a key already
sold keeps its meaning.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, File, Query, Request, Response, UploadFile

from entitle.catalog import services as catalog
from entitle.db import reading, transaction
from entitle.errors import EntitleError
from entitle.text import plural
from entitle.web.views import PAGE_SIZE, AnyViewer, PostingViewer, Viewer, WebRoute, _ctx, render

router = APIRouter(route_class=WebRoute, include_in_schema=False)

MODEL_NAMES = {"access_commander": "2N Access Commander", "axis": "AXIS License Manager", "my2n": "My2N"}
KIND_NAMES = {"capacity": "Capacity package", "feature": "Feature", "tier": "Tier", "subscription": "Subscription",
              "apartment_year": "Apartment-year", "expansion": "Expansion", "preloaded": "Preloaded on hardware",
              "upgrade": "Upgrade"}


def grants_in_words(grants: dict[str, Any]) -> str:
    """What one unit grants, as the page says it: "5 devices, 1 attendance user", "license type:
    core" (the catalog's keys are plural nouns when they count something)."""
    if not grants:
        return "—"

    def one(key: str, value: Any) -> str:
        words = key.replace("_", " ")
        if isinstance(value, bool) or not isinstance(value, int):
            return f"{words}: {value}"
        return plural(value, words[:-1] if words.endswith("s") else words)

    return ", ".join(one(str(k), v) for k, v in grants.items())


def _catalog(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
             error: EntitleError | None = None, cursor: int | None = None) -> Response:
    viewer.actor.require_issuer()
    with reading(_ctx(request).sessions) as s:
        rows = catalog.products_page(s, after_id=cursor, limit=PAGE_SIZE + 1)
        products = [{"id": p.id, **catalog.product_to_dict(p)} for p in rows[:PAGE_SIZE]]
    more = len(rows) > PAGE_SIZE
    return render(request, "catalog.html", viewer=viewer, active="catalog", status=status, products=products,
                  model_names=MODEL_NAMES, kind_names=KIND_NAMES, grants_in_words=grants_in_words,
                  message=message, error=error, cursor=cursor, next_cursor=products[-1]["id"] if more else None)


@router.get("/issuer/catalog")
def catalog_page(request: Request, viewer: AnyViewer,
                 cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Response:
    return _catalog(request, viewer, cursor=cursor)


@router.post("/issuer/catalog")
def load_catalog(request: Request, viewer: PostingViewer, catalog_file: Annotated[UploadFile, File()]) -> Response:
    """Load a catalog document: products and SKUs created or updated, none deleted."""
    viewer.actor.require_issuer()
    ctx = _ctx(request)
    limit = ctx.settings.max_catalog_bytes
    raw = catalog_file.file.read(limit + 1)
    try:
        if len(raw) > limit:
            raise EntitleError("request_too_large", f"A catalog document is at most {limit:,} bytes: split it "
                               "into several documents and load them one after another.", status=413)
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EntitleError("catalog_invalid", "The catalog document is not UTF-8 text: save it as UTF-8 "
                               "YAML or JSON and load it again.") from None
        doc = catalog.parse(text, filename=catalog_file.filename or "catalog")
        with transaction(ctx.sessions) as s:
            counts = catalog.load(s, doc, actor=viewer.actor, now=ctx.clock.now())
    except EntitleError as exc:
        return _catalog(request, viewer, status=exc.status, error=exc)
    created, updated = counts["products_created"], counts["products_updated"]
    return _catalog(request, viewer, message=(
        f"Catalog loaded: {plural(created, 'product')} added and {plural(updated, 'product')} updated, "
        f"{plural(counts['skus_created'], 'SKU')} added and {plural(counts['skus_updated'], 'SKU')} updated. "
        "Nothing was deleted."))
