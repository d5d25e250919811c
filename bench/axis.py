"""``make bench-axis``: the need and licensing state of one AXIS organization as its devices grow.

    python -m bench.axis [--devices 10000,100000,1000000] [--systems 1000] [--repeats 7]
                         [--databases sqlite,postgresql] [--postgres-url URL] [--keep]

One organization with the AXIS Camera Station product registered on ``--systems`` systems
(``axis.services.register_system``), a subscription started, wallet units redeemed and some
allocated; ten other organizations' devices (``--other-devices``, 1,000,000) in the same table;
then devices inserted in bulk (one ``COPY``/``executemany`` per step, not through the services)
until the organization holds 10,000, then 100,000, then 1,000,000 of them. After each
step (``VACUUM ANALYZE``/``ANALYZE``) it times, warm and repeated (median), the two reads every
licensing page makes: ``axis.services.need`` (one grouped count over ``axis_devices``) and
``axis.services.status`` (need, allocations, wallet, years, growth, guidance), checks the need
against the counts it inserted, and shows the query's plan (``EXPLAIN (ANALYZE, BUFFERS)`` on
PostgreSQL, ``EXPLAIN QUERY PLAN`` on SQLite). Target: status under 1 s on PostgreSQL with
1,000,000 devices. Writes every figure to ``bench/results/axis-<UTC time>.json``;
docs/benchmarks.md ("AXIS: need and state of one organization") says what they mean.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Setting up the benchmark's data hashes no passwords worth the name.
os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import Engine, event, make_url, text  # noqa: E402

from bench import databases  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=None if sys.stdout.isatty() else 160)

PRODUCT = "axis-camera-station"
GOAL_MS = 1000.0  # status of 1,000,000 devices on PostgreSQL
POSTGRES_URL = os.environ.get("ENTITLE_BENCH_AXIS_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/entitle_bench_axis")

# The organization's timeline: registered and subscribed at T0, the first year's grace ends 30
# days later, and the figures are read 200 days in (so the need at the grace end and the need
# now differ: devices were added and removed since).
T0 = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
GRACE_END = T0 + timedelta(days=30)
NOW = T0 + timedelta(days=200)

# The device mix (fractions of the devices; the same in every step).
UNIVERSAL = 0.30  # the rest are core
ON_HARDWARE = 0.01  # on a recorder: licensed by the hardware, not counted in the need (R-AX-10)
ADDED_AFTER_GRACE = 0.15  # added between the grace end and NOW; the rest in the first 30 days
REMOVED = 0.10  # removed some time between being added and NOW
HARDWARE = 20  # recorders
ALLOCATE = {"core": 5_000, "universal": 2_000}  # year 0; universal as five-year units
NEIGHBOURS = 10  # other organizations sharing the table (--other-devices), 10 systems each


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.axis", description=__doc__.split("\n\n")[0])
    p.add_argument("--devices", default="10000,100000,1000000",
                   help="the organization's device counts to measure at, growing (default 10k,100k,1M)")
    p.add_argument("--systems", type=int, default=1000, help="systems the devices are spread over (default 1,000)")
    p.add_argument("--other-devices", type=int, default=1_000_000,
                   help="devices of other organizations in the same table, inserted first (default 1,000,000 "
                        f"in {NEIGHBOURS} organizations; 0 for none)")
    p.add_argument("--repeats", type=int, default=7, help="timed calls per figure, after 2 warm-up calls (default 7)")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--postgres-url", default=POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (created, then dropped; never 'test'); "
                        "also ENTITLE_BENCH_AXIS_POSTGRES_URL")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database afterwards")
    args = p.parse_args(argv)
    try:
        args.devices = [int(n.replace("_", "")) for n in args.devices.split(",") if n.strip()]
    except ValueError:
        p.error("--devices: comma-separated whole numbers, e.g. 10000,100000")
    if not args.devices or args.devices != sorted(set(args.devices)) or args.devices[0] < 1:
        p.error("--devices must be growing positive counts, e.g. 10000,100000,1000000")
    if not 1 <= args.systems <= 100_000:
        p.error("--systems must be between 1 and 100,000")
    if args.other_devices < 0:
        p.error("--other-devices must be 0 or more")
    if args.repeats < 1:
        p.error("--repeats must be at least 1")
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.databases) - {"sqlite", "postgresql"}:
        p.error("use sqlite and/or postgresql")
    if make_url(args.postgres_url).database in (None, "", "test"):
        p.error("--postgres-url must name the benchmark's own database (it is dropped), not the test suite's 'test'")
    return args


# --- the organization (through the services) ------------------------------------------------------

@dataclass
class Org:
    org_id: int
    product_id: int
    system_ids: list[int]
    hardware_ids: list[int]
    build_seconds: float


def build_org(engine: Engine, *, systems: int) -> Org:
    """Catalog, one organization, its systems and recorders, the subscription, units redeemed and
    allocated: all through the services, as the API and CLI would."""
    from entitle.actors import operator
    from entitle.axis import services as axis
    from entitle.catalog import services as catalog
    from entitle.db import make_session_factory, transaction
    from entitle.keys import services as keys
    from entitle.tenancy import services as tenancy

    started = time.perf_counter()
    sessions = make_session_factory(engine)
    cli = operator("bench")
    before = T0 - timedelta(days=1)
    with transaction(sessions) as s:
        catalog.load(s, catalog.parse(catalog.DEFAULT_CATALOG.read_text()), actor=cli, now=before)
        tenancy.issuer_organization(s, now=before)
        org_id = tenancy.create_organization(s, name="Bench cameras", region="EU", actor=cli, now=before).id
        core = keys.mint(s, sku_part="AXIS-ACS-CORE-1Y", quantity_per_key=ALLOCATE["core"] + 1_000, count=1,
                         actor=cli, now=before, keep_codes=True).codes
        universal = keys.mint(s, sku_part="AXIS-ACS-UNIVERSAL-5Y", quantity_per_key=ALLOCATE["universal"] + 500,
                              count=1, actor=cli, now=before, keep_codes=True).codes
    with transaction(sessions) as s:
        system_ids = [axis.register_system(s, org_id=org_id, uid=f"ACS-{i:06d}", name=f"Site {i}",
                                           product_code=PRODUCT, actor=cli, now=T0).id for i in range(systems)]
        hardware_ids = [axis.register_hardware(s, org_id=org_id, product_code=PRODUCT, serial=f"S30-{i:04d}",
                                               name=f"Recorder {i}", license_type="core", actor=cli, now=T0).id
                        for i in range(HARDWARE)]
        axis.start_subscription(s, org_id=org_id, product_code=PRODUCT, actor=cli, now=T0)
        product_id = axis.product_by_code(s, PRODUCT).id
    at = T0 + timedelta(days=10)  # during the grace period: nothing to compensate
    with transaction(sessions) as s:
        for code in core + universal:
            keys.redeem(s, org_id=org_id, typed_key=code, actor=cli, now=at)
        axis.allocate(s, org_id=org_id, product_code=PRODUCT, actor=cli, now=at,
                      lines=[axis.Line("core", 0, ALLOCATE["core"]),
                             axis.Line("universal", 0, ALLOCATE["universal"], term_years=5)])
    return Org(org_id, product_id, system_ids, hardware_ids, round(time.perf_counter() - started, 1))


def build_neighbours(engine: Engine, *, count: int, devices: int) -> None:
    """Other organizations with their own systems and ``devices`` devices between them (bulk): in
    production the table holds every organization's devices, and the planner's choice depends
    on the organization's share of it."""
    from entitle.actors import operator
    from entitle.axis import services as axis
    from entitle.db import make_session_factory, transaction
    from entitle.tenancy import services as tenancy

    sessions = make_session_factory(engine)
    cli = operator("bench")
    orgs = []
    with transaction(sessions) as s:
        product_id = axis.product_by_code(s, PRODUCT).id
        for k in range(count):
            org_id = tenancy.create_organization(s, name=f"Bench neighbour {k}", region="EU", actor=cli, now=T0).id
            systems = [axis.register_system(s, org_id=org_id, uid=f"N{k:03d}-{i:03d}", name=f"Site {i}",
                                            product_code=PRODUCT, actor=cli, now=T0).id for i in range(10)]
            hardware = [axis.register_hardware(s, org_id=org_id, product_code=PRODUCT, serial=f"N{k:03d}-S30",
                                               license_type="core", actor=cli, now=T0).id]
            orgs.append(Org(org_id, product_id, systems, hardware, 0.0))
        for k, org in enumerate(orgs):
            axis.start_subscription(s, org_id=org.org_id, product_code=PRODUCT, actor=cli,
                                    now=T0 + timedelta(days=k))
    for k, org in enumerate(orgs):
        share = devices // count + (1 if k < devices % count else 0)
        if share:
            insert_devices(engine, device_rows(org, 0, share, Expected()))


# --- the devices (bulk) ---------------------------------------------------------------------------------

@dataclass
class Expected:
    """What ``need`` must answer: license type -> (present now, present at the grace end)."""

    now: Counter[str] = field(default_factory=Counter)
    at: Counter[str] = field(default_factory=Counter)

    def as_need(self) -> dict[str, tuple[int, int]]:
        return {t: (self.now[t], self.at[t]) for t in sorted(set(self.now) | set(self.at))}


COLUMNS = ("org_id", "product_id", "system_id", "serial", "license_type", "hardware_id", "added_at", "removed_at")


def device_rows(org: Org, first: int, last: int, expected: Expected) -> Iterator[tuple[Any, ...]]:
    """Devices ``first`` .. ``last - 1`` of the organization, spread over its systems, in a
    fixed pseudo-random mix (seeded by the device number, so every database gets the same rows)."""
    rng = random.Random(first)
    grace_s = int((GRACE_END - T0).total_seconds())
    later_s = int((NOW - GRACE_END).total_seconds())
    systems, hardware = org.system_ids, org.hardware_ids
    for i in range(first, last):
        r = rng.random()
        hw = hardware[i % len(hardware)] if r < ON_HARDWARE else None
        license_type = "core" if hw is not None or rng.random() >= UNIVERSAL else "universal"
        if rng.random() < ADDED_AFTER_GRACE:
            added = GRACE_END + timedelta(seconds=1 + rng.randrange(later_s))
        else:
            added = T0 + timedelta(seconds=rng.randrange(grace_s))
        removed = None
        if rng.random() < REMOVED:
            removed = added + timedelta(seconds=1 + rng.randrange(int((NOW - added).total_seconds())))
        if hw is None:
            if removed is None:
                expected.now[license_type] += 1
            if added <= GRACE_END and (removed is None or removed > GRACE_END):
                expected.at[license_type] += 1
        yield (org.org_id, org.product_id, systems[i % len(systems)], f"CAM-{i:08d}", license_type, hw, added,
               removed)


def insert_devices(engine: Engine, rows: Iterator[tuple[Any, ...]]) -> None:
    """One transaction: ``COPY`` on PostgreSQL, ``executemany`` on SQLite, with the timestamps in
    exactly the form the ORM stores them (``UTCDateTime``'s bind processing)."""
    raw = engine.raw_connection()
    try:
        if engine.dialect.name == "postgresql":
            with raw.cursor() as cur, cur.copy(f"COPY axis_devices ({', '.join(COLUMNS)}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            raw.commit()
        else:
            from entitle.axis.models import AxisDevice

            to_db = AxisDevice.__table__.c.added_at.type.bind_processor(engine.dialect)
            assert to_db is not None
            sql = f"INSERT INTO axis_devices ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})"
            cur = raw.cursor()
            cur.execute("BEGIN")
            batch: list[tuple[Any, ...]] = []
            for row in rows:
                batch.append((*row[:6], to_db(row[6]), None if row[7] is None else to_db(row[7])))
                if len(batch) == 50_000:
                    cur.executemany(sql, batch)
                    batch.clear()
            if batch:
                cur.executemany(sql, batch)
            cur.execute("COMMIT")
            cur.close()
    finally:
        raw.close()


# --- timing ---------------------------------------------------------------------------------------------

class Captured:
    """The SQL ``need`` really sends (so the plan shown is the service's query, not a copy)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statement: str | None = None
        self.parameters: Any = None
        self.statements = 0  # all statements sent, to count a status call's
        self.device_scans = 0  # grouped counts over axis_devices among them
        event.listen(engine, "before_cursor_execute", self._seen)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
              _executemany: bool) -> None:
        self.statements += 1
        if "axis_devices" in statement and "GROUP BY" in statement:
            self.statement, self.parameters = statement, parameters
            self.device_scans += 1

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._seen)


def explain(engine: Engine, captured: Captured) -> dict[str, Any]:
    """The plan of the statement ``need`` sent, with its parameters. On PostgreSQL, if the
    planner chose anything but the index-only scan, also the index-only plan (sequential scans
    off for one transaction) and its time, to show what the choice costs or saves."""
    assert captured.statement is not None, "need() sent no grouped count over axis_devices"
    pg = engine.dialect.name == "postgresql"

    def run(forced: bool) -> dict[str, Any]:
        with engine.connect() as conn:
            if pg:
                if forced:
                    conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
                lines = [r[0] for r in conn.exec_driver_sql("EXPLAIN (ANALYZE, BUFFERS) " + captured.statement,
                                                            captured.parameters)]
            else:
                lines = [r[-1] for r in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + captured.statement,
                                                             captured.parameters)]
            conn.rollback()
        plan = "\n".join(lines)
        fetches = [int(n) for n in re.findall(r"Heap Fetches: (\d+)", plan)]
        ms = re.search(r"Execution Time: ([\d.]+) ms", plan)
        return {"index_only": ("Index Only Scan using ix_axis_devices_need" in plan if pg
                               else "COVERING INDEX ix_axis_devices_need" in plan),
                "scan": next((m.group(0) for m in re.finditer(r"(Parallel )?(Index Only Scan|Index Scan|Seq Scan|"
                                                              r"Bitmap Heap Scan)", plan)), lines[0] if lines else ""),
                "heap_fetches": sum(fetches) if fetches else None,
                "execution_ms": float(ms.group(1)) if ms else None, "plan": lines}

    chosen = run(False)
    if pg and not chosen["index_only"]:
        chosen["index_only_forced"] = run(True)
    return chosen


def measure(engine: Engine, org: Org, repeats: int) -> dict[str, Any]:
    from entitle.axis import services as axis
    from entitle.db import make_session_factory, reading

    sessions = make_session_factory(engine)
    captured = Captured(engine)
    out: dict[str, Any] = {}
    try:
        # One read-only transaction, as a request would have; the calls inside it.
        with reading(sessions) as s:
            product = axis.product_by_code(s, PRODUCT)
            out["need_result"] = axis.need(s, org.org_id, org.product_id, now=NOW, at=GRACE_END)
            st = axis.status(s, org_id=org.org_id, product=product, now=NOW)
            before = (captured.statements, captured.device_scans)
            axis.status(s, org_id=org.org_id, product=product, now=NOW)
            out["status_statements"] = captured.statements - before[0]
            out["status_device_scans"] = captured.device_scans - before[1]
            out.update(databases.timed({
                "need": lambda: axis.need(s, org.org_id, org.product_id, now=NOW, at=GRACE_END),
                "status": lambda: axis.status(s, org_id=org.org_id, product=product, now=NOW),
            }, repeats))
        out["state"] = st["state"]
        out["license_types"] = {t: {k: v[k] for k in ("need_now", "need", "allocated", "state")}
                                for t, v in st["license_types"].items()}
    finally:
        captured.close()
    out["explain"] = explain(engine, captured)
    return out


# --- one database -----------------------------------------------------------------------------------------

def table_mib(engine: Engine) -> dict[str, float] | None:
    if engine.dialect.name != "postgresql":
        return None
    with engine.connect() as conn:
        table, index = conn.execute(text(
            "SELECT pg_table_size('axis_devices'), pg_relation_size('ix_axis_devices_need')")).one()
    return {"table_mib": round(table / 2**20, 1), "need_index_mib": round(index / 2**20, 1)}


def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from entitle.db import make_engine
    from entitle.models import load_all

    load_all()
    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    engine = make_engine(db.url)
    try:
        org = build_org(engine, systems=args.systems)
        console.print(f"  one organization, {args.systems:,} systems, {HARDWARE} recorders, subscription, "
                      f"allocations, through the services: {org.build_seconds} s")
        out: dict[str, Any] = {"version": db.version, "setup_seconds": org.build_seconds, "steps": []}
        if args.other_devices:
            started = time.perf_counter()
            build_neighbours(engine, count=NEIGHBOURS, devices=args.other_devices)
            out["other_devices"] = args.other_devices
            out["other_devices_seconds"] = round(time.perf_counter() - started, 1)
            console.print(f"  {NEIGHBOURS} other organizations with {args.other_devices:,} devices between them: "
                          f"{out['other_devices_seconds']} s")
        expected, have = Expected(), 0
        for n in args.devices:
            started = time.perf_counter()
            insert_devices(engine, device_rows(org, have, n, expected))
            inserted = time.perf_counter() - started
            started = time.perf_counter()
            databases.vacuum_analyze(engine, "axis_devices")
            vacuumed = time.perf_counter() - started
            console.print(f"  {n:,} devices ({n - have:,} inserted in {inserted:.1f} s, (VACUUM) ANALYZE "
                          f"{vacuumed:.1f} s): timing need and status ({args.repeats} runs each)…")
            have = n
            step = {"devices": n, "insert_seconds": round(inserted, 1), "vacuum_analyze_seconds": round(vacuumed, 1),
                    **measure(engine, org, args.repeats)}
            size = table_mib(engine)
            if size:
                step.update(size)
            step["expected_need"] = expected.as_need()
            step["need_ok"] = step.pop("need_result") == step["expected_need"]
            out["steps"].append(step)
            console.print(f"    need {step['need']['median_ms']:,.1f} ms, status {step['status']['median_ms']:,.1f} ms "
                          f"(median; {step['status_statements']} statements, {step['status_device_scans']} over "
                          f"axis_devices), need plan: "
                          f"{'index-only' if step['explain']['index_only'] else step['explain']['scan']}"
                          + ("" if step["need_ok"] else " [red]need() DIFFERS FROM THE ROWS INSERTED[/]"))
        return out
    finally:
        engine.dispose()
        if name == "postgresql" and not args.keep:
            databases.drop_postgresql(db.url)


# --- output ---------------------------------------------------------------------------------------------------

def print_tables(report: dict[str, Any]) -> None:
    others = report["options"]["other_devices"]
    t = Table(title=f"AXIS need and status of one organization ({report['options']['systems']:,} systems"
                    + (f"; {others:,} other organizations' devices in the table" if others else "")
                    + f"), median of {report['options']['repeats']} warm calls")
    left = ("database", "need plan (EXPLAIN ANALYZE)", "state")
    for col in ("database", "devices", "need ms (min–max)", "status ms (min–max)", "status − need",
                *left[1:2], "heap fetches", "need right", *left[2:]):
        t.add_column(col, justify="left" if col in left else "right")
    for name, d in report["databases"].items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        for s in d["steps"]:
            n, st = s["need"], s["status"]
            e = s["explain"]
            plan = "index-only" if e["index_only"] else f"[yellow]{e['scan'].lower()}[/]"
            if "index_only_forced" in e:
                f = e["index_only_forced"]
                plan += f" {e['execution_ms']:,.0f} ms (index-only {f['execution_ms']:,.0f})"
            t.add_row(name, f"{s['devices']:,}", f"{n['median_ms']:,.1f} ({n['min_ms']:,.1f}–{n['max_ms']:,.1f})",
                      f"{st['median_ms']:,.1f} ({st['min_ms']:,.1f}–{st['max_ms']:,.1f})",
                      f"{st['median_ms'] - n['median_ms']:,.1f}",
                      plan,
                      "-" if e["heap_fetches"] is None else f"{e['heap_fetches']:,}",
                      "[green]yes[/]" if s["need_ok"] else "[red]NO[/]", s["state"])
    console.print(t)
    for name, d in report["databases"].items():
        steps = d.get("steps", [])
        if len(steps) > 1:
            growth = ", ".join(f"×{b['devices'] / a['devices']:g} devices → need ×"
                               f"{b['need']['median_ms'] / a['need']['median_ms']:.1f}"
                               for a, b in zip(steps, steps[1:], strict=False))
            console.print(f"  {name}: {growth}")
        if steps:
            last = steps[-1]
            console.print(f"  {name}, {last['devices']:,} devices, the need query's plan:")
            for line in last["explain"]["plan"]:
                console.print(f"    {line}", markup=False, highlight=False)
    pg = [s for s in report["databases"].get("postgresql", {}).get("steps", []) if s["devices"] >= 1_000_000]
    if pg:
        ms = pg[-1]["status"]["median_ms"]
        verdict = "[green]met[/]" if ms < GOAL_MS else "[red]NOT MET[/]"
        console.print(f"  goal: status of {pg[-1]['devices']:,} devices on PostgreSQL under {GOAL_MS:,.0f} ms: "
                      f"{ms:,.0f} ms, {verdict}")


def main(argv: list[str] | None = None) -> int:
    from bench.run import machine, run_report

    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "axis",
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "timeline": {"subscription_start": T0.isoformat(), "grace_end": GRACE_END.isoformat(), "now": NOW.isoformat()},
        "mix": {"universal": UNIVERSAL, "on_hardware": ON_HARDWARE, "added_after_grace": ADDED_AFTER_GRACE,
                "removed": REMOVED, "recorders": HARDWARE, "allocated_year_0": ALLOCATE},
        "databases": {},
    }
    return run_report(report, title="Entitle AXIS need/status benchmark", stem="axis", args=args, bench_database=bench_database,
                      print_tables=print_tables,
                      failed=lambda r: any(not s["need_ok"] for d in r["databases"].values() for s in d.get("steps", [])))


if __name__ == "__main__":
    sys.exit(main())
