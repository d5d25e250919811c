from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from entitle.catalog.models import Sku
from entitle.db import Base, BigId


class KeyBatch(Base):
    """Keys minted together by the issuer: all name the same SKU and quantity."""

    __tablename__ = "key_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)  # the issuer's
    sku_id: Mapped[int] = mapped_column(ForeignKey("skus.id"))
    name: Mapped[str] = mapped_column(String(200), default="")
    quantity_per_key: Mapped[int]
    count: Mapped[int]
    minted_by: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]
    # Only a batch with no ledger posting yet is half-minted; see keys.services.mint.
    completed_at: Mapped[datetime | None]

    sku: Mapped[Sku] = relationship(lazy="joined")


class LicenseKey(Base):
    """One single-use key. The code itself is never stored: only its SHA-256."""

    __tablename__ = "license_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("key_batches.id"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    # active | used | cancelled
    state: Mapped[str] = mapped_column(String(16), default="active")
    redeemed_org_id: Mapped[int | None] = mapped_column(ForeignKey("organizations.id"), index=True)
    redeemed_at: Mapped[datetime | None]
    cancelled_at: Mapped[datetime | None]

    batch: Mapped[KeyBatch] = relationship(lazy="joined")
