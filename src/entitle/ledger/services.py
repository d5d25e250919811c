"""Double-entry movements of license units (R-CORE-5).

Entries are only inserted, each transaction's amounts sum to zero, balances are sums of entries,
and accounts that hold real units (wallets, key batches, allocations) never go below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.catalog.models import Sku
from entitle.db import is_postgres
from entitle.errors import Conflict
from entitle.ledger.models import Account, Entry, LedgerTransaction

# The source of minted units: the only account allowed to be negative besides sinks' mirrors.
UNBOUNDED_KINDS = frozenset({"issued"})


def account(session: Session, *, org_id: int, kind: str, sku_id: int, ref: str = "",
            now: datetime) -> Account:
    """Get or create the account; safe when two transactions create it at once."""
    values = dict(org_id=org_id, kind=kind, sku_id=sku_id, ref=ref, created_at=now)
    insert = (postgresql.insert if is_postgres(session) else sqlite.insert)(Account).values(**values)
    session.execute(insert.on_conflict_do_nothing(index_elements=["org_id", "kind", "sku_id", "ref"]))
    return session.scalars(
        select(Account).where(Account.org_id == org_id, Account.kind == kind,
                              Account.sku_id == sku_id, Account.ref == ref)
    ).one()


def balance(session: Session, account_id: int) -> int:
    return int(session.scalar(select(func.coalesce(func.sum(Entry.amount), 0))
                              .where(Entry.account_id == account_id)) or 0)


class UnbalancedTransaction(ValueError):
    pass


def post(session: Session, *, org_id: int, kind: str, actor: Actor, now: datetime,
         moves: Sequence[tuple[Account, int]], memo: str = "") -> LedgerTransaction:
    """Write one balanced transaction. Refuses, with nothing written, if a bounded account
    would go negative."""
    if sum(amount for _, amount in moves) != 0:
        raise UnbalancedTransaction(f"entries of {kind} do not sum to zero: {moves}")
    debited = sorted({a.id for a, amount in moves if amount < 0 and a.kind not in UNBOUNDED_KINDS})
    if debited and is_postgres(session):
        # Lock in id order so that two movers never deadlock.
        session.execute(select(Account.id).where(Account.id.in_(debited))
                        .order_by(Account.id).with_for_update())
    for acct, amount in moves:
        if amount < 0 and acct.kind not in UNBOUNDED_KINDS:
            available = balance(session, acct.id)
            if available + amount < 0:
                raise Conflict(
                    "insufficient_units",
                    f"The {acct.kind.replace('_', ' ')} holds {available} unit(s) of "
                    f"{acct.sku.part_number}; {-amount} are needed, {-amount - available} missing.",
                    available=available, needed=-amount, missing=-amount - available,
                    part_number=acct.sku.part_number,
                )
    txn = LedgerTransaction(org_id=org_id, kind=kind, memo=memo, actor=actor.label, created_at=now)
    session.add(txn)
    session.flush()
    session.add_all(Entry(transaction_id=txn.id, account_id=a.id, amount=amount, created_at=now)
                    for a, amount in moves if amount != 0)
    session.flush()
    return txn


def transfer(session: Session, *, source: Account, target: Account, amount: int, org_id: int,
             kind: str, actor: Actor, now: datetime, memo: str = "") -> LedgerTransaction:
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return post(session, org_id=org_id, kind=kind, actor=actor, now=now, memo=memo,
                moves=[(source, -amount), (target, amount)])


@dataclass(frozen=True)
class WalletLine:
    sku_id: int
    part_number: str
    name: str
    product: str
    grant_kind: str
    units: int


def wallet(session: Session, org_id: int) -> list[WalletLine]:
    """The organization's unallocated units, one line per SKU, derived from entries."""
    from entitle.catalog.models import Product

    rows = session.execute(
        select(Sku.id, Sku.part_number, Sku.name, Product.name, Sku.grant_kind,
               func.coalesce(func.sum(Entry.amount), 0))
        .select_from(Account)
        .join(Sku, Sku.id == Account.sku_id)
        .join(Product, Product.id == Sku.product_id)
        .outerjoin(Entry, Entry.account_id == Account.id)
        .where(Account.org_id == org_id, Account.kind == "wallet")
        .group_by(Sku.id, Sku.part_number, Sku.name, Product.name, Sku.grant_kind)
        .order_by(Sku.part_number)
    ).all()
    return [WalletLine(r[0], r[1], r[2], r[3], r[4], int(r[5])) for r in rows]


def wallet_units(session: Session, org_id: int, sku_id: int) -> int:
    return int(session.scalar(
        select(func.coalesce(func.sum(Entry.amount), 0))
        .join(Account, Account.id == Entry.account_id)
        .where(Account.org_id == org_id, Account.kind == "wallet", Account.sku_id == sku_id)
    ) or 0)


def unbalanced_transactions(session: Session) -> list[int]:
    """Ids of transactions whose entries do not sum to zero (should always be empty)."""
    return list(session.scalars(
        select(Entry.transaction_id).group_by(Entry.transaction_id).having(func.sum(Entry.amount) != 0)
    ))


def negative_accounts(session: Session) -> list[int]:
    """Ids of bounded accounts below zero (should always be empty)."""
    return list(session.scalars(
        select(Account.id).join(Entry, Entry.account_id == Account.id)
        .where(Account.kind.not_in(UNBOUNDED_KINDS))
        .group_by(Account.id).having(func.sum(Entry.amount) < 0)
    ))
