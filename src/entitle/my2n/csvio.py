"""A site's apartments and devices as CSV (issue 6): export, and import all or nothing.

The format (UTF-8, comma-separated; a file saved with semicolons by a spreadsheet is read too)::

    apartment,serial,kind,local_mode
    ,IC-0001,intercom,false          <- a device outside every apartment (intercoms always)
    1A,PH-0001,phone,false           <- a device in apartment 1A
    1A,AU-0001,answering_unit,false
    1B,,,                            <- apartment 1B, empty

- ``apartment``: the apartment's name (1 … 200 characters); empty for a device outside every
  apartment.
- ``serial``: the device's serial number or name (1 … 128 characters), unique among the
  organization's sites (a device is on one site at a time); empty on an apartment-only row (an
  apartment without devices).
- ``kind``: intercom, answering_unit, phone, tablet or third_party (``services.KINDS``).
- ``local_mode``: true/false (also yes/no, 1/0; empty is false).

Export writes one row per device, and one apartment-only row per apartment without devices:
devices outside apartments first (by serial), then the apartments in the order they were
created, each with its devices by serial. A cell that a spreadsheet would take for a formula
(it starts with ``=``, ``+``, ``-`` or ``@``) or that starts with ``'`` is written with a
leading ``'``, which import takes off again: the file opens safely and reads back the same.

Import reads the same format into a site. The header row names the columns (any order;
``local_mode`` may be left out). Every row is checked before anything is written, against the
file and against what the site already holds; if any row is refused, ``csv_invalid`` (422)
lists each problem in ``detail.rows`` (``row``: its line in the file, the header being 1;
``column``; ``code``; ``message``; the numbers involved), the first 1,000 of them
(``detail.problems`` counts them all), and nothing is written. Otherwise, in the caller's
transaction, apartments not on the site are created and devices added, through
``entitle.my2n.services`` (so each change is checked again there and written to history, with
one ``my2n.site.imported`` entry for the file). A row may name what the site
already has: an existing apartment is used as it is; a device already on the site with the
same kind is left where it is if the row puts it in the same apartment, and assigned if it is
outside every apartment and the row names one (the migration of R-MY-4); its local mode is set
to the row's. Import never moves a device out of an apartment or between apartments, never
changes a device's kind, and removes nothing. Checks per row, in this order:

- ``row_invalid``: more cells than the header has columns;
- ``text_control_characters``: a control character in a cell (a tab or line break inside a value,
  a text-direction control: ``entitle.text``), with ``detail.character`` and ``position``;
- ``name_invalid``: an apartment name over 200 characters;
- ``serial_invalid``: a serial over 128 characters; ``serial_required``: a kind or local mode
  without a serial;
- ``device_kind_invalid``, ``local_mode_invalid``: a value outside the allowed ones;
- ``serial_duplicate``: the serial is on an earlier row (``detail`` names it);
- ``device_exists``: the serial is on the site already with another kind, or in another apartment
  (or in one, while the row names none);
- ``device_on_other_site``: the serial is on another site of the organization (``detail.site``
  names it): a device belongs to one site at a time (issue 14 point 9);
- ``intercom_not_in_apartment``: an intercom with an apartment;
- ``apartment_paid_device_limit`` (R-MY-2): the row would put a fifth paid device (phone, tablet,
  third-party) in the apartment, counting the devices it already holds and the earlier rows.

Problems of the file as a whole: ``encoding_invalid`` (not UTF-8), ``header_missing``,
``column_missing`` / ``column_unknown`` / ``column_duplicate`` (on row 1), ``csv_malformed`` (an
unclosed quote), ``csv_too_large`` (over 200,000 rows).

Export is for every member of the organization; import for company admins and the site's
admins (``access.require_site_admin``), as creating apartments and assigning devices are.

Statements per row are bounded: the site's apartments and devices, and the serials on the
organization's other sites, are read once (three queries) for the checks, then each row costs
what its service call costs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.errors import EntitleError
from entitle.history import services as history
from entitle.my2n import access, rules
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, Site, SiteDevice
from entitle.text import CONTROL_CHARACTERS, control_character, control_message, plural

COLUMNS: tuple[str, ...] = ("apartment", "serial", "kind", "local_mode")
REQUIRED: frozenset[str] = frozenset({"apartment", "serial", "kind"})
MAX_ROWS = 200_000  # the largest site of the benchmark (50,000 apartments, 150,000 devices) fits
MAX_REPORTED = 1_000  # problems listed in detail.rows; detail.problems counts them all
# The services' own limits (services._name and add_device), checked here before any write.
MAX_NAME = my2n.NAME_MAX
MAX_SERIAL = my2n.SERIAL_MAX
MAX_BYTES = 64 * 1024 * 1024  # an upload of the largest file (200,000 rows of long names and serials)
TRUE = frozenset({"true", "yes", "y", "1"})
FALSE = frozenset({"false", "no", "n", "0", ""})
_FORMULA = ("=", "+", "-", "@")

Progress = Callable[[int, int], None]  # (rows written, rows in all)


# --- export --------------------------------------------------------------------------------------

def _cell(value: str) -> str:
    """A cell a spreadsheet shows as text: a leading ``'`` before a formula-like value (and before
    a value that starts with ``'`` itself, so that import can always take exactly one off)."""
    return "'" + value if value.startswith((*_FORMULA, "'")) else value


def _uncell(value: str) -> str:
    return value[1:] if value.startswith("'") and value[1:].startswith((*_FORMULA, "'")) else value


def _flag(value: bool) -> str:
    return "true" if value else "false"


def export_rows(session: Session, site: Site) -> Iterator[list[str]]:
    """The header and the site's rows, as written to the file (two queries)."""
    apartments = my2n.apartments_of(session, site)
    by_apartment: dict[int | None, list[SiteDevice]] = {}
    for d in my2n.devices_of(session, site):  # by serial
        by_apartment.setdefault(d.apartment_id, []).append(d)
    yield list(COLUMNS)
    for d in by_apartment.get(None, []):
        yield ["", _cell(d.serial), d.kind, _flag(d.local_mode)]
    for apt in apartments:
        devices = by_apartment.get(apt.id, [])
        if not devices:
            yield [_cell(apt.name), "", "", ""]
        for d in devices:
            yield [_cell(apt.name), _cell(d.serial), d.kind, _flag(d.local_mode)]


def export_csv(session: Session, site: Site, *, actor: Actor) -> str:
    """The site's apartments and devices as CSV text (see the module's docstring)."""
    actor.require_member(site.org_id)
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\r\n").writerows(export_rows(session, site))
    return buffer.getvalue()


# --- reading a file ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Row:
    """One data row of the file, checked: ``serial`` empty on an apartment-only row."""

    number: int
    apartment: str
    serial: str
    kind: str
    local_mode: bool


@dataclass
class Refusals:
    rows: list[dict[str, Any]] = field(default_factory=list)
    count: int = 0
    total_rows: int = 0  # data rows in the file, refused or not

    def add(self, row: int, column: str | None, code: str, message: str, **detail: Any) -> None:
        self.count += 1
        if len(self.rows) < MAX_REPORTED:
            self.rows.append({"row": row, "column": column, "code": code, "message": message, **detail})

    def raise_if_any(self) -> None:
        if not self.count:
            return
        self.rows.sort(key=lambda p: p["row"] or 0)  # the file's own checks, then the site's: in file order
        shown = f"; the first {len(self.rows):,} are listed" if self.count > len(self.rows) else ""
        first = self.rows[0]
        where = f"row {first['row']}" + (f", {first['column']}" if first["column"] else "")
        raise EntitleError("csv_invalid", f"The file has {plural(self.count, 'problem')}{shown}; nothing was imported. "
                           f"First, {where}: {first['message']} Correct the file and import it again.",
                           status=422, rows=self.rows, problems=self.count, total_rows=self.total_rows)


def _text(data: bytes | str) -> str:
    if isinstance(data, str):
        return data.removeprefix("\ufeff")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise EntitleError("csv_invalid", f"The file is not UTF-8 text (byte {exc.start + 1}); save it as CSV "
                           "UTF-8 and import it again.", status=422, problems=1, total_rows=0,
                           rows=[{"row": None, "column": None, "code": "encoding_invalid",
                                  "message": "The file is not UTF-8 text."}]) from None


def _delimiter(text: str) -> str:
    """A comma, unless the header line has semicolons and no comma (a spreadsheet's "CSV" in
    locales where the comma is the decimal separator)."""
    header = text.split("\n", 1)[0]
    return ";" if ";" in header and "," not in header else ","


def _boolean(value: str) -> bool | None:
    v = value.lower()
    return True if v in TRUE else False if v in FALSE else None


def parse(data: bytes | str) -> list[Row]:
    """The file's rows, each checked on its own (format, lengths, kinds, serials twice in the
    file); raises ``csv_invalid`` listing every refused row. Blank lines are skipped."""
    rows, refusals = _read(data)
    refusals.raise_if_any()
    return rows


def _read(data: bytes | str) -> tuple[list[Row], Refusals]:
    """The rows that pass the checks of ``parse``, and the problems of the others."""
    text = _text(data)
    refusals = Refusals()
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_delimiter(text), strict=True)
    columns: list[str] | None = None
    rows: list[Row] = []
    first_seen: dict[str, int] = {}
    try:
        for cells in reader:
            number = reader.line_num
            if not any(c.strip() for c in cells):
                continue
            if columns is None:
                columns = _header(cells, number, refusals)
                if refusals.count:
                    break
                continue
            if refusals.total_rows >= MAX_ROWS:
                refusals.add(number, None, "csv_too_large", f"A file holds at most {MAX_ROWS:,} rows; split it.")
                break
            refusals.total_rows += 1
            row = _row(columns, cells, number, refusals)
            if row is None:
                continue
            if row.serial:
                if row.serial in first_seen:
                    refusals.add(number, "serial", "serial_duplicate",
                                 f"Serial {row.serial} is already on row {first_seen[row.serial]}.",
                                 serial=row.serial, first_row=first_seen[row.serial])
                    continue
                first_seen[row.serial] = number
            rows.append(row)
    except csv.Error as exc:
        refusals.add(reader.line_num, None, "csv_malformed", f"The CSV cannot be read here: {exc}.")
    if columns is None and not refusals.count:
        refusals.add(1, None, "header_missing", "The file is empty: write the header row "
                     f"{','.join(COLUMNS)} and one row per device or apartment.")
    return rows, refusals


def _header(cells: list[str], number: int, refusals: Refusals) -> list[str]:
    columns = [c.strip().lower() for c in cells]
    for i, c in enumerate(columns):
        if c not in COLUMNS:
            refusals.add(number, c, "column_unknown", f"Unknown column {c!r}: the columns are {', '.join(COLUMNS)}.",
                         allowed=list(COLUMNS))
        elif c in columns[:i]:
            refusals.add(number, c, "column_duplicate", f"Column {c} is named twice.")
    for c in sorted(REQUIRED - set(columns)):
        refusals.add(number, c, "column_missing", f"The header has no column {c}: write the header row "
                     f"{','.join(COLUMNS)}.")
    return columns


def _row(columns: list[str], cells: list[str], number: int, refusals: Refusals) -> Row | None:
    before = refusals.count
    if len(cells) > len(columns):
        refusals.add(number, None, "row_invalid", f"The row has {len(cells)} cells, the header {len(columns)} "
                     "columns.", cells=len(cells), columns=len(columns))
        return None
    values = dict.fromkeys(COLUMNS, "")
    for name, cell in zip(columns, cells, strict=False):
        found = control_character(cell.strip())
        if found is not None:  # the services' rule for names and serials (entitle.text.single_line)
            refusals.add(number, name, CONTROL_CHARACTERS, control_message("cell", found),
                         character=found.code_point, position=found.position)
        values[name] = _uncell(cell.strip())
    apartment, serial, kind = values["apartment"], values["serial"], values["kind"]
    if len(apartment) > MAX_NAME:
        refusals.add(number, "apartment", "name_invalid", f"An apartment name is 1 to {MAX_NAME} characters.")
    if len(serial) > MAX_SERIAL:
        refusals.add(number, "serial", "serial_invalid", f"A device serial number (or name) is 1 to {MAX_SERIAL} "
                     "characters.")
    elif not serial and (kind or values["local_mode"]):
        refusals.add(number, "serial", "serial_required", "A row with a kind or a local mode names its device: "
                     "give its serial number (leave kind and local_mode empty for an apartment without devices).")
    if serial and kind not in my2n.KINDS:
        refusals.add(number, "kind", "device_kind_invalid",
                     f"A device is one of: {', '.join(my2n.KINDS)}" + (f" (not {kind!r})." if kind else "."),
                     kind=kind, allowed=list(my2n.KINDS))
    local_mode = _boolean(values["local_mode"])
    if local_mode is None:
        refusals.add(number, "local_mode", "local_mode_invalid",
                     f"local_mode is true or false (yes/no, 1/0), not {values['local_mode']!r}.")
    if refusals.count > before:
        return None
    return Row(number, apartment, serial, kind, bool(local_mode))


# --- import --------------------------------------------------------------------------------------

# What a row does: add a device, assign one of the site's, set a device's local mode, keep a
# device as it is, or only name an apartment.
Step = Literal["add", "assign", "local_mode", "keep", "apartment"]


def _plan(rows: list[Row], apartments: dict[str, Apartment], devices: dict[str, SiteDevice],
          refusals: Refusals, elsewhere: Mapping[str, tuple[int, str]] | None = None) -> list[tuple[Row, Step]]:
    """What each row does to the site, every row checked against the site, the serials on the
    organization's other sites (``elsewhere``: serial to site id and name) and the earlier rows;
    the problems go to ``refusals``."""
    elsewhere = elsewhere or {}
    steps: list[tuple[Row, Step]] = []
    names = {a.id: a.name for a in apartments.values()}
    # The devices of each apartment (the site's, then the file's), as the rules see them.
    held: dict[str, list[rules.Device]] = {}
    for d in devices.values():
        if d.apartment_id is not None:
            held.setdefault(names[d.apartment_id], []).append(my2n.rule_device(d))
    for row in rows:
        if not row.serial:
            steps.append((row, "apartment"))
            continue
        existing = devices.get(row.serial)
        step: Step
        if existing is None and row.serial in elsewhere:
            other = my2n.on_other_site(row.serial, *elsewhere[row.serial])
            refusals.add(row.number, "serial", other.code, other.message, **other.detail)
            continue
        if existing is None:
            step, device = "add", rules.Device(-row.number, row.kind, None, row.local_mode)  # type: ignore[arg-type]
        else:
            where = names[existing.apartment_id] if existing.apartment_id is not None else None
            if existing.kind != row.kind or (where is not None and where != row.apartment):
                now_in = f"in apartment {where}" if where is not None else "outside every apartment"
                refusals.add(row.number, "serial", "device_exists",
                             f"Device {row.serial} is already on this site, a {existing.kind} {now_in}; import "
                             "neither changes a device's kind nor moves it out of its apartment: correct the row, "
                             "or move the device first.", serial=row.serial, kind=existing.kind, apartment=where)
                continue
            if where is None and row.apartment:
                step = "assign"
            else:
                step = "local_mode" if existing.local_mode != row.local_mode else "keep"
            device = my2n.rule_device(existing)
        if row.apartment and step in ("add", "assign"):
            try:
                rules.check_assignment(device, held.get(row.apartment, []))  # R-MY-2
            except EntitleError as exc:
                column = "kind" if exc.code == "intercom_not_in_apartment" else "apartment"
                detail = {k: v for k, v in exc.detail.items() if k != "device_id"}
                refusals.add(row.number, column, exc.code, exc.message, apartment=row.apartment, **detail)
                continue
            held.setdefault(row.apartment, []).append(device)
        steps.append((row, step))
    return steps


def import_csv(session: Session, *, site: Site, data: bytes | str, actor: Actor, now: datetime,
               progress: Progress | None = None) -> dict[str, Any]:
    """Import the file into the site, in the caller's transaction, all or nothing (see the
    module's docstring); the counts of what changed. ``progress(done, total)`` is called as the
    rows are written (a progress bar; the checks before take a small part of the time)."""
    access.require_site_admin(session, actor, site)  # it creates apartments and assigns devices
    rows, refusals = _read(data)
    history.lock_organization(session, site.org_id)  # what is checked below stays true until commit
    apartments = {a.name: a for a in my2n.apartments_of(session, site)}
    devices = {d.serial: d for d in my2n.devices_of(session, site)}
    steps = _plan(rows, apartments, devices, refusals, my2n.serials_elsewhere(session, site))
    refusals.raise_if_any()

    counts = dict.fromkeys(("apartments_created", "devices_added", "devices_assigned", "local_mode_changed"), 0)
    for done, (row, step) in enumerate(steps, start=1):
        try:
            if row.apartment and row.apartment not in apartments:
                apartments[row.apartment] = my2n.create_apartment(session, site=site, name=row.apartment,
                                                                  actor=actor, now=now)
                counts["apartments_created"] += 1
            apartment_id = apartments[row.apartment].id if row.apartment else None
            if step == "add":
                my2n.add_device(session, site=site, serial=row.serial, kind=row.kind, apartment_id=apartment_id,
                                local_mode=row.local_mode, actor=actor, now=now)
                counts["devices_added"] += 1
            elif step == "assign":
                my2n.assign_device(session, site=site, serial=row.serial, apartment_id=apartment_id, actor=actor,
                                   now=now)
                counts["devices_assigned"] += 1
            if step in ("assign", "local_mode") and devices[row.serial].local_mode != row.local_mode:
                my2n.set_local_mode(session, site=site, serial=row.serial, local_mode=row.local_mode, actor=actor,
                                    now=now)
                counts["local_mode_changed"] += 1
        except EntitleError as exc:
            # A service refused what the checks let through (they are meant to agree): the caller's
            # transaction rolls back what the earlier rows wrote, as for any refused row.
            raise EntitleError("csv_invalid", f"Row {row.number} was refused ({exc.message}), so nothing was "
                               "imported.", status=422, problems=1, total_rows=len(rows),
                               rows=[{"row": row.number, "column": None, "code": exc.code, "message": exc.message,
                                      **exc.detail}]) from exc
        if progress:
            progress(done, len(steps))
    result = {"site": site.id, "rows": len(rows), **counts}
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site.imported",
                   object_type="my2n_site", object_id=site.id, after=result)
    return result
