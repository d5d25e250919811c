"""History that reads like sentences (issue 16): one renderer per action type.

"ann@example.com allocated 12 Core licenses (AXIS-ACS-CORE-1Y) to the year 2027-01-15 –
2028-01-14 (AXIS Camera Station Pro); 0 license-days given back."

An entry keeps what was recorded (``before``/``after``, unchanged: the raw record stays for
auditors); a renderer turns it into parts of a sentence -- words, and links to the objects it
names. Internal ids never appear as words: an object is named by its name (a site, an
installation, a product) and linked to its page, or by what people know it by (a serial number,
a part number). ``Names`` holds those names, read for a whole page of entries at once in a few
grouped queries (``names_for``).

Every action type the code records has a renderer here (``RENDERERS``);
tests/test_portal_home.py reads every ``history.record(...)`` call in the code to hold that true.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from markupsafe import escape
from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from entitle.history.models import HistoryEntry
from entitle.text import plural, with_article


# --- sentences ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Link:
    text: str
    href: str


Part = str | Link


@dataclass(frozen=True, slots=True)
class Sentence:
    parts: tuple[Part, ...]

    @property
    def text(self) -> str:
        return "".join(p.text if isinstance(p, Link) else p for p in self.parts)

    def __html__(self) -> str:
        return "".join(f'<a href="{escape(p.href)}">{escape(p.text)}</a>' if isinstance(p, Link) else str(escape(p))
                       for p in self.parts)

    def __str__(self) -> str:
        return self.text


# --- areas and people --------------------------------------------------------------------------

# Area -> (what people call it, the action prefixes that belong to it).
AREAS: dict[str, tuple[str, tuple[str, ...]]] = {
    "access_commander": ("Access Commander", ("ac.",)),
    "axis": ("AXIS License Manager", ("axis.", "system.")),
    "my2n": ("My2N", ("my2n.",)),
    "wallet": ("Wallet and license keys", ("key.",)),
    "organization": ("Organization", ("organization.", "member.", "webhook.")),
    "vendor": ("Vendor", ("keys.", "catalog.", "signing_key.")),
}


def area_of(action: str) -> str:
    for area, (_label, prefixes) in AREAS.items():
        if action.startswith(prefixes):
            return area
    return "organization"


_MACHINES = {"sweep": "The scheduled sweep", "auto-credit": "Automatic use of the credit pool",
             "payment-provider": "The payment provider", "cli": "An operator at the server console"}


def person(label: str) -> str:
    """Who acted, as people read it: their e-mail, or what the machine is."""
    if label in _MACHINES:
        return _MACHINES[label]
    if label.startswith("cli:"):
        return f"An operator at the server console ({label[4:]})"
    return label


# --- names of the objects entries refer to -----------------------------------------------------

@dataclass
class Names:
    """Names and pages of the objects a page of entries refers to; anything not found is named
    by what the entry itself recorded."""

    sites: dict[int, str] = field(default_factory=dict)
    apartments: dict[int, tuple[str, int]] = field(default_factory=dict)  # id -> (name, site id)
    my2n_devices: dict[str, int] = field(default_factory=dict)  # serial -> site id (one site only)
    installations: dict[str, tuple[int, str]] = field(default_factory=dict)  # uid -> (id, name)
    ac_devices: dict[str, int] = field(default_factory=dict)  # serial -> installation id (one only)
    ac_users: dict[str, int] = field(default_factory=dict)  # user name -> installation id (one only)
    products: dict[str, str] = field(default_factory=dict)  # code -> name
    registered: set[str] = field(default_factory=set)  # product codes registered to the organization
    subscription_starts: dict[str, datetime] = field(default_factory=dict)  # product code -> start
    systems: dict[str, tuple[str, str]] = field(default_factory=dict)  # uid -> (name, product code)
    hardware: dict[str, str] = field(default_factory=dict)  # serial -> product code
    skus: dict[str, tuple[str, str]] = field(default_factory=dict)  # part number -> (name, product code)
    webhooks: dict[int, str] = field(default_factory=dict)  # endpoint id -> url
    deliveries: dict[int, int] = field(default_factory=dict)  # delivery id -> endpoint id
    users: dict[int, str] = field(default_factory=dict)  # user id -> e-mail

    # Links to the pages of the objects.
    def site(self, site_id: Any) -> Part:
        sid = _int(site_id)
        name = self.sites.get(sid) if sid is not None else None
        return Link(name, f"/my2n/sites/{sid}") if name else "a site"

    def apartment(self, apartment_id: Any) -> Part:
        aid = _int(apartment_id)
        found = self.apartments.get(aid) if aid is not None else None
        if found is None:
            return "an apartment"
        return Link(found[0], f"/my2n/sites/{found[1]}?tab=apartments")

    def installation(self, uid: Any) -> Part:
        if uid is None:
            return "an installation"
        found = self.installations.get(str(uid))
        return Link(found[1], f"/ac/installations/{found[0]}") if found else f"the installation {uid}"

    def installation_of(self, installation_id: int | None) -> Part | None:
        for uid, (iid, _name) in self.installations.items():
            if iid == installation_id:
                return self.installation(uid)
        return None

    def product(self, code: Any) -> Part:
        name = self.products.get(str(code), str(code))
        return Link(name, f"/axis/products/{code}") if str(code) in self.registered else name

    def system(self, uid: Any) -> Part:
        found = self.systems.get(str(uid))
        if found is None:
            return f"the system {uid}"
        name, code = found
        label = name if name == uid else f"{name} ({uid})"
        return Link(label, f"/axis/products/{code}?tab=setup") if code in self.registered else label

    def sku(self, part_number: Any) -> str:
        if part_number is None:
            return "licenses"
        found = self.skus.get(str(part_number))
        return f"{part_number} ({found[0]})" if found else str(part_number)

    def webhook(self, endpoint_id: Any) -> Part:
        eid = _int(endpoint_id)
        url = self.webhooks.get(eid) if eid is not None else None
        return Link(url, f"/webhooks/{eid}") if url else "a webhook"


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _unique(pairs: Iterable[tuple[str, int]]) -> dict[str, int]:
    """Key -> value where the key names one value only (a serial in two installations names none)."""
    seen: dict[str, set[int]] = {}
    for key, value in pairs:
        seen.setdefault(key, set()).add(value)
    return {k: next(iter(v)) for k, v in seen.items() if len(v) == 1}


def names_for(session: Session, org_id: int, entries: Sequence[HistoryEntry]) -> Names:
    """The names a page of entries refers to: one query per kind of object named on the page."""
    from entitle.access_commander.models import AttendanceUser, Device, Installation, SystemUser
    from entitle.axis.models import Hardware, OrgProduct
    from entitle.catalog.models import Product, Sku
    from entitle.delivery.models import WebhookDelivery, WebhookEndpoint
    from entitle.my2n.models import Apartment, Site, SiteDevice
    from entitle.systems.models import System
    from entitle.tenancy.models import User

    want: dict[str, set[Any]] = {k: set() for k in (
        "site", "apartment", "my2n_device", "installation", "ac_device", "ac_user", "product", "system", "hardware",
        "part", "webhook", "delivery", "user")}
    for e in entries:
        before, after = e.before or {}, e.after or {}
        both = {**before, **after}
        kind, oid = e.object_type, e.object_id
        target = {"my2n_site": "site", "my2n_apartment": "apartment", "my2n_device": "my2n_device",
                  "ac_installation": "installation", "ac_device": "ac_device", "ac_attendance_user": "ac_user",
                  "ac_system_user": "ac_user", "axis_product": "product", "system": "system",
                  "axis_hardware": "hardware", "webhook_endpoint": "webhook", "webhook_delivery": "delivery"}.get(kind)
        if target:
            want[target].add(oid)
        if e.action.startswith("my2n.") and "site" in both:
            want["site"].add(str(both["site"]))
        for key in ("apartment", "apartment_id"):
            for side in (before, after):
                if side.get(key) is not None:
                    want["apartment"].add(str(side[key]))
        if "installation" in both and e.action.startswith("ac."):
            want["installation"].add(str(both["installation"]))
        if "product" in both:
            want["product"].add(str(both["product"]))
        if "part_number" in both:
            want["part"].add(str(both["part_number"]))
        if "user_id" in both:
            want["user"].add(str(both["user_id"]))
    n = Names()
    ints = {k: [i for i in (_int(v) for v in vs) if i is not None] for k, vs in want.items()}
    if ints["apartment"]:
        for aid, name, sid in session.execute(select(Apartment.id, Apartment.name, Apartment.site_id).where(
                Apartment.org_id == org_id, Apartment.id.in_(ints["apartment"]))):
            n.apartments[aid] = (name, sid)
            want["site"].add(str(sid))
    if want["my2n_device"]:
        n.my2n_devices = _unique(session.execute(select(SiteDevice.serial, SiteDevice.site_id).where(
            SiteDevice.org_id == org_id, SiteDevice.serial.in_(want["my2n_device"]))))
        want["site"].update(str(s) for s in n.my2n_devices.values())
    site_ids = [i for i in (_int(v) for v in want["site"]) if i is not None]
    if site_ids:
        n.sites = dict(session.execute(select(Site.id, Site.name).where(Site.org_id == org_id,
                                                                        Site.id.in_(site_ids))).all())
    if want["ac_device"]:
        n.ac_devices = _unique(session.execute(select(Device.serial, Device.installation_id).where(
            Device.org_id == org_id, Device.serial.in_(want["ac_device"]))))
    if want["ac_user"]:
        attendance = session.execute(select(AttendanceUser.name, AttendanceUser.installation_id).where(
            AttendanceUser.org_id == org_id, AttendanceUser.name.in_(want["ac_user"])))
        system_users = session.execute(select(SystemUser.name, SystemUser.installation_id).where(
            SystemUser.org_id == org_id, SystemUser.name.in_(want["ac_user"])))
        n.ac_users = _unique([*attendance, *system_users])
    installation_ids = set(n.ac_devices.values()) | set(n.ac_users.values())
    if want["installation"] or installation_ids:
        for iid, uid, name in session.execute(select(Installation.id, Installation.uid, Installation.name).where(
                Installation.org_id == org_id,
                Installation.uid.in_(want["installation"]) | Installation.id.in_(installation_ids))):
            n.installations[uid] = (iid, name)
    if want["system"]:
        for uid, name, code in session.execute(select(System.uid, System.name, System.product).where(
                System.org_id == org_id, System.uid.in_(want["system"]))):
            n.systems[uid] = (name, code)
            want["product"].add(code)
    if want["hardware"]:
        for serial, pid in session.execute(select(Hardware.serial, Hardware.product_id).where(
                Hardware.org_id == org_id, Hardware.serial.in_(want["hardware"]))):
            n.hardware[serial] = str(pid)
    if want["part"]:
        for part, name, code in session.execute(select(Sku.part_number, Sku.name, Product.code).join(Product)
                                                .where(Sku.part_number.in_(want["part"]))):
            n.skus[part] = (name, code)
    if want["product"] or n.hardware:
        hardware_products = [int(p) for p in n.hardware.values()]
        codes: dict[int, str] = {}
        for pid, code, name, registered, start in session.execute(
                select(Product.id, Product.code, Product.name, OrgProduct.id, OrgProduct.subscription_start)
                .outerjoin(OrgProduct, and_(OrgProduct.product_id == Product.id, OrgProduct.org_id == org_id))
                .where(or_(Product.code.in_(want["product"]), Product.id.in_(hardware_products)))):
            codes[pid], n.products[code] = code, name
            if registered is not None:
                n.registered.add(code)
            if start is not None:
                n.subscription_starts[code] = start
        n.hardware = {serial: codes.get(int(pid), "") for serial, pid in n.hardware.items()}
    if ints["delivery"]:
        n.deliveries = dict(session.execute(select(WebhookDelivery.id, WebhookDelivery.endpoint_id).where(
            WebhookDelivery.org_id == org_id, WebhookDelivery.id.in_(ints["delivery"]))).all())
    webhook_ids = set(ints["webhook"]) | set(n.deliveries.values())
    if webhook_ids:
        n.webhooks = dict(session.execute(select(WebhookEndpoint.id, WebhookEndpoint.url).where(
            WebhookEndpoint.org_id == org_id, WebhookEndpoint.id.in_(webhook_ids))).all())
    if ints["user"]:
        n.users = dict(session.execute(select(User.id, User.email).where(User.id.in_(ints["user"]))).all())
    return n


# --- words -------------------------------------------------------------------------------------

def day(value: Any) -> str:
    """2026-01-15, from a stored moment (an ISO string or a datetime)."""
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d") if moment else "—"


def when(value: Any) -> str:
    """2026-01-15 09:00 UTC: a moment in history, to the minute (never microseconds)."""
    moment = _moment(value)
    return moment.strftime("%Y-%m-%d %H:%M UTC") if moment else "—"


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


def _type(value: Any) -> str:
    """A license type as the source writes it: Core, Universal."""
    return str(value).replace("_", " ").capitalize() if value else "—"


def _label(value: Any) -> str:
    return str(value).replace("_", " ") if value is not None else "—"


_DEVICE_TYPES = {"ip_intercom": "IP intercom", "access_unit": "access unit", "answering_unit": "answering unit",
                 "lift_module": "lift module", "other": "device"}
_MY2N_KINDS = {"intercom": "intercom", "answering_unit": "2N answering unit", "phone": "phone", "tablet": "tablet",
               "third_party": "third-party device"}
_MODELS = {"custom": "the custom model", "apartment": "the apartment model"}
_ROLES = {"site_admin": "site admin", "apartment_admin": "apartment admin", "owner": "owner", "admin": "admin",
          "viewer": "viewer"}


def _counts(values: dict[str, Any] | None, noun: str = "device") -> str:
    """{'core': 12, 'universal': 2} -> "12 Core devices and 2 Universal devices" """
    items = [f"{int(n):,} {_type(t)} {noun if int(n) == 1 else noun + 's'}" for t, n in (values or {}).items()]
    if not items:
        return f"no {noun}s"
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _capacity(capacity: dict[str, Any] | None) -> str:
    c = capacity or {}
    owned = [plural(c.get("devices"), "device"), plural(c.get("attendance_users"), "Attendance user")]
    if c.get("integration"):
        owned.append("integration (LDAP + CSV synchronisation)")
    return ", ".join(owned)


def _packages(packages: Any) -> str:
    lines = [f"{int(p.get('quantity', 0)):,} × {p.get('part_number')}" for p in packages or [] if isinstance(p, dict)]
    return ", ".join(lines)


# --- the renderers -----------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Entry:
    """What a renderer reads of an entry."""

    action: str
    who: str
    object_type: str
    object_id: str
    before: dict[str, Any]
    after: dict[str, Any]


Renderer = Callable[[Entry, Names], list[Part]]
RENDERERS: dict[str, Renderer] = {}


def renders(*actions: str) -> Callable[[Renderer], Renderer]:
    def register(fn: Renderer) -> Renderer:
        for action in actions:
            if action in RENDERERS:
                raise ValueError(f"two renderers for {action}")
            RENDERERS[action] = fn
        return fn
    return register


# The organization and its people.

@renders("organization.created")
def _org_created(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" created the organization {e.after.get('name') or '—'} (region {e.after.get('region') or '—'})"]


@renders("member.set")
def _member_set(e: Entry, n: Names) -> list[Part]:
    role = _ROLES.get(str(e.after.get("role")), _label(e.after.get("role") or "member"))
    if e.before and e.before.get("role"):
        old = _ROLES.get(str(e.before["role"]), str(e.before["role"]))
        return [e.who, f" changed the role of {e.object_id} from {old} to {role}"]
    return [e.who, f" made {e.object_id} {with_article(role)} of the organization"]


@renders("member.removed")
def _member_removed(e: Entry, n: Names) -> list[Part]:
    role = _ROLES.get(str(e.before.get("role")), "") if e.before.get("role") else ""
    was = f" (they were {with_article(role)})" if role else ""
    return [e.who, f" removed {e.object_id} from the organization{was}"]


@renders("webhook.endpoint.created")
def _webhook_created(e: Entry, n: Names) -> list[Part]:
    types = e.after.get("event_types") or []
    which = "every event" if not types else ", ".join(types)
    return [e.who, " added the webhook ", n.webhook(e.object_id) if n.webhooks else str(e.after.get("url", "")),
            f" for {which}"]


@renders("webhook.endpoint.updated")
def _webhook_updated(e: Entry, n: Names) -> list[Part]:
    changes = []
    if e.before.get("active") != e.after.get("active") and "active" in e.after:
        changes.append("turned it on" if e.after["active"] else "turned it off")
    if e.before.get("event_types") != e.after.get("event_types") and "event_types" in e.after:
        types = e.after["event_types"] or []
        changes.append("it now receives " + ("every event" if not types else ", ".join(types)))
    if e.before.get("description") != e.after.get("description") and "description" in e.after:
        changes.append("changed its description")
    target = n.webhook(e.object_id) if n.webhooks else str(e.after.get("url", ""))
    return [e.who, " changed the webhook ", target, (": " + "; ".join(changes)) if changes else ""]


@renders("webhook.endpoint.tested")
def _webhook_tested(e: Entry, n: Names) -> list[Part]:
    return [e.who, " sent a test event to the webhook ", n.webhook(e.object_id)]


@renders("webhook.delivery.redelivered")
def _webhook_redelivered(e: Entry, n: Names) -> list[Part]:
    endpoint = n.deliveries.get(_int(e.object_id) or 0)
    return [e.who, " asked for an event to be delivered again to the webhook ", n.webhook(endpoint)]


# Vendor: catalog, license keys, signing keys.

@renders("catalog.loaded")
def _catalog_loaded(e: Entry, n: Names) -> list[Part]:
    a = e.after
    return [e.who, f" loaded the catalog: {plural(a.get('products_created', 0), 'product')} added and "
                   f"{a.get('products_updated', 0):,} updated, {plural(a.get('skus_created', 0), 'part number')} "
                   f"added and {a.get('skus_updated', 0):,} updated"]


@renders("keys.minted")
def _keys_minted(e: Entry, n: Names) -> list[Part]:
    a = e.after
    keys = plural(a.get("count"), "license key")
    return [e.who, f" minted {keys} of {_int(a.get('quantity_per_key')) or 1:,} × ", n.sku(a.get("part_number")),
            f": {plural(_int(a.get('units')) or 0, 'unit')} in all"]


@renders("key.redeemed")
def _key_redeemed(e: Entry, n: Names) -> list[Part]:
    part = e.after.get("part_number") or e.before.get("part_number")
    units = _int(e.after.get("wallet", 0)) or 0
    added = units - (_int(e.before.get("wallet", 0)) or 0)
    if e.after.get("into"):
        where = {"hardware_license": "onto the hardware it came with", "site_credit": "into a site's credit pool"}
        return [e.who, f" redeemed a license key for {added:,} × " if added > 0 else " redeemed a license key of ",
                n.sku(part), " ", where.get(str(e.after["into"]), "into " + _label(e.after["into"]))]
    return [e.who, f" redeemed a license key: {added:,} × ", n.sku(part), " ",
            Link("into the wallet", "/wallet"), f", which now holds {units:,} of them"]


@renders("key.cancelled")
def _key_cancelled(e: Entry, n: Names) -> list[Part]:
    return [e.who, " cancelled a license key: it can no longer be redeemed"]


@renders("signing_key.rotated")
def _signing_key_rotated(e: Entry, n: Names) -> list[Part]:
    old = f" (replacing {e.before['kid']}; files signed with it still verify)" if e.before.get("kid") else ""
    return [e.who, f" rotated the signing key: new licenses are signed with {e.after.get('kid', e.object_id)}{old}"]


# Access Commander.

@renders("ac.installation.created")
def _ac_installation_created(e: Entry, n: Names) -> list[Part]:
    return [e.who, " registered the Access Commander installation ", n.installation(e.object_id)]


@renders("ac.device.added")
def _ac_device_added(e: Entry, n: Names) -> list[Part]:
    kind = _DEVICE_TYPES.get(str(e.after.get("type")), "device")
    return [e.who, f" added the {kind} {e.object_id} to ", n.installation(e.after.get("installation"))]


def _ac_where(e: Entry, n: Names, table: dict[str, int]) -> list[Part]:
    found = n.installation_of(table.get(e.object_id))
    return [" in ", found] if found is not None else []


@renders("ac.license.added")
def _ac_license_added(e: Entry, n: Names) -> list[Part]:
    a = e.after
    verb = " added a license file to " if a.get("added") == "file" else " generated a license for "
    replaced = "; it replaces the previous license whole" if e.before.get("license") else ""
    packages = _packages(a.get("packages"))
    return [e.who, verb, n.installation(e.object_id), f" on the license device {a.get('license_device') or '—'}: "
            f"{_capacity(a.get('capacity'))}" + (f" ({packages})" if packages else "") + replaced
            + ". Every device is inactive until the license device is activated"]


@renders("ac.license.recovered")
def _ac_license_recovered(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" recovered the suspended license by activating the license device {e.object_id}",
            *_ac_where(e, n, n.ac_devices)]


@renders("ac.device.activated")
def _ac_device_activated(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" activated the device {e.object_id}", *_ac_where(e, n, n.ac_devices)]


@renders("ac.device.deactivated")
def _ac_device_deactivated(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" deactivated the device {e.object_id}", *_ac_where(e, n, n.ac_devices)]


@renders("ac.attendance.monitored", "ac.attendance.unmonitored")
def _ac_attendance(e: Entry, n: Names) -> list[Part]:
    verb = "started" if e.action.endswith(".monitored") else "stopped"
    return [e.who, f" {verb} monitoring the attendance of {e.object_id}", *_ac_where(e, n, n.ac_users)]


@renders("ac.system_user.added")
def _ac_system_user_added(e: Entry, n: Names) -> list[Part]:
    admin = " as an administrator" if e.after.get("admin") else ""
    return [e.who, f" added the system user {e.object_id}{admin}", *_ac_where(e, n, n.ac_users)]


@renders("ac.system_user.changed")
def _ac_system_user_changed(e: Entry, n: Names) -> list[Part]:
    what = f" made {e.object_id} an administrator" if e.after.get("admin") else \
        f" took the administrator role from {e.object_id}"
    return [e.who, what, *_ac_where(e, n, n.ac_users)]


# AXIS License Manager.

def _year(n: Names, code: Any, index: Any, years: int = 1) -> str:
    """The year 2027-01-15 – 2028-01-14 (its start and its last day), from the product's
    subscription start; "subscription year 2" when that is not known."""
    from entitle.axis import rules

    i = _int(index)
    start = n.subscription_starts.get(str(code))
    if i is None:
        return "a subscription year"
    if start is None:
        return f"subscription year {i + 1}" if years == 1 else f"subscription years {i + 1} to {i + years}"
    first, last = rules.year(start, i), rules.year(start, i + years - 1)
    span = f"{day(first.start)} – {day(last.end - timedelta(days=1))}"
    return f"the year {span}" if years == 1 else f"the {years} years {span}"


@renders("axis.product.registered")
def _axis_product_registered(e: Entry, n: Names) -> list[Part]:
    trial = f"; its trial runs until {day(e.after['trial_ends_at'])}" if e.after.get("trial_ends_at") else ""
    return [e.who, " registered ", n.product(e.object_id), f" to the organization{trial}"]


@renders("system.registered", "system.updated")
def _system_registered(e: Entry, n: Names) -> list[Part]:
    a = e.after
    if "need" in a:  # an offline system, from its system file
        verb = " registered the offline system " if e.action == "system.registered" else " updated the offline system "
        until = f"; its license file is valid until {when(a['license_expires'])}" if a.get("license_expires") else ""
        return [e.who, verb, n.system(e.object_id),
                f" from its system file: it needs {_counts(a.get('need'), 'license')}{until}"]
    product = [" of ", n.product(a["product"])] if a.get("product") else []
    return [e.who, " registered the system ", n.system(e.object_id), *product]


@renders("axis.devices.added")
def _axis_devices_added(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" added {_counts(e.after.get('added'))} to the system ", n.system(e.object_id)]


@renders("axis.devices.removed")
def _axis_devices_removed(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" removed {plural(_int(e.after.get('removed')) or 0, 'device')} from the system ",
            n.system(e.object_id)]


@renders("axis.subscription.started")
def _axis_subscription_started(e: Entry, n: Names) -> list[Part]:
    a = e.after
    return [e.who, " started the subscription for ", n.product(e.object_id),
            f": subscription years run from {day(a.get('subscription_start'))}; the grace period ends on "
            f"{day(a.get('grace_end'))}"]


@renders("axis.allocated")
def _axis_allocated(e: Entry, n: Names) -> list[Part]:
    a = e.after
    units, years = _int(a.get("units")) or 0, _int(a.get("term_years")) or 1
    back = _int(a.get("compensation_license_days")) or 0
    credited = _int(a.get("compensation_units")) or 0
    returned = f" ({plural(credited, 'license')} back to the wallet)" if credited else ""
    part = f"({a['part_number']}) " if a.get("part_number") else ""
    return [e.who, f" allocated {units:,} {_type(a.get('license_type'))} license{'s' if units != 1 else ''} "
            f"{part}to {_year(n, e.object_id, a.get('year'), years)} (", n.product(e.object_id),
            f"); {plural(back, 'license-day')} given back{returned}"]


@renders("axis.upgraded")
def _axis_upgraded(e: Entry, n: Names) -> list[Part]:
    a = e.after
    part = f"{a['part_number']}, " if a.get("part_number") else ""
    return [e.who, f" upgraded {plural(_int(a.get('units')) or 0, _type(a.get('from')) + ' license')} of "
            f"{_year(n, e.object_id, a.get('year'))} to {_type(a.get('to'))} ({part}", n.product(e.object_id), ")"]


@renders("axis.units.expired")
def _axis_units_expired(e: Entry, n: Names) -> list[Part]:
    units = _int(e.before.get("units")) or 0
    part = e.before.get("part_number")
    return [e.who, f" recorded that {plural(units, 'license')} of ", n.sku(part),
            f" expired in the wallet on {day(e.after.get('expired_at'))}: unallocated licenses stay in the wallet "
            "at most five years"]


@renders("axis.hardware.registered")
def _axis_hardware_registered(e: Entry, n: Names) -> list[Part]:
    a = e.after
    preloaded = _int(a.get("preloaded_units")) or 0
    with_licenses = f" with {preloaded:,} preloaded {_type(a.get('license_type'))} license" \
                    f"{'s' if preloaded != 1 else ''}" if preloaded else f" for {_type(a.get('license_type'))} devices"
    code = n.hardware.get(e.object_id)
    return [e.who, f" registered the hardware {e.object_id}{with_licenses}",
            *([" (", n.product(code), ")"] if code else [])]


@renders("axis.hardware.expanded")
def _axis_hardware_expanded(e: Entry, n: Names) -> list[Part]:
    a = e.after
    return [e.who, f" allocated {plural(_int(a.get('units')) or 0, 'expansion license')} to the hardware "
            f"{e.object_id} for its lifetime; it now holds {plural(_int(a.get('licenses')) or 0, 'license')}"]


# My2N.

@renders("my2n.site.created")
def _my2n_site_created(e: Entry, n: Names) -> list[Part]:
    model = _MODELS.get(str(e.after.get("model")), "")
    return [e.who, " created the site ", n.site(e.object_id) if n.sites.get(_int(e.object_id) or 0)
            else str(e.after.get("name", "")), f" with {model}" if model else ""]


@renders("my2n.site.imported")
def _my2n_site_imported(e: Entry, n: Names) -> list[Part]:
    a = e.after
    done = [f"{a[k]:,} {label}" for k, label in (("apartments_created", "apartments created"),
                                                 ("devices_added", "devices added"),
                                                 ("devices_assigned", "devices moved"),
                                                 ("local_mode_changed", "local mode changes")) if a.get(k)]
    return [e.who, f" imported {plural(_int(a.get('rows')) or 0, 'row')} of a CSV file into ", n.site(e.object_id),
            (": " + ", ".join(done)) if done else ": nothing to change"]


@renders("my2n.site.model_changed")
def _my2n_model_changed(e: Entry, n: Names) -> list[Part]:
    a = e.after
    old, new = _MODELS.get(str(e.before.get("model")), "its model"), _MODELS.get(str(a.get("model")), "")
    return [e.who, " changed the business model of ", n.site(e.object_id), f" from {old} to {new}; "
            f"{plural(_int(a.get('users_logged_out')) or 0, 'user')} logged out and must sign in again"]


@renders("my2n.site.type_chosen")
def _my2n_type_chosen(e: Entry, n: Names) -> list[Part]:
    return [e.who, f" chose the site type {_label(e.after.get('site_type'))} for ", n.site(e.object_id)]


@renders("my2n.site.region_changed")
def _my2n_region_changed(e: Entry, n: Names) -> list[Part]:
    part = (f": its apartment licenses are ordered as part {e.after['part_number']}" if e.after.get("part_number")
            else "")
    return [e.who, " moved ", n.site(e.object_id), f" from region {e.before.get('region', '—')} to region "
            f"{e.after.get('region', '—')}{part}"]


@renders("my2n.site.auto_credit")
def _my2n_auto_credit(e: Entry, n: Names) -> list[Part]:
    how = "to pay an apartment automatically on the day it would lapse" if e.after.get("auto_credit") else \
        "only when someone pays an apartment from it"
    return [e.who, " set the credit pool of ", n.site(e.object_id), f" to be used {how}"]


@renders("my2n.site_role.granted")
def _my2n_role_granted(e: Entry, n: Names) -> list[Part]:
    a = e.after
    email = n.users.get(_int(a.get("user_id")) or 0, "a user")
    role = _ROLES.get(str(a.get("role")), _label(a.get("role")))
    apartment = [" of the apartment ", n.apartment(a["apartment_id"])] if a.get("apartment_id") else []
    payments = " with the payments permission" if a.get("payments") else ""
    return [e.who, f" made {email} {with_article(role)}", *apartment, " on ", n.site(e.object_id), payments]


@renders("my2n.site_role.revoked")
def _my2n_role_revoked(e: Entry, n: Names) -> list[Part]:
    email = n.users.get(_int(e.before.get("user_id")) or 0, "a user")
    role = _ROLES.get(str(e.before.get("role")), "role")
    return [e.who, f" took the {role} role on ", n.site(e.object_id), f" from {email}"]


@renders("my2n.apartment.created")
def _my2n_apartment_created(e: Entry, n: Names) -> list[Part]:
    name = n.apartment(e.object_id)
    return [e.who, " created the apartment ", name if isinstance(name, Link) else str(e.after.get("name", "")),
            " on ", n.site(e.after.get("site"))]


@renders("my2n.apartment.paid")
def _my2n_apartment_paid(e: Entry, n: Names) -> list[Part]:
    how = "automatically paid" if e.after.get("automatic") else "paid"
    return [e.who, f" {how} a year of the apartment ", n.apartment(e.object_id),
            f" from the credit pool: its license is paid through {day(e.after.get('paid_through'))}"]


def _my2n_site_of_device(e: Entry, n: Names) -> Part:
    return n.site(e.after.get("site") or e.before.get("site") or n.my2n_devices.get(e.object_id))


@renders("my2n.device.added")
def _my2n_device_added(e: Entry, n: Names) -> list[Part]:
    a = e.after
    kind = _MY2N_KINDS.get(str(a.get("kind")), "device")
    into = [" in the apartment ", n.apartment(a["apartment"])] if a.get("apartment") else []
    local = " in local mode" if a.get("local_mode") else ""
    return [e.who, f" added the {kind} {e.object_id}{local} to ", _my2n_site_of_device(e, n), *into]


@renders("my2n.device.assigned")
def _my2n_device_assigned(e: Entry, n: Names) -> list[Part]:
    old, new = e.before.get("apartment"), e.after.get("apartment")
    if old and new:
        return [e.who, f" moved the device {e.object_id} from the apartment ", n.apartment(old), " to ",
                n.apartment(new)]
    if new:
        return [e.who, f" assigned the device {e.object_id} to the apartment ", n.apartment(new)]
    return [e.who, f" took the device {e.object_id} out of the apartment ", n.apartment(old)]


@renders("my2n.device.removed")
def _my2n_device_removed(e: Entry, n: Names) -> list[Part]:
    b = e.before
    kind = _MY2N_KINDS.get(str(b.get("kind")), "device")
    out_of = [" (it was in the apartment ", n.apartment(b["apartment"]), ")"] if b.get("apartment") else []
    return [e.who, f" removed the {kind} {e.object_id} from ", _my2n_site_of_device(e, n), *out_of]


@renders("my2n.device.local_mode")
def _my2n_local_mode(e: Entry, n: Names) -> list[Part]:
    on = e.after.get("local_mode")
    what = "on: it needs no license" if on else "off: it needs the apartment's license"
    return [e.who, f" turned local mode {what} (the device {e.object_id} on ", _my2n_site_of_device(e, n), ")"]


@renders("my2n.voucher.activated")
def _my2n_voucher(e: Entry, n: Names) -> list[Part]:
    a = e.after
    years = _int(a.get("years")) or 0
    what = plural(years, "device-year") if a.get("scope") == "device" else plural(years, "apartment-year")
    code = f" of {a['part_number']}" if a.get("part_number") else ""
    return [e.who, f" activated a voucher code{code}: {what} added to the credit pool of ",
            n.site(e.object_id)]


@renders("my2n.card.set")
def _my2n_card(e: Entry, n: Names) -> list[Part]:
    old = f" (was {e.before['card']})" if e.before.get("card") else ""
    return [e.who, f" set the card {e.after.get('card') or '—'}{old} for the payments of ", n.site(e.object_id)]


@renders("my2n.recurring.activated")
def _my2n_recurring_on(e: Entry, n: Names) -> list[Part]:
    a = e.after
    return [e.who, " turned on automatic recurring payment for ", n.site(e.object_id),
            f": {plural(_int(a.get('apartments')) or 0, 'apartment')}, renewed every year on {day(a.get('renews_at'))}"]


@renders("my2n.recurring.deactivated")
def _my2n_recurring_off(e: Entry, n: Names) -> list[Part]:
    why = {"renewal_not_paid": ": the yearly renewal was not paid within the retry window",
           "provider": ": the payment provider ended the subscription"}.get(str(e.after.get("by")), "")
    return [e.who, " turned off automatic recurring payment for ", n.site(e.object_id), why]


@renders("my2n.recurring.quantity_changed")
def _my2n_recurring_quantity(e: Entry, n: Names) -> list[Part]:
    return [e.who, " changed the recurring payment of ", n.site(e.object_id),
            f" to {plural(_int(e.after.get('apartments')) or 0, 'apartment')} (it was "
            f"{_int(e.before.get('apartments')) or 0:,})"]


@renders("my2n.recurring.renewed")
def _my2n_recurring_renewed(e: Entry, n: Names) -> list[Part]:
    return [e.who, " renewed the recurring payment of ", n.site(e.object_id),
            f" for {plural(_int(e.after.get('apartments')) or 0, 'apartment')}, until {day(e.after.get('renews_at'))}"]


@renders("my2n.card_payment.received")
def _my2n_payment_received(e: Entry, n: Names) -> list[Part]:
    a = e.after
    purpose = {"activation": " when recurring payment was turned on", "added": " for apartments that joined",
               "renewal": " for the yearly renewal"}.get(str(a.get("purpose")), "")
    return [e.who, f" reported a card payment{purpose} for {plural(_int(a.get('apartments')) or 0, 'apartment')} of ",
            n.site(e.object_id)]


@renders("my2n.card_payment.failed")
def _my2n_payment_failed(e: Entry, n: Names) -> list[Part]:
    a = e.after
    reason = f" ({a['message']})" if a.get("message") else ""
    until = f"; the apartments not paid keep working until {day(a['works_until'])}" if a.get("works_until") else ""
    return [e.who, " reported a declined card payment for ", n.site(e.object_id), f"{reason}{until}"]


# --- rendering entries -------------------------------------------------------------------------

def _generic(e: Entry, n: Names) -> list[Part]:
    # Never shown for an action the code records (a test holds every one to a renderer); kept
    # for entries of actions that no longer exist.
    return [e.who, f" did {e.action.replace('.', ' ').replace('_', ' ')} on {_label(e.object_type)} {e.object_id}"]


def render(entry: HistoryEntry, names: Names | None = None) -> Sentence:
    e = Entry(entry.action, person(entry.actor), entry.object_type, entry.object_id, entry.before or {},
              entry.after or {})
    parts = [p for p in RENDERERS.get(entry.action, _generic)(e, names or Names()) if p != ""]
    last = parts[-1] if parts else ""
    if not (last.text if isinstance(last, Link) else last).endswith("."):
        parts.append(".")
    return Sentence(tuple(parts))


@dataclass(frozen=True, slots=True)
class Line:
    """One entry as the pages and the CSV export show it."""

    entry: HistoryEntry
    sentence: Sentence
    area: str

    @property
    def who(self) -> str:
        return person(self.entry.actor)

    @property
    def when(self) -> str:
        return when(self.entry.at)

    @property
    def area_label(self) -> str:
        return AREAS.get(self.area, ("Organization",))[0]


def lines(session: Session, org_id: int, entries: Sequence[HistoryEntry]) -> list[Line]:
    names = names_for(session, org_id, entries)
    return [Line(e, render(e, names), area_of(e.action)) for e in entries]
