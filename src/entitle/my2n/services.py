"""My2N on the server (SPEC §4): sites, apartments, devices and the paid-device limit, the site
dashboard, the migration check, the model change and the site type, voucher batches into the site
credit pool and paying apartment-years from it. Card payments are in ``billing``, who may do what
in ``access``.

The decisions are made by ``entitle.my2n.rules``; this module loads what they read, stores what
they return and writes history, inside the caller's transaction. Every writer of a site's
apartments takes the organization's lock first, so two requests never both add a fourth paid
device to one apartment.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, get_args

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.errors import Conflict, EntitleError, Forbidden, NotFound
from entitle.history import services as history
from entitle.my2n import access, rules
from entitle.keys import services as keys
from entitle.keys.models import KeyBatch, LicenseKey
from entitle.ledger import services as ledger
from entitle.ledger.models import Account
from entitle.my2n.models import Apartment, PaymentPlan, Site, SiteDevice, VoucherBatch
from entitle.catalog.models import Sku
from entitle.platform import events
from entitle.platform.models import Event
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Membership, Organization

KINDS: tuple[str, ...] = get_args(rules.DeviceKind)


NAME_MAX = 200  # sites, apartments, voucher batches
SERIAL_MAX = 128  # a device's serial number (or name)


def _name(name: str, what: str) -> str:
    name = name.strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise EntitleError("name_invalid", f"Give the {what} a name of 1 to {NAME_MAX} characters.")
    return name


# --- sites (R-MY-1) ------------------------------------------------------------------------------

def create_site(session: Session, *, org_id: int, name: str, actor: Actor, now: datetime, model: str = "apartment",
                custom_expires_at: datetime | None = None, site_type: str = "apartment_building") -> Site:
    """A new site has the apartment model. A ``custom`` site can only be recorded by the vendor
    (a legacy site, with its expiry), whether or not it is a member of the company: the model is
    retired and cannot be newly chosen."""
    vendor = actor.is_issuer or actor.is_operator
    if not (model == "custom" and vendor):
        actor.require_licensing(org_id)
    name = _name(name, "site")
    if model == "custom":
        if not vendor:
            rules.check_model_choice(model)  # refuses: model_retired
        if custom_expires_at is None:
            raise EntitleError("custom_expiry_required", "A legacy custom-model site needs the date it expires.")
    else:
        rules.check_model_choice(model)
        rules.check_site_type("apartment", site_type)
        custom_expires_at = None
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound("organization", org_id=org_id)
    history.lock_organization(session, org_id)
    if session.scalar(select(Site.id).where(Site.org_id == org_id, Site.name == name)) is not None:
        raise Conflict("site_exists", f"A site named {name!r} exists already.", name=name)
    site = Site(org_id=org_id, name=name, region=org.region, model=model, custom_expires_at=custom_expires_at,
                site_type=site_type if model == "apartment" else None, auto_credit=True, created_at=now)
    session.add(site)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="my2n.site.created",
                   object_type="my2n_site", object_id=site.id, after={"name": name, "model": model})
    return site


def get_site(session: Session, org_id: int, site_id: int) -> Site:
    site = session.get(Site, site_id)
    if site is None or site.org_id != org_id:
        raise NotFound("site", site_id=site_id)
    return site


def custom_sites(session: Session, *, actor: Actor) -> list[tuple[Site, str]]:
    """For the vendor's support: every custom-model site of every company (with the company's
    name), the ones expiring first first."""
    actor.require_issuer()
    return [(site, company) for site, company in session.execute(
        select(Site, Organization.name).join(Organization, Organization.id == Site.org_id)
        .where(Site.model == "custom").order_by(Site.custom_expires_at, Site.id))]


def sites_of(session: Session, org_id: int) -> list[Site]:
    return list(session.scalars(select(Site).where(Site.org_id == org_id).order_by(Site.id)))


def rule_site(site: Site) -> rules.Site:
    return rules.Site(site.id, site.model, site.region, site.custom_expires_at)  # type: ignore[arg-type]


def site_to_dict(site: Site, now: datetime) -> dict[str, Any]:
    expiry = rules.custom_expiry(rule_site(site), now)
    return {"id": site.id, "name": site.name, "region": site.region, "model": site.model,
            "custom_expires_at": site.custom_expires_at.isoformat() if site.custom_expires_at else None,
            "custom_expired": expiry.expired if expiry else None,
            "model_changed_at": site.model_changed_at.isoformat() if site.model_changed_at else None,
            "site_type": site.site_type,
            # R-MY-4: after the model change the admin chooses the site type.
            "site_type_required": site.model == "apartment" and site.site_type is None,
            "auto_credit": site.auto_credit,
            "created_at": site.created_at.isoformat()}


# --- apartments and devices (R-MY-2) -------------------------------------------------------------

def create_apartment(session: Session, *, site: Site, name: str, actor: Actor, now: datetime) -> Apartment:
    access.require_site_admin(session, actor, site)
    name = _name(name, "apartment")
    history.lock_organization(session, site.org_id)
    if session.scalar(select(Apartment.id).where(Apartment.site_id == site.id, Apartment.name == name)) is not None:
        raise Conflict("apartment_exists", f"The site has an apartment named {name!r} already.", name=name)
    apt = Apartment(org_id=site.org_id, site_id=site.id, name=name, paid_through=None, created_at=now)
    session.add(apt)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.apartment.created",
                   object_type="my2n_apartment", object_id=apt.id, after={"site": site.id, "name": name})
    return apt


def get_apartment(session: Session, site: Site, apartment_id: int) -> Apartment:
    apt = session.get(Apartment, apartment_id)
    if apt is None or apt.site_id != site.id:
        raise NotFound("apartment", apartment_id=apartment_id)
    return apt


def apartment_by_name(session: Session, site: Site, name: str) -> Apartment:
    """The site's apartment of that name (forms and files name apartments, not ids)."""
    found = session.scalars(select(Apartment).where(Apartment.site_id == site.id,
                                                    Apartment.name == name.strip())).one_or_none()
    if found is None:
        raise NotFound("apartment", apartment=name.strip())
    return found


def apartments_of(session: Session, site: Site) -> list[Apartment]:
    return list(session.scalars(select(Apartment).where(Apartment.site_id == site.id).order_by(Apartment.id)))


def devices_of(session: Session, site: Site) -> list[SiteDevice]:
    return list(session.scalars(select(SiteDevice).where(SiteDevice.site_id == site.id).order_by(SiteDevice.serial)))


def recurring_of(session: Session, site: Site) -> rules.Recurring | None:
    """The site's automatic recurring payment as the rules read it; None while it is off."""
    plan = session.scalars(select(PaymentPlan).where(PaymentPlan.site_id == site.id)).one_or_none()
    if plan is None or not plan.recurring or plan.period_end is None:
        return None
    return rules.Recurring(plan.period_end, plan.charge_failed_at)


def devices_with_state(session: Session, *, site: Site, now: datetime,
                       apartment_id: int | None = None) -> list[dict[str, Any]]:
    """The site's devices (or one apartment's) and whether each works at ``now``: a paid device
    outside local mode stops when its apartment's license has lapsed (recurring payment's cover
    counts as paid, R-MY-5); intercoms and 2N answering units never stop (R-MY-6)."""
    query = (select(SiteDevice, Apartment.name, Apartment.paid_through)
             .outerjoin(Apartment, Apartment.id == SiteDevice.apartment_id)
             .where(SiteDevice.site_id == site.id).order_by(SiteDevice.serial))
    if apartment_id is not None:
        query = query.where(SiteDevice.apartment_id == apartment_id)
    out = []
    recurring = recurring_of(session, site)
    for d, apt_name, paid_through in session.execute(query):
        out.append({"serial": d.serial, "kind": d.kind, "apartment_id": d.apartment_id, "apartment": apt_name,
                    "local_mode": d.local_mode, "paid": rules.is_paid_device(rule_device(d)),
                    "works": _works(site, d, paid_through, now, recurring)})
    return out


def _works(site: Site, device: SiteDevice, paid_through: datetime | None, now: datetime,
           recurring: rules.Recurring | None) -> bool:
    # A custom-model site's devices run on the site's legacy license until it expires.
    if site.model != "apartment":
        covered = site.custom_expires_at
    elif device.apartment_id is None:
        covered = paid_through
    else:
        covered = rules.covered_until(paid_through, recurring)
    return rules.device_works(rule_device(device), paid_through=covered, now=now)


def device_works(session: Session, *, site: Site, device: SiteDevice, now: datetime) -> bool:
    """Does this device work at ``now`` (R-MY-6)? See ``devices_with_state``."""
    apartment = session.get(Apartment, device.apartment_id) if device.apartment_id is not None else None
    return _works(site, device, apartment.paid_through if apartment else None, now, recurring_of(session, site))


def rule_device(d: SiteDevice) -> rules.Device:
    return rules.Device(d.id, d.kind, d.apartment_id, d.local_mode)  # type: ignore[arg-type]


def _check_into(session: Session, device: rules.Device, apartment: Apartment | None, serial: str) -> None:
    """The rules name devices by id; a refusal here names the device by serial and the apartment
    by name (the device may not exist yet)."""
    if apartment is None:
        return
    others = session.scalars(select(SiteDevice).where(SiteDevice.apartment_id == apartment.id))
    try:
        rules.check_assignment(device, [rule_device(d) for d in others])
    except rules.Refusal as refusal:
        refusal.detail.pop("device_id", None)
        refusal.detail.update(serial=serial, apartment=apartment.name)
        raise


def add_device(session: Session, *, site: Site, serial: str, kind: str, actor: Actor, now: datetime,
               apartment_id: int | None = None, local_mode: bool = False) -> SiteDevice:
    """Add a device to the site, into an apartment or not; a fifth paid device of an apartment
    is refused whoever adds it (R-MY-2): a site admin, or the apartment's own admin."""
    access.require_apartment_admin(session, actor, site, apartment_id)
    serial = serial.strip()
    if not 1 <= len(serial) <= SERIAL_MAX:
        raise EntitleError("serial_invalid", f"A device serial number (or name) is 1 to {SERIAL_MAX} characters.")
    if kind not in KINDS:
        raise EntitleError("device_kind_invalid", f"A device is one of: {', '.join(KINDS)}.", kind=kind,
                           allowed=list(KINDS))
    history.lock_organization(session, site.org_id)  # the limit below stays true until commit
    if session.scalar(select(SiteDevice.id).where(SiteDevice.site_id == site.id, SiteDevice.serial == serial)):
        raise Conflict("device_exists", f"Device {serial} is already on this site.", serial=serial)
    apartment = get_apartment(session, site, apartment_id) if apartment_id is not None else None
    # Checked before anything is written (0: the new device has no id yet).
    _check_into(session, rules.Device(0, kind, None, local_mode), apartment, serial)  # type: ignore[arg-type]
    device = SiteDevice(org_id=site.org_id, site_id=site.id, apartment_id=apartment.id if apartment else None,
                        serial=serial, kind=kind, local_mode=local_mode, created_at=now)
    session.add(device)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.device.added",
                   object_type="my2n_device", object_id=serial,
                   after={"site": site.id, "kind": kind, "apartment": device.apartment_id, "local_mode": local_mode})
    return device


def get_device(session: Session, site: Site, serial: str) -> SiteDevice:
    found = session.scalars(select(SiteDevice).where(SiteDevice.site_id == site.id,
                                                     SiteDevice.serial == serial)).one_or_none()
    if found is None:
        raise NotFound("device", serial=serial)
    return found


def assign_device(session: Session, *, site: Site, serial: str, apartment_id: int | None, actor: Actor,
                  now: datetime) -> SiteDevice:
    """Move a device into an apartment (or out of every apartment with None)."""
    access.require_site_admin(session, actor, site)
    history.lock_organization(session, site.org_id)
    device = get_device(session, site, serial)
    apartment = get_apartment(session, site, apartment_id) if apartment_id is not None else None
    _check_into(session, rule_device(device), apartment, serial)
    before = device.apartment_id
    device.apartment_id = apartment.id if apartment else None
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.device.assigned",
                   object_type="my2n_device", object_id=serial, before={"apartment": before},
                   after={"apartment": device.apartment_id})
    return device


def set_local_mode(session: Session, *, site: Site, serial: str, local_mode: bool, actor: Actor,
                   now: datetime) -> SiteDevice:
    device = get_device(session, site, serial)
    access.require_apartment_admin(session, actor, site, device.apartment_id)
    before, device.local_mode = device.local_mode, local_mode
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.device.local_mode",
                   object_type="my2n_device", object_id=serial, before={"local_mode": before},
                   after={"local_mode": local_mode})
    return device


# --- migration (R-MY-4) --------------------------------------------------------------------------

def migration_check(session: Session, *, site: Site) -> list[dict[str, Any]]:
    """Every device that still has to be assigned to an apartment (intercoms never are)."""
    devices = devices_of(session, site)
    left = {d.device_id for d in rules.unassigned_devices([rule_device(d) for d in devices])}
    return [{"serial": d.serial, "kind": d.kind} for d in devices if d.id in left]


def change_model(session: Session, *, site: Site, model: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """The vendor-support model change: refused while a non-intercom device is unassigned; then
    every session and app token of the site's users (the organization's members) is revoked, so
    that they log in again (R-MY-4)."""
    if not (actor.is_issuer or actor.is_operator):
        raise Forbidden("vendor_support_only",
                        "The business model is changed by 2N Tech Support: ask them once every device is in "
                        "an apartment.")
    history.lock_organization(session, site.org_id)
    devices = devices_of(session, site)
    try:
        chosen = rules.check_model_change(current=site.model, chosen=model,  # type: ignore[arg-type]
                                          devices=[rule_device(d) for d in devices])
    except rules.Refusal as refusal:
        if "device_ids" in refusal.detail:  # name them as the user knows them
            serial_of = {d.id: d.serial for d in devices}
            refusal.detail["serials"] = [serial_of[i] for i in refusal.detail.pop("device_ids")]
        raise
    if site.model == chosen:
        raise Conflict("model_unchanged", f"The site already has the {chosen} model.", model=chosen)
    before = site.model
    site.model, site.model_changed_at, site.custom_expires_at, site.site_type = chosen, now, None, None
    users = list(session.scalars(select(Membership.user_id).where(Membership.org_id == site.org_id)))
    revoked = tenancy.revoke_all_sessions(session, user_ids=users, now=now) if users else 0
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site.model_changed",
                   object_type="my2n_site", object_id=site.id, before={"model": before},
                   after={"model": chosen, "users_logged_out": len(users), "sessions_revoked": revoked})
    events.emit(session, org_id=site.org_id, type="my2n.site.model_changed", now=now, site=site.id, model=chosen)
    return {"site": site_to_dict(site, now), "users_logged_out": len(users), "sessions_revoked": revoked}


SITE_TYPES: tuple[str, ...] = rules.SITE_TYPES


def choose_site_type(session: Session, *, site: Site, site_type: str, actor: Actor, now: datetime) -> Site:
    """R-MY-4: the site's admin chooses its type once it has the apartment model (a new site
    starts as an apartment building; a migrated site has none until chosen)."""
    access.require_site_admin(session, actor, site)
    chosen = rules.check_site_type(site.model, site_type)  # type: ignore[arg-type]
    history.lock_organization(session, site.org_id)
    before, site.site_type = site.site_type, chosen
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site.type_chosen",
                   object_type="my2n_site", object_id=site.id, before={"site_type": before},
                   after={"site_type": chosen})
    return site


def paid_devices(session: Session, apartment: Apartment) -> int:
    return int(session.scalar(select(func.count()).select_from(SiteDevice).where(
        SiteDevice.apartment_id == apartment.id, SiteDevice.kind.in_(sorted(rules.PAID_KINDS)))) or 0)


# --- vouchers and the site credit pool (R-MY-5) --------------------------------------------------

SCOPES: tuple[str, ...] = get_args(rules.VoucherScope)


def mint_vouchers(session: Session, *, part_number: str, name: str, years: int, subscriptions: int, scope: str,
                  actor: Actor, now: datetime) -> tuple[VoucherBatch, list[str]]:
    """A distributor's voucher batch: ``subscriptions`` codes of part 9137958 / 02683-001, each
    worth ``years`` apartment-years (or device-years), valid for 3 years from now. Returns the
    batch and its codes (shown once; stored as hashes)."""
    if scope not in SCOPES:
        raise EntitleError("voucher_scope_invalid", "A voucher batch is per apartment or per device.",
                           scope=scope, allowed=list(SCOPES))
    if not 1 <= years <= 10:
        raise EntitleError("years_invalid", "A voucher is worth 1 to 10 years.", years=years)
    minted = keys.mint(session, sku_part=part_number, quantity_per_key=years, count=subscriptions, actor=actor,
                       now=now, name=_name(name, "voucher batch"), keep_codes=True)
    if minted.batch.sku.grant_kind != "apartment_year":
        raise EntitleError("sku_not_voucher", f"Part {part_number} is not a My2N apartment-license voucher.",
                           part_number=part_number)
    batch = VoucherBatch(key_batch_id=minted.batch.id, scope=scope, purchased_at=now)
    session.add(batch)
    session.flush()
    return batch, minted.codes


def voucher_batch_to_dict(batch: VoucherBatch, session: Session | None = None) -> dict[str, Any]:
    """A batch; with a session also how many of its codes are Active, Used and Cancelled."""
    kb = batch.key_batch
    out: dict[str, Any] = {
        "id": batch.id, "key_batch_id": kb.id, "part_number": kb.sku.part_number, "name": kb.name,
        "years": kb.quantity_per_key, "subscriptions": kb.count, "scope": batch.scope, "minted_by": kb.minted_by,
        "purchased_at": batch.purchased_at.isoformat(), "valid_until": _voucher_rules(batch, kb).valid_until.isoformat()}
    if session is not None:
        states = {state: n for state, n in session.execute(
            select(LicenseKey.state, func.count()).where(LicenseKey.batch_id == kb.id).group_by(LicenseKey.state))}
        out["codes"] = {state: int(states.get(state, 0)) for state in ("active", "used", "cancelled")}
    return out


def cancel_voucher(session: Session, *, code: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """Only the issuer cancels a code, and only an Active one (R-MY-5); the key rules do it."""
    return keys.cancel(session, typed_key=code, actor=actor, now=now)


def voucher_batches(session: Session, *, actor: Actor, limit: int = 50) -> list[VoucherBatch]:
    """The latest voucher batches (the issuer's list)."""
    actor.require_issuer()
    return list(session.scalars(select(VoucherBatch).order_by(VoucherBatch.id.desc()).limit(limit)))


def _voucher_rules(batch: VoucherBatch, key_batch: KeyBatch) -> rules.VoucherBatch:
    return rules.VoucherBatch(key_batch.name, key_batch.quantity_per_key, key_batch.count,
                              batch.scope, batch.purchased_at)  # type: ignore[arg-type]


def _credit_account(session: Session, site: Site, sku_id: int, scope: str, now: datetime) -> Account:
    return ledger.account(session, org_id=site.org_id, kind="site_credit", sku_id=sku_id,
                          ref=f"site/{site.id}/{scope}", now=now)


def redeem_voucher(session: Session, *, site: Site, code: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """Activate a voucher code: its years go to the site's credit pool (apartment-years or
    device-years). Refused for a code of another region (the key rules), one used or
    cancelled, one whose batch is past its 3 years, or a key that is not a voucher. Activating a
    code is paying: company admins and site admins with the payments permission (R-MY-5)."""
    access.require_payer(session, actor, site)
    scope_of: dict[str, str] = {}

    def into(s: Session, org: Organization, sku: Sku, key: LicenseKey, at: datetime) -> Account:
        batch = s.scalars(select(VoucherBatch).where(VoucherBatch.key_batch_id == key.batch_id)).one_or_none()
        if sku.grant_kind != "apartment_year" or batch is None:
            raise Conflict("key_not_voucher", f"This key ({sku.part_number}) is not a My2N voucher code.",
                           part_number=sku.part_number)
        rules.check_redeem(_voucher_rules(batch, key.batch), key.state, at)  # type: ignore[arg-type]
        scope_of["scope"] = batch.scope
        return _credit_account(s, site, sku.id, batch.scope, at)

    done = keys.redeem(session, org_id=site.org_id, typed_key=code, actor=actor, now=now, into=into, authorized=True)
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.voucher.activated",
                   object_type="my2n_site", object_id=site.id,
                   after={"scope": scope_of["scope"], "years": done["quantity"], "part_number": done["part_number"]})
    return {"scope": scope_of["scope"], "years": done["quantity"], "pool": credit_pool(session, site)}


def _credit_accounts(session: Session, site: Site) -> list[Account]:
    return list(session.scalars(select(Account).where(Account.org_id == site.org_id, Account.kind == "site_credit",
                                                      Account.ref.startswith(f"site/{site.id}/"))
                                .order_by(Account.id)))


def credit_pool(session: Session, site: Site) -> dict[str, int]:
    pool = {"apartment_years": 0, "device_years": 0}
    for acct in _credit_accounts(session, site):
        pool[f"{acct.ref.rsplit('/', 1)[1]}_years"] += ledger.balance(session, acct.id)
    return pool


def pay_from_credit(session: Session, *, site: Site, apartment_id: int, actor: Actor, now: datetime) -> dict[str, Any]:
    """Pay one year of an apartment's license from the site credit pool: one apartment-year,
    else one device-year per billable device (R-MY-5); paid-through moves one year on."""
    access.require_payer(session, actor, site)
    rules.check_prolongation(rule_site(site))  # a custom-model site migrates first (R-MY-1)
    history.lock_organization(session, site.org_id)
    return _pay_from_pool(session, site=site, apt=get_apartment(session, site, apartment_id), actor=actor, now=now)


def _pay_from_pool(session: Session, *, site: Site, apt: Apartment, actor: Actor, now: datetime,
                   automatic: bool = False) -> dict[str, Any]:
    """One year of ``apt`` from the pool, in the ledger and history (the caller holds the lock)."""
    devices = [rule_device(d) for d in session.scalars(select(SiteDevice).where(SiteDevice.apartment_id == apt.id))]
    if not rules.needs_license(devices):
        raise Conflict("apartment_needs_no_license",
                       "This apartment has no paid device outside local mode, so it needs no license.",
                       apartment=apt.name)
    before = credit_pool(session, site)
    after = rules.charge_apartment_year(rules.Credit(before["apartment_years"], before["device_years"]), devices)
    take = {"apartment": before["apartment_years"] - after.apartment_years,
            "device": before["device_years"] - after.device_years}
    moves: list[tuple[Account, int]] = []
    for acct in _credit_accounts(session, site):
        scope = acct.ref.rsplit("/", 1)[1]
        n = min(take[scope], ledger.balance(session, acct.id))
        if n:
            paid = ledger.account(session, org_id=site.org_id, kind="apartment_paid", sku_id=acct.sku_id,
                                  ref=f"apt/{apt.id}", now=now)
            moves += [(acct, -n), (paid, n)]
            take[scope] -= n
    ledger.post(session, org_id=site.org_id, kind="apartment_year", actor=actor, now=now, moves=moves,
                memo=f"apartment {apt.id}")
    old, apt.paid_through = apt.paid_through, rules.extend_paid_through(apt.paid_through, now)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.apartment.paid",
                   object_type="my2n_apartment", object_id=apt.id,
                   before={"paid_through": old.isoformat() if old else None, **before},
                   after={"paid_through": apt.paid_through.isoformat(), **credit_pool(session, site),
                          **({"automatic": True} if automatic else {})})
    return {"apartment": apt.name, "paid_through": apt.paid_through.isoformat(), "pool": credit_pool(session, site)}


CREDIT_ACTOR = Actor(label="auto-credit")


def pay_lapsing_from_credit(session: Session, *, site: Site, apartment_id: int, paid_through: datetime,
                            now: datetime) -> Event | None:
    """R-MY-5: the sweep pays the next year of an apartment about to lapse from the pool, when
    the site uses credit automatically (``auto_credit``). None when there is nothing to do any
    more: paid meanwhile, no license needed, the setting turned off, or not enough credit."""
    history.lock_organization(session, site.org_id)
    session.refresh(site)
    apt = session.get(Apartment, apartment_id)
    if (apt is None or apt.site_id != site.id or apt.paid_through != paid_through or not site.auto_credit
            or site.model != "apartment" or recurring_of(session, site) is not None):
        return None
    try:
        with session.begin_nested():
            _pay_from_pool(session, site=site, apt=apt, actor=CREDIT_ACTOR, now=now, automatic=True)
    except (rules.Refusal, Conflict):
        return None
    return events.emit(session, org_id=site.org_id, type="my2n.apartments.paid", now=now, site=site.id,
                       apartments=1, credit=True)


def set_auto_credit(session: Session, *, site: Site, on: bool, actor: Actor, now: datetime) -> Site:
    """The site setting: on the day an apartment would lapse, pay its next year from the credit
    pool (on by default). Changing it is a payer's decision (R-MY-5)."""
    access.require_payer(session, actor, site)
    history.lock_organization(session, site.org_id)
    before, site.auto_credit = site.auto_credit, on
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site.auto_credit",
                   object_type="my2n_site", object_id=site.id, before={"auto_credit": before},
                   after={"auto_credit": on})
    return site
