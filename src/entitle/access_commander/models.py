"""Access Commander installations, their devices, Attendance users and licenses (SPEC §2).

The rules themselves are in the device library (``entitle_device.access_commander``), one
implementation for the server and the installation; these tables only hold what the rules read.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, ForeignKey, Index, LargeBinary, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId

DEVICE_TYPES = ("ip_intercom", "access_unit", "answering_unit", "lift_module", "other")


class Installation(Base):
    """An Access Commander installation ("system") of one organization (R-CORE-1)."""

    __tablename__ = "ac_installations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    uid: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    # The installation reports device state with this token (SHA-256 of it; shown once).
    token_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    # Nothing heard from a device for longer than this counts as a disconnect.
    heartbeat_timeout_seconds: Mapped[int] = mapped_column(default=300)
    created_at: Mapped[datetime]


class Device(Base):
    """A device the installation manages. ``active`` is what the admin set; while the license is
    suspended every device is inactive whatever this says (derived, R-AC-6)."""

    __tablename__ = "ac_devices"
    __table_args__ = (UniqueConstraint("installation_id", "serial"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("ac_installations.id"))
    serial: Mapped[str] = mapped_column(String(64))
    type: Mapped[str] = mapped_column(String(32))
    name: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(default=False)
    activated_at: Mapped[datetime | None]
    # None: disconnected by report (or never seen); else connected since then, while heard from.
    connected_since: Mapped[datetime | None]
    last_seen: Mapped[datetime | None]
    created_at: Mapped[datetime]


class AttendanceUser(Base):
    """A user whose attendance the installation monitors (counted against the license, R-AC-8)."""

    __tablename__ = "ac_attendance_users"
    __table_args__ = (UniqueConstraint("installation_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("ac_installations.id"))
    name: Mapped[str] = mapped_column(String(200))
    monitored: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class SystemUser(Base):
    """A user of the installation's own software; administrators are limited by tiers (R-AC-1)."""

    __tablename__ = "ac_system_users"
    __table_args__ = (UniqueConstraint("installation_id", "name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("ac_installations.id"))
    name: Mapped[str] = mapped_column(String(200))
    admin: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime]


class AcLicense(Base):
    """A license generated for one installation and one license device (R-AC-3, R-AC-4).

    At most one is current per installation (``replaced_at`` is null); its packages' units sit in
    the ledger account ``ac_license`` with ``ref`` = this id until it is replaced, when they go
    back to the wallet. The license device's connection record (the device library's
    ``ConnectionRecord``) lives in the ``rec_*`` columns.
    """

    __tablename__ = "ac_licenses"
    __table_args__ = (
        Index("uq_ac_licenses_current", "installation_id", unique=True,
              postgresql_where=text("replaced_at IS NULL"), sqlite_where=text("replaced_at IS NULL")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    installation_id: Mapped[int] = mapped_column(ForeignKey("ac_installations.id"), index=True)
    license_device: Mapped[str] = mapped_column(String(64))
    # [{"part_number", "sku_id", "quantity"}] and the capacity they give (Capacity.as_dict()).
    packages: Mapped[list[Any]] = mapped_column(default=list)
    capacity: Mapped[dict[str, Any]]
    added_at: Mapped[datetime]
    added_by: Mapped[str] = mapped_column(String(320))
    replaced_at: Mapped[datetime | None]
    # R-AC-7: after the license is added (or recovered) its device must be activated first.
    license_device_activated_at: Mapped[datetime | None]
    kid: Mapped[str] = mapped_column(String(64))
    file_sha256: Mapped[str] = mapped_column(String(64), index=True)
    file: Mapped[str] = mapped_column(Text)
    # ConnectionRecord
    rec_accumulated_us: Mapped[int] = mapped_column(BigInteger, default=0)
    rec_connected_since: Mapped[datetime | None]
    rec_last_seen: Mapped[datetime | None]
    rec_suspended_at: Mapped[datetime | None]
