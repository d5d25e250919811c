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
from entitle.keys import codes as key_codes
from entitle.keys import services as keys
from entitle.keys.models import KeyBatch, LicenseKey
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry, LedgerTransaction
from entitle.my2n.models import Apartment, PaymentPlan, Site, SiteDevice, VoucherBatch
from entitle.catalog.models import Sku
from entitle.platform import events
from entitle.platform.models import Event
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Membership, Organization
from entitle.text import single_line

KINDS: tuple[str, ...] = get_args(rules.DeviceKind)


NAME_MAX = 200  # sites, apartments, voucher batches
SERIAL_MAX = 128  # a device's serial number (or name)


def _name(name: str, what: str) -> str:
    name = single_line(name, f"{what} name").strip()
    if not 1 <= len(name) <= NAME_MAX:
        raise EntitleError("name_invalid", f"Give the {what} a name of 1 to {NAME_MAX} characters.")
    return name


# --- sites (R-MY-1) ------------------------------------------------------------------------------

REGIONS: tuple[str, ...] = get_args(rules.Region)


def _region(region: str) -> str:
    chosen = region.strip().upper()
    if chosen not in REGIONS:
        raise EntitleError("region_unknown", f"Unknown region {region!r}; use one of {', '.join(REGIONS)}.",
                           region=region, regions=list(REGIONS))
    return chosen


def create_site(session: Session, *, org_id: int, name: str, actor: Actor, now: datetime, model: str = "apartment",
                custom_expires_at: datetime | None = None, site_type: str = "apartment_building",
                region: str | None = None) -> Site:
    """A new site has the apartment model. A ``custom`` site can only be recorded by the vendor
    (a legacy site, with its expiry), whether or not it is a member of the company: the model is
    retired and cannot be newly chosen. ``region``: the site's sales region, the organization's
    when left out (issue 14 point 8)."""
    vendor = actor.is_issuer or actor.is_operator
    if not (model == "custom" and vendor):
        actor.require_licensing(org_id)
    name = _name(name, "site")
    chosen_region = _region(region) if region is not None and region.strip() else None
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
    site = Site(org_id=org_id, name=name, region=chosen_region or org.region, model=model,
                custom_expires_at=custom_expires_at, site_type=site_type if model == "apartment" else None,
                auto_credit=True, created_at=now)
    session.add(site)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="my2n.site.created",
                   object_type="my2n_site", object_id=site.id,
                   after={"name": name, "model": model, "region": site.region})
    return site


def region_lock(session: Session, site: Site) -> EntitleError | None:
    """Why the site's region can no longer change, or None. Its pool's credit was bought as the
    region's part (a 9137958 code must not end up paying a US site), and a running subscription
    is priced in the region's currency: so the region is fixed once a voucher code has been
    activated into the site's pool, and while recurring payment is on."""
    if _credit_accounts(session, site):  # made by the first code activated into the pool
        return Conflict("region_locked", f"The region of site {site.name} cannot change any more: voucher codes "
                        f"of the {site.region} part were activated into its credit pool.", region=site.region,
                        reason="voucher_redeemed")
    plan = session.scalars(select(PaymentPlan).where(PaymentPlan.site_id == site.id)).one_or_none()
    if plan is not None and plan.recurring:
        return Conflict("region_locked", f"The region of site {site.name} cannot change while automatic recurring "
                        "payment is on (it is priced in the region's currency): turn it off first.",
                        region=site.region, reason="recurring_payment_active")
    return None


def change_region(session: Session, *, site: Site, region: str, actor: Actor, now: datetime) -> Site:
    """A company admin changes the site's region (issue 14 point 8), until ``region_lock``
    says it is fixed."""
    actor.require_licensing(site.org_id)
    chosen = _region(region)
    history.lock_organization(session, site.org_id)
    session.refresh(site)  # what the lock guards: a code activated or a region changed meanwhile
    if chosen == site.region:
        return site
    refusal = region_lock(session, site)
    if refusal is not None:
        raise refusal
    before, site.region = site.region, chosen
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site.region_changed",
                   object_type="my2n_site", object_id=site.id, before={"region": before},
                   after={"region": chosen, "part_number": rules.part_number(chosen)})  # type: ignore[arg-type]
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
    counts as paid, R-MY-5), or when its apartment is paid per device for fewer devices and it is
    one of those not paid for (``rules.unpaid_devices``); intercoms and 2N answering units never
    stop (R-MY-6). ``paid_for``: False for such a device."""
    query = (select(SiteDevice, Apartment)
             .outerjoin(Apartment, Apartment.id == SiteDevice.apartment_id)
             .where(SiteDevice.site_id == site.id).order_by(SiteDevice.serial))
    if apartment_id is not None:
        query = query.where(SiteDevice.apartment_id == apartment_id)
    out = []
    recurring = recurring_of(session, site)
    rows = [(d, apt) for d, apt in session.execute(query)]
    unpaid = unpaid_device_ids(session, [a for _, a in rows if a is not None])
    for d, apt in rows:
        paid_through = None if apt is None or d.id in unpaid else apt.paid_through
        out.append({"serial": d.serial, "kind": d.kind, "apartment_id": d.apartment_id,
                    "apartment": apt.name if apt else None,
                    "local_mode": d.local_mode, "paid": rules.is_paid_device(rule_device(d)),
                    "paid_for": d.id not in unpaid, "works": _works(site, d, paid_through, now, recurring)})
    return out


def unpaid_device_ids(session: Session, apartments: list[Apartment]) -> set[int]:
    """The billable devices of these apartments that their per-device payment does not cover
    (``rules.unpaid_devices``): one query, for the apartments paid per device only."""
    per_device = {a.id: a for a in apartments if a.devices_paid_for is not None}
    if not per_device:
        return set()
    grouped = rules.group_by_apartment(rule_device(d) for d in session.scalars(
        select(SiteDevice).where(SiteDevice.apartment_id.in_(sorted(per_device)))))
    return {d.device_id for apt_id, a in per_device.items()
            for d in rules.unpaid_devices(rule_apartment(a), grouped.get(apt_id, []))}


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
    paid_through = None
    if apartment is not None and device.id not in unpaid_device_ids(session, [apartment]):
        paid_through = apartment.paid_through
    return _works(site, device, paid_through, now, recurring_of(session, site))


def rule_device(d: SiteDevice) -> rules.Device:
    return rules.Device(d.id, d.kind, d.apartment_id, d.local_mode,  # type: ignore[arg-type]
                        d.billable_since or d.created_at)


def rule_apartment(a: Apartment) -> rules.Apartment:
    return rules.Apartment(a.id, a.paid_through, a.devices_paid_for)


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
    serial = single_line(serial, "device serial number", field="serial").strip()
    if not 1 <= len(serial) <= SERIAL_MAX:
        raise EntitleError("serial_invalid", f"A device serial number (or name) is 1 to {SERIAL_MAX} characters.")
    if kind not in KINDS:
        raise EntitleError("device_kind_invalid", f"A device is one of: {', '.join(KINDS)}.", kind=kind,
                           allowed=list(KINDS))
    history.lock_organization(session, site.org_id)  # the limit below stays true until commit
    check_serial_free(session, site, serial)
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


def check_serial_free(session: Session, site: Site, serial: str) -> None:
    """One device, one site (issue 14 point 9): a serial is on at most one site of the
    organization, compared exactly as stored (spaces around it taken off, case kept, as for
    every serial). The caller holds the organization's lock; the unique index on (org_id,
    serial) holds it in the database too."""
    found = session.execute(select(Site.id, Site.name).join(SiteDevice, SiteDevice.site_id == Site.id)
                            .where(SiteDevice.org_id == site.org_id, SiteDevice.serial == serial)).first()
    if found is None:
        return
    if found.id == site.id:
        raise Conflict("device_exists", f"Device {serial} is already on this site.", serial=serial)
    raise on_other_site(serial, found.id, found.name)


def on_other_site(serial: str, site_id: int, site_name: str) -> Conflict:
    return Conflict("device_on_other_site", f"Device {serial} is already on site {site_name} of this company; a device "
                    "belongs to one site at a time.", serial=serial, site_id=site_id, site=site_name)


def serials_elsewhere(session: Session, site: Site) -> dict[str, tuple[int, str]]:
    """The serials on the organization's other sites, each with its site's id and name (one
    query, for the checks of a CSV import)."""
    return {serial: (site_id, name) for serial, site_id, name in session.execute(
        select(SiteDevice.serial, Site.id, Site.name).join(Site, Site.id == SiteDevice.site_id)
        .where(SiteDevice.org_id == site.org_id, SiteDevice.site_id != site.id))}


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
    if device.apartment_id != before:
        device.billable_since = now  # it counts towards its new apartment's license from now (R-MY-5)
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
    if before and not local_mode:
        device.billable_since = now  # it counts towards the apartment's license from now (R-MY-5)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.device.local_mode",
                   object_type="my2n_device", object_id=serial, before={"local_mode": before},
                   after={"local_mode": local_mode})
    return device


def remove_device(session: Session, *, site: Site, serial: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """Take a device off the site: whoever may add it may remove it (a site admin, or the
    apartment's own admin for a device of their apartment). It may then be added to another site
    (one device, one site). What was paid stays paid: the apartment keeps its paid-through, and
    an apartment left needing no license is not renewed (the subscription follows the apartments,
    R-MY-5). Returns what the device was."""
    history.lock_organization(session, site.org_id)
    device = get_device(session, site, serial.strip())
    access.require_apartment_admin(session, actor, site, device.apartment_id)
    was = {"site": site.id, "kind": device.kind, "apartment": device.apartment_id, "local_mode": device.local_mode}
    session.delete(device)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.device.removed",
                   object_type="my2n_device", object_id=device.serial, before=was, after=None)
    return {"serial": device.serial, **was}


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
    before, expires = site.model, site.custom_expires_at
    carried = _carry_custom_license(session, site=site, devices=devices, actor=actor, now=now)
    site.model, site.model_changed_at, site.custom_expires_at, site.site_type = chosen, now, None, None
    users = list(session.scalars(select(Membership.user_id).where(Membership.org_id == site.org_id)))
    revoked = tenancy.revoke_all_sessions(session, user_ids=users, now=now) if users else 0
    session.flush()
    kept = {"paid_through": expires.isoformat(), "apartments": carried} if carried else None
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site.model_changed",
                   object_type="my2n_site", object_id=site.id,
                   before={"model": before, "custom_expires_at": expires.isoformat() if expires else None},
                   after={"model": chosen, "users_logged_out": len(users), "sessions_revoked": revoked,
                          "custom_license_kept": kept})
    events.emit(session, org_id=site.org_id, type="my2n.site.model_changed", now=now, site=site.id, model=chosen)
    return {"site": site_to_dict(site, now), "users_logged_out": len(users), "sessions_revoked": revoked,
            "custom_license_kept": kept}


CUSTOM_LICENSE = "custom_license"  # what paid an apartment carried over from the custom model (history)


def _carry_custom_license(session: Session, *, site: Site, devices: list[SiteDevice], actor: Actor,
                          now: datetime) -> int:
    """R-MY-4, migrating early keeps the time already paid: every apartment that needs a license
    at the model change is paid through the custom license's expiry, each in history
    (``my2n.apartment.paid``, ``by: custom_license``); no unit moves in the ledger. Returns how
    many were."""
    if site.model != "custom" or site.custom_expires_at is None or site.custom_expires_at <= now:
        return 0
    grouped = rules.group_by_apartment(rule_device(d) for d in devices)
    carried = 0
    for apt in apartments_of(session, site):
        if not rules.needs_license(grouped.get(apt.id, [])):
            continue
        through = rules.carried_paid_through(apt.paid_through, site.custom_expires_at, now)
        if through == apt.paid_through:
            continue
        old, apt.paid_through, apt.devices_paid_for = apt.paid_through, through, None
        carried += 1
        history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.apartment.paid",
                       object_type="my2n_apartment", object_id=apt.id,
                       before={"paid_through": old.isoformat() if old else None},
                       after={"paid_through": through.isoformat() if through else None, "by": CUSTOM_LICENSE})
    session.flush()
    return carried


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
                       now=now, name=_name(name, "voucher batch"), keep_codes=True, voucher_batch=True)
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
    valid_until = _voucher_rules(batch, kb).valid_until
    out: dict[str, Any] = {
        "id": batch.id, "key_batch_id": kb.id, "part_number": kb.sku.part_number, "name": kb.name,
        "years": kb.quantity_per_key, "subscriptions": kb.count, "scope": batch.scope, "minted_by": kb.minted_by,
        "purchased_at": batch.purchased_at.isoformat(), "valid_until": valid_until.isoformat(),
        # Point 10: the exact cut-off as people read it (date, and time and zone unless midnight UTC).
        "valid_until_text": rules.moment_text(valid_until)}
    if session is not None:
        states = {state: n for state, n in session.execute(
            select(LicenseKey.state, func.count()).where(LicenseKey.batch_id == kb.id).group_by(LicenseKey.state))}
        out["codes"] = {state: int(states.get(state, 0)) for state in ("active", "used", "cancelled")}
    return out


def cancel_voucher(session: Session, *, code: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """Only the issuer cancels a code, and only an Active one (R-MY-5); the key rules do it."""
    return keys.cancel(session, typed_key=code, actor=actor, now=now)


def voucher_batches(session: Session, *, actor: Actor, limit: int = 50,
                    before_id: int | None = None) -> list[VoucherBatch]:
    """The latest voucher batches (the issuer's list), newest first; the page before the batch
    ``before_id``."""
    actor.require_issuer()
    stmt = select(VoucherBatch)
    if before_id is not None:
        stmt = stmt.where(VoucherBatch.id < before_id)
    return list(session.scalars(stmt.order_by(VoucherBatch.id.desc()).limit(limit)))


def _voucher_rules(batch: VoucherBatch, key_batch: KeyBatch) -> rules.VoucherBatch:
    return rules.VoucherBatch(key_batch.name, key_batch.quantity_per_key, key_batch.count,
                              batch.scope, batch.purchased_at)  # type: ignore[arg-type]


def _credit_account(session: Session, site: Site, sku_id: int, scope: str, now: datetime) -> Account:
    return ledger.account(session, org_id=site.org_id, kind="site_credit", sku_id=sku_id,
                          ref=f"site/{site.id}/{scope}", now=now)


def redeem_voucher(session: Session, *, site: Site, code: str, actor: Actor, now: datetime) -> dict[str, Any]:
    """Activate a voucher code: its years go to the site's credit pool (apartment-years or
    device-years). Refused for a code of another region than the site's (the key rules), one used or
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

    region = site.region
    try:
        done = keys.redeem(session, org_id=site.org_id, typed_key=code, actor=actor, now=now, into=into,
                           authorized=True, site_region=region)
    except Conflict as refusal:
        if refusal.code == "key_already_redeemed":
            raise used_where(session, site=site, typed_key=code) or refusal from None
        raise
    session.refresh(site)  # under the organization's lock now (keys.redeem took it): see a region changed meanwhile
    if site.region != region:
        raise Conflict("region_changed", f"The region of site {site.name} changed to {site.region} meanwhile; nothing "
                       "was activated: activate the code again.", region=site.region)
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.voucher.activated",
                   object_type="my2n_site", object_id=site.id,
                   after={"scope": scope_of["scope"], "years": done["quantity"], "part_number": done["part_number"]})
    return {"scope": scope_of["scope"], "years": done["quantity"], "pool": credit_pool(session, site)}


def used_where(session: Session, *, site: Site, typed_key: str) -> Conflict | None:
    """The refusal of a voucher code used before by this organization, naming where it went
    (point 10): the credit pool of which of its sites (the ledger's redeem of the key says), or
    its wallet. None when another organization used it (which is not told) or it is not found."""
    try:
        compact = key_codes.normalize(typed_key)
    except key_codes.CodeError:
        return None
    key = session.scalars(select(LicenseKey).where(LicenseKey.key_hash == key_codes.digest(compact))).one_or_none()
    if key is None or key.state != "used" or key.redeemed_org_id != site.org_id:
        return None
    went = session.execute(
        select(Account.kind, Account.ref).join(Entry, Entry.account_id == Account.id)
        .join(LedgerTransaction, LedgerTransaction.id == Entry.transaction_id)
        .where(LedgerTransaction.org_id == site.org_id, LedgerTransaction.kind == "redeem",
               LedgerTransaction.memo == f"key {key.id}", Entry.amount > 0)).first()
    when = f" on {rules.moment_text(key.redeemed_at)}" if key.redeemed_at else ""
    detail: dict[str, Any] = {"redeemed_at": key.redeemed_at.isoformat() if key.redeemed_at else None}
    if went is not None and went.kind == "site_credit":
        into = session.get(Site, int(went.ref.split("/")[1]))
        if into is not None:
            where = "this site's credit pool" if into.id == site.id else f"the credit pool of site {into.name}"
            return Conflict("key_already_redeemed", f"This voucher code was already activated{when}, into {where}; "
                            "each code can be used once.", site=into.name, site_id=into.id, **detail)
    if went is not None and went.kind == "wallet":
        return Conflict("key_already_redeemed", f"This code was already redeemed{when}, into this organization's "
                        "wallet (not a site's credit pool); each code can be used once.", **detail)
    return None


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
    else one device-year per billable device (R-MY-5); paid-through moves one year on. An
    apartment paid per device for fewer devices than it has is topped up instead: a device-year
    per device not paid for and paid year left, through the same date (``rules.pay_from_pool``)."""
    access.require_payer(session, actor, site)
    rules.check_prolongation(rule_site(site))  # a custom-model site migrates first (R-MY-1)
    history.lock_organization(session, site.org_id)
    return _pay_from_pool(session, site=site, apt=get_apartment(session, site, apartment_id), actor=actor, now=now)


def _pay_from_pool(session: Session, *, site: Site, apt: Apartment, actor: Actor, now: datetime,
                   automatic: bool = False, next_year: bool = False) -> dict[str, Any]:
    """One year of ``apt`` from the pool, or its top-up (``rules.pay_from_pool``), in the ledger
    and history (the caller holds the lock)."""
    rows = list(session.scalars(select(SiteDevice).where(SiteDevice.apartment_id == apt.id)))
    devices = [rule_device(d) for d in rows]
    if not rules.needs_license(devices):
        raise Conflict("apartment_needs_no_license",
                       "This apartment has no paid device outside local mode, so it needs no license.",
                       apartment=apt.name)
    before = credit_pool(session, site)
    try:
        payment = rules.pay_from_pool(rule_apartment(apt), devices,
                                      rules.Credit(before["apartment_years"], before["device_years"]), now,
                                      next_year=next_year)
    except rules.Refusal as refusal:
        if "device_ids" in refusal.detail:  # name them as the user knows them
            serial_of = {d.id: d.serial for d in rows}
            refusal.detail["devices_not_paid"] = [serial_of[i] for i in refusal.detail.pop("device_ids")]
        refusal.detail["apartment"] = apt.name
        raise
    take = {"apartment": payment.taken.apartment_years, "device": payment.taken.device_years}
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
                memo=f"apartment {apt.id}" + (" devices" if payment.top_up else ""))
    old, old_devices = apt.paid_through, apt.devices_paid_for
    apt.paid_through, apt.devices_paid_for = payment.paid_through, payment.devices_paid_for
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.apartment.paid",
                   object_type="my2n_apartment", object_id=apt.id,
                   before={"paid_through": old.isoformat() if old else None, "devices_paid_for": old_devices, **before},
                   after={"paid_through": apt.paid_through.isoformat(), "devices_paid_for": apt.devices_paid_for,
                          **credit_pool(session, site), **({"automatic": True} if automatic else {}),
                          **({"top_up": True} if payment.top_up else {})})
    return {"apartment": apt.name, "paid_through": apt.paid_through.isoformat(),
            "devices_paid_for": apt.devices_paid_for, "top_up": payment.top_up, "pool": credit_pool(session, site)}


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
            _pay_from_pool(session, site=site, apt=apt, actor=CREDIT_ACTOR, now=now, automatic=True, next_year=True)
    except (rules.Refusal, Conflict):
        return None
    return events.emit(session, org_id=site.org_id, type="my2n.apartments.paid", now=now, site=site.id,
                       apartments=1, credit=True)


def top_up_from_credit(session: Session, *, site: Site, apartment_id: int, paid_through: datetime,
                       devices_paid_for: int, now: datetime) -> Event | None:
    """R-MY-5: the sweep pays, from the pool, the devices of an apartment paid per device that
    its paid time does not cover (one was added, or left local mode), before they stop, when the
    site uses credit automatically. None when there is nothing to do any more: paid or changed
    meanwhile, the setting off, recurring payment on (it covers them), or not enough device-years."""
    history.lock_organization(session, site.org_id)
    session.refresh(site)
    apt = session.get(Apartment, apartment_id)
    if (apt is None or apt.site_id != site.id or apt.paid_through != paid_through
            or apt.devices_paid_for != devices_paid_for or paid_through <= now or not site.auto_credit
            or site.model != "apartment"
            or recurring_of(session, site) is not None or not unpaid_device_ids(session, [apt])):
        return None
    try:
        with session.begin_nested():
            _pay_from_pool(session, site=site, apt=apt, actor=CREDIT_ACTOR, now=now, automatic=True)
    except (rules.Refusal, Conflict):
        return None
    return events.emit(session, org_id=site.org_id, type="my2n.apartments.paid", now=now, site=site.id,
                       apartments=1, credit=True, devices=True)


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
