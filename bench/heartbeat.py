"""``python -m bench.run heartbeat``: Access Commander device heartbeats over HTTP.

    python -m bench.run heartbeat [--quick] [--databases sqlite,postgresql] [--workers 1,2] [--no-state]
                                  [--installations N] [--devices N] [--duration S]
                                  [--connections C]

A fleet of 10,000 devices over 100 installations (each with a license whose license device is
one of them) sends ``POST /api/v1/ac/heartbeat`` to the real server (uvicorn, 1 and 2 worker
processes) on SQLite and PostgreSQL; in the same run the same server answers the app's bare JSON
endpoint ``GET /api/v1/ping``, and then (a server of its own) the one-transaction-per-report
path ``POST /api/v1/ac/state`` for comparison. Prints heartbeats/s and p50/p99 beside the bare
endpoint's rate, and the goal (heartbeats >= 50 % of bare, p99 < 50 ms); writes every figure to
``bench/results/heartbeat-<UTC time>.json``. docs/benchmarks.md says what each figure means.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# Setting up the benchmark's data hashes no passwords worth the name.
os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import func, insert, make_url, select  # noqa: E402

from bench import databases  # noqa: E402
from bench.load import LoadResult, get, post_json, run_load  # noqa: E402
from bench.server import serving  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
console = Console(width=None if sys.stdout.isatty() else 150)

GOAL_RATIO = 0.5  # heartbeats/s at least half the bare endpoint's
GOAL_P99_MS = 50.0
PART = "91379040"  # Access Commander +5 devices: each installation's license holds one


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run heartbeat", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="3 s windows, 0.5 s warm-up: checks that everything works")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--workers", default="1,2", help="server processes to try, comma-separated (default 1,2)")
    p.add_argument("--installations", type=int, default=100, help="installations (default 100)")
    p.add_argument("--devices", type=int, default=10_000, help="devices in all (default 10,000)")
    p.add_argument("--duration", type=float, help="seconds measured per HTTP run (default 10; 3 with --quick)")
    p.add_argument("--warmup", type=float, help="seconds of load before each window (default 2; 0.5 with --quick)")
    p.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    p.add_argument("--no-state", dest="state", action="store_false",
                   help="skip the comparison with the one-transaction path POST /api/v1/ac/state")
    p.add_argument("--postgres-url", default=databases.POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (dropped and rebuilt; never 'test')")
    args = p.parse_args(argv)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.databases) - {"sqlite", "postgresql"}:
        p.error("use sqlite and/or postgresql")
    args.workers = [int(w) for w in args.workers.split(",")]
    if not 1 <= args.installations <= args.devices:
        p.error("--installations must be between 1 and --devices")
    if make_url(args.postgres_url).database in (None, "", "test"):
        p.error("--postgres-url must name the benchmark's own database, not the test suite's 'test'")
    return args


# --- the fleet ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fleet:
    tokens: list[str]  # per installation
    serials: list[tuple[int, str]]  # (installation index, serial), installations interleaved


def build_fleet(url: str, workdir: Path, *, installations: int, devices: int) -> Fleet:
    """One organization, its installations (services), their devices (one bulk INSERT) and a
    license per installation for its first device (services: mint, redeem, generate)."""
    from entitle.access_commander import services as ac
    from entitle.access_commander.models import Device
    from entitle.actors import operator
    from entitle.catalog import services as catalog
    from entitle.config import Settings
    from entitle.db import make_engine, make_session_factory, transaction
    from entitle.keys import services as keys
    from entitle.models import load_all
    from entitle.signing.secrets import load_secret_key
    from entitle.tenancy import services as tenancy

    load_all()
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    # The same key file the server gets (bench/server.py): it signs with the keys made here.
    secret = load_secret_key(Settings(database_url=url, secret_key_file=str(workdir / "secret.key")))
    now = datetime.now(UTC) - timedelta(minutes=1)
    cli = operator("bench")
    with transaction(sessions) as s:
        catalog.load(s, catalog.parse(catalog.DEFAULT_CATALOG.read_text()), actor=cli, now=now)
        tenancy.issuer_organization(s, now=now)
        org = tenancy.create_organization(s, name="Bench fleet", region="EU", actor=cli, now=now)
        org_id = org.id
        codes = keys.mint(s, sku_part=PART, quantity_per_key=1, count=installations, actor=cli, now=now,
                          keep_codes=True).codes
    tokens, insts = [], []
    with transaction(sessions) as s:
        for i in range(installations):
            inst, token = ac.create_installation(s, org_id=org_id, name=f"Site {i}", uid=f"BENCH-{i:05d}",
                                                 actor=cli, now=now)
            tokens.append(token)
            insts.append(inst.id)
        for code in codes:
            keys.redeem(s, org_id=org_id, typed_key=code, actor=cli, now=now)
    per = [devices // installations + (1 if i < devices % installations else 0) for i in range(installations)]
    rows = [{"org_id": org_id, "installation_id": insts[i], "serial": f"AC{i:05d}-{j:05d}", "type": "ip_intercom",
             "name": "", "active": j == 0, "activated_at": now if j == 0 else None, "connected_since": now,
             "last_seen": now, "created_at": now}
            for i in range(installations) for j in range(per[i])]
    with engine.begin() as conn:
        for k in range(0, len(rows), 5000):
            conn.execute(insert(Device), rows[k:k + 5000])
    with transaction(sessions) as s:
        for i, inst_id in enumerate(insts):
            inst = ac.get_installation(s, org_id, inst_id)
            ac.generate_license(s, installation=inst, license_device=f"AC{i:05d}-00000", packages=[(PART, 1)],
                                actor=cli, now=now, secret=secret)
    engine.dispose()
    # Interleaved: consecutive requests go to different installations, as a fleet's would.
    serials = [(i, f"AC{i:05d}-{j:05d}") for j in range(max(per)) for i in range(installations) if j < per[i]]
    return Fleet(tokens, serials)


class StateRequests:
    """The slow path for comparison: ``POST /api/v1/ac/state`` (one transaction per report)."""

    def __init__(self, fleet: Fleet) -> None:
        self.requests = [post_json("/api/v1/ac/state", json.dumps({"serial": serial, "connected": True}).encode(),
                                   {"Authorization": f"Bearer {fleet.tokens[i]}"})
                         for i, serial in fleet.serials]
        self.counter = itertools.count()

    def __call__(self, _connection: int) -> bytes:
        return self.requests[next(self.counter) % len(self.requests)]


class HeartbeatRequests:
    """Every request one device's heartbeat, the devices in turn, each with its installation's token."""

    def __init__(self, fleet: Fleet) -> None:
        self.requests = [post_json("/api/v1/ac/heartbeat", json.dumps({"serial": serial}).encode(),
                                   {"Authorization": f"Bearer {fleet.tokens[i]}"})
                         for i, serial in fleet.serials]
        self.counter = itertools.count()
        self.sent = 0

    def __call__(self, _connection: int) -> bytes:
        self.sent = next(self.counter) + 1
        return self.requests[(self.sent - 1) % len(self.requests)]


# --- in-process: what one flush costs ------------------------------------------------------------

def flush_cost(url: str, fleet: Fleet) -> dict[str, Any]:
    """Buffer one heartbeat per device and time the flush that writes them (the loss window is
    one flush interval plus this), then time the hot path's ``record``."""
    import asyncio

    from entitle.access_commander.heartbeat import Heartbeats
    from entitle.config import Settings
    from entitle.context import build

    ctx = build(Settings(database_url=url, rate_limits_enabled=False))
    hb = Heartbeats(ctx)

    async def known() -> list[Any]:
        out = []
        for token in fleet.tokens:
            inst = await hb.installation(token)
            assert inst is not None
            out.append(inst)
        return out

    insts = asyncio.run(known())
    out: dict[str, Any] = {}
    for label in ("first", "second"):
        started = time.perf_counter()
        for i, serial in fleet.serials:
            hb.record(insts[i], (serial,), ctx.clock.now())
        record_s = time.perf_counter() - started
        started = time.perf_counter()
        written = hb.flush()
        out[label] = {"devices": written, "flush_ms": round((time.perf_counter() - started) * 1000, 1),
                      "record_us_per_heartbeat": round(record_s / len(fleet.serials) * 1e6, 2)}
    ctx.engine.dispose()
    return out


# --- checks after a run ----------------------------------------------------------------------------

def check_written(url: str, since: datetime, until: datetime, expected_devices: int) -> dict[str, Any]:
    """After the server stopped (and flushed on shutdown): every device sent a heartbeat has a
    last_seen inside the run, and no license counts more connected time than it could have."""
    from entitle_device import access_commander as rules

    from entitle.access_commander import services as ac
    from entitle.access_commander.models import AcLicense, Device
    from entitle.db import make_engine, make_session_factory

    engine = make_engine(url)
    with make_session_factory(engine)() as s:
        heard = s.scalar(select(func.count()).select_from(Device).where(Device.last_seen >= since)) or 0
        future = s.scalar(select(func.count()).select_from(Device).where(Device.last_seen > until)) or 0
        over = 0
        for lic in s.scalars(select(AcLicense).where(AcLicense.replaced_at.is_(None))):
            if rules.connected_time(ac.record_of(lic), until) > until - lic.added_at:
                over += 1
    engine.dispose()
    ok = heard == expected_devices and future == 0 and over == 0
    return {"devices_heard": heard, "devices_expected": expected_devices, "last_seen_after_run": future,
            "licenses_over_counted": over, "ok": ok}


# --- one database ------------------------------------------------------------------------------------

def summary(r: LoadResult, ok: int) -> dict[str, Any]:
    return {"requests": r.requests, "seconds": round(r.seconds, 3), "per_second": round(r.per_second, 1),
            "p50_ms": round(r.percentile(50), 2), "p99_ms": round(r.percentile(99), 2),
            "statuses": {str(k): v for k, v in sorted(r.statuses.items())}, "not_ok": r.not_ok(ok)}


def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    started = time.perf_counter()
    fleet = build_fleet(db.url, workdir, installations=args.installations, devices=args.devices)
    out: dict[str, Any] = {"version": db.version, "installations": args.installations, "devices": args.devices,
                           "build_seconds": round(time.perf_counter() - started, 1)}
    console.print(f"  {args.devices:,} devices in {args.installations} installations, licenses included, "
                  f"in {out['build_seconds']} s; timing one flush in-process…")
    out["flush"] = flush_cost(db.url, fleet)
    ping = get("/api/v1/ping")
    out["http"] = []
    for workers in args.workers:
        console.print(f"  {workers} server process(es), {args.connections} connections: /api/v1/ping, then "
                      f"heartbeats ({args.warmup:g} s warm-up + {args.duration:g} s each)…")
        requests = HeartbeatRequests(fleet)
        since = datetime.now(UTC)
        with serving(db.url, workers=workers, workdir=workdir) as port:
            bare = run_load(port, lambda _i: ping, connections=args.connections,
                            warmup=args.warmup, duration=args.duration)
            beats = run_load(port, requests, connections=args.connections,
                             warmup=args.warmup, duration=args.duration)
        until = datetime.now(UTC)
        ratio = beats.per_second / bare.per_second if bare.per_second else 0.0
        p99 = beats.percentile(99)
        expected = min(requests.sent, len(fleet.serials)) if not beats.all_statuses.keys() - {202} else -1
        out["http"].append({
            "workers": workers, "connections": args.connections,
            "ping": summary(bare, 200), "heartbeat": summary(beats, 202),
            "heartbeat_to_ping": round(ratio, 3),
            "goal_met": ratio >= GOAL_RATIO and p99 < GOAL_P99_MS and beats.not_ok(202) == 0,
            "heartbeats_sent": requests.sent,
            "check": check_written(db.url, since, until, expected),
        })
        if args.state:
            # Separately, so that the check above sees what the heartbeats alone wrote.
            with serving(db.url, workers=workers, workdir=workdir) as port:
                state = run_load(port, StateRequests(fleet), connections=args.connections,
                                 warmup=args.warmup, duration=args.duration)
            out["http"][-1]["state"] = summary(state, 200)
    return out


# --- output --------------------------------------------------------------------------------------------

def print_tables(report: dict[str, Any]) -> None:
    t = Table(title=f"Heartbeats over HTTP: {report['options']['devices']:,} devices, "
                    f"{report['options']['installations']} installations, "
                    f"{report['options']['connections']} keep-alive connections, Python load generator")
    for col in ("database", "workers", "ping req/s", "ping p50 / p99 ms", "heartbeats/s", "heartbeat p50 / p99 ms",
                "heartbeat ÷ ping", "non-2xx", "goal", "written", "/ac/state req/s", "state p50 / p99 ms"):
        t.add_column(col, justify="left" if col == "database" else "right")
    flushes = []
    for name, d in report["databases"].items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        f = d["flush"]["second"]
        flushes.append(f"  {name}: one flush of {f['devices']:,} devices in {d['installations']} installations: "
                       f"{d['flush']['first']['flush_ms']:,.0f} ms (first), {f['flush_ms']:,.0f} ms (second); "
                       f"buffering a heartbeat: {f['record_us_per_heartbeat']} µs")
        for h in d["http"]:
            b, r = h["ping"], h["heartbeat"]
            c = h["check"]
            t.add_row(name, str(h["workers"]), f"{b['per_second']:,.0f}", f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}",
                      f"{r['per_second']:,.0f}", f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
                      f"{h['heartbeat_to_ping']:.2f}", str(b["not_ok"] + r["not_ok"]),
                      "[green]met[/]" if h["goal_met"] else "[red]NOT MET[/]",
                      ("[green]ok[/]" if c["ok"] else "[red]MISMATCH[/]") + f" {c['devices_heard']:,}",
                      *((f"{h['state']['per_second']:,.0f}", f"{h['state']['p50_ms']:.0f} / {h['state']['p99_ms']:.0f}")
                        if "state" in h else ("-", "-")))
    console.print(t)
    console.print(f"  goal: heartbeats/s ≥ {GOAL_RATIO:.0%} of ping's, heartbeat p99 < {GOAL_P99_MS:g} ms, "
                  "no refusals. written: devices whose last_seen is inside the run after the server stopped "
                  "(= devices sent a heartbeat), no license over-counted. /ac/state: the one-transaction-per-report "
                  "path, same fleet, for comparison.")
    for line in flushes:
        console.print(line)


def main(argv: list[str] | None = None) -> int:
    from bench.run import machine, run_report

    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "heartbeat",
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "notes": ["The load generator runs on the same cores as the server."],
        "databases": {},
    }
    return run_report(report, title="Entitle heartbeat benchmark", stem="heartbeat", args=args, bench_database=bench_database,
                      print_tables=print_tables,
                      failed=lambda r: any(not h["check"]["ok"] for d in r["databases"].values() for h in d.get("http", [])))


if __name__ == "__main__":
    sys.exit(main())
