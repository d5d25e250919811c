"""My2N apartment-license pages (SPEC §4, R-MY-1 … R-MY-6): the company's Sites list, and per
site its tabs Site dashboard, Apartments (with CSV export and import), Migration (custom-model
sites and the sites migrated from it), Vouchers, Payments and People (site roles); plus the
vendor-support page where 2N Tech Support (the issuer)
changes a custom-model site to the apartment model, and mints distributors' voucher batches.

Like the AXIS pages, every action re-renders the site's page on the tab where it was asked (only
its content for htmx) with the outcome in the section it belongs to; a refusal keeps the page and
shows the error's code and message there. Who may do what is the services' decision
(``entitle.my2n.access``: company admins, site admins, apartment admins, the payments
permission); the pages only leave out the forms a user could not use, and prices for those who
do not pay.

Paying an apartment-year from the site credit pool moves units, so its form carries a one-time
nonce that is the idempotency key: a re-posted form replays the first answer instead of paying
twice. Minting a voucher batch does the same (the codes are shown once: a replay names the batch
without them). A voucher code is used once by nature; a card payment is keyed by the billing
service; importing the same CSV file twice changes nothing the second time (rows that name what
the site already has are kept as they are).

The People tab lists the site's admins and apartment admins; company admins (the organization's
owners and admins) give and take away those roles there. The Apartments tab exports the site as
CSV and imports a file all or nothing, listing every refused row (``entitle.my2n.csvio``).
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.api.deps import client_id
from entitle.db import reading, transaction
from entitle.errors import EntitleError, NotFound
from entitle.my2n import access, billing, board, csvio, rules
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, Site, SiteDevice, VoucherBatch
from entitle.platform import idempotency
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import User
from entitle.text import plural
from entitle.web import charts
from entitle.web.views import (
    MAX_WEB_MINT,
    PAGE_HEADERS,
    csv_download,
    shown_codes,
    AnyViewer,
    OrgChoice,
    PostingViewer,
    Viewer,
    WebRoute,
    _ctx,
    render,
    templates,
)

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# Where the organization switcher goes: a site belongs to one organization.
SWITCH_NEXT = "/my2n"
KIND_NAMES = {"intercom": "Intercom", "answering_unit": "2N answering unit", "phone": "Phone", "tablet": "Tablet",
              "third_party": "Third-party device"}
MODEL_NAMES = {"apartment": "Apartment model", "custom": "Custom model (retired)"}
# Point 10: an apartment never paid is "Not paid"; "Lapsed" is a license that ended.
STATE_NAMES = {"not_paid": "Not paid", "lapsed": "Lapsed", "partly_paid": "Partly paid",
               "lapsing_soon": "Lapses soon", "paid": "Paid", "no_license_needed": "No license needed"}
ROLE_NAMES = {"site_admin": "Site admin", "apartment_admin": "Apartment admin"}
# The voucher parts (R-MY-3, R-MY-5): 9137958, and 02683-001 for US & APAC sites.
VOUCHER_PARTS = {rules.PART_DEFAULT: "My2N Annual Apartment Subscription",
                 rules.PART_US_APAC: "My2N Annual Apartment Subscription, US & APAC"}
VOUCHER_SCOPES = {"apartment": "Per apartment (apartment-years)", "device": "Per device (device-years)"}
RECENT_BATCHES = 50
REGION_NAMES = {"EU": "EU (Europe)", "US": "US (United States)", "APAC": "APAC (Asia-Pacific)",
                "LATAM": "LATAM (Latin America)", "MEA": "MEA (Middle East and Africa)"}


# --- formatting ------------------------------------------------------------------------------

def _day(value: str | datetime | None) -> str:
    """A date as the pages show it: 2026-01-15."""
    if not value:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d")


def _label(value: str | None) -> str:
    return value.replace("_", " ").capitalize() if value else "—"


def _money(minor: int | None, currency: str | None) -> str:
    return "—" if minor is None else f"{minor / 100:,.2f} {(currency or '').upper()}".strip()


templates.env.filters.update(my2n_day=_day, my2n_moment=lambda v: rules.moment_text(
                                 datetime.fromisoformat(v) if isinstance(v, str) else v) if v else "—",
                             my2n_kind=lambda k: KIND_NAMES.get(k, _label(k)),
                             my2n_model=lambda m: MODEL_NAMES.get(m, m), my2n_label=_label, my2n_money=_money)


# --- what the pages show -----------------------------------------------------------------------

def _member_org(viewer: Viewer) -> OrgChoice:
    org = viewer.require_org()
    viewer.actor.require_member(org.id)
    return org


def _apartment_id(s: Session, site: Site, name: str) -> int | None:
    """The apartment a form names (the forms take the name: a site can have hundreds of
    apartments, too many for a list in every row); empty is none."""
    return my2n.apartment_by_name(s, site, name).id if name.strip() else None


def _device_row(d: SiteDevice) -> dict[str, Any]:
    return {"serial": d.serial, "kind": d.kind, "local_mode": d.local_mode, "apartment_id": d.apartment_id,
            "paid": d.kind in rules.PAID_KINDS}


def _apartments(s: Session, site: Site) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The site's apartments (with the dashboard's counts: paid devices, whether it needs a
    license) and their devices, and the devices outside every apartment."""
    out: list[dict[str, Any]] = [
        {"id": i, "name": name, "paid_through": paid_through, "paid_devices": paid, "needs_license": billable > 0,
         "devices": []} for i, name, paid_through, paid, billable, _ in board.apartment_rows(s, site)]
    by_id = {a["id"]: a for a in out}
    loose: list[dict[str, Any]] = []
    for d in my2n.devices_of(s, site):
        (loose if d.apartment_id is None else by_id[d.apartment_id]["devices"]).append(_device_row(d))
    return out, loose


def _tabs(site: Site) -> dict[str, str]:
    tabs = {"dashboard": "Site dashboard", "apartments": "Apartments"}
    if site.model == "custom" or site.model_changed_at is not None:
        tabs["migration"] = "Migration"
    tabs.update(vouchers="Vouchers", payments="Payments", people="People")
    return tabs


def _people(s: Session, site: Site, org_id: int, company: bool) -> dict[str, Any]:
    """The People tab: the site's roles (with their apartments' names), and for a company admin
    the organization's members to choose from and the apartment names."""
    roles = access.site_roles(s, site)
    ids = {r["apartment_id"] for r in roles if r["apartment_id"] is not None}
    names: dict[int, str] = {}
    if ids:
        names = {i: n for i, n in s.execute(select(Apartment.id, Apartment.name).where(Apartment.id.in_(ids)))}
    out: dict[str, Any] = {"roles": [{**r, "apartment": names.get(r["apartment_id"])} for r in roles]}
    if company:
        out["members"] = sorted((m.user.email, m.role) for m in tenancy.members(s, org_id))
        out["apartment_names"] = [a.name for a in my2n.apartments_of(s, site)]
    return out


def _page(request: Request, viewer: Viewer, site_id: int, tab: str, *, status: int = 200,
          where: str | None = None, message: str | None = None, error: EntitleError | None = None,
          form: dict[str, Any] | None = None) -> Response:
    """The site's page on ``tab``; ``where`` names the section an outcome belongs to."""
    ctx = _ctx(request)
    org = _member_org(viewer)
    now = ctx.clock.now()
    page: dict[str, Any] = {}
    with reading(ctx.sessions) as s:
        site = my2n.get_site(s, org.id, site_id)
        tabs = _tabs(site)
        if tab not in tabs:
            tab = "dashboard"
        info = my2n.site_to_dict(site, now)
        # ``company``: a company admin (the organization's owner or admin), who gives site roles.
        may = access.permissions(s, viewer.actor, site)
        if tab in ("dashboard", "vouchers"):
            page["board"] = board.dashboard(s, site=site, now=now)
        if tab == "dashboard" and may["company"]:
            page["region_lock"] = my2n.region_lock(s, site)
        if tab == "apartments":
            apartments, page["loose"] = _apartments(s, site)
            page.update(apartments=apartments, apartment_names=[a["name"] for a in apartments])
            page["my_apartment"] = next((a["name"] for a in apartments if a["id"] == may["apartment"]), None)
        if tab == "migration":
            # The service's checklist, with what the device rows show of each device.
            left = {d["serial"] for d in my2n.migration_check(s, site=site)}
            page["unassigned"] = [_device_row(d) for d in my2n.devices_of(s, site) if d.serial in left]
            page["apartment_names"] = [a.name for a in my2n.apartments_of(s, site)]
        if tab == "vouchers":
            page["pool"] = my2n.credit_pool(s, site)
        if tab == "payments":
            price_minor, currency = ctx.settings.apartment_year_price(site.region)  # the site's region's
            page["plan"] = billing.plan_to_dict(s, site=site, actor=viewer.actor, now=now, price_minor=price_minor,
                                                currency=currency)
            page["payments"] = billing.payments_of(s, site)
            if page["plan"]["may_pay"] and not page["plan"]["recurring"]:
                page["preview"] = billing.activation_preview(s, site=site, actor=viewer.actor, now=now,
                                                             provider=ctx.payments)
        if tab == "people":
            page.update(_people(s, site, org.id, may["company"]))
    if tab == "dashboard":
        page["state_of"] = {r["name"]: r["state"] for r in page["board"]["rows"]}
        b = page["board"]
        stopped = [*b["lapsed"], *b.get("not_paid", [])]
        page["charts"] = [c for c in (charts.my2n_paid_through(b["rows"], stopped, now),
                                      charts.my2n_billable(b["apartments"], b["needing_license"])) if c]
    return render(request, "my2n_site.html", viewer=viewer, active="my2n", status=status, org=org, site=info,
                  regions=REGION_NAMES, part=rules.part_number(info["region"]),
                  tab=tab, tabs=tabs, may=may, kinds=my2n.KINDS, kind_names=KIND_NAMES, state_names=STATE_NAMES,
                  role_names=ROLE_NAMES, csv_columns=csvio.COLUMNS,
                  site_types=my2n.SITE_TYPES, nonce=secrets.token_urlsafe(18), where=where, message=message,
                  error=error, form=form or {}, switch_next=SWITCH_NEXT, **page)


def _act(request: Request, viewer: Viewer, site_id: int, tab: str, where: str,
         action: Callable[[Session, Site, datetime], str], form: dict[str, Any] | None = None) -> Response:
    """Run ``action(session, site, now) -> message`` in one transaction and show the tab with its
    message, or with the refusal, in the section ``where``."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        with transaction(ctx.sessions) as s:
            message = action(s, my2n.get_site(s, org.id, site_id), ctx.clock.now())
    except EntitleError as exc:
        if exc.code in ("site_not_found", "organization_not_found"):
            raise  # an error page: there is no section of this page to show it in
        # A refusal of the user's role is about the page (its form may not even be shown to them).
        return _page(request, viewer, site_id, tab, status=exc.status, where="page" if exc.status == 403 else where,
                     error=exc, form=form)
    return _page(request, viewer, site_id, tab, where=where, message=message)


def _check_nonce(nonce: str) -> str:
    if not nonce.strip() or len(nonce) > 100:
        raise EntitleError("form_expired", "This form is out of date: reload the page and try again.")
    return nonce.strip()


# --- the site list (R-MY-1) ----------------------------------------------------------------------

def _list(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
          error: EntitleError | None = None, created: int | None = None,
          form: dict[str, Any] | None = None) -> Response:
    ctx = _ctx(request)
    org = _member_org(viewer)
    now = ctx.clock.now()
    with reading(ctx.sessions) as s:
        sites = [my2n.site_to_dict(site, now) for site in my2n.sites_of(s, org.id)]
    for shown in sites:
        shown["part"] = rules.part_number(shown["region"])
    return render(request, "my2n_sites.html", viewer=viewer, active="my2n", status=status, org=org, sites=sites,
                  may_change=org.role.may_license, part=rules.part_number(org.region),  # type: ignore[arg-type]
                  regions=REGION_NAMES, message=message, error=error, created=created, form=form or {},
                  switch_next=SWITCH_NEXT)


@router.get("/my2n")
def site_list(request: Request, viewer: AnyViewer) -> Response:
    return _list(request, viewer)


@router.post("/my2n/sites")
def create_site(request: Request, viewer: PostingViewer, name: Annotated[str, Form()] = "",
                region: Annotated[str, Form()] = "") -> Response:
    """A new site, on the apartment model (the custom model is retired, R-MY-1), in the region
    chosen (the company's by default)."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        with transaction(ctx.sessions) as s:
            site = my2n.create_site(s, org_id=org.id, name=name, region=region or None, actor=viewer.actor,
                                    now=ctx.clock.now())
            site_id, site_name, site_region = site.id, site.name, site.region
    except EntitleError as exc:
        return _list(request, viewer, status=exc.status, error=exc, form={"name": name, "region": region})
    told = "" if site_region == org.region else f" in region {site_region}"
    return _list(request, viewer, created=site_id,
                 message=f"Site {site_name} is created{told} with the apartment model. Add its apartments and devices.")


# --- the site page: apartments and devices (R-MY-2, R-MY-3) ---------------------------------------

@router.get("/my2n/sites/{site_id}")
def site_page(request: Request, viewer: AnyViewer, site_id: int, tab: str = "dashboard") -> Response:
    return _page(request, viewer, site_id, tab)


@router.post("/my2n/sites/{site_id}/apartments")
def create_apartment(request: Request, viewer: PostingViewer, site_id: int,
                     name: Annotated[str, Form()] = "") -> Response:
    def action(s: Session, site: Site, now: datetime) -> str:
        apt = my2n.create_apartment(s, site=site, name=name, actor=viewer.actor, now=now)
        return f"Apartment {apt.name} is created. Add its answering devices (at most 4 paid devices)."

    return _act(request, viewer, site_id, "apartments", "new-apartment", action, form={"apartment_name": name})


@router.post("/my2n/sites/{site_id}/devices")
def add_device(request: Request, viewer: PostingViewer, site_id: int, serial: Annotated[str, Form()] = "",
               kind: Annotated[str, Form()] = "", apartment: Annotated[str, Form()] = "",
               local_mode: Annotated[str, Form()] = "") -> Response:
    """Add a device to the site, into an apartment or not; a fifth paid device of an apartment is
    refused, whoever adds it, with the message to create another apartment (R-MY-2)."""
    def action(s: Session, site: Site, now: datetime) -> str:
        d = my2n.add_device(s, site=site, serial=serial, kind=kind, apartment_id=_apartment_id(s, site, apartment),
                            local_mode=bool(local_mode), actor=viewer.actor, now=now)
        into = f"apartment {apartment.strip()}" if d.apartment_id else "the site, outside every apartment"
        return f"{KIND_NAMES.get(d.kind, d.kind)} {d.serial} is added to {into}" + \
            (" (local mode)." if d.local_mode else ".")

    return _act(request, viewer, site_id, "apartments", "new-device", action,
                form={"serial": serial, "kind": kind, "apartment": apartment, "local_mode": bool(local_mode)})


@router.post("/my2n/sites/{site_id}/devices/assign")
def assign_device(request: Request, viewer: PostingViewer, site_id: int, serial: Annotated[str, Form()] = "",
                  apartment: Annotated[str, Form()] = "", tab: Annotated[str, Form()] = "apartments") -> Response:
    """Move a device into an apartment: on the Apartments tab, and for the migration's checklist
    (R-MY-2, R-MY-4). The paid-device limit holds here too."""
    tab = "migration" if tab == "migration" else "apartments"

    def action(s: Session, site: Site, now: datetime) -> str:
        if not apartment.strip():
            raise EntitleError("apartment_required", f"Enter the apartment to assign {serial} to.", serial=serial)
        my2n.assign_device(s, site=site, serial=serial, apartment_id=_apartment_id(s, site, apartment),
                           actor=viewer.actor, now=now)
        return f"Device {serial} is assigned to apartment {apartment.strip()}."

    return _act(request, viewer, site_id, tab, "devices" if tab == "apartments" else "checklist", action,
                form={"assign": {serial: apartment}})


@router.post("/my2n/sites/{site_id}/devices/local-mode")
def set_local_mode(request: Request, viewer: PostingViewer, site_id: int, serial: Annotated[str, Form()] = "",
                   local_mode: Annotated[str, Form()] = "") -> Response:
    """A paid device in local mode makes no license necessary (R-MY-3); it still counts toward the
    apartment's four paid devices."""
    on = local_mode == "on"

    def action(s: Session, site: Site, now: datetime) -> str:
        my2n.set_local_mode(s, site=site, serial=serial, local_mode=on, actor=viewer.actor, now=now)
        return f"Device {serial}: local mode is {'on' if on else 'off'}."

    return _act(request, viewer, site_id, "apartments", "devices", action)


@router.post("/my2n/sites/{site_id}/devices/remove")
def remove_device(request: Request, viewer: PostingViewer, site_id: int,
                  serial: Annotated[str, Form(max_length=128)] = "") -> Response:
    """Take a device off the site; what was paid stays paid."""
    def action(s: Session, site: Site, now: datetime) -> str:
        my2n.remove_device(s, site=site, serial=serial, actor=viewer.actor, now=now)
        return f"Device {serial.strip()} is removed from the site; it may now be added to another site."

    return _act(request, viewer, site_id, "apartments", "devices", action)


@router.post("/my2n/sites/{site_id}/region")
def change_region(request: Request, viewer: PostingViewer, site_id: int,
                  region: Annotated[str, Form()] = "") -> Response:
    """A company admin changes the site's region until a voucher code has been activated into
    its pool (and not while recurring payment is on): it decides the part to order."""
    def action(s: Session, site: Site, now: datetime) -> str:
        my2n.change_region(s, site=site, region=region, actor=viewer.actor, now=now)
        return (f"The site's region is {site.region}: its apartment licenses are ordered as part "
                f"{rules.part_number(site.region)}.")  # type: ignore[arg-type]

    return _act(request, viewer, site_id, "dashboard", "region", action)


@router.post("/my2n/sites/{site_id}/site-type")
def choose_site_type(request: Request, viewer: PostingViewer, site_id: int,
                     site_type: Annotated[str, Form()] = "", tab: Annotated[str, Form()] = "migration") -> Response:
    """Once the site has the apartment model its admin chooses the site type (R-MY-4)."""
    tab = "dashboard" if tab == "dashboard" else "migration"

    def action(s: Session, site: Site, now: datetime) -> str:
        if not site_type:
            raise EntitleError("site_type_required", "Choose the site type.")
        my2n.choose_site_type(s, site=site, site_type=site_type, actor=viewer.actor, now=now)
        return f"The site type is {_label(site_type).lower()}."

    return _act(request, viewer, site_id, tab, "site-type", action)


# --- CSV export and import (the Apartments tab) ---------------------------------------------------

def _filename(site: Site) -> str:
    """The download's name: the site's name in plain ASCII (a header value), and its id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", site.name).strip("-.")[:60]
    return f"site-{site.id}-{slug}.csv" if slug else f"site-{site.id}.csv"


@router.get("/my2n/sites/{site_id}/export.csv")
def export_csv(request: Request, viewer: AnyViewer, site_id: int) -> Response:
    """The site's apartments and devices as a CSV download, in the format the import reads (every
    member of the organization)."""
    ctx = _ctx(request)
    org = _member_org(viewer)
    with reading(ctx.sessions) as s:
        site = my2n.get_site(s, org.id, site_id)
        text, name = csvio.export_csv(s, site, actor=viewer.actor), _filename(site)
    return Response(text, media_type="text/csv; charset=utf-8",
                    headers={**PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/my2n/sites/{site_id}/import")
def import_csv(request: Request, viewer: PostingViewer, site_id: int,
               csv_file: Annotated[UploadFile | None, File()] = None) -> Response:
    """Import a CSV file of apartments and devices, all or nothing: a refused file lists each
    problem (row, column, code, message) and nothing is imported (R-MY-2 holds for every row)."""
    data = csv_file.file.read(csvio.MAX_BYTES + 1) if csv_file is not None else b""
    chosen = csv_file is not None and bool(csv_file.filename or data)

    def action(s: Session, site: Site, now: datetime) -> str:
        if not chosen:
            access.require_site_admin(s, viewer.actor, site)  # the same refusal as with a file, for others
            raise EntitleError("csv_file_required", "Choose a CSV file to import.")
        if len(data) > csvio.MAX_BYTES:
            raise EntitleError("csv_too_large", f"A CSV file is at most {csvio.MAX_BYTES // 2**20} MiB; split it.",
                               status=413, max_bytes=csvio.MAX_BYTES)
        out = csvio.import_csv(s, site=site, data=data, actor=viewer.actor, now=now)
        return (f"The file is imported ({plural(out['rows'], 'row')}): "
                f"{plural(out['apartments_created'], 'apartment')} created, {plural(out['devices_added'], 'device')} "
                f"added, {plural(out['devices_assigned'], 'device')} assigned to an apartment, local mode changed on "
                f"{plural(out['local_mode_changed'], 'device')}.")

    return _act(request, viewer, site_id, "apartments", "import", action)


# --- people: site admins and apartment admins (R-MY-2, R-MY-5) -------------------------------------

@router.post("/my2n/sites/{site_id}/roles")
def grant_role(request: Request, viewer: PostingViewer, site_id: int, email: Annotated[str, Form()] = "",
               role: Annotated[str, Form()] = "", apartment: Annotated[str, Form()] = "",
               payments: Annotated[str, Form()] = "") -> Response:
    """Give a member of the organization a role on the site, or change theirs (company admins
    only): site admin, with or without the payments permission, or the admin of one apartment."""
    form = {"role_email": email, "role": role, "role_apartment": apartment, "payments": bool(payments)}

    def action(s: Session, site: Site, now: datetime) -> str:
        viewer.actor.require_licensing(site.org_id)  # before the e-mail is looked up: it tells others nothing
        if not email.strip():
            raise EntitleError("email_required", "Choose the member to give the role to.")
        user = tenancy.user_by_email(s, email)
        if user is None:
            raise NotFound("member", email=email.strip())
        apartment_id = _apartment_id(s, site, apartment) if role == "apartment_admin" else None
        access.grant_site_role(s, site=site, user_id=user.id, role=role, apartment_id=apartment_id,
                               payments=bool(payments), actor=viewer.actor, now=now)
        if role == "apartment_admin":
            return f"{user.email} is the admin of apartment {apartment.strip()} now."
        return f"{user.email} is a site admin of {site.name} now, " + \
            ("with the payments permission." if payments else "without the payments permission.")

    return _act(request, viewer, site_id, "people", "new-role", action, form=form)


@router.post("/my2n/sites/{site_id}/roles/revoke")
def revoke_role(request: Request, viewer: PostingViewer, site_id: int, user_id: Annotated[int, Form()]) -> Response:
    """Take a user's role on the site away (company admins only)."""
    def action(s: Session, site: Site, now: datetime) -> str:
        access.revoke_site_role(s, site=site, user_id=user_id, actor=viewer.actor, now=now)
        user = s.get(User, user_id)  # they had a role on the site: a member, whose e-mail the page shows anyway
        return f"{user.email if user else f'User {user_id}'} has no role on {site.name} any more."

    return _act(request, viewer, site_id, "people", "roles", action)


# --- vouchers and the site credit pool (R-MY-5) --------------------------------------------------

@router.post("/my2n/sites/{site_id}/vouchers/redeem")
def redeem_voucher(request: Request, viewer: PostingViewer, site_id: int,
                   code: Annotated[str, Form()] = "") -> Response:
    """Activate a voucher code: its years go to the site's credit pool. Typing codes is rate
    limited like redeeming license keys."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        ctx.redeem_limiter.hit(org_id=org.id, client=client_id(request))  # before the write transaction
    except EntitleError as exc:
        return _page(request, viewer, site_id, "vouchers", status=exc.status, where="redeem", error=exc,
                     form={"code": code})

    def action(s: Session, site: Site, now: datetime) -> str:
        out = my2n.redeem_voucher(s, site=site, code=code, actor=viewer.actor, now=now)
        unit = "apartment-year" if out["scope"] == "apartment" else "device-year"
        return f"Voucher activated: {out['years']} {unit}{'s' if out['years'] != 1 else ''} added to the site credit pool."

    return _act(request, viewer, site_id, "vouchers", "redeem", action, form={"code": code})


@router.post("/my2n/sites/{site_id}/apartments/{apartment_id}/pay")
def pay_from_credit(request: Request, viewer: PostingViewer, site_id: int, apartment_id: int,
                    nonce: Annotated[str, Form()] = "") -> Response:
    """Pay one year of an apartment's license from the site credit pool; the form's nonce is the
    idempotency key, so a re-posted form does not pay twice."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        with reading(ctx.sessions) as s:
            my2n.get_apartment(s, my2n.get_site(s, org.id, site_id), apartment_id)
        key = f"web:my2n-pay:{_check_nonce(nonce)}:{apartment_id}"

        def work(s: Session) -> dict[str, Any]:
            return my2n.pay_from_credit(s, site=my2n.get_site(s, org.id, site_id), apartment_id=apartment_id,
                                        actor=viewer.actor, now=ctx.clock.now())

        fp = idempotency.fingerprint("POST", request.url.path, [apartment_id])
        outcome = idempotency.run(ctx.sessions, org_id=org.id, key=key, fp=fp, now=ctx.clock.now(),
                                  work=lambda s: (200, work(s)))
    except EntitleError as exc:
        if exc.code in ("site_not_found", "apartment_not_found"):
            raise
        return _page(request, viewer, site_id, "vouchers", status=exc.status,
                     where="page" if exc.status == 403 else "pay", error=exc)
    d = outcome.body
    if outcome.replayed:
        message = (f"This payment was already made: apartment {d['apartment']} is paid through "
                   f"{_day(d['paid_through'])}. Nothing was paid twice.")
    else:
        devices = (f" for its {plural(d['devices_paid_for'], 'paid device')}" if d.get("devices_paid_for") is not None
                   else "")
        message = (f"Apartment {d['apartment']} is paid through {_day(d['paid_through'])}{devices} from the site "
                   "credit pool.")
    return _page(request, viewer, site_id, "vouchers", where="pay", message=message)


# --- card payments (R-MY-5) --------------------------------------------------------------------

@router.post("/my2n/sites/{site_id}/payments/card")
def set_card(request: Request, viewer: PostingViewer, site_id: int,
             payment_method: Annotated[str, Form()] = "") -> Response:
    """The card automatic recurring payment charges; it is changed only while recurring payment is
    off (R-MY-5)."""
    ctx = _ctx(request)

    def action(s: Session, site: Site, now: datetime) -> str:
        out = billing.set_card(s, site=site, payment_method=payment_method, actor=viewer.actor, now=now,
                               provider=ctx.payments)
        return f"The site pays with {out['card']} now."

    return _act(request, viewer, site_id, "payments", "card", action, form={"payment_method": payment_method})


@router.post("/my2n/sites/{site_id}/payments/recurring")
def set_recurring(request: Request, viewer: PostingViewer, site_id: int,
                  recurring: Annotated[str, Form()] = "", expected: Annotated[str, Form()] = "") -> Response:
    """Turn automatic recurring payment on (the first year of every apartment that needs a
    license is charged at once, or nothing happens) or off."""
    ctx = _ctx(request)
    on = recurring == "on"

    def action(s: Session, site: Site, now: datetime) -> str:
        if not on:
            billing.deactivate_recurring(s, site=site, actor=viewer.actor, now=now, provider=ctx.payments)
            return "Automatic recurring payment is off; what was paid stays paid. You can change the card now."
        # The amount the page showed: if it changed meanwhile, nothing is charged and the page says so.
        shown = int(expected) if expected.isdigit() else None
        out = billing.activate_recurring(s, site=site, actor=viewer.actor, now=now, provider=ctx.payments,
                                         expected_amount_minor=shown)
        paid = (f" Paid now through {_day(out['renews_at'])}: {', '.join(out['paid'])}." if out["paid"]
                else " Nothing was charged: every apartment is paid until the renewal.")
        return f"Automatic recurring payment is on for {plural(out['apartments_covered'], 'apartment')}.{paid}"

    return _act(request, viewer, site_id, "payments", "recurring", action)


# --- vendor support: the model change (R-MY-4) ---------------------------------------------------

def _support(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
             error: EntitleError | None = None, where: int | None = None) -> Response:
    """Every custom-model site of every company, with what still blocks its migration."""
    viewer.actor.require_issuer()
    ctx = _ctx(request)
    now = ctx.clock.now()
    with reading(ctx.sessions) as s:
        found = my2n.custom_sites(s, actor=viewer.actor)
        sites = [{**my2n.site_to_dict(site, now), "company": company,
                  "unassigned": my2n.migration_check(s, site=site)} for site, company in found]
    if where not in {site["id"] for site in sites}:
        where = None  # e.g. a second click after the change: the site left the list, the refusal shows on top
    return render(request, "my2n_support.html", viewer=viewer, active="my2n-support", status=status, sites=sites,
                  message=message, error=error, where=where)


@router.get("/issuer/my2n")
def support_page(request: Request, viewer: AnyViewer) -> Response:
    return _support(request, viewer)


@router.post("/issuer/my2n/sites/{site_id}/model")
def change_model(request: Request, viewer: PostingViewer, site_id: int,
                 model: Annotated[str, Form()] = "apartment") -> Response:
    """2N Tech Support changes a custom-model site to the apartment model once every device except
    the intercoms is in an apartment; every user of the company is logged out (R-MY-4)."""
    viewer.actor.require_issuer()
    ctx = _ctx(request)
    try:
        with transaction(ctx.sessions) as s:
            site = s.get(Site, site_id)
            if site is None:
                raise NotFound("site", site_id=site_id)
            name = site.name
            out = my2n.change_model(s, site=site, model=model, actor=viewer.actor, now=ctx.clock.now())
    except EntitleError as exc:
        if exc.code == "site_not_found":
            raise
        return _support(request, viewer, status=exc.status, error=exc, where=site_id)
    return _support(request, viewer, message=(
        f"Site {name} has the {out['site']['model']} model now. {plural(out['users_logged_out'], 'user')} of the company "
        f"{'was' if out['users_logged_out'] == 1 else 'were'} logged out "
        f"({plural(out['sessions_revoked'], 'session or app token', 'sessions and app tokens')} revoked); they sign in again and "
        "choose the site type."))


# --- the issuer's voucher batches (R-MY-5) -------------------------------------------------------

def _vouchers(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
              error: EntitleError | None = None, minted: dict[str, Any] | None = None,
              form: dict[str, Any] | None = None) -> Response:
    """The voucher batches page: the mint form (with a fresh nonce), the codes of a batch just
    minted, and the latest batches."""
    viewer.actor.require_issuer()
    with reading(_ctx(request).sessions) as s:
        batches = [my2n.voucher_batch_to_dict(b, s)
                   for b in my2n.voucher_batches(s, actor=viewer.actor, limit=RECENT_BATCHES)]
    return render(request, "my2n_issuer_vouchers.html", viewer=viewer, active="vouchers", status=status,
                  batches=batches, parts=VOUCHER_PARTS, scopes=VOUCHER_SCOPES, max_count=MAX_WEB_MINT,
                  nonce=secrets.token_urlsafe(18), message=message, error=error, minted=minted, form=form or {})


@router.get("/issuer/my2n/vouchers")
def vouchers_page(request: Request, viewer: AnyViewer) -> Response:
    return _vouchers(request, viewer)


@router.post("/issuer/my2n/vouchers")
def mint_vouchers(request: Request, viewer: PostingViewer, part_number: Annotated[str, Form()] = "",
                  name: Annotated[str, Form()] = "", years: Annotated[int, Form()] = 1,
                  subscriptions: Annotated[int, Form()] = 1, scope: Annotated[str, Form()] = "",
                  nonce: Annotated[str, Form()] = "") -> Response:
    """Mint a distributor's voucher batch: ``subscriptions`` codes of part 9137958 (or 02683-001),
    each worth ``years`` apartment-years or device-years, valid for 3 years (R-MY-5). The codes
    are in this answer only; the form's nonce is the idempotency key, so a re-posted form mints
    nothing twice and names the batch it minted (without its codes, which are not kept)."""
    viewer.actor.require_issuer()
    ctx = _ctx(request)
    form = {"part_number": part_number, "name": name, "years": years, "subscriptions": subscriptions, "scope": scope}
    try:
        key = f"web:my2n-vouchers:{_check_nonce(nonce)}"
        if subscriptions > MAX_WEB_MINT:
            raise EntitleError("count_invalid", f"The web form mints at most {MAX_WEB_MINT:,} codes at once; use the "
                               "CLI or the API for larger batches.", count=subscriptions, maximum=MAX_WEB_MINT)
        with transaction(ctx.sessions) as s:
            issuer_org = tenancy.issuer_organization(s, now=ctx.clock.now()).id

        def work(s: Session) -> tuple[int, dict[str, Any]]:
            batch, codes = my2n.mint_vouchers(s, part_number=part_number, name=name, years=years,
                                              subscriptions=subscriptions, scope=scope, actor=viewer.actor,
                                              now=ctx.clock.now())
            return 200, {"batch": my2n.voucher_batch_to_dict(batch), "codes": codes}

        fp = idempotency.fingerprint("POST", request.url.path, form)
        try:
            outcome = idempotency.run(ctx.sessions, org_id=issuer_org, key=key, fp=fp, now=ctx.clock.now(),
                                      work=work, stored=lambda body: {**body, "codes": None})  # codes never kept
        except EntitleError as exc:
            if exc.code != "idempotency_key_reused":
                raise
            raise EntitleError("form_already_submitted", "This form was already submitted with other values: reload "
                               "the page to mint another batch.", status=422) from None
    except EntitleError as exc:
        if exc.code == "issuer_only":
            raise
        return _vouchers(request, viewer, status=exc.status, error=exc, form=form)
    b = outcome.body["batch"]
    if outcome.replayed:
        return _vouchers(request, viewer, message=(
            f"This form was already submitted: batch {b['id']} ({plural(b['subscriptions'], 'code')} of {b['part_number']}) "
            "was minted then, and its codes were shown once. Nothing was minted twice."))
    return _vouchers(request, viewer, minted=outcome.body, form={"part_number": part_number, "scope": scope})


@router.post("/issuer/my2n/vouchers/{batch_id}/codes.csv")
def voucher_codes_csv(request: Request, viewer: PostingViewer, batch_id: int,
                      codes: Annotated[str, Form()] = "") -> Response:
    """The codes of a voucher batch just minted (shown once, see ``views.shown_codes``) as CSV."""
    viewer.actor.require_issuer()
    listed = shown_codes(codes)
    with reading(_ctx(request).sessions) as s:
        batch = s.get(VoucherBatch, batch_id)
        if batch is None:
            raise NotFound("voucher_batch", batch_id=batch_id)
        b = my2n.voucher_batch_to_dict(batch)
    return csv_download(f"voucher-codes-batch-{batch_id}.csv",
                        ["code", "part_number", "years", "scope", "valid_until"],
                        [[c, b["part_number"], b["years"], b["scope"], b["valid_until"]] for c in listed])
