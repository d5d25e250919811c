"""Products and SKUs as data (R-CORE-3): loaded from a YAML or JSON document."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.catalog.models import Product, Sku
from entitle.errors import EntitleError, NotFound
from entitle.history import services as history
from entitle.tenancy import services as tenancy
from entitle.text import SingleLine

DEFAULT_CATALOG = Path(__file__).with_name("default_catalog.yaml")
GRANT_KINDS = ("capacity", "feature", "tier", "subscription", "apartment_year", "expansion", "preloaded",
               "upgrade")
MODELS = ("access_commander", "axis", "my2n")


class SkuDoc(BaseModel):
    part_number: SingleLine = Field(min_length=1, max_length=64)
    name: SingleLine = Field(min_length=1, max_length=200)
    grant_kind: str
    grants: dict[str, Any] = Field(default_factory=dict)
    term_years: int | None = None
    regions: list[SingleLine] = Field(default_factory=list)
    alt_part_numbers: list[SingleLine] = Field(default_factory=list)

    @field_validator("grant_kind")
    @classmethod
    def _kind(cls, v: str) -> str:
        if v not in GRANT_KINDS:
            raise ValueError(f"grant_kind must be one of {', '.join(GRANT_KINDS)}")
        return v

    @field_validator("term_years")
    @classmethod
    def _term(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError("term_years must be at least 1")
        return v


class ProductDoc(BaseModel):
    code: SingleLine = Field(min_length=1, max_length=64)
    name: SingleLine = Field(min_length=1, max_length=200)
    model: str
    skus: list[SkuDoc] = Field(default_factory=list)

    @field_validator("model")
    @classmethod
    def _model(cls, v: str) -> str:
        if v not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}")
        return v


class CatalogDoc(BaseModel):
    products: list[ProductDoc]


def parse(text: str, *, filename: str = "catalog") -> CatalogDoc:
    try:
        data = json.loads(text) if filename.endswith(".json") else yaml.safe_load(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise EntitleError("catalog_unreadable", f"The catalog file cannot be read: {exc}") from exc
    return parse_obj(data)


def parse_obj(data: Any) -> CatalogDoc:
    try:
        return CatalogDoc.model_validate(data)
    except ValidationError as exc:
        raise EntitleError(
            "catalog_invalid",
            "The catalog file does not describe products and SKUs correctly; fix the fields listed.",
            errors=[{"at": ".".join(map(str, e["loc"])), "problem": e["msg"]} for e in exc.errors()],
        ) from exc


def load(session: Session, doc: CatalogDoc, *, actor: Actor, now: datetime) -> dict[str, int]:
    """Create or update products and SKUs by code / part number. Never deletes."""
    actor.require_issuer()
    issuer_org = tenancy.issuer_organization(session, now=now)
    counts = {"products_created": 0, "products_updated": 0, "skus_created": 0, "skus_updated": 0}
    for p in doc.products:
        product = session.scalars(select(Product).where(Product.code == p.code)).one_or_none()
        if product is None:
            product = Product(code=p.code, name=p.name, model=p.model, created_at=now)
            session.add(product)
            session.flush()
            counts["products_created"] += 1
        else:
            product.name, product.model = p.name, p.model
            counts["products_updated"] += 1
        for s in p.skus:
            sku = session.scalars(select(Sku).where(Sku.part_number == s.part_number)).one_or_none()
            fields = s.model_dump()
            if sku is None:
                session.add(Sku(product_id=product.id, created_at=now, **fields))
                counts["skus_created"] += 1
            else:
                if sku.product_id != product.id:
                    raise EntitleError(
                        "sku_product_conflict",
                        f"Part number {s.part_number} already belongs to another product.",
                        part_number=s.part_number,
                    )
                for k, v in fields.items():
                    setattr(sku, k, v)
                counts["skus_updated"] += 1
    session.flush()
    history.record(session, org_id=issuer_org.id, actor=actor, now=now, action="catalog.loaded",
                   object_type="catalog", object_id="catalog", after=counts)
    return counts


def sku_by_part(session: Session, part_number: str) -> Sku:
    """The SKU sold under ``part_number``: its own, or one of its ``alt_part_numbers`` (the
    same package under another vendor's number, e.g. Axis 01372-001 for 2N 91379040)."""
    part_number = part_number.strip()
    sku = session.scalars(select(Sku).where(Sku.part_number == part_number)).one_or_none()
    if sku is None:
        # A handful of SKUs: the JSON list is read in Python, the same on SQLite and PostgreSQL.
        sku = next((s for s in session.scalars(select(Sku).order_by(Sku.part_number))
                    if part_number in (s.alt_part_numbers or [])), None)
    if sku is None:
        raise NotFound("sku", part_number=part_number)
    return sku


def products(session: Session) -> list[Product]:
    return list(session.scalars(select(Product).order_by(Product.code)))


def products_page(session: Session, *, after_id: int | None, limit: int) -> list[Product]:
    """A page of the catalog in the order it was loaded (by id: a keyset, where the code order
    of ``products`` would need a text cursor)."""
    stmt = select(Product)
    if after_id is not None:
        stmt = stmt.where(Product.id > after_id)
    return list(session.scalars(stmt.order_by(Product.id).limit(limit)))


def sku_to_dict(s: Sku) -> dict[str, Any]:
    return {"part_number": s.part_number, "name": s.name, "product": s.product.code,
            "grant_kind": s.grant_kind, "grants": s.grants, "term_years": s.term_years,
            "regions": s.regions, "alt_part_numbers": s.alt_part_numbers}


def product_to_dict(p: Product) -> dict[str, Any]:
    return {"code": p.code, "name": p.name, "model": p.model, "skus": [sku_to_dict(s) for s in p.skus]}
