"""My2N sites, apartments and their devices (SPEC §4, R-MY-1 … R-MY-4). The rules are in
``entitle.my2n.rules``; these tables hold what they read."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint, true
from sqlalchemy.orm import Mapped, mapped_column, relationship

from entitle.db import Base, BigId
from entitle.keys.models import KeyBatch


class Site(Base):
    """A company's (organization's) site with its business model: ``custom`` (retired) or
    ``apartment`` (R-MY-1)."""

    __tablename__ = "my2n_sites"
    __table_args__ = (UniqueConstraint("org_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    name: Mapped[str] = mapped_column(String(200))
    # The site's own sales region (issue 14 point 8): chosen at creation, the organization's by
    # default. It decides the voucher part its pool accepts and the part to order (02683-001 for
    # US & APAC, else 9137958), and the price and currency of its card payments.
    region: Mapped[str] = mapped_column(String(8))
    model: Mapped[str] = mapped_column(String(16))
    # The end of a custom-model site's license (shown while it is custom).
    custom_expires_at: Mapped[datetime | None]
    model_changed_at: Mapped[datetime | None]
    # Chosen by the site's admin once the site has the apartment model (R-MY-4); None until then.
    site_type: Mapped[str | None] = mapped_column(String(32))
    # On the day an apartment would lapse, pay its next year from the site credit pool (0012).
    auto_credit: Mapped[bool] = mapped_column(default=True, server_default=true())
    created_at: Mapped[datetime]


class Apartment(Base):
    __tablename__ = "my2n_apartments"
    # (site_id, id): the site's apartments in id order for the dashboard (migration 0008).
    __table_args__ = (UniqueConstraint("site_id", "name"), Index("ix_my2n_apartments_site", "site_id", "id"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"))
    name: Mapped[str] = mapped_column(String(200))
    # Licensed until then (end excluded); None: never paid (R-MY-5, R-MY-6).
    paid_through: Mapped[datetime | None]
    # The billable devices that paid time covers when it was paid with device-years (per-device
    # vouchers, 0013); None: paid per apartment (apartment-year, card), every device.
    devices_paid_for: Mapped[int | None]
    created_at: Mapped[datetime]


class SiteDevice(Base):
    """An intercom (never in an apartment) or an answering device (always in one, once the site
    has the apartment model): 2N answering unit (free), phone, tablet, third-party (paid)."""

    __tablename__ = "my2n_devices"
    # One device, one site (issue 14 point 9, migration 0014): a serial is unique within the
    # organization's sites; (site_id, serial) stays for the site's own lookups.
    __table_args__ = (UniqueConstraint("site_id", "serial"), UniqueConstraint("org_id", "serial"),
                      Index("ix_my2n_devices_apartment", "apartment_id"),
                      # The dashboard's per-apartment count, answered from the index (migration 0008).
                      Index("ix_my2n_devices_dashboard", "site_id", "apartment_id", "kind", "local_mode"))

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"))
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("my2n_apartments.id"))
    serial: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    local_mode: Mapped[bool] = mapped_column(default=False)
    # When it last started counting towards its apartment's license (moved in, local mode turned
    # off; 0013); None: since ``created_at``. Of an apartment paid for fewer devices, the latest stop.
    billable_since: Mapped[datetime | None]
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

    key_batch: Mapped[KeyBatch] = relationship(lazy="joined")


class SiteRole(Base):
    """A user's role on one site (My2N's site admin and apartment admin). Company admins are the
    organization's owners and admins and need no row here. ``payments``: a site admin who may pay
    and see prices (R-MY-5)."""

    __tablename__ = "my2n_site_roles"
    __table_args__ = (UniqueConstraint("site_id", "user_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))  # site_admin | apartment_admin
    apartment_id: Mapped[int | None] = mapped_column(ForeignKey("my2n_apartments.id"))
    payments: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class PaymentPlan(Base):
    """A site's card payment set-up at the payment provider: its customer, the card, and the
    automatic recurring payment (one annual subscription, ``apartments`` apartment-years a year).
    ``version`` moves on each time recurring payment is turned off, so that the next start uses
    a new idempotency key while a retried start reuses the same one."""

    __tablename__ = "my2n_payment_plans"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"), unique=True)
    customer_id: Mapped[str | None] = mapped_column(String(255))
    card: Mapped[str | None] = mapped_column(String(255))  # the provider's payment-method id
    card_label: Mapped[str | None] = mapped_column(String(64))
    recurring: Mapped[bool] = mapped_column(default=False)
    subscription_id: Mapped[str | None] = mapped_column(String(255), index=True)
    apartments: Mapped[int] = mapped_column(default=0)
    version: Mapped[int] = mapped_column(default=1)
    activated_at: Mapped[datetime | None]
    deactivated_at: Mapped[datetime | None]
    # The end of the site's billing year (its anniversary; 0012): recurring payment covers every
    # apartment needing a license until then and renews then. Kept when recurring payment is
    # turned off, so turning it on again before then continues the same billing year.
    period_end: Mapped[datetime | None]
    # When a charge was first declined, until one is paid: apartments not paid yet keep working
    # for the retry window from then (the renewal's window runs from ``period_end``).
    charge_failed_at: Mapped[datetime | None]
    created_at: Mapped[datetime]


class CardPayment(Base):
    """One card payment received (the first year of a subscription, each renewal): the provider's
    invoice or payment id is unique, so the same payment reported twice (the answer to our call
    and its webhook, or a webhook delivered twice) pays once."""

    __tablename__ = "my2n_card_payments"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    site_id: Mapped[int] = mapped_column(ForeignKey("my2n_sites.id"), index=True)
    payment_id: Mapped[str] = mapped_column(String(255), unique=True)
    subscription_id: Mapped[str | None] = mapped_column(String(255))
    apartments: Mapped[list[int]] = mapped_column(JSON)  # the apartments paid a year
    amount_minor: Mapped[int | None]
    currency: Mapped[str | None] = mapped_column(String(8))
    paid_at: Mapped[datetime]
    # What it paid (0012): "activation", "added" (apartments joining mid-year), "renewal", or
    # "provider" (an invoice we learnt of from a webhook only); and the end of the billing year
    # it paid the apartments through.
    purpose: Mapped[str | None] = mapped_column(String(16))
    period_end: Mapped[datetime | None]


class WebhookEvent(Base):
    """Each provider webhook event handled, by its id: a delivery of an event already here is
    answered and ignored."""

    __tablename__ = "my2n_webhook_events"

    event_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    provider_type: Mapped[str] = mapped_column(String(64))
    outcome: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[int | None] = mapped_column(ForeignKey("my2n_sites.id"))
    received_at: Mapped[datetime]
