from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId


class System(Base):
    """A software installation registered to exactly one organization; registration never
    moves (R-AX-1). ``uid`` is the installation's own identity (from its system file)."""

    __tablename__ = "systems"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    uid: Mapped[str] = mapped_column(String(128), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    product: Mapped[str] = mapped_column(String(64))
    # An offline system proves its files with its own Ed25519 key (raw 32 bytes).
    public_key: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    offline: Mapped[bool] = mapped_column(default=False)
    # The current need the system last reported: license type -> devices.
    need: Mapped[dict[str, Any]]
    devices: Mapped[list[str]]
    registered_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SystemFileReceipt(Base):
    """Each accepted system file's nonce: a file uploaded twice is a replay."""

    __tablename__ = "system_file_receipts"
    __table_args__ = (UniqueConstraint("system_id", "nonce"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    system_id: Mapped[int] = mapped_column(ForeignKey("systems.id"), index=True)
    nonce: Mapped[str] = mapped_column(String(128))
    file_created_at: Mapped[datetime]
    received_at: Mapped[datetime]
    license_kid: Mapped[str] = mapped_column(String(64))
