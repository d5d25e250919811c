"""AXIS License Manager pages (SPEC §3, R-AX-1 … R-AX-13), modelled on the source's Licenses
area: the Product list, and per product its tabs Product overview, Product licensing, Product
wallet, System setup and History.

Every action re-renders the product's page on the tab where it was asked (only its content for
htmx) with the outcome in the section it belongs to; a refusal keeps the page and shows the
error's code and message there. Viewers get the same pages without forms.

Allocating takes two steps, as in the source: "Confirm allocation" shows what will be allocated
(the subscription periods, the part numbers taken oldest first, the compensation) by running the
allocation in a transaction that is rolled back, so the review and its refusals are exactly the
service's; "Confirm" then allocates for real. Forms that move units carry a one-time nonce that
is the idempotency key (``entitle.platform.idempotency.run``): a re-posted form replays the first
answer instead of allocating twice.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request, Response
from sqlalchemy.orm import Session

from entitle.api.deps import client_id
from entitle.axis import rules
from entitle.axis import services as axis
from entitle.catalog import services as catalog
from entitle.catalog.models import Product, Sku
from entitle.db import reading, transaction
from entitle.errors import Conflict, EntitleError, NotFound
from entitle.history import sentences
from entitle.history import services as history
from entitle.keys import services as keys
from entitle.keys.models import LicenseKey
from entitle.ledger.models import Account
from entitle.platform import idempotency
from entitle.systems import services as systems
from entitle.tenancy.models import Organization
from entitle.text import plural
from entitle.web import charts
from entitle.web.views import AnyViewer, OrgChoice, PostingViewer, Viewer, WebRoute, _ctx, render, templates

router = APIRouter(route_class=WebRoute, include_in_schema=False)

# Where the organization switcher goes: a product page belongs to one organization.
SWITCH_NEXT = "/axis"
TABS = {"overview": "Product overview", "licensing": "Product licensing", "wallet": "Product wallet",
        "setup": "System setup", "history": "History"}
STATE_NAMES = {"trial": "Trial", "in_grace": "In grace period", "fully_licensed": "Fully licensed",
               "partially_licensed": "Partially licensed", "not_licensed": "Not licensed"}
KIND_NAMES = {"subscription": "Subscription", "expansion": "Expansion (tied to hardware)", "upgrade": "Upgrade",
              "preloaded": "Preloaded (tied to hardware)"}
HISTORY_SHOWN = 50
HISTORY_SCAN = 2_000  # candidate entries (AXIS actions, redeems, registrations) read, newest first
MAX_SERIALS_TEXT = 200_000


# --- formatting ------------------------------------------------------------------------------

def _day(value: str | datetime | None) -> str:
    """A date as the pages show it: 2026-01-15."""
    if not value:
        return "—"
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.strftime("%Y-%m-%d")


def _license_type(value: str) -> str:
    return value.replace("_", " ").capitalize() if value else "—"


templates.env.filters.update(axis_state=lambda s: STATE_NAMES.get(s, s), axis_day=_day,
                             axis_type=_license_type, axis_kind=lambda k: KIND_NAMES.get(k, k))


# --- what the pages show -----------------------------------------------------------------------

def _registered(s: Session, org: OrgChoice, code: str) -> tuple[Product, Any]:
    """The product and its registration; a product not registered to the organization is not
    found, like another organization's."""
    product = axis.product_by_code(s, code)
    op = axis.org_product(s, org.id, product)
    if op is None:
        raise NotFound("product", product=code)
    return product, op


def _member_org(viewer: Viewer) -> OrgChoice:
    org = viewer.require_org()
    viewer.actor.require_member(org.id)
    return org


def _wallet_available(st: dict[str, Any]) -> dict[str, dict[int, int]]:
    """Subscription units in the wallet: license type -> {term in years: units}."""
    out: dict[str, dict[int, int]] = {}
    for lot in st["wallet"]["lots"]:
        if lot["grant_kind"] == "subscription":
            by_term = out.setdefault(lot["license_type"], {})
            by_term[lot["term_years"]] = by_term.get(lot["term_years"], 0) + lot["units"]
    return out


def _systems(s: Session, org_id: int, product: Product, now: datetime) -> tuple[list[dict[str, Any]],
                                                                               list[dict[str, Any]]]:
    hardware = [h for h in axis.hardware_of(s, org_id) if h.product_id == product.id]
    serial_of = {h.id: h.serial for h in hardware}
    rows = []
    for system in systems.systems_of(s, org_id):
        if system.product != product.code:
            continue
        devices = [{"serial": d.serial, "license_type": d.license_type, "hardware": serial_of.get(d.hardware_id or 0),
                    "added_at": d.added_at} for d in axis.devices_of(s, system)]
        counts: dict[str, int] = {}
        for d in devices:
            counts[d["license_type"]] = counts.get(d["license_type"], 0) + 1
        rows.append({"id": system.id, "uid": system.uid, "name": system.name, "offline": system.offline,
                     "registered_at": system.registered_at, "devices": devices, "counts": counts})
    return rows, [axis.hardware_to_dict(s, h, now) for h in hardware]


def _product_history(s: Session, org_id: int, product: Product, system_uids: set[str],
                     hardware_serials: set[str]) -> list[Any]:
    """The organization's history entries about this product's licensing, newest first: AXIS
    actions, its systems' registrations and the keys of its SKUs redeemed."""
    parts = {sku.part_number for sku in product.skus}
    shown: list[Any] = []
    cursor: int | None = None
    read = 0
    while len(shown) < HISTORY_SHOWN and read < HISTORY_SCAN:
        rows = history.page(s, org_id, limit=500, before_seq=cursor, action_prefix="axis.",
                            actions=("key.redeemed", "system.registered"))
        if not rows:
            break
        read += len(rows)
        cursor = rows[-1].seq
        for e in rows:
            if _about(e, product, parts, system_uids, hardware_serials):
                shown.append(e)
    return shown[:HISTORY_SHOWN]


def _about(e: Any, product: Product, parts: set[str], system_uids: set[str], hardware_serials: set[str]) -> bool:
    if e.action == "key.redeemed":
        return (e.before or {}).get("part_number") in parts
    if e.action == "system.registered":
        return (e.after or {}).get("product") == product.code
    if not e.action.startswith("axis."):
        return False
    if e.object_type == "axis_product":
        return bool(e.object_id == product.code)
    if e.object_type == "system":
        return e.object_id in system_uids
    if e.object_type == "axis_hardware":
        return e.object_id in hardware_serials
    if e.object_type == "wallet_lot":
        return (e.before or {}).get("part_number") in parts
    return True


def _page(request: Request, viewer: Viewer, code: str, tab: str, *, status: int = 200,
          where: str | None = None, message: str | None = None, error: EntitleError | None = None,
          form: dict[str, Any] | None = None, review: dict[str, Any] | None = None) -> Response:
    """The product's page on ``tab``; ``where`` names the section an outcome belongs to."""
    if tab not in TABS:
        tab = "overview"
    ctx = _ctx(request)
    org = _member_org(viewer)
    now = ctx.clock.now()
    page: dict[str, Any] = {}
    with reading(ctx.sessions) as s:
        product, op = _registered(s, org, code)
        st = axis.status(s, org_id=org.id, product=product, now=now)
        types = list(st["license_types"])
        if tab == "licensing":
            page["allocations"] = axis.allocations_of(s, org.id, product)
            page["available"] = _wallet_available(st)
        if tab in ("setup", "history"):
            rows, hw_rows = _systems(s, org.id, product, now)
            page.update(systems=rows, hardware=hw_rows)
        if tab == "history":
            page["rows"] = sentences.lines(s, org.id, _product_history(
                s, org.id, product, {r["uid"] for r in page["systems"]}, {h["serial"] for h in page["hardware"]}))
        product_name = product.name
        registered_at, started_by = op.registered_at, op.started_by
    current = st["current_year"]
    grace_open = bool(current and current["grace_end"] and now < datetime.fromisoformat(current["grace_end"]))
    trial_open = bool(st["trial_ends_at"] and now < datetime.fromisoformat(st["trial_ends_at"]))
    if tab == "overview" and st["years"]:
        page["need_charts"] = [charts.axis_need(st, t) for t in types
                               if any(y["license_types"][t]["need"] or y["license_types"][t]["allocated"]
                                      for y in st["years"])]
    if tab == "wallet":
        page["lots_chart"] = charts.axis_lots_by_expiry(st["wallet"]["lots"], now)
    if tab == "licensing":
        page["short"] = _short(st, page["available"])
        # The fields hold what the first year not fully licensed misses: the current year, or
        # the next one once the current is covered (renewing ahead, R-AX-5).
        page["prefill_year"] = next((y["index"] for y in st["years"] if not y["fully_licensed"]), None)
    return render(request, "axis_product.html", viewer=viewer, active="axis", status=status, org=org,
                  code=code, product_name=product_name, st=st, types=types, tab=tab, tabs=TABS,
                  registered_at=registered_at, started_by=started_by, grace_open=grace_open,
                  trial_open=trial_open, may_change=org.role.may_license, nonce=secrets.token_urlsafe(18),
                  where=where, message=message, error=error, form=form or {}, review=review,
                  switch_next=SWITCH_NEXT, **page)


def _short(st: dict[str, Any], available: dict[str, dict[int, int]]) -> dict[str, dict[str, int]]:
    """License type -> what the current year misses and the one-year units the wallet holds,
    for each type whose current need the wallet cannot cover."""
    if not st["years"]:
        return {}
    first = st["years"][0]
    out = {}
    for t, v in first["license_types"].items():
        have = available.get(t, {}).get(1, 0)
        if v["missing"] > have:
            out[t] = {"missing": v["missing"], "wallet": have, "buy": v["missing"] - have}
    return out


def _act(request: Request, viewer: Viewer, code: str, tab: str, where: str,
         action: Callable[[Session, OrgChoice, Product, datetime], str],
         form: dict[str, Any] | None = None) -> Response:
    """Run ``action(session, org, product, now) -> message`` in one transaction and show the tab
    with its message, or with the refusal, in the section ``where``."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        viewer.actor.require_licensing(org.id)
        with transaction(ctx.sessions) as s:
            product, _op = _registered(s, org, code)
            message = action(s, org, product, ctx.clock.now())
    except EntitleError as exc:
        if exc.code in ("product_not_found", "system_not_found"):
            raise  # an error page: there is no section of this page to show it in
        return _page(request, viewer, code, tab, status=exc.status, where=where, error=exc, form=form)
    return _page(request, viewer, code, tab, where=where, message=message)


def _check_nonce(nonce: str) -> str:
    if not nonce.strip() or len(nonce) > 100:
        raise EntitleError("form_expired", "This form is out of date: reload the page and try again.")
    return nonce.strip()


def _once(request: Request, org: OrgChoice, key: str, body: Any, work: Callable[[Session], dict[str, Any]],
          again: str) -> idempotency.Outcome:
    """``work`` once per form (its nonce): a re-posted form replays the first answer."""
    ctx = _ctx(request)
    fp = idempotency.fingerprint("POST", request.url.path, body)
    try:
        return idempotency.run(ctx.sessions, org_id=org.id, key=key, fp=fp, now=ctx.clock.now(),
                               work=lambda s: (200, work(s)))
    except EntitleError as exc:
        if exc.code != "idempotency_key_reused":
            raise
        raise EntitleError("form_already_submitted", f"This form was already submitted with other values: {again}",
                           status=422) from None


# --- the product list --------------------------------------------------------------------------

def _list(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
          error: EntitleError | None = None, created: dict[str, Any] | None = None,
          form: dict[str, Any] | None = None) -> Response:
    ctx = _ctx(request)
    org = _member_org(viewer)
    with reading(ctx.sessions) as s:
        rows = axis.products(s, org_id=org.id, now=ctx.clock.now())
        offered = [(p.code, p.name) for p in catalog.products(s) if p.model == axis.MODEL]
    return render(request, "axis_products.html", viewer=viewer, active="axis", status=status, org=org,
                  products=rows, offered=offered, may_change=org.role.may_license, message=message,
                  error=error, created=created, form=form or {}, switch_next=SWITCH_NEXT)


@router.get("/axis")
def product_list(request: Request, viewer: AnyViewer) -> Response:
    return _list(request, viewer)


@router.post("/axis/systems")
def register_system(request: Request, viewer: PostingViewer, product_code: Annotated[str, Form()] = "",
                    uid: Annotated[str, Form()] = "", name: Annotated[str, Form()] = "") -> Response:
    """Register an online system of an AXIS product to this organization, for good (R-AX-1);
    its product appears in the list (on its trial, R-AX-13)."""
    ctx = _ctx(request)
    org = viewer.require_org()
    form = {"product_code": product_code, "uid": uid, "name": name}
    try:
        viewer.actor.require_licensing(org.id)
        with transaction(ctx.sessions) as s:
            system = axis.register_system(s, org_id=org.id, uid=uid, name=name, product_code=product_code,
                                          actor=viewer.actor, now=ctx.clock.now())
            created = {"id": system.id, "uid": system.uid, "name": system.name, "product": system.product}
    except EntitleError as exc:
        return _list(request, viewer, status=exc.status, error=exc, form=form)
    return _list(request, viewer, created=created,
                 message=f"System {created['name']} ({created['uid']}) is registered to {org.name}. "
                         "Add its devices in System setup.")


# --- the product page --------------------------------------------------------------------------

@router.get("/axis/products/{code}")
def product_page(request: Request, viewer: AnyViewer, code: str, tab: str = "overview") -> Response:
    return _page(request, viewer, code, tab)


@router.post("/axis/products/{code}/subscription")
def start_subscription(request: Request, viewer: PostingViewer, code: str) -> Response:
    """Start the subscription: it fixes the subscription years and opens 30 days of grace (R-AX-3)."""
    def action(s: Session, org: OrgChoice, product: Product, now: datetime) -> str:
        op = axis.start_subscription(s, org_id=org.id, product_code=product.code, actor=viewer.actor, now=now)
        grace_end = rules.grace_end(rules.year(now, 0), op.registered_at)
        assert op.subscription_start is not None
        return (f"Subscription has started on {op.subscription_start:%Y-%m-%d}. The grace period ends on "
                f"{grace_end:%Y-%m-%d}: redeem license keys and allocate licenses before then.")

    return _act(request, viewer, code, "overview", "subscription", action)


# --- Product licensing: allocate (R-AX-5, R-AX-7, R-AX-12) -------------------------------------

def _lines(line: list[str], units: list[str], term_years: int) -> list[axis.Line]:
    """The allocation form: one (license type, year) per field, empty or 0 units left out."""
    if len(line) != len(units):
        raise EntitleError("invalid_request", "The allocation fields do not match: reload the page.", status=422)
    out = []
    for key, text in zip(line, units, strict=True):
        license_type, _, year = key.rpartition(":")
        text = text.strip()
        if not text:
            continue
        if not text.isdigit() or len(text) > 7 or not year.isdigit():
            raise EntitleError("units_invalid", f"The units for {license_type or key} are a whole number from 0 to "
                               f"{axis.MAX_UNITS:,}.", license_type=license_type, units=text)
        if int(text) > 0:
            out.append(axis.Line(license_type, int(year), int(text), term_years))
    if not out:
        raise EntitleError("allocation_empty", "Enter the number of licenses to allocate for at least one "
                           "subscription year and license type.")
    return out


def _dry_run(request: Request, org: OrgChoice, viewer: Viewer, code: str, lines: list[axis.Line]) -> dict[str, Any]:
    """What confirming ``lines`` would do, from the service itself in a transaction that is
    rolled back: nothing is kept, refusals are the real ones."""
    ctx = _ctx(request)
    with ctx.sessions() as s:
        try:
            return axis.allocate(s, org_id=org.id, product_code=code, lines=lines, actor=viewer.actor,
                                 now=ctx.clock.now())
        finally:
            s.rollback()


def _form_of(line: list[str], units: list[str], term_years: int) -> dict[str, Any]:
    return {"units": dict(zip(line, units, strict=False)), "term_years": term_years}


@router.post("/axis/products/{code}/allocation/review")
def review_allocation(request: Request, viewer: PostingViewer, code: str,
                      line: Annotated[list[str] | None, Form()] = None,
                      units: Annotated[list[str] | None, Form()] = None,
                      term_years: Annotated[int, Form()] = 1) -> Response:
    """Confirm allocation: show what will be allocated, for which subscription periods, with the
    compensation for overlapping time; refused with how many units are missing when the wallet
    is short (R-AX-5)."""
    org = viewer.require_org()
    form = _form_of(line or [], units or [], term_years)
    try:
        viewer.actor.require_licensing(org.id)
        with reading(_ctx(request).sessions) as s:
            _registered(s, org, code)
        lines = _lines(line or [], units or [], term_years)
        out = _dry_run(request, org, viewer, code, lines)
    except EntitleError as exc:
        if exc.code == "product_not_found":
            raise
        return _page(request, viewer, code, "licensing", status=exc.status, where="allocate", error=exc, form=form)
    review = {"lines": lines, "allocations": out["allocations"], "state": out["state"], "term_years": term_years,
              "compensation_units": sum(a["compensation_units"] for a in out["allocations"]),
              "compensation_days": sum(a["compensation_license_days"] for a in out["allocations"])}
    return _page(request, viewer, code, "licensing", where="allocate", form=form, review=review)


@router.post("/axis/products/{code}/allocation")
def confirm_allocation(request: Request, viewer: PostingViewer, code: str,
                       line: Annotated[list[str] | None, Form()] = None,
                       units: Annotated[list[str] | None, Form()] = None,
                       term_years: Annotated[int, Form()] = 1, nonce: Annotated[str, Form()] = "") -> Response:
    """Confirm: allocate the reviewed units from the wallet (oldest first) to their subscription
    years, all or none (R-AX-5, R-AX-7). The form's nonce is the idempotency key."""
    org = viewer.require_org()
    form = _form_of(line or [], units or [], term_years)
    ctx = _ctx(request)
    try:
        viewer.actor.require_licensing(org.id)
        with reading(ctx.sessions) as s:
            _registered(s, org, code)
        key = _check_nonce(nonce)
        lines = _lines(line or [], units or [], term_years)

        def work(s: Session) -> dict[str, Any]:
            return axis.allocate(s, org_id=org.id, product_code=code, lines=lines, actor=viewer.actor,
                                 now=ctx.clock.now())

        body = [[x.license_type, x.year, x.units, x.term_years] for x in lines]
        outcome = _once(request, org, f"web:axis-allocation:{key}", body, work,
                        "go back to Product licensing to allocate again.")
    except EntitleError as exc:
        if exc.code == "product_not_found":
            raise
        return _page(request, viewer, code, "licensing", status=exc.status, where="allocate", error=exc, form=form)
    made = outcome.body["allocations"]
    total = sum(a["units"] for a in made)
    comp = sum(a["compensation_units"] for a in made)
    state = STATE_NAMES.get(outcome.body["state"], outcome.body["state"])
    if outcome.replayed:
        message = (f"This allocation was already confirmed: {plural(total, 'license')} "
                   f"{'was' if total == 1 else 'were'} allocated then. "
                   f"Nothing was allocated twice. The product is {state.lower()}.")
    else:
        message = (f"{plural(total, 'license')} allocated. The product is {state.lower()}."
                   + (f" {plural(comp, 'license')} of compensation for overlapping time went back to the wallet." if comp
                      else ""))
    return _page(request, viewer, code, "licensing", where="allocate", message=message)


# --- Product licensing: renew (R-AX-5, R-AX-6) --------------------------------------------------

def _years_ahead(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not 0 <= int(text) <= rules.AHEAD_YEARS:
        raise EntitleError("years_invalid", f"Renew 0 to {rules.AHEAD_YEARS} years ahead of the current subscription "
                           "year (0: the current year only).", years=text)
    return int(text)


@router.post("/axis/products/{code}/renewal/review")
def review_renewal(request: Request, viewer: PostingViewer, code: str,
                   years_ahead: Annotated[str, Form()] = "1") -> Response:
    """Renew: show what the renewal would allocate -- the current year first when it is not
    fully licensed, then the years ahead asked -- from the service run in a transaction that is
    rolled back; refused whole, with what each year misses, when the wallet is short."""
    org = viewer.require_org()
    ctx = _ctx(request)
    form = {"years_ahead": years_ahead}
    try:
        viewer.actor.require_licensing(org.id)
        with reading(ctx.sessions) as s:
            _registered(s, org, code)
        ahead = _years_ahead(years_ahead)
        with ctx.sessions() as s:
            try:
                out = axis.renew(s, org_id=org.id, product_code=code, years_ahead=ahead, actor=viewer.actor,
                                 now=ctx.clock.now())
            finally:
                s.rollback()
    except EntitleError as exc:
        if exc.code == "product_not_found":
            raise
        return _page(request, viewer, code, "licensing", status=exc.status, where="allocate", error=exc, form=form)
    if not out["allocations"]:
        return _page(request, viewer, code, "licensing", where="allocate", message=out["message"], form=form)
    review = {"renewal": {"years_ahead": ahead, "message": out["message"]}, "lines": [],
              "allocations": out["allocations"], "state": out["state"], "term_years": 1,
              "compensation_units": sum(a["compensation_units"] for a in out["allocations"]),
              "compensation_days": sum(a["compensation_license_days"] for a in out["allocations"])}
    return _page(request, viewer, code, "licensing", where="allocate", form=form, review=review)


@router.post("/axis/products/{code}/renewal")
def confirm_renewal(request: Request, viewer: PostingViewer, code: str, years_ahead: Annotated[str, Form()] = "1",
                    nonce: Annotated[str, Form()] = "") -> Response:
    """Confirm the reviewed renewal (all or nothing); the form's nonce is the idempotency key."""
    org = viewer.require_org()
    ctx = _ctx(request)
    form = {"years_ahead": years_ahead}
    try:
        viewer.actor.require_licensing(org.id)
        with reading(ctx.sessions) as s:
            _registered(s, org, code)
        key = _check_nonce(nonce)
        ahead = _years_ahead(years_ahead)

        def work(s: Session) -> dict[str, Any]:
            return axis.renew(s, org_id=org.id, product_code=code, years_ahead=ahead, actor=viewer.actor,
                              now=ctx.clock.now())

        outcome = _once(request, org, f"web:axis-renewal:{key}", {"years_ahead": ahead}, work,
                        "go back to Product licensing to renew again.")
    except EntitleError as exc:
        if exc.code == "product_not_found":
            raise
        return _page(request, viewer, code, "licensing", status=exc.status, where="allocate", error=exc, form=form)
    state = STATE_NAMES.get(outcome.body["state"], outcome.body["state"])
    if outcome.replayed:
        message = f"This renewal was already confirmed: {outcome.body['message']} Nothing was allocated twice."
    else:
        message = f"{outcome.body['message']} The product is {state.lower()}."
    return _page(request, viewer, code, "licensing", where="allocate", message=message)


# --- Product wallet: redeem (R-AX-4) -----------------------------------------------------------

@router.post("/axis/products/{code}/wallet/redeem")
def redeem(request: Request, viewer: PostingViewer, code: str, key: Annotated[str, Form()] = "") -> Response:
    """Redeem a license key of this product into its wallet (the generic redeem service); a key
    of another product is refused and stays unused."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        viewer.actor.require_licensing(org.id)
        ctx.redeem_limiter.hit(org_id=org.id, client=client_id(request))
        with transaction(ctx.sessions) as s:
            product, _op = _registered(s, org, code)

            def into(s2: Session, o: Organization, sku: Sku, k: LicenseKey, at: datetime) -> Account:
                if sku.product_id != product.id:
                    raise Conflict("key_other_product",
                                   f"This key ({sku.part_number}) is for {sku.product.name}, not {product.name}: "
                                   "redeem it on the Wallet page instead. The key is still unused.",
                                   part_number=sku.part_number, product=sku.product.code)
                return keys.wallet_target(s2, o, sku, k, at)

            done = keys.redeem(s, org_id=org.id, typed_key=key, actor=viewer.actor, now=ctx.clock.now(),
                               into=into)
    except EntitleError as exc:
        if exc.code == "product_not_found":
            raise
        return _page(request, viewer, code, "wallet", status=exc.status, where="redeem", error=exc,
                     form={"key": key})
    return _page(request, viewer, code, "wallet", where="redeem",
                 message=f"License key redeemed: {done['quantity']} × {done['part_number']} added to the "
                         "product wallet.")


# --- System setup: devices and hardware (R-AX-2, R-AX-8, R-AX-10) --------------------------------

def _serials(text: str) -> list[str]:
    if len(text) > MAX_SERIALS_TEXT:
        raise EntitleError("devices_invalid", "Paste at most 200,000 characters of serial numbers at a time.")
    return [x for x in re.split(r"[\s,;]+", text) if x]


@router.post("/axis/products/{code}/systems/{system_id}/devices")
def add_devices(request: Request, viewer: PostingViewer, code: str, system_id: int,
                serials: Annotated[str, Form()] = "", license_type: Annotated[str, Form()] = "",
                hardware_serial: Annotated[str, Form()] = "") -> Response:
    """Add devices to a system; no allocation is needed at once (R-AX-8)."""
    def action(s: Session, org: OrgChoice, product: Product, now: datetime) -> str:
        system, of = axis.axis_system(s, org.id, system_id)
        if of.id != product.id:
            raise NotFound("system", system_id=system_id)
        listed = _serials(serials)
        if not listed:
            raise EntitleError("devices_invalid", "Enter the serial numbers of the devices to add, one per line.")
        n = axis.add_devices(s, org_id=org.id, system_id=system.id, actor=viewer.actor, now=now,
                             devices=[axis.NewDevice(x, license_type, hardware_serial.strip() or None)
                                      for x in listed])
        return (f"{n:,} {_license_type(license_type)} {'device' if n == 1 else 'devices'} added to {system.name}. They count toward the "
                "current need; no allocation is needed at once.")

    return _act(request, viewer, code, "setup", f"system-{system_id}", action,
                form={"system_id": system_id, "serials": serials, "license_type": license_type,
                      "hardware_serial": hardware_serial})


@router.post("/axis/products/{code}/systems/{system_id}/devices/remove")
def remove_device(request: Request, viewer: PostingViewer, code: str, system_id: int,
                  serial: Annotated[str, Form()] = "") -> Response:
    def action(s: Session, org: OrgChoice, product: Product, now: datetime) -> str:
        system, of = axis.axis_system(s, org.id, system_id)
        if of.id != product.id:
            raise NotFound("system", system_id=system_id)
        axis.remove_devices(s, org_id=org.id, system_id=system.id, serials=[serial], actor=viewer.actor, now=now)
        return f"Device {serial} is removed from {system.name}."

    return _act(request, viewer, code, "setup", f"system-{system_id}", action)


@router.post("/axis/products/{code}/hardware")
def register_hardware(request: Request, viewer: PostingViewer, code: str, serial: Annotated[str, Form()] = "",
                      name: Annotated[str, Form()] = "", license_type: Annotated[str, Form()] = "",
                      preloaded_key: Annotated[str, Form()] = "") -> Response:
    """Register hardware; its preloaded licenses are activated on it at once (R-AX-10)."""
    def action(s: Session, org: OrgChoice, product: Product, now: datetime) -> str:
        hw = axis.register_hardware(s, org_id=org.id, product_code=product.code, serial=serial, name=name,
                                    license_type=license_type or None, preloaded_key=preloaded_key.strip() or None,
                                    actor=viewer.actor, now=now)
        preloaded = f" with {hw.preloaded_units:,} preloaded {_license_type(hw.license_type)} " \
                    f"{'license' if hw.preloaded_units == 1 else 'licenses'}" \
            if hw.preloaded_units else ""
        return f"Hardware {hw.serial} is registered to {org.name}{preloaded}."

    return _act(request, viewer, code, "setup", "hardware", action,
                form={"hw_serial": serial, "hw_name": name, "hw_license_type": license_type})


@router.post("/axis/products/{code}/hardware/allocate")
def allocate_to_hardware(request: Request, viewer: PostingViewer, code: str, serial: Annotated[str, Form()] = "",
                         units: Annotated[str, Form()] = "", nonce: Annotated[str, Form()] = "") -> Response:
    """Allocate expansion licenses from the wallet to one piece of hardware, for good (R-AX-10)."""
    org = viewer.require_org()
    ctx = _ctx(request)
    try:
        viewer.actor.require_licensing(org.id)
        with reading(ctx.sessions) as s:
            product, _op = _registered(s, org, code)
            hw = axis.get_hardware(s, org.id, serial)
            if hw.product_id != product.id:
                raise NotFound("hardware", serial=serial)
        key = _check_nonce(nonce)
        text = units.strip()
        if not text.isdigit() or len(text) > 7:
            raise EntitleError("units_invalid", f"Allocate 1 to {axis.MAX_UNITS:,} expansion licenses.", units=text)

        def work(s: Session) -> dict[str, Any]:
            return axis.allocate_to_hardware(s, org_id=org.id, serial=serial, units=int(text), actor=viewer.actor,
                                             now=ctx.clock.now())

        outcome = _once(request, org, f"web:axis-hardware:{key}", [serial, int(text)], work,
                        "reload the page to allocate again.")
    except EntitleError as exc:
        if exc.code in ("product_not_found", "hardware_not_found"):
            raise
        return _page(request, viewer, code, "setup", status=exc.status, where="hardware", error=exc,
                     form={"hw_units": {serial: units}})
    d = outcome.body
    if outcome.replayed:
        message = (f"This allocation was already confirmed; nothing was allocated twice. {d['serial']} holds "
                   f"{plural(d['licenses'], 'license')}.")
    else:
        message = (f"{plural(int(text), 'expansion license')} allocated to {d['serial']} for its lifetime: it "
                   f"holds {plural(d['licenses'], 'license')} for {plural(d['devices'], 'device')}.")
    return _page(request, viewer, code, "setup", where="hardware", message=message)
