"""`entitle ac`: Access Commander installations, devices, Attendance users, licenses (SPEC §2).

Thin over ``entitle.access_commander.services``: every rule is decided there (and, below it, in
``entitle_device.access_commander``). ``--json`` prints the same dicts as the REST API.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from entitle.access_commander import calculator
from entitle.access_commander import services as ac
from entitle.access_commander.models import DEVICE_TYPES, AttendanceUser, Installation
from entitle.cli.common import (DatabaseUrl, JsonOut, Kind, OrgRef, console_actor, context, err, handles_errors,
                                named, org_ref, out, print_json, read_text_file, settings_for, staged_file)
from entitle.db import reading, transaction
from entitle.errors import EntitleError
from entitle.text import plural

ac_app = typer.Typer(help="Access Commander: installations, devices, Attendance users, licenses, the calculator.",
                     no_args_is_help=True)
installation_app = typer.Typer(help="Access Commander installations of an organization.", no_args_is_help=True)
device_app = typer.Typer(help="Devices of an installation: add, report connection, activate.", no_args_is_help=True)
attendance_app = typer.Typer(help="Attendance users of an installation.", no_args_is_help=True)
ac_license_app = typer.Typer(help="Licenses of an installation: generate or add a file (each replaces the current "
                             "one), list, export, check.",
                             no_args_is_help=True)
ac_app.add_typer(installation_app, name="installation")
ac_app.add_typer(device_app, name="device")
ac_app.add_typer(attendance_app, name="attendance")
ac_app.add_typer(ac_license_app, name="license")
system_user_app = typer.Typer(help="System users of an installation (a tier limits administrators).",
                              no_args_is_help=True)
ac_app.add_typer(system_user_app, name="system-user")

INSTALLATION = Kind("installation", "installations", "installation", "entitle ac installation list", key="uid")
InstallationRef = Annotated[str, typer.Option("--installation", help=INSTALLATION.help)]
Serial = Annotated[str, typer.Option("--serial", help="The device's serial number.")]
OutFile = Annotated[Path | None, typer.Option("--out", dir_okay=False,
                                              help="Write the signed license file here (replaced if it exists).")]


# --- shared ------------------------------------------------------------------------------------

def _installation(session: Session, org: str, ref: str) -> Installation:
    """The installation of the organization ``org`` names that ``ref`` names: by id, uid or name
    (uids are made up as AC-…, so one of digits clashes with an id only when chosen so)."""
    org_id = org_ref(session, org)
    return named(session, Installation, INSTALLATION, ref, scope=[Installation.org_id == org_id],
                 within=f" of organization {org_id}")


def _plain(text: str) -> None:
    out.print(text, markup=False, highlight=False)


def _count(n: int | None) -> str:
    return "unlimited" if n is None else f"{n:,}"


def _when(iso: str | None, *, short: bool = False) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M" if short else "%Y-%m-%d %H:%M:%S UTC")


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _part(p: dict[str, Any]) -> str:
    """A package's part number, with the other numbers it is sold under: 91379040 (01372-001)."""
    alts = p.get("alt_part_numbers") or []
    return p["part_number"] + (f" ({', '.join(alts)})" if alts else "")


def _packages(packages: list[dict[str, Any]]) -> str:
    return ", ".join(f"{p['quantity']} × {_part(p)}" for p in packages) or "-"


def _capacity(cap: dict[str, Any]) -> str:
    parts = [plural(cap.get("devices"), "device"), plural(cap.get("attendance_users"), "Attendance user"),
             plural(cap.get("admins"), "admin"), f"integration {_yes(bool(cap.get('integration')))}"]
    if cap.get("tier"):
        parts.append(f"tier {cap['tier']}")
    return ", ".join(parts)


def _table(title: str, *columns: str, caption: str | None = None) -> Table:
    """A table whose columns marked ``=`` (ids, serials, times) never wrap; the others take the
    wrapping when a terminal is narrow."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                  padding=(0, 1, 0, 0), show_edge=False)
    for column in columns:
        fixed = column.endswith("=")
        table.add_column(column.rstrip("="), no_wrap=fixed, overflow="ellipsis" if fixed else "fold")
    return table


def _capacity_lines(cap: dict[str, Any]) -> str:
    lines = [plural(cap.get("devices"), "device"), f"{_count(cap.get('attendance_users'))} Attendance"]
    return "\n".join(lines + (["integration"] if cap.get("integration") else [])
                     + ([f"tier {cap['tier']}"] if cap.get("tier") else []))


def _license_lines(lic: dict[str, Any]) -> list[str]:
    return [f"License {lic['id']} for license device {lic['license_device']} (signed by {lic['kid']})",
            f"  packages: {_packages(lic['packages'])}",
            f"  capacity: {_capacity(lic['capacity'])}",
            f"  added: {_when(lic['added_at'])} by {lic['added_by']}"
            + (f"; replaced {_when(lic['replaced_at'])}" if lic.get("replaced_at") else "")]


def _package_args(items: list[str]) -> list[tuple[str, int]] | None:
    if not items:
        return None
    packages = []
    for item in items:
        part, sep, qty = item.rpartition(":")
        if not sep or not part.strip() or not qty.strip().isdigit():
            raise EntitleError("package_invalid",
                               f"--package {item!r}: write PART_NUMBER:QUANTITY, e.g. 91379040:4.", package=item)
        packages.append((part.strip(), int(qty)))
    return packages


def _staged(target: Path) -> Any:
    """The license file replaces ``target`` only if the license is committed."""
    return staged_file(target, undone="no license was generated",
                       saved="The license was generated and its file saved in")


# --- the calculator (R-AC-1) -------------------------------------------------------------------

def _calculator_catalog(database_url: str | None) -> tuple[Sequence[calculator.CatalogSku], str, str]:
    """The catalog the calculator reads, "database" or "default", and why: the database's when
    there is one, migrated, with Access Commander's packages in it; else the one Entitle ships."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError, ProgrammingError

    url = make_url(settings_for(database_url).database_url)
    where = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite" and not (url.database and url.database != ":memory:"
                                                   and Path(url.database).is_file()):
        # Opening an SQLite file that is not there would create it (and its directory).
        return calculator.default_catalog(), "default", f"no database at {url.database or ':memory:'}"
    try:
        with context(database_url) as ctx, reading(ctx.sessions) as s:
            skus = ac.catalog_skus(s)
    except (OperationalError, ProgrammingError) as exc:
        reason = " ".join(str(exc.orig or exc).split())
        return calculator.default_catalog(), "default", f"{where} cannot be read, run `entitle migrate`: {reason}"
    if not skus:
        return (calculator.default_catalog(), "default",
                f"{where} has no Access Commander packages; `entitle catalog load` adds them")
    return skus, "database", where


@ac_app.command("calculate")
@handles_errors
def calculate(
    devices: Annotated[int, typer.Option("--devices", help="Devices the installation manages.")],
    attendance_users: Annotated[int, typer.Option("--attendance-users", help="Attendance users to monitor.")] = 0,
    integration: Annotated[bool, typer.Option("--integration", help="LDAP / CSV synchronisation is needed.")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """The packages to order for a need, and the smallest tier that covers it.

    The catalog is the database's, else (no database, none migrated, no packages) the one Entitle ships.
    Which one is said on stderr, and as "catalog" with --json.
    """
    catalog, source, note = _calculator_catalog(database_url)
    result = calculator.calculate(catalog, devices=devices, attendance_users=attendance_users,
                                  integration=integration)
    if as_json:
        print_json({**result, "catalog": source})
        return
    err.print(f"catalog: {source} ({note})", style="dim", highlight=False, markup=False)
    need = (f"{plural(devices, 'device')}, {plural(attendance_users, 'Attendance user')}"
            + (", integration" if integration else ""))
    if result["packages"]:
        table = _table(f"Packages for {need}", "quantity=", "part number=", "also sold as=", "name")
        for p in result["packages"]:
            table.add_row(str(p["quantity"]), escape(p["part_number"]),
                          escape(", ".join(p["alt_part_numbers"]) or "-"), escape(p["name"]))
        out.print(table)
    else:
        _plain(f"The trial covers {need}: no package is needed.")
    _plain(f"Capacity: {_capacity(result['capacity'])}")
    tier = result["tier"]
    _plain(f"Smallest tier: {tier['part_number']} ({tier['name']})" if tier else "Smallest tier: none covers this need")


# --- installations -----------------------------------------------------------------------------

@installation_app.command("create")
@handles_errors
def installation_create(
    org: OrgRef,
    name: Annotated[str, typer.Option("--name", help="A name for the installation.")],
    uid: Annotated[str | None, typer.Option("--uid", help="The installation's own id; made up (AC-…) if left out.")] = None,
    heartbeat_timeout: Annotated[int, typer.Option(
        "--heartbeat-timeout", help="Seconds without news from a device that count as a disconnect (30 to 86400).")] = 300,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Register an installation; it starts on the trial. Prints its device-report token once."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        actor, org_id = console_actor(), org_ref(s, org)
        inst, token = ac.create_installation(s, org_id=org_id, name=name, uid=uid, actor=actor, now=ctx.clock.now(),
                                             heartbeat_timeout_seconds=heartbeat_timeout)
        result = {"installation": ac.installation_to_dict(inst), "token": token}
    if as_json:
        print_json(result)
        return
    i = result["installation"]
    _plain(f"Installation {i['id']} ({i['uid']}, {i['name']}) registered in organization {org_id}; it runs on the trial.")
    _plain(f"Device-report token: {token}")
    err.print("The token is shown only this once; the installation sends it to POST /api/v1/ac/state.",
              style="dim", highlight=False)


@installation_app.command("list")
@handles_errors
def installation_list(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The organization's installations."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        rows = [ac.installation_to_dict(i) for i in ac.installations_of(s, org_id)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        _plain(f"Organization {org_id} has no Access Commander installation; add one with `entitle ac installation create`.")
        return
    table = _table(f"Installations of organization {org_id} (times in UTC)", "id=", "uid=", "name",
                   "heartbeat timeout=", "created=")
    for r in rows:
        table.add_row(str(r["id"]), escape(r["uid"]), escape(r["name"]), f"{r['heartbeat_timeout_seconds']} s",
                      _when(r["created_at"], short=True))
    out.print(table)


@ac_app.command("status")
@handles_errors
def status(org: OrgRef, installation: InstallationRef, database_url: DatabaseUrl = None,
           as_json: JsonOut = False) -> None:
    """License settings: state, license device, protective period end, required / owned, devices."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        view = ac.overview_to_dict(ac.overview(s, inst, ctx.clock.now()))
    if as_json:
        print_json(view)
        return
    i, lic = view["installation"], view["license"]
    _plain(f"Installation {i['id']} ({i['uid']}, {i['name']})")
    summary = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    summary.add_column(style="bold")
    summary.add_column()
    summary.add_row("state", view["state"].upper())
    if lic is None:
        summary.add_row("license", "none (trial)")
    else:
        summary.add_row("license", escape(f"{lic['id']}: {_packages(lic['packages'])}"))
        summary.add_row("license device", escape(f"{view['license_device']} ("
                        + ("connected" if view["license_device_connected"] else "disconnected")
                        + (", activated" if lic["license_device_activated_at"] else ", not activated yet") + ")"))
        summary.add_row("connected time", f"{view['connected_seconds']:,} s")
    if view["protective_until"]:
        label = "suspended since" if view["state"] == "suspended" else "protective period ends"
        summary.add_row(label, _when(view["suspended_at"] or view["protective_until"]))
    d, a = view["devices"], view["attendance_users"]
    inactive = " (all devices inactive)" if view["all_devices_inactive"] else ""
    summary.add_row("devices", f"{d['required']:,} required, {d['active']:,} active{inactive}, {_count(d['owned'])} owned")
    summary.add_row("Attendance users", f"{a['required']:,} required, {a['monitored']:,} monitored, {_count(a['owned'])} owned")
    summary.add_row("integration", _yes(bool(view["granted"]["integration"]))
                    + (" (not usable while suspended)" if view["all_devices_inactive"] and view["granted"]["integration"] else ""))
    if view["granted"].get("tier"):
        summary.add_row("tier", escape(str(view["granted"]["tier"])))
    if view["next_step"]:
        summary.add_row("next step", escape(view["next_step"]))
    out.print(summary)
    if not view["device_list"]:
        _plain("No devices yet; add them with `entitle ac device add`.")
        return
    table = _table("Devices (times in UTC)", "serial=", "type=", "name", "active=", "connected=",
                   "last seen=",
                   caption="* license device" if view["license_device"] else None)
    for dev in view["device_list"]:
        serial = dev["serial"] + (" *" if dev["serial"] == view["license_device"] else "")
        # While suspended every device is inactive; "kept" ones are active again after the recovery.
        active = _yes(dev["active"]) + (" (kept)" if dev["activated"] and not dev["active"] else "")
        table.add_row(escape(serial), dev["type"], escape(dev["name"]), active, _yes(dev["connected"]),
                      _when(dev["last_seen"], short=True))
    out.print(table)


# --- devices -----------------------------------------------------------------------------------

def _device_out(dev: dict[str, Any], as_json: bool, what: str) -> None:
    if as_json:
        print_json(dev)
    else:
        _plain(f"Device {dev['serial']} {what}: active {_yes(dev['active'])}, connected {_yes(dev['connected'])}.")


@device_app.command("add")
@handles_errors
def device_add(
    org: OrgRef, installation: InstallationRef, serial: Serial,
    type: Annotated[str, typer.Option("--type", help=f"One of: {', '.join(DEVICE_TYPES)}.")] = "ip_intercom",
    name: Annotated[str, typer.Option("--name", help="A name for the device.")] = "",
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Add a device to the installation (not active, not connected until it reports)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        now = ctx.clock.now()
        dev = ac.add_device(s, installation=inst, serial=serial, type=type, name=name, actor=console_actor(), now=now)
        result = ac.device_to_dict(dev, now, ac.timeout_of(inst))
    _device_out(result, as_json, f"added to installation {installation}")


@device_app.command("state")
@handles_errors
def device_state(
    org: OrgRef, installation: InstallationRef, serial: Serial,
    connected: Annotated[bool, typer.Option("--connected/--disconnected", help=(
        "What the device reports. --connected is one report, heard now: the device stays connected only "
        "while reports or heartbeats keep coming within the installation's heartbeat timeout."))],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Report a device connected or disconnected, for the installation (one report, not a lasting state).

    --connected counts as the device being heard now, like one heartbeat.
    If nothing more is heard for longer than the installation's heartbeat timeout (300 s unless set with `installation create --heartbeat-timeout`), the device counts as disconnected from its last report; for a license device that starts the protective period.
    An installation keeps its devices connected with POST /api/v1/ac/heartbeat (or /api/v1/ac/state) and its token.
    --disconnected takes effect at once.
    """
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        console_actor().require_licensing(inst.org_id)
        now = ctx.clock.now()
        dev = ac.report_state(s, installation=inst, serial=serial, connected=connected, now=now)
        result = ac.device_to_dict(dev, now, ac.timeout_of(inst))
        inst_timeout = inst.heartbeat_timeout_seconds
    _device_out(result, as_json, "reported " + ("connected" if connected else "disconnected"))
    if connected and not as_json:
        _plain(f"This is one report: {serial} counts as disconnected once nothing is heard from it for longer "
               f"than {plural(inst_timeout, 'second')} (the installation's heartbeat timeout).")


@device_app.command("activate")
@handles_errors
def device_activate(org: OrgRef, installation: InstallationRef, serial: Serial, database_url: DatabaseUrl = None,
                    as_json: JsonOut = False) -> None:
    """Activate a device; after a new license the license device comes first; activating
    the connected license device of a suspended license recovers it."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        now = ctx.clock.now()
        dev = ac.activate(s, installation=inst, serial=serial, actor=console_actor(), now=now)
        suspended = ac.status_of(ac.current_license(s, inst), inst, now).state == "suspended"
        result = ac.device_to_dict(dev, now, ac.timeout_of(inst), suspended)
    _device_out(result, as_json, "activated")


@device_app.command("deactivate")
@handles_errors
def device_deactivate(org: OrgRef, installation: InstallationRef, serial: Serial, database_url: DatabaseUrl = None,
                      as_json: JsonOut = False) -> None:
    """Deactivate a device; it stops counting against the license."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        now = ctx.clock.now()
        dev = ac.deactivate(s, installation=inst, serial=serial, actor=console_actor(), now=now)
        result = ac.device_to_dict(dev, now, ac.timeout_of(inst))
    _device_out(result, as_json, "deactivated")


# --- Attendance users --------------------------------------------------------------------------

def _user_dict(user: AttendanceUser) -> dict[str, Any]:
    return {"id": user.id, "name": user.name, "monitored": user.monitored}


def _user_out(user: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(user)
    else:
        _plain(f"Attendance user {user['id']} ({user['name']}): "
               + ("monitored." if user["monitored"] else "not monitored."))


@attendance_app.command("add")
@handles_errors
def attendance_add(
    org: OrgRef, installation: InstallationRef,
    name: Annotated[str, typer.Option("--name", help="The user's name.")],
    monitored: Annotated[bool, typer.Option("--monitored", help="Monitor the user's attendance (counted).")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Add an Attendance user; with --monitored, counted against the license's Attendance users."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        user = ac.add_attendance_user(s, installation=inst, name=name, monitored=monitored, actor=console_actor(),
                                      now=ctx.clock.now())
        result = _user_dict(user)
    _user_out(result, as_json)


@attendance_app.command("list")
@handles_errors
def attendance_list(org: OrgRef, installation: InstallationRef, database_url: DatabaseUrl = None,
                    as_json: JsonOut = False) -> None:
    """The installation's Attendance users (their ids are what `attendance monitor` takes)."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        rows = [_user_dict(u) for u in ac.attendance_users_of(s, inst)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        _plain("No Attendance users yet; add them with `entitle ac attendance add`.")
        return
    table = _table("Attendance users", "id=", "name", "monitored=")
    for r in rows:
        table.add_row(str(r["id"]), escape(r["name"]), _yes(r["monitored"]))
    out.print(table)


@attendance_app.command("monitor")
@handles_errors
def attendance_monitor(
    org: OrgRef, installation: InstallationRef,
    user_id: Annotated[int, typer.Option("--user-id", help="The Attendance user's id (see `entitle ac attendance list`).")],
    off: Annotated[bool, typer.Option("--off", help="Stop monitoring instead.")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Start (or with --off stop) monitoring a user's attendance."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        user = ac.set_monitored(s, installation=inst, user_id=user_id, monitored=not off, actor=console_actor(),
                                now=ctx.clock.now())
        result = _user_dict(user)
    _user_out(result, as_json)


# --- system users ------------------------------------------------------------------------------

def _system_user_out(user: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(user)
    else:
        _plain(f"System user {user['id']} ({user['name']}): " + ("administrator." if user["admin"] else "user."))


@system_user_app.command("add")
@handles_errors
def system_user_add(
    org: OrgRef, installation: InstallationRef,
    name: Annotated[str, typer.Option("--name", help="The user's name.")],
    admin: Annotated[bool, typer.Option("--admin", help="Make the user an administrator (a tier limits them).")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Add a system user; administrators beyond the tier's limit are refused (admin_limit_reached)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        user = ac.add_system_user(s, installation=inst, name=name, admin=admin, actor=console_actor(),
                                  now=ctx.clock.now())
        result = {"id": user.id, "name": user.name, "admin": user.admin}
    _system_user_out(result, as_json)


@system_user_app.command("list")
@handles_errors
def system_user_list(org: OrgRef, installation: InstallationRef, database_url: DatabaseUrl = None,
                     as_json: JsonOut = False) -> None:
    """The installation's system users."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        rows = [{"id": u.id, "name": u.name, "admin": u.admin} for u in ac.system_users_of(s, inst)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        _plain("No system users yet; add them with `entitle ac system-user add`.")
        return
    table = _table("System users", "id=", "name", "administrator=")
    for r in rows:
        table.add_row(str(r["id"]), escape(r["name"]), _yes(r["admin"]))
    out.print(table)


@system_user_app.command("admin")
@handles_errors
def system_user_admin(
    org: OrgRef, installation: InstallationRef,
    user_id: Annotated[int, typer.Option("--user-id", help="The system user's id (see `entitle ac system-user list`).")],
    off: Annotated[bool, typer.Option("--off", help="Make the user an ordinary user instead.")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Make a system user an administrator (or with --off an ordinary user)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        user = ac.set_admin(s, installation=inst, user_id=user_id, admin=not off, actor=console_actor(),
                            now=ctx.clock.now())
        result = {"id": user.id, "name": user.name, "admin": user.admin}
    _system_user_out(result, as_json)


# --- licenses ----------------------------------------------------------------------------------

def _plan_lines(plan: dict[str, Any]) -> list[str]:
    """What a license takes from the wallet and gives back, and the devices it makes inactive."""
    need = plan["need"]
    lines = [("Default packages: what the installation needs now "
              f"({plural(need['devices'], 'registered device')}, "
              f"{plural(need['monitored_attendance_users'], 'monitored Attendance user')}), at least the current "
              "license's; name --package to take more.") if plan["default"] else "Packages as asked:"]
    for m in plan["moves"]:
        parts = []
        if m["from_wallet"]:
            parts.append(f"{m['from_wallet']:,} from the wallet")
        if m["back_to_wallet"]:
            parts.append(f"{m['back_to_wallet']:,} back from the current license")
        lines.append(f"  {_part(m)}: " + ", ".join(parts)
                     + f"; wallet {m['wallet_before']:,} → {m['wallet_after']:,}")
    lines.append(f"  license capacity: {_capacity(plan['capacity'])}")
    if plan["devices_made_inactive"]:
        lines.append("  inactive until activated again: " + ", ".join(plan["devices_made_inactive"]))
    return lines


@ac_license_app.command("generate")
@handles_errors
def license_generate(
    org: OrgRef, installation: InstallationRef,
    license_device: Annotated[str, typer.Option("--license-device", help="Serial of a connected device of the installation.")],
    package: Annotated[list[str], typer.Option(
        "--package", help="PART_NUMBER:QUANTITY (2N's or Axis's part number), repeatable. Left out: what the "
        "installation needs now for its registered devices and monitored Attendance users, at least the "
        "current license's packages.")] = [],  # noqa: B006
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only show what would move; generate nothing.")] = False,
    out_file: OutFile = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Generate a signed license for the installation; it replaces the current one whole.

    The replaced license's units go back to the wallet; the new one's come out of it (both are printed).
    Every device is then inactive until the license device is activated; the others are activated again after it.
    Without --out the license file goes to stdout (and the summary to stderr).
    --dry-run shows the same summary and changes nothing.
    """
    packages = _package_args(package)
    if dry_run:
        with context(database_url) as ctx, reading(ctx.sessions) as s:
            inst = _installation(s, org, installation)
            ac.check_license_device(s, inst, license_device, ctx.clock.now())
            plan = ac.plan_license(s, installation=inst, packages=packages, now=ctx.clock.now())
        if as_json:
            print_json({"plan": plan})
            return
        for line in [f"Dry run: a license for {license_device} would hold {_packages(plan['packages'])}."]:
            _plain(line)
        for line in _plan_lines(plan):
            _plain(line)
        _plain("Nothing was generated.")
        return

    def generate(staged: IO[str] | None) -> dict[str, Any]:
        with context(database_url) as ctx, transaction(ctx.sessions) as s:
            inst = _installation(s, org, installation)
            now = ctx.clock.now()
            made = ac.generate_license(s, installation=inst, license_device=license_device, packages=packages,
                                       actor=console_actor(), now=now, secret=ctx.secret)
            if staged is not None:  # written before the commit: a full disk generates nothing
                staged.write(made.file)
                staged.flush()
                os.fsync(staged.fileno())
            return {"license": ac.license_to_dict(made.license), "license_file": made.file, "plan": made.plan}

    if out_file is None:
        result = generate(None)
    else:
        with _staged(out_file) as staged:
            result = generate(staged)
    if as_json:
        print_json(result)
        return
    lines = _license_lines(result["license"]) + _plan_lines(result["plan"])
    lines.append(f"  It replaces the current license; activate {license_device} first.")
    if out_file is None:
        typer.echo(result["license_file"], nl=not result["license_file"].endswith("\n"))
        for line in lines:
            err.print(line, markup=False, highlight=False)
    else:
        for line in lines:
            _plain(line)
        _plain(f"License file written to {out_file}.")



@ac_license_app.command("add")
@handles_errors
def license_add(
    file: Annotated[Path, typer.Argument(help="The license file generated for this installation.", dir_okay=False)],
    org: OrgRef, installation: InstallationRef,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """License adding: read a license file and make it the installation's license.

    The file must be signed by a known key, be for this installation and one of its devices, and be newer than the current license (an older one is refused).
    It replaces the current license whole; its units come out of the wallet, the replaced license's go back.
    The current license's own file changes nothing.
    """
    text = read_text_file(file)
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        lic, added = ac.add_license_file(s, installation=inst, text=text, actor=console_actor(), now=ctx.clock.now())
        result = {"license": ac.license_to_dict(lic), "added": added}
    if as_json:
        print_json(result)
        return
    if added:
        _plain(f"ADDED: the file is now the license of installation {inst.uid}; it replaces the previous one.")
    else:
        _plain(f"UNCHANGED: the file is already the current license of installation {inst.uid}.")
    for line in _license_lines(result["license"]):
        _plain(line)
    if added:
        _plain(f"  Activate the license device {result['license']['license_device']} first, then the other devices.")


@ac_license_app.command("list")
@handles_errors
def license_list(org: OrgRef, installation: InstallationRef, database_url: DatabaseUrl = None,
                 as_json: JsonOut = False) -> None:
    """Every license the installation had, newest first; replaced ones are marked."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        rows = [ac.license_to_dict(lic) for lic in ac.licenses_of(s, inst)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        _plain("No license yet: the installation runs on the trial.")
        return
    # A license is replaced when the next one is added: its "added" time.
    table = _table("Licenses, newest first (times in UTC)", "id=", "license device=", "packages=", "capacity=",
                   "added=", "status=")
    for r in rows:
        table.add_row(str(r["id"]), escape(r["license_device"]),
                      escape("\n".join(f"{p['quantity']} × {p['part_number']}" for p in r["packages"])),
                      escape(_capacity_lines(r["capacity"])), _when(r["added_at"], short=True),
                      "replaced" if r["replaced_at"] else "current")
    out.print(table)


@ac_license_app.command("export")
@handles_errors
def license_export(
    org: OrgRef, installation: InstallationRef,
    license_id: Annotated[int, typer.Option("--id", help="The license's id (see `entitle ac license list`).")],
    out_file: OutFile = None,
    database_url: DatabaseUrl = None,
) -> None:
    """Write a license's signed file again (to stdout, or --out FILE)."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        text = ac.license_by_id(s, inst, license_id).file
    if out_file is None:
        typer.echo(text, nl=False)
    else:
        out_file.write_text(text)
        _plain(f"Wrote license {license_id} to {out_file}.")


@ac_license_app.command("check")
@handles_errors
def license_check(
    file: Annotated[Path, typer.Argument(help="The license file.", dir_okay=False)],
    org: OrgRef, installation: InstallationRef,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Check a license file for the installation (signature, subject, model) and tell which license
    it is, changing nothing; a replaced license is refused (license_replaced). `license add` adds one."""
    text = read_text_file(file)
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        lic = ac.check_license_file(s, installation=inst, text=text, actor=console_actor(), now=ctx.clock.now())
        result = ac.license_to_dict(lic)
    if as_json:
        print_json(result)
        return
    _plain(f"VALID: the current license of installation {inst.uid}.")
    for line in _license_lines(result):
        _plain(line)


# --- integration (R-AC-8) ----------------------------------------------------------------------

@ac_app.command("sync")
@handles_errors
def sync(
    org: OrgRef, installation: InstallationRef,
    source: Annotated[str, typer.Option("--source", help="ldap or csv.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Start an LDAP or CSV synchronisation: only with the integration feature."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        inst = _installation(s, org, installation)
        ac.check_integration(s, installation=inst, source=source, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json({"source": source, "allowed": True})
    else:
        _plain(f"Synchronisation from {source} is allowed: the license includes the integration feature.")
