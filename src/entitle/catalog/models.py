from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from entitle.db import Base, BigId


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # Which licensing model runs this product: access_commander, axis or my2n.
    model: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[datetime]

    skus: Mapped[list[Sku]] = relationship(back_populates="product", lazy="selectin", order_by="Sku.part_number")


class Sku(Base):
    """What one unit of a part number grants (R-CORE-3). The grant is data, never code."""

    __tablename__ = "skus"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"), index=True)
    part_number: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # kind: capacity | feature | tier | subscription | apartment_year | expansion
    grant_kind: Mapped[str] = mapped_column(String(32))
    # e.g. {"devices": 5} or {"attendance_users": 25} or {"features": ["integration"]}
    grants: Mapped[dict[str, Any]]
    term_years: Mapped[int | None]
    # Empty list: sold everywhere.
    regions: Mapped[list[str]]
    # Other vendors' numbers for the same part (Axis 01372-001 for 2N 91379040).
    alt_part_numbers: Mapped[list[str]]
    created_at: Mapped[datetime]

    product: Mapped[Product] = relationship(back_populates="skus", lazy="joined")

    def sold_in(self, region: str) -> bool:
        return not self.regions or region.upper() in {r.upper() for r in self.regions}
