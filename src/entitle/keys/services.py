"""Minting and redeeming license keys (R-CORE-4)."""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import IO, Any

from sqlalchemy import String, and_, bindparam, cast, exists, insert, or_, select, update
from sqlalchemy.orm import Session, aliased, lazyload

from entitle.actors import Actor
from entitle.catalog import services as catalog
from entitle.errors import Conflict, EntitleError, Forbidden, NotFound
from entitle.history import services as history
from entitle.keys import codes
from entitle.catalog.models import Sku
from entitle.keys.models import KeyBatch, LicenseKey
from entitle.delivery.models import WebhookEndpoint
from entitle.ledger.models import Account
from entitle.ledger import services as ledger
from entitle.platform import events
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Organization
from entitle.text import single_line

MAX_KEYS_PER_BATCH = 10_000_000
CHUNK = 5_000
# A batch's unredeemed units sit in 16 ledger accounts (``key_batch``, ref "<batch>/<shard>"),
# a key's shard being the first hex digit of its hash: redeems of one batch then take one of 16
# account locks instead of all queueing on one (docs/benchmarks.md, "What the figures say").
BATCH_SHARDS = 16


def shard_of(key_hash: str) -> int:
    return int(key_hash[0], 16) % BATCH_SHARDS


def batch_account(session: Session, batch: KeyBatch, key_hash: str, now: datetime) -> Any:
    """The ledger account that holds this key's units until it is redeemed or cancelled."""
    return ledger.account(session, org_id=batch.org_id, kind="key_batch", sku_id=batch.sku_id,
                          ref=f"{batch.id}/{shard_of(key_hash)}", now=now)


@dataclass(frozen=True)
class MintedBatch:
    batch: KeyBatch
    codes: list[str]  # only filled when the caller asked to keep them


def mint(session: Session, *, sku_part: str, quantity_per_key: int, count: int, actor: Actor,
         now: datetime, name: str = "", sink: Callable[[list[str]], None] | None = None,
         on_progress: Callable[[int], None] | None = None, keep_codes: bool = False,
         voucher_batch: bool = False) -> MintedBatch:
    """Mint ``count`` keys in the caller's transaction, ``CHUNK`` at a time (bounded memory).

    Each chunk of plain codes goes to ``sink`` (a CSV writer, say) and is then forgotten; the
    database keeps only hashes. The batch's units move from the issuer's ``issued`` account to
    the batch's account in one ledger transaction. A voucher part (``VOUCHER_KINDS``) is minted
    only as a voucher batch (``voucher_batch``, by ``my2n.services.mint_vouchers``), which gives
    its codes their scope and validity.
    """
    actor.require_issuer()
    if quantity_per_key < 1:
        raise EntitleError("quantity_invalid", "Each key must grant at least 1 unit.",
                           quantity_per_key=quantity_per_key)
    if not 1 <= count <= MAX_KEYS_PER_BATCH:
        raise EntitleError("count_invalid", f"Mint between 1 and {MAX_KEYS_PER_BATCH:,} keys at once.",
                           count=count)
    single_line(name, "key batch name", max_length=200)
    sku = sku_to_mint(session, sku_part, voucher_batch=voucher_batch)
    issuer = tenancy.issuer_organization(session, now=now)
    batch = KeyBatch(org_id=issuer.id, sku_id=sku.id, name=name, quantity_per_key=quantity_per_key,
                     count=count, minted_by=actor.label, created_at=now)
    session.add(batch)
    session.flush()
    kept: list[str] = []
    per_shard = [0] * BATCH_SHARDS
    done = 0
    while done < count:
        n = min(CHUNK, count - done)
        chunk = [codes.generate() for _ in range(n)]
        hashes = [codes.digest(c.replace("-", "")) for c in chunk]
        for h in hashes:
            per_shard[shard_of(h)] += 1
        session.execute(insert(LicenseKey), [
            {"batch_id": batch.id, "key_hash": h, "state": "active"} for h in hashes
        ])
        if sink is not None:
            sink(chunk)
        if keep_codes:
            kept.extend(chunk)
        done += n
        if on_progress is not None:
            on_progress(n)
    units = quantity_per_key * count
    issued = ledger.account(session, org_id=issuer.id, kind="issued", sku_id=sku.id, now=now)
    ledger.post(session, org_id=issuer.id, kind="mint", actor=actor, now=now, memo=f"batch {batch.id}", moves=[
        (issued, -units),
        *((ledger.account(session, org_id=issuer.id, kind="key_batch", sku_id=sku.id, ref=f"{batch.id}/{shard}",
                          now=now), quantity_per_key * n) for shard, n in enumerate(per_shard) if n),
    ])
    batch.completed_at = now
    history.record(session, org_id=issuer.id, actor=actor, now=now, action="keys.minted",
                   object_type="key_batch", object_id=batch.id,
                   after={"part_number": sku.part_number, "count": count,
                          "quantity_per_key": quantity_per_key, "units": units})
    return MintedBatch(batch, kept)


def sku_to_mint(session: Session, sku_part: str, *, voucher_batch: bool = False) -> Sku:
    """The SKU keys of ``sku_part`` are minted for; a My2N voucher part only for a voucher batch
    (refused before anything is written, or a progress bar shown)."""
    sku = catalog.sku_by_part(session, sku_part)
    if sku.grant_kind in VOUCHER_KINDS and not voucher_batch:
        raise Conflict("sku_voucher_batch_only",
                       f"Part {sku.part_number} is a My2N voucher: mint it as a voucher batch (`entitle voucher "
                       "mint`, or Voucher batches on the issuer's My2N support page), which gives its codes their "
                       "scope (per apartment or per device) and their 3 years of validity.",
                       part_number=sku.part_number)
    return sku


def csv_sink(out: IO[str], batch_part: str, quantity: int) -> Callable[[list[str]], None]:
    writer = csv.writer(out)
    writer.writerow(["key", "part_number", "quantity"])

    def write(chunk: list[str]) -> None:
        writer.writerows([c, batch_part, quantity] for c in chunk)

    return write


def batch_to_dict(b: KeyBatch) -> dict[str, Any]:
    return {"id": b.id, "part_number": b.sku.part_number, "name": b.name,
            "quantity_per_key": b.quantity_per_key, "count": b.count, "minted_by": b.minted_by,
            "created_at": b.created_at.isoformat()}


def batches(session: Session, *, limit: int, before_id: int | None = None) -> list[KeyBatch]:
    stmt = select(KeyBatch)
    if before_id is not None:
        stmt = stmt.where(KeyBatch.id < before_id)
    return list(session.scalars(stmt.order_by(KeyBatch.id.desc()).limit(limit)))


def _find(session: Session, typed: str) -> LicenseKey:
    key = session.scalars(_KEY_BY_HASH, {"key_hash": _digest(typed)}).one_or_none()
    if key is None:
        raise _unknown()
    return key


def _digest(typed: str) -> str:
    try:
        return codes.digest(codes.normalize(typed))
    except codes.CodeError as exc:
        raise EntitleError(exc.code, exc.message) from None


def _unknown() -> EntitleError:
    return EntitleError("key_unknown", "No license key matches what you typed. Check that it is "
                        "the key you received; a key that was never issued cannot be redeemed.", status=404)


@dataclass
class _Read:
    """What a redeem reads in its first statement: the organization and the key, and when the
    statement was the whole read (``whole``, ``_REDEEM_READ``) what the wallet, the history and
    the ledger need next."""

    org: Organization
    key: LicenseKey
    whole: bool = False
    head: history.Head | None = None  # None: the organization has none yet (or not read)
    wallet: list[tuple[Account, int]] = field(default_factory=list)  # the SKU's wallet accounts that count, with units
    batch: tuple[Account, int] | None = None  # the key's batch account (its shard), with units
    webhooks: bool = True  # the organization has an active webhook endpoint (True: not read)

    def units(self) -> dict[int, int]:
        return {a.id: units for a, units in [*self.wallet, *([self.batch] if self.batch else [])]}


def _organization_and_key(session: Session, org_id: int, typed: str) -> _Read:
    """The organization and the key, in one statement, with what the redeem needs next: the
    history head, the wallet's accounts of the key's SKU and the batch account with their units,
    whether the organization has webhooks. On PostgreSQL the statement also takes the
    organization's lock unless this transaction holds it (``idempotency.run(lock=True)``), and
    then only the organization and the key are read with it: what else a statement reads while
    it waits for a lock is what was committed before it waited. The refusals keep their order: an
    unknown organization, then a mistyped key, then an unknown one."""
    try:
        digest, mistyped = _digest(typed), None
    except EntitleError as exc:
        digest, mistyped = "", exc  # no key table read for it: the organization is still looked up first
    lock = history.needs_lock(session, org_id)
    if mistyped is not None or lock:
        statements = _ORGANIZATION if mistyped else _ORG_AND_KEY
        row = session.execute(statements[lock], {"org_id": org_id, "key_hash": digest}).first()
        rows = [] if row is None else [row]
    else:
        rows = session.execute(_REDEEM_READ, {"org_id": org_id, "key_hash": digest,
                                              "shard": f"/{shard_of(digest)}"}).all()
    if not rows:
        raise NotFound("organization", org_id=org_id)
    if lock:
        history.locked(session, org_id)
    if mistyped is not None:
        raise mistyped
    first = rows[0]
    if first.LicenseKey is None:
        raise _unknown()
    if lock:
        return _Read(first.Organization, first.LicenseKey)
    return _Read(first.Organization, first.LicenseKey, whole=True, head=history.head_of(first),
                 wallet=[(r.wallet_account, int(r.wallet_units or 0)) for r in rows if r.wallet_account is not None],
                 batch=None if first.batch_account is None else (first.batch_account, int(first.batch_units or 0)),
                 webhooks=bool(first.webhooks))


def _refuse_state(key: LicenseKey, org: Organization) -> None:
    if key.state == "cancelled":
        raise Conflict("key_cancelled", "This key was cancelled by the issuer and cannot be redeemed; "
                       "contact your distributor.")
    if key.state == "used":
        same = key.redeemed_org_id == org.id
        raise Conflict(
            "key_already_redeemed",
            "This key was already redeemed" + (" into this organization's wallet" if same else "")
            + "; each key can be redeemed once.",
            redeemed_at=key.redeemed_at.isoformat() if (same and key.redeemed_at) else None,
        )


# A key of these kinds goes somewhere other than the wallet: a preloaded key activates the
# hardware it came with (``axis.services.register_hardware``).
NOT_FOR_WALLET = frozenset({"preloaded"})
# A My2N voucher code (9137958, 02683-001) is activated into a site's credit pool, the only place
# that spends it: minted only as a voucher batch, refused by the wallet whatever its state.
VOUCHER_KINDS = frozenset({"apartment_year"})


def refuse_voucher_in_wallet(sku: Sku) -> None:
    if sku.grant_kind in VOUCHER_KINDS:
        raise Conflict("key_is_voucher",
                       f"This is a My2N voucher code (part {sku.part_number}): the wallet cannot spend it. Activate "
                       "it on the Vouchers tab of the site it pays for (Sites (My2N), the site, Vouchers; or "
                       "`entitle voucher redeem`), where it adds to that site's credit pool.",
                       part_number=sku.part_number)

Into = Callable[[Session, Organization, Sku, LicenseKey, datetime], Account]

# Built once (a redeem runs them every time): see ledger.services.
_KEY_BY_HASH = select(LicenseKey).where(LicenseKey.key_hash == bindparam("key_hash"))
# The organization and the key (the organization alone for a key mistyped), by "locking?".
_ORG_AND_KEY = {False: select(Organization, LicenseKey).where(Organization.id == bindparam("org_id"))
                .outerjoin(LicenseKey, LicenseKey.key_hash == bindparam("key_hash"))}
_ORG_AND_KEY[True] = _ORG_AND_KEY[False].with_for_update(**history.LOCK_OF)
_ORGANIZATION = {False: select(Organization).where(Organization.id == bindparam("org_id"))}
_ORGANIZATION[True] = _ORGANIZATION[False].with_for_update(**history.LOCK_OF)
# The redeem's first read, when this transaction already holds the organization's lock (or on
# SQLite, the write lock): the organization and the key, and one row per wallet account of the
# key's SKU that holds units (or is the SKU's one account, ref ""), with the history head, the
# batch account and whether there are webhooks. Units: each account's latest running balance.
_WALLET_ACCOUNT = aliased(Account, name="wallet_account")
_BATCH_ACCOUNT = aliased(Account, name="batch_account")
_KEY_BATCH = aliased(KeyBatch, name="key_batch")


_REDEEM_READ = (
    select(Organization, LicenseKey, *history.HEAD_COLUMNS,
           _WALLET_ACCOUNT, ledger.latest_balance(_WALLET_ACCOUNT.id).label("wallet_units"),
           _BATCH_ACCOUNT, ledger.latest_balance(_BATCH_ACCOUNT.id).label("batch_units"),
           exists().where(WebhookEndpoint.org_id == Organization.id, WebhookEndpoint.active.is_(True))
           .label("webhooks"))
    .select_from(Organization)
    .outerjoin(LicenseKey, LicenseKey.key_hash == bindparam("key_hash"))
    .outerjoin(_KEY_BATCH, _KEY_BATCH.id == LicenseKey.batch_id)
    .outerjoin(history.HEADS, history.HEADS.c.org_id == Organization.id)
    .outerjoin(_WALLET_ACCOUNT, and_(_WALLET_ACCOUNT.org_id == Organization.id, _WALLET_ACCOUNT.kind == "wallet",
                                     _WALLET_ACCOUNT.sku_id == _KEY_BATCH.sku_id,
                                     or_(_WALLET_ACCOUNT.ref == "", ledger.latest_balance(_WALLET_ACCOUNT.id) != 0)))
    .outerjoin(_BATCH_ACCOUNT, and_(_BATCH_ACCOUNT.org_id == _KEY_BATCH.org_id, _BATCH_ACCOUNT.kind == "key_batch",
                                    _BATCH_ACCOUNT.sku_id == _KEY_BATCH.sku_id,
                                    _BATCH_ACCOUNT.ref == cast(_KEY_BATCH.id, String).concat(
                                        bindparam("shard", type_=String))))
    .where(Organization.id == bindparam("org_id"))
    # The accounts' SKU is the key's (loaded with it): no join for it again.
    .options(lazyload(_WALLET_ACCOUNT.sku), lazyload(_BATCH_ACCOUNT.sku))
)
_CLAIM = (update(LicenseKey).where(LicenseKey.id == bindparam("key_id"), LicenseKey.state == "active")
          .values(state="used", redeemed_org_id=bindparam("org_id"),
                  redeemed_at=bindparam("now", type_=LicenseKey.__table__.c.redeemed_at.type))
          .execution_options(synchronize_session=False))


def wallet_target(session: Session, org: Organization, sku: Sku, key: LicenseKey, now: datetime) -> Account:
    refuse_voucher_in_wallet(sku)
    if sku.grant_kind in NOT_FOR_WALLET:
        raise Conflict("key_not_for_wallet",
                       f"This key ({sku.part_number}) holds the licenses preloaded on a piece of hardware: "
                       "register the hardware with it instead of redeeming it into the wallet.",
                       part_number=sku.part_number)
    return ledger.wallet_account(session, org_id=org.id, sku=sku, source=f"key/{key.id}", now=now)


def _wallet_target(session: Session, read: _Read, sku: Sku, now: datetime) -> tuple[Account, int | None]:
    """``wallet_target`` with what the first read found, and the account's units when known: the
    SKU's one wallet account as read, or a lot, new for every key, inserted in one statement (0)."""
    if read.whole and sku.grant_kind not in NOT_FOR_WALLET | VOUCHER_KINDS:
        if sku.grant_kind in ledger.LOT_KINDS:
            lot = ledger.new_account(session, org_id=read.org.id, kind="wallet", sku_id=sku.id,
                                     ref=ledger.lot_ref(f"key/{read.key.id}"), now=now)
            if lot is not None:
                return lot, 0
        else:
            found = next(((a, units) for a, units in read.wallet if a.ref == ""), None)
            if found is not None:
                return found
    return wallet_target(session, read.org, sku, read.key, now), None  # refuses, or finds or makes it


def redeem(session: Session, *, org_id: int, typed_key: str, actor: Actor, now: datetime,
           into: Into | None = None, authorized: bool = False, site_region: str | None = None) -> dict[str, Any]:
    """Move a key's units into the organization's wallet (or the account ``into`` picks, which
    may refuse the key), exactly once across all processes. ``authorized``: the caller has
    checked who may redeem into its target by its own rules (My2N's payments permission), so a
    member is enough here; otherwise an owner or admin. ``site_region``: the key goes to a My2N
    site, whose own region decides which regional parts it takes (not the organization's)."""
    if authorized:
        actor.require_member(org_id)
    else:
        actor.require_licensing(org_id)
    read = _organization_and_key(session, org_id, typed_key)
    org, key = read.org, read.key
    if into is None:  # the wallet: a voucher code is told where it goes, whatever its state
        refuse_voucher_in_wallet(key.batch.sku)
    _refuse_state(key, org)
    sku = key.batch.sku
    region = site_region or org.region
    if not sku.sold_in(region):
        raise Forbidden(
            "key_wrong_region",
            f"This key is for part {sku.part_number}, sold in {', '.join(sku.regions)}; this "
            f"{'site' if site_region else 'organization'} is in {region}. Ask your distributor for the part sold "
            "in your region.",
            part_number=sku.part_number, key_regions=sku.regions, organization_region=org.region,
            **({"site_region": site_region} if site_region else {}),
        )
    # Refuses before anything changes.
    target, target_units = ((into(session, org, sku, key, now), None) if into
                            else _wallet_target(session, read, sku, now))
    # The one statement that decides who wins when many redeem the same key at once.
    won = session.execute(_CLAIM, {"key_id": key.id, "org_id": org.id, "now": now}).rowcount
    if won != 1:
        session.refresh(key)
        _refuse_state(key, org)
        raise Conflict("key_already_redeemed", "This key was already redeemed; each key can be redeemed once.")
    qty = key.batch.quantity_per_key
    history.lock_organization(session, org.id)  # held since the first read; the wallet figure stays true until commit
    if read.whole:  # read under the lock: still true
        before = ledger.live_units([(a.ref, a.created_at, units) for a, units in read.wallet], now=now)
    else:
        before = ledger.wallet_units(session, org.id, sku.id, now=now)  # live units only (R-AX-4)
    after = before + qty if target.kind == "wallet" else before
    history.record(session, org_id=org.id, actor=actor, now=now, action="key.redeemed",
                   object_type="license_key", object_id=key.id, head=read.head,
                   before={"part_number": sku.part_number, "wallet": before},
                   after={"part_number": sku.part_number, "wallet": after,
                          **({} if target.kind == "wallet" else {"into": target.kind})})
    events.emit(session, org_id=org.id, type="key.redeemed", now=now, webhooks=read.webhooks, key_id=key.id,
                part_number=sku.part_number, quantity=qty)
    # Last: on PostgreSQL the ledger locks the accounts until commit, so take them late.
    source = read.batch[0] if read.batch else batch_account(session, key.batch, key.key_hash, now)
    ledger.transfer(
        session, org_id=org.id, kind="redeem", actor=actor, now=now, amount=qty,
        source=source, target=target, memo=f"key {key.id}",
        known={**read.units(), **({} if target_units is None else {target.id: target_units})} if read.whole else None,
    )
    return {"key_id": key.id, "part_number": sku.part_number, "alt_part_numbers": list(sku.alt_part_numbers or []),
            "product": sku.product.code,
            "quantity": qty, "wallet_units": after, "redeemed_at": now.isoformat()}


def cancel(session: Session, *, typed_key: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """Only the issuer cancels; the key's units leave the batch for the ``cancelled`` sink."""
    actor.require_issuer()
    key = _find(session, typed_key)
    if key.state != "active":
        raise Conflict("key_not_active", f"Only an active key can be cancelled; this one is {key.state}.",
                       state=key.state)
    won = session.execute(update(LicenseKey).where(LicenseKey.id == key.id, LicenseKey.state == "active")
                          .values(state="cancelled", cancelled_at=now)
                          .execution_options(synchronize_session=False)).rowcount
    if won != 1:
        raise Conflict("key_not_active", "The key was redeemed or cancelled meanwhile.")
    b = key.batch
    ledger.transfer(
        session, org_id=b.org_id, kind="cancel", actor=actor, now=now, amount=b.quantity_per_key,
        source=batch_account(session, b, key.key_hash, now),
        target=ledger.account(session, org_id=b.org_id, kind="cancelled", sku_id=b.sku_id, now=now),
    )
    history.record(session, org_id=b.org_id, actor=actor, now=now, action="key.cancelled",
                   object_type="license_key", object_id=key.id)
    return {"key_id": key.id, "state": "cancelled"}

