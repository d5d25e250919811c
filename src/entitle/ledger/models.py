from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from entitle.catalog.models import Sku
from entitle.db import Base, BigId


class Account(Base):
    """A place where units of one SKU can be (R-CORE-5).

    kinds: ``issued`` (the issuer's source: its balance is minus everything minted),
    ``key_batch`` (units held by a batch's unredeemed keys, in 16 shards: ref "<batch>/<shard>"), ``wallet`` (an organization's
    redeemed units), ``cancelled``, ``expired``, and the licensing models' own kinds
    (allocations, licenses). A balance is never stored: it is the sum of the account's entries.
    """

    __tablename__ = "ledger_accounts"
    __table_args__ = (UniqueConstraint("org_id", "kind", "sku_id", "ref"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    sku_id: Mapped[int] = mapped_column(ForeignKey("skus.id"))
    ref: Mapped[str] = mapped_column(String(64), default="")
    created_at: Mapped[datetime]

    sku: Mapped[Sku] = relationship(lazy="joined")


class LedgerTransaction(Base):
    __tablename__ = "ledger_transactions"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    org_id: Mapped[int] = mapped_column(ForeignKey("organizations.id"), index=True)
    kind: Mapped[str] = mapped_column(String(32))
    memo: Mapped[str] = mapped_column(String(500), default="")
    actor: Mapped[str] = mapped_column(String(320))
    created_at: Mapped[datetime]

    entries: Mapped[list[Entry]] = relationship(back_populates="transaction", lazy="selectin")


class Entry(Base):
    """One side of a movement. Entries are only ever inserted; their amounts sum to zero per
    transaction. Like a bank statement, each entry carries the account's running balance after
    it, so a balance is read from the account's latest entry instead of summing its history;
    ``ledger.services.running_balance_mismatches`` checks the two agree."""

    __tablename__ = "ledger_entries"
    __table_args__ = (Index("ix_ledger_entries_account_latest", "account_id", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    transaction_id: Mapped[int] = mapped_column(ForeignKey("ledger_transactions.id"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"))
    amount: Mapped[int] = mapped_column(BigInteger)
    balance_after: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[datetime]

    transaction: Mapped[LedgerTransaction] = relationship(back_populates="entries")
    account: Mapped[Account] = relationship(lazy="joined")
