"""Access Commander licensing on the server (SPEC §2, R-AC-1 … R-AC-8).

Every decision is made by ``entitle_device.access_commander`` (the same code an installation runs
offline); this module loads what the rules read, stores what they return, moves units in the
ledger and writes history, inside the caller's transaction.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from entitle_device import access_commander as rules
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session

from entitle.access_commander import calculator
from entitle.access_commander.calculator import error_of as _error
from entitle.access_commander.models import (
    DEVICE_TYPES,
    AcLicense,
    AttendanceUser,
    Device,
    Installation,
    SystemUser,
)
from entitle.actors import Actor
from entitle.catalog.models import Product, Sku
from entitle.db import is_postgres
from entitle.errors import Conflict, EntitleError, NotFound
from entitle.history import services as history
from entitle.ledger import services as ledger
from entitle.platform import events
from entitle.signing import services as signing
from entitle.text import plural, single_line

MODEL = "access_commander"
TOKEN_PREFIX = "eac_"
_US = timedelta(microseconds=1)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


# --- installations ------------------------------------------------------------------------------

def create_installation(session: Session, *, org_id: int, name: str, actor: Actor, now: datetime,
                        uid: str | None = None, heartbeat_timeout_seconds: int = 300) -> tuple[Installation, str]:
    """Register an installation; returns it and its device-report token (shown once)."""
    actor.require_licensing(org_id)
    name = single_line(name, "installation name").strip()
    if not 1 <= len(name) <= 200:
        raise EntitleError("name_invalid", "Give the installation a name of 1 to 200 characters.")
    if not 30 <= heartbeat_timeout_seconds <= 86400:
        raise EntitleError("heartbeat_timeout_invalid",
                           "The heartbeat timeout is between 30 seconds and 1 day.",
                           heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    uid = single_line(uid or f"AC-{secrets.token_hex(6).upper()}", "installation id", field="uid").strip()
    if not 1 <= len(uid) <= 128:
        raise EntitleError("uid_invalid", "An installation id is 1 to 128 characters.")
    if session.scalar(select(Installation.id).where(Installation.uid == uid)) is not None:
        raise Conflict("installation_exists", f"An installation with id {uid} is already registered.", uid=uid)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    inst = Installation(org_id=org_id, uid=uid, name=name, token_hash=token_digest(token),
                        heartbeat_timeout_seconds=heartbeat_timeout_seconds, created_at=now)
    session.add(inst)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="ac.installation.created",
                   object_type="ac_installation", object_id=inst.uid, after={"name": name})
    return inst, token


def installations_of(session: Session, org_id: int, *, after_id: int | None = None,
                     limit: int | None = None) -> list[Installation]:
    stmt = select(Installation).where(Installation.org_id == org_id)
    if after_id is not None:
        stmt = stmt.where(Installation.id > after_id)
    return list(session.scalars(stmt.order_by(Installation.id).limit(limit)))


def get_installation(session: Session, org_id: int, installation_id: int) -> Installation:
    inst = session.get(Installation, installation_id)
    if inst is None or inst.org_id != org_id:
        raise NotFound("installation", installation_id=installation_id)
    return inst


def installation_for_token(session: Session, token: str) -> Installation | None:
    return session.scalars(select(Installation).where(Installation.token_hash == token_digest(token))).one_or_none()


def timeout_of(inst: Installation) -> timedelta:
    return timedelta(seconds=inst.heartbeat_timeout_seconds)


# --- devices and their connection ---------------------------------------------------------------

def add_device(session: Session, *, installation: Installation, serial: str, type: str, actor: Actor,
               now: datetime, name: str = "") -> Device:
    actor.require_licensing(installation.org_id)
    serial = single_line(serial, "device serial number", field="serial").strip()
    single_line(name, "device name", max_length=200)
    if not 1 <= len(serial) <= 64:
        raise EntitleError("serial_invalid", "A serial number is 1 to 64 characters.")
    if type not in DEVICE_TYPES:
        raise EntitleError("device_type_invalid", f"The device type is one of: {', '.join(DEVICE_TYPES)}.",
                           type=type, allowed=list(DEVICE_TYPES))
    if _device(session, installation, serial) is not None:
        raise Conflict("device_exists", f"Device {serial} is already in this installation.", serial=serial)
    device = Device(org_id=installation.org_id, installation_id=installation.id, serial=serial, type=type,
                    name=name[:200], active=False, created_at=now)
    session.add(device)
    session.flush()
    history.record(session, org_id=installation.org_id, actor=actor, now=now, action="ac.device.added",
                   object_type="ac_device", object_id=serial, after={"type": type, "installation": installation.uid})
    return device


def _device(session: Session, installation: Installation, serial: str) -> Device | None:
    return session.scalars(select(Device).where(Device.installation_id == installation.id,
                                                Device.serial == serial)).one_or_none()


def device(session: Session, installation: Installation, serial: str) -> Device:
    found = _device(session, installation, serial)
    if found is None:
        raise NotFound("device", serial=serial)
    return found


def devices_of(session: Session, installation: Installation) -> list[Device]:
    return list(session.scalars(select(Device).where(Device.installation_id == installation.id).order_by(Device.serial)))


def device_connected(dev: Device, now: datetime, timeout: timedelta) -> bool:
    return dev.connected_since is not None and dev.last_seen is not None and now - dev.last_seen <= timeout


def report_state(session: Session, *, installation: Installation, serial: str, connected: bool,
                 now: datetime) -> Device:
    """A device (or the installation for it) reports connect or disconnect (R-AC-4, R-AC-5)."""
    dev = device(session, installation, serial)
    if connected:
        seen(session, installation, {serial: (now, now)})
    else:
        # The license row before the device row, the order every writer keeps (no deadlock).
        lic = current_license(session, installation, lock=True)
        if dev.connected_since is not None:
            dev.connected_since = None
        if lic is not None and lic.license_device == serial:
            _store(lic, rules.on_disconnect(record_of(lic), now))
            events.emit(session, org_id=installation.org_id, type="ac.license_device.disconnected", now=now,
                        installation=installation.uid, serial=serial)
    session.flush()
    return dev


def seen(session: Session, installation: Installation, evidence: Mapping[str, tuple[datetime, datetime]]) -> int:
    """Apply heartbeats: serial -> (first, last) moment heard in the batch. Unknown serials are
    ignored; returns how many devices were updated. Connected time only ever extends to the last
    evidence (never over-counted), and nothing moves backwards: evidence not later than what is
    stored changes nothing, so batches from several server processes may arrive in any order.

    A batch of thousands of heartbeats (``access_commander.heartbeat``) costs a few statements:
    the devices are written by one driver-level statement (an ``executemany`` on SQLite, one
    UPDATE over arrays on PostgreSQL) that applies the rule below in SQL, without reading them
    first. On PostgreSQL the installation row is locked first (``FOR NO KEY UPDATE``): two
    writers of one installation's heartbeats queue instead of undoing each other or locking its
    devices in different orders; SQLite has one writer.
    """
    if not evidence:
        return 0
    timeout = timeout_of(installation)
    postgres = is_postgres(session)
    # Per device (first, last), normalized: a "first" after "last" is the only evidence; when
    # first and last are further apart than the timeout, the connection restarts at "last"
    # whatever was stored, exactly as if "last" were the only evidence.
    heard = {serial: (first if first <= last and last - first <= timeout else max(first, last), max(first, last))
             for serial, (first, last) in evidence.items()}
    lic = _license_heard(session, installation, heard, lock=postgres)
    if lic is not None:
        rec = record_of(lic)
        first, last = evidence[lic.license_device]
        for at in (first, last):
            rec = rules.on_seen(rec, at, timeout)
        _store(lic, rec)
    _expire_devices(session, installation.id, heard)
    conn = session.connection()
    if postgres:
        serials = list(heard)
        result = conn.exec_driver_sql(_SEEN_POSTGRES, {
            "installation": installation.id, "serials": serials, "timeout": timeout,
            "firsts": [heard[s][0] for s in serials], "lasts": [heard[s][1] for s in serials]})
    else:
        result = conn.exec_driver_sql(_SEEN_SQLITE, [
            (_sqlite_time(first), _sqlite_time(last), _sqlite_time(first - timeout), _sqlite_time(last - timeout),
             installation.id, serial) for serial, (first, last) in heard.items()])
    session.flush()
    return max(0, result.rowcount)


# The device rule (``_device_seen``) in SQL, for first <= last <= first + timeout. Stored
# (since, last_seen); evidence older than last_seen is ignored:
# - never seen                       -> since = first
# - last_seen <= first               -> since = first after a gap longer than the timeout (or an
#                                       explicit disconnect, since NULL), else unchanged
# - first < last_seen <= last        -> the same test for "last"
# - last < last_seen                 -> nothing (the WHERE clause)
# and last_seen = last. SQLite stores times as text in one format (``_sqlite_time``), which
# compares like time; the "- timeout" bounds come from Python. PostgreSQL gets the evidence as
# three arrays in binary (``%(…)b``: no text quoting of thousands of elements in Python).
_SEEN_SQLITE = """
UPDATE ac_devices SET
  connected_since = CASE
    WHEN last_seen IS NULL THEN ?1
    WHEN last_seen <= ?1 THEN CASE WHEN connected_since IS NULL OR last_seen < ?3 THEN ?1 ELSE connected_since END
    ELSE CASE WHEN connected_since IS NULL OR last_seen < ?4 THEN ?2 ELSE connected_since END
  END,
  last_seen = ?2
WHERE installation_id = ?5 AND serial = ?6 AND (last_seen IS NULL OR last_seen <= ?2)
"""
_SEEN_POSTGRES = """
UPDATE ac_devices AS d SET
  connected_since = CASE
    WHEN d.last_seen IS NULL THEN v.first
    WHEN d.last_seen <= v.first THEN
      CASE WHEN d.connected_since IS NULL OR d.last_seen < v.first - %(timeout)s::interval THEN v.first
           ELSE d.connected_since END
    ELSE CASE WHEN d.connected_since IS NULL OR d.last_seen < v.last - %(timeout)s::interval THEN v.last
              ELSE d.connected_since END
  END,
  last_seen = v.last
FROM unnest(%(serials)b::text[], %(firsts)b::timestamptz[], %(lasts)b::timestamptz[]) AS v(serial, first, last)
WHERE d.installation_id = %(installation)s AND d.serial = v.serial AND (d.last_seen IS NULL OR d.last_seen <= v.last)
"""


def _sqlite_time(t: datetime) -> str:
    """A time as SQLAlchemy stores it in SQLite (``UTCDateTime``): UTC without the offset,
    always with microseconds ("2026-01-15 09:00:00.000000")."""
    if t.tzinfo is not UTC:
        t = t.astimezone(UTC)
    return t.isoformat(" ", "microseconds")[:26]


def _device_seen(since: datetime | None, last_seen: datetime | None, heard: tuple[datetime, datetime],
                 timeout: timedelta) -> tuple[datetime | None, datetime | None]:
    """A device's (connected_since, last_seen) after being heard at ``heard`` (first, last), the
    rule ``seen`` applies in SQL: evidence older than the last is ignored; after a gap longer
    than the timeout, or an explicit disconnect, the connection starts again."""
    for at in heard:
        if last_seen is not None and at < last_seen:
            continue
        if since is None or last_seen is None or at - last_seen > timeout:
            since = at
        last_seen = at
    return since, last_seen


def _license_heard(session: Session, installation: Installation, heard: Mapping[str, Any], *,
                   lock: bool) -> AcLicense | None:
    """The current license, locked, when its license device is among those heard. With ``lock``
    (PostgreSQL) the installation row is locked too, whatever is heard: that lock serializes
    the writers of one installation's heartbeats (``FOR NO KEY UPDATE``: devices can still be
    added meanwhile)."""
    stmt = (select(AcLicense.license_device).select_from(Installation)
            .outerjoin(AcLicense, and_(AcLicense.installation_id == Installation.id, AcLicense.replaced_at.is_(None)))
            .where(Installation.id == installation.id))
    if lock:
        stmt = stmt.with_for_update(of=Installation, key_share=True)
    device = session.scalar(stmt)
    if device is None or device not in heard:
        return None
    lic = current_license(session, installation, lock=lock)  # replaced meanwhile? then read again
    return lic if lic is not None and lic.license_device in heard else None


def _expire_devices(session: Session, installation_id: int, serials: Mapping[str, Any]) -> None:
    """Devices this session holds are read again after the UPDATE that bypasses the ORM."""
    for obj in list(session.identity_map.values()):
        if isinstance(obj, Device) and obj.installation_id == installation_id and obj.serial in serials:
            session.expire(obj, ["connected_since", "last_seen"])


# --- licenses -----------------------------------------------------------------------------------

def current_license(session: Session, installation: Installation, *, lock: bool = False) -> AcLicense | None:
    """The installation's current license; ``lock``: for a change, locking the organization
    first and then the license row. Every writer takes the organization before the rows it
    changes (a redeem: organization, then wallet account), so that a license generated beside a
    redeem of the same organization cannot deadlock on PostgreSQL (license, account, organization
    against organization, account)."""
    stmt = select(AcLicense).where(AcLicense.installation_id == installation.id, AcLicense.replaced_at.is_(None))
    if lock and is_postgres(session):
        history.lock_organization(session, installation.org_id)
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def licenses_of(session: Session, installation: Installation, *, before_id: int | None = None,
                limit: int | None = None) -> list[AcLicense]:
    """Every license the installation had, newest first; a page of them with ``before_id`` and ``limit``."""
    stmt = select(AcLicense).where(AcLicense.installation_id == installation.id)
    if before_id is not None:
        stmt = stmt.where(AcLicense.id < before_id)
    return list(session.scalars(stmt.order_by(AcLicense.id.desc()).limit(limit)))


def license_by_id(session: Session, installation: Installation, license_id: int) -> AcLicense:
    lic = session.get(AcLicense, license_id)
    if lic is None or lic.installation_id != installation.id:
        raise NotFound("license", license_id=license_id)
    return lic


def record_of(lic: AcLicense) -> rules.ConnectionRecord:
    return rules.ConnectionRecord(license_added_at=lic.added_at, accumulated=lic.rec_accumulated_us * _US,
                                  connected_since=lic.rec_connected_since, last_seen=lic.rec_last_seen,
                                  suspended_at=lic.rec_suspended_at)


def _store(lic: AcLicense, rec: rules.ConnectionRecord) -> None:
    lic.rec_accumulated_us = rec.accumulated // _US
    lic.rec_connected_since, lic.rec_last_seen, lic.rec_suspended_at = rec.connected_since, rec.last_seen, rec.suspended_at


def status_of(lic: AcLicense | None, installation: Installation, now: datetime) -> rules.LicenseStatus:
    return rules.license_state(record_of(lic) if lic else None, now, timeout_of(installation))


def capacity_of(lic: AcLicense | None, status: rules.LicenseStatus) -> rules.Capacity:
    if lic is None:
        return rules.TRIAL
    return rules.capacity_in_state(rules.Capacity.from_dict(lic.capacity), status)


def ac_skus(session: Session) -> list[Sku]:
    return list(session.scalars(select(Sku).join(Product).where(Product.model == MODEL).order_by(Sku.part_number)))


def sku_index(skus: Iterable[Sku]) -> dict[str, Sku]:
    """Access Commander SKUs by every part number they are sold under: 2N's and Axis's
    (``alt_part_numbers``: 91379040 is also Axis 01372-001)."""
    index: dict[str, Sku] = {}
    for sku in skus:
        for alt in sku.alt_part_numbers or []:
            index.setdefault(alt, sku)
    index.update({sku.part_number: sku for sku in skus})
    return index


def _requested(skus: Mapping[str, Sku], packages: Iterable[tuple[str, int]]) -> dict[int, tuple[Sku, int]]:
    """The packages asked for, by SKU (either of a package's part numbers names it)."""
    wanted: dict[int, tuple[Sku, int]] = {}
    for part_number, quantity in packages:
        sku = skus.get(part_number.strip())
        if sku is None:
            raise EntitleError("sku_not_access_commander",
                               f"{part_number} is not an Access Commander package or tier in the catalog.",
                               part_number=part_number, available=sorted(skus))
        if quantity < 1:
            raise EntitleError("quantity_invalid", "Each package's quantity is at least 1.",
                               part_number=part_number, quantity=quantity)
        prev = wanted.get(sku.id, (sku, 0))[1]
        wanted[sku.id] = (sku, prev + quantity)
    return wanted


def _package_line(sku: Sku, quantity: int) -> dict[str, Any]:
    return {"part_number": sku.part_number, "alt_part_numbers": list(sku.alt_part_numbers or []),
            "quantity": quantity}


def default_packages(session: Session, installation: Installation, current: AcLicense | None,
                     skus: Mapping[str, Sku]) -> list[tuple[str, int]]:
    """What a license holds when no packages are asked for: the current license's packages plus
    what the calculator adds so that the installation's registered devices and monitored
    Attendance users are covered, no more. Taking more needs the packages named."""
    held = {p["part_number"]: int(p["quantity"]) for p in (current.packages if current else [])}
    catalog = [(sku.part_number, sku.grants) for sku in {s.id: s for s in skus.values()}.values()]
    try:
        added = rules.packages_for(len(devices_of(session, installation)), monitored_count(session, installation),
                                   False, catalog, held=[(skus[p].grants, q) for p, q in held.items()])
    except rules.AccessCommanderError as exc:
        raise _error(exc) from None
    for part, quantity in added:
        held[part] = held.get(part, 0) + quantity
    return sorted(held.items())


def plan_license(session: Session, *, installation: Installation, packages: list[tuple[str, int]] | None,
                 now: datetime, current: AcLicense | None = None) -> dict[str, Any]:
    """What generating a license with ``packages`` (None: the default) would do, changing
    nothing: the packages and capacity, the units that go back to the wallet from the current
    license and come out of it for the new one, the wallet before and after, and the devices
    that become inactive until activated again (R-AC-7). Refusals as ``generate_license``'s."""
    current = current if current is not None else current_license(session, installation)
    skus = sku_index(ac_skus(session))
    default = packages is None
    chosen = default_packages(session, installation, current, skus) if packages is None else packages
    wanted = _requested(skus, chosen)
    if not wanted:
        if default:
            raise EntitleError(
                "license_packages_empty",
                f"The installation's {plural(len(devices_of(session, installation)), 'registered device')} and "
                f"{plural(monitored_count(session, installation), 'monitored Attendance user')} are within the "
                "trial, so the default license would hold nothing. Name the packages to take from the wallet.",
                devices=len(devices_of(session, installation)),
                monitored_attendance_users=monitored_count(session, installation))
        raise EntitleError("license_packages_empty",
                           "A license needs at least one package or tier; redeem a key into the wallet first.")
    lines = sorted(wanted.values(), key=lambda v: v[0].part_number)
    try:
        capacity = rules.capacity_from_grants((sku.grants, qty) for sku, qty in lines)
    except ValueError as exc:
        raise EntitleError("license_packages_invalid", f"These packages do not make one license: {exc}.") from None
    wallet = {line.sku_id: max(line.units, 0) for line in ledger.wallet(session, installation.org_id, now=now)}
    by_id = {sku.id: sku for sku in skus.values()}
    back = {skus[p["part_number"]].id: int(p["quantity"]) for p in (current.packages if current else [])
            if p["part_number"] in skus}
    out = {sku.id: qty for sku, qty in lines}
    moves = []
    for sku_id in sorted(set(back) | set(out), key=lambda i: by_id[i].part_number):
        before = wallet.get(sku_id, 0)
        moves.append({**_package_line(by_id[sku_id], out.get(sku_id, 0)),
                      "back_to_wallet": back.get(sku_id, 0), "from_wallet": out.get(sku_id, 0),
                      "wallet_before": before, "wallet_after": before + back.get(sku_id, 0) - out.get(sku_id, 0)})
    for move in moves:
        del move["quantity"]
    return {"default": default,
            "need": {"devices": len(devices_of(session, installation)),
                     "monitored_attendance_users": monitored_count(session, installation)},
            "packages": [_package_line(sku, qty) for sku, qty in lines],
            "capacity": capacity.as_dict(), "moves": moves,
            "devices_made_inactive": [d.serial for d in devices_of(session, installation) if d.active]}


def check_license_device(session: Session, installation: Installation, serial: str, now: datetime) -> Device:
    """A license is generated for a connected device of the installation (R-AC-4)."""
    dev = _device(session, installation, serial)
    if dev is None:
        raise NotFound("device", serial=serial)
    if not device_connected(dev, now, timeout_of(installation)):
        raise Conflict("license_device_not_connected",
                       f"Device {serial} is not connected. A license is generated for a connected "
                       "device of the installation (its hardware key): connect it, or choose another.",
                       serial=serial)
    return dev


@dataclass(frozen=True)
class Generated:
    license: AcLicense
    file: str  # the signed license file
    plan: dict[str, Any]  # what it moved: ``plan_license``'s answer, read under the license's lock


def generate_license(session: Session, *, installation: Installation, license_device: str,
                     packages: list[tuple[str, int]] | None, actor: Actor, now: datetime,
                     secret: bytes) -> Generated:
    """Sign a license for ``license_device`` (one of the installation's connected devices,
    R-AC-4) and add it, replacing the current license whole (R-AC-3).

    Units: the replaced license's units go back to the wallet and the new license's come out of
    it, in one ledger transaction, so a license can carry the old one's packages over. With
    ``packages`` None the license holds what the installation needs now (``default_packages``);
    ``plan_license`` tells beforehand what moves, and the answer says what did."""
    org_id = installation.org_id
    actor.require_licensing(org_id)
    check_license_device(session, installation, license_device, now)
    old = current_license(session, installation, lock=True)
    plan = plan_license(session, installation=installation, packages=packages, now=now, current=old)
    skus = sku_index(ac_skus(session))
    wanted = [(skus[p["part_number"]], int(p["quantity"])) for p in plan["packages"]]
    payload = rules.license_payload(organization=str(org_id), installation=installation.uid,
                                    license_device=license_device,
                                    packages=[(sku.part_number, sku.grants, qty) for sku, qty in wanted])
    lic = _new_license(session, installation=installation, license_device=license_device, old=old,
                       packages=wanted, capacity=payload["capacity"], actor=actor, now=now)
    text, kid = signing.sign(session, secret=secret, now=now, subject=[installation.uid, license_device],
                             payload=payload, expires=None)
    lic.file, lic.kid, lic.file_sha256 = text, kid, hashlib.sha256(text.encode()).hexdigest()
    # The device is connected now (checked above): that is the record's first evidence, and the
    # device's too -- one piece of evidence in both places, so that the license and the device
    # list never disagree about whether the license device is connected (issue 16 point 6).
    _store(lic, rules.on_seen(rules.ConnectionRecord(license_added_at=now), now, timeout_of(installation)))
    session.flush()
    seen(session, installation, {license_device: (now, now)})
    _license_added(session, installation=installation, lic=lic, old=old, inactive=plan["devices_made_inactive"],
                   actor=actor, now=now, how="generated")
    return Generated(lic, text, plan)


def _new_license(session: Session, *, installation: Installation, license_device: str, old: AcLicense | None,
                 packages: list[tuple[Sku, int]], capacity: dict[str, Any], actor: Actor,
                 now: datetime) -> AcLicense:
    """The new current license row (file not set yet), the ledger transaction that moves the
    replaced license's units back to the wallet and the new one's out of it, and every device
    made inactive: after a new license the license device is activated first, then the others
    again, within its capacity (R-AC-7; not so after a recovery, which is the same license)."""
    org_id = installation.org_id
    lic = AcLicense(org_id=org_id, installation_id=installation.id, license_device=license_device,
                    packages=[_package_line(sku, qty) for sku, qty in packages],
                    capacity=capacity, added_at=now, added_by=actor.label, kid="", file_sha256="", file="")
    if old is not None:
        old.replaced_at = now
        session.flush()  # frees the "one current license" slot
    session.add(lic)
    session.flush()
    skus = sku_index(ac_skus(session))
    moves: list[tuple[Any, int]] = []
    if old is not None:
        for p in old.packages:
            sku = skus[p["part_number"]]
            moves += [(ledger.account(session, org_id=org_id, kind="ac_license", sku_id=sku.id, ref=str(old.id), now=now), -p["quantity"]),
                      (ledger.account(session, org_id=org_id, kind="wallet", sku_id=sku.id, now=now), p["quantity"])]
    for sku, qty in packages:
        moves += [(ledger.account(session, org_id=org_id, kind="wallet", sku_id=sku.id, now=now), -qty),
                  (ledger.account(session, org_id=org_id, kind="ac_license", sku_id=sku.id, ref=str(lic.id), now=now), qty)]
    ledger.post(session, org_id=org_id, kind="ac_license", actor=actor, now=now, moves=moves,
                memo=f"license {lic.id} for {installation.uid}" + (f", replacing {old.id}" if old else ""))
    for dev in devices_of(session, installation):
        dev.active = False
    return lic


def _license_added(session: Session, *, installation: Installation, lic: AcLicense, old: AcLicense | None,
                   inactive: list[str], actor: Actor, now: datetime, how: str) -> None:
    history.record(session, org_id=installation.org_id, actor=actor, now=now, action="ac.license.added",
                   object_type="ac_installation", object_id=installation.uid,
                   before=({"license": old.id, "license_device": old.license_device, "capacity": old.capacity,
                            "active_devices": inactive} if old else {"active_devices": inactive}),
                   after={"license": lic.id, "license_device": lic.license_device, "capacity": lic.capacity,
                          "packages": lic.packages, "added": how, "active_devices": []})
    events.emit(session, org_id=installation.org_id, type="ac.license.added", now=now, installation=installation.uid,
                license=lic.id, license_device=lic.license_device)


def _verified(session: Session, installation: Installation, text: str, now: datetime) -> Any:
    """The verified license of ``text`` for this installation, and its terms; the file's own
    refusals (``license_bad_signature``, ``license_not_for_this_system``, …) otherwise."""
    from entitle_device import LicenseError, verify

    try:
        license = verify(text, signing.keyring(session), now, installation.uid)
        return license, rules.LicenseTerms.from_license(license)
    except rules.AccessCommanderError as exc:
        raise _error(exc) from None
    except LicenseError as exc:
        raise EntitleError(f"license_{exc.code}", str(exc)) from None


def _replaced_refusal(lic: AcLicense) -> Conflict:
    return Conflict("license_replaced",
                    f"This license was replaced on {lic.replaced_at.isoformat() if lic.replaced_at else '?'} by "
                    "a newer one; licenses never add up. Add the current license file, or generate a new "
                    "license if you need different capacities.",
                    replaced_at=_iso(lic.replaced_at))


def _license_of_file(session: Session, installation: Installation, digest: str) -> AcLicense | None:
    """The installation's license whose file this is: the current one if it is, else the newest
    (two licenses signed in the same second with the same packages have the same file)."""
    found = list(session.scalars(select(AcLicense).where(AcLicense.installation_id == installation.id,
                                                         AcLicense.file_sha256 == digest)
                                 .order_by(AcLicense.id.desc())))
    return next((lic for lic in found if lic.replaced_at is None), found[0] if found else None)


def check_license_file(session: Session, *, installation: Installation, text: str, actor: Actor,
                       now: datetime) -> AcLicense:
    """Check a file (signature against the key ring, this installation, the Access Commander
    model) and tell which of the installation's licenses it is, changing nothing. A replaced
    one is refused (its units went back to the wallet)."""
    actor.require_licensing(installation.org_id)
    _verified(session, installation, text, now)
    lic = _license_of_file(session, installation, hashlib.sha256(text.encode()).hexdigest())
    if lic is None:
        raise NotFound("license", installation=installation.uid)
    if lic.replaced_at is not None:
        raise _replaced_refusal(lic)
    return lic


def add_license_file(session: Session, *, installation: Installation, text: str, actor: Actor,
                     now: datetime) -> tuple[AcLicense, bool]:
    """The source's "License Adding": read a license file and make it the current license.

    The file must verify against the key ring, be for this installation (its subject) and for
    one of its devices (``license_device_unknown``), and be newer than the current license
    (``license_replaced`` for one of its earlier licenses, ``license_older`` for a file issued
    no later than the current one). The current license's own file changes nothing (returns it
    and False). Otherwise the file replaces the current license whole (R-AC-3), with history: its
    packages' units come out of the wallet as for a generated license (``insufficient_units``
    when they are not there), and every device is inactive until the license device is
    activated (R-AC-7). Returns the license and True."""
    actor.require_licensing(installation.org_id)
    license, terms = _verified(session, installation, text, now)
    digest = hashlib.sha256(text.encode()).hexdigest()
    known = _license_of_file(session, installation, digest)
    if known is not None:
        if known.replaced_at is not None:
            raise _replaced_refusal(known)
        return known, False
    dev = _device(session, installation, terms.license_device)
    if dev is None:
        raise EntitleError("license_device_unknown",
                           f"The license was generated for the device {terms.license_device}, which is not a "
                           "device of this installation. Add that device first, or add a license generated "
                           "for one of its devices.", status=409, license_device=terms.license_device)
    old = current_license(session, installation, lock=True)
    if old is not None:
        from entitle_device import read_unverified

        current_issued = read_unverified(old.file).issued
        if license.issued <= current_issued:
            raise Conflict("license_older",
                           f"This license file was issued {license.issued.isoformat()}, not after the current "
                           f"license ({current_issued.isoformat()}): adding it would replace a newer license "
                           "with an older one. Add the newest license file.",
                           issued=license.issued.isoformat(), current_issued=current_issued.isoformat())
    skus = sku_index(ac_skus(session))
    packages = [(terms_part, qty) for terms_part, qty in terms.packages]
    plan = plan_license(session, installation=installation, packages=packages, now=now, current=old)
    wanted = [(skus[p["part_number"]], int(p["quantity"])) for p in plan["packages"]]
    lic = _new_license(session, installation=installation, license_device=terms.license_device, old=old,
                       packages=wanted, capacity=terms.capacity.as_dict(), actor=actor, now=now)
    lic.file, lic.kid, lic.file_sha256 = text, license.kid, digest
    record = rules.ConnectionRecord(license_added_at=now)
    connected = device_connected(dev, now, timeout_of(installation))
    if connected:
        record = rules.on_seen(record, now, timeout_of(installation))
    _store(lic, record)
    session.flush()
    if connected:  # the same evidence for the device as for the license (see generate_license)
        seen(session, installation, {terms.license_device: (now, now)})
    _license_added(session, installation=installation, lic=lic, old=old, inactive=plan["devices_made_inactive"],
                   actor=actor, now=now, how="file")
    return lic, True


# --- activation and enforcement (R-AC-6 … R-AC-8) -----------------------------------------------

def active_count(session: Session, installation: Installation) -> int:
    return int(session.scalar(select(func.count()).select_from(Device).where(
        Device.installation_id == installation.id, Device.active.is_(True))) or 0)


def activate(session: Session, *, installation: Installation, serial: str, actor: Actor, now: datetime) -> Device:
    """Activate a device, or confirm the license device after a new license, or recover a
    suspended license by activating its (connected) license device (R-AC-6, R-AC-7, R-AC-8)."""
    actor.require_licensing(installation.org_id)
    dev = device(session, installation, serial)
    lic = current_license(session, installation, lock=True)
    status = status_of(lic, installation, now)
    is_license_device = lic is not None and lic.license_device == serial
    confirming = is_license_device and lic is not None and lic.license_device_activated_at is None
    suspended = status.state == "suspended"
    if dev.active and not suspended and not confirming:
        return dev  # already active: nothing to do
    if suspended or not dev.active:
        # An already active license device being confirmed is counted already: no count check.
        try:
            rules.check_activation(
                serial, license_device_serial=lic.license_device if lic else None,
                license_device_active=bool(lic and lic.license_device_activated_at is not None),
                active_count=active_count(session, installation), capacity=capacity_of(lic, status),
                status=status)
        except rules.AccessCommanderError as exc:
            raise _error(exc) from None
    before = {"active": dev.active, "state": status.state}
    if suspended and lic is not None:
        _store(lic, rules.on_recovered(record_of(lic), now, timeout_of(installation)))
    if is_license_device and lic is not None:
        lic.license_device_activated_at = now
    if not dev.active:
        dev.active, dev.activated_at = True, now
    session.flush()
    history.record(session, org_id=installation.org_id, actor=actor, now=now,
                   action="ac.license.recovered" if suspended else "ac.device.activated",
                   object_type="ac_device", object_id=serial, before=before,
                   after={"active": True, "state": status_of(lic, installation, now).state})
    return dev


def deactivate(session: Session, *, installation: Installation, serial: str, actor: Actor, now: datetime) -> Device:
    actor.require_licensing(installation.org_id)
    dev = device(session, installation, serial)
    if not dev.active:
        return dev
    dev.active = False
    lic = current_license(session, installation, lock=True)
    if lic is not None and lic.license_device == serial:
        lic.license_device_activated_at = None
    session.flush()
    history.record(session, org_id=installation.org_id, actor=actor, now=now, action="ac.device.deactivated",
                   object_type="ac_device", object_id=serial, before={"active": True}, after={"active": False})
    return dev


def _new_name(session: Session, model: type[AttendanceUser] | type[SystemUser], installation: Installation,
              name: str, kind: str, a_kind: str) -> str:
    """A user's name, stripped, 1 to 200 characters and not taken in the installation."""
    name = single_line(name, f"name of {a_kind}").strip()
    if not 1 <= len(name) <= 200:
        raise EntitleError("name_invalid", f"The name of {a_kind} is 1 to 200 characters.")
    if session.scalar(select(model.id).where(model.installation_id == installation.id,
                                             model.name == name)) is not None:
        raise Conflict(f"{kind}_exists", f"{name} is already {a_kind} here.", name=name)
    return name


def add_attendance_user(session: Session, *, installation: Installation, name: str, monitored: bool,
                        actor: Actor, now: datetime) -> AttendanceUser:
    actor.require_licensing(installation.org_id)
    name = _new_name(session, AttendanceUser, installation, name, "attendance_user", "an Attendance user")
    user = AttendanceUser(org_id=installation.org_id, installation_id=installation.id, name=name,
                          monitored=False, created_at=now)
    session.add(user)
    session.flush()
    if monitored:
        set_monitored(session, installation=installation, user_id=user.id, monitored=True, actor=actor, now=now)
    return user


def attendance_users_of(session: Session, installation: Installation, *, after_id: int | None = None,
                        limit: int | None = None) -> list[AttendanceUser]:
    stmt = select(AttendanceUser).where(AttendanceUser.installation_id == installation.id)
    if after_id is not None:
        stmt = stmt.where(AttendanceUser.id > after_id)
    return list(session.scalars(stmt.order_by(AttendanceUser.id).limit(limit)))


def monitored_count(session: Session, installation: Installation) -> int:
    return int(session.scalar(select(func.count()).select_from(AttendanceUser).where(
        AttendanceUser.installation_id == installation.id, AttendanceUser.monitored.is_(True))) or 0)


def set_monitored(session: Session, *, installation: Installation, user_id: int, monitored: bool,
                  actor: Actor, now: datetime) -> AttendanceUser:
    actor.require_licensing(installation.org_id)
    user = session.get(AttendanceUser, user_id)
    if user is None or user.installation_id != installation.id:
        raise NotFound("attendance_user", user_id=user_id)
    if user.monitored == monitored:
        return user
    if monitored:
        lic = current_license(session, installation)
        try:
            rules.check_attendance(monitored_count(session, installation),
                                   capacity_of(lic, status_of(lic, installation, now)))
        except rules.AccessCommanderError as exc:
            raise _error(exc) from None
    user.monitored = monitored
    session.flush()
    history.record(session, org_id=installation.org_id, actor=actor, now=now,
                   action="ac.attendance.monitored" if monitored else "ac.attendance.unmonitored",
                   object_type="ac_attendance_user", object_id=user.name)
    return user


def add_system_user(session: Session, *, installation: Installation, name: str, admin: bool, actor: Actor,
                    now: datetime) -> SystemUser:
    """A user of the installation's software. System users are unlimited (R-AC-2); a tier may
    limit how many are administrators (R-AC-1)."""
    actor.require_licensing(installation.org_id)
    name = _new_name(session, SystemUser, installation, name, "system_user", "a system user")
    if admin:
        _check_admin(session, installation, now)
    user = SystemUser(org_id=installation.org_id, installation_id=installation.id, name=name, admin=admin,
                      created_at=now)
    session.add(user)
    session.flush()
    history.record(session, org_id=installation.org_id, actor=actor, now=now, action="ac.system_user.added",
                   object_type="ac_system_user", object_id=name, after={"admin": admin})
    return user


def set_admin(session: Session, *, installation: Installation, user_id: int, admin: bool, actor: Actor,
              now: datetime) -> SystemUser:
    actor.require_licensing(installation.org_id)
    user = session.get(SystemUser, user_id)
    if user is None or user.installation_id != installation.id:
        raise NotFound("system_user", user_id=user_id)
    if user.admin == admin:
        return user
    if admin:
        _check_admin(session, installation, now)
    user.admin = admin
    session.flush()
    history.record(session, org_id=installation.org_id, actor=actor, now=now, action="ac.system_user.changed",
                   object_type="ac_system_user", object_id=user.name, before={"admin": not admin},
                   after={"admin": admin})
    return user


def system_users_of(session: Session, installation: Installation, *, after_id: int | None = None,
                    limit: int | None = None) -> list[SystemUser]:
    stmt = select(SystemUser).where(SystemUser.installation_id == installation.id)
    if after_id is not None:
        stmt = stmt.where(SystemUser.id > after_id)
    return list(session.scalars(stmt.order_by(SystemUser.id).limit(limit)))


def _check_admin(session: Session, installation: Installation, now: datetime) -> None:
    admins = int(session.scalar(select(func.count()).select_from(SystemUser).where(
        SystemUser.installation_id == installation.id, SystemUser.admin.is_(True))) or 0)
    lic = current_license(session, installation)
    try:
        rules.check_admin(admins, capacity_of(lic, status_of(lic, installation, now)))
    except rules.AccessCommanderError as exc:
        raise _error(exc) from None


def check_integration(session: Session, *, installation: Installation, source: str, actor: Actor,
                      now: datetime) -> None:
    """LDAP or CSV synchronisation needs the integration feature (R-AC-8)."""
    actor.require_licensing(installation.org_id)
    if source not in ("ldap", "csv"):
        raise EntitleError("sync_source_invalid", "Synchronise from 'ldap' or 'csv'.", source=source)
    lic = current_license(session, installation)
    try:
        rules.check_integration(capacity_of(lic, status_of(lic, installation, now)))
    except rules.AccessCommanderError as exc:
        raise _error(exc) from None


# --- the calculator (R-AC-1) --------------------------------------------------------------------

def calculate(session: Session, *, devices: int, attendance_users: int, integration: bool) -> dict[str, Any]:
    """The calculator (calculator.calculate) over the database's catalog."""
    return calculator.calculate(catalog_skus(session), devices=devices, attendance_users=attendance_users,
                                integration=integration)


def catalog_skus(session: Session) -> list[calculator.CatalogSku]:
    """The database's Access Commander packages and tiers, as the calculator reads them."""
    return [calculator.CatalogSku(s.part_number, s.name, s.grants, tuple(s.alt_part_numbers or ()))
            for s in ac_skus(session)]


# --- views --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Overview:
    installation: Installation
    license: AcLicense | None
    status: rules.LicenseStatus
    capacity: rules.Capacity
    devices: list[Device]
    attendance_users: int
    monitored: int
    now: datetime


def overview(session: Session, installation: Installation, now: datetime) -> Overview:
    lic = current_license(session, installation)
    status = status_of(lic, installation, now)
    return Overview(installation, lic, status, capacity_of(lic, status), devices_of(session, installation),
                    len(attendance_users_of(session, installation)), monitored_count(session, installation), now)


def overview_changes_at(ov: Overview) -> datetime | None:
    """The next moment the overview read at ``ov.now`` changes with no write (a remembered answer
    holds until then, ``api.answers``): a heartbeat timeout of the license device or of a device
    running out, a connection interval starting, the protective period ending (R-AC-4, R-AC-5,
    R-AC-6). While the clock is behind the license device's last evidence its connected time
    still grows: ``ov.now`` itself, not worth remembering."""
    now = ov.now
    # Connected while now - last_seen <= timeout: disconnected from one microsecond after.
    gone = timeout_of(ov.installation) + timedelta(microseconds=1)
    edges: list[datetime | None] = []
    if ov.license is not None:
        rec = record_of(ov.license)
        if rec.last_seen is not None and now < rec.last_seen:
            return now
        edges += [rec.connected_since, rec.last_seen + gone if rec.last_seen else None, ov.status.protective_until]
    edges += [d.last_seen + gone for d in ov.devices if d.last_seen is not None]
    return min((at for at in edges if at is not None and at > now), default=None)


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


def installation_to_dict(inst: Installation) -> dict[str, Any]:
    return {"id": inst.id, "uid": inst.uid, "name": inst.name, "heartbeat_timeout_seconds": inst.heartbeat_timeout_seconds,
            "created_at": inst.created_at.isoformat()}


def license_to_dict(lic: AcLicense) -> dict[str, Any]:
    return {"id": lic.id, "license_device": lic.license_device, "packages": lic.packages, "capacity": lic.capacity,
            "added_at": lic.added_at.isoformat(), "added_by": lic.added_by, "replaced_at": _iso(lic.replaced_at),
            "license_device_activated_at": _iso(lic.license_device_activated_at), "kid": lic.kid}


def next_step(ov: Overview) -> str | None:
    """What the admin does next, in the source's words: recover a suspended license, or activate
    a new license's device first (R-AC-6, R-AC-7); None when nothing is waiting."""
    lic = ov.license
    if lic is None:
        return None
    if ov.status.state == "suspended":
        how = (f"activate the license device {lic.license_device}" if ov.status.license_device_connected
               else f"connect the license device {lic.license_device} and activate it")
        return f"All devices are inactive. To recover, {how}, or add a new license generated for another connected device."
    if lic.license_device_activated_at is None:
        return (f"Activate the license device {lic.license_device} first; the other devices can be "
                "activated after it, within the license.")
    return None


def overview_to_dict(ov: Overview) -> dict[str, Any]:
    suspended = ov.status.state == "suspended"
    timeout = timeout_of(ov.installation)
    # Owned is what the license grants, also while suspended (the source's license detail);
    # ``capacity`` is what may be used now (nothing while suspended, R-AC-6).
    owned = rules.Capacity.from_dict(ov.license.capacity) if ov.license else rules.TRIAL
    return {
        "installation": installation_to_dict(ov.installation),
        "license": license_to_dict(ov.license) if ov.license else None,
        "state": ov.status.state,
        "license_device": ov.license.license_device if ov.license else None,
        "license_device_connected": ov.status.license_device_connected,
        "connected_seconds": int(ov.status.connected_time.total_seconds()),
        "disconnected_at": _iso(ov.status.disconnected_at),
        "protective_until": _iso(ov.status.protective_until),
        "suspended_at": _iso(ov.status.suspended_at),
        "capacity": ov.capacity.as_dict(),
        "granted": owned.as_dict(),
        "all_devices_inactive": suspended,
        "next_step": next_step(ov),
        "devices": {"required": len(ov.devices), "active": sum(1 for d in ov.devices if d.active and not suspended),
                    "monitored": None, "owned": owned.devices},
        "attendance_users": {"required": ov.attendance_users, "active": None, "monitored": ov.monitored,
                             "owned": owned.attendance_users},
        "device_list": [device_to_dict(d, ov.now, timeout, suspended) for d in ov.devices],
    }


def device_to_dict(d: Device, now: datetime, timeout: timedelta, suspended: bool = False) -> dict[str, Any]:
    return {"serial": d.serial, "type": d.type, "name": d.name, "active": d.active and not suspended,
            "activated": d.active, "connected": device_connected(d, now, timeout),
            "last_seen": _iso(d.last_seen), "activated_at": _iso(d.activated_at)}
