from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId


class HistoryEntry(Base):
    """One change in an organization's history (R-CORE-6), chained by hash to the one before;
    ``mac`` is the link's key check (history/chain.py)."""

    __tablename__ = "history_entries"
    __table_args__ = (UniqueConstraint("org_id", "seq"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    seq: Mapped[int]
    at: Mapped[datetime]
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(64))
    object_id: Mapped[str] = mapped_column(String(64))
    before: Mapped[dict[str, Any] | None]
    after: Mapped[dict[str, Any] | None]
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    # Null only for an entry that was not intact when migration 0015 keyed the existing chains.
    mac: Mapped[str | None] = mapped_column(String(64))


class HistoryHead(Base):
    """An organization's last seq and hash, with a key check, rewritten by every append: entries
    removed from the end leave a head that names entries that are gone."""

    __tablename__ = "history_heads"

    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), primary_key=True, autoincrement=False)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))
    mac: Mapped[str] = mapped_column(String(64))


class HistoryCheckpoint(Base):
    """The head of an organization's chain at a moment, signed with the issuer's Ed25519 key
    (``chain.checkpoint_message``): what an auditor verifies an export against."""

    __tablename__ = "history_checkpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    seq: Mapped[int]
    hash: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime]
    kid: Mapped[str] = mapped_column(String(64))
    signature: Mapped[str] = mapped_column(String(128))
