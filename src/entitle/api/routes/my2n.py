"""My2N apartment licenses (SPEC §4, R-MY-1 … R-MY-6): sites, apartments, devices, the site
dashboard, the migration to the apartment model and the site type, vouchers and the site credit
pool, site roles, card payments with recurring payment and the payment provider's webhook.

The routes only translate to ``entitle.my2n.services``, ``access`` and ``billing``, which decide
who may do what (company admins, site admins, apartment admins, payers). A site, apartment or
device of another organization looks exactly like one that does not exist (R-CORE-1): every
route checks the caller's membership of ``org_id`` and then finds the site inside that
organization.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Request, Response, status
from pydantic import AwareDatetime, BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging, client_id, refusals
from entitle.api.answers import remembered, valid_until
from entitle.api.routing import OneHopRoute, quick_read
from entitle.api.schemas import Paged
from entitle.context import Context
from entitle.db import reading, transaction
from entitle.errors import EntitleError, NotFound
from entitle.my2n import access, billing, board, rules
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, Site, SiteDevice
from entitle.platform import idempotency
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import User
from entitle.text import SingleLine

router = APIRouter(route_class=OneHopRoute, tags=["my2n"])

MAX_ID = 2**63 - 1  # a database integer
SiteId = Annotated[int, Path(ge=1, le=MAX_ID)]
ApartmentId = Annotated[int, Path(ge=1, le=MAX_ID)]
Serial = Annotated[str, Path(min_length=1, max_length=128)]
UserId = Annotated[int, Path(ge=1, le=MAX_ID)]
IDEMPOTENCY = "Required: a retry with the same key moves nothing."
IdemKey = Annotated[str | None, Header(description=IDEMPOTENCY)]
REFUSALS = refusals(403, 409)  # the role may not; a My2N rule refused
PAYMENT_REFUSALS = refusals(402, 403, 409, 502, 503)  # and the payment provider's answers
MAX_WEBHOOK_BYTES = 1024 * 1024  # a provider event is a few kilobytes


# --- request bodies ------------------------------------------------------------------------------

class SiteIn(BaseModel):
    name: SingleLine = Field(min_length=1, max_length=200)
    model: str = Field(default="apartment", min_length=1, max_length=16,
                       description="apartment. The retired custom model is recorded only by the vendor, "
                                   "for a legacy site, with custom_expires_at (R-MY-1).")
    custom_expires_at: AwareDatetime | None = Field(default=None,
                                                    description="A legacy custom-model site's expiry.")
    site_type: rules.SiteType = "apartment_building"
    region: str | None = Field(default=None, max_length=8, description=(
        "The site's sales region (EU, US, APAC, LATAM or MEA); left out: the organization's. It decides the voucher "
        "part its pool accepts and the part to order (02683-001 for US & APAC, else 9137958), and the price and "
        "currency of its card payments."))


class RegionIn(BaseModel):
    region: str = Field(min_length=1, max_length=8, description="EU, US, APAC, LATAM or MEA.")


class ApartmentIn(BaseModel):
    name: SingleLine = Field(min_length=1, max_length=200)


class DeviceIn(BaseModel):
    serial: SingleLine = Field(min_length=1, max_length=128, description="The device's serial number (or name).")
    kind: rules.DeviceKind = Field(description="Phones, tablets and third-party devices are paid devices; 2N "
                                         "answering units are free; intercoms belong to no apartment (R-MY-2).")
    apartment_id: int | None = Field(default=None, ge=1, le=MAX_ID)
    local_mode: bool = Field(default=False, description="A paid device in local mode needs no license (R-MY-3).")


class AssignIn(BaseModel):
    apartment_id: int | None = Field(ge=1, le=MAX_ID, description="null: out of every apartment.")


class LocalModeIn(BaseModel):
    local_mode: bool


class ModelIn(BaseModel):
    model: str = Field(default="apartment", min_length=1, max_length=16,
                       description="The business model to move the site to: apartment (custom is retired).")


class SiteTypeIn(BaseModel):
    site_type: rules.SiteType


class VoucherIn(BaseModel):
    code: str = Field(min_length=1, max_length=100, description="The voucher code as typed.")


class VoucherBatchIn(BaseModel):
    part_number: str = Field(min_length=1, max_length=64,
                             description=f"{rules.PART_DEFAULT}, or {rules.PART_US_APAC} for US & APAC sites.")
    name: SingleLine = Field(min_length=1, max_length=200, description="The batch's name (the distributor's order).")
    years: int = Field(default=1, ge=1, le=10, description="What each code is worth, in years.")
    subscriptions: int = Field(ge=1, le=10_000, description="How many codes.")
    scope: rules.VoucherScope = Field(default="apartment",
                                description="apartment: each code adds apartment-years; device: device-years.")


class SiteRoleIn(BaseModel):
    email: str = Field(min_length=1, max_length=320, description="A member of the organization (any role).")
    role: access.SiteRoleName
    apartment_id: int | None = Field(default=None, ge=1, le=MAX_ID, description="The apartment of an apartment admin.")
    payments: bool = Field(default=False, description="A site admin who may pay and see prices (R-MY-5).")


class ActivateIn(BaseModel):
    expected_amount_minor: int | None = Field(default=None, ge=0, description=(
        "The amount the preview showed; if turning recurring payment on would now charge another amount, it is "
        "refused (charge_changed) and nothing is charged."))


class AutoCreditIn(BaseModel):
    auto_credit: bool


class CardIn(BaseModel):
    payment_method: str = Field(min_length=1, max_length=255,
                                description="The id of the card entered in the payment provider's own form.")


# --- responses -----------------------------------------------------------------------------------

class SiteOut(BaseModel):
    id: int
    name: str
    region: str = Field(description="The site's sales region: it decides the voucher part (02683-001 for US & APAC, "
                                    "else 9137958), what to order and the price of card payments.")
    model: rules.BusinessModel
    site_type: rules.SiteType | None = Field(description="Chosen by the site's admin once the site has the apartment "
                                                   "model (R-MY-4).")
    site_type_required: bool = Field(description="A migrated site whose type is still to be chosen.")
    custom_expires_at: str | None = Field(description="When a custom-model site expires (R-MY-1).")
    custom_expired: bool | None
    model_changed_at: str | None
    auto_credit: bool = Field(default=True, description="On the day an apartment would lapse, its next year is paid "
                                                        "from the site credit pool (R-MY-5).")
    created_at: str


class SitePage(BaseModel):
    items: list[SiteOut]
    next_cursor: int | None = None


class OrderOut(BaseModel):
    part_number: str = Field(description="9137958; 02683-001 on US & APAC sites.")
    quantity: int = Field(description="Apartment-years the site lacks to keep every apartment needing a license "
                                      "working for the next twelve months: those not paid through then or partly paid, less the "
                                      "credit pool; 0 while recurring payment is on (it pays them).")


class PoolOut(BaseModel):
    apartment_years: int
    device_years: int


class RecurringStateOut(BaseModel):
    renews_at: str = Field(description="The site's anniversary: recurring payment renews then.")
    covered_until: str = Field(description="Apartments needing a license work at least until then (the anniversary "
                                           "plus the 7-day retry window).")
    charge_failing: bool = Field(description="A charge was declined or the renewal is due: being retried.")


STATE_DOC = ("no_license_needed, not_paid (never paid), paid, lapsing_soon (ends within 30 days), partly_paid "
             "(paid per device for fewer devices than it has) or lapsed (its license ended).")


class DashboardRowOut(BaseModel):
    id: int
    name: str
    needs_license: bool
    paid_devices: int
    paid_through: str | None
    state: rules.ApartmentState = Field(description=STATE_DOC)
    devices_paid_for: int | None = Field(default=None, description="Paid with device-years for this many devices; "
                                                                   "null: paid per apartment (every device).")
    devices_not_paid: list[str] = Field(default_factory=list, description="Partly paid: the serials that stop, the "
                                                                          "last to start counting first.")


class DashboardOut(BaseModel):
    site: SiteOut
    apartments: int
    needing_license: int = Field(description="Apartments with a paid device not in local mode (R-MY-3).")
    lapsed: list[str] = Field(description="Apartments needing a license whose license ended: their paid devices "
                                          "stop (R-MY-6). An apartment never paid is in not_paid.")
    not_paid: list[str] = Field(default_factory=list, description="Apartments needing a license that was never "
                                                                  "paid: their paid devices do not work.")
    partly_paid: list[str] = Field(default_factory=list, description=(
        "Apartments paid per device (device-years) for fewer devices than they have: the rows' devices_not_paid "
        "stop (R-MY-5)."))
    lapsing_soon: list[str] = Field(description="Apartments whose license ends within 30 days (R-MY-6).")
    order: OrderOut
    order_basis: str = Field(description="How order is counted: unpaid_less_pool, or recurring (nothing to order).")
    pool: PoolOut = Field(description="The site credit pool's balance.")
    recurring: RecurringStateOut | None = Field(description="Automatic recurring payment, while it is on.")
    rows: list[DashboardRowOut] = Field(description="One page of apartments, by id (limit, cursor).")
    next_cursor: int | None = Field(default=None, description="Pass as cursor for the next page of rows.")


class DeviceOut(BaseModel):
    serial: str
    kind: rules.DeviceKind
    apartment_id: int | None
    local_mode: bool
    paid: bool = Field(description="A phone, tablet or third-party device (R-MY-2).")
    works: bool = Field(description="False for a paid device outside local mode whose apartment's license is "
                                    "not paid or lapsed, or that its apartment's per-device payment does not cover "
                                    "(R-MY-5, R-MY-6); intercoms and 2N answering units always work.")
    created_at: str


class DevicePage(BaseModel):
    items: list[DeviceOut]
    next_cursor: int | None = None


class ApartmentOut(BaseModel):
    id: int
    site_id: int
    name: str
    devices: int
    paid_devices: int = Field(description="At most 4 (R-MY-2).")
    needs_license: bool
    lapsed: bool = Field(description="Needs a license and its license ended: its paid devices stop (R-MY-6). "
                                     "False for one never paid (state not_paid).")
    state: rules.ApartmentState = Field(description=STATE_DOC)
    paid_through: str | None
    devices_paid_for: int | None = Field(default=None, description="Paid with device-years for this many devices; "
                                                                   "null: paid per apartment (every device).")
    created_at: str


class ApartmentDetailOut(ApartmentOut):
    device_list: list[DeviceOut]


class ApartmentPage(BaseModel):
    items: list[ApartmentOut]
    next_cursor: int | None = None


class UnassignedOut(BaseModel):
    serial: str
    kind: rules.DeviceKind


class MigrationOut(BaseModel):
    site: SiteOut
    unassigned: list[UnassignedOut] = Field(description="Every device, except intercoms, not in an apartment.")
    ready: bool = Field(description="Nothing left to assign: the model change can be asked for (R-MY-4).")


class ModelChangeOut(BaseModel):
    site: SiteOut
    users_logged_out: int
    sessions_revoked: int


class DeviceRemovedOut(BaseModel):
    serial: str
    kind: str
    apartment: int | None = Field(description="The apartment it was in (its id), if any.")
    local_mode: bool


class VoucherRedeemedOut(BaseModel):
    scope: rules.VoucherScope
    years: int
    pool: PoolOut


class PaidOut(BaseModel):
    apartment: str
    paid_through: str
    devices_paid_for: int | None = Field(default=None, description="Paid with device-years for this many devices; "
                                                                   "null: paid per apartment (every device).")
    top_up: bool = Field(default=False, description="It paid devices the running paid time did not cover, "
                                                    "through the same date.")
    pool: PoolOut


class SiteRoleOut(BaseModel):
    user_id: int
    email: str
    role: access.SiteRoleName
    apartment_id: int | None
    payments: bool


class PriceOut(BaseModel):
    per_apartment_year_minor: int = Field(description="In minor units (cents).")
    currency: str
    year_total_minor: int = Field(description="A year of every apartment that needs a license now.")


class PaymentPlanOut(BaseModel):
    site: int
    card: str | None = Field(description="The card on file: its brand and last four digits, e.g. 'Visa •••• 4242'.")
    recurring: bool = Field(description="Automatic recurring payment is on.")
    apartments_covered: int
    activated_at: str | None
    deactivated_at: str | None
    renews_at: str | None = Field(default=None, description="The site's anniversary (the end of its billing year).")
    covered_until: str | None = Field(default=None, description="While recurring payment is on: apartments needing "
                                                                "a license work at least until then.")
    charge_failing: bool = False
    needing_license: int
    may_pay: bool = Field(description="The caller may pay and see prices (R-MY-5).")
    price: PriceOut | None = Field(default=None, description="Only for those who may pay.")


class CardOut(BaseModel):
    card: str


class RecurringOut(BaseModel):
    recurring: bool
    apartments_covered: int | None = None
    paid: list[str] = Field(default_factory=list, description="Apartments paid now (through renews_at), by name.")
    charged_minor: int | None = Field(default=None, description="What the card was charged now (0: everything "
                                                                "was paid).")
    currency: str | None = None
    renews_at: str | None = None


class ChargeLineOut(BaseModel):
    apartment: str
    days: int = Field(description="Days not paid before the anniversary (a started day counts).")
    amount_minor: int


class PreviewOut(BaseModel):
    apartments_covered: int
    amount_minor: int = Field(description="What turning recurring payment on now would charge.")
    currency: str
    renews_at: str
    year_days: int
    lines: list[ChargeLineOut] = Field(description="Each apartment charged: price × days ÷ days of the year.")
    from_: str = Field(alias="from", serialization_alias="from")


class PaymentOut(BaseModel):
    payment: str = Field(description="The provider's invoice or payment id.")
    paid_at: str
    apartments: int = Field(description="Apartment-years it paid.")
    amount_minor: int | None
    currency: str | None
    purpose: str | None = Field(default=None, description="activation, added (apartments joining mid-year), "
                                                          "renewal or provider.")
    paid_through: str | None = Field(default=None, description="The end of the billing year it paid.")


class WebhookOut(BaseModel):
    event: str
    outcome: str = Field(description="paid, payment_failed, recurring_stopped, ignored or duplicate.")


class VoucherBatchOut(BaseModel):
    id: int
    key_batch_id: int
    part_number: str
    name: str
    years: int
    subscriptions: int
    scope: rules.VoucherScope
    minted_by: str
    purchased_at: str
    valid_until: str = Field(description="Codes can be activated until this moment, excluded (3 years from the "
                                         "purchase, R-MY-5).")
    valid_until_text: str = Field(description="The same as people read it: the date, with the time and zone when "
                                              "it is not midnight UTC.")
    codes: CodeStatesOut | None = Field(default=None, description="How many codes are in each state (in lists).")


class SiteRolePage(Paged[SiteRoleOut]):
    pass


class PaymentPage(Paged[PaymentOut]):
    pass


class VoucherBatchPage(Paged[VoucherBatchOut]):
    pass


class CodeStatesOut(BaseModel):
    active: int
    used: int
    cancelled: int


class VoucherMintOut(BaseModel):
    batch: VoucherBatchOut
    codes: list[str] | None = Field(description="The codes, shown once: a replay of the same request returns null.")


# --- helpers -------------------------------------------------------------------------------------

def _site(db: Session, actor: Actor, org_id: int, site_id: int) -> Site:
    """The site, for a member of its organization; anything else looks like no such site."""
    actor.require_member(org_id)
    return my2n.get_site(db, org_id, site_id)


def _device_out(db: Session, site: Site, d: SiteDevice, now: datetime) -> dict[str, Any]:
    return {"serial": d.serial, "kind": d.kind, "apartment_id": d.apartment_id, "local_mode": d.local_mode,
            "paid": d.kind in rules.PAID_KINDS, "works": my2n.device_works(db, site=site, device=d, now=now),
            "created_at": d.created_at.isoformat()}


def _apartments_out(db: Session, site: Site, apartments: list[Apartment], now: datetime) -> list[dict[str, Any]]:
    """Apartment rows with their device counts and need (R-MY-2, R-MY-3, R-MY-6), one query for
    the devices of the whole page."""
    devices: dict[int, list[rules.Device]] = defaultdict(list)
    if apartments:
        for d in db.scalars(select(SiteDevice).where(SiteDevice.apartment_id.in_([a.id for a in apartments]))):
            devices[d.apartment_id or 0].append(my2n.rule_device(d))
    out = []
    recurring = my2n.recurring_of(db, site)
    for a in apartments:
        mine = devices[a.id]
        needs = rules.needs_license(mine)
        state = rules.apartment_state(my2n.rule_apartment(a), mine, now, recurring)
        out.append({"id": a.id, "site_id": a.site_id, "name": a.name, "devices": len(mine),
                    "paid_devices": sum(1 for d in mine if rules.is_paid_device(d)), "needs_license": needs,
                    "lapsed": state == "lapsed", "state": state, "devices_paid_for": a.devices_paid_for,
                    "paid_through": a.paid_through.isoformat() if a.paid_through else None,
                    "created_at": a.created_at.isoformat()})
    return out


def _page(rows: list[Any], limit: int, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": items[:limit], "next_cursor": rows[limit - 1].id if len(rows) > limit else None}


def _idempotent(ctx: Context, request: Request, response: Response, *, org_id: int, key: str | None, body: Any,
                work: Callable[[Session], tuple[int, dict[str, Any]]],
                stored: Callable[[dict[str, Any]], dict[str, Any]] = lambda b: b) -> dict[str, Any]:
    outcome = idempotency.run(ctx.sessions, org_id=org_id, key=idempotency.require_key(key), now=ctx.clock.now(),
                              fp=idempotency.fingerprint("POST", request.url.path, body), work=work, stored=stored)
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = outcome.status
    return outcome.body


# --- sites (R-MY-1) ------------------------------------------------------------------------------

@router.get("/orgs/{org_id}/sites", response_model=SitePage)
@quick_read
def list_sites(org_id: int, actor: CurrentActor, db: DB, now: Now, page: Paging) -> dict[str, Any]:
    """The organization's (company's) sites, oldest first."""
    actor.require_member(org_id)
    stmt = select(Site).where(Site.org_id == org_id)
    if page.cursor is not None:
        stmt = stmt.where(Site.id > page.cursor)
    rows = list(db.scalars(stmt.order_by(Site.id).limit(page.limit + 1)))
    return _page(rows, page.limit, [my2n.site_to_dict(s, now) for s in rows[: page.limit]])


@router.post("/orgs/{org_id}/sites", response_model=SiteOut, status_code=status.HTTP_201_CREATED,
             responses=REFUSALS)
def create_site(org_id: int, body: SiteIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """A new site, with the apartment model, in the region given (the organization's when left
    out), which decides the voucher part it accepts, the part number to order and the price of
    its card payments (R-MY-1, R-MY-3, R-MY-5). Refusals: site_exists, model_retired (the custom
    model is retired: only the vendor records a legacy custom site), custom_expiry_required,
    model_unknown."""
    expires = body.custom_expires_at.astimezone(UTC) if body.custom_expires_at else None
    site = my2n.create_site(db, org_id=org_id, name=body.name, model=body.model, custom_expires_at=expires,
                            site_type=body.site_type, region=body.region, actor=actor, now=now)
    return my2n.site_to_dict(site, now)


@router.put("/orgs/{org_id}/sites/{site_id}/region", response_model=SiteOut, responses=REFUSALS)
def change_region(org_id: int, site_id: SiteId, body: RegionIn, actor: CurrentActor, db: DB,
                  now: Now) -> dict[str, Any]:
    """Change the site's region (company admins only), until a voucher code has been activated
    into its credit pool, and not while recurring payment is on. Refusals: region_locked
    (detail.reason: voucher_redeemed or recurring_payment_active), role_insufficient."""
    site = _site(db, actor, org_id, site_id)
    return my2n.site_to_dict(my2n.change_region(db, site=site, region=body.region, actor=actor, now=now), now)


@router.get("/orgs/{org_id}/sites/{site_id}", response_model=SiteOut)
@quick_read
def get_site(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """A site with its business model; a custom-model site shows when it expires (R-MY-1)."""
    return my2n.site_to_dict(_site(db, actor, org_id, site_id), now)


@router.get("/orgs/{org_id}/sites/{site_id}/dashboard", response_model=DashboardOut)
@remembered
@quick_read
def site_dashboard(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now,
                   page: Paging, request: Request) -> dict[str, Any]:
    """The site dashboard: apartments, how many need a license (5 apartments, one empty: 4), which
    lapsed or lapse within 30 days, and what to order (R-MY-3, R-MY-6). The figures are the
    whole site's; ``rows`` is one page of its apartments (a site can have tens of thousands)."""
    edges: list[datetime] = []
    shown = board.dashboard(db, site=_site(db, actor, org_id, site_id), now=now, edges=edges)
    valid_until(request, board.changes_at(edges, now))
    rows = [r for r in shown["rows"] if page.cursor is None or r["id"] > page.cursor]
    shown["rows"] = rows[: page.limit]
    shown["next_cursor"] = rows[page.limit - 1]["id"] if len(rows) > page.limit else None
    return shown


# --- migration (R-MY-4) --------------------------------------------------------------------------

@router.get("/orgs/{org_id}/sites/{site_id}/migration-check", response_model=MigrationOut)
def migration_check(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """The migration check: every device, except intercoms, that is not in an apartment yet.
    The model change is refused until the list is empty (R-MY-4)."""
    site = _site(db, actor, org_id, site_id)
    left = my2n.migration_check(db, site=site)
    return {"site": my2n.site_to_dict(site, now), "unassigned": left, "ready": not left}


@router.post("/orgs/{org_id}/sites/{site_id}/model", response_model=ModelChangeOut,
             responses=REFUSALS)
def change_model(org_id: int, site_id: SiteId, body: ModelIn, actor: CurrentActor, db: DB,
                 now: Now) -> dict[str, Any]:
    """The business-model change, made by the vendor's support (the issuer): refused while any
    device other than an intercom is outside an apartment; then every session and API/app token
    of the organization's members is revoked, so they log in again (R-MY-1, R-MY-4). Refusals:
    vendor_support_only, migration_devices_unassigned (detail.count, detail.serials),
    model_unchanged, model_retired, model_unknown."""
    if not (actor.is_issuer or actor.is_operator):
        actor.require_member(org_id)  # an outsider sees no such organization; a member is refused below
    site = my2n.get_site(db, org_id, site_id)
    return my2n.change_model(db, site=site, model=body.model, actor=actor, now=now)


@router.put("/orgs/{org_id}/sites/{site_id}/type", response_model=SiteOut, responses=REFUSALS)
def choose_site_type(org_id: int, site_id: SiteId, body: SiteTypeIn, actor: CurrentActor, db: DB,
                     now: Now) -> dict[str, Any]:
    """Choose the site type once the site has the apartment model: the last step of the
    migration (R-MY-4). For company admins and the site's admins. Refusals:
    site_type_needs_apartment_model, site_admin_required."""
    site = _site(db, actor, org_id, site_id)
    return my2n.site_to_dict(my2n.choose_site_type(db, site=site, site_type=body.site_type, actor=actor, now=now), now)


# --- apartments (R-MY-2, R-MY-3) -----------------------------------------------------------------

@router.get("/orgs/{org_id}/sites/{site_id}/apartments", response_model=ApartmentPage)
def list_apartments(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now,
                    page: Paging) -> dict[str, Any]:
    """The site's apartments, oldest first, with their paid devices and whether they need a license."""
    site = _site(db, actor, org_id, site_id)
    stmt = select(Apartment).where(Apartment.site_id == site.id)
    if page.cursor is not None:
        stmt = stmt.where(Apartment.id > page.cursor)
    rows = list(db.scalars(stmt.order_by(Apartment.id).limit(page.limit + 1)))
    return _page(rows, page.limit, _apartments_out(db, site, rows[: page.limit], now))


@router.post("/orgs/{org_id}/sites/{site_id}/apartments", response_model=ApartmentOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def create_apartment(org_id: int, site_id: SiteId, body: ApartmentIn, actor: CurrentActor, db: DB,
                     now: Now) -> dict[str, Any]:
    """A new apartment of the site. Refusal: apartment_exists."""
    site = _site(db, actor, org_id, site_id)
    apt = my2n.create_apartment(db, site=site, name=body.name, actor=actor, now=now)
    return _apartments_out(db, site, [apt], now)[0]


@router.get("/orgs/{org_id}/sites/{site_id}/apartments/{apartment_id}", response_model=ApartmentDetailOut)
def get_apartment(org_id: int, site_id: SiteId, apartment_id: ApartmentId, actor: CurrentActor, db: DB,
                  now: Now) -> dict[str, Any]:
    """An apartment and its devices."""
    site = _site(db, actor, org_id, site_id)
    apt = my2n.get_apartment(db, site, apartment_id)
    devices = db.scalars(select(SiteDevice).where(SiteDevice.apartment_id == apt.id).order_by(SiteDevice.serial))
    return {**_apartments_out(db, site, [apt], now)[0], "device_list": [_device_out(db, site, d, now) for d in devices]}


# --- devices (R-MY-2, R-MY-3) --------------------------------------------------------------------

@router.get("/orgs/{org_id}/sites/{site_id}/devices", response_model=DevicePage)
def list_devices(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now,
                 page: Paging) -> dict[str, Any]:
    """The site's devices, in the order they were added."""
    site = _site(db, actor, org_id, site_id)
    stmt = select(SiteDevice).where(SiteDevice.site_id == site.id)
    if page.cursor is not None:
        stmt = stmt.where(SiteDevice.id > page.cursor)
    rows = list(db.scalars(stmt.order_by(SiteDevice.id).limit(page.limit + 1)))
    return _page(rows, page.limit, [_device_out(db, site, d, now) for d in rows[: page.limit]])


@router.post("/orgs/{org_id}/sites/{site_id}/devices", response_model=DeviceOut,
             status_code=status.HTTP_201_CREATED, responses=REFUSALS)
def add_device(org_id: int, site_id: SiteId, body: DeviceIn, actor: CurrentActor, db: DB,
               now: Now) -> dict[str, Any]:
    """Add a device to the site, into an apartment or not. An apartment holds at most 4 paid
    devices, whoever adds them (R-MY-2). A device is on one site of the organization at a time.
    Refusals: apartment_paid_device_limit (create another apartment; detail.paid_devices,
    detail.limit), intercom_not_in_apartment, device_exists (on this site),
    device_on_other_site (detail.site, detail.site_id: where it is), apartment_not_found."""
    site = _site(db, actor, org_id, site_id)
    device = my2n.add_device(db, site=site, serial=body.serial, kind=body.kind, apartment_id=body.apartment_id,
                             local_mode=body.local_mode, actor=actor, now=now)
    return _device_out(db, site, device, now)


@router.put("/orgs/{org_id}/sites/{site_id}/devices/{serial}/apartment", response_model=DeviceOut,
            responses=REFUSALS)
def assign_device(org_id: int, site_id: SiteId, serial: Serial, body: AssignIn, actor: CurrentActor, db: DB,
                  now: Now) -> dict[str, Any]:
    """Put a device into an apartment, or out of every apartment with null (R-MY-2, R-MY-4).
    Refusals: apartment_paid_device_limit, intercom_not_in_apartment, device_not_found,
    apartment_not_found."""
    site = _site(db, actor, org_id, site_id)
    return _device_out(db, site, my2n.assign_device(db, site=site, serial=serial, apartment_id=body.apartment_id,
                                                    actor=actor, now=now), now)


@router.put("/orgs/{org_id}/sites/{site_id}/devices/{serial}/local-mode", response_model=DeviceOut,
            responses=REFUSALS)
def set_local_mode(org_id: int, site_id: SiteId, serial: Serial, body: LocalModeIn, actor: CurrentActor, db: DB,
                   now: Now) -> dict[str, Any]:
    """Turn local mode on or off: a paid device in local mode makes no license necessary, and
    still counts towards the apartment's 4 paid devices (R-MY-2, R-MY-3)."""
    site = _site(db, actor, org_id, site_id)
    return _device_out(db, site, my2n.set_local_mode(db, site=site, serial=serial, local_mode=body.local_mode,
                                                     actor=actor, now=now), now)


@router.delete("/orgs/{org_id}/sites/{site_id}/devices/{serial}", response_model=DeviceRemovedOut,
               responses=REFUSALS)
def remove_device(org_id: int, site_id: SiteId, serial: Serial, actor: CurrentActor, db: DB,
                  now: Now) -> dict[str, Any]:
    """Take a device off the site (it may then be added to another site). What was paid stays
    paid; an apartment left needing no license is not renewed. Refusals: device_not_found,
    apartment_admin_required (another apartment's device)."""
    site = _site(db, actor, org_id, site_id)
    return my2n.remove_device(db, site=site, serial=serial, actor=actor, now=now)


# --- vouchers and the site credit pool (R-MY-5) --------------------------------------------------

@router.get("/orgs/{org_id}/sites/{site_id}/credit", response_model=PoolOut)
def credit_pool(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB) -> dict[str, Any]:
    """The site credit pool: apartment-years and device-years from activated vouchers."""
    return my2n.credit_pool(db, _site(db, actor, org_id, site_id))


def _payer_site(ctx: Context, actor: Actor, org_id: int, site_id: int) -> None:
    """Refuse early (before the idempotency key and the rate limit count) a caller who may not
    pay on this site, or for whom it does not exist; the service checks again in its transaction."""
    with reading(ctx.sessions) as s:
        access.require_payer(s, actor, _site(s, actor, org_id, site_id))


@router.post("/orgs/{org_id}/sites/{site_id}/vouchers/redeem", response_model=VoucherRedeemedOut,
             responses=refusals(403, 409, 429))
def redeem_voucher(org_id: int, site_id: SiteId, body: VoucherIn, actor: CurrentActor, ctx: Ctx,
                   request: Request, response: Response, idempotency_key: IdemKey = None) -> dict[str, Any]:
    """Activate a voucher code into the site credit pool (R-MY-5): one code, its years. Activating
    is paying: company admins and site admins with the payments permission. Refusals:
    voucher_expired (the batch is past its 3 years), key_already_redeemed (detail.site: the site of
    this company whose pool it went into), key_cancelled,
    key_wrong_region (02683-001 only on US & APAC sites: the site's region counts), key_not_voucher, key_unknown,
    key_mistyped, payments_permission_required, rate_limited."""
    _payer_site(ctx, actor, org_id, site_id)
    key = idempotency.require_key(idempotency_key)
    ctx.redeem_limiter.hit(org_id=org_id, client=client_id(request))  # a code is typed, as in the wallet's redeem
    now = ctx.clock.now()
    return _idempotent(ctx, request, response, org_id=org_id, key=key, body=body.model_dump(), work=lambda s: (
        200, my2n.redeem_voucher(s, site=my2n.get_site(s, org_id, site_id), code=body.code, actor=actor, now=now)))


@router.post("/orgs/{org_id}/sites/{site_id}/apartments/{apartment_id}/pay-from-credit", response_model=PaidOut,
             responses=REFUSALS)
def pay_from_credit(org_id: int, site_id: SiteId, apartment_id: ApartmentId, actor: CurrentActor, ctx: Ctx,
                    request: Request, response: Response, idempotency_key: IdemKey = None) -> dict[str, Any]:
    """Pay one year of the apartment's license from the site credit pool: one apartment-year,
    else one device-year per billable device; paid-through moves one year on (R-MY-5). An
    apartment paid per device for fewer devices than it has is topped up instead: a device-year
    per device not paid for and paid year left, through the same date (top_up: true).
    Refusals: credit_insufficient (detail.needed_device_years; for a top-up also
    detail.devices_not_paid), apartment_needs_no_license,
    model_retired (a custom-model site migrates first), payments_permission_required,
    apartment_not_found."""
    _payer_site(ctx, actor, org_id, site_id)
    now = ctx.clock.now()
    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key, body={}, work=lambda s: (
        200, my2n.pay_from_credit(s, site=my2n.get_site(s, org_id, site_id), apartment_id=apartment_id,
                                  actor=actor, now=now)))


# --- site roles (R-MY-2, R-MY-5) -----------------------------------------------------------------

@router.get("/orgs/{org_id}/sites/{site_id}/roles", response_model=SiteRolePage)
def list_site_roles(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The site's admins and apartment admins, oldest grant first (company admins are the
    organization's owners and admins and need no role here)."""
    rows = access.site_role_rows(db, _site(db, actor, org_id, site_id), after_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda row: access.site_role_to_dict(*row), key=lambda row: row[0].id)


@router.post("/orgs/{org_id}/sites/{site_id}/roles", response_model=SiteRoleOut, responses=REFUSALS)
def grant_site_role(org_id: int, site_id: SiteId, body: SiteRoleIn, actor: CurrentActor, db: DB,
                    now: Now) -> dict[str, Any]:
    """Give a member of the organization a role on the site, or change it (company admins only):
    a site admin (with or without the payments permission) or the admin of one apartment.
    Refusals: member_not_found, apartment_required, apartment_not_found,
    payments_permission_site_admins_only, role_insufficient."""
    site = _site(db, actor, org_id, site_id)
    actor.require_licensing(org_id)  # before the e-mail is looked up: it tells nothing to others
    user = tenancy.user_by_email(db, body.email)
    if user is None:
        raise NotFound("member", email=body.email)
    access.grant_site_role(db, site=site, user_id=user.id, role=body.role, apartment_id=body.apartment_id,
                           payments=body.payments, actor=actor, now=now)
    return next(r for r in access.site_roles(db, site) if r["user_id"] == user.id)


@router.delete("/orgs/{org_id}/sites/{site_id}/roles/{user_id}", status_code=status.HTTP_204_NO_CONTENT,
               response_class=Response, responses=REFUSALS)
def revoke_site_role(org_id: int, site_id: SiteId, user_id: UserId, actor: CurrentActor, db: DB,
                     now: Now) -> Response:
    """Take a user's role on the site away (company admins only). Refusal: site_role_missing."""
    access.revoke_site_role(db, site=_site(db, actor, org_id, site_id), user_id=user_id, actor=actor, now=now)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


# --- card payments and recurring payment (R-MY-5) ------------------------------------------------

@router.get("/orgs/{org_id}/sites/{site_id}/payment-plan", response_model=PaymentPlanOut)
def payment_plan(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now, ctx: Ctx) -> dict[str, Any]:
    """The site's card payment set-up: the card, whether recurring payment is on, how many
    apartments need a license; the price only for company admins and site admins with the
    payments permission (R-MY-5)."""
    site = _site(db, actor, org_id, site_id)
    price_minor, currency = ctx.settings.apartment_year_price(site.region)  # the site's region's
    return billing.plan_to_dict(db, site=site, actor=actor, now=now, price_minor=price_minor, currency=currency)


@router.put("/orgs/{org_id}/sites/{site_id}/payment-plan/card", response_model=CardOut,
            responses=PAYMENT_REFUSALS)
def set_card(org_id: int, site_id: SiteId, body: CardIn, actor: CurrentActor, ctx: Ctx, db: DB,
             now: Now) -> dict[str, Any]:
    """Make a card (entered in the provider's form) the one the site pays with. Refused while
    recurring payment is on: turn it off first (R-MY-5). Refusals: recurring_payment_active,
    payments_permission_required, payment_provider_unreachable (503), payment_provider_error (502)."""
    site = _site(db, actor, org_id, site_id)
    user = db.get(User, actor.user_id) if actor.user_id is not None else None
    return billing.set_card(db, site=site, payment_method=body.payment_method, actor=actor, now=now,
                            provider=ctx.payments, email=user.email if user else None)


@router.get("/orgs/{org_id}/sites/{site_id}/payment-plan/recurring/preview", response_model=PreviewOut,
            response_model_by_alias=True, responses=refusals(403))
def preview_recurring(org_id: int, site_id: SiteId, actor: CurrentActor, ctx: Ctx, db: DB,
                      now: Now) -> dict[str, Any]:
    """What turning recurring payment on now would charge, before it does (R-MY-5): each
    apartment needing a license not paid through the site's anniversary, pro rata by day;
    0 when everything is paid (e.g. turned off to change the card). Refusals:
    payments_permission_required."""
    return billing.activation_preview(db, site=_site(db, actor, org_id, site_id), actor=actor, now=now,
                                      provider=ctx.payments)


@router.post("/orgs/{org_id}/sites/{site_id}/payment-plan/recurring/activate", response_model=RecurringOut,
             responses=PAYMENT_REFUSALS)
def activate_recurring(org_id: int, site_id: SiteId, actor: CurrentActor, ctx: Ctx, request: Request,
                       response: Response, idempotency_key: IdemKey = None,
                       body: ActivateIn | None = None) -> dict[str, Any]:
    """Turn automatic recurring payment on: the card pays now what is not paid through the site's
    anniversary (``…/recurring/preview`` says how much; the answer's ``charged_minor`` what was
    taken), then every year at the anniversary; a declined card or an unreachable provider leaves
    nothing paid (R-MY-5). Refusals: card_missing, recurring_payment_active, nothing_to_pay,
    charge_changed, model_retired, payment_declined (402), payment_provider_unreachable (503: retry
    with the same Idempotency-Key), payment_provider_error (502)."""
    _payer_site(ctx, actor, org_id, site_id)
    now = ctx.clock.now()
    expected = body.expected_amount_minor if body else None
    return _idempotent(ctx, request, response, org_id=org_id, key=idempotency_key,
                       body={"expected_amount_minor": expected} if expected is not None else {}, work=lambda s: (
        200, billing.activate_recurring(s, site=my2n.get_site(s, org_id, site_id), actor=actor, now=now,
                                        provider=ctx.payments, expected_amount_minor=expected)))


@router.put("/orgs/{org_id}/sites/{site_id}/auto-credit", response_model=SiteOut, responses=REFUSALS)
def set_auto_credit(org_id: int, site_id: SiteId, body: AutoCreditIn, actor: CurrentActor, db: DB,
                    now: Now) -> dict[str, Any]:
    """The site setting (on by default): on the day an apartment would lapse, pay its next year
    from the site credit pool (R-MY-5). Refusals: payments_permission_required."""
    site = my2n.set_auto_credit(db, site=_site(db, actor, org_id, site_id), on=body.auto_credit, actor=actor,
                                now=now)
    return my2n.site_to_dict(site, now)


@router.post("/orgs/{org_id}/sites/{site_id}/payment-plan/recurring/deactivate", response_model=RecurringOut,
             responses=PAYMENT_REFUSALS)
def deactivate_recurring(org_id: int, site_id: SiteId, actor: CurrentActor, ctx: Ctx, db: DB,
                         now: Now) -> dict[str, Any]:
    """Turn automatic recurring payment off (needed to change the card); what was paid stays
    paid until its date. Refusals: recurring_payment_off, payments_permission_required."""
    site = _site(db, actor, org_id, site_id)
    return billing.deactivate_recurring(db, site=site, actor=actor, now=now, provider=ctx.payments)


@router.get("/orgs/{org_id}/sites/{site_id}/payments", response_model=PaymentPage, responses=refusals(403))
def list_payments(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The site's card payments, newest first (amounts: only for those who may pay, R-MY-5)."""
    site = _site(db, actor, org_id, site_id)
    access.require_payer(db, actor, site)
    return page.answer(billing.card_payments(db, site, before_id=page.cursor, limit=page.fetch), billing.payment_to_dict)


async def webhook_body(request: Request) -> bytes:
    """The raw request body (the signature covers its exact bytes), refused past a size."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_WEBHOOK_BYTES:
            raise EntitleError("payload_too_large", "A webhook event is at most 1 MiB.", status=413,
                               max_bytes=MAX_WEBHOOK_BYTES)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/my2n/payments/webhook", response_model=WebhookOut, tags=["my2n", "webhooks"],
             responses=refusals(400, 413, 502),
             openapi_extra={"requestBody": {"required": True, "description": "The provider's event, as it sent it.",
                                            "content": {"application/json": {"schema": {"type": "object"}}}}})
def payments_webhook(ctx: Ctx, payload: Annotated[bytes, Depends(webhook_body)],
                     stripe_signature: Annotated[str | None, Header(alias="Stripe-Signature")] = None,
                     ) -> dict[str, Any]:
    """The payment provider's webhook (no sign-in: the Stripe-Signature header over the raw body
    is checked instead). Each event is handled once, whatever the number of deliveries; a
    payment pays its apartments once (R-MY-5). Refusal: webhook_signature_invalid."""
    with transaction(ctx.sessions) as s:
        return billing.handle_webhook(s, payload=payload, signature=stripe_signature or "", provider=ctx.payments,
                                      now=ctx.clock.now())


# --- the issuer's voucher batches (R-MY-5) -------------------------------------------------------

def _issuer_org_id(ctx: Context) -> int:
    with transaction(ctx.sessions) as s:
        return tenancy.issuer_organization(s, now=ctx.clock.now()).id


@router.get("/issuer/voucher-batches", response_model=VoucherBatchPage, tags=["issuer"], responses=refusals(403))
def list_voucher_batches(actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The latest voucher batches, newest first, with how many codes are Active, Used and
    Cancelled (R-MY-5). Issuer only; a code is cancelled with POST /api/v1/issuer/keys/cancel."""
    rows = my2n.voucher_batches(db, actor=actor, before_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda b: my2n.voucher_batch_to_dict(b, db))


@router.post("/issuer/voucher-batches", response_model=VoucherMintOut, status_code=status.HTTP_201_CREATED,
             tags=["issuer"], responses=refusals(403, 404, 409))
def mint_vouchers(body: VoucherBatchIn, actor: CurrentActor, ctx: Ctx, request: Request, response: Response,
                  idempotency_key: Annotated[str | None, Header(
                      description="Required: a retry with the same key mints nothing.")] = None) -> dict[str, Any]:
    """Mint a distributor's voucher batch (issuer only): ``subscriptions`` codes, each worth
    ``years`` apartment-years (or device-years), valid for 3 years (R-MY-5). The codes are in
    this answer only. Refusals: issuer_only, sku_not_voucher, sku_not_found, years_invalid."""
    actor.require_issuer()
    key = idempotency.require_key(idempotency_key)
    now = ctx.clock.now()

    def work(s: Session) -> tuple[int, dict[str, Any]]:
        batch, codes = my2n.mint_vouchers(s, part_number=body.part_number, name=body.name, years=body.years,
                                          subscriptions=body.subscriptions, scope=body.scope, actor=actor, now=now)
        return 201, {"batch": my2n.voucher_batch_to_dict(batch), "codes": codes}

    return _idempotent(ctx, request, response, org_id=_issuer_org_id(ctx), key=key, body=body.model_dump(),
                       work=work, stored=lambda b: {**b, "codes": None})  # codes are never stored in clear
