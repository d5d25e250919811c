"""Access Commander: installations, devices, Attendance users, licenses, the calculator (SPEC §2)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response, status
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from entitle.access_commander import services as ac
from entitle.access_commander.models import DEVICE_TYPES, Installation
from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging, refusals
from entitle.api.answers import remembered, valid_until
from entitle.api.routing import OneHopRoute, quick_read
from entitle.api.schemas import Paged
from entitle.errors import Unauthorized
from entitle.platform import idempotency
from entitle.text import SingleLine

router = APIRouter(route_class=OneHopRoute, tags=["access-commander"])

REFUSALS = refusals(403, 409)  # a viewer may not; an Access Commander rule refused (R-AC-1 … R-AC-8)


class InstallationIn(BaseModel):
    name: SingleLine = Field(min_length=1, max_length=200)
    uid: SingleLine | None = Field(default=None, min_length=1, max_length=128,
                            description="The installation's own id; made up when left out.")
    heartbeat_timeout_seconds: int = Field(default=300, ge=30, le=86400,
                                           description="Nothing heard from a device for longer counts as a disconnect.")


class InstallationOut(BaseModel):
    id: int
    uid: str
    name: str
    heartbeat_timeout_seconds: int
    created_at: str


class NewInstallationOut(BaseModel):
    installation: InstallationOut
    token: str = Field(description="The installation's device-report token; shown once, stored hashed.")


class DeviceIn(BaseModel):
    serial: SingleLine = Field(min_length=1, max_length=64)
    type: Literal[DEVICE_TYPES] = "ip_intercom"  # type: ignore[valid-type]
    name: SingleLine = Field(default="", max_length=200)


class DeviceOut(BaseModel):
    serial: str
    type: str
    name: str
    active: bool = Field(description="Managed now: activated and the license not suspended.")
    activated: bool = Field(description="What the admin set; kept through a suspension.")
    connected: bool
    last_seen: str | None
    activated_at: str | None


class StateIn(BaseModel):
    connected: bool


class StateReportIn(BaseModel):
    serial: str = Field(min_length=1, max_length=64)
    connected: bool


class PackageIn(BaseModel):
    part_number: str = Field(min_length=1, max_length=64, description="2N's or Axis's part number.")
    quantity: int = Field(ge=1, le=1_000_000)


class LicenseIn(BaseModel):
    license_device: str = Field(min_length=1, max_length=64, description="Serial number of a connected device.")
    packages: list[PackageIn] | None = Field(
        default=None, max_length=100,
        description="Packages or tier the license holds. Left out: what the installation needs now "
                    "(the calculator's answer for its registered devices and monitored Attendance users), "
                    "at least the current license's packages; POST …/licenses/preview shows what moves.")


class PreviewIn(BaseModel):
    packages: list[PackageIn] | None = Field(default=None, max_length=100,
                                             description="As for a new license; left out: the default.")


class MoveOut(BaseModel):
    part_number: str
    alt_part_numbers: list[str]
    back_to_wallet: int = Field(description="Units the replaced license gives back.")
    from_wallet: int = Field(description="Units the new license takes.")
    wallet_before: int
    wallet_after: int


class PlanOut(BaseModel):
    default: bool = Field(description="The packages are the default (none were named).")
    need: dict[str, int]
    packages: list[dict[str, Any]]
    capacity: dict[str, Any]
    moves: list[MoveOut]
    devices_made_inactive: list[str] = Field(
        description="Active now; inactive after the new license until activated again (license device first).")


class LicenseOut(BaseModel):
    id: int
    license_device: str
    packages: list[dict[str, Any]]
    capacity: dict[str, Any]
    added_at: str
    added_by: str
    replaced_at: str | None
    license_device_activated_at: str | None
    kid: str


class NewLicenseOut(BaseModel):
    license: LicenseOut
    license_file: str
    plan: PlanOut


class AddedLicenseOut(BaseModel):
    license: LicenseOut
    added: bool = Field(description="False: the file was the current license already; nothing changed.")


class LicenseFileIn(BaseModel):
    license_file: str = Field(min_length=1, max_length=65536)


class Counts(BaseModel):
    required: int
    owned: int | None = Field(description="null: unlimited")
    active: int | None = None
    monitored: int | None = None


class OverviewOut(BaseModel):
    installation: InstallationOut
    license: LicenseOut | None
    state: Literal["trial", "active", "protective", "suspended"]
    license_device: str | None
    license_device_connected: bool
    connected_seconds: int
    disconnected_at: str | None
    protective_until: str | None = Field(description="When the protective period ends: the license's expiry.")
    suspended_at: str | None
    capacity: dict[str, Any] = Field(description="What may be used now: nothing while suspended.")
    granted: dict[str, Any] = Field(description="What the license grants (owned), also while suspended.")
    all_devices_inactive: bool = Field(description="The license is suspended: every device is inactive.")
    next_step: str | None = Field(description="What to do next: recover a suspended license, or activate "
                                              "a new license's device first.")
    devices: Counts
    attendance_users: Counts
    device_list: list[DeviceOut]


class AttendanceIn(BaseModel):
    name: SingleLine = Field(min_length=1, max_length=200)
    monitored: bool = False


class AttendanceOut(BaseModel):
    id: int
    name: str
    monitored: bool


class SystemUserIn(BaseModel):
    name: SingleLine = Field(min_length=1, max_length=200)
    admin: bool = False


class SystemUserOut(BaseModel):
    id: int
    name: str
    admin: bool


class AdminIn(BaseModel):
    admin: bool


class MonitorIn(BaseModel):
    monitored: bool


class SyncIn(BaseModel):
    source: Literal["ldap", "csv"]


class CalculateIn(BaseModel):
    devices: int = Field(ge=0, le=1_000_000)
    attendance_users: int = Field(default=0, ge=0, le=10_000_000)
    integration: bool = False


class CalculateOut(BaseModel):
    need: dict[str, Any]
    packages: list[dict[str, Any]]
    capacity: dict[str, Any]
    tier: dict[str, Any] | None


class InstallationPage(Paged[InstallationOut]):
    pass


class LicensePage(Paged[LicenseOut]):
    pass


class AttendancePage(Paged[AttendanceOut]):
    pass


class SystemUserPage(Paged[SystemUserOut]):
    pass


def _inst(db: Session, actor: Any, org_id: int, installation_id: int) -> Installation:
    actor.require_member(org_id)
    return ac.get_installation(db, org_id, installation_id)


@router.post("/orgs/{org_id}/ac/installations", response_model=NewInstallationOut, status_code=status.HTTP_201_CREATED,
             responses=REFUSALS)
def create_installation(org_id: int, body: InstallationIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Register an Access Commander installation. It starts on the trial (R-AC-2)."""
    inst, token = ac.create_installation(db, org_id=org_id, name=body.name, uid=body.uid, actor=actor, now=now,
                                         heartbeat_timeout_seconds=body.heartbeat_timeout_seconds)
    return {"installation": ac.installation_to_dict(inst), "token": token}


@router.get("/orgs/{org_id}/ac/installations", response_model=InstallationPage)
@quick_read
def list_installations(org_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The organization's installations, oldest first."""
    actor.require_member(org_id)
    return page.answer(ac.installations_of(db, org_id, after_id=page.cursor, limit=page.fetch),
                       ac.installation_to_dict)


@router.get("/orgs/{org_id}/ac/installations/{installation_id}", response_model=OverviewOut)
@remembered
@quick_read
def installation_overview(org_id: int, installation_id: int, actor: CurrentActor, db: DB, now: Now,
                          request: Request) -> dict[str, Any]:
    """License settings: state (trial, active, protective, suspended), the protective period's
    end, required / owned devices and Attendance users, the license device, the device list."""
    ov = ac.overview(db, _inst(db, actor, org_id, installation_id), now)
    valid_until(request, ac.overview_changes_at(ov))
    return ac.overview_to_dict(ov)


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/devices", response_model=DeviceOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def add_device(org_id: int, installation_id: int, body: DeviceIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    inst = _inst(db, actor, org_id, installation_id)
    dev = ac.add_device(db, installation=inst, serial=body.serial, type=body.type, name=body.name, actor=actor, now=now)
    return ac.device_to_dict(dev, now, ac.timeout_of(inst))


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/devices/{serial}/state", response_model=DeviceOut,
             responses=refusals(403))
def device_state(org_id: int, installation_id: int, serial: str, body: StateIn, actor: CurrentActor, db: DB,
                 now: Now) -> dict[str, Any]:
    """Report a device connected or disconnected (an admin acting for the installation). A
    "connected" report is one piece of evidence, not a lasting state: the device counts as
    disconnected once nothing more is heard for longer than the installation's heartbeat timeout."""
    inst = _inst(db, actor, org_id, installation_id)
    actor.require_licensing(org_id)
    dev = ac.report_state(db, installation=inst, serial=serial, connected=body.connected, now=now)
    return ac.device_to_dict(dev, now, ac.timeout_of(inst))


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/devices/{serial}/activate", response_model=DeviceOut,
             responses=REFUSALS)
def activate_device(org_id: int, installation_id: int, serial: str, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Activate a device (R-AC-7, R-AC-8); activating the connected license device of a
    suspended license recovers it (R-AC-6). Refusals: license_device_first,
    device_limit_reached, license_suspended, license_device_not_connected."""
    inst = _inst(db, actor, org_id, installation_id)
    dev = ac.activate(db, installation=inst, serial=serial, actor=actor, now=now)
    return ac.device_to_dict(dev, now, ac.timeout_of(inst),
                             ac.status_of(ac.current_license(db, inst), inst, now).state == "suspended")


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/devices/{serial}/deactivate", response_model=DeviceOut,
             responses=refusals(403))
def deactivate_device(org_id: int, installation_id: int, serial: str, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    inst = _inst(db, actor, org_id, installation_id)
    dev = ac.deactivate(db, installation=inst, serial=serial, actor=actor, now=now)
    return ac.device_to_dict(dev, now, ac.timeout_of(inst))


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/licenses", response_model=NewLicenseOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def generate_license(org_id: int, installation_id: int, body: LicenseIn, actor: CurrentActor, ctx: Ctx,
                     request: Request, response: Response,
                     idempotency_key: Annotated[str | None, Header(description="Required: a retry with the same key moves nothing.")] = None,
                     ) -> dict[str, Any]:
    """Generate and add a license for the installation's connected license device; it replaces
    the current license whole (R-AC-3, R-AC-4). The replaced license's units go back to the
    wallet; the new license's units come out of it. Refusals: license_device_not_connected,
    insufficient_units, sku_not_access_commander, license_packages_empty, license_packages_invalid."""
    actor.require_licensing(org_id)
    key = idempotency.require_key(idempotency_key)
    now = ctx.clock.now()
    packages = [(p.part_number, p.quantity) for p in body.packages] if body.packages is not None else None

    def work(s: Session) -> tuple[int, dict[str, Any]]:
        inst = ac.get_installation(s, org_id, installation_id)
        made = ac.generate_license(s, installation=inst, license_device=body.license_device, packages=packages,
                                   actor=actor, now=now, secret=ctx.secret)
        return 201, {"license": ac.license_to_dict(made.license), "license_file": made.file, "plan": made.plan}

    outcome = idempotency.run(ctx.sessions, org_id=org_id, key=key, now=now, work=work,
                              fp=idempotency.fingerprint("POST", request.url.path, body.model_dump()))
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = outcome.status
    return outcome.body


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/licenses/preview", response_model=PlanOut,
             responses=REFUSALS)
def preview_license(org_id: int, installation_id: int, body: PreviewIn, actor: CurrentActor, db: DB,
                    now: Now) -> dict[str, Any]:
    """What a new license with these packages (left out: the default) would hold and move, changing
    nothing: units back to the wallet and out of it, the wallet before and after, the devices made
    inactive until activated again."""
    inst = _inst(db, actor, org_id, installation_id)
    actor.require_licensing(org_id)
    packages = [(p.part_number, p.quantity) for p in body.packages] if body.packages is not None else None
    return ac.plan_license(db, installation=inst, packages=packages, now=now)


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/licenses/file", response_model=AddedLicenseOut,
             responses=REFUSALS)
def add_license_file(org_id: int, installation_id: int, body: LicenseFileIn, actor: CurrentActor, db: DB,
                     response: Response, now: Now) -> dict[str, Any]:
    """License adding: a license file generated for this installation becomes its license,
    replacing the current one whole (201), or is the current one already (200, nothing changes).
    Refusals: license_bad_signature, license_not_for_this_system, license_device_unknown,
    license_replaced, license_older, insufficient_units."""
    inst = _inst(db, actor, org_id, installation_id)
    lic, added = ac.add_license_file(db, installation=inst, text=body.license_file, actor=actor, now=now)
    response.status_code = status.HTTP_201_CREATED if added else status.HTTP_200_OK
    return {"license": ac.license_to_dict(lic), "added": added}


@router.get("/orgs/{org_id}/ac/installations/{installation_id}/licenses", response_model=LicensePage)
def list_licenses(org_id: int, installation_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """Every license the installation had, newest first (replaced ones have replaced_at)."""
    rows = ac.licenses_of(db, _inst(db, actor, org_id, installation_id), before_id=page.cursor, limit=page.fetch)
    return page.answer(rows, ac.license_to_dict)


@router.get("/orgs/{org_id}/ac/installations/{installation_id}/licenses/{license_id}/file",
            response_class=PlainTextResponse, responses={200: {"content": {"text/plain": {}}}})
def license_file(org_id: int, installation_id: int, license_id: int, actor: CurrentActor, db: DB) -> str:
    """The signed license file of one of the installation's licenses, as text."""
    return ac.license_by_id(db, _inst(db, actor, org_id, installation_id), license_id).file


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/licenses/check", response_model=LicenseOut,
             responses=REFUSALS)
def check_license_file(org_id: int, installation_id: int, body: LicenseFileIn, actor: CurrentActor, db: DB,
                       now: Now) -> dict[str, Any]:
    """Check a license file for this installation (signature, subject, model) and answer which
    license it is, changing nothing (…/licenses/file adds one). Refusals: license_bad_signature, license_not_for_this_system, license_replaced, …"""
    inst = _inst(db, actor, org_id, installation_id)
    return ac.license_to_dict(ac.check_license_file(db, installation=inst, text=body.license_file, actor=actor,
                                                    now=now))


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/attendance-users", response_model=AttendanceOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def add_attendance_user(org_id: int, installation_id: int, body: AttendanceIn, actor: CurrentActor, db: DB,
                        now: Now) -> dict[str, Any]:
    inst = _inst(db, actor, org_id, installation_id)
    user = ac.add_attendance_user(db, installation=inst, name=body.name, monitored=body.monitored, actor=actor, now=now)
    return {"id": user.id, "name": user.name, "monitored": user.monitored}


@router.get("/orgs/{org_id}/ac/installations/{installation_id}/attendance-users", response_model=AttendancePage)
def list_attendance_users(org_id: int, installation_id: int, actor: CurrentActor, db: DB,
                          page: Paging) -> dict[str, Any]:
    """The installation's Attendance users, oldest first."""
    inst = _inst(db, actor, org_id, installation_id)
    return page.answer(ac.attendance_users_of(db, inst, after_id=page.cursor, limit=page.fetch),
                       lambda u: {"id": u.id, "name": u.name, "monitored": u.monitored})


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/attendance-users/{user_id}/monitor",
             response_model=AttendanceOut, responses=REFUSALS)
def monitor_attendance_user(org_id: int, installation_id: int, user_id: int, body: MonitorIn, actor: CurrentActor,
                            db: DB, now: Now) -> dict[str, Any]:
    """Start or stop monitoring a user's attendance. Refusal: attendance_limit_reached (R-AC-8)."""
    inst = _inst(db, actor, org_id, installation_id)
    user = ac.set_monitored(db, installation=inst, user_id=user_id, monitored=body.monitored, actor=actor, now=now)
    return {"id": user.id, "name": user.name, "monitored": user.monitored}


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/system-users", response_model=SystemUserOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def add_system_user(org_id: int, installation_id: int, body: SystemUserIn, actor: CurrentActor, db: DB,
                    now: Now) -> dict[str, Any]:
    """Add a user of the installation's software; unlimited, but a tier limits administrators
    (refusal admin_limit_reached)."""
    inst = _inst(db, actor, org_id, installation_id)
    user = ac.add_system_user(db, installation=inst, name=body.name, admin=body.admin, actor=actor, now=now)
    return {"id": user.id, "name": user.name, "admin": user.admin}


@router.get("/orgs/{org_id}/ac/installations/{installation_id}/system-users", response_model=SystemUserPage)
def list_system_users(org_id: int, installation_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The installation's system users, oldest first."""
    inst = _inst(db, actor, org_id, installation_id)
    return page.answer(ac.system_users_of(db, inst, after_id=page.cursor, limit=page.fetch),
                       lambda u: {"id": u.id, "name": u.name, "admin": u.admin})


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/system-users/{user_id}/admin",
             response_model=SystemUserOut, responses=REFUSALS)
def set_system_user_admin(org_id: int, installation_id: int, user_id: int, body: AdminIn, actor: CurrentActor,
                          db: DB, now: Now) -> dict[str, Any]:
    inst = _inst(db, actor, org_id, installation_id)
    user = ac.set_admin(db, installation=inst, user_id=user_id, admin=body.admin, actor=actor, now=now)
    return {"id": user.id, "name": user.name, "admin": user.admin}


@router.post("/orgs/{org_id}/ac/installations/{installation_id}/integration/sync", responses=REFUSALS)
def integration_sync(org_id: int, installation_id: int, body: SyncIn, actor: CurrentActor, db: DB,
                     now: Now) -> dict[str, Any]:
    """Start an LDAP or CSV synchronisation: allowed only with the integration feature
    (R-AC-8; refusal integration_not_licensed)."""
    inst = _inst(db, actor, org_id, installation_id)
    ac.check_integration(db, installation=inst, source=body.source, actor=actor, now=now)
    return {"source": body.source, "allowed": True}


@router.post("/ac/calculate", response_model=CalculateOut, responses=refusals(409))
def calculate(body: CalculateIn, actor: CurrentActor, db: DB) -> dict[str, Any]:
    """The packages (and the smallest tier) to order for a need (R-AC-1):
    17 devices -> 4 x 91379040; 69 Attendance users -> 3 x 91379041."""
    return ac.calculate(db, devices=body.devices, attendance_users=body.attendance_users,
                        integration=body.integration)


def installation_from_token(db: Session, authorization: str | None) -> Installation:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthorized("authentication_required",
                           "Send the installation's token as 'Authorization: Bearer <token>'.")
    inst = ac.installation_for_token(db, authorization.split(None, 1)[1].strip())
    if inst is None:
        raise Unauthorized("token_invalid", "This installation token is unknown; use the token shown when the "
                           "installation was registered.")
    return inst


@router.post("/ac/state", response_model=DeviceOut, responses=refusals(401, 404))
def report_state(body: StateReportIn, db: DB, now: Now,
                 authorization: Annotated[str | None, Header()] = None) -> dict[str, Any]:
    """A device, or the installation for it, reports connect or disconnect, authenticated by the
    installation's token (R-AC-4, R-AC-5)."""
    inst = installation_from_token(db, authorization)
    dev = ac.report_state(db, installation=inst, serial=body.serial, connected=body.connected, now=now)
    return ac.device_to_dict(dev, now, ac.timeout_of(inst))
