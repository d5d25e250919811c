"""AXIS License Manager licensing on the server (SPEC §3, R-AX-1 … R-AX-13).

The rules are plain code in ``entitle.axis.rules``; this module loads what they read, moves
units in the ledger, writes history and events, inside the caller's transaction. Every writer
of an organization's AXIS licensing takes the organization's lock first
(``history.lock_organization``), so two allocations never both spend the same wallet units.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, bindparam, cast, func, insert, or_, select, update
from sqlalchemy.orm import Session, aliased

from entitle.actors import Actor, operator
from entitle.axis import rules
from entitle.axis.models import Allocation, AxisDevice, CompensationRemainder, Hardware, OrgProduct
from entitle.catalog.models import Product, Sku
from entitle.db import chunks
from entitle.delivery.sweep import Transition, record_once
from entitle.errors import Conflict, EntitleError, NotFound
from entitle.history import services as history
from entitle.keys import services as keys
from entitle.keys.models import LicenseKey
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.platform import events
from entitle.platform.models import Event
from entitle.systems.models import System
from entitle.tenancy.models import Organization
from entitle.text import plural, single_line

MODEL = "axis"
TRIAL = timedelta(days=90)  # R-AX-13: a product's trial from its registration
MAX_UNITS = 1_000_000
TERMS = (1, 5)  # R-AX-4: Axis sells one-year and five-year units
MAX_DEVICES_PER_CALL = 100_000
MAX_LISTED = 1_000  # serials named in a refusal's detail (``count`` has them all)
_DEVICE_COLUMNS = 7  # values bound per device row inserted
# Who records what time alone did (a lot's units expiring) in history.
SWEEP_ACTOR = operator("sweep")


# --- products ------------------------------------------------------------------------------------

# The statements the product status runs on every read, built once: building and cache-keying a
# select() costs more than running it here (docs/benchmarks.md, "The API layer").
_PRODUCT = select(Product).where(Product.code == bindparam("code"))
_ORG_PRODUCT = select(OrgProduct).where(OrgProduct.org_id == bindparam("org_id"),
                                        OrgProduct.product_id == bindparam("product_id"))


def product_by_code(session: Session, code: str) -> Product:
    product = session.scalars(_PRODUCT, {"code": code}).one_or_none()
    if product is None or product.model != MODEL:
        raise NotFound("product", product=code)
    return product


def license_types(product: Product) -> list[str]:
    """The license types the product's SKUs grant (core, universal, ...)."""
    return sorted({str(s.grants["license_type"]) for s in product.skus if "license_type" in s.grants})


def _require_type(product: Product, license_type: str) -> None:
    known = license_types(product)
    if license_type not in known:
        raise EntitleError("license_type_unknown",
                           f"{product.name} has no license type {license_type!r}; use one of: {', '.join(known)}.",
                           license_type=license_type, allowed=known)


def org_product(session: Session, org_id: int, product: Product) -> OrgProduct | None:
    return session.scalars(_ORG_PRODUCT, {"org_id": org_id, "product_id": product.id}).one_or_none()


def _registered(session: Session, org_id: int, product: Product) -> OrgProduct:
    op = org_product(session, org_id, product)
    if op is None:
        raise Conflict("product_not_registered",
                       f"Register a {product.name} system to this organization before licensing it.",
                       product=product.code)
    return op


def _ensure_org_product(session: Session, org_id: int, product: Product, actor: Actor, now: datetime) -> OrgProduct:
    op = org_product(session, org_id, product)
    if op is None:
        op = OrgProduct(org_id=org_id, product_id=product.id, registered_at=now, trial_ends_at=now + TRIAL)
        session.add(op)
        session.flush()
        history.record(session, org_id=org_id, actor=actor, now=now, action="axis.product.registered",
                       object_type="axis_product", object_id=product.code,
                       after={"trial_ends_at": op.trial_ends_at.isoformat() if op.trial_ends_at else None})
    return op


# --- systems and devices (R-AX-1, R-AX-2, R-AX-8) -------------------------------------------------

def register_system(session: Session, *, org_id: int, uid: str, name: str, product_code: str, actor: Actor,
                    now: datetime) -> System:
    """Register an online system of an AXIS product; a registration never moves (R-AX-1)."""
    actor.require_licensing(org_id)
    product = product_by_code(session, product_code)
    single_line(uid, "system id", field="uid")
    single_line(name, "system name")
    uid, name = uid.strip(), (name.strip() or uid.strip())
    if not 1 <= len(uid) <= 128:
        raise EntitleError("uid_invalid", "A system id is 1 to 128 characters.")
    if len(name) > 200:
        raise EntitleError("name_invalid", "A system name is at most 200 characters.")
    existing = session.scalars(select(System).where(System.uid == uid)).one_or_none()
    if existing is not None:
        if existing.org_id != org_id:
            raise Conflict("system_registered_elsewhere",
                           "This system is registered to another organization; a registration cannot move "
                           "between organizations.")
        raise Conflict("system_exists", f"System {uid} is already registered here.", system=uid)
    history.lock_organization(session, org_id)
    _ensure_org_product(session, org_id, product, actor, now)
    system = System(org_id=org_id, uid=uid, name=name, product=product.code, public_key=None, offline=False,
                    need={}, devices=[], registered_at=now, updated_at=now)
    session.add(system)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="system.registered",
                   object_type="system", object_id=uid, after={"product": product.code, "name": name})
    return system


def axis_system(session: Session, org_id: int, system_id: int) -> tuple[System, Product]:
    system = session.get(System, system_id)
    if system is None or system.org_id != org_id:
        raise NotFound("system", system_id=system_id)
    return system, product_by_code(session, system.product)


@dataclass(frozen=True)
class NewDevice:
    serial: str
    license_type: str
    hardware_serial: str | None = None


def add_devices(session: Session, *, org_id: int, system_id: int, devices: Sequence[NewDevice], actor: Actor,
                now: datetime) -> int:
    """Add devices to a system. No allocation is needed at once (R-AX-8): they count toward the
    next renewal's need, and a year's growth beyond the allowance is flagged (R-AX-9)."""
    actor.require_licensing(org_id)
    system, product = axis_system(session, org_id, system_id)
    _require_online(system)
    if not 1 <= len(devices) <= MAX_DEVICES_PER_CALL:
        raise EntitleError("devices_invalid", f"Add 1 to {MAX_DEVICES_PER_CALL:,} devices at a time.")
    for i, d in enumerate(devices):
        single_line(d.serial, "device serial number", field=f"devices.{i}.serial")
    serials = [d.serial.strip() for d in devices]
    if any(not 1 <= len(s) <= 128 for s in serials):
        raise EntitleError("serial_invalid", "A device serial number is 1 to 128 characters.")
    if len(set(serials)) != len(serials):
        raise EntitleError("serial_duplicate", "The same serial number is listed twice.")
    for license_type in dict.fromkeys(d.license_type for d in devices):  # each type once, in the list's order
        _require_type(product, license_type)
    history.lock_organization(session, org_id)
    # Every statement built from the caller's list binds a bounded part of it (db.chunks).
    taken = sorted(serial for part in chunks(serials) for serial in session.scalars(
        select(AxisDevice.serial).where(AxisDevice.system_id == system.id, AxisDevice.serial.in_(part),
                                        AxisDevice.removed_at.is_(None))))
    if taken:
        said = (f"Device {taken[0]} is already in this system." if len(taken) == 1 else
                f"{len(taken):,} of these devices are already in this system, {taken[0]} first.")
        raise Conflict("device_exists", said, serials=taken[:MAX_LISTED], count=len(taken))
    hardware_ids: dict[str, int] = {}
    for hs in {d.hardware_serial for d in devices if d.hardware_serial}:
        hw = session.scalars(select(Hardware).where(Hardware.serial == hs, Hardware.org_id == org_id)).one_or_none()
        if hw is None:
            raise NotFound("hardware", serial=hs)
        wrong = [d.serial for d in devices if d.hardware_serial == hs and d.license_type != hw.license_type]
        if hw.product_id != product.id or wrong:
            raise Conflict("hardware_mismatch",
                           f"Hardware {hs} carries {hw.license_type} licenses of another product or type than "
                           "these devices need; attach devices of its product and license type only.",
                           hardware=hs, license_type=hw.license_type, serials=wrong)
        hardware_ids[hs] = hw.id
    # A serial removed earlier comes back as a new row (its old row keeps the past need right).
    _retire_serials(session, system.id, serials)
    rows = ({"org_id": org_id, "product_id": product.id, "system_id": system.id, "serial": s,
             "license_type": d.license_type, "added_at": now,
             "hardware_id": hardware_ids.get(d.hardware_serial) if d.hardware_serial else None}
            for s, d in zip(serials, devices, strict=True))
    for part in chunks(rows, columns=_DEVICE_COLUMNS):
        session.execute(insert(AxisDevice), part)
    system.updated_at = now
    counts: dict[str, int] = defaultdict(int)
    for d in devices:
        counts[d.license_type] += 1
    history.record(session, org_id=org_id, actor=actor, now=now, action="axis.devices.added",
                   object_type="system", object_id=system.uid, after={"added": dict(counts)})
    _check_growth(session, org_id, product, now)
    return len(devices)


def remove_devices(session: Session, *, org_id: int, system_id: int, serials: Sequence[str], actor: Actor,
                   now: datetime) -> int:
    actor.require_licensing(org_id)
    system, _product = axis_system(session, org_id, system_id)
    _require_online(system)
    if not 1 <= len(serials) <= MAX_DEVICES_PER_CALL:
        raise EntitleError("devices_invalid", f"Remove 1 to {MAX_DEVICES_PER_CALL:,} devices at a time.")
    history.lock_organization(session, org_id)
    removed = _remove_serials(session, system.id, sorted(set(serials)), now)
    if removed != len(set(serials)):
        raise NotFound("device", system=system.uid)
    history.record(session, org_id=org_id, actor=actor, now=now, action="axis.devices.removed",
                   object_type="system", object_id=system.uid, after={"removed": removed})
    return int(removed)


def systems_summary(session: Session, org_id: int, system_id: int | None = None, *, after_id: int | None = None,
                    limit: int | None = None) -> list[dict[str, Any]]:
    """The organization's AXIS systems (online and offline) with their devices per license type;
    a page of them with ``after_id`` and ``limit``."""
    q = (select(System).join(Product, Product.code == System.product)
         .where(System.org_id == org_id, Product.model == MODEL).order_by(System.id))
    if system_id is not None:
        q = q.where(System.id == system_id)
    if after_id is not None:
        q = q.where(System.id > after_id)
    rows = list(session.scalars(q.limit(limit)))
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for part in chunks([x.id for x in rows]):
        for sid, license_type, n in session.execute(
                select(AxisDevice.system_id, AxisDevice.license_type, func.count())
                .where(AxisDevice.org_id == org_id, AxisDevice.removed_at.is_(None), AxisDevice.system_id.in_(part))
                .group_by(AxisDevice.system_id, AxisDevice.license_type)).all():
            counts[sid][license_type] = int(n)
    return [{"id": x.id, "uid": x.uid, "name": x.name, "product": x.product, "offline": x.offline,
             "devices": counts.get(x.id, {}), "registered_at": x.registered_at.isoformat(),
             "updated_at": x.updated_at.isoformat()} for x in rows]


def device_rows(session: Session, system: System, *, limit: int = 1000, after_id: int | None = None) -> list[dict[str, Any]]:
    """The system's devices now, by serial, with the hardware that licenses each (if any). A page
    is a keyset on the serial (the unique index on system and serial reads it in order) whose
    cursor is the id of the last device shown: ``after_id``; a device of another system bounds
    nothing and gives an empty page."""
    stmt = (select(AxisDevice, Hardware.serial).outerjoin(Hardware, Hardware.id == AxisDevice.hardware_id)
            .where(AxisDevice.system_id == system.id, AxisDevice.removed_at.is_(None)))
    if after_id is not None:
        last = aliased(AxisDevice)  # not the outer query's row
        stmt = stmt.where(AxisDevice.serial > select(last.serial).where(
            last.id == after_id, last.system_id == system.id).scalar_subquery())
    rows = session.execute(stmt.order_by(AxisDevice.serial).limit(limit)).all()
    return [{"id": d.id, "serial": d.serial, "license_type": d.license_type, "hardware_serial": hw,
             "added_at": d.added_at.isoformat()} for d, hw in rows]


def _retire_serials(session: Session, system_id: int, serials: Sequence[str]) -> None:
    """Rename the system's rows of these serials, present or removed, out of the way
    ("<serial>#<id>"), so that the serials can be added again as new rows."""
    for part in chunks(serials):
        session.execute(update(AxisDevice).where(AxisDevice.system_id == system_id, AxisDevice.serial.in_(part))
                        .values(serial=AxisDevice.serial + "#" + cast(AxisDevice.id, String))
                        .execution_options(synchronize_session=False))


def _remove_serials(session: Session, system_id: int, serials: Sequence[str], now: datetime) -> int:
    """Mark the system's present devices of these (distinct) serials removed; how many were."""
    removed = 0
    for part in chunks(serials):
        removed += session.execute(update(AxisDevice).where(AxisDevice.system_id == system_id,
                                                            AxisDevice.serial.in_(part),
                                                            AxisDevice.removed_at.is_(None))
                                   .values(removed_at=now).execution_options(synchronize_session=False)).rowcount
    return removed


def _require_online(system: System) -> None:
    if system.offline:
        raise Conflict("system_offline",
                       f"System {system.uid} is offline: its devices come from its system file. Make a new "
                       "system file on the system and upload it.", system=system.uid)


def devices_of(session: Session, system: System, *, limit: int = 1000) -> list[AxisDevice]:
    return list(session.scalars(select(AxisDevice).where(AxisDevice.system_id == system.id,
                                                         AxisDevice.removed_at.is_(None))
                                .order_by(AxisDevice.serial).limit(limit)))


def sync_system_file(session: Session, *, system: System, actor: Actor, now: datetime) -> None:
    """An offline system reports its need as counts per license type (R-AX-11): keep one device
    row per counted channel ("<type>-<n>"), so that the need over time is counted the same way
    for online and offline systems."""
    product = session.scalars(select(Product).where(Product.code == system.product)).one_or_none()
    if product is None or product.model != MODEL:
        return
    _ensure_org_product(session, system.org_id, product, actor, now)
    current: dict[str, int] = {t: int(n) for t, n in session.execute(
        select(AxisDevice.license_type, func.count()).where(AxisDevice.system_id == system.id,
                                                           AxisDevice.removed_at.is_(None))
        .group_by(AxisDevice.license_type)).all()}
    for license_type in sorted(set(current) | set(system.need)):
        want, have = int(system.need.get(license_type, 0)), int(current.get(license_type, 0))
        if want > have:
            serials = [f"{license_type}-{n}" for n in range(have + 1, want + 1)]
            _retire_serials(session, system.id, serials)
            for part in chunks(serials, columns=_DEVICE_COLUMNS):
                session.execute(insert(AxisDevice), [
                    {"org_id": system.org_id, "product_id": product.id, "system_id": system.id, "serial": s,
                     "license_type": license_type, "added_at": now} for s in part])
        elif want < have:
            _remove_serials(session, system.id, [f"{license_type}-{n}" for n in range(want + 1, have + 1)], now)
    _check_growth(session, system.org_id, product, now)


# --- the need (R-AX-2) ----------------------------------------------------------------------------

def need(session: Session, org_id: int, product_id: int, *, now: datetime, at: datetime | None = None,
         edges: list[datetime] | None = None) -> dict[str, tuple[int, int]]:
    """License type -> (devices needing a license now, devices that did at ``at``), counted in
    one pass over the product's devices (an index-only scan of ``ix_axis_devices_need``).
    Devices on hardware are licensed by the hardware (R-AX-10) and not counted here. ``edges``
    gets the moments after ``now`` a device is added or removed at (a clock set back)."""
    rows = session.execute(_NEED, {"org_id": org_id, "product_id": product_id, "now": now, "at": at or now}).all()
    if edges is not None:
        edges += [moment for r in rows for moment in (r[3], r[4]) if moment is not None]
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _present(at: Any) -> Any:
    return and_(AxisDevice.added_at <= at, or_(AxisDevice.removed_at.is_(None), AxisDevice.removed_at > at))


_MOMENT = AxisDevice.__table__.c.added_at.type
_NEED = (select(AxisDevice.license_type, func.count().filter(_present(bindparam("now", type_=_MOMENT))),
                func.count().filter(_present(bindparam("at", type_=_MOMENT))),
                func.min(AxisDevice.added_at).filter(AxisDevice.added_at > bindparam("now", type_=_MOMENT)),
                func.min(AxisDevice.removed_at).filter(AxisDevice.removed_at > bindparam("now", type_=_MOMENT)))
         .where(AxisDevice.org_id == bindparam("org_id"), AxisDevice.product_id == bindparam("product_id"),
                AxisDevice.hardware_id.is_(None))
         .group_by(AxisDevice.license_type))


def allocated(session: Session, org_id: int, product_id: int) -> dict[str, dict[int, int]]:
    """License type -> {year index: units licensed for that year} (a five-year unit counts in
    each of its five years)."""
    rows = session.execute(_ALLOCATED, {"org_id": org_id, "product_id": product_id}).all()
    out: dict[str, dict[int, int]] = defaultdict(lambda: defaultdict(int))
    for license_type, first, years, units in rows:
        for index in range(first, first + years):
            out[license_type][index] += int(units)
    return {t: dict(by_year) for t, by_year in out.items()}


_ALLOCATED = (select(Allocation.license_type, Allocation.first_year, Allocation.years, func.sum(Allocation.units))
              .where(Allocation.org_id == bindparam("org_id"), Allocation.product_id == bindparam("product_id"))
              .group_by(Allocation.license_type, Allocation.first_year, Allocation.years))


# --- the wallet (R-AX-4) --------------------------------------------------------------------------

@dataclass(frozen=True)
class LotView:
    account: Account
    sku: Sku
    units: int

    @property
    def received_at(self) -> datetime:
        return self.account.created_at

    @property
    def expires_at(self) -> datetime:
        return rules.add_years(self.account.created_at, rules.STORAGE_YEARS)

    @property
    def license_type(self) -> str:
        return str(self.sku.grants.get("license_type", ""))

    def to_dict(self) -> dict[str, Any]:
        return {"lot": self.account.ref, "part_number": self.sku.part_number, "grant_kind": self.sku.grant_kind,
                "license_type": self.license_type, "term_years": self.sku.term_years or 1, "units": self.units,
                "received_at": self.received_at.isoformat(), "expires_at": self.expires_at.isoformat()}


_LATEST_LOT_ENTRIES = (select(Entry.account_id, func.max(Entry.id).label("entry_id"))
                       .join(Account, Account.id == Entry.account_id)
                       .where(Account.org_id == bindparam("org_id"), Account.kind == "wallet",
                              Account.ref.startswith(ledger.LOT_PREFIX))
                       .group_by(Entry.account_id).subquery())
_LOTS = (select(Account, Sku, Entry.balance_after)
         .join(Sku, Sku.id == Account.sku_id)
         .join(_LATEST_LOT_ENTRIES, _LATEST_LOT_ENTRIES.c.account_id == Account.id)
         .join(Entry, Entry.id == _LATEST_LOT_ENTRIES.c.entry_id)
         .where(Sku.product_id == bindparam("product_id"), Entry.balance_after > 0)
         .order_by(Account.created_at, Account.id))


def lots(session: Session, org_id: int, product: Product, *, now: datetime) -> list[LotView]:
    """The product's wallet lots holding units and still usable at ``now``, oldest first (a lot
    past its five years whose expiry is not recorded yet is left out: ``expire_lots``)."""
    return [lot for lot in _every_lot(session, org_id, product) if lot.expires_at > now]


def _every_lot(session: Session, org_id: int, product: Product) -> list[LotView]:
    rows = session.execute(_LOTS, {"org_id": org_id, "product_id": product.id}).all()
    return [LotView(a, s, int(b)) for a, s, b in rows]


def expire_lots(session: Session, *, org_id: int, product: Product, actor: Actor, now: datetime) -> list[LotView]:
    """Record the expiry of wallet units older than five years (R-AX-4) in the ledger and
    history. Reads are right without it (``lots`` leaves expired lots out); every writer that
    takes units from the wallet calls it first, after the organization's lock, and the sweep
    records the expiry of quiet wallets (``record_swept_expiry``). Whichever comes first records
    it; the others find the lot empty. Returns the lots still usable at ``now`` (``lots``), read
    by the same statement: recording an expiry changes none of them."""
    every = _every_lot(session, org_id, product)
    for lot in every:
        if lot.expires_at <= now:
            _record_expiry(session, org_id=org_id, product_code=product.code, lot=lot, actor=actor, now=now)
    return [lot for lot in every if lot.expires_at > now]


def _record_expiry(session: Session, *, org_id: int, product_code: str, lot: LotView, actor: Actor,
                   now: datetime) -> Event | None:
    """The lot's units to the ``expired`` account, its history entry and (once) its event."""
    target = ledger.account(session, org_id=org_id, kind="expired", sku_id=lot.sku.id, now=now)
    ledger.transfer(session, org_id=org_id, kind="expiry", actor=actor, now=now, amount=lot.units,
                    source=lot.account, target=target, memo=f"{lot.account.ref} expired {lot.expires_at.isoformat()}")
    history.record(session, org_id=org_id, actor=actor, now=now, action="axis.units.expired",
                   object_type="wallet_lot", object_id=lot.account.ref,
                   before={"units": lot.units, "part_number": lot.sku.part_number},
                   after={"units": 0, "expired_at": lot.expires_at.isoformat()})
    return record_once(session, expiry_transition(org_id, product_code, lot), now=now)


def record_swept_expiry(session: Session, *, account_id: int, now: datetime) -> Event | None:
    """The sweep's recording of one lot's expiry (R-AX-4, R-CORE-8): ledger, history and event in
    the caller's transaction, or None when a write or another sweep recorded it first. The lot is
    read again after the organization's lock, which every recorder takes first: of two that
    found it, the second sees it empty."""
    account = session.get(Account, account_id)
    if account is None:
        return None
    history.lock_organization(session, account.org_id)
    sku = session.get(Sku, account.sku_id)
    assert sku is not None
    units = ledger.balance(session, account.id)
    lot = LotView(account, sku, units)
    if units <= 0 or lot.expires_at > now:
        return None
    return _record_expiry(session, org_id=account.org_id, product_code=sku.product.code, lot=lot,
                          actor=SWEEP_ACTOR, now=now)


def expiry_transition(org_id: int, product_code: str, lot: LotView) -> Transition:
    """A lot's units expiring (R-AX-4, R-CORE-8) as both its recorders name it: the sweep
    (``entitle.axis.sweep``, which records it through ``record``) and the next write that takes
    units from the wallet. The subject is the lot itself (its account), so the event is recorded
    once whichever comes first."""
    account_id = lot.account.id
    return Transition("axis.units.expired", f"axis/lot/{account_id}", org_id, lot.expires_at,
                      {"product": product_code, "part_number": lot.sku.part_number, "units": lot.units,
                       "lot": lot.account.ref},
                      record=lambda session, now: record_swept_expiry(session, account_id=account_id, now=now))


_REMAINDERS = (select(Sku.part_number, CompensationRemainder.license_days)
               .join(Sku, Sku.id == CompensationRemainder.sku_id)
               .where(CompensationRemainder.org_id == bindparam("org_id"), Sku.product_id == bindparam("product_id")))


def _remainders(session: Session, org_id: int, product: Product) -> dict[str, int]:
    rows = session.execute(_REMAINDERS, {"org_id": org_id, "product_id": product.id}).all()
    return {p: int(d) for p, d in rows if d}


def _take(available: Iterable[LotView], units: int) -> list[tuple[LotView, int]]:
    """Oldest lots first (R-AX-4); ``available`` is already oldest first."""
    taken: list[tuple[LotView, int]] = []
    left = units
    for lot in available:
        if left == 0:
            break
        n = min(lot.units, left)
        taken.append((lot, n))
        left -= n
    return taken


# --- subscriptions (R-AX-3, R-AX-6, R-AX-13) ------------------------------------------------------

def start_subscription(session: Session, *, org_id: int, product_code: str, actor: Actor, now: datetime) -> OrgProduct:
    """Fix the subscription years from now and open the first 30-day grace period (R-AX-3); in
    an organization whose period already runs, the product joins it."""
    actor.require_licensing(org_id)
    product = product_by_code(session, product_code)
    history.lock_organization(session, org_id)
    op = _registered(session, org_id, product)
    if op.subscription_start is not None:
        raise Conflict("subscription_already_started",
                       f"The subscription for {product.name} started on {op.subscription_start.date()}; its "
                       "years are fixed. Allocate licenses to renew it instead.",
                       subscription_start=op.subscription_start.isoformat())
    # The subscription period dates are the organization's (R-AX-3, R-AX-7): a product whose
    # subscription starts after another's joins the running period instead of moving its dates.
    period_start = session.scalar(select(func.min(OrgProduct.subscription_start)).where(
        OrgProduct.org_id == org_id, OrgProduct.subscription_start.is_not(None)))
    op.subscription_start, op.started_by = period_start or now, actor.label
    session.flush()
    current = rules.year_at(op.subscription_start, now)
    assert current is not None
    grace = rules.grace_end(current, op.registered_at)
    history.record(session, org_id=org_id, actor=actor, now=now, action="axis.subscription.started",
                   object_type="axis_product", object_id=product.code,
                   after={"subscription_start": op.subscription_start.isoformat(), "year": current.index,
                          "grace_end": grace.isoformat()})
    events.emit(session, org_id=org_id, type="axis.grace.started", now=now, product=product.code, year=current.index,
                grace_end=grace.isoformat())
    return op


# --- allocation (R-AX-5, R-AX-7) ------------------------------------------------------------------

@dataclass(frozen=True)
class Line:
    license_type: str
    year: int
    units: int
    term_years: int = 1


def allocate(session: Session, *, org_id: int, product_code: str, lines: Sequence[Line], actor: Actor,
             now: datetime, state_before: str | None = None) -> dict[str, Any]:
    """Confirm an allocation: every line or none. Units come from the wallet's oldest lots of the
    line's license type and term; a short wallet refuses the whole confirmation with how many are
    missing (R-AX-5). Overlapping time is compensated back to the wallet (R-AX-7)."""
    actor.require_licensing(org_id)
    product = product_by_code(session, product_code)
    if not lines:
        raise EntitleError("allocation_empty", "Name at least one license type, year and number of units.")
    history.lock_organization(session, org_id)  # one allocator per organization at a time
    op = _registered(session, org_id, product)
    start = _started(op, product)
    years = rules.allocatable_years(start, now)
    for line in lines:
        _require_type(product, line.license_type)
        if not 1 <= line.units <= MAX_UNITS:
            raise EntitleError("units_invalid", f"Allocate 1 to {MAX_UNITS:,} units per line.", units=line.units)
        if line.term_years not in TERMS:
            raise EntitleError("term_invalid", "Units last 1 or 5 subscription years.", term_years=line.term_years)
        if line.year not in years:
            raise EntitleError("year_out_of_range",
                               f"Allocate to the current subscription year ({years.start}) or up to five years "
                               f"ahead ({years.stop - 1}).", year=line.year, first=years.start, last=years.stop - 1)
    usable = expire_lots(session, org_id=org_id, product=product, actor=actor, now=now)
    if state_before is None:  # renew has just read it
        state_before = status(session, org_id=org_id, product=product, now=now, wallet=usable)["state"]
    wanted: dict[tuple[str, int], int] = defaultdict(int)
    for line in lines:
        wanted[(line.license_type, line.term_years)] += line.units
    plan: dict[tuple[str, int], list[tuple[LotView, int]]] = {}
    short = []
    for (license_type, term), units in sorted(wanted.items()):
        pool = [lot for lot in usable if lot.sku.grant_kind == "subscription" and lot.license_type == license_type
                and (lot.sku.term_years or 1) == term]
        have = sum(lot.units for lot in pool)
        if have < units:
            short.append({"license_type": license_type, "term_years": term, "needed": units, "available": have,
                          "missing": units - have})
        plan[(license_type, term)] = _take(pool, units)
    if short:
        missing = sum(s["missing"] for s in short)
        what = "; ".join(f"{s['license_type']} ({s['term_years']}-year): {s['missing']} missing" for s in short)
        raise Conflict("insufficient_units",
                       f"The wallet holds too few units to confirm this allocation ({what}). Redeem more license "
                       "keys or allocate fewer.", missing=missing, lines=short)
    made = []
    for line in lines:
        take = _take_from_plan(plan[(line.license_type, line.term_years)], line.units)
        made.extend(_allocate_line(session, org_id=org_id, product=product, op=op, line=line, take=take,
                                   actor=actor, now=now, start=start))
    after = status(session, org_id=org_id, product=product, now=now)
    if after["state"] == "fully_licensed" and state_before != "fully_licensed":
        events.emit(session, org_id=org_id, type="axis.fully_licensed", now=now, product=product.code,
                    year=after["current_year"]["index"] if after["current_year"] else None)
    return {"allocations": made, "state": after["state"]}


def _started(op: OrgProduct, product: Product) -> datetime:
    if op.subscription_start is None:
        raise Conflict("subscription_not_started",
                       f"Start the subscription for {product.name} first; it fixes the subscription years.",
                       product=product.code)
    return op.subscription_start


def _take_from_plan(plan: list[tuple[LotView, int]], units: int) -> list[tuple[LotView, int]]:
    """Hand the next ``units`` of a planned take to one line (lines share a plan per type/term)."""
    out: list[tuple[LotView, int]] = []
    while units:
        lot, n = plan[0]
        k = min(n, units)
        out.append((lot, k))
        units -= k
        if k == n:
            plan.pop(0)
        else:
            plan[0] = (lot, n - k)
    return out


def _allocate_line(session: Session, *, org_id: int, product: Product, op: OrgProduct, line: Line,
                   take: list[tuple[LotView, int]], actor: Actor, now: datetime, start: datetime) -> list[dict[str, Any]]:
    made = []
    by_sku: dict[int, list[tuple[LotView, int]]] = defaultdict(list)
    for lot, n in take:
        by_sku[lot.sku.id].append((lot, n))
    period = rules.year(start, line.year)
    for sku_id, parts in by_sku.items():
        sku = parts[0][0].sku
        units = sum(n for _, n in parts)
        target = ledger.account(session, org_id=org_id, kind="axis_allocation", sku_id=sku_id,
                                ref=f"{product.id}/{line.year}", now=now)
        txn_id = ledger.post(session, org_id=org_id, kind="allocation", actor=actor, now=now,
                          memo=f"{product.code} {line.license_type} year {line.year}",
                          moves=[*((lot.account, -n) for lot, n in parts), (target, units)])
        days = rules.compensation_license_days(units, period, allocated_at=now, registered_at=op.registered_at)
        row = Allocation(org_id=org_id, product_id=product.id, license_type=line.license_type, sku_id=sku_id,
                         kind="allocation", first_year=line.year, years=line.term_years, units=units,
                         compensation_days=days, allocated_at=now, actor=actor.label)
        session.add(row)
        session.flush()
        # A unit is worth the license-days of all the years it licenses (365 or 366 each).
        unit_days = (rules.year(start, line.year + line.term_years - 1).end - period.start).days
        credited = _compensate(session, org_id=org_id, sku=sku, allocation=row, source=target, unit_days=unit_days,
                               actor=actor, now=now) if days else 0
        history.record(session, org_id=org_id, actor=actor, now=now, action="axis.allocated",
                       object_type="axis_product", object_id=product.code,
                       after={"license_type": line.license_type, "year": line.year, "term_years": line.term_years,
                              "units": units, "part_number": sku.part_number, "ledger_txn": txn_id,
                              "compensation_license_days": days, "compensation_units": credited})
        made.append({"id": row.id, "license_type": line.license_type, "year": line.year, "years": line.term_years,
                     "units": units, "part_number": sku.part_number, "period_start": period.start.isoformat(),
                     "period_end": period.end.isoformat(), "compensation_license_days": days,
                     "compensation_units": credited})
    return made


def _compensate(session: Session, *, org_id: int, sku: Sku, allocation: Allocation, source: Account,
                unit_days: int, actor: Actor, now: datetime) -> int:
    """R-AX-7: the overlapping time, in license-days, goes back to the wallet: whole units of
    ``unit_days`` license-days as a new lot (five years from now), the rest kept as license-days
    until they make a unit."""
    whole, rest = rules.as_units(allocation.compensation_days, unit_days)
    rem = session.scalars(select(CompensationRemainder).where(CompensationRemainder.org_id == org_id,
                                                              CompensationRemainder.sku_id == sku.id)).one_or_none()
    if rem is None:
        rem = CompensationRemainder(org_id=org_id, sku_id=sku.id, license_days=0)
        session.add(rem)
    extra, rem.license_days = divmod(rem.license_days + rest, unit_days)
    credit = whole + extra
    allocation.compensation_units = credit
    if credit:
        lot = ledger.wallet_account(session, org_id=org_id, sku=sku, source=f"comp/{allocation.id}", now=now)
        ledger.transfer(session, org_id=org_id, kind="compensation", actor=actor, now=now, amount=credit,
                        source=source, target=lot, memo=f"allocation {allocation.id}: {allocation.compensation_days} "
                        "license-days")
    session.flush()
    return credit


def renew(session: Session, *, org_id: int, product_code: str, years_ahead: int = 1, term_years: int | None = None,
          actor: Actor, now: datetime) -> dict[str, Any]:
    """Renew (R-AX-5, R-AX-6): make the current year fully licensed when it is not -- its grace
    period is the time to allocate to it -- and the ``years_ahead`` years after it (0 to 5), each
    against its need, with the wallet's units as the buying guidance counts them
    (``rules.cover``: earliest year first, five-year units first unless ``term_years`` names
    one term). All or nothing: refused as a whole, with what each license type misses per year,
    when the wallet is short."""
    actor.require_licensing(org_id)
    product = product_by_code(session, product_code)
    if not 0 <= years_ahead <= rules.AHEAD_YEARS:
        raise EntitleError("years_invalid",
                           f"Renew 0 to {rules.AHEAD_YEARS} years ahead of the current subscription year (0: the "
                           "current year only).", years=years_ahead)
    if term_years is not None and term_years not in TERMS:
        raise EntitleError("term_invalid", "Units last 1 or 5 subscription years.", term_years=term_years)
    history.lock_organization(session, org_id)
    _started(_registered(session, org_id, product), product)
    st = status(session, org_id=org_id, product=product, now=now)
    current = st["current_year"]["index"]
    covered = rules.renewal_years(current, years_ahead)
    through = f"year {current}" if len(covered) == 1 else f"years {covered.start} to {covered.stop - 1}"
    wallet = lots(session, org_id, product, now=now)
    lines: list[Line] = []
    short = []
    for license_type in st["license_types"]:
        missing = {y["index"]: y["license_types"][license_type]["missing"] for y in st["years"] if y["index"] in covered}
        to_buy, placed = rules.cover(missing, _wallet_terms(wallet, license_type, term_years), list(covered))
        if any(to_buy.values()):
            short.append({"license_type": license_type, "missing": sum(to_buy.values()),
                          "missing_by_year": {str(k): v for k, v in to_buy.items() if v}})
        lines += [Line(license_type, index, units, term) for index, term, units in placed]
    if short:
        what = "; ".join(f"{x['license_type']}: {x['missing']} missing ("
                         + ", ".join(f"year {k}: {v}" for k, v in x["missing_by_year"].items()) + ")" for x in short)
        kind = "" if term_years is None else f" {term_years}-year"
        raise Conflict("insufficient_units",
                       f"The wallet holds too few{kind} units to license {through} ({what}). Redeem more license "
                       "keys, or renew fewer years ahead; nothing was allocated.",
                       missing=sum(x["missing"] for x in short), years=list(covered), lines=short)
    if not lines:
        return {"allocations": [], "state": st["state"], "years": [], "licensed_years": list(covered),
                "message": f"Nothing to renew: {through} are fully licensed already."
                if len(covered) > 1 else f"Nothing to renew: {through} is fully licensed already."}
    result = allocate(session, org_id=org_id, product_code=product_code, lines=lines, actor=actor, now=now,
                      state_before=st["state"])
    years = sorted({line.year for line in lines})
    result.update(years=years, licensed_years=list(covered),
                  message=f"Renewed: allocated to {'year' if len(years) == 1 else 'years'} "
                          f"{', '.join(str(y) for y in years)}; {through} "
                          f"{'is' if len(covered) == 1 else 'are'} fully licensed.")
    return result


# --- upgrades (R-AX-13) ---------------------------------------------------------------------------

def upgrade(session: Session, *, org_id: int, product_code: str, year: int, units: int, actor: Actor,
            now: datetime) -> dict[str, Any]:
    """Convert allocated one-year units of one license type into another (Core -> Universal),
    using upgrade units from the wallet: the old units go to the ``upgraded`` sink, the upgrade
    units are allocated to the year. Each upgrade unit is used once. An upgrade never leaves the
    product less licensed: it converts only the units of the year beyond the year's need of the
    old type (``rules.upgradable``); a unit of one type licenses devices of that type only."""
    actor.require_licensing(org_id)
    product = product_by_code(session, product_code)
    if not 1 <= units <= MAX_UNITS:
        raise EntitleError("units_invalid", f"Upgrade 1 to {MAX_UNITS:,} units.", units=units)
    history.lock_organization(session, org_id)
    op = _registered(session, org_id, product)
    start = _started(op, product)
    years = rules.allocatable_years(start, now)
    if year not in years:
        raise EntitleError("year_out_of_range", f"Upgrade units of the current year ({years.start}) or up to five "
                           f"years ahead ({years.stop - 1}).", year=year, first=years.start, last=years.stop - 1)
    pool = [lot for lot in expire_lots(session, org_id=org_id, product=product, actor=actor, now=now)
            if lot.sku.grant_kind == "upgrade"]
    if sum(lot.units for lot in pool) < units:
        have = sum(lot.units for lot in pool)
        raise Conflict("insufficient_units", f"The wallet holds {plural(have, 'upgrade unit')}; {units - have:,} missing.",
                       missing=units - have, available=have, needed=units)
    take = _take(pool, units)
    year_need = next(y for y in status(session, org_id=org_id, product=product, now=now)["years"] if y["index"] == year)
    converted: dict[str, int] = defaultdict(int)
    done = []
    for lot, n in take:
        from_type, to_type = str(lot.sku.grants["from_license_type"]), lot.license_type
        sources = session.execute(
            select(Account).join(Sku, Sku.id == Account.sku_id)
            .where(Account.org_id == org_id, Account.kind == "axis_allocation", Account.ref == f"{product.id}/{year}",
                   Sku.grant_kind == "subscription", Sku.term_years == 1)
            .order_by(Account.id)).scalars().all()
        sources = [a for a in sources if a.sku.grants.get("license_type") == from_type]
        held = {a.id: ledger.balance(session, a.id) for a in sources}
        have_old = sum(held.values())
        if have_old < n:
            raise Conflict("upgrade_nothing_to_convert",
                           f"Year {year} has {plural(have_old, f'one-year {from_type} unit')} allocated; {n:,} needed to "
                           "upgrade.",
                           license_type=from_type, year=year, available=have_old, needed=n)
        converted[from_type] += n
        counts = year_need["license_types"].get(from_type, {"need": 0, "allocated": 0})
        allowed = rules.upgradable(counts["need"], counts["allocated"])
        if converted[from_type] > allowed:
            asked = converted[from_type]
            raise Conflict("upgrade_leaves_need_uncovered",
                           f"Year {year} needs {plural(counts['need'], f'{from_type} license')} and has {counts['allocated']:,} "
                           f"allocated: upgrading {asked} to {to_type} would leave "
                           f"{plural(counts['need'] - (counts['allocated'] - asked), f'{from_type} device')} unlicensed. Upgrade "
                           f"at most {allowed}, or first allocate more {from_type} units to year {year} (a {to_type} "
                           f"unit does not license a {from_type} device).",
                           license_type=from_type, year=year, need=counts["need"], allocated=counts["allocated"],
                           requested=asked, allowed=allowed)
        moves: list[tuple[Account, int]] = [(lot.account, -n)]
        left = n
        for acct in sources:
            k = min(left, held[acct.id])
            if k:
                moves.append((acct, -k))
                moves.append((ledger.account(session, org_id=org_id, kind="upgraded", sku_id=acct.sku_id, now=now), k))
                left -= k
        moves.append((ledger.account(session, org_id=org_id, kind="axis_allocation", sku_id=lot.sku.id,
                                     ref=f"{product.id}/{year}", now=now), n))
        ledger.post(session, org_id=org_id, kind="upgrade", actor=actor, now=now, moves=moves,
                    memo=f"{product.code} year {year}: {from_type} -> {to_type}")
        old_sku = sources[0].sku_id
        session.add_all([
            Allocation(org_id=org_id, product_id=product.id, license_type=to_type, sku_id=lot.sku.id, kind="upgrade",
                       first_year=year, years=1, units=n, allocated_at=now, actor=actor.label),
            Allocation(org_id=org_id, product_id=product.id, license_type=from_type, sku_id=old_sku, kind="upgraded",
                       first_year=year, years=1, units=-n, allocated_at=now, actor=actor.label)])
        history.record(session, org_id=org_id, actor=actor, now=now, action="axis.upgraded",
                       object_type="axis_product", object_id=product.code,
                       after={"year": year, "units": n, "from": from_type, "to": to_type,
                              "part_number": lot.sku.part_number})
        done.append({"year": year, "units": n, "from": from_type, "to": to_type})
    session.flush()
    return {"upgrades": done}


# --- tied to hardware (R-AX-10) -------------------------------------------------------------------

def register_hardware(session: Session, *, org_id: int, product_code: str, serial: str, name: str = "",
                      license_type: str | None = None, preloaded_key: str | None = None, actor: Actor,
                      now: datetime) -> Hardware:
    """Register hardware to the organization for its lifetime. Its preloaded licenses (the key
    that came with it) are activated at once onto the hardware, never into the wallet."""
    actor.require_licensing(org_id)
    product = product_by_code(session, product_code)
    serial = single_line(serial, "hardware serial number", field="serial").strip()
    single_line(name, "hardware name", max_length=200)
    if not 1 <= len(serial) <= 128:
        raise EntitleError("serial_invalid", "A hardware serial number is 1 to 128 characters.")
    if license_type is not None:
        _require_type(product, license_type)
    existing = session.scalars(select(Hardware).where(Hardware.serial == serial)).one_or_none()
    if existing is not None:
        if existing.org_id != org_id:
            raise Conflict("hardware_registered_elsewhere",
                           "This hardware is registered to another organization; a registration cannot move.")
        raise Conflict("hardware_exists", f"Hardware {serial} is already registered here.", serial=serial)
    if license_type is None and preloaded_key is None:
        raise EntitleError("license_type_required",
                           "Give the hardware's license type, or the preloaded-license key that came with it.")
    history.lock_organization(session, org_id)
    _ensure_org_product(session, org_id, product, actor, now)
    hw = Hardware(org_id=org_id, product_id=product.id, serial=serial, name=name.strip()[:200],
                  license_type=license_type or "", preloaded_units=0, registered_at=now)
    session.add(hw)
    session.flush()
    if preloaded_key:
        def into(s: Session, org: Organization, sku: Sku, key: LicenseKey, at: datetime) -> Account:
            if sku.grant_kind != "preloaded" or sku.product_id != product.id:
                raise Conflict("key_not_preloaded",
                               f"This key ({sku.part_number}) is not a preloaded-license key for {product.name}; "
                               "redeem it into the wallet instead.", part_number=sku.part_number)
            sku_type = str(sku.grants.get("license_type", ""))
            if license_type is not None and sku_type != license_type:
                raise Conflict("license_type_mismatch",
                               f"The preloaded key grants {sku_type} licenses, not {license_type}.",
                               license_type=sku_type)
            hw.license_type = sku_type
            return ledger.account(s, org_id=org.id, kind="hardware_license", sku_id=sku.id, ref=f"hw/{hw.id}", now=at)

        result = keys.redeem(session, org_id=org_id, typed_key=preloaded_key, actor=actor, now=now, into=into)
        hw.preloaded_units = int(result["quantity"])
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="axis.hardware.registered",
                   object_type="axis_hardware", object_id=serial,
                   after={"license_type": hw.license_type, "preloaded_units": hw.preloaded_units})
    return hw


def hardware_of(session: Session, org_id: int, *, after_id: int | None = None,
                limit: int | None = None) -> list[Hardware]:
    if after_id is None and limit is None:  # every piece (the product status): built once
        return list(session.scalars(_HARDWARE_OF, {"org_id": org_id}))
    stmt = select(Hardware).where(Hardware.org_id == org_id)
    if after_id is not None:
        stmt = stmt.where(Hardware.id > after_id)
    return list(session.scalars(stmt.order_by(Hardware.id).limit(limit)))


_HARDWARE_OF = select(Hardware).where(Hardware.org_id == bindparam("org_id")).order_by(Hardware.id)


def get_hardware(session: Session, org_id: int, serial: str) -> Hardware:
    hw = session.scalars(select(Hardware).where(Hardware.serial == serial)).one_or_none()
    if hw is None or hw.org_id != org_id:
        raise NotFound("hardware", serial=serial)
    return hw


def hardware_licenses(session: Session, hw: Hardware) -> int:
    ids = session.scalars(select(Account.id).where(Account.org_id == hw.org_id, Account.kind == "hardware_license",
                                                   Account.ref == f"hw/{hw.id}"))
    return sum(ledger.balance(session, i) for i in ids)


def hardware_to_dict(session: Session, hw: Hardware, now: datetime) -> dict[str, Any]:
    licensed = hardware_licenses(session, hw)
    devices = int(session.scalar(select(func.count()).select_from(AxisDevice).where(
        AxisDevice.hardware_id == hw.id, AxisDevice.removed_at.is_(None))) or 0)
    return {"serial": hw.serial, "name": hw.name, "license_type": hw.license_type,
            "preloaded_units": hw.preloaded_units, "licenses": licensed,
            "expansion_units": licensed - hw.preloaded_units, "devices": devices,
            "missing": rules.hardware_missing(devices, licensed),
            "licensed": devices <= licensed, "registered_at": hw.registered_at.isoformat()}


def allocate_to_hardware(session: Session, *, org_id: int, serial: str, units: int, actor: Actor,
                         now: datetime) -> dict[str, Any]:
    """Allocate expansion units from the wallet (oldest first) to one piece of hardware, for
    good: nothing moves them back or elsewhere (R-AX-10)."""
    actor.require_licensing(org_id)
    hw = get_hardware(session, org_id, serial)
    product = session.get(Product, hw.product_id)
    assert product is not None
    if not 1 <= units <= MAX_UNITS:
        raise EntitleError("units_invalid", f"Allocate 1 to {MAX_UNITS:,} units.", units=units)
    history.lock_organization(session, org_id)
    pool = [lot for lot in expire_lots(session, org_id=org_id, product=product, actor=actor, now=now)
            if lot.sku.grant_kind == "expansion" and lot.license_type == hw.license_type]
    have = sum(lot.units for lot in pool)
    if have < units:
        raise Conflict("insufficient_units",
                       f"The wallet holds {plural(have, f'{hw.license_type} expansion unit')}; {units - have:,} missing. "
                       "Redeem an expansion license key first.", missing=units - have, available=have, needed=units)
    take = _take(pool, units)
    moves: list[tuple[Account, int]] = []
    for lot, n in take:
        moves.append((lot.account, -n))
        moves.append((ledger.account(session, org_id=org_id, kind="hardware_license", sku_id=lot.sku.id,
                                     ref=f"hw/{hw.id}", now=now), n))
    ledger.post(session, org_id=org_id, kind="hardware_allocation", actor=actor, now=now, moves=moves,
                memo=f"hardware {hw.serial}")
    history.record(session, org_id=org_id, actor=actor, now=now, action="axis.hardware.expanded",
                   object_type="axis_hardware", object_id=hw.serial,
                   after={"units": units, "licenses": hardware_licenses(session, hw)})
    return hardware_to_dict(session, hw, now)


# --- status: what the overview, licensing tab and CLI show --------------------------------------

def _check_growth(session: Session, org_id: int, product: Product, now: datetime) -> None:
    """R-AX-9: flag (once per subscription year) when the need grows past twice the allocation."""
    op = org_product(session, org_id, product)
    if op is None or op.subscription_start is None:
        return
    # The need now and the current year's allocation only: not the whole status (its lots,
    # hardware and remainders), since devices change often (a system file, an upload).
    year = rules.year_at(op.subscription_start, now).index
    over = _over_growth(need(session, org_id, product.id, now=now), allocated(session, org_id, product.id), year)
    if over and op.growth_flagged_year != year:
        op.growth_flagged_year = year
        events.emit(session, org_id=org_id, type="axis.growth_allowance.exceeded", now=now, product=product.code,
                    year=year, license_types=over)


def _over_growth(need_rows: dict[str, tuple[int, int]], alloc: dict[str, dict[int, int]], year: int
                 ) -> dict[str, dict[str, int]]:
    """R-AX-9: the license types of the subscription year ``year`` whose need now is past the
    growth allowance of the units allocated to it (a type with none allocated is not licensed,
    not over): type -> need, allocated, limit."""
    out = {}
    for t in sorted(set(need_rows) | set(alloc)):
        need_now, units = need_rows.get(t, (0, 0))[0], alloc.get(t, {}).get(year, 0)
        if units > 0 and rules.over_growth_allowance(need_now, units):
            out[t] = {"need": need_now, "allocated": units, "limit": rules.GROWTH_FACTOR * units}
    return out


def status(session: Session, *, org_id: int, product: Product, now: datetime,
           wallet: Sequence[LotView] | None = None, edges: list[datetime] | None = None) -> dict[str, Any]:
    """Everything about one product's licensing at ``now``, right whenever it is read: state,
    the current year and its grace end, need and allocation per year and license type, the
    wallet, growth allowance and buying guidance. ``edges`` gets every moment at which the answer
    can change with no write (``status_changes_at``): the subscription's start, the current year's
    end, its grace end, the trial's end, a lot's five years, a device's added or removed moment
    the clock has not reached."""
    op = org_product(session, org_id, product)
    types = license_types(product)
    start = op.subscription_start if op else None
    current = rules.year_at(start, now) if start else None
    grace_end = rules.grace_end(current, op.registered_at if op else None) if current else None
    lock = min(now, grace_end) if grace_end else now
    need_rows = need(session, org_id, product.id, now=now, at=lock, edges=edges) if op else {}
    alloc = allocated(session, org_id, product.id) if op else {}
    types = sorted(set(types) | set(need_rows) | set(alloc))
    trial_until = op.trial_ends_at if op else None
    per_type = {}
    for t in types:
        need_now, need_lock = need_rows.get(t, (0, 0))
        units = alloc.get(t, {}).get(current.index, 0) if current else 0
        per_type[t] = {
            "need_now": need_now, "need": need_lock, "allocated": units,
            "state": rules.licensing_state(now=now, subscription_start=start, need=need_lock, allocated=units,
                                           trial_until=trial_until, registered_at=op.registered_at if op else None),
        }
    # ``wallet``: the usable lots when the caller has just read them (``expire_lots``).
    if op is None:
        wallet = []
    elif wallet is None:
        wallet = lots(session, org_id, product, now=now)
    hardware = _hardware_need(session, org_id, product, wallet, now) if op else []
    if edges is not None and op is not None:
        edges += [at for at in (start, current.end if current else None, grace_end, op.trial_ends_at) if at is not None]
        edges += [lot.expires_at for lot in wallet]
    state = "not_registered" if op is None else combine_state(
        per_type, now=now, grace_end=grace_end, trial=bool(trial_until and now < trial_until), started=current is not None,
        hardware=hardware)
    years_out = []
    if current is not None:
        assert start is not None
        for index in rules.allocatable_years(start, now):
            period = rules.year(start, index)
            lt = {}
            for t in types:
                need_y = per_type[t]["need"] if index == current.index else per_type[t]["need_now"]
                got = alloc.get(t, {}).get(index, 0)
                lt[t] = {"need": need_y, "allocated": got, "missing": max(0, need_y - got)}
            years_out.append({"index": index, "start": period.start.isoformat(), "end": period.end.isoformat(),
                              "grace_end": (grace_end if index == current.index else period.grace_end).isoformat(),
                              "fully_licensed": all(v["missing"] == 0 for v in lt.values()), "license_types": lt})
    over = _over_growth(need_rows, alloc, current.index) if current is not None else {}
    wallet_by_type: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for lot in wallet:
        wallet_by_type[lot.license_type or "-"][f"{lot.sku.grant_kind}:{lot.sku.term_years or 1}"] += lot.units
    guidance = {}
    if current is not None:
        coming = [y["index"] for y in years_out]
        for t in types:
            guidance[t] = rules.buying_guidance(
                {y["index"]: y["license_types"][t]["need"] for y in years_out},
                {y["index"]: y["license_types"][t]["allocated"] for y in years_out}, _wallet_terms(wallet, t), coming)
    return {
        "product": product.code, "name": product.name, "registered": op is not None,
        "registered_at": op.registered_at.isoformat() if op else None,
        "trial_ends_at": trial_until.isoformat() if trial_until else None,
        "subscription_start": start.isoformat() if start else None,
        "current_year": None if current is None else {
            "index": current.index, "start": current.start.isoformat(), "end": current.end.isoformat(),
            "grace_end": grace_end.isoformat() if grace_end else None},
        "state": state, "license_types": per_type, "years": years_out,
        "wallet": {"lots": [lot.to_dict() for lot in wallet],
                   "units": {t: dict(v) for t, v in wallet_by_type.items()},
                   "remainder_license_days": _remainders(session, org_id, product) if op else {}},
        "growth": {"over": bool(over), "license_types": over},
        "buying_guidance": {t: {str(k): v for k, v in g.items()} for t, g in guidance.items()},
        # R-AX-10: devices on hardware beyond its licenses need expansion licenses on it.
        "hardware": hardware,
    }


def status_changes_at(edges: Iterable[datetime], now: datetime) -> datetime | None:
    """The first of ``status``'s ``edges`` after ``now`` (None: no time rule changes it)."""
    return min((at for at in edges if at > now), default=None)


def _wallet_terms(wallet: Iterable[LotView], license_type: str, term_years: int | None = None) -> dict[int, int]:
    """The wallet's subscription units of one license type: term in years -> units."""
    out: dict[int, int] = defaultdict(int)
    for lot in wallet:
        term = lot.sku.term_years or 1
        if lot.sku.grant_kind == "subscription" and lot.license_type == license_type and term_years in (None, term):
            out[term] += lot.units
    return dict(out)


def _hardware_need(session: Session, org_id: int, product: Product, wallet: Sequence[LotView],
                   now: datetime) -> list[dict[str, Any]]:
    """R-AX-10, R-AX-12: each piece of the product's hardware with its devices and licenses; the
    devices beyond its licenses are its need for expansion licenses, met first by the wallet's
    expansion units of its type (hardware in registration order), the rest to buy."""
    rows = [hardware_to_dict(session, hw, now) for hw in hardware_of(session, org_id) if hw.product_id == product.id]
    in_wallet: dict[str, int] = defaultdict(int)
    for lot in wallet:
        if lot.sku.grant_kind == "expansion":
            in_wallet[lot.license_type] += lot.units
    for row in rows:
        from_wallet, to_buy = rules.expansion_guidance(row["missing"], in_wallet[row["license_type"]])
        in_wallet[row["license_type"]] -= from_wallet
        row.update(from_wallet=from_wallet, to_buy=to_buy)
    return rows


def combine_state(per_type: dict[str, dict[str, Any]], *, now: datetime, grace_end: datetime | None, trial: bool,
                  started: bool, hardware: Sequence[dict[str, Any]] = ()) -> str:
    """One state for the product from its license types' (R-AX-5, R-AX-6, R-AX-13): fully
    licensed when every type's allocation covers its need; else in grace, a trial, partially
    licensed (some needed type has units allocated) or not licensed. Devices on hardware beyond
    its licenses (R-AX-10) keep a product that would be fully licensed from being so: partially
    licensed when some device is licensed, else not licensed (hardware licenses have no grace)."""
    if all(v["allocated"] >= v["need"] for v in per_type.values()) and (started or not trial):
        state = "fully_licensed" if started or all(v["need"] == 0 for v in per_type.values()) else "not_licensed"
        if state == "fully_licensed" and any(h["missing"] for h in hardware):
            some = (any(v["need"] and v["allocated"] for v in per_type.values())
                    or any(min(h["devices"], h["licenses"]) for h in hardware))
            return "partially_licensed" if some else "not_licensed"
        return state
    if not started:
        return "trial" if trial else "not_licensed"
    if grace_end is not None and now < grace_end:
        return "in_grace"
    if any(v["allocated"] > 0 for v in per_type.values() if v["need"] > 0):
        return "partially_licensed"
    return "not_licensed"


def products(session: Session, *, org_id: int, now: datetime, after_id: int | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
    """The product list: every AXIS product registered to the organization, with its state, by
    name; with ``after_id`` or ``limit``, a page of them by product id instead (the API's keyset:
    each line then carries the product's ``id``, its cursor)."""
    stmt = (select(OrgProduct, Product).join(Product, Product.id == OrgProduct.product_id)
            .where(OrgProduct.org_id == org_id))
    paged = after_id is not None or limit is not None
    if after_id is not None:
        stmt = stmt.where(Product.id > after_id)
    rows = session.execute(stmt.order_by(Product.id).limit(limit) if paged else stmt.order_by(Product.name)).all()
    out = []
    for _op, product in rows:
        st = status(session, org_id=org_id, product=product, now=now)
        systems = int(session.scalar(select(func.count()).select_from(System).where(
            System.org_id == org_id, System.product == product.code)) or 0)
        out.append({"id": product.id, "product": product.code, "name": product.name, "state": st["state"],
                    "systems": systems,
                    "subscription_start": st["subscription_start"], "current_year": st["current_year"],
                    "trial_ends_at": st["trial_ends_at"]})
    return out


def allocations_of(session: Session, org_id: int, product: Product, *, after_id: int | None = None,
                   limit: int | None = None) -> list[dict[str, Any]]:
    """The product's allocations, oldest first; a page of them with ``after_id`` and ``limit``."""
    stmt = (select(Allocation, Sku.part_number).join(Sku, Sku.id == Allocation.sku_id)
            .where(Allocation.org_id == org_id, Allocation.product_id == product.id))
    if after_id is not None:
        stmt = stmt.where(Allocation.id > after_id)
    rows = session.execute(stmt.order_by(Allocation.id).limit(limit)).all()
    return [{"id": a.id, "kind": a.kind, "license_type": a.license_type, "part_number": part, "year": a.first_year,
             "years": a.years, "units": a.units, "compensation_license_days": a.compensation_days,
             "compensation_units": a.compensation_units, "allocated_at": a.allocated_at.isoformat(), "actor": a.actor}
            for a, part in rows]


def licensed_payload(session: Session, system: System, now: datetime, *, limit: datetime) -> dict[str, Any]:
    """What an offline system's license file states (R-AX-11): the subscription years it is
    licensed for and the counts allocated per license type, its state with the end of the grace
    period or trial it grants, and ``valid_until``: the next moment the state can change without a
    new upload, at most ``limit`` (R-AX-3, R-AX-6, R-AX-13). The file expires then, so an offline
    system cannot run past a grace period, a trial or its last licensed year on an old file."""
    product = session.scalars(select(Product).where(Product.code == system.product)).one_or_none()
    if product is None or product.model != MODEL:
        return {}
    st = status(session, org_id=system.org_id, product=product, now=now)
    state, current = st["state"], st["current_year"]
    grace_end = current["grace_end"] if current and state == "in_grace" else None
    trial_end = st["trial_ends_at"] if state == "trial" else None
    licensed_until = None
    if state == "fully_licensed" and current is not None:
        licensed_until = current["end"]  # then the following years, as long as each is fully licensed
        for y in st["years"]:
            if y["index"] > current["index"] and y["start"] == licensed_until and y["fully_licensed"]:
                licensed_until = y["end"]
    changes = [(grace_end, "grace_end"), (trial_end, "trial_end"), (licensed_until, "licensed_until")]
    if current is not None and state in ("partially_licensed", "not_licensed"):
        changes.append((current["end"], "year_end"))  # a new year starts with its own grace period
    if current is None and st["subscription_start"] is not None:
        changes.append((st["subscription_start"], "subscription_start"))
    until, reason = limit, "refresh"
    for at, why in changes:
        if at is not None and datetime.fromisoformat(at) < until:
            until, reason = datetime.fromisoformat(at), why
    return {"state": state, "subscription_start": st["subscription_start"],
            "grace_end": grace_end, "trial_end": trial_end, "licensed_until": licensed_until,
            "valid_until": until.isoformat(), "valid_until_reason": reason,
            "years": [{"index": y["index"], "start": y["start"], "end": y["end"],
                       "allocated": {t: v["allocated"] for t, v in y["license_types"].items()}}
                      for y in st["years"] if any(v["allocated"] for v in y["license_types"].values())]}
