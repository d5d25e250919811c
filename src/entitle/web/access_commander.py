"""Access Commander pages (SPEC §2, R-AC-1 … R-AC-8), modelled on the source's Setting – License
menu: the organization's installations, and per installation its License settings (Active
licenses, License device S/N, License adding, the license detail), its devices, Attendance users
and the ordering calculator.

Every action re-renders the installation's page (only its content for htmx) with the outcome in
the section where it was asked; a refusal keeps the page and shows the error's code and message
there. Viewers get the same page without forms (the calculator, a GET, changes nothing).

Generating a license moves units, so its form carries a one-time nonce that is the idempotency
key (``entitle.platform.idempotency.run``): a re-posted form replays the first answer instead of
generating a second license.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from entitle_device import access_commander as rules
from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from sqlalchemy.orm import Session

from entitle.access_commander import services as ac
from entitle.access_commander.models import DEVICE_TYPES, AcLicense, Installation
from entitle.db import reading, transaction
from entitle.errors import EntitleError
from entitle.ledger import services as ledger
from entitle.platform import idempotency
from entitle.text import plural
from entitle.web import charts
from entitle.web.views import (PAGE_HEADERS, AnyViewer, PostingViewer, Viewer, WebRoute, _ctx, is_htmx, render,
                               templates)

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# Where the organization switcher goes: an installation belongs to one organization.
SWITCH_NEXT = "/ac"
MAX_LICENSE_FILE = 65_536
DEVICE_TYPE_NAMES = {"ip_intercom": "IP intercom", "access_unit": "Access unit",
                     "answering_unit": "Answering unit", "lift_module": "Lift module", "other": "Other"}
STATE_NAMES = {"trial": "Trial", "active": "Active", "protective": "Protective period",
               "suspended": "Suspended"}


# --- formatting ------------------------------------------------------------------------------

def _duration(value: timedelta | None) -> str:
    if value is None:
        return "—"
    total = int(value.total_seconds())
    days, rest = divmod(total, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{days} d" if days else "", f"{hours} h" if hours else "", f"{minutes} min" if minutes else ""]
    shown = " ".join(p for p in parts if p)
    return shown or f"{seconds} s"


def _exact(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


templates.env.filters.update(duration=_duration, exact=_exact, plural=plural,
                             device_type=lambda t: DEVICE_TYPE_NAMES.get(t, t),
                             state_name=lambda s: STATE_NAMES.get(s, s))


# --- what the pages show -----------------------------------------------------------------------

@dataclass(frozen=True)
class DeviceRow:
    serial: str
    type: str
    name: str
    connected: bool
    last_seen: datetime | None
    activated: bool  # what the admin set
    active: bool  # managed now: activated and the license not suspended
    is_license_device: bool
    first: bool  # the license device of a new license, to be activated before any other (R-AC-7)

    @property
    def can_activate(self) -> bool:
        return not self.active or self.first


@dataclass(frozen=True)
class PackageRow:
    part_number: str
    alt_part_numbers: list[str]
    name: str
    grant_kind: str
    in_license: int
    in_wallet: int
    default: int  # what the license holds when the package fields are left empty


def _settings(s: Session, inst: Installation, org_id: int, now: datetime) -> dict[str, Any]:
    """Everything the License settings page shows, read in one session."""
    ov = ac.overview(s, inst, now)
    lic, status = ov.license, ov.status
    suspended = status.state == "suspended"
    timeout = ac.timeout_of(inst)
    first = lic is not None and lic.license_device_activated_at is None
    devices = [DeviceRow(d.serial, d.type, d.name, ac.device_connected(d, now, timeout), d.last_seen,
                         d.active, d.active and not suspended,
                         lic is not None and lic.license_device == d.serial,
                         first and lic is not None and lic.license_device == d.serial)
               for d in ov.devices]
    wallet = {line.part_number: line.units for line in ledger.wallet(s, org_id, now=now)}
    held = {p["part_number"]: int(p["quantity"]) for p in (lic.packages if lic else [])}
    skus = ac.ac_skus(s)
    try:
        default = {p: q for p, q in ac.default_packages(s, inst, lic, ac.sku_index(skus))}
    except EntitleError:
        default = {}
    packages = [PackageRow(sku.part_number, list(sku.alt_part_numbers or []), sku.name, sku.grant_kind,
                           held.get(sku.part_number, 0), max(wallet.get(sku.part_number, 0), 0),
                           default.get(sku.part_number, 0)) for sku in skus]
    users = ac.attendance_users_of(s, inst)
    counts = ac.overview_to_dict(ov)
    return {
        "inst": inst, "license": lic, "state": status, "capacity": ov.capacity, "devices": devices,
        "granted": rules.Capacity.from_dict(lic.capacity) if lic else rules.TRIAL,
        "next_step": counts["next_step"], "alts": {sku.part_number: list(sku.alt_part_numbers or []) for sku in skus},
        "device_counts": counts["devices"], "attendance_counts": counts["attendance_users"],
        "packages": packages, "attendance_users": users,
        "connected_serials": [d.serial for d in devices if d.connected],
        "past_licenses": [x for x in ac.licenses_of(s, inst) if x.replaced_at is not None],
        "timeout": timeout, "now": now,
    }


def _installation(s: Session, viewer: Viewer, installation_id: int) -> Installation:
    org = viewer.require_org()
    viewer.actor.require_member(org.id)
    return ac.get_installation(s, org.id, installation_id)


def _page(request: Request, viewer: Viewer, installation_id: int, *, status: int = 200,
          where: str | None = None, message: str | None = None, error: EntitleError | None = None,
          form: dict[str, Any] | None = None, generated: AcLicense | None = None,
          calc: dict[str, Any] | None = None, preview: dict[str, Any] | None = None) -> Response:
    """The installation's License settings page; ``where`` names the section an outcome belongs to."""
    ctx = _ctx(request)
    org = viewer.require_org()
    with reading(ctx.sessions) as s:
        inst = _installation(s, viewer, installation_id)
        page = _settings(s, inst, org.id, ctx.clock.now())
        new_file = None
        if generated is not None:
            found = s.get(AcLicense, generated.id)
            new_file = found.file if found is not None and found.installation_id == inst.id else None
    lic = page["license"]
    page["capacity_chart"] = charts.ac_required_owned(page["device_counts"], page["attendance_counts"])
    page["connection_chart"] = charts.ac_connection(lic.added_at, page["state"], page["now"]) if lic else None
    calc_form = {"devices": page["device_counts"]["required"],
                 "attendance_users": page["attendance_counts"]["required"], "integration": False}
    return render(request, "ac_installation.html", viewer=viewer, active="ac", status=status, org=org,
                  may_change=org.role.may_license, nonce=secrets.token_urlsafe(18), where=where,
                  message=message, error=error, form=form or {}, generated=generated, new_file=new_file,
                  preview=preview,
                  calc=calc, calc_form=calc_form, device_types=DEVICE_TYPES, switch_next=SWITCH_NEXT, **page)


# --- installations -----------------------------------------------------------------------------

def _list(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
          error: EntitleError | None = None, created: dict[str, Any] | None = None,
          form: dict[str, Any] | None = None) -> Response:
    ctx = _ctx(request)
    org = viewer.require_org()
    now = ctx.clock.now()
    rows = []
    with reading(ctx.sessions) as s:
        for inst in ac.installations_of(s, org.id):
            ov = ac.overview_to_dict(ac.overview(s, inst, now))
            rows.append({"id": inst.id, "uid": inst.uid, "name": inst.name, "created_at": inst.created_at,
                         "state": ov["state"], "license_device": ov["license_device"],
                         "devices": ov["devices"], "attendance_users": ov["attendance_users"]})
    return render(request, "ac_installations.html", viewer=viewer, active="ac", status=status, org=org,
                  installations=rows, may_change=org.role.may_license, message=message, error=error,
                  created=created, form=form or {}, calc=None,
                  calc_form={"devices": 0, "attendance_users": 0, "integration": False},
                  switch_next=SWITCH_NEXT)


@router.get("/ac")
def installations(request: Request, viewer: AnyViewer) -> Response:
    return _list(request, viewer)


@router.post("/ac/installations")
def register(request: Request, viewer: PostingViewer, name: Annotated[str, Form()] = "",
             uid: Annotated[str, Form()] = "", heartbeat_timeout_seconds: Annotated[int, Form()] = 300) -> Response:
    """Register an installation (it starts on the trial, R-AC-2); its device-report token is in
    this answer only (stored hashed)."""
    ctx = _ctx(request)
    org = viewer.require_org()
    form = {"name": name, "uid": uid, "heartbeat_timeout_seconds": heartbeat_timeout_seconds}
    try:
        with transaction(ctx.sessions) as s:
            inst, token = ac.create_installation(s, org_id=org.id, name=name, uid=uid.strip() or None,
                                                 heartbeat_timeout_seconds=heartbeat_timeout_seconds,
                                                 actor=viewer.actor, now=ctx.clock.now())
            created = {"id": inst.id, "uid": inst.uid, "name": inst.name, "token": token}
    except EntitleError as exc:
        return _list(request, viewer, status=exc.status, error=exc, form=form)
    return _list(request, viewer, created=created,
                 message=f"Installation {created['name']} ({created['uid']}) is registered; it runs on the trial.")


@router.get("/ac/installations/{installation_id}")
def installation(request: Request, viewer: AnyViewer, installation_id: int) -> Response:
    return _page(request, viewer, installation_id)


@router.get("/ac/installations/{installation_id}/licenses/{license_id}/file")
def license_file(request: Request, viewer: AnyViewer, installation_id: int, license_id: int) -> Response:
    """The signed license file, to import on the installation."""
    with reading(_ctx(request).sessions) as s:
        inst = _installation(s, viewer, installation_id)
        text, uid = ac.license_by_id(s, inst, license_id).file, inst.uid
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in f"{uid}-license-{license_id}.lic")
    return Response(text, media_type="text/plain; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store",
                             "X-Content-Type-Options": "nosniff"})


def _act(request: Request, viewer: Viewer, installation_id: int, where: str,
         action: Any, form: dict[str, Any] | None = None) -> Response:
    """Run ``action(session, installation, now) -> message`` in one transaction and show the page
    with its message, or with the refusal, in the section ``where``."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        viewer.actor.require_licensing(org.id)
        with transaction(ctx.sessions) as s:
            inst = _installation(s, viewer, installation_id)
            message = action(s, inst, ctx.clock.now())
    except EntitleError as exc:
        if exc.code == "installation_not_found":
            raise
        return _page(request, viewer, installation_id, status=exc.status, where=where, error=exc, form=form)
    return _page(request, viewer, installation_id, where=where, message=message)


# --- devices (R-AC-4 … R-AC-8) -----------------------------------------------------------------

@router.post("/ac/installations/{installation_id}/devices")
def add_device(request: Request, viewer: PostingViewer, installation_id: int,
               serial: Annotated[str, Form()] = "", type: Annotated[str, Form()] = "ip_intercom",  # noqa: A002
               name: Annotated[str, Form()] = "", connected: Annotated[bool, Form()] = False) -> Response:
    """Add a device; "connected" also reports it connected (an admin acting for the installation)."""
    def action(s: Session, inst: Installation, now: datetime) -> str:
        dev = ac.add_device(s, installation=inst, serial=serial, type=type, name=name.strip(),
                            actor=viewer.actor, now=now)
        if connected:
            ac.report_state(s, installation=inst, serial=dev.serial, connected=True, now=now)
        return f"Device {dev.serial} is added{' and connected' if connected else ''}."

    return _act(request, viewer, installation_id, "devices", action,
                form={"serial": serial, "type": type, "name": name, "connected": connected})


@router.post("/ac/installations/{installation_id}/devices/state")
def device_state(request: Request, viewer: PostingViewer, installation_id: int,
                 serial: Annotated[str, Form()], connected: Annotated[bool, Form()]) -> Response:
    """Report a device connected or disconnected (R-AC-4, R-AC-5)."""
    def action(s: Session, inst: Installation, now: datetime) -> str:
        ac.report_state(s, installation=inst, serial=serial, connected=connected, now=now)
        return f"Device {serial} is reported {'connected' if connected else 'disconnected'}."

    return _act(request, viewer, installation_id, "devices", action)


@router.post("/ac/installations/{installation_id}/devices/activate")
def activate(request: Request, viewer: PostingViewer, installation_id: int,
             serial: Annotated[str, Form()]) -> Response:
    """Activate a device (R-AC-7, R-AC-8), or recover a suspended license by activating its
    connected license device (R-AC-6). Refusals are shown in the device list."""
    def action(s: Session, inst: Installation, now: datetime) -> str:
        recovering = ac.status_of(ac.current_license(s, inst), inst, now).state == "suspended"
        ac.activate(s, installation=inst, serial=serial, actor=viewer.actor, now=now)
        return (f"License device {serial} is activated: the license is recovered." if recovering
                else f"Device {serial} is active.")

    return _act(request, viewer, installation_id, "devices", action)


@router.post("/ac/installations/{installation_id}/devices/deactivate")
def deactivate(request: Request, viewer: PostingViewer, installation_id: int,
               serial: Annotated[str, Form()]) -> Response:
    def action(s: Session, inst: Installation, now: datetime) -> str:
        ac.deactivate(s, installation=inst, serial=serial, actor=viewer.actor, now=now)
        return f"Device {serial} is inactive."

    return _act(request, viewer, installation_id, "devices", action)


# --- Attendance users, integration (R-AC-8) ----------------------------------------------------

@router.post("/ac/installations/{installation_id}/attendance-users")
def add_attendance_user(request: Request, viewer: PostingViewer, installation_id: int,
                        name: Annotated[str, Form()] = "", monitored: Annotated[bool, Form()] = False) -> Response:
    def action(s: Session, inst: Installation, now: datetime) -> str:
        user = ac.add_attendance_user(s, installation=inst, name=name, monitored=monitored,
                                      actor=viewer.actor, now=now)
        return f"{user.name} is an Attendance user{', monitored' if monitored else ''}."

    return _act(request, viewer, installation_id, "attendance", action,
                form={"user_name": name, "monitored": monitored})


@router.post("/ac/installations/{installation_id}/attendance-users/monitor")
def monitor(request: Request, viewer: PostingViewer, installation_id: int,
            user_id: Annotated[int, Form()], monitored: Annotated[bool, Form()]) -> Response:
    def action(s: Session, inst: Installation, now: datetime) -> str:
        user = ac.set_monitored(s, installation=inst, user_id=user_id, monitored=monitored,
                                actor=viewer.actor, now=now)
        return f"{user.name}'s attendance is {'monitored' if monitored else 'no longer monitored'}."

    return _act(request, viewer, installation_id, "attendance", action)


@router.post("/ac/installations/{installation_id}/sync")
def sync(request: Request, viewer: PostingViewer, installation_id: int,
         source: Annotated[str, Form()]) -> Response:
    """LDAP or CSV synchronisation needs the integration feature."""
    def action(s: Session, inst: Installation, now: datetime) -> str:
        ac.check_integration(s, installation=inst, source=source, actor=viewer.actor, now=now)
        return f"{source.upper()} synchronisation is allowed: the license includes the integration feature."

    return _act(request, viewer, installation_id, "integration", action)


# --- License adding (R-AC-3, R-AC-4) -----------------------------------------------------------

def _packages(part_number: list[str], quantity: list[str]) -> list[tuple[str, int]] | None:
    """The package fields: all empty means the default (None); else the filled, non-zero ones."""
    if len(part_number) != len(quantity):
        raise EntitleError("invalid_request", "The package fields do not match: reload the page.", status=422)
    filled = [(p, q.strip()) for p, q in zip(part_number, quantity, strict=True) if q.strip()]
    if not filled:
        return None
    out = []
    for part, text in filled:
        if not text.isdigit() or len(text) > 7:
            raise EntitleError("quantity_invalid", f"The quantity of {part} is a whole number from 0 to "
                               "1,000,000 (leave every field empty for the default).",
                               part_number=part, quantity=text)
        if int(text) > 0:
            out.append((part, int(text)))
    return out


@router.post("/ac/installations/{installation_id}/licenses")
def generate(request: Request, viewer: PostingViewer, installation_id: int,
             license_device: Annotated[str, Form()] = "", nonce: Annotated[str, Form()] = "",
             part_number: Annotated[list[str] | None, Form()] = None,
             quantity: Annotated[list[str] | None, Form()] = None,
             confirm: Annotated[str, Form()] = "") -> Response:
    """Preview, then (``confirm=yes``) generate a license for a connected license device from the
    wallet and add it; it replaces the current license whole (R-AC-3, R-AC-4). The preview says
    what moves and changes nothing. The form's nonce is the idempotency key."""
    ctx = _ctx(request)
    org = viewer.require_org()
    now = ctx.clock.now()
    form = {"license_device": license_device, "quantities": dict(zip(part_number or [], quantity or [], strict=False))}
    try:
        viewer.actor.require_licensing(org.id)
        with reading(ctx.sessions) as s:
            _installation(s, viewer, installation_id)  # another organization's: not found, as a page
        if not nonce.strip() or len(nonce) > 100:
            raise EntitleError("form_expired", "This form is out of date: reload the page and try again.")
        if not license_device:
            raise EntitleError("license_device_required",
                               "Choose the license device: one of the installation's connected devices.")
        packages = _packages(part_number or [], quantity or [])
        if confirm != "yes":
            with reading(ctx.sessions) as s:
                inst = _installation(s, viewer, installation_id)
                ac.check_license_device(s, inst, license_device, now)
                plan = ac.plan_license(s, installation=inst, packages=packages, now=now)
            return _page(request, viewer, installation_id, where="license", form=form, preview=plan)

        def work(s: Session) -> tuple[int, dict[str, Any]]:
            inst = ac.get_installation(s, org.id, installation_id)
            lic = ac.generate_license(s, installation=inst, license_device=license_device,
                                      packages=packages, actor=viewer.actor, now=now, secret=ctx.secret).license
            return 201, {"license": lic.id, "license_device": lic.license_device}

        fp = idempotency.fingerprint("POST", request.url.path,
                                     {"license_device": license_device, "packages": packages})
        try:
            outcome = idempotency.run(ctx.sessions, org_id=org.id, key=f"web:ac-license:{nonce.strip()}",
                                      fp=fp, now=now, work=work)
        except EntitleError as exc:
            if exc.code != "idempotency_key_reused":
                raise
            raise EntitleError("form_already_submitted",
                               "This form was already submitted with other values: reload the page to "
                               "generate another license.", status=422) from None
    except EntitleError as exc:
        if exc.code == "installation_not_found":
            raise
        return _page(request, viewer, installation_id, status=exc.status, where="license", error=exc, form=form)
    lic_id, device = outcome.body["license"], outcome.body["license_device"]
    with reading(ctx.sessions) as s:
        generated = s.get(AcLicense, lic_id)
    if outcome.replayed:
        message = (f"This form was already submitted: license {lic_id} for {device} was generated then. "
                   "Nothing was generated twice.")
    else:
        message = (f"License {lic_id} is generated for the license device {device} and added; it replaces the "
                   f"previous license. Every device is inactive until {device} is activated: activate it first, "
                   "then the other devices again.")
    return _page(request, viewer, installation_id, where="license", message=message, generated=generated)


def _uploaded(license_file: UploadFile) -> str:
    raw = license_file.file.read(MAX_LICENSE_FILE + 1)
    return raw.decode("utf-8", errors="replace") if len(raw) <= MAX_LICENSE_FILE else ""


@router.post("/ac/installations/{installation_id}/licenses/file")
def add_file(request: Request, viewer: PostingViewer, installation_id: int,
             license_file: Annotated[UploadFile, File()]) -> Response:
    """License adding: a license file generated for this installation becomes its license."""
    text = _uploaded(license_file)

    def action(s: Session, inst: Installation, now: datetime) -> str:
        if not text.strip():
            raise EntitleError("license_file_empty", "Choose a license file (at most 64 KiB) to add.")
        lic, added = ac.add_license_file(s, installation=inst, text=text, actor=viewer.actor, now=now)
        if not added:
            return f"This file is already the current license {lic.id}: nothing changed."
        return (f"License {lic.id} is added from the file, for the license device {lic.license_device}; it replaces "
                f"the previous license. Activate {lic.license_device} first, then the other devices again.")

    return _act(request, viewer, installation_id, "license-file", action)


@router.post("/ac/installations/{installation_id}/licenses/check")
def check_file(request: Request, viewer: PostingViewer, installation_id: int,
               license_file: Annotated[UploadFile, File()]) -> Response:
    """Check a license file for this installation (signature, subject, model): which license it is."""
    text = _uploaded(license_file)
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        viewer.actor.require_licensing(org.id)
        with reading(ctx.sessions) as s:
            inst = _installation(s, viewer, installation_id)
            if not text.strip():
                raise EntitleError("license_file_empty", "Choose a license file (at most 64 KiB) to check.")
            lic = ac.check_license_file(s, installation=inst, text=text, actor=viewer.actor, now=ctx.clock.now())
            message = (f"The license file is valid for {inst.uid}: it is the current license {lic.id}, for the "
                       f"license device {lic.license_device}, added {lic.added_at:%Y-%m-%d %H:%M} UTC.")
    except EntitleError as exc:
        if exc.code == "installation_not_found":
            raise
        return _page(request, viewer, installation_id, status=exc.status, where="license-file", error=exc)
    return _page(request, viewer, installation_id, where="license-file", message=message)


# --- the ordering calculator (R-AC-1) ----------------------------------------------------------

@router.get("/ac/calculate")
def calculate(request: Request, viewer: AnyViewer, devices: int = 0, attendance_users: int = 0,
              integration: bool = False) -> Response:
    """Packages (and the smallest tier) to order for a need. A query: it changes nothing."""
    form = {"devices": devices, "attendance_users": attendance_users, "integration": integration}
    status, calc, error = 200, None, None
    try:
        with reading(_ctx(request).sessions) as s:
            calc = ac.calculate(s, devices=devices, attendance_users=attendance_users, integration=integration)
    except EntitleError as exc:
        status, error = exc.status, exc
    if is_htmx(request):
        return templates.TemplateResponse(request, "_ac_calc_result.html",
                                          {"viewer": viewer, "calc": calc, "calc_error": error},
                                          status_code=status, headers={**PAGE_HEADERS, "Vary": "HX-Request"})
    return render(request, "ac_calculator.html", viewer=viewer, active="ac", status=status, calc=calc,
                  calc_error=error, calc_form=form, switch_next=SWITCH_NEXT)
