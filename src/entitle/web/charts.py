"""Pictures for the pages: server-rendered inline SVG, no JavaScript, nothing from elsewhere.

Three kinds -- grouped bars (with an optional limit drawn as a line across them), a timeline of
spans and moments, and step lines over time. Each ``Chart`` carries its SVG (a ``<title>`` and a
``<desc>`` that says in a sentence what it shows, ``role="img"``) and the same figures as a
table: ``_chart.html``'s ``chart`` macro shows the picture with its caption and the table behind
a disclosure, for screen readers and for anyone who would rather read the numbers.

Colours come from classes styled in app.css (the Content-Security-Policy forbids inline styles);
every piece of text is escaped.
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from entitle_device.access_commander import LicenseStatus
from markupsafe import Markup, escape

from entitle.attention.organization import WalletSeries
from entitle.text import plural

WIDTH, HEIGHT = 640, 250
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 34, 42
SERIES_CLASSES = 6


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    note: str = ""


@dataclass(frozen=True, slots=True)
class Chart:
    id: str
    title: str
    summary: str
    svg: Markup
    table: Table


@dataclass(frozen=True, slots=True)
class Series:
    name: str
    values: tuple[int | None, ...]  # None: unlimited


@dataclass(frozen=True, slots=True)
class Span:
    lane: str
    start: datetime
    end: datetime
    label: str
    kind: str  # the class: connected, disconnected, protective, suspended, active, trial


@dataclass(frozen=True, slots=True)
class Mark:
    at: datetime
    label: str
    kind: str = "mark"


@dataclass(frozen=True, slots=True)
class TimeSeries:
    name: str
    points: tuple[tuple[datetime, int], ...]  # the value holds from each moment to the next


@dataclass
class _Svg:
    id: str
    title: str
    summary: str
    height: int = HEIGHT
    body: list[str] = field(default_factory=list)

    def add(self, markup: str) -> None:
        self.body.append(markup)

    def text(self, x: float, y: float, words: str, cls: str = "label", anchor: str = "middle") -> None:
        self.add(f'<text x="{x:.1f}" y="{y:.1f}" class="{cls}" text-anchor="{anchor}">{escape(words)}</text>')

    def done(self) -> Markup:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart-svg" viewBox="0 0 {WIDTH} {self.height}" '
                f'role="img" aria-labelledby="{self.id}-title {self.id}-desc" focusable="false">'
                f'<title id="{self.id}-title">{escape(self.title)}</title>'
                f'<desc id="{self.id}-desc">{escape(self.summary)}</desc>')
        return Markup(head + "".join(self.body) + "</svg>")


def _number(value: int | None) -> str:
    return "unlimited" if value is None else f"{value:,}"


def _nice_top(value: float) -> tuple[int, int]:
    """(axis top, tick step) for a largest value: 1, 2 or 5 times a power of ten per tick."""
    if value <= 0:
        return 1, 1
    raw = value / 4
    power = 10 ** math.floor(math.log10(raw)) if raw >= 1 else 1
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    step = max(1, int(step))
    top = int(math.ceil(value / step) * step)
    if top - value < step / 4:  # room above the tallest bar for its label
        top += step
    return top, step


def _y_axis(svg: _Svg, top: int, step: int, plot_h: float) -> None:
    for tick in range(0, top + 1, step):
        y = TOP + plot_h - plot_h * tick / top
        svg.add(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" class="grid"/>')
        svg.text(LEFT - 6, y + 4, f"{tick:,}", "tick", "end")


def _legend(svg: _Svg, entries: Sequence[tuple[str, str]]) -> None:
    x = LEFT
    for name, cls in entries:
        if cls == "limit":
            svg.add(f'<line x1="{x}" x2="{x + 14}" y1="13" y2="13" class="limit"/>')
        else:
            svg.add(f'<rect x="{x}" y="7" width="12" height="12" class="{cls}"/>')
        svg.text(x + 18, 17, name, "legend", "start")
        x += 28 + 7 * len(name)


def bars(id: str, title: str, summary: str, category: str, categories: Sequence[str], series: Sequence[Series],
         *, limit: Series | None = None) -> Chart:
    """Grouped bars, one group per category, one bar per series; ``limit`` is drawn as a dashed
    line across each group (the growth allowance). A value of None (unlimited) is a full-height
    bar marked "unlimited"."""
    svg = _Svg(id, title, summary)
    plot_h = HEIGHT - TOP - BOTTOM
    plot_w = WIDTH - LEFT - RIGHT
    known = [v for s in [*series, *([limit] if limit else [])] for v in s.values if v is not None]
    top, step = _nice_top(max(known, default=0))
    _y_axis(svg, top, step, plot_h)
    group = plot_w / max(1, len(categories))
    bar_w = min(56.0, group * 0.72 / max(1, len(series)))
    for i, name in enumerate(categories):
        x0 = LEFT + group * i + (group - bar_w * len(series)) / 2
        for j, s in enumerate(series):
            value = s.values[i] if i < len(s.values) else 0
            h = plot_h if value is None else plot_h * value / top
            x, y = x0 + bar_w * j, TOP + plot_h - h
            cls = f"bar s{j % SERIES_CLASSES}" + (" unlimited" if value is None else "")
            svg.add(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w - 2:.1f}" height="{max(h, 0.5):.1f}" class="{cls}">'
                    f'<title>{escape(f"{name}: {s.name} {_number(value)}")}</title></rect>')
            svg.text(x + (bar_w - 2) / 2, max(y - 4, TOP - 2), _number(value) if value is not None else "∞", "value")
        if limit is not None and i < len(limit.values) and limit.values[i] is not None:
            y = TOP + plot_h - plot_h * (limit.values[i] or 0) / top
            svg.add(f'<line x1="{LEFT + group * i + 4:.1f}" x2="{LEFT + group * (i + 1) - 4:.1f}" y1="{y:.1f}" '
                    f'y2="{y:.1f}" class="limit"><title>{escape(f"{name}: {limit.name} {limit.values[i]:,}")}'
                    '</title></line>')
        svg.text(LEFT + group * (i + 0.5), HEIGHT - BOTTOM + 16, name, "tick")
    svg.add(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" class="axis"/>')
    _legend(svg, [(s.name, f"s{j % SERIES_CLASSES}") for j, s in enumerate(series)]
            + ([(limit.name, "limit")] if limit else []))
    headers = (category, *(s.name for s in series), *((limit.name,) if limit else ()))
    rows = tuple((name, *(_number(s.values[i] if i < len(s.values) else 0) for s in series),
                  *((_number(limit.values[i]) if limit.values[i] is not None else "—",) if limit else ()))
                 for i, name in enumerate(categories))
    return Chart(id, title, summary, svg.done(), Table(headers, rows))


# --- time --------------------------------------------------------------------------------------

def _add_months(moment: datetime, months: int) -> datetime:
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


_STEPS: tuple[tuple[str, int], ...] = (("hour", 1), ("hour", 6), ("day", 1), ("day", 7), ("month", 1), ("month", 3),
                                       ("month", 12))


def _ticks(start: datetime, end: datetime, most: int = 6) -> tuple[list[datetime], str]:
    """Moments at round boundaries between start and end, and the format to label them."""
    span = end - start
    for unit, n in _STEPS:
        size = timedelta(hours=n) if unit == "hour" else timedelta(days=n) if unit == "day" else timedelta(days=30 * n)
        if span / size <= most:
            break
    if unit == "hour":
        first = start.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
        ticks = [first + timedelta(hours=n * k) for k in range(most + 2)]
        fmt = "%m-%d %H:%M"
    elif unit == "day":
        first = start.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
        ticks = [first + timedelta(days=n * k) for k in range(most + 2)]
        fmt = "%Y-%m-%d"
    else:
        first = _add_months(start.replace(day=1, hour=0, minute=0, second=0, microsecond=0), 1)
        ticks = [_add_months(first, n * k) for k in range(most + 2)]
        fmt = "%Y" if n == 12 else "%Y-%m"
    return [t for t in ticks if start <= t <= end], fmt


def _x(at: datetime, start: datetime, end: datetime) -> float:
    total = (end - start).total_seconds() or 1.0
    return LEFT + (WIDTH - LEFT - RIGHT) * max(0.0, min(1.0, (at - start).total_seconds() / total))


def _anchor(x: float) -> str:
    """Labels near an edge grow inwards, so that none is cut off."""
    return "end" if x > WIDTH - RIGHT - 36 else "start" if x < LEFT + 36 else "middle"


def _stamp(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC")


def timeline(id: str, title: str, summary: str, start: datetime, end: datetime, spans: Sequence[Span],
             marks: Sequence[Mark] = ()) -> Chart:
    """Spans on lanes (one lane per name, in the order first seen) over time, and moments marked
    across all lanes (now, a deadline)."""
    lanes = list(dict.fromkeys(s.lane for s in spans))
    lane_h = 30
    height = TOP + lane_h * max(1, len(lanes)) + BOTTOM + 14
    svg = _Svg(id, title, summary, height)
    left = LEFT + 70
    plot_bottom = TOP + lane_h * len(lanes)

    def x(at: datetime) -> float:
        return left + (WIDTH - left - RIGHT) * max(0.0, min(1.0, (at - start).total_seconds()
                                                           / ((end - start).total_seconds() or 1.0)))

    for i, lane in enumerate(lanes):
        svg.text(left - 6, TOP + lane_h * i + 19, lane, "tick", "end")
    for s in spans:
        i = lanes.index(s.lane)
        x1, x2 = x(s.start), x(s.end)
        svg.add(f'<rect x="{x1:.1f}" y="{TOP + lane_h * i + 4}" width="{max(x2 - x1, 1.5):.1f}" height="{lane_h - 8}" '
                f'class="span span-{escape(s.kind)}"><title>{escape(f"{s.label}: {_stamp(s.start)} – {_stamp(s.end)}")}'
                '</title></rect>')
        if x2 - x1 > 7 * len(s.label) + 8:
            svg.text((x1 + x2) / 2, TOP + lane_h * i + 19, s.label, "span-label")
    ticks, fmt = _ticks(start, end)
    for t in ticks:
        svg.add(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{TOP}" y2="{plot_bottom}" class="grid"/>')
        svg.text(x(t), plot_bottom + 16, t.strftime(fmt), "tick", _anchor(x(t)))
    for k, m in enumerate(marks):
        mx = x(m.at)
        svg.add(f'<line x1="{mx:.1f}" x2="{mx:.1f}" y1="{TOP - 6}" y2="{plot_bottom + 2}" '
                f'class="mark mark-{escape(m.kind)}"><title>{escape(f"{m.label}: {_stamp(m.at)}")}</title></line>')
        anchor = "end" if mx > WIDTH - 120 else "start"
        # Labels alternate above and below the lanes, so that two close moments stay readable.
        svg.text(mx + (-4 if anchor == "end" else 4), plot_bottom + 32 if k % 2 else TOP - 10, m.label,
                 "mark-label", anchor)
    rows = tuple((s.lane, s.label, _stamp(s.start), _stamp(s.end)) for s in spans)
    rows += tuple(("", m.label, _stamp(m.at), "") for m in marks)
    return Chart(id, title, summary, svg.done(), Table(("Lane", "What", "From", "Until"), rows))


def step_lines(id: str, title: str, summary: str, series: Sequence[TimeSeries], *, unit: str, now: datetime,
               table_rows: int = 40) -> Chart:
    """Values over time as step lines (each value holds until the next), one line per series."""
    svg = _Svg(id, title, summary)
    moments = sorted({at for s in series for at, _ in s.points})
    start, end = (moments[0], moments[-1]) if moments else (now, now)
    if start == end:
        start -= timedelta(days=1)
    plot_h = HEIGHT - TOP - BOTTOM
    top, step = _nice_top(max((v for s in series for _, v in s.points), default=0))
    _y_axis(svg, top, step, plot_h)

    def y(value: int) -> float:
        return TOP + plot_h - plot_h * max(0, value) / top

    for j, s in enumerate(series):
        if not s.points:
            continue
        d = f"M{_x(s.points[0][0], start, end):.1f},{y(s.points[0][1]):.1f}"
        for (_at, value), (next_at, next_value) in zip(s.points, s.points[1:]):
            d += f" H{_x(next_at, start, end):.1f} V{y(next_value):.1f}"
        svg.add(f'<path d="{d}" class="line s{j % SERIES_CLASSES}"><title>{escape(s.name)}</title></path>')
        last_at, last = s.points[-1]
        svg.add(f'<circle cx="{_x(last_at, start, end):.1f}" cy="{y(last):.1f}" r="3" '
                f'class="dot s{j % SERIES_CLASSES}"/>')
    ticks, fmt = _ticks(start, end)
    for t in ticks:
        svg.text(_x(t, start, end), HEIGHT - BOTTOM + 16, t.strftime(fmt), "tick", _anchor(_x(t, start, end)))
    svg.add(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{TOP + plot_h}" y2="{TOP + plot_h}" class="axis"/>')
    _legend(svg, [(s.name, f"s{j % SERIES_CLASSES}") for j, s in enumerate(series)])
    # The table: the value of every series after each moment one of them changed, newest first.
    values: list[int] = [0] * len(series)
    at_moment: list[tuple[datetime, tuple[int, ...]]] = []
    by_moment = [{at: v for at, v in s.points} for s in series]
    for at in moments:
        for j, points in enumerate(by_moment):
            if at in points:
                values[j] = points[at]
        at_moment.append((at, tuple(values)))
    shown = at_moment[::-1][:table_rows]
    note = f"The {table_rows} latest changes of {len(at_moment)}." if len(at_moment) > table_rows else ""
    rows = tuple((_stamp(at), *(f"{v:,}" for v in vs)) for at, vs in shown)
    return Chart(id, title, summary, svg.done(), Table(("When", *(f"{s.name} ({unit})" for s in series)), rows, note))


# --- the pictures the pages show ---------------------------------------------------------------

def _day(value: str | datetime) -> str:
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).strftime("%Y-%m-%d")


def axis_need(st: Mapping[str, Any], license_type: str) -> Chart:
    """AXIS: one license type's need against what is allocated, per subscription year (the
    current one and the five ahead, R-AX-5), with the growth allowance (twice the allocation,
    R-AX-9) as a line; from ``axis.services.status``."""
    years = st["years"]
    name = license_type.replace("_", " ").capitalize()
    counts = [y["license_types"][license_type] for y in years]
    need = tuple(int(c["need"]) for c in counts)
    allocated = tuple(int(c["allocated"]) for c in counts)
    ahead = sum(1 for c in counts[1:] if c["missing"] == 0)
    summary = (f"The current subscription year needs {plural(need[0], name + ' license')} and has {allocated[0]:,} "
               f"allocated; {ahead} of the {len(years) - 1} years ahead {'is' if ahead == 1 else 'are'} fully licensed."
               if years else "No subscription year yet.")
    return bars(f"chart-need-{license_type}", f"{name} licenses: need and allocated per subscription year", summary,
                "Subscription year starting", [_day(y["start"]) for y in years],
                [Series("Need", need), Series("Allocated", allocated)],
                limit=Series("Growth allowance (twice the allocated)", tuple(2 * a if a else None for a in allocated)))


def axis_lots_by_expiry(lots: Sequence[Mapping[str, Any]], now: datetime) -> Chart | None:
    """AXIS: the product wallet's licenses by the month they expire unless allocated (R-AX-4)."""
    if not lots:
        return None
    ordered = sorted(lots, key=lambda lot: str(lot["expires_at"]))
    by_month: dict[str, int] = {}
    for lot in ordered:
        month = str(lot["expires_at"])[:7]
        by_month[month] = by_month.get(month, 0) + int(lot["units"])
    months = list(by_month)[:12]
    first = ordered[0]
    summary = (f"{plural(sum(by_month.values()), 'license')} in the wallet; the first {int(first['units']):,} "
               f"expire on {_day(first['expires_at'])} unless allocated.")
    return bars("chart-lots", "Wallet licenses by the month they expire", summary, "Expires in", months,
                [Series("Licenses", tuple(by_month[m] for m in months))])


def ac_required_owned(device_counts: Mapping[str, Any], attendance_counts: Mapping[str, Any]) -> Chart:
    """Access Commander: devices and Attendance users, required against owned (R-AC-3)."""
    req = (int(device_counts["required"] or 0), int(attendance_counts["required"] or 0))
    owned = (device_counts["owned"], attendance_counts["owned"])
    summary = (f"Devices: {req[0]:,} required, {_number(owned[0])} owned. "
               f"Attendance users: {req[1]:,} required, {_number(owned[1])} owned.")
    return bars("chart-required-owned", "Required and owned", summary, "Licensed for",
                ["Devices", "Attendance users"], [Series("Required", req), Series("Owned", owned)])


def _duration(delta: timedelta) -> str:
    if delta < timedelta(minutes=1):
        return "under a minute"
    hours, minutes = int(delta.total_seconds() // 3600), int(delta.total_seconds() // 60) % 60
    return f"{hours // 24} d {hours % 24} h" if hours >= 24 else f"{hours} h {minutes} min"


def ac_connection(license_added_at: datetime, status: LicenseStatus, now: datetime) -> Chart:
    """Access Commander: the license device's connection since the license was added, and the
    protective period running out (R-AC-5, R-AC-6); from the device library's LicenseStatus.
    The record keeps the connected time in all, not each interval: the picture shows it as one."""
    disconnected, until, suspended = status.disconnected_at, status.protective_until, status.suspended_at
    connected = _duration(status.connected_time)
    end = max(now, until or now)
    end = end + max((end - license_added_at) * 0.04, timedelta(minutes=5))
    spans = []
    if disconnected is None:
        spans += [Span("License device", license_added_at, now, "connected", "connected"),
                  Span("License", license_added_at, now, "active", "active")]
    else:
        spans += [Span("License device", license_added_at, disconnected, f"connected {connected} in all", "connected"),
                  Span("License device", disconnected, now, "disconnected", "disconnected"),
                  Span("License", license_added_at, disconnected, "active", "active")]
        if until is not None:
            spans.append(Span("License", disconnected, min(until, end), "protective period", "protective"))
        if suspended is not None:
            spans.append(Span("License", suspended, max(now, suspended), "suspended", "suspended"))
    marks = [Mark(now, "now", "now")]
    if until is not None and suspended is None:
        marks.append(Mark(until, "protective period ends", "deadline"))
    if status.state == "protective" and disconnected is not None and until is not None:
        summary = (f"The license device was connected {connected} in all since the license was added and is "
                   f"disconnected since {_stamp(disconnected)}; the protective period runs out at {_stamp(until)}, "
                   "then every device becomes inactive.")
    elif status.state == "suspended":
        ran_out = suspended or until
        summary = (f"The protective period ran out{' at ' + _stamp(ran_out) if ran_out else ''}: the license is "
                   "suspended and every device is inactive.")
    else:
        summary = (f"The license device is connected; it was connected {connected} in all since the license was added "
                   f"on {_stamp(license_added_at)}.")
    return timeline("chart-connection", "The license device's connection", summary, license_added_at, end, spans,
                    marks)


def my2n_paid_through(rows: Sequence[Mapping[str, Any]], stopped: Sequence[str], now: datetime) -> Chart | None:
    """My2N: the apartments that need a license by the month they are paid through -- what
    lapses when (R-MY-6); those not paid (never, or lapsed) first."""
    needing = [r for r in rows if r["needs_license"]]
    if not needing:
        return None
    gone = set(stopped)
    buckets: dict[str, int] = {"Not paid": 0}
    for r in sorted(needing, key=lambda r: str(r["paid_through"] or "")):
        key = "Not paid" if r["name"] in gone or not r["paid_through"] else str(r["paid_through"])[:7]
        buckets[key] = buckets.get(key, 0) + 1
    if not buckets["Not paid"]:
        del buckets["Not paid"]
    months = list(buckets)
    if len(months) > 10:
        buckets["Later"] = sum(buckets[m] for m in months[9:])
        months = months[:9] + ["Later"]
    soonest = next((m for m in months if m != "Not paid"), None)
    summary = (f"{plural(len(needing), 'apartment')} need a license: {buckets.get('Not paid', 0):,} not paid"
               + (f"; the next {buckets[soonest]:,} paid through {soonest}." if soonest else "."))
    return bars("chart-paid-through", "Apartments by the month they are paid through", summary, "Paid through",
                months, [Series("Apartments", tuple(buckets[m] for m in months))])


def my2n_billable(apartments: int, needing: int) -> Chart:
    """My2N: apartments that need a license (a paid device not in local mode) and those that do
    not (R-MY-3)."""
    summary = f"{needing:,} of {plural(apartments, 'apartment')} need a license; {apartments - needing:,} need none."
    return bars("chart-billable", "Billable and free apartments", summary, "Apartments",
                ["Need a license", "Need none"], [Series("Apartments", (needing, apartments - needing))])


def wallet_over_time(series: Sequence[WalletSeries], now: datetime) -> Chart | None:
    """The organization: units in the wallet per product over time, from the ledger (R-CORE-5)."""
    shown = [TimeSeries(s.product, s.points) for s in series]
    if not shown:
        return None
    now_units = ", ".join(f"{s.name} {s.points[-1][1]:,}" for s in shown)
    return step_lines("chart-wallet", "Units in the wallet per product over time",
                      f"Units in the wallet now: {now_units}.", shown, unit="units", now=now)
