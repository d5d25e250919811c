"""AXIS License Manager licensing from the console (SPEC §3, R-AX-1 … R-AX-13).

`entitle subscription start|status`, `entitle allocate`, `entitle renew`, and `entitle axis …` for
the rest (products, systems and their devices, hardware, upgrades, the allocation list). Thin over
``entitle.axis.services``: every rule is decided there. ``--json`` prints the services' dicts, the
same the REST API returns. Keys are redeemed with the generic `entitle redeem`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.axis import services as axis
from entitle.catalog.models import Product
from entitle.cli.common import (DatabaseUrl, JsonOut, Kind, OrgRef, console_actor, context, day, err, handles_errors,
                                make_table, named, org_ref, out, plain, print_json)
from entitle.db import reading, transaction
from entitle.errors import EntitleError, NotFound
from entitle.systems import services as systems
from entitle.systems.models import System
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Organization
from entitle.text import plural

subscription_app = typer.Typer(help="AXIS subscriptions: start one (fixes its years), show its licensing status.",
                               no_args_is_help=True)
axis_app = typer.Typer(help="AXIS licensing: products, systems and devices, hardware, upgrades, allocations.",
                       no_args_is_help=True)
system_app = typer.Typer(help="Online systems (installations) of an AXIS product.", no_args_is_help=True)
devices_app = typer.Typer(help="Devices (channels) of a system: each needs a license of its type.",
                          no_args_is_help=True)
hardware_app = typer.Typer(help="Hardware with licenses tied to it for its lifetime.",
                           no_args_is_help=True)
axis_app.add_typer(system_app, name="system")
axis_app.add_typer(devices_app, name="devices")
axis_app.add_typer(hardware_app, name="hardware")

ProductCode = Annotated[str, typer.Option(
    "--product", help="AXIS product code, e.g. axis-camera-station (see `entitle catalog show`).")]
SYSTEM = Kind("system", "AXIS systems", "system", "entitle axis system list", key="uid")
SystemRef = Annotated[str, typer.Option("--system", help=SYSTEM.help)]

# Devices from a file are added in slices of this many, all in one transaction (all or none).
DEVICE_BATCH = 1000


# --- shared ------------------------------------------------------------------------------------

def _system(session: Session, org_id: int, ref: str) -> System:
    """The organization's AXIS system that ``ref`` names: by id, uid or name (another
    organization's, or another model's, looks like none)."""
    axis_products = select(Product.code).where(Product.model == axis.MODEL)
    return named(session, System, SYSTEM, ref, scope=[System.org_id == org_id, System.product.in_(axis_products)],
                 within=f" of organization {org_id}")


def _when(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M") if iso else "-"


def _relative(iso: str, now: datetime) -> str:
    """"in 30 days" / "ended 70 days ago", in whole days (hours when under a day)."""
    delta = datetime.fromisoformat(iso) - now
    seconds = abs(delta.total_seconds())
    amount = plural(int(seconds // 86400), "day") if seconds >= 86400 else plural(int(seconds // 3600), "hour")
    return f"in {amount}" if delta.total_seconds() > 0 else f"ended {amount} ago"


def _state(state: str) -> str:
    return state.replace("_", " ").upper()


def _read_rows(file: Path) -> list[tuple[int, list[str]]]:
    """(line number, cells) of a CSV file, without blank lines, ``#`` comments and a header row."""
    try:
        with file.open(encoding="utf-8-sig", errors="strict", newline="") as f:
            rows = [(n, [c.strip() for c in row]) for n, row in enumerate(csv.reader(f), start=1)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EntitleError("file_unreadable", f"Cannot read {file}: {exc}", file=str(file)) from None
    rows = [(n, cells) for n, cells in rows if any(cells) and not cells[0].startswith("#")]
    if rows and rows[0][1][0].lower() == "serial":
        rows = rows[1:]
    return rows


@contextmanager
def _progress(total: int, what: str, *, shown: bool) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, yielding ``advance(n)``. Not with --json: there stderr carries
    nothing but an error's JSON."""
    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("devices"),
                        TimeElapsedColumn(), console=err, disable=not shown)
    with progress:
        task = progress.add_task(what, total=total)
        yield lambda n: progress.advance(task, n)


# --- subscription (R-AX-3, R-AX-6, R-AX-12, R-AX-13) ---------------------------------------------

@subscription_app.command("start")
@handles_errors
def subscription_start(org: OrgRef, product: ProductCode, database_url: DatabaseUrl = None,
                       as_json: JsonOut = False) -> None:
    """Start the subscription: fixes the subscription years from now and opens the first 30-day
    grace period, in which the product works unlicensed."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        axis.start_subscription(s, org_id=org_id, product_code=product, actor=console_actor(), now=now)
        st = axis.status(s, org_id=org_id, product=axis.product_by_code(s, product), now=now)
    result = {"org_id": org_id, "product": st["product"], "subscription_start": st["subscription_start"],
              "current_year": st["current_year"], "state": st["state"]}
    if as_json:
        print_json(result)
        return
    year = st["current_year"]
    plain(f"The subscription for {st['name']} in organization {org_id} started on {_when(st['subscription_start'])} "
           f"UTC; year 0 runs to {_when(year['end'])} UTC.")
    plain(f"Grace period ends {_when(year['grace_end'])} UTC: allocate licenses before then "
           f"(`entitle allocate` or `entitle renew`).")


@subscription_app.command("status")
@handles_errors
def subscription_status(org: OrgRef, product: ProductCode, database_url: DatabaseUrl = None,
                        as_json: JsonOut = False) -> None:
    """State, the current year and its grace end, need and allocation per year and license type,
    the wallet's lots, compensation remainders, growth allowance and buying guidance."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        st = axis.status(s, org_id=org_id, product=axis.product_by_code(s, product), now=now)
    if as_json:
        print_json({"org_id": org_id, **st})
        return
    _print_status(st, org_id, org, now)


def _print_status(st: dict[str, Any], org_id: int, org_ref: str, now: datetime) -> None:
    plain(f"{st['name']} ({st['product']}) in organization {org_id}, at {now.strftime('%Y-%m-%d %H:%M')} UTC")
    summary = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    summary.add_column(style="bold")
    summary.add_column()
    if not st["registered"]:
        summary.add_row("state", "NOT REGISTERED")
        out.print(summary)
        plain("No system of this product is registered here; register one with `entitle axis system register`.")
        return
    summary.add_row("state", _state(st["state"]))
    summary.add_row("registered", f"{_when(st['registered_at'])} UTC")
    if st["trial_ends_at"]:
        summary.add_row("trial", f"ends {_when(st['trial_ends_at'])} UTC ({_relative(st['trial_ends_at'], now)})")
    year = st["current_year"]
    if year is None:
        summary.add_row("subscription", "not started")
        out.print(summary)
        plain(f"Start it with `entitle subscription start --org {org_ref} --product {st['product']}`.")
        return
    summary.add_row("subscription start", f"{_when(st['subscription_start'])} UTC")
    summary.add_row("current year", f"{year['index']}: {_when(year['start'])} to {_when(year['end'])} UTC")
    summary.add_row("grace period", f"ends {_when(year['grace_end'])} UTC ({_relative(year['grace_end'], now)})")
    out.print(summary)

    now_table = make_table(f"Year {year['index']} (current): need and allocation", "license type=", "need now>",
                       "need>", "allocated>", "state=",
                       caption="need: devices counted for the year (frozen at the grace end); need now: today")
    for t, v in st["license_types"].items():
        now_table.add_row(escape(t), f"{v['need_now']:,}", f"{v['need']:,}", f"{v['allocated']:,}", _state(v["state"]))
    out.print(now_table)

    years = make_table("Subscription years: the current one and up to five ahead (each runs to the next one's start)",
                   "year=", "starts=", "grace ends=", "license type=", "need>", "allocated>", "missing>", "licensed=")
    for y in st["years"]:
        # A license type nothing needs nor has is left out (every type still shows in the table above).
        shown = {t: v for t, v in y["license_types"].items() if v["need"] or v["allocated"]}
        for i, (t, v) in enumerate((shown or y["license_types"]).items()):
            years.add_row(str(y["index"]) if i == 0 else "", day(y["start"]) if i == 0 else "",
                          day(y["grace_end"]) if i == 0 else "", escape(t), f"{v['need']:,}", f"{v['allocated']:,}",
                          f"{v['missing']:,}", ("yes" if y["fully_licensed"] else "no") if i == 0 else "")
    out.print(years)

    wallet = st["wallet"]
    if wallet["lots"]:
        lots = make_table("Wallet lots (used oldest first; unallocated units expire five years after they came in)",
                      "part number=", "kind=", "type=", "term=", "units>", "received=", "expires=")
        for lot in wallet["lots"]:
            lots.add_row(escape(lot["part_number"]), lot["grant_kind"], escape(lot["license_type"] or "-"),
                         f"{lot['term_years']} y", f"{lot['units']:,}", day(lot["received_at"]),
                         day(lot["expires_at"]))
        out.print(lots)
    else:
        plain("The wallet holds no units of this product; redeem license keys with `entitle redeem`.")
    for part, days in wallet["remainder_license_days"].items():
        plain(f"Compensation remainder: {days:,} license-days of {part} (a whole unit is credited when they "
               "add up to a subscription year).")

    growth = st["growth"]
    if growth["over"]:
        for t, g in growth["license_types"].items():
            out.print(f"[bold yellow]Growth allowance exceeded[/] for {escape(t)}: {g['need']:,} devices need a "
                      f"license, more than 2 × {g['allocated']:,} allocated ({g['limit']:,}); allocate more.",
                      highlight=False)
    else:
        plain("Growth allowance: within (the need may grow to twice the units allocated to the year).")

    for h in st["hardware"]:
        if h["missing"]:
            plain(f"Hardware {h['serial']} runs {plural(h['devices'], h['license_type'] + ' device')} on "
                  f"{plural(h['licenses'], 'license')}: {h['missing']:,} need expansion licenses on it.")
    expansions = [h for h in st["hardware"] if h["missing"]]
    for h in expansions:
        if h["from_wallet"]:
            plain(f"Buying guidance: allocate {plural(h['from_wallet'], 'expansion license')} from the wallet to "
                  f"{h['serial']} (`entitle axis hardware allocate --serial {h['serial']} --units {h['from_wallet']}`).")
        if h["to_buy"]:
            plain(f"Buying guidance: buy {plural(h['to_buy'], h['license_type'] + ' expansion license')} for "
                  f"{h['serial']}.")
    guidance = st["buying_guidance"]
    if any(n for g in guidance.values() for n in g.values()):
        indexes = sorted({int(k) for g in guidance.values() for k in g})
        buy = make_table("Buying guidance: units to buy to be fully licensed, after using the wallet",
                     "license type=", *(f"year {i}>" for i in indexes))
        for t, g in guidance.items():
            if any(g.values()):
                buy.add_row(escape(t), *(f"{g.get(str(i), 0):,}" for i in indexes))
        out.print(buy)
    elif not any(h["to_buy"] for h in expansions):
        plain("Buying guidance: nothing to buy; the allocations and the wallet cover the coming years.")


# --- allocation (R-AX-5, R-AX-7) and renewal (R-AX-6) -----------------------------------------

def _lines(types: Sequence[str], years: Sequence[int], units: Sequence[int], terms: Sequence[int],
           specs: Sequence[str]) -> list[axis.Line]:
    """The allocation lines from ``--type/--year/--units[/--term]`` (repeated, matched in order)
    and from ``--line TYPE:YEAR:UNITS[:TERM]``."""
    lines: list[axis.Line] = []
    if types or years or units:
        if not len(types) == len(years) == len(units):
            raise EntitleError("line_invalid", f"Give --type, --year and --units once per line ({len(types)} --type, "
                               f"{len(years)} --year, {len(units)} --units given).")
        if len(terms) not in (0, 1, len(types)):
            raise EntitleError("line_invalid", "Give --term once for every line, or once per line.")
        per_line = list(terms) if len(terms) == len(types) else [terms[0] if terms else 1] * len(types)
        lines += [axis.Line(t.strip(), y, u, term) for t, y, u, term in zip(types, years, units, per_line, strict=True)]
    elif terms:
        raise EntitleError("line_invalid", "--term goes with --type, --year and --units; with --line write "
                           "TYPE:YEAR:UNITS:TERM.")
    for spec in specs:
        parts = [p.strip() for p in spec.split(":")]
        if len(parts) not in (3, 4) or not parts[0] or not all(p.lstrip("-").isdigit() for p in parts[1:]):
            raise EntitleError("line_invalid", f"--line {spec!r}: write TYPE:YEAR:UNITS or TYPE:YEAR:UNITS:TERM, "
                               "e.g. core:0:8 or core:1:8:5.", line=spec)
        lines.append(axis.Line(parts[0], int(parts[1]), int(parts[2]), int(parts[3]) if len(parts) == 4 else 1))
    if not lines:
        raise EntitleError("allocation_empty", "Name at least one line: --type core --year 0 --units 8, "
                           "or --line core:0:8.")
    return lines


def _allocated(result: dict[str, Any], st: dict[str, Any], org_id: int) -> dict[str, Any]:
    """The service's answer, plus what the wallet keeps toward its next compensation unit."""
    return {"org_id": org_id, **result, "remainder_license_days": st["wallet"]["remainder_license_days"]}


def _print_allocated(result: dict[str, Any], product_name: str, org_id: int) -> None:
    allocations = result["allocations"]
    if not allocations:
        plain(result.get("message") or "Nothing was allocated.")
        plain(f"State: {_state(result['state'])}")
        return
    table = make_table(f"Allocated to {product_name} in organization {org_id}", "id=", "type=", "year=", "term=",
                   "units>", "part number=", "compensation>", "credited>",
                   caption="compensation: the time already past, given back; credited: whole units back in the wallet")
    for a in allocations:
        days = a["compensation_license_days"]
        table.add_row(str(a["id"]), escape(a["license_type"]), str(a["year"]), f"{a['years']} y", f"{a['units']:,}",
                      escape(a["part_number"]), f"{days:,} license-days" if days else "-",
                      f"{a['compensation_units']:,}" if days else "-")
    out.print(table)
    days = sum(a["compensation_license_days"] for a in allocations)
    if days:
        units = sum(a["compensation_units"] for a in allocations)
        kept = ", ".join(f"{d:,} license-days of {p}" for p, d in result["remainder_license_days"].items()) or "none"
        plain(f"Compensation for the time already past: {plural(days, 'license-day')}; {plural(units, 'whole unit')} "
               f"credited to the wallet; remainder kept toward the next unit: {kept}.")
    plain(f"State: {_state(result['state'])}")


@handles_errors
def allocate(
    org: OrgRef,
    product: ProductCode,
    license_type: Annotated[list[str] | None, typer.Option(
        "--type", help="License type of a line (core, universal); repeat --type/--year/--units per line.")] = None,
    year: Annotated[list[int] | None, typer.Option(
        "--year", help="Subscription year of a line: the current one (see `subscription status`) up to five ahead.")]
    = None,
    units: Annotated[list[int] | None, typer.Option("--units", help="Units of a line (one unit = one device).")] = None,
    term: Annotated[list[int] | None, typer.Option(
        "--term", help="Years the units last, 1 or 5: once for every line, or once per line. Default 1.")] = None,
    line: Annotated[list[str] | None, typer.Option(
        "--line", help="A line as TYPE:YEAR:UNITS[:TERM], e.g. core:0:8; repeatable.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Allocate units from the wallet to subscription years, every line or none, in one
    confirmation. A short wallet is refused with how many units are missing. Allocating
    after the grace period credits the time already past back to the wallet."""
    lines = _lines(license_type or [], year or [], units or [], term or [], line or [])
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        result = axis.allocate(s, org_id=org_id, product_code=product, lines=lines, actor=console_actor(), now=now)
        result, name = _with_status(s, org_id, product, result, now)
    _show_allocated(result, name, org_id, as_json)


def _with_status(s: Session, org_id: int, product: str, result: dict[str, Any], now: datetime
                 ) -> tuple[dict[str, Any], str]:
    found = axis.product_by_code(s, product)
    return _allocated(result, axis.status(s, org_id=org_id, product=found, now=now), org_id), found.name


def _show_allocated(result: dict[str, Any], name: str, org_id: int, as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        _print_allocated(result, name, org_id)


@handles_errors
def renew(
    org: OrgRef,
    product: ProductCode,
    years: Annotated[int, typer.Option(
        "--years", help="Years ahead of the current one to license too, 0 to 5 (0: the current year only).")] = 1,
    term: Annotated[int | None, typer.Option(
        "--term", help="Use only units of this term, 1 or 5 years. Default: the wallet's five-year units first, "
                       "then its one-year units.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Renew: make the current subscription year fully licensed when it is not (in its grace
    period, say), then each of the YEARS years after it, every year against its need, from the
    wallet; all or nothing, refused with what each year misses when the wallet is short. Says
    which years it allocated to."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        result = axis.renew(s, org_id=org_id, product_code=product, years_ahead=years, term_years=term,
                            actor=console_actor(), now=now)
        result, name = _with_status(s, org_id, product, result, now)
    _show_allocated(result, name, org_id, as_json)
    if not as_json and result["allocations"]:
        plain(result["message"])


# --- products, allocations, upgrades -----------------------------------------------------------

@axis_app.command("products")
@handles_errors
def products(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The AXIS products registered to the organization, with their state (and trial)."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        rows = axis.products(s, org_id=org_id, now=now)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"Organization {org_id} has no AXIS product yet; register a system with `entitle axis system register`.")
        return
    table = make_table(f"AXIS products of organization {org_id}", "product=", "state=", "systems>", "started=",
                   "year>", "trial ends=")
    for r in rows:
        year = r["current_year"]
        table.add_row(escape(r["product"]), _state(r["state"]), str(r["systems"]), day(r["subscription_start"]),
                      "-" if year is None else str(year["index"]), day(r["trial_ends_at"]))
    out.print(table)


@axis_app.command("allocations")
@handles_errors
def allocations(org: OrgRef, product: ProductCode, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Every allocation, upgrade and upgraded unit of the product, oldest first."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        rows = axis.allocations_of(s, org_id, axis.product_by_code(s, product))
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain("Nothing is allocated yet; allocate with `entitle allocate` or `entitle renew`.")
        return
    table = make_table(f"Allocations of {product} in organization {org_id}", "id=", "kind=", "type=", "year=", "term=",
                   "units>", "compensation>", "credited>", "on=")
    for r in rows:
        days = r["compensation_license_days"]
        table.add_row(str(r["id"]), r["kind"], escape(r["license_type"]), str(r["year"]), f"{r['years']} y",
                      f"{r['units']:,}", f"{days:,} license-days" if days else "-",
                      f"{r['compensation_units']:,}" if days else "-", day(r["allocated_at"]))
    out.print(table)


@axis_app.command("upgrade")
@handles_errors
def upgrade(
    org: OrgRef, product: ProductCode,
    year: Annotated[int, typer.Option("--year", help="The subscription year whose allocated units to convert.")],
    units: Annotated[int, typer.Option("--units", help="How many allocated units to convert.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Convert allocated one-year units of a year into another license type (Core to Universal)
    with upgrade units from the wallet, each used once."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        result = axis.upgrade(s, org_id=org_id, product_code=product, year=year, units=units, actor=console_actor(),
                              now=ctx.clock.now())
    if as_json:
        print_json(result)
        return
    for u in result["upgrades"]:
        plain(f"Upgraded {plural(u['units'], 'unit')} of year {u['year']} from {u['from']} to {u['to']}.")


# --- systems -----------------------------------------------------------------------------------

def _system_dict(session: Session, system: System) -> dict[str, Any]:
    return {**systems.to_dict(system), "device_counts": axis.systems_summary(session, system.org_id, system.id)[0]["devices"]}


@system_app.command("register")
@handles_errors
def system_register(
    org: OrgRef, product: ProductCode,
    uid: Annotated[str, typer.Option("--uid", help="The system's own id (its installation id).")],
    name: Annotated[str, typer.Option("--name", help="A name for the system; its uid if left out.")] = "",
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Register an online system to the organization; a registration never moves. The
    product's trial starts with its first registration."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        system = axis.register_system(s, org_id=org_id, uid=uid, name=name, product_code=product,
                                      actor=console_actor(), now=ctx.clock.now())
        result = _system_dict(s, system)
    if as_json:
        print_json(result)
    else:
        plain(f"System {result['id']} ({result['uid']}, {result['name']}) of {result['product']} registered in "
               f"organization {org_id}; add its devices with `entitle axis devices add`.")


@system_app.command("list")
@handles_errors
def system_list(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The organization's AXIS systems (online and offline) with their devices per license type."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        counts = {y["id"]: y["devices"] for y in axis.systems_summary(s, org_id)}
        rows = [{**systems.to_dict(x), "device_counts": counts[x.id]} for x in systems.systems_of(s, org_id)
                if x.id in counts]
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"Organization {org_id} has no AXIS system; register one with `entitle axis system register`.")
        return
    table = make_table(f"AXIS systems of organization {org_id}", "id=", "uid=", "name", "product=",
                   "offline=", "devices", "registered=")
    for r in rows:
        counts = ", ".join(f"{n:,} {t}" for t, n in sorted(r["device_counts"].items())) or "-"
        table.add_row(str(r["id"]), escape(r["uid"]), escape(r["name"]), escape(r["product"]),
                      "yes" if r["offline"] else "no", counts, day(r["registered_at"]))
    out.print(table)


# --- devices (R-AX-2, R-AX-8, R-AX-9) ----------------------------------------------------------

def _devices_from_file(file: Path) -> list[axis.NewDevice]:
    devices = []
    seen: dict[str, int] = {}
    for n, cells in _read_rows(file):
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise EntitleError("file_invalid", f"{file}, line {n}: write serial,license_type[,hardware_serial], "
                               "e.g. ACCC8E000001,core.", file=str(file), line=n)
        if cells[0] in seen:
            raise EntitleError("serial_duplicate", f"{file}, line {n}: serial {cells[0]} is already on line "
                               f"{seen[cells[0]]}.", file=str(file), line=n, serial=cells[0])
        seen[cells[0]] = n
        devices.append(axis.NewDevice(cells[0], cells[1], cells[2] if len(cells) > 2 and cells[2] else None))
    if not devices:
        raise EntitleError("file_empty", f"{file} lists no devices; write one serial,license_type per line.",
                           file=str(file))
    return devices


@devices_app.command("add")
@handles_errors
def devices_add(
    org: OrgRef, system: SystemRef,
    serial: Annotated[list[str] | None, typer.Option("--serial", help="A device's serial number; repeatable.")] = None,
    license_type: Annotated[str | None, typer.Option(
        "--type", help="License type of the --serial devices (core, universal).")] = None,
    hardware: Annotated[str | None, typer.Option(
        "--hardware", help="Serial of registered hardware the --serial devices are on (licensed by it).")]
    = None,
    file: Annotated[Path | None, typer.Option(
        "--file", dir_okay=False, help="A CSV file of serial,license_type[,hardware_serial] lines (a header "
        "line 'serial,…' is skipped).")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Add devices to a system, all or none. They need no allocation at once: they count toward
    the next renewal's need; growth past twice the allocation is flagged."""
    devices: list[axis.NewDevice] = []
    if serial:
        if not license_type:
            raise EntitleError("license_type_required", "Give --type (core, universal) for the --serial devices.")
        devices += [axis.NewDevice(x, license_type, hardware) for x in serial]
    if file is not None:
        devices += _devices_from_file(file)
    if not devices:
        raise EntitleError("devices_invalid", "Name the devices: --serial S --type core, or --file devices.csv.")
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id, now, actor = org_ref(s, org), ctx.clock.now(), console_actor()
        found = _system(s, org_id, system)
        if file is None:
            axis.add_devices(s, org_id=org_id, system_id=found.id, devices=devices, actor=actor, now=now)
        else:
            # The bar stops before the commit; the file is added in slices, in one transaction.
            with _progress(len(devices), "adding", shown=not as_json) as advance:
                for i in range(0, len(devices), DEVICE_BATCH):
                    batch = devices[i:i + DEVICE_BATCH]
                    axis.add_devices(s, org_id=org_id, system_id=found.id, devices=batch, actor=actor, now=now)
                    advance(len(batch))
        result = {"system": found.uid, "added": len(devices), **_system_dict(s, found)}
        st = axis.status(s, org_id=org_id, product=axis.product_by_code(s, found.product), now=now)
    if as_json:
        print_json({**result, "growth": st["growth"]})
        return
    counts = ", ".join(f"{n:,} {t}" for t, n in sorted(result["device_counts"].items()))
    plain(f"Added {plural(len(devices), 'device')} to system {found.uid}; it now has {counts}.")
    for t, g in st["growth"]["license_types"].items():
        out.print(f"[bold yellow]Growth allowance exceeded[/] for {escape(t)}: {g['need']:,} devices need a license, "
                  f"more than 2 × {g['allocated']:,} allocated; allocate more.", highlight=False)


@devices_app.command("remove")
@handles_errors
def devices_remove(
    org: OrgRef, system: SystemRef,
    serial: Annotated[list[str] | None, typer.Option("--serial", help="A device's serial number; repeatable.")] = None,
    file: Annotated[Path | None, typer.Option(
        "--file", dir_okay=False, help="A CSV file whose first column lists the serials to remove.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Remove devices from a system, all or none; their past need stays counted where it was."""
    serials = list(serial or []) + ([cells[0] for _, cells in _read_rows(file)] if file is not None else [])
    if not serials:
        raise EntitleError("devices_invalid", "Name the devices: --serial S (repeatable), or --file serials.csv.")
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        found = _system(s, org_id, system)
        removed = axis.remove_devices(s, org_id=org_id, system_id=found.id, serials=serials, actor=console_actor(),
                                      now=ctx.clock.now())
        result = {"system": found.uid, "removed": removed, **_system_dict(s, found)}
    if as_json:
        print_json(result)
    else:
        plain(f"Removed {plural(removed, 'device')} from system {found.uid}.")


@devices_app.command("list")
@handles_errors
def devices_list(org: OrgRef, system: SystemRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The system's devices (the first 1,000 by serial)."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _system(s, org_ref(s, org), system)
        rows = [{"serial": d.serial, "license_type": d.license_type, "on_hardware": d.hardware_id is not None,
                 "added_at": d.added_at.isoformat()} for d in axis.devices_of(s, found)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"System {found.uid} has no devices; add them with `entitle axis devices add`.")
        return
    table = make_table(f"Devices of system {found.uid} (times in UTC)", "serial=", "license type", "on hardware=",
                   "added=")
    for r in rows:
        table.add_row(escape(r["serial"]), escape(r["license_type"]), "yes" if r["on_hardware"] else "no",
                      _when(r["added_at"]))
    out.print(table)


# --- hardware (R-AX-10) ------------------------------------------------------------------------

def _hardware_line(h: dict[str, Any]) -> str:
    return (f"Hardware {h['serial']}" + (f" ({h['name']})" if h["name"] else "") + f": {h['license_type']} "
            f"licenses {h['licenses']:,} ({h['preloaded_units']:,} preloaded, {h['expansion_units']:,} expansion), "
            f"{plural(h['devices'], 'device')}, " + ("licensed." if h["licensed"] else
                                                 f"NOT licensed: {plural(h['missing'], 'expansion license')} missing."))


@hardware_app.command("register")
@handles_errors
def hardware_register(
    org: OrgRef, product: ProductCode,
    serial: Annotated[str, typer.Option("--serial", help="The hardware's serial number.")],
    name: Annotated[str, typer.Option("--name", help="A name for the hardware.")] = "",
    license_type: Annotated[str | None, typer.Option(
        "--type", help="Its license type (core, universal); taken from --preloaded-key when given.")] = None,
    preloaded_key: Annotated[str | None, typer.Option(
        "--preloaded-key", help="The key that came with the hardware: its licenses are activated onto it.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Register hardware to the organization for its lifetime; its preloaded licenses are
    activated onto it at once, never into the wallet."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        hw = axis.register_hardware(s, org_id=org_id, product_code=product, serial=serial, name=name,
                                    license_type=license_type, preloaded_key=preloaded_key, actor=console_actor(),
                                    now=now)
        result = axis.hardware_to_dict(s, hw, now)
    if as_json:
        print_json(result)
    else:
        plain(f"Registered in organization {org_id}. " + _hardware_line(result))


@hardware_app.command("list")
@handles_errors
def hardware_list(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The organization's hardware and the licenses tied to each."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        rows = [axis.hardware_to_dict(s, hw, now) for hw in axis.hardware_of(s, org_id)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"Organization {org_id} has no hardware; register it with `entitle axis hardware register`.")
        return
    table = make_table(f"Hardware of organization {org_id}", "serial=", "name", "type=", "preloaded>",
                   "expansion>", "licenses>", "devices>", "missing>", "licensed=",
                   caption="missing: devices beyond the hardware's licenses; they need expansion licenses on it")
    for r in rows:
        table.add_row(escape(r["serial"]), escape(r["name"]), escape(r["license_type"]), f"{r['preloaded_units']:,}",
                      f"{r['expansion_units']:,}", f"{r['licenses']:,}", f"{r['devices']:,}", f"{r['missing']:,}",
                      "yes" if r["licensed"] else "NO")
    out.print(table)


@hardware_app.command("allocate")
@handles_errors
def hardware_allocate(
    org: OrgRef,
    serial: Annotated[str, typer.Option("--serial", help="The hardware's serial number.")],
    units: Annotated[int, typer.Option("--units", help="Expansion units to tie to it, for good.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Allocate expansion units from the wallet to one piece of hardware; permanent."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        result = axis.allocate_to_hardware(s, org_id=org_id, serial=serial, units=units, actor=console_actor(),
                                           now=ctx.clock.now())
    if as_json:
        print_json(result)
    else:
        plain(f"Allocated {plural(units, 'expansion unit')} for good. " + _hardware_line(result))
