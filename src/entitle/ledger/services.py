"""Double-entry movements of license units (R-CORE-5).

Entries are only inserted, each transaction's amounts sum to zero, balances are sums of entries,
and accounts that hold real units (wallets, key batches, allocations) never go below zero.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, bindparam, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.clock import add_years
from entitle.catalog.models import Sku
from entitle.db import is_postgres
from entitle.errors import Conflict
from entitle.ledger.models import Account, Entry, LedgerTransaction
from entitle.text import plural

# The source of minted units: the only account allowed to be negative besides sinks' mirrors.
UNBOUNDED_KINDS = frozenset({"issued"})


# Statements the hot paths (a redeem, an allocation) run every time, built once: building and
# cache-keying a select() costs more than running it here (docs/benchmarks.md, "The API layer").
_ACCOUNT = select(Account).where(Account.org_id == bindparam("org_id"), Account.kind == bindparam("kind"),
                                 Account.sku_id == bindparam("sku_id"), Account.ref == bindparam("ref"))
_INSERT_ACCOUNT = {name: dialect.insert(Account).on_conflict_do_nothing(index_elements=["org_id", "kind", "sku_id", "ref"])
                   for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
_NEW_ACCOUNT = {name: statement.returning(Account) for name, statement in _INSERT_ACCOUNT.items()}
# The running balance of each account: its latest entry's (an account never used has none).
_BALANCES = select(Entry.account_id, Entry.balance_after).where(Entry.id.in_(
    select(func.max(Entry.id)).where(Entry.account_id.in_(bindparam("ids", expanding=True)))
    .group_by(Entry.account_id)))
_LOCK_ACCOUNTS = (select(Account.id).where(Account.id.in_(bindparam("ids", expanding=True)))
                  .order_by(Account.id).with_for_update())
_INSERT_ENTRIES = Entry.__table__.insert()
# Core, not a flushed ORM object: nothing reads the transaction back as one (its id is enough).
_TRANSACTIONS = LedgerTransaction.__table__
_INSERT_TRANSACTION = _TRANSACTIONS.insert().returning(_TRANSACTIONS.c.id)
# PostgreSQL: the transaction and its entries in one statement (a data-modifying CTE; the
# entries' columns as arrays, unnested side by side).
_POSTED = _TRANSACTIONS.insert().values(
    {c: bindparam(f"t_{c.name}", type_=c.type) for c in _TRANSACTIONS.c if c.name != "id"}
).returning(_TRANSACTIONS.c.id).cte("posted")
_INSERT_POSTED = Entry.__table__.insert().from_select(
    ["transaction_id", "account_id", "amount", "balance_after", "created_at"],
    select(_POSTED.c.id,
           func.unnest(bindparam("account_ids", type_=postgresql.ARRAY(BigInteger))),
           func.unnest(bindparam("amounts", type_=postgresql.ARRAY(BigInteger))),
           func.unnest(bindparam("balances_after", type_=postgresql.ARRAY(BigInteger))),
           bindparam("t_created_at", type_=_TRANSACTIONS.c.created_at.type)),
).returning(Entry.__table__.c.transaction_id)


def account(session: Session, *, org_id: int, kind: str, sku_id: int, ref: str = "",
            now: datetime) -> Account:
    """Get or create the account; safe when two transactions create it at once. One statement
    when it exists (nearly always); else an INSERT that does nothing if a concurrent transaction
    inserted it first (it waits for that one to commit), then the SELECT again."""
    which = {"org_id": org_id, "kind": kind, "sku_id": sku_id, "ref": ref}
    found = session.scalars(_ACCOUNT, which).one_or_none()
    if found is not None:
        return found
    session.execute(_INSERT_ACCOUNT[session.get_bind().dialect.name], {**which, "created_at": now})
    return session.scalars(_ACCOUNT, which).one()


# Units of these kinds keep in the wallet at most five years (R-AX-4): each receipt is its own
# ``wallet`` account, a *lot*, whose ref starts with LOT_PREFIX and whose created_at is the moment
# the units entered the wallet. Other kinds have one wallet account per SKU (ref "").
LOT_KINDS = frozenset({"subscription", "expansion", "upgrade"})
LOT_PREFIX = "lot/"


def new_account(session: Session, *, org_id: int, kind: str, sku_id: int, ref: str = "",
                now: datetime) -> Account | None:
    """Create the account in one statement; None if it exists already (``account`` finds it)."""
    which = {"org_id": org_id, "kind": kind, "sku_id": sku_id, "ref": ref, "created_at": now}
    return session.scalars(_NEW_ACCOUNT[session.get_bind().dialect.name], which).one_or_none()


def lot_ref(source: str) -> str:
    """The ref of the lot that receives units from ``source`` (e.g. "key/17")."""
    return f"{LOT_PREFIX}{source}"


def wallet_account(session: Session, *, org_id: int, sku: Sku, source: str, now: datetime) -> Account:
    """The wallet account that receives units of ``sku``: a new lot (``source`` names where the
    units came from, e.g. "key/17") for lot kinds, else the SKU's one wallet account."""
    ref = lot_ref(source) if sku.grant_kind in LOT_KINDS else ""
    return account(session, org_id=org_id, kind="wallet", sku_id=sku.id, ref=ref, now=now)


def latest_balance(account_id: Any) -> Any:
    """The running balance on the latest entry of the account ``account_id`` names (a value, or a
    column of a statement it is part of), as a scalar subquery; NULL for an account never used."""
    return (select(Entry.balance_after).where(Entry.account_id == account_id)
            .order_by(Entry.id.desc()).limit(1).scalar_subquery())


def balance(session: Session, account_id: int) -> int:
    """The running balance on the account's latest entry (0 for an account never used)."""
    return int(session.scalar(select(latest_balance(account_id))) or 0)


def balances(session: Session, account_ids: Sequence[int]) -> dict[int, int]:
    """``balance`` of each account, in one statement."""
    found = {account_id: 0 for account_id in account_ids}
    for account_id, units in session.execute(_BALANCES, {"ids": list(account_ids)}):
        found[account_id] = int(units)
    return found


class UnbalancedTransaction(ValueError):
    pass


def post(session: Session, *, org_id: int, kind: str, actor: Actor, now: datetime,
         moves: Sequence[tuple[Account, int]], memo: str = "", known: dict[int, int] | None = None) -> int:
    """Write one balanced transaction; its id. Refuses, with nothing written, if a bounded
    account would go negative. ``known``: SQLite only, the accounts' running balances as the
    caller read them after this transaction's first write (it holds the write lock, so they are
    still true); PostgreSQL locks the accounts and reads them again whatever the caller knows."""
    if sum(amount for _, amount in moves) != 0:
        raise UnbalancedTransaction(f"entries of {kind} do not sum to zero: {moves}")
    moves = [(a, amount) for a, amount in moves if amount != 0]
    touched = sorted({a.id for a, _ in moves})
    postgres = is_postgres(session)
    if postgres:
        # Running balances need the accounts to themselves until commit; lock in id order so
        # that two movers never deadlock. (SQLite has one writer already.) The balances are read
        # after the lock, by a statement of their own: it sees what the last holder committed.
        session.execute(_LOCK_ACCOUNTS, {"ids": touched})
    if known is not None and not postgres and set(touched) <= known.keys():
        running = {account_id: known[account_id] for account_id in touched}
    else:
        running = balances(session, touched)
    entries = []
    for acct, amount in moves:
        available = running[acct.id]
        if amount < 0 and acct.kind not in UNBOUNDED_KINDS and available + amount < 0:
            raise Conflict(
                "insufficient_units",
                f"The {acct.kind.replace('_', ' ')} holds {plural(available, 'unit')} of "
                f"{acct.sku.part_number}; {-amount} needed, {-amount - available} missing.",
                available=available, needed=-amount, missing=-amount - available,
                part_number=acct.sku.part_number,
            )
        running[acct.id] = available + amount
        entries.append({"account_id": acct.id, "amount": amount, "balance_after": running[acct.id],
                        "created_at": now})
    if postgres and entries:
        return int(session.execute(_INSERT_POSTED, {
            "t_org_id": org_id, "t_kind": kind, "t_memo": memo, "t_actor": actor.label, "t_created_at": now,
            "account_ids": [e["account_id"] for e in entries], "amounts": [e["amount"] for e in entries],
            "balances_after": [e["balance_after"] for e in entries]}).scalars().first())
    txn_id = int(session.execute(_INSERT_TRANSACTION, {"org_id": org_id, "kind": kind, "memo": memo,
                                                       "actor": actor.label, "created_at": now}).scalar_one())
    # One statement for every entry (executemany); nothing reads them back in this transaction
    # through the ORM but queries, which see them.
    session.execute(_INSERT_ENTRIES, [{**entry, "transaction_id": txn_id} for entry in entries])
    return txn_id


def transfer(session: Session, *, source: Account, target: Account, amount: int, org_id: int,
             kind: str, actor: Actor, now: datetime, memo: str = "", known: dict[int, int] | None = None) -> int:
    if amount <= 0:
        raise ValueError("a transfer moves a positive amount")
    return post(session, org_id=org_id, kind=kind, actor=actor, now=now, memo=memo, known=known,
                moves=[(source, -amount), (target, amount)])


def _latest_entry_ids() -> Any:
    return select(func.max(Entry.id).label("id")).group_by(Entry.account_id).subquery()


@dataclass(frozen=True)
class WalletLine:
    sku_id: int
    part_number: str
    name: str
    product: str
    grant_kind: str
    units: int
    changes_at: datetime | None = None  # read with ``now``: when a lot of this line's units next expires


def lot_expires_at(received_at: datetime) -> datetime:
    """A lot's units leave the wallet five years after they entered it (R-AX-4)."""
    # AXIS's rule, imported here so that the other models' commands do not load the AXIS package.
    from entitle.axis.rules import STORAGE_YEARS

    return add_years(received_at, STORAGE_YEARS)


def wallet(session: Session, org_id: int, *, now: datetime | None = None) -> list[WalletLine]:
    """The organization's unallocated units, one line per SKU, derived from entries. With
    ``now``, lots past their five years are left out even before their expiry is recorded
    (R-CORE-7: right whenever read)."""
    rows = session.execute(_wallet_lines(), {"org_id": org_id}).all()
    lines: dict[int, WalletLine] = {}
    for sku_id, part, name, product, kind, ref, created_at, units in rows:
        line = lines.get(sku_id) or WalletLine(sku_id, part, name, product, kind, 0)
        changes_at = line.changes_at
        if now is not None and ref.startswith(LOT_PREFIX) and units:
            expires = lot_expires_at(created_at)
            if expires <= now:
                units = 0
            elif changes_at is None or expires < changes_at:
                changes_at = expires
        lines[sku_id] = WalletLine(sku_id, part, name, product, kind, line.units + int(units), changes_at)
    return list(lines.values())


def wallet_changes_at(lines: Sequence[WalletLine]) -> datetime | None:
    """The next moment the wallet (read with ``now``) changes by itself (a lot's five years end:
    R-AX-4), None if no lot does."""
    return min((line.changes_at for line in lines if line.changes_at is not None), default=None)


_WALLET_LINES: list[Any] = []


def _wallet_lines() -> Any:
    """The wallet's accounts with their SKU and balance, built on first use (the catalog's
    Product is imported then: the other licensing models' commands do not load it)."""
    if not _WALLET_LINES:
        from entitle.catalog.models import Product

        latest = (select(Entry.account_id, func.max(Entry.id).label("entry_id"))
                  .join(Account, Account.id == Entry.account_id)
                  .where(Account.org_id == bindparam("org_id"), Account.kind == "wallet")
                  .group_by(Entry.account_id).subquery())
        _WALLET_LINES.append(
            select(Sku.id, Sku.part_number, Sku.name, Product.name, Sku.grant_kind, Account.ref, Account.created_at,
                   Entry.balance_after)
            .select_from(Account)
            .join(Sku, Sku.id == Account.sku_id)
            .join(Product, Product.id == Sku.product_id)
            .join(latest, latest.c.account_id == Account.id)
            .join(Entry, Entry.id == latest.c.entry_id)
            .where(Account.org_id == bindparam("org_id"), Account.kind == "wallet")
            .order_by(Sku.part_number))
    return _WALLET_LINES[0]


def wallet_units(session: Session, org_id: int, sku_id: int, *, now: datetime | None = None) -> int:
    """Units of one SKU in the wallet, over all its accounts (lots). With ``now``, only the live
    ones: a lot past its five years holds none, even before its expiry is recorded (R-AX-4,
    R-CORE-7), so a figure shown beside a change (a redeem's wallet before and after) is the
    wallet as it really is."""
    which = {"org_id": org_id, "sku_id": sku_id}
    if now is None:
        return int(session.scalar(_WALLET_UNITS, which) or 0)
    return live_units(session.execute(_WALLET_LOTS, which).all(), now=now)


def live_units(accounts: Sequence[tuple[str, datetime, int]], *, now: datetime) -> int:
    """The units of wallet accounts (ref, received at, units) that are still live at ``now``: a
    lot past its five years holds none (R-AX-4)."""
    return sum(int(units) for ref, created_at, units in accounts
               if not (ref.startswith(LOT_PREFIX) and lot_expires_at(created_at) <= now))


_LATEST_WALLET_ENTRIES = (select(func.max(Entry.id).label("entry_id"))
                          .join(Account, Account.id == Entry.account_id)
                          .where(Account.org_id == bindparam("org_id"), Account.kind == "wallet",
                                 Account.sku_id == bindparam("sku_id"))
                          .group_by(Entry.account_id).subquery())
_WALLET_UNITS = (select(func.coalesce(func.sum(Entry.balance_after), 0))
                 .where(Entry.id.in_(select(_LATEST_WALLET_ENTRIES.c.entry_id))))
_WALLET_LOTS = (select(Account.ref, Account.created_at, Entry.balance_after)
                .join(Entry, Entry.account_id == Account.id)
                .where(Entry.id.in_(select(_LATEST_WALLET_ENTRIES.c.entry_id)), Entry.balance_after != 0))


def unbalanced_transactions(session: Session) -> list[int]:
    """Ids of transactions whose entries do not sum to zero (should always be empty)."""
    return list(session.scalars(
        select(Entry.transaction_id).group_by(Entry.transaction_id).having(func.sum(Entry.amount) != 0)
    ))


def running_balance_mismatches(session: Session) -> list[int]:
    """Ids of accounts whose latest running balance differs from the sum of their entries
    (should always be empty: the running balance is a convenience, the entries are the truth)."""
    latest = _latest_entry_ids()
    sums = (select(Entry.account_id, func.sum(Entry.amount).label("total"))
            .group_by(Entry.account_id).subquery())
    return list(session.scalars(
        select(Entry.account_id).join(latest, latest.c.id == Entry.id)
        .join(sums, sums.c.account_id == Entry.account_id)
        .where(sums.c.total != Entry.balance_after)
    ))


def negative_accounts(session: Session) -> list[int]:
    """Ids of bounded accounts below zero (should always be empty)."""
    return list(session.scalars(
        select(Account.id).join(Entry, Entry.account_id == Account.id)
        .where(Account.kind.not_in(UNBOUNDED_KINDS))
        .group_by(Account.id).having(func.sum(Entry.amount) < 0)
    ))
