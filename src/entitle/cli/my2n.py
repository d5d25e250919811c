"""My2N apartment licenses from the console (SPEC §4, R-MY-1 … R-MY-6).

`entitle site …` (sites, the dashboard, the migration and the model change, the site type, CSV
import and export, `site device …` for devices and `site pay …` for card payment), `entitle
apartment …` (apartments, paying an apartment-year from the site credit pool) and `entitle
voucher …` (minting voucher batches, activating a code into a site's credit pool). Thin over
``entitle.my2n`` (services, board, csvio, billing): every rule is decided there. ``--json``
prints the services' dicts, the same the REST API returns. The console acts as an operator:
a company admin of every organization and the vendor (issuer, 2N Tech Support).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from entitle.cli.common import (DatabaseUrl, JsonOut, Kind, OrgRef, console_actor, context, day, err, fail,
                                handles_errors, make_table, named, org_ref, out, plain, print_json, staged_file)
from entitle.db import reading, transaction
from entitle.errors import EntitleError
from entitle.my2n import billing, board, csvio
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, Site, SiteDevice
from entitle.text import plural

site_app = typer.Typer(help="My2N sites: create, dashboard, migration, CSV import/export, devices, card payment.",
                       no_args_is_help=True)
site_device_app = typer.Typer(help="Devices of a site: intercoms outside apartments, answering devices in one "
                              "(at most 4 paid ones per apartment).", no_args_is_help=True)
site_pay_app = typer.Typer(help="Card payment of a site's apartment licenses: status, card, automatic recurring "
                           "payment on and off.", no_args_is_help=True)
site_app.add_typer(site_device_app, name="device")
site_app.add_typer(site_pay_app, name="pay")
apartment_app = typer.Typer(help="Apartments of a My2N site, and paying their licenses from the site credit pool.",
                            no_args_is_help=True)
voucher_app = typer.Typer(help="My2N voucher codes: mint a batch (issuer), activate a code into a site's credit "
                          "pool, show the pool.", no_args_is_help=True)

SITE = Kind("site", "sites", "site", "entitle site list")
SiteRef = Annotated[str, typer.Option("--site", help=SITE.help)]
APARTMENT = Kind("apartment", "apartments", "apartment", "entitle apartment list")
ApartmentRef = Annotated[str, typer.Option("--apartment", help=APARTMENT.help)]
Serial = Annotated[str, typer.Option("--serial", help="The device's serial number (or name).")]

# The dashboard and lists print this many rows at most; --json has them all.
PRINT_LIMIT = 1000


# --- shared ------------------------------------------------------------------------------------

def _site(session: Session, org: str, ref: str) -> Site:
    """The site of the organization ``org`` names that ``ref`` names: by id or exact name."""
    org_id = org_ref(session, org)
    return named(session, Site, SITE, ref, scope=[Site.org_id == org_id], within=f" of organization {org_id}")


def _apartment(session: Session, site: Site, ref: str) -> Apartment:
    """The site's apartment that ``ref`` names: by id or exact name."""
    return named(session, Apartment, APARTMENT, ref, scope=[Apartment.site_id == site.id], within=f" of site {site.id}")


def _yes(value: bool | None) -> str:
    return "-" if value is None else "yes" if value else "no"


def _words(value: str | None) -> str:
    return value.replace("_", " ") if value else "-"


def _pool(pool: dict[str, int]) -> str:
    return f"{plural(pool['apartment_years'], 'apartment-year')} and {plural(pool['device_years'], 'device-year')}"


def _cut(rows: list[Any], what: str) -> list[Any]:
    if len(rows) > PRINT_LIMIT:
        err.print(f"Showing the first {PRINT_LIMIT:,} of {len(rows):,} {what}; --json lists them all.",
                  style="dim", highlight=False)
    return rows[:PRINT_LIMIT]


@contextmanager
def _progress(what: str, *, shown: bool) -> Iterator[Callable[[int, int], None]]:
    """A progress bar on stderr, yielding ``update(done, total)``; it appears with the first
    update (a file refused by the checks shows none). Not with --json: there stderr carries
    nothing but an error's JSON."""
    progress = Progress(TextColumn(what), BarColumn(), MofNCompleteColumn(), TextColumn("rows"),
                        TimeElapsedColumn(), console=err, disable=not shown)
    task = progress.add_task(what, total=None)

    def update(done: int, total: int) -> None:
        if not progress.live.is_started:
            progress.start()
        progress.update(task, completed=done, total=total)

    try:
        yield update
    finally:
        if progress.live.is_started:
            progress.stop()


def _summary(*rows: tuple[str, str]) -> None:
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column(style="bold")
    table.add_column()
    for name, value in rows:
        table.add_row(name, value)
    out.print(table)


# --- sites (R-MY-1) ----------------------------------------------------------------------------

def _site_line(d: dict[str, Any]) -> str:
    line = f"Site {d['id']} ({d['name']}), region {d['region']}: {d['model']} model"
    if d["model"] == "custom":
        state = "expired" if d["custom_expired"] else "expires"
        return line + f" (retired; {state} {day(d['custom_expires_at'])})."
    return line + (f", {_words(d['site_type'])}." if d["site_type"] else "; choose its type with `entitle site type`.")


@site_app.command("create")
@handles_errors
def site_create(
    org: OrgRef,
    name: Annotated[str, typer.Option("--name", help="The site's name, unique in the organization.")],
    site_type: Annotated[str, typer.Option("--type", help=f"Site type: {', '.join(my2n.SITE_TYPES)}.")]
    = "apartment_building",
    custom_expires: Annotated[datetime | None, typer.Option(
        "--custom-expires", formats=["%Y-%m-%d"],
        help="Record a legacy site of the retired custom model, expiring that day (vendor only).")] = None,
    region: Annotated[str | None, typer.Option(
        "--region", help=f"The site's sales region: {', '.join(my2n.REGIONS)}; left out: the organization's.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create a site of the apartment model in a region (the organization's unless --region
    says another), which decides the voucher part it accepts, the part number to order and the
    price of its card payments."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        if custom_expires is not None:
            site = my2n.create_site(s, org_id=org_id, name=name, model="custom", actor=console_actor(), now=now,
                                    custom_expires_at=custom_expires.replace(tzinfo=UTC), region=region)
        else:
            site = my2n.create_site(s, org_id=org_id, name=name, site_type=site_type, actor=console_actor(), now=now,
                                    region=region)
        result = my2n.site_to_dict(site, now)
    if as_json:
        print_json(result)
    else:
        plain(f"Created in organization {org_id}. " + _site_line(result))


@site_app.command("region")
@handles_errors
def site_region(
    org: OrgRef, site: SiteRef,
    region: Annotated[str, typer.Option("--region", help=f"The new region: {', '.join(my2n.REGIONS)}.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Change a site's region (company admins): possible until a voucher code has been
    activated into its credit pool, and not while recurring payment is on."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found, now = _site(s, org, site), ctx.clock.now()
        my2n.change_region(s, site=found, region=region, actor=console_actor(), now=now)
        result = my2n.site_to_dict(found, now)
    if as_json:
        print_json(result)
    else:
        plain(_site_line(result))


@site_app.command("list")
@handles_errors
def site_list(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The organization's sites, with their model, type and number of apartments."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id, now = org_ref(s, org), ctx.clock.now()
        counts = {site_id: n for site_id, n in s.execute(select(Apartment.site_id, func.count())
                                                          .where(Apartment.org_id == org_id)
                                                          .group_by(Apartment.site_id))}
        rows = [{**my2n.site_to_dict(x, now), "apartments": counts.get(x.id, 0)} for x in my2n.sites_of(s, org_id)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"Organization {org_id} has no site; create one with `entitle site create`.")
        return
    table = make_table(f"Sites of organization {org_id}", "id=", "name", "model=", "type=", "region=", "apartments>",
                   "created=")
    for r in rows:
        model = r["model"] + (f" (expires {day(r['custom_expires_at'])})" if r["model"] == "custom" else "")
        table.add_row(str(r["id"]), escape(r["name"]), model, _words(r["site_type"]), r["region"],
                      f"{r['apartments']:,}", day(r["created_at"]))
    out.print(table)


@site_app.command("show")
@handles_errors
def site_show(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """A site: its model (a custom one with its expiry), type, apartments, devices and credit pool."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found, now = _site(s, org, site), ctx.clock.now()
        result = {**my2n.site_to_dict(found, now),
                  "apartments": s.scalar(select(func.count()).where(Apartment.site_id == found.id)),
                  "devices": s.scalar(select(func.count()).where(SiteDevice.site_id == found.id)),
                  "credit_pool": my2n.credit_pool(s, found)}
    if as_json:
        print_json(result)
        return
    plain(_site_line(result))
    _summary(("apartments", f"{result['apartments']:,}"), ("devices", f"{result['devices']:,}"),
             ("credit pool", _pool(result["credit_pool"])), ("created", day(result["created_at"])),
             ("model changed", day(result["model_changed_at"])))


@site_app.command("dashboard")
@handles_errors
def site_dashboard(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The site dashboard: apartments, how many need a license (a paid device outside local
    mode), which lapsed or lapse within 30 days, and what to order."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found, now = _site(s, org, site), ctx.clock.now()
        result = board.dashboard(s, site=found, now=now)
    if as_json:
        print_json(result)
        return
    plain(_site_line(result["site"]))
    order = result["order"]
    _summary(("apartments", f"{result['apartments']:,}"), ("need a license", f"{result['needing_license']:,}"),
             ("not paid", f"{len(result['not_paid']):,}"), ("lapsed", f"{len(result['lapsed']):,}"),
             ("partly paid", f"{len(result['partly_paid']):,}"),
             ("lapse within 30 days", f"{len(result['lapsing_soon']):,}"),
             ("credit pool", _pool(result["pool"])),
             ("to order", f"{order['quantity']:,} × part {order['part_number']} "
                          + ("(recurring payment pays every apartment)" if result["order_basis"] == "recurring" else
                             "(apartments not paid through the next 12 months or partly paid, less the credit pool)")))
    if not result["rows"]:
        plain("The site has no apartments; create them with `entitle apartment create` or `entitle site import`.")
        return
    table = make_table("Apartments (dates in UTC)", "id=", "name", "paid devices>", "needs license=", "paid through=",
                       "state")
    for r in _cut(result["rows"], "apartments"):
        table.add_row(str(r["id"]), escape(r["name"]), str(r["paid_devices"]), _yes(r["needs_license"]),
                      day(r["paid_through"]), escape(_state(r)))
    out.print(table)


STATE_WORDS = {"no_license_needed": "No license needed", "not_paid": "Not paid", "paid": "Paid",
               "lapsing_soon": "Lapses soon", "partly_paid": "Partly paid", "lapsed": "Lapsed"}


def _state(row: dict[str, Any]) -> str:
    """An apartment's state in words (point 10: never paid is "Not paid", not "Lapsed"); partly
    paid names the devices that stop."""
    words = STATE_WORDS[row["state"]]
    if row["state"] == "partly_paid":
        words += f" for {plural(row['devices_paid_for'], 'device')}; stopped: {', '.join(row['devices_not_paid'])}"
    return words


@site_app.command("migration-check")
@handles_errors
def site_migration_check(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None,
                         as_json: JsonOut = False) -> None:
    """Every device, except intercoms, not yet in an apartment: the model change waits until
    there is none."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _site(s, org, site)
        left = my2n.migration_check(s, site=found)
        result = {"site": my2n.site_to_dict(found, ctx.clock.now()), "unassigned": left, "ready": not left}
    if as_json:
        print_json(result)
        return
    if not left:
        plain(f"Every device of site {found.id} ({found.name}) that belongs in an apartment is in one: the site is "
               "ready for the apartment model (2N Tech Support changes it: `entitle site change-model`).")
        return
    table = make_table(f"{plural(len(left), 'device')} of site {found.id} still outside apartments", "serial=",
                       "kind=")
    for d in _cut(left, "devices"):
        table.add_row(escape(d["serial"]), _words(d["kind"]))
    out.print(table)
    plain("Assign them with `entitle site device assign` (or import a CSV with `entitle site import`).")


@site_app.command("change-model")
@handles_errors
def site_change_model(
    org: OrgRef, site: SiteRef,
    model: Annotated[str, typer.Option("--model", help="The business model to move to: apartment.")] = "apartment",
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Move a site to the apartment model (2N Tech Support's action): refused while a device is
    outside apartments; then every user of the organization is logged out."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        result = my2n.change_model(s, site=found, model=model, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(result)
        return
    plain(f"Site {found.id} ({found.name}) now has the {result['site']['model']} model. "
           f"{plural(result['users_logged_out'], 'user')} {'was' if result['users_logged_out'] == 1 else 'were'} "
           f"logged out ({plural(result['sessions_revoked'], 'session or token', 'sessions and tokens')} revoked) "
           "and log in again.")
    plain("Next, choose the site type: `entitle site type`.")


@site_app.command("type")
@handles_errors
def site_type(
    org: OrgRef, site: SiteRef,
    chosen: Annotated[str, typer.Option("--type", help=f"Site type: {', '.join(my2n.SITE_TYPES)}.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Choose the site type once the site has the apartment model."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found, now = _site(s, org, site), ctx.clock.now()
        my2n.choose_site_type(s, site=found, site_type=chosen, actor=console_actor(), now=now)
        result = my2n.site_to_dict(found, now)
    if as_json:
        print_json(result)
    else:
        plain(_site_line(result))


# --- CSV ---------------------------------------------------------------------------------------

def _print_problems(error: EntitleError) -> None:
    table = make_table(None, "row>", "column=", "code=", "problem")
    for p in error.detail["rows"]:
        table.add_row("-" if p["row"] is None else str(p["row"]), p["column"] or "-", p["code"], escape(p["message"]))
    err.print(table)


@site_app.command("import")
@handles_errors
def site_import(
    org: OrgRef, site: SiteRef,
    file: Annotated[Path, typer.Option(
        "--file", dir_okay=False, help="CSV with the columns apartment,serial,kind,local_mode (as `entitle site "
        "export` writes it).")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Import apartments and devices from CSV, all or nothing: every row is checked first (kinds,
    serials, a fifth paid device in an apartment), and the refused rows are listed with
    their line and column. Missing apartments are created, devices added, and the site's devices
    outside apartments assigned to the apartment their row names."""
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise EntitleError("file_unreadable", f"Cannot read {file}: {exc.strerror}.", file=str(file)) from None
    try:
        with context(database_url) as ctx, transaction(ctx.sessions) as s:
            found = _site(s, org, site)
            # The bar stops before the commit; the rows are written in one transaction.
            with _progress("importing", shown=not as_json) as progress:
                result = csvio.import_csv(s, site=found, data=data, actor=console_actor(), now=ctx.clock.now(),
                                          progress=progress)
    except EntitleError as exc:
        if exc.code != "csv_invalid" or as_json:
            raise
        _print_problems(exc)
        fail(EntitleError(exc.code, exc.message, problems=exc.detail["problems"],
                          total_rows=exc.detail["total_rows"]), as_json=False)
        return
    if as_json:
        print_json(result)
        return
    plain(f"Imported {plural(result['rows'], 'row')} into site {found.id} ({found.name}): "
           f"{plural(result['apartments_created'], 'apartment')} created, {plural(result['devices_added'], 'device')} "
           f"added, {result['devices_assigned']:,} assigned, local mode changed on "
           f"{plural(result['local_mode_changed'], 'device')}.")


@site_app.command("export")
@handles_errors
def site_export(
    org: OrgRef, site: SiteRef,
    out_file: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False, help="Write the CSV here (replaced if it exists); left out: print it.")] = None,
    database_url: DatabaseUrl = None,
) -> None:
    """The site's apartments and devices as CSV (apartment,serial,kind,local_mode): one row per
    device, one per apartment without devices; `entitle site import` reads it back."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _site(s, org, site)
        if out_file is None:
            typer.echo(csvio.export_csv(s, found, actor=console_actor()), nl=False)
            return
        with staged_file(out_file, newline="", undone="nothing was exported",
                         saved="The site was exported to") as f:
            rows = list(csvio.export_rows(s, found))
            csv.writer(f, lineterminator="\r\n").writerows(rows)
    err.print(f"Exported {plural(len(rows) - 1, 'row')} of site {found.id} ({found.name}) to {out_file}.",
              markup=False, highlight=False)


# --- devices (R-MY-2, R-MY-3) ------------------------------------------------------------------

def _device_line(d: SiteDevice, apartment: Apartment | None) -> str:
    where = f"in apartment {apartment.name}" if apartment else "outside apartments"
    return f"Device {d.serial} ({_words(d.kind)}) {where}" + (", in local mode." if d.local_mode else ".")


def _device_dict(d: SiteDevice, apartment: Apartment | None) -> dict[str, Any]:
    return {"serial": d.serial, "kind": d.kind, "apartment_id": d.apartment_id,
            "apartment": apartment.name if apartment else None, "local_mode": d.local_mode}


@site_device_app.command("add")
@handles_errors
def device_add(
    org: OrgRef, site: SiteRef, serial: Serial,
    kind: Annotated[str, typer.Option("--kind", help=f"One of: {', '.join(my2n.KINDS)}.")],
    apartment: Annotated[str | None, typer.Option(
        "--apartment", help=f"The apartment ({APARTMENT.ways}) of an answering device; intercoms belong to none.")] = None,
    local_mode: Annotated[bool, typer.Option("--local-mode", help="A paid device in local mode needs no "
                                             "license.")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Add a device to a site; a fifth paid device (phone, tablet, third-party) in an apartment
    is refused: create another apartment."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        apt = _apartment(s, found, apartment) if apartment is not None else None
        d = my2n.add_device(s, site=found, serial=serial, kind=kind, apartment_id=apt.id if apt else None,
                            local_mode=local_mode, actor=console_actor(), now=ctx.clock.now())
        result = _device_dict(d, apt)
        line = _device_line(d, apt)
    if as_json:
        print_json(result)
    else:
        plain(f"Added to site {found.id}. {line}")


@site_device_app.command("assign")
@handles_errors
def device_assign(
    org: OrgRef, site: SiteRef, serial: Serial,
    apartment: Annotated[str | None, typer.Option(
        "--apartment", help=f"The apartment ({APARTMENT.ways}) to move the device into.")] = None,
    none: Annotated[bool, typer.Option("--none", help="Take the device out of every apartment.")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Move a device into an apartment (the four-paid-device limit holds), or out of
    every apartment with --none."""
    if (apartment is None) == (not none):
        raise EntitleError("apartment_choice_invalid", "Give --apartment NAME to move the device into an apartment, "
                           "or --none to take it out of every apartment.")
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        apt = _apartment(s, found, apartment) if apartment is not None else None
        d = my2n.assign_device(s, site=found, serial=serial, apartment_id=apt.id if apt else None,
                               actor=console_actor(), now=ctx.clock.now())
        result, line = _device_dict(d, apt), _device_line(d, apt)
    if as_json:
        print_json(result)
    else:
        plain(line)


@site_device_app.command("local-mode")
@handles_errors
def device_local_mode(
    org: OrgRef, site: SiteRef, serial: Serial,
    on: Annotated[bool, typer.Option("--on/--off", help="Local mode on or off.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Switch a device's local mode: a paid device in local mode makes no license necessary
    but still counts towards its apartment's four."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        d = my2n.set_local_mode(s, site=found, serial=serial, local_mode=on, actor=console_actor(),
                                now=ctx.clock.now())
        apt = s.get(Apartment, d.apartment_id) if d.apartment_id else None
        result, line = _device_dict(d, apt), _device_line(d, apt)
    if as_json:
        print_json(result)
    else:
        plain(line)


@site_device_app.command("remove")
@handles_errors
def device_remove(
    org: OrgRef, site: SiteRef, serial: Serial,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Take a device off the site (it may then be added to another site); what was paid stays paid."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        result = my2n.remove_device(s, site=found, serial=serial, actor=console_actor(), now=ctx.clock.now())
        apt = s.get(Apartment, result["apartment"]) if result["apartment"] else None
        where = f" (it was in apartment {apt.name})" if apt else ""
        line = f"Device {result['serial']} is removed from site {found.id} ({found.name}){where}."
    if as_json:
        print_json(result)
    else:
        plain(line)


@site_device_app.command("list")
@handles_errors
def device_list(
    org: OrgRef, site: SiteRef,
    apartment: Annotated[str | None, typer.Option("--apartment", help=f"Only this apartment's devices ({APARTMENT.ways}).")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """The site's devices (or an apartment's) and whether each works now: a paid device outside
    local mode stops when its apartment's license lapsed."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _site(s, org, site)
        apt = _apartment(s, found, apartment) if apartment is not None else None
        rows = my2n.devices_with_state(s, site=found, now=ctx.clock.now(), apartment_id=apt.id if apt else None)
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain("No devices here; add them with `entitle site device add` or `entitle site import`.")
        return
    table = make_table(f"Devices of site {found.id} ({escape(found.name)})", "serial=", "kind=", "apartment", "paid=",
                   "local mode=", "works=")
    for r in _cut(rows, "devices"):
        table.add_row(escape(r["serial"]), _words(r["kind"]), escape(r["apartment"] or "-"), _yes(r["paid"]),
                      _yes(r["local_mode"]), "yes" if r["works"] else "STOPPED")
    out.print(table)


# --- apartments (R-MY-2, R-MY-5) ---------------------------------------------------------------

@apartment_app.command("create")
@handles_errors
def apartment_create(
    org: OrgRef, site: SiteRef,
    name: Annotated[list[str], typer.Option("--name", help="The apartment's name; repeatable (all or none).")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create apartments in a site, all or none."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found, now = _site(s, org, site), ctx.clock.now()
        made = [my2n.create_apartment(s, site=found, name=n, actor=console_actor(), now=now) for n in name]
        result = [{"id": a.id, "name": a.name, "site": found.id} for a in made]
    if as_json:
        print_json(result)
    else:
        names = ", ".join(f"{a['name']} ({a['id']})" for a in result)
        plain(f"Created {plural(len(result), 'apartment')} in site {found.id}: {names}.")


@apartment_app.command("list")
@handles_errors
def apartment_list(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The site's apartments: paid devices, whether each needs a license, paid through."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _site(s, org, site)
        rows = board.dashboard(s, site=found, now=ctx.clock.now())["rows"]
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"Site {found.id} has no apartments; create them with `entitle apartment create`.")
        return
    table = make_table(f"Apartments of site {found.id} ({escape(found.name)}), dates in UTC", "id=", "name",
                   "paid devices>", "needs license=", "paid through=", "state")
    for r in _cut(rows, "apartments"):
        table.add_row(str(r["id"]), escape(r["name"]), str(r["paid_devices"]), _yes(r["needs_license"]),
                      day(r["paid_through"]), escape(_state(r)))
    out.print(table)


@apartment_app.command("pay")
@handles_errors
def apartment_pay(org: OrgRef, site: SiteRef, apartment: ApartmentRef, database_url: DatabaseUrl = None,
                  as_json: JsonOut = False) -> None:
    """Pay one year of an apartment's license from the site credit pool: one apartment-year, or
    one device-year per paid device outside local mode. An apartment paid per device for fewer
    devices than it has is topped up instead (a device-year per device not paid for and paid
    year left, through the same date)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        apt = _apartment(s, found, apartment)
        result = my2n.pay_from_credit(s, site=found, apartment_id=apt.id, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(result)
    else:
        devices = (f" for {plural(result['devices_paid_for'], 'paid device')}" if result["devices_paid_for"] is not None
                   else "")
        plain(f"Apartment {result['apartment']} is paid through {day(result['paid_through'])} UTC{devices}; the "
              f"credit pool holds {_pool(result['pool'])}.")


# --- vouchers (R-MY-5) -------------------------------------------------------------------------

@voucher_app.command("mint")
@handles_errors
def voucher_mint(
    part: Annotated[str, typer.Option("--part", help="9137958, or 02683-001 for US & APAC sites.")],
    name: Annotated[str, typer.Option("--name", help="The batch's name (e.g. the distributor's order).")],
    years: Annotated[int, typer.Option("--years", help="Years each code is worth (1 to 10).")],
    subscriptions: Annotated[int, typer.Option("--subscriptions", help="How many codes.")],
    scope: Annotated[str, typer.Option("--scope", help="apartment (apartment-years) or device (device-years).")]
    = "apartment",
    out_file: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False, help="Write the codes to this CSV file (needed above 1,000 codes).")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Mint a distributor's voucher batch (issuer): valid 3 years from now; each code is shown
    once and activated by hand into a site's credit pool."""
    if out_file is None and subscriptions > PRINT_LIMIT:
        raise EntitleError("out_required", f"{subscriptions:,} codes are too many to print; give --out FILE.csv "
                           f"(at most {PRINT_LIMIT:,} are printed).", count=subscriptions, limit=PRINT_LIMIT)
    if out_file is not None and out_file.exists():
        raise EntitleError("out_exists", f"{out_file} already exists; choose another file name (a file of codes is "
                           "never overwritten).", out=str(out_file))
    if out_file is None:
        result, codes = _mint(database_url, part, name, years, subscriptions, scope, into=None)
    else:
        # The file is written and synced before the commit and takes its name after it: no codes
        # exist without their file, and no file names codes that do not exist.
        with staged_file(out_file, newline="", undone="no codes were minted",
                         saved="The codes were minted and saved in") as f:
            result, codes = _mint(database_url, part, name, years, subscriptions, scope, into=f)
    summary = (f"Minted {plural(len(codes), 'voucher code')} of part {part}, {plural(years, scope + '-year')} each (batch "
               f"{result['batch']}, valid until {result['valid_until_text']}).")
    if out_file is not None:
        if as_json:
            print_json({**result, "out": str(out_file)})
        else:
            plain(f"{summary} Written to {out_file}.")
        return
    if as_json:
        print_json({**result, "codes": codes})
        return
    for code in codes:
        typer.echo(code)
    err.print(summary, markup=False, highlight=False)
    err.print("The codes are shown only this once.", style="dim")


def _mint(database_url: str | None, part: str, name: str, years: int, subscriptions: int, scope: str, *,
          into: IO[str] | None) -> tuple[dict[str, Any], list[str]]:
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        batch, codes = my2n.mint_vouchers(s, part_number=part, name=name, years=years, subscriptions=subscriptions,
                                          scope=scope, actor=console_actor(), now=ctx.clock.now())
        shown = my2n.voucher_batch_to_dict(batch)
        result = {"batch": batch.id, "name": name.strip(), "part_number": part, "years": years, "scope": scope,
                  "subscriptions": len(codes), "purchased_at": batch.purchased_at.isoformat(),
                  "valid_until": shown["valid_until"], "valid_until_text": shown["valid_until_text"]}
        if into is not None:
            writer = csv.writer(into, lineterminator="\r\n")
            writer.writerow(["code", "part_number", "years", "scope"])
            writer.writerows([c, part, years, scope] for c in codes)
            into.flush()
            os.fsync(into.fileno())  # a full disk fails here, before the commit
    return result, codes


@voucher_app.command("redeem")
@handles_errors
def voucher_redeem(
    org: OrgRef, site: SiteRef,
    code: Annotated[str, typer.Option("--code", help="The voucher code as typed.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Activate a voucher code: its years go to the site's credit pool (refused for a used or
    cancelled code, a batch past its 3 years, another region's part)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        result = my2n.redeem_voucher(s, site=found, code=code, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(result)
    else:
        plain(f"Activated: {plural(result['years'], result['scope'] + '-year')} added to site {found.id}'s credit pool, "
               f"which holds {_pool(result['pool'])}. Pay an apartment with `entitle apartment pay`.")


@voucher_app.command("pool")
@handles_errors
def voucher_pool(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The site credit pool: apartment-years and device-years activated and not yet used."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _site(s, org, site)
        result = my2n.credit_pool(s, found)
    if as_json:
        print_json(result)
    else:
        plain(f"The credit pool of site {found.id} ({found.name}) holds {_pool(result)}.")


@voucher_app.command("cancel")
@handles_errors
def voucher_cancel(code: Annotated[str, typer.Option("--code", help="The voucher code as typed.")],
                   database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Cancel an Active voucher code (issuer only; a Used code stays used)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        result = my2n.cancel_voucher(s, code=code, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(result)
    else:
        plain("The voucher code is cancelled; it can no longer be activated.")


@voucher_app.command("batches")
@handles_errors
def voucher_batches(limit: Annotated[int, typer.Option("--limit", min=1, max=1000, help="How many, newest first.")]
                    = 50, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The latest voucher batches (issuer): part, years, scope, valid until, and how many codes
    are Active, Used and Cancelled."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        result = [my2n.voucher_batch_to_dict(b, s) for b in my2n.voucher_batches(s, actor=console_actor(), limit=limit)]
    if as_json:
        print_json(result)
        return
    table = make_table("Voucher batches (dates in UTC)", "id=", "name", "part=", "years>", "scope=", "valid until=",
                       "active>", "used>", "cancelled>")
    for b in result:
        table.add_row(str(b["id"]), escape(b["name"]), b["part_number"], str(b["years"]), b["scope"],
                      b["valid_until_text"], f"{b['codes']['active']:,}", f"{b['codes']['used']:,}",
                      f"{b['codes']['cancelled']:,}")
    out.print(table)


# --- card payment (R-MY-5) ---------------------------------------------------------------------

def _money(minor: int | None, currency: str | None) -> str:
    return "-" if minor is None else f"{minor / 100:,.2f} {currency or ''}".strip()


@site_pay_app.command("status")
@handles_errors
def pay_status(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The site's card, whether automatic recurring payment is on, the apartments it covers, the
    price of a year and the card payments received."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        found = _site(s, org, site)
        price_minor, currency = ctx.settings.apartment_year_price(found.region)  # the site's region's
        result = {**billing.plan_to_dict(s, site=found, actor=console_actor(), now=ctx.clock.now(),
                                         price_minor=price_minor, currency=currency),
                  "payments": billing.payments_of(s, found)}
    if as_json:
        print_json(result)
        return
    rows = [("card", result["card"] or "none"),
            ("recurring payment", f"on since {day(result['activated_at'])}, "
                                  f"{plural(result['apartments_covered'], 'apartment')} a year"
                                  if result["recurring"] else "off"),
            ("need a license", plural(result['needing_license'], 'apartment'))]
    if "price" in result:
        price = result["price"]
        rows.append(("price", f"{_money(price['per_apartment_year_minor'], price['currency'])} per apartment-year; "
                              f"{_money(price['year_total_minor'], price['currency'])} a year now"))
    _summary(*rows)
    if result["payments"]:
        table = make_table("Card payments received", "payment=", "paid=", "apartments>", "amount>")
        for p in _cut(result["payments"], "payments"):
            table.add_row(escape(p["payment"]), day(p["paid_at"]), str(p["apartments"]),
                          _money(p["amount_minor"], p["currency"]))
        out.print(table)


@site_pay_app.command("card")
@handles_errors
def pay_card(
    org: OrgRef, site: SiteRef,
    payment_method: Annotated[str, typer.Option(
        "--payment-method", help="The card's payment-method id from the payment provider's form (pm_…).")],
    email: Annotated[str | None, typer.Option("--email", help="Billing e-mail for the provider's customer.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Set the card the site pays with; refused while recurring payment is on (turn it off first)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        result = billing.set_card(s, site=found, payment_method=payment_method, email=email, actor=console_actor(),
                                  now=ctx.clock.now(), provider=ctx.payments)
    if as_json:
        print_json(result)
    else:
        plain(f"Site {found.id} pays with {result['card']}. Turn recurring payment on with "
               "`entitle site pay activate`.")


@site_pay_app.command("activate")
@handles_errors
def pay_activate(
    org: OrgRef, site: SiteRef,
    preview: Annotated[bool, typer.Option("--preview", help="Only say what it would charge now; charge nothing.")] = False,
    expect: Annotated[int | None, typer.Option(
        "--expect", min=0, help="The amount (minor units) --preview showed: refused, uncharged, if it changed.")] = None,
    database_url: DatabaseUrl = None, as_json: JsonOut = False,
) -> None:
    """Turn automatic recurring payment on: the card pays now what is not paid through the site's
    anniversary (pro rata by day; nothing when all is paid), then every year at the anniversary;
    nothing is paid if the card or the provider fails. --preview says the amount first."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        if preview:
            result = billing.activation_preview(s, site=found, actor=console_actor(), now=ctx.clock.now(),
                                                provider=ctx.payments)
        else:
            result = billing.activate_recurring(s, site=found, actor=console_actor(), now=ctx.clock.now(),
                                                provider=ctx.payments, expected_amount_minor=expect)
    if as_json:
        print_json(result)
        return
    if preview:
        plain(f"Turning recurring payment on now charges {_money(result['amount_minor'], result['currency'])} for "
              f"{plural(len(result['lines']), 'apartment')} not paid through {day(result['renews_at'])} (the site's "
              f"anniversary; price × unpaid days ÷ {result['year_days']}). Confirm with "
              f"`entitle site pay activate --expect {result['amount_minor']}`.")
        return
    paid = ", ".join(result["paid"]) or "none (everything is paid through the anniversary)"
    plain(f"Recurring payment is on for site {found.id}: {plural(result['apartments_covered'], 'apartment')}, renewing on "
          f"{day(result['renews_at'])}. Charged now: {_money(result['charged_minor'], result['currency'])}; "
          f"paid now: {paid}.")


@site_pay_app.command("deactivate")
@handles_errors
def pay_deactivate(org: OrgRef, site: SiteRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Turn automatic recurring payment off; what was paid stays paid until its date."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        found = _site(s, org, site)
        result = billing.deactivate_recurring(s, site=found, actor=console_actor(), now=ctx.clock.now(),
                                              provider=ctx.payments)
    if as_json:
        print_json(result)
    else:
        plain(f"Recurring payment is off for site {found.id}; paid apartments stay paid until their date.")
