"""My2N sites, apartments and their devices (SPEC §4, R-MY-1 … R-MY-4). The rules are in
``entitle.my2n.rules``; these tables hold what they read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId


class Site(Base):
    """A company's (organization's) site with its business model: ``custom`` (retired) or
    ``apartment`` (R-MY-1)."""

    __tablename__ = "my2n_sites"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    region: Mapped[str] = mapped_column(String(8))
    model: Mapped[str] = mapped_column(String(16))
    # The end of a custom-model site's license (shown while it is custom).
    custom_expires_at: Mapped[datetime | None]
    model_changed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class Apartment(Base):
    __tablename__ = "my2n_apartments"
    __table_args__ = (UniqueConstraint("site_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"))
    name: Mapped[str] = mapped_column(String(200))
    # Licensed until then (end excluded); None: never paid (R-MY-5, R-MY-6).
    paid_through: Mapped[datetime | None]
    created_at: Mapped[datetime]


class SiteDevice(Base):
    """An intercom (never in an apartment) or an answering device (always in one, once the site
    has the apartment model): 2N answering unit (free), phone, tablet, third-party (paid)."""

    __tablename__ = "my2n_devices"
    __table_args__ = (UniqueConstraint("site_id", "serial"), Index("ix_my2n_devices_apartment", "apartment_id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"))
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("my2n_apartments.id"))
    serial: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    local_mode: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class VoucherBatch(Base):
    """What makes a key batch a distributor's voucher batch (R-MY-5): its codes are the batch's
    keys (part 9137958 or 02683-001; ``quantity_per_key`` = years), each worth ``years``
    apartment-years (scope ``apartment``) or device-years (scope ``device``), valid for 3 years
    from the purchase."""

    __tablename__ = "my2n_voucher_batches"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    key_batch_id: Mapped[int] = mapped_column(ForeignKey("key_batches.id"), unique=True)
    scope: Mapped[str] = mapped_column(String(16))
    purchased_at: Mapped[datetime]
