"""AXIS License Manager licensing: the organization's products, their devices, allocations to
subscription years, hardware with tied-to-hardware licenses (SPEC §3, R-AX-1 … R-AX-13).

Units are in the ledger (``entitle.ledger``): a wallet *lot* is a ``wallet`` account whose ref
starts with ``lot/`` (its ``created_at`` is when the units entered the wallet, R-AX-4); an
allocation is an ``axis_allocation`` account; hardware licenses are ``hardware_license``
accounts. These tables hold what the rules read besides units: dates, devices, and which year an
allocation licenses.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId


class OrgProduct(Base):
    """One AXIS product in one organization: registered when its first system is (R-AX-1), its
    trial (R-AX-13), and the subscription whose start fixes the subscription years (R-AX-3)."""

    __tablename__ = "axis_products"
    __table_args__ = (UniqueConstraint("org_id", "product_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    registered_at: Mapped[datetime]
    trial_ends_at: Mapped[datetime | None]
    subscription_start: Mapped[datetime | None]
    started_by: Mapped[str | None] = mapped_column(String(320))
    # The subscription year whose growth-allowance event was sent (one event per year, R-AX-9).
    growth_flagged_year: Mapped[int | None]


class AxisDevice(Base):
    """A device (channel) of a registered system that needs a license of one type (R-AX-2).
    Removing keeps the row (``removed_at``) so that the need at any past moment can be counted."""

    __tablename__ = "axis_devices"
    __table_args__ = (
        UniqueConstraint("system_id", "serial"),
        # The need of a product is one index-only scan: (org, product, type, added, removed).
        Index("ix_axis_devices_need", "org_id", "product_id", "license_type", "added_at", "removed_at",
              "hardware_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id"))
    serial: Mapped[str] = mapped_column(String(128))
    license_type: Mapped[str] = mapped_column(String(32))
    # Licensed by this piece of hardware's tied-to-hardware licenses instead of a subscription.
    hardware_id: Mapped[int | None] = mapped_column(ForeignKey("axis_hardware.id"))
    added_at: Mapped[datetime]
    removed_at: Mapped[datetime | None]


class Allocation(Base):
    """Units allocated to subscription years (R-AX-5). ``units`` devices are licensed from
    ``first_year`` for ``years`` years (the SKU's term). An upgrade (R-AX-13) writes a pair:
    ``upgrade`` (+units of the new type) and ``upgraded`` (-units of the old)."""

    __tablename__ = "axis_allocations"
    __table_args__ = (Index("ix_axis_allocations_product", "org_id", "product_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    license_type: Mapped[str] = mapped_column(String(32))
    sku_id: Mapped[int] = mapped_column(ForeignKey("skus.id"))
    kind: Mapped[str] = mapped_column(String(16), default="allocation")
    first_year: Mapped[int]
    years: Mapped[int]
    units: Mapped[int]
    # R-AX-7: the overlapping time given back, in license-days, and the whole units credited.
    compensation_days: Mapped[int] = mapped_column(default=0)
    compensation_units: Mapped[int] = mapped_column(default=0)
    allocated_at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320))


class CompensationRemainder(Base):
    """License-days of compensation not yet worth a whole unit, per SKU (R-AX-7); the wallet
    shows them beside its whole units."""

    __tablename__ = "axis_compensation_remainders"
    __table_args__ = (UniqueConstraint("org_id", "sku_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"))
    sku_id: Mapped[int] = mapped_column(ForeignKey("skus.id"))
    license_days: Mapped[int] = mapped_column(default=0)


class Hardware(Base):
    """A piece of hardware registered to one organization for its lifetime (R-AX-10). Its
    licenses (preloaded, plus expansions allocated to it) are the balance of its
    ``hardware_license`` accounts; they never move."""

    __tablename__ = "axis_hardware"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id"))
    serial: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    license_type: Mapped[str] = mapped_column(String(32))
    preloaded_units: Mapped[int] = mapped_column(default=0)
    registered_at: Mapped[datetime]
