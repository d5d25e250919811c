"""``make bench-my2n``: the My2N site dashboard of a site with 50,000 apartments and 150,000 devices.

    python -m bench.run my2n [--apartments 50000] [--devices 150000] [--steps 1000,5000]
                             [--repeats 7] [--old-repeats 3] [--old-full] [--noise-orgs 20]
                             [--databases sqlite,postgresql] [--postgres-url URL] [--keep]

One organization (through the services) with a site of ``--apartments`` apartments and
``--devices`` devices, and smaller sites of ``--steps`` apartments (three devices each) beside
it; ``--noise-orgs`` other organizations with a 10,000-apartment site each in the same tables.
Apartments and devices are inserted in bulk (``COPY`` on PostgreSQL, ``executemany`` on SQLite),
then ``VACUUM ANALYZE``/``ANALYZE``. The device mix: 1 % intercoms (outside every apartment),
the rest in apartments of 0 to 6 devices (2N answering units, phones, tablets, third-party
devices, never more than 4 paid ones), 10 % of the paid ones in local mode; paid-through never
(10 %) or spread from 60 days before the moment measured to a year after it.

For each site it times, warm (2 calls first) and repeated (median), a request's worth of work:
a read-only transaction that loads the site and computes the dashboard, with
``entitle.my2n.board.dashboard`` (one grouped statement) and with the old
``entitle.my2n.board.reference_dashboard`` (every apartment and device row, then ``rules.dashboard``,
which scans the device list once per apartment: quadratic). The old one is timed on the step
sites only, unless ``--old-full`` (one call of some minutes per database at 50,000 apartments).
It checks the board against the counts it inserted and, where both ran, the two results
against each other; shows the board statement's plan; and measures what the answer weighs
(``rows`` as JSON). Writes every figure to ``bench/results/my2n-<UTC time>.json``;
docs/benchmarks.md ("My2N: the site dashboard") says what they mean.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import Engine, event, make_url, text  # noqa: E402

from bench import databases  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)

POSTGRES_URL = os.environ.get("ENTITLE_BENCH_MY2N_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/entitle_bench_my2n")
T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)  # the sites, apartments and devices were created then
NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)  # the moment the dashboard is read

INTERCOMS = 0.01  # of the devices, outside every apartment
LOCAL_MODE = 0.10  # of the paid devices
NEVER_PAID = 0.10  # of the apartments
PAID_FROM, PAID_TO = NOW - timedelta(days=60), NOW + timedelta(days=365)  # the others' paid-through
NOISE_APARTMENTS = 10_000  # per other organization's site, 3 devices each


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run my2n", description=__doc__.split("\n\n")[0])
    p.add_argument("--apartments", type=int, default=50_000, help="apartments of the large site (default 50,000)")
    p.add_argument("--devices", type=int, default=150_000, help="devices of the large site (default 150,000)")
    p.add_argument("--steps", default="1000,5000",
                   help="apartments of the smaller sites beside it, 3 devices each, where the old dashboard is "
                        "timed too (default 1000,5000)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls of the board, after 2 warm-up calls")
    p.add_argument("--old-repeats", type=int, default=3, help="timed calls of the old dashboard per step site")
    p.add_argument("--old-full", action="store_true",
                   help="also time the old dashboard on the large site: one call, no warm-up (it is quadratic)")
    p.add_argument("--noise-orgs", type=int, default=20,
                   help=f"other organizations, each with a site of {NOISE_APARTMENTS:,} apartments (default 20)")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--postgres-url", default=POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (created, then dropped; never 'test'); "
                        "also ENTITLE_BENCH_MY2N_POSTGRES_URL")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database afterwards")
    args = p.parse_args(argv)
    try:
        args.steps = [int(n.replace("_", "")) for n in args.steps.split(",") if n.strip()]
    except ValueError:
        p.error("--steps: comma-separated whole numbers, e.g. 1000,5000")
    if any(n < 1 for n in args.steps):
        p.error("--steps must be positive")
    if args.apartments < 1 or args.devices < 1:
        p.error("--apartments and --devices must be positive")
    if args.devices > args.apartments * 6:
        p.error("at most 6 devices an apartment: raise --apartments or lower --devices")
    if args.repeats < 1 or args.old_repeats < 1 or args.noise_orgs < 0:
        p.error("--repeats and --old-repeats must be at least 1, --noise-orgs 0 or more")
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.databases) - {"sqlite", "postgresql"}:
        p.error("use sqlite and/or postgresql")
    if make_url(args.postgres_url).database in (None, "", "test"):
        p.error("--postgres-url must name the benchmark's own database (it is dropped), not the test suite's 'test'")
    return args


# --- the sites -----------------------------------------------------------------------------------------

@dataclass
class Expected:
    """What the dashboard must count, worked out while generating the rows."""

    apartments: int = 0
    needing_license: int = 0
    lapsed: int = 0
    lapsing_soon: int = 0
    paid_devices: int = 0  # summed over the rows

    @staticmethod
    def of(board: dict[str, Any]) -> dict[str, int]:
        return {"apartments": board["apartments"], "needing_license": board["needing_license"],
                "lapsed": len(board["lapsed"]), "lapsing_soon": len(board["lapsing_soon"]),
                "paid_devices": sum(r["paid_devices"] for r in board["rows"])}


@dataclass
class BenchSite:
    label: str
    site_id: int
    org_id: int
    apartments: int
    devices: int
    expected: Expected = field(default_factory=Expected)


PAID = ("phone", "tablet", "third_party")


def device_counts(apartments: int, devices: int, rng: random.Random) -> list[int]:
    """Devices per apartment, 0 to 6 each, summing to ``devices``."""
    counts = [rng.randint(0, 6) for _ in range(apartments)]
    diff = devices - sum(counts)
    while diff:
        i = rng.randrange(apartments)
        if diff > 0 and counts[i] < 6:
            counts[i] += 1
            diff -= 1
        elif diff < 0 and counts[i] > 0:
            counts[i] -= 1
            diff += 1
    return counts


def site_rows(site: BenchSite, seed: int) -> tuple[list[tuple[Any, ...]], Callable[[dict[str, int]],
                                                                                   Iterator[tuple[Any, ...]]]]:
    """The site's apartment rows, and a generator of its device rows once the apartments have ids
    (name -> id). Fills ``site.expected``. Seeded: every database gets the same rows."""
    from entitle.my2n import rules

    rng = random.Random(seed)
    intercoms = max(1, round(site.devices * INTERCOMS)) if site.devices >= 100 else 0
    counts = device_counts(site.apartments, site.devices - intercoms, rng)
    span = int((PAID_TO - PAID_FROM).total_seconds())
    apartments: list[tuple[Any, ...]] = []
    plans: list[list[tuple[str, bool]]] = []
    exp = site.expected
    for i, n in enumerate(counts):
        paid_through = None if rng.random() < NEVER_PAID else PAID_FROM + timedelta(seconds=rng.randrange(span))
        kinds: list[tuple[str, bool]] = []
        paid = 0
        for _ in range(n):
            kind = rng.choice(("answering_unit", *PAID, *PAID))
            if kind in PAID and paid == rules.MAX_PAID_DEVICES:
                kind = "answering_unit"
            paid += kind in PAID
            kinds.append((kind, kind in PAID and rng.random() < LOCAL_MODE))
        plans.append(kinds)
        needs = any(k in PAID and not local for k, local in kinds)
        exp.apartments += 1
        exp.paid_devices += paid
        if needs:
            exp.needing_license += 1
            exp.lapsed += rules.is_lapsed(paid_through, NOW)
            exp.lapsing_soon += rules.lapses_soon(paid_through, NOW)
        apartments.append((site.org_id, site.site_id, f"Apt {i + 1:06d}", paid_through, T0))

    def devices(ids: dict[str, int]) -> Iterator[tuple[Any, ...]]:
        serial = 0
        for i, kinds in enumerate(plans):
            apartment_id = ids[f"Apt {i + 1:06d}"]
            for kind, local in kinds:
                serial += 1
                yield (site.org_id, site.site_id, apartment_id, f"{site.label}-{serial:07d}", kind, local, T0)
        for _ in range(intercoms):
            serial += 1
            yield (site.org_id, site.site_id, None, f"{site.label}-{serial:07d}", "intercom", False, T0)

    return apartments, devices


APARTMENT_COLUMNS = ("org_id", "site_id", "name", "paid_through", "created_at")
DEVICE_COLUMNS = ("org_id", "site_id", "apartment_id", "serial", "kind", "local_mode", "created_at")


def bulk_insert(engine: Engine, table: str, columns: tuple[str, ...], rows: Iterator[tuple[Any, ...]]) -> None:
    """One transaction: ``COPY`` on PostgreSQL, ``executemany`` on SQLite with the timestamps in
    the form the ORM stores them (``UTCDateTime``'s bind processing)."""
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
            return
        from entitle.my2n.models import Apartment

        to_db = Apartment.__table__.c.created_at.type.bind_processor(engine.dialect)
        assert to_db is not None
        sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        cur = raw.cursor()
        cur.execute("BEGIN")
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            batch.append(tuple(to_db(v) if isinstance(v, datetime) else v for v in row))
            if len(batch) == 50_000:
                cur.executemany(sql, batch)
                batch.clear()
        if batch:
            cur.executemany(sql, batch)
        cur.execute("COMMIT")
        cur.close()
    finally:
        raw.close()


def fill_site(engine: Engine, site: BenchSite, seed: int) -> None:
    apartments, devices = site_rows(site, seed)
    bulk_insert(engine, "my2n_apartments", APARTMENT_COLUMNS, iter(apartments))
    with engine.connect() as conn:
        ids = {name: apartment_id for name, apartment_id in conn.execute(
            text("SELECT name, id FROM my2n_apartments WHERE site_id = :s"), {"s": site.site_id})}
    bulk_insert(engine, "my2n_devices", DEVICE_COLUMNS, devices(ids))


def build(engine: Engine, args: argparse.Namespace) -> tuple[list[BenchSite], float]:
    """The organizations and sites through the services; their apartments and devices in bulk.
    Returns the measured sites (steps, then the large one) and the seconds it took."""
    from entitle.actors import operator
    from entitle.db import make_session_factory, transaction
    from entitle.my2n import services as my2n
    from entitle.tenancy import services as tenancy

    started = time.perf_counter()
    sessions = make_session_factory(engine)
    cli = operator("bench")
    measured: list[BenchSite] = []
    noise: list[BenchSite] = []
    with transaction(sessions) as s:
        org_id = tenancy.create_organization(s, name="Bench residences", region="EU", actor=cli, now=T0).id
        for n in args.steps:
            site = my2n.create_site(s, org_id=org_id, name=f"Step {n}", actor=cli, now=T0)
            measured.append(BenchSite(f"S{n}", site.id, org_id, n, 3 * n))
        site = my2n.create_site(s, org_id=org_id, name="Large", actor=cli, now=T0)
        measured.append(BenchSite("L", site.id, org_id, args.apartments, args.devices))
        for k in range(args.noise_orgs):
            other = tenancy.create_organization(s, name=f"Bench neighbour {k}", region="US", actor=cli, now=T0).id
            site = my2n.create_site(s, org_id=other, name="Neighbour", actor=cli, now=T0)
            noise.append(BenchSite(f"N{k}", site.id, other, NOISE_APARTMENTS, 3 * NOISE_APARTMENTS))
    for i, site in enumerate(noise + measured):
        fill_site(engine, site, seed=i)
    databases.vacuum_analyze(engine, "my2n_apartments", "my2n_devices")
    return measured, round(time.perf_counter() - started, 1)


# --- timing --------------------------------------------------------------------------------------------------

class Captured:
    """The statement ``board.dashboard`` really sends, for its plan."""

    def __init__(self, engine: Engine) -> None:
        self.engine, self.statement, self.parameters = engine, "", None
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any, _many: bool) -> None:
        if "my2n_devices" in statement and "GROUP BY" in statement:
            self.statement, self.parameters = statement, parameters

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def explain(engine: Engine, captured: Captured) -> dict[str, Any]:
    pg = engine.dialect.name == "postgresql"
    with engine.connect() as conn:
        if pg:
            lines = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + captured.statement,
                                                        captured.parameters)]
        else:
            lines = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + captured.statement,
                                                         captured.parameters)]
        conn.rollback()
    ms = next((float(line.split(":")[1].split()[0]) for line in lines if line.startswith("Execution Time")), None)
    return {"uses_index": any("ix_my2n_devices_dashboard" in line for line in lines), "execution_ms": ms,
            "plan": lines}


def measure(engine: Engine, site: BenchSite, *, repeats: int, old_repeats: int | None) -> dict[str, Any]:
    """The board (and the old dashboard if ``old_repeats``), each call a read-only transaction
    that loads the site first, as a request does."""
    from entitle.db import make_session_factory, reading
    from entitle.my2n import board
    from entitle.my2n import services as my2n
    from entitle.my2n.models import Site

    sessions = make_session_factory(engine)

    def call(fn: Callable[..., dict[str, Any]]) -> Callable[[], dict[str, Any]]:
        def run() -> dict[str, Any]:
            with reading(sessions) as s:
                row = s.get(Site, site.site_id)
                assert row is not None
                return fn(s, site=row, now=NOW)
        return run

    def query_only() -> None:
        with reading(sessions) as s:
            row = s.get(Site, site.site_id)
            assert row is not None
            board.apartment_rows(s, row)

    new = call(board.dashboard)
    out: dict[str, Any] = {"site": site.label, "apartments": site.apartments, "devices": site.devices}
    captured = Captured(engine)
    try:
        result = new()
    finally:
        captured.close()
    out["expected"] = vars(site.expected)
    out["counted"] = Expected.of(result)
    out["board_right"] = out["counted"] == out["expected"]
    out.update(databases.timed({"board": new, "query": query_only}, repeats))
    started = time.perf_counter()
    encoded = json.dumps(result, separators=(",", ":")).encode()
    rows_only = json.dumps(result["rows"], separators=(",", ":")).encode()
    out["json"] = {"bytes": len(encoded), "rows_bytes": len(rows_only),
                   "encode_ms": round((time.perf_counter() - started) * 1000, 1),
                   "lapsed_names": len(result["lapsed"]), "lapsing_soon_names": len(result["lapsing_soon"])}
    out["explain"] = explain(engine, captured)
    if old_repeats is not None:
        old = call(board.reference_dashboard)
        warm = 2 if old_repeats > 1 else 0
        if warm:
            console.print(f"    old dashboard: {warm} warm-up + {old_repeats} timed call(s)…")
        else:
            console.print("    old dashboard: 1 call (no warm-up)…")
        answers: list[dict[str, Any]] = []

        def old_call() -> None:
            answers.append(old())

        out["old"] = databases.timed({"old": old_call}, old_repeats, warmups=warm)["old"]
        out["old_equal"] = all(a == result for a in answers)
        out["speedup"] = round(out["old"]["median_ms"] / out["board"]["median_ms"], 1)
    return out


# --- one database --------------------------------------------------------------------------------------

def table_mib(engine: Engine) -> dict[str, float] | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        a, d, i = conn.execute(text("SELECT pg_table_size('my2n_apartments'), pg_table_size('my2n_devices'), "
                                    "pg_relation_size('ix_my2n_devices_dashboard')")).one()
    return {"apartments_mib": round(a / 2**20, 1), "devices_mib": round(d / 2**20, 1),
            "dashboard_index_mib": round(i / 2**20, 1)}


def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from entitle.db import make_engine
    from entitle.models import load_all

    load_all()
    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    engine = make_engine(db.url)
    try:
        sites, seconds = build(engine, args)
        total_a = sum(s.apartments for s in sites) + args.noise_orgs * NOISE_APARTMENTS
        total_d = sum(s.devices for s in sites) + args.noise_orgs * 3 * NOISE_APARTMENTS
        console.print(f"  {len(sites)} sites measured and {args.noise_orgs} other organizations' sites: "
                      f"{total_a:,} apartments and {total_d:,} devices in all, inserted in {seconds} s")
        out: dict[str, Any] = {"version": db.version, "build_seconds": seconds, "apartments_in_table": total_a,
                               "devices_in_table": total_d, "sites": []}
        for site in sites:
            large = site is sites[-1]
            old = (1 if args.old_full else None) if large else args.old_repeats
            console.print(f"  site {site.label}: {site.apartments:,} apartments, {site.devices:,} devices: "
                          f"the board ({args.repeats} runs)" + ("" if old is None else " and the old dashboard")
                          + "…")
            m = measure(engine, site, repeats=args.repeats, old_repeats=old)
            out["sites"].append(m)
            console.print(f"    board {m['board']['median_ms']:,.1f} ms (query {m['query']['median_ms']:,.1f} ms)"
                          + (f", old {m['old']['median_ms']:,.0f} ms (×{m['speedup']:,.0f})" if "old" in m else "")
                          + ("" if m["board_right"] else " [red]BOARD DIFFERS FROM THE ROWS INSERTED[/]")
                          + ("" if m.get("old_equal", True) else " [red]OLD AND NEW DIFFER[/]"))
        size = table_mib(engine)
        if size:
            out.update(size)
        return out
    finally:
        engine.dispose()
        if name == "postgresql" and not args.keep:
            databases.drop_postgresql(db.url)


# --- output ----------------------------------------------------------------------------------------------

def print_tables(report: dict[str, Any]) -> None:
    t = Table(title=f"My2N site dashboard, one read-only transaction per call (site loaded, dashboard computed); "
                    f"median of {report['options']['repeats']} warm calls")
    for col in ("database", "site", "apartments", "devices", "board ms (min–max)", "board query ms",
                "old ms (min–max)", "old ÷ board", "board right", "old = board", "JSON", "index"):
        t.add_column(col, justify="left" if col in ("database", "site", "index") else "right")
    for name, d in report["databases"].items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        for s in d["sites"]:
            b, q = s["board"], s["query"]
            o = s.get("old")
            t.add_row(name, s["site"], f"{s['apartments']:,}", f"{s['devices']:,}",
                      f"{b['median_ms']:,.1f} ({b['min_ms']:,.1f}–{b['max_ms']:,.1f})", f"{q['median_ms']:,.1f}",
                      f"{o['median_ms']:,.0f} ({o['min_ms']:,.0f}–{o['max_ms']:,.0f})" if o else "-",
                      f"×{s['speedup']:,.0f}" if o else "-",
                      "[green]yes[/]" if s["board_right"] else "[red]NO[/]",
                      ("[green]yes[/]" if s["old_equal"] else "[red]NO[/]") if o else "-",
                      f"{s['json']['bytes'] / 1024:,.0f} KiB",
                      "yes" if s["explain"]["uses_index"] else "[yellow]no[/]")
    console.print(t)
    for name, d in report["databases"].items():
        if d.get("sites"):
            last = d["sites"][-1]
            j = last["json"]
            console.print(f"  {name}, {last['apartments']:,} apartments: the answer is {j['bytes']:,} bytes of JSON "
                          f"({j['rows_bytes']:,} of them rows; encoded in {j['encode_ms']:,.0f} ms), lapsed "
                          f"{j['lapsed_names']:,} names, lapsing soon {j['lapsing_soon_names']:,}. The board "
                          f"statement's plan:")
            for line in last["explain"]["plan"]:
                console.print(f"    {line}", markup=False, highlight=False)


def failed(report: dict[str, Any]) -> bool:
    return any(not s["board_right"] or not s.get("old_equal", True)
               for d in report["databases"].values() for s in d.get("sites", []))


def main(argv: list[str] | None = None) -> int:
    from bench.run import machine, run_report

    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "my2n",
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "now": NOW.isoformat(),
        "mix": {"intercoms": INTERCOMS, "local_mode_of_paid": LOCAL_MODE, "never_paid": NEVER_PAID,
                "paid_through_from": PAID_FROM.isoformat(), "paid_through_to": PAID_TO.isoformat(),
                "noise_apartments_per_org": NOISE_APARTMENTS},
        "databases": {},
    }
    return run_report(report, title="Entitle My2N site dashboard benchmark", stem="my2n", args=args,
                      bench_database=bench_database, print_tables=print_tables, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
