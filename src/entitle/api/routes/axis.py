"""AXIS License Manager licensing: products, online systems and their devices, subscriptions,
allocation, renewal, upgrades and tied-to-hardware licenses (SPEC §3, R-AX-1 … R-AX-13).

Keys are redeemed into the wallet with the generic ``POST /orgs/{org_id}/wallet/redeem``; the
routes here only translate to ``entitle.axis.services``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response, status
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from entitle.api.deps import DB, Ctx, CurrentActor, Cursor, Now, Page, Paging, client_id, refusals
from entitle.api.answers import remembered, valid_until
from entitle.api.routing import OneHopRoute, quick_read
from entitle.api.schemas import Paged
from entitle.axis import services as axis
from entitle.axis.models import AxisDevice, Hardware
from entitle.catalog.models import Product
from entitle.context import Context
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.platform import idempotency
from entitle.systems.models import System
from entitle.text import SingleLine

router = APIRouter(route_class=OneHopRoute, tags=["axis"])

State = Literal["not_registered", "trial", "in_grace", "fully_licensed", "partially_licensed", "not_licensed"]
LicenseType = Annotated[str, Field(min_length=1, max_length=32, description="e.g. core, universal")]
IDEMPOTENCY = "Required: a retry with the same key moves nothing."
REFUSALS = refusals(403, 409)  # a viewer may not; an AXIS rule refused


# --- request bodies ------------------------------------------------------------------------------

class SystemIn(BaseModel):
    uid: SingleLine = Field(min_length=1, max_length=128, description="The system's own id (its installation id).")
    name: SingleLine = Field(default="", max_length=200, description="Left out: the uid.")
    product: str = Field(min_length=1, max_length=64, description="Product code, e.g. axis-camera-station.")


class DeviceIn(BaseModel):
    serial: SingleLine = Field(min_length=1, max_length=128)
    license_type: LicenseType
    hardware_serial: str | None = Field(default=None, min_length=1, max_length=128,
                                        description="The registered hardware whose licenses cover the device.")


class DevicesIn(BaseModel):
    devices: list[DeviceIn] = Field(min_length=1, max_length=axis.MAX_DEVICES_PER_CALL)


class SerialsIn(BaseModel):
    serials: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        min_length=1, max_length=axis.MAX_DEVICES_PER_CALL)


class LineIn(BaseModel):
    license_type: LicenseType
    year: int = Field(ge=0, le=10_000, description="Subscription year index: 0 is the first year.")
    units: int = Field(ge=1, le=axis.MAX_UNITS)
    term_years: Literal[1, 5] = Field(default=1, description="Take one-year or five-year units.")


class AllocateIn(BaseModel):
    lines: list[LineIn] = Field(min_length=1, max_length=100)


class RenewIn(BaseModel):
    years_ahead: int = Field(default=1, ge=0, le=5, description=(
        "Years ahead of the current subscription year to license too, 0 to 5: the renewal makes the current "
        "year and these fully licensed (0: the current year only)."))
    term_years: Literal[1, 5] | None = Field(default=None, description=(
        "Use only units of this term. Default: the wallet's five-year units first, then its one-year units, "
        "as the buying guidance counts them."))


class UpgradeIn(BaseModel):
    year: int = Field(ge=0, le=10_000)
    units: int = Field(ge=1, le=axis.MAX_UNITS)


class HardwareIn(BaseModel):
    serial: SingleLine = Field(min_length=1, max_length=128)
    name: SingleLine = Field(default="", max_length=200)
    product: str = Field(min_length=1, max_length=64)
    license_type: LicenseType | None = Field(default=None, description="Left out: the preloaded key's.")
    preloaded_key: str | None = Field(default=None, min_length=1, max_length=100,
                                      description="The key that came with the hardware; its licenses go onto "
                                                  "the hardware, never into the wallet.")


class UnitsIn(BaseModel):
    units: int = Field(ge=1, le=axis.MAX_UNITS)


# --- responses -----------------------------------------------------------------------------------

class CurrentYearOut(BaseModel):
    index: int
    start: str
    end: str
    grace_end: str | None


class ProductOut(BaseModel):
    product: str
    name: str
    state: State
    systems: int
    subscription_start: str | None
    current_year: CurrentYearOut | None
    trial_ends_at: str | None


class TypeStateOut(BaseModel):
    need_now: int = Field(description="Devices needing a license now.")
    need: int = Field(description="The need the current year is measured against (fixed at its grace end).")
    allocated: int
    state: State


class YearTypeOut(BaseModel):
    need: int
    allocated: int
    missing: int


class YearOut(BaseModel):
    index: int
    start: str
    end: str
    grace_end: str
    fully_licensed: bool
    license_types: dict[str, YearTypeOut]


class LotOut(BaseModel):
    lot: str
    part_number: str
    grant_kind: str
    license_type: str
    term_years: int
    units: int
    received_at: str
    expires_at: str


class WalletLotsOut(BaseModel):
    lots: list[LotOut] = Field(description="Usable lots, oldest first (used first).")
    units: dict[str, dict[str, int]] = Field(description='License type -> {"<grant kind>:<term>": units}.')
    remainder_license_days: dict[str, int] = Field(description="Compensation not yet a whole unit, per part number.")


class GrowthTypeOut(BaseModel):
    need: int
    allocated: int
    limit: int


class GrowthOut(BaseModel):
    over: bool = Field(description="The need grew past twice the allocation (R-AX-9).")
    license_types: dict[str, GrowthTypeOut]


class HardwareOut(BaseModel):
    serial: str
    name: str
    license_type: str
    preloaded_units: int
    licenses: int = Field(description="Preloaded plus expansion units, for the hardware's lifetime.")
    expansion_units: int
    devices: int
    missing: int = Field(description="Devices beyond its licenses: they need expansion licenses on it.")
    licensed: bool
    registered_at: str


class HardwareNeedOut(HardwareOut):
    from_wallet: int = Field(description="Expansion units in the wallet that would cover the missing licenses.")
    to_buy: int = Field(description="Expansion licenses to buy for this hardware.")


class StatusOut(BaseModel):
    product: str
    name: str
    registered: bool
    registered_at: str | None
    trial_ends_at: str | None
    subscription_start: str | None
    current_year: CurrentYearOut | None
    state: State
    license_types: dict[str, TypeStateOut]
    years: list[YearOut] = Field(description="The current year and the five ahead that can be allocated.")
    wallet: WalletLotsOut
    growth: GrowthOut
    buying_guidance: dict[str, dict[str, int]] = Field(description=(
        "License type -> {year: units to buy}, after the wallet's units are allocated as a renewal allocates "
        "them (a five-year unit licenses one device in each of five consecutive years)."))
    hardware: list[HardwareNeedOut] = Field(description=(
        "The product's hardware: devices beyond a hardware's licenses need expansion licenses on it (R-AX-10)."))


class AllocationMadeOut(BaseModel):
    id: int
    license_type: str
    year: int
    years: int
    units: int
    part_number: str
    period_start: str
    period_end: str
    compensation_license_days: int
    compensation_units: int


class AllocationResultOut(BaseModel):
    allocations: list[AllocationMadeOut]
    state: State
    message: str | None = None
    years: list[int] | None = Field(default=None, description="Renewal: the years it allocated to.")
    licensed_years: list[int] | None = Field(default=None, description=(
        "Renewal: the years it made fully licensed (the current one and the years ahead asked)."))


class AllocationOut(BaseModel):
    id: int
    kind: str = Field(description="allocation, upgrade or upgraded (the units an upgrade converted).")
    license_type: str
    part_number: str
    year: int
    years: int
    units: int
    compensation_license_days: int
    compensation_units: int
    allocated_at: str
    actor: str


class UpgradeMadeOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    year: int
    units: int
    from_: str = Field(alias="from")
    to: str


class UpgradeResultOut(BaseModel):
    upgrades: list[UpgradeMadeOut]
    state: State


class AxisSystemOut(BaseModel):
    id: int
    uid: str
    name: str
    product: str
    offline: bool
    devices: dict[str, int] = Field(description="Devices in the system now, per license type.")
    registered_at: str
    updated_at: str


class DeviceOut(BaseModel):
    serial: str
    license_type: str
    hardware_serial: str | None
    added_at: str


class AxisProductPage(Paged[ProductOut]):
    pass


class AllocationPage(Paged[AllocationOut]):
    pass


class AxisSystemPage(Paged[AxisSystemOut]):
    pass


class AxisDevicePage(Paged[DeviceOut]):
    pass


class HardwarePage(Paged[HardwareOut]):
    pass


class DevicesAddedOut(BaseModel):
    added: int
    system: AxisSystemOut


class DevicesRemovedOut(BaseModel):
    removed: int
    system: AxisSystemOut


async def device_paging(limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 1000,
                        cursor: Cursor = None) -> Page:
    """A page of devices holds up to 1,000 (the list's size before it had pages)."""
    return Page(limit, cursor)


# --- helpers -------------------------------------------------------------------------------------

def _system(db: Session, org_id: int, system_id: int) -> dict[str, Any]:
    axis.axis_system(db, org_id, system_id)  # another organization's system looks like none
    return axis.systems_summary(db, org_id, system_id)[0]


def _idempotent(ctx: Context, request: Request, response: Response, *, org_id: int, key: str | None, body: BaseModel,
                work: Callable[[Session], tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    outcome = idempotency.run(ctx.sessions, org_id=org_id, key=idempotency.require_key(key), now=ctx.clock.now(),
                              fp=idempotency.fingerprint("POST", request.url.path, body.model_dump()), work=work)
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = outcome.status
    return outcome.body


def _state(s: Session, org_id: int, product: str, now: datetime) -> str:
    return str(axis.status(s, org_id=org_id, product=axis.product_by_code(s, product), now=now)["state"])


# --- products ------------------------------------------------------------------------------------

@router.get("/orgs/{org_id}/axis/products", response_model=AxisProductPage)
@quick_read
def list_products(org_id: int, actor: CurrentActor, db: DB, now: Now, page: Paging) -> dict[str, Any]:
    """The product list: every AXIS product registered to the organization, with its state, in
    the catalog's order."""
    actor.require_member(org_id)
    rows = axis.products(db, org_id=org_id, now=now, after_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda line: line, key=lambda line: line["id"])


@router.get("/orgs/{org_id}/axis/products/{product}", response_model=StatusOut)
@remembered
@quick_read
def product_status(org_id: int, product: str, actor: CurrentActor, db: DB, now: Now,
                   request: Request) -> dict[str, Any]:
    """A product's overview and licensing: state (trial, in_grace, fully_licensed,
    partially_licensed, not_licensed), the current subscription year and its grace end, need and
    allocation per year and license type, the wallet's lots, the growth allowance and buying
    guidance. Refusals: product_not_found, product_not_registered."""
    actor.require_member(org_id)
    prod = axis.product_by_code(db, product)
    edges: list[datetime] = []
    answer = axis.status(db, org_id=org_id, product=prod, now=now, edges=edges)  # reads the registration first
    valid_until(request, axis.status_changes_at(edges, now))
    if not answer["registered"]:
        raise EntitleError("product_not_registered",
                           f"No {prod.name} system is registered to this organization; register one first.",
                           status=404, product=prod.code)
    return answer


@router.post("/orgs/{org_id}/axis/products/{product}/subscription", response_model=StatusOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def start_subscription(org_id: int, product: str, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Start the subscription: it fixes the subscription years from now and opens the first
    30-day grace period (R-AX-3). Refusals: product_not_registered, subscription_already_started."""
    axis.start_subscription(db, org_id=org_id, product_code=product, actor=actor, now=now)
    return axis.status(db, org_id=org_id, product=axis.product_by_code(db, product), now=now)


@router.post("/orgs/{org_id}/axis/products/{product}/allocations", response_model=AllocationResultOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def allocate(org_id: int, product: str, body: AllocateIn, actor: CurrentActor, ctx: Ctx, request: Request,
             response: Response, idempotency_key: Annotated[str | None, Header(description=IDEMPOTENCY)] = None,
             ) -> dict[str, Any]:
    """Confirm an allocation from the wallet, every line or none (R-AX-5); the oldest units go
    first (R-AX-4); time before the coverage start comes back as compensation (R-AX-7).
    Refusals: insufficient_units (detail.missing, detail.lines), subscription_not_started,
    year_out_of_range, license_type_unknown, term_invalid."""
    actor.require_licensing(org_id)
    now = ctx.clock.now()
    lines = [axis.Line(x.license_type, x.year, x.units, x.term_years) for x in body.lines]
    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key, body=body, work=lambda s: (
        201, axis.allocate(s, org_id=org_id, product_code=product, lines=lines, actor=actor, now=now)))


@router.get("/orgs/{org_id}/axis/products/{product}/allocations", response_model=AllocationPage)
def list_allocations(org_id: int, product: str, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """Every allocation of the product, oldest first (upgrades show as an upgrade and an upgraded row)."""
    actor.require_member(org_id)
    rows = axis.allocations_of(db, org_id, axis.product_by_code(db, product), after_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda row: row, key=lambda row: row["id"])


@router.post("/orgs/{org_id}/axis/products/{product}/renew", response_model=AllocationResultOut,
             responses=REFUSALS)
def renew(org_id: int, product: str, body: RenewIn, actor: CurrentActor, ctx: Ctx, request: Request,
          response: Response, idempotency_key: Annotated[str | None, Header(description=IDEMPOTENCY)] = None,
          ) -> dict[str, Any]:
    """Renew: make the current subscription year fully licensed when it is not, then each of the
    ``years_ahead`` years after it (0 to 5), each against its need, from the wallet (R-AX-5,
    R-AX-6); ``years`` says which years got units. Refused whole when the wallet is short
    (insufficient_units, with what each license type misses per year)."""
    actor.require_licensing(org_id)
    now = ctx.clock.now()
    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key, body=body, work=lambda s: (
        200, axis.renew(s, org_id=org_id, product_code=product, years_ahead=body.years_ahead,
                        term_years=body.term_years, actor=actor, now=now)))


@router.post("/orgs/{org_id}/axis/products/{product}/upgrades", response_model=UpgradeResultOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def upgrade(org_id: int, product: str, body: UpgradeIn, actor: CurrentActor, ctx: Ctx, request: Request,
            response: Response, idempotency_key: Annotated[str | None, Header(description=IDEMPOTENCY)] = None,
            ) -> dict[str, Any]:
    """Convert allocated one-year units of a year into another license type with upgrade units
    from the wallet, each used once (R-AX-13); only the units beyond the year's need of the old
    type. Refusals: insufficient_units, upgrade_nothing_to_convert, upgrade_leaves_need_uncovered,
    year_out_of_range."""
    actor.require_licensing(org_id)
    now = ctx.clock.now()

    def work(s: Session) -> tuple[int, dict[str, Any]]:
        out = axis.upgrade(s, org_id=org_id, product_code=product, year=body.year, units=body.units,
                           actor=actor, now=now)
        return 201, {**out, "state": _state(s, org_id, product, now)}

    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key, body=body, work=work)


# --- online systems and their devices ------------------------------------------------------------

@router.post("/orgs/{org_id}/axis/systems", response_model=AxisSystemOut, status_code=status.HTTP_201_CREATED,
             responses=REFUSALS)
def register_system(org_id: int, body: SystemIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Register an online system; the product's 90-day trial starts with its first system, and
    a registration never moves to another organization (R-AX-1, R-AX-13). Refusals:
    system_exists, system_registered_elsewhere, product_not_found."""
    system = axis.register_system(db, org_id=org_id, uid=body.uid, name=body.name, product_code=body.product,
                                  actor=actor, now=now)
    return _system(db, org_id, system.id)


@router.get("/orgs/{org_id}/axis/systems", response_model=AxisSystemPage)
@quick_read
def list_systems(org_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The organization's AXIS systems, online and offline, with device counts per license type."""
    actor.require_member(org_id)
    rows = axis.systems_summary(db, org_id, after_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda row: row, key=lambda row: row["id"])


@router.get("/orgs/{org_id}/axis/systems/{system_id}", response_model=AxisSystemOut)
@quick_read
def get_system(org_id: int, system_id: int, actor: CurrentActor, db: DB) -> dict[str, Any]:
    actor.require_member(org_id)
    return _system(db, org_id, system_id)


@router.post("/orgs/{org_id}/axis/systems/{system_id}/devices", response_model=DevicesAddedOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def add_devices(org_id: int, system_id: int, body: DevicesIn, actor: CurrentActor, db: DB,
                now: Now) -> dict[str, Any]:
    """Add devices; no allocation is needed at once: they count toward the next renewal's need
    (R-AX-8), and growth past twice the allocation is flagged (R-AX-9). Refusals: device_exists,
    serial_duplicate, license_type_unknown, hardware_not_found."""
    added = axis.add_devices(db, org_id=org_id, system_id=system_id, actor=actor, now=now,
                             devices=[axis.NewDevice(d.serial, d.license_type, d.hardware_serial)
                                      for d in body.devices])
    return {"added": added, "system": _system(db, org_id, system_id)}


@router.post("/orgs/{org_id}/axis/systems/{system_id}/devices/remove", response_model=DevicesRemovedOut,
             responses=REFUSALS)
def remove_devices(org_id: int, system_id: int, body: SerialsIn, actor: CurrentActor, db: DB,
                   now: Now) -> dict[str, Any]:
    """Remove devices from a system (all listed, or none: device_not_found)."""
    removed = axis.remove_devices(db, org_id=org_id, system_id=system_id, serials=body.serials, actor=actor, now=now)
    return {"removed": removed, "system": _system(db, org_id, system_id)}


@router.get("/orgs/{org_id}/axis/systems/{system_id}/devices", response_model=AxisDevicePage)
def list_devices(org_id: int, system_id: int, actor: CurrentActor, db: DB,
                 page: Annotated[Page, Depends(device_paging)]) -> dict[str, Any]:
    """The system's devices now, by serial number (a page: up to 1,000, as before paging)."""
    actor.require_member(org_id)
    system, _product = axis.axis_system(db, org_id, system_id)
    rows = axis.device_rows(db, system, after_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda row: row, key=lambda row: row["id"])


# --- tied to hardware (R-AX-10) ------------------------------------------------------------------

@router.post("/orgs/{org_id}/axis/hardware", response_model=HardwareOut, status_code=status.HTTP_201_CREATED,
             responses=refusals(403, 409, 429))
def register_hardware(org_id: int, body: HardwareIn, actor: CurrentActor, ctx: Ctx, request: Request,
                      response: Response,
                      idempotency_key: Annotated[str | None, Header(
                          description="Required with a preloaded_key (its units move onto the hardware).")] = None,
                      ) -> dict[str, Any]:
    """Register hardware to the organization for its lifetime; the preloaded key that came with
    it is redeemed onto the hardware at once (R-AX-10). Refusals: hardware_exists,
    hardware_registered_elsewhere, license_type_required, key_not_preloaded, license_type_mismatch,
    and the redeem refusals (key_unknown, key_already_redeemed, …)."""
    actor.require_licensing(org_id)
    now = ctx.clock.now()

    def work(s: Session) -> tuple[int, dict[str, Any]]:
        hw = axis.register_hardware(s, org_id=org_id, product_code=body.product, serial=body.serial, name=body.name,
                                    license_type=body.license_type, preloaded_key=body.preloaded_key,
                                    actor=actor, now=now)
        return 201, axis.hardware_to_dict(s, hw, now)

    if body.preloaded_key is None and idempotency_key is None:  # nothing moves: a retry gets hardware_exists
        with transaction(ctx.sessions) as s:
            return work(s)[1]
    if body.preloaded_key is not None:
        idempotency.require_key(idempotency_key)
        ctx.redeem_limiter.hit(org_id=org_id, client=client_id(request))  # a key is typed, as in redeem
    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key, body=body, work=work)


@router.get("/orgs/{org_id}/axis/hardware", response_model=HardwarePage)
def list_hardware(org_id: int, actor: CurrentActor, db: DB, now: Now, page: Paging) -> dict[str, Any]:
    """The organization's registered hardware, oldest first."""
    actor.require_member(org_id)
    return page.answer(axis.hardware_of(db, org_id, after_id=page.cursor, limit=page.fetch),
                       lambda hw: axis.hardware_to_dict(db, hw, now))


@router.get("/orgs/{org_id}/axis/hardware/{serial}", response_model=HardwareOut)
def get_hardware(org_id: int, serial: str, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    actor.require_member(org_id)
    return axis.hardware_to_dict(db, axis.get_hardware(db, org_id, serial), now)


@router.post("/orgs/{org_id}/axis/hardware/{serial}/allocations", response_model=HardwareOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def allocate_to_hardware(org_id: int, serial: str, body: UnitsIn, actor: CurrentActor, ctx: Ctx, request: Request,
                         response: Response,
                         idempotency_key: Annotated[str | None, Header(description=IDEMPOTENCY)] = None,
                         ) -> dict[str, Any]:
    """Allocate expansion units from the wallet (oldest first) to this hardware, for good
    (R-AX-10). Refusal: insufficient_units (detail.missing)."""
    actor.require_licensing(org_id)
    now = ctx.clock.now()
    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key, body=body, work=lambda s: (
        201, axis.allocate_to_hardware(s, org_id=org_id, serial=serial, units=body.units, actor=actor, now=now)))
