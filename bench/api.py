"""``python -m bench.run api``: what the API layer costs against the bare endpoint (issue 17).

    python -m bench.run api [--quick] [--databases sqlite,postgresql] [--connections 16]
                            [--duration S] [--warmup S] [--rounds N] [--cases ping,healthz,…]
                            [--scale-workers 1,2,4] [--no-scale] [--server-src DIR]

One server process (uvicorn, the real app) per database; in the same run, in turns, it answers
the bare endpoint ``GET /api/v1/ping``, ``GET /healthz``, the authenticated reads (``GET /orgs``,
the wallet, an AXIS product's status, an Access Commander installation's status, a My2N site
dashboard of 50 apartments), ``GET /openapi.json``, and the writes: redeem (a key never sent
before and a fresh Idempotency-Key per request), an AXIS allocation of one unit, an Access
Commander license generated again. One customer organization per connection, each with its
owner's API token. Every case runs ``--rounds`` times, the cases taking turns, and is reported
as its median rate, its p50/p99, the server's CPU time per request, and its ratio to ping's rate
in the same round (the ratio is what to compare: the load generator shares the cores).

Then, in-process, the SQL statements each request runs, per transaction (SQLAlchemy events), and
on PostgreSQL the scale-out curve: redeem and allocate with ``--scale-workers`` server processes.
Writes every figure to ``bench/results/api-<UTC time>.json``; docs/benchmarks.md ("The API
layer") says what they mean.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import Engine, event, func, make_url, select  # noqa: E402

from bench import databases, floor  # noqa: E402
from bench.load import LoadResult, get, post_json, run_load  # noqa: E402
from bench.server import Server, server_process  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 170)

POSTGRES_URL = os.environ.get("ENTITLE_BENCH_API_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/entitle_bench_api")
API = "/api/v1"
AC_PART = "91379040"  # Access Commander +5 devices, sold everywhere: the redeemed keys and the licenses
AXIS_PART = "AXIS-ACS-CORE-1Y"
AXIS_PRODUCT = "axis-camera-station"
APARTMENTS = 50
READS = ("orgs", "wallet", "axis_status", "ac_status", "my2n_dashboard")
WRITES = ("redeem", "allocate", "ac_license")
# What every authenticated read pays before its own work (bench/floor.py): the remembered actor
# alone, then with the request's session and one SELECT 1 through it. Served by bench.floor's app,
# so not with --server-src.
FLOOR = ("floor_actor", "floor_statement")
CASES = ("ping", "healthz", *FLOOR, *READS, "openapi", *WRITES)
GOALS = {"healthz": 0.5, **{r: 0.3 for r in READS}, "redeem": 0.1}
STATUS_OK = {"allocate": 201, "ac_license": 201}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run api", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="2 s windows, 1 round: checks that everything works")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--connections", type=int, default=16,
                   help="concurrent keep-alive connections, one customer organization each (default 16)")
    p.add_argument("--duration", type=float, help="seconds measured per case and round (default 5; 2 with --quick)")
    p.add_argument("--warmup", type=float, help="seconds of load before each window (default 1; 0.5 with --quick)")
    p.add_argument("--rounds", type=int, help="rounds of every case, taking turns (default 3; 1 with --quick)")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, of: {', '.join(CASES)}")
    p.add_argument("--scale-workers", default="1,2,4",
                   help="PostgreSQL: server processes for the scale-out curve of redeem and allocate (default 1,2,4)")
    p.add_argument("--scale-duration", type=float, help="seconds per scale-out window (default: --duration)")
    p.add_argument("--no-scale", dest="scale", action="store_false", help="skip the scale-out curve")
    p.add_argument("--keys", type=int, help="keys minted for redeeming (default: enough for the run)")
    p.add_argument("--server-src", type=Path,
                   help="serve the app from this source tree (its 'src' dir, put first on PYTHONPATH): "
                        "the same benchmark against other code, e.g. a copy of the tree before a change")
    p.add_argument("--postgres-url", default=POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (dropped and rebuilt; never 'test'); "
                        "also ENTITLE_BENCH_API_POSTGRES_URL")
    args = p.parse_args(argv)
    args.duration = args.duration or (2.0 if args.quick else 5.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.scale_duration = args.scale_duration or args.duration
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.databases) - {"sqlite", "postgresql"}:
        p.error("use sqlite and/or postgresql")
    args.cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    if args.server_src is not None:  # another tree's app: without bench.floor's routes
        args.cases = [c for c in args.cases if c not in FLOOR]
    if set(args.cases) - set(CASES):
        p.error(f"unknown case(s): {', '.join(sorted(set(args.cases) - set(CASES)))}")
    if "ping" not in args.cases:
        args.cases.insert(0, "ping")  # every ratio is to ping
    args.scale_workers = [int(w) for w in args.scale_workers.split(",") if w.strip()]
    if args.server_src is not None and not (args.server_src / "entitle" / "api" / "app.py").is_file():
        p.error("--server-src must be a 'src' directory holding the entitle package")
    if make_url(args.postgres_url).database in (None, "", "test"):
        p.error("--postgres-url must name the benchmark's own database, not the test suite's 'test'")
    if args.connections < 1:
        p.error("--connections must be at least 1")
    return args


# --- the world: built in-process, through the API itself --------------------------------------------

@dataclass
class Customer:
    org_id: int
    token: str
    installation_id: int
    site_id: int


@dataclass
class World:
    customers: list[Customer]
    codes: list[str]  # keys of AC_PART never redeemed, for the redeem case
    pool_batch: int  # their batch


def _context(url: str, workdir: Path) -> Any:
    from entitle.config import Settings
    from entitle.context import build

    # The same key file the server gets (bench/server.py): licenses are signed with the keys made here.
    return build(Settings(database_url=url, rate_limits_enabled=False, secret_key_file=str(workdir / "secret.key"),
                          log_level="WARNING"))


@contextmanager
def in_process(url: str, workdir: Path) -> Iterator[tuple[Any, Any]]:
    """The app in this process (FastAPI's test client) and its context."""
    from fastapi.testclient import TestClient

    from entitle.api.app import create_app

    ctx = _context(url, workdir)
    try:
        with TestClient(create_app(ctx=ctx)) as client:
            yield client, ctx
    finally:
        ctx.engine.dispose()


def _ok(r: Any, status: int = 200) -> Any:
    if r.status_code != status:
        raise RuntimeError(f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text[:500]}")
    return r.json() if r.headers.get("content-type", "").startswith("application/json") else r.text


def build_world(url: str, workdir: Path, *, customers: int, keys: int) -> World:
    """Catalog, customers (an organization, its owner, an API token), keys minted through the
    services; everything else through the API as each owner: a wallet, an AXIS system of 8
    cameras with its subscription started and 1,000,000 units, an Access Commander installation
    with a connected license device and a license, a My2N site of 50 apartments (CSV import)."""
    from bench import world as bench_world
    from entitle.actors import operator
    from entitle.db import transaction
    from entitle.keys import services as keys_services

    # Every process of the run (this one, the servers) keys the history with the same secret key.
    os.environ["ENTITLE_SECRET_KEY_FILE"] = str(workdir / "secret.key")
    made = bench_world.build(url, customers=customers)
    ctx = _context(url, workdir)
    cli = operator("bench")
    now = datetime.now(UTC)
    with transaction(ctx.sessions) as s:
        pool = keys_services.mint(s, sku_part=AC_PART, quantity_per_key=1, count=keys, actor=cli, now=now,
                                  keep_codes=True)
    with transaction(ctx.sessions) as s:
        wallet_keys = keys_services.mint(s, sku_part=AC_PART, quantity_per_key=10, count=customers, actor=cli,
                                         now=now, keep_codes=True).codes
        axis_keys = keys_services.mint(s, sku_part=AXIS_PART, quantity_per_key=1_000_000, count=customers, actor=cli,
                                       now=now, keep_codes=True).codes
    ctx.engine.dispose()
    out = []
    idem = itertools.count()
    with in_process(url, workdir) as (client, _ctx):
        for i, c in enumerate(made):
            h = {"Authorization": f"Bearer {c.token}"}

            def post(path: str, body: Any, status: int = 200, *, idempotent: bool = False, h: dict[str, str] = h) -> Any:
                headers = {**h, "Idempotency-Key": f"world-{next(idem)}"} if idempotent else h
                return _ok(client.post(API + path, json=body, headers=headers), status)

            o = c.org_id
            for code in (wallet_keys[i], axis_keys[i]):
                post(f"/orgs/{o}/wallet/redeem", {"key": code}, idempotent=True)
            system = post(f"/orgs/{o}/axis/systems", {"uid": f"ACS-{i}", "name": "HQ", "product": AXIS_PRODUCT}, 201)
            post(f"/orgs/{o}/axis/systems/{system['id']}/devices",
                 {"devices": [{"serial": f"CAM-{i}-{n}", "license_type": "core"} for n in range(8)]}, 201)
            post(f"/orgs/{o}/axis/products/{AXIS_PRODUCT}/subscription", None, 201)
            inst = post(f"/orgs/{o}/ac/installations", {"name": f"Plant {i}", "heartbeat_timeout_seconds": 86400},
                        201)["installation"]
            base = f"/orgs/{o}/ac/installations/{inst['id']}"
            for n in range(3):
                post(f"{base}/devices", {"serial": f"LD-{i}-{n}", "type": "ip_intercom"}, 201)
                post(f"{base}/devices/LD-{i}-{n}/state", {"connected": True})
            post(f"{base}/licenses", {"license_device": f"LD-{i}-0", "packages": [{"part_number": AC_PART, "quantity": 1}]},
                 201, idempotent=True)
            site = post(f"/orgs/{o}/sites", {"name": f"Block {i}"}, 201)
            rows = ["apartment,serial,kind,local_mode", f",IC-{i},intercom,false"]
            for a in range(APARTMENTS):
                rows += [f"{a + 1:03d},PH-{i}-{a},phone,false", f"{a + 1:03d},AU-{i}-{a},answering_unit,false"]
                if a % 5 == 0:
                    rows.append(f"{a + 1:03d},TB-{i}-{a},tablet,{'true' if a % 10 == 0 else 'false'}")
            _ok(client.post(f"{API}/orgs/{o}/sites/{site['id']}/import", content="\n".join(rows).encode(),
                            headers={**h, "Content-Type": "text/csv"}))
            out.append(Customer(o, c.token, inst["id"], site["id"]))
    return World(out, pool.codes, pool.batch.id)


# --- the requests -----------------------------------------------------------------------------------

def _auth(c: Customer) -> dict[str, str]:
    return {"Authorization": f"Bearer {c.token}"}


def _get(path: str, headers: dict[str, str]) -> bytes:
    lines = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    return f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{lines}\r\n".encode()


class Requests:
    """The request source of each case: per connection, its customer's requests."""

    def __init__(self, world: World, run_id: str) -> None:
        self.world = world
        self.codes = iter(world.codes)
        self.counter = itertools.count()
        self.run_id = run_id
        self.sent: dict[str, int] = {}

    def _customer(self, connection: int) -> Customer:
        return self.world.customers[connection % len(self.world.customers)]

    def _idem(self, case: str) -> str:
        return f"bench-{self.run_id}-{case}-{next(self.counter)}"

    def source(self, case: str) -> Callable[[int], bytes | None]:
        fixed: dict[str, Callable[[Customer], str]] = {
            "floor_actor": lambda c: floor.ACTOR,
            "floor_statement": lambda c: floor.STATEMENT.format(org_id=c.org_id),
            "orgs": lambda c: f"{API}/orgs",
            "wallet": lambda c: f"{API}/orgs/{c.org_id}/wallet",
            "axis_status": lambda c: f"{API}/orgs/{c.org_id}/axis/products/{AXIS_PRODUCT}",
            "ac_status": lambda c: f"{API}/orgs/{c.org_id}/ac/installations/{c.installation_id}",
            "my2n_dashboard": lambda c: f"{API}/orgs/{c.org_id}/sites/{c.site_id}/dashboard",
        }
        if case in ("ping", "healthz", "openapi"):
            raw = get({"ping": f"{API}/ping", "healthz": "/healthz", "openapi": "/openapi.json"}[case])
            return lambda _i: raw
        if case in fixed:
            by_customer = [_get(fixed[case](c), _auth(c)) for c in self.world.customers]
            return lambda i: by_customer[i % len(by_customer)]

        def write(i: int) -> bytes | None:
            c = self._customer(i)
            headers = {**_auth(c), "Idempotency-Key": self._idem(case)}
            if case == "redeem":
                code = next(self.codes, None)
                if code is None:
                    return None
                path, body = f"{API}/orgs/{c.org_id}/wallet/redeem", {"key": code}
            elif case == "allocate":
                path = f"{API}/orgs/{c.org_id}/axis/products/{AXIS_PRODUCT}/allocations"
                body = {"lines": [{"license_type": "core", "year": 0, "units": 1}]}
            else:
                path = f"{API}/orgs/{c.org_id}/ac/installations/{c.installation_id}/licenses"
                body = {"license_device": f"LD-{self.world.customers.index(c)}-0",
                        "packages": [{"part_number": AC_PART, "quantity": 1}]}
            self.sent[case] = self.sent.get(case, 0) + 1
            return post_json(path, json.dumps(body).encode(), headers)

        return write


# --- measuring ----------------------------------------------------------------------------------------

def backend_cpu_seconds(database: str | None) -> float:
    """CPU time so far of the PostgreSQL backends serving ``database`` (on this machine; other
    databases' backends, e.g. test suites', are left out): what the database spends per request."""
    if not database:
        return 0.0
    ticks, total, wanted = os.sysconf("SC_CLK_TCK"), 0, f" {database} ".encode()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if wanted not in Path(entry.path, "cmdline").read_bytes().replace(b"\0", b" ") + b" ":
                continue
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        if not stat[stat.index("(") + 1:].startswith("postgres"):
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def measure(server: Server, source: Callable[[int], bytes | None], *, ok: int, args: argparse.Namespace,
            duration: float | None = None, database: str | None = None) -> dict[str, Any]:
    cpu, db_cpu = server.cpu_seconds(), backend_cpu_seconds(database)
    r: LoadResult = run_load(server.port, source, connections=args.connections, warmup=args.warmup,
                             duration=duration or args.duration)
    cpu, db_cpu = server.cpu_seconds() - cpu, backend_cpu_seconds(database) - db_cpu
    answered = sum(r.all_statuses.values())
    return {"requests": r.requests, "seconds": round(r.seconds, 3), "per_second": round(r.per_second, 1),
            "p50_ms": round(r.percentile(50), 2), "p99_ms": round(r.percentile(99), 2),
            "statuses": {str(k): v for k, v in sorted(r.statuses.items())}, "not_ok": r.not_ok(ok),
            "all_ok": r.all_statuses.get(ok, 0), "ran_out": r.ran_out,
            "cpu_ms_per_request": round(cpu / answered * 1000, 3) if answered else None,
            "database_cpu_ms_per_request": round(db_cpu / answered * 1000, 3) if answered and database else None}


def median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def count_statements(url: str, workdir: Path, world: World, code: str) -> dict[str, Any]:
    """SQL statements of one request of each case, in-process: outside any transaction and per
    transaction (BEGIN … COMMIT/ROLLBACK on a connection), counted with SQLAlchemy's events."""
    out: dict[str, Any] = {}
    with in_process(url, workdir) as (client, ctx):
        engine: Engine = ctx.engine
        log: list[tuple[int, str]] = []  # (connection id, "BEGIN" / statement / "END")

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            log.append((id(conn.connection.dbapi_connection), "BEGIN"))

        @event.listens_for(engine, "commit")
        def _commit(conn: Any) -> None:
            log.append((id(conn.connection.dbapi_connection), "END"))

        @event.listens_for(engine, "rollback")
        def _rollback(conn: Any) -> None:
            log.append((id(conn.connection.dbapi_connection), "END"))

        @event.listens_for(engine, "before_cursor_execute")
        def _stmt(conn: Any, _cursor: Any, statement: str, *_a: Any) -> None:
            if not statement.startswith("BEGIN"):  # SQLite's explicit BEGIN (IMMEDIATE)
                log.append((id(conn.connection.dbapi_connection), " ".join(statement.split())[:90]))

        c = world.customers[0]
        h = _auth(c)
        n = itertools.count()
        calls: dict[str, Callable[[], Any]] = {
            "healthz": lambda: client.get("/healthz"),
            "orgs": lambda: client.get(f"{API}/orgs", headers=h),
            "wallet": lambda: client.get(f"{API}/orgs/{c.org_id}/wallet", headers=h),
            "axis_status": lambda: client.get(f"{API}/orgs/{c.org_id}/axis/products/{AXIS_PRODUCT}", headers=h),
            "ac_status": lambda: client.get(f"{API}/orgs/{c.org_id}/ac/installations/{c.installation_id}", headers=h),
            "my2n_dashboard": lambda: client.get(f"{API}/orgs/{c.org_id}/sites/{c.site_id}/dashboard", headers=h),
            "redeem": lambda: client.post(f"{API}/orgs/{c.org_id}/wallet/redeem", json={"key": code},
                                          headers={**h, "Idempotency-Key": f"count-{code}"}),
            "allocate": lambda: client.post(f"{API}/orgs/{c.org_id}/axis/products/{AXIS_PRODUCT}/allocations",
                                            json={"lines": [{"license_type": "core", "year": 0, "units": 1}]},
                                            headers={**h, "Idempotency-Key": f"count-allocate-{next(n)}"}),
            "ac_license": lambda: client.post(
                f"{API}/orgs/{c.org_id}/ac/installations/{c.installation_id}/licenses",
                json={"license_device": "LD-0-0", "packages": [{"part_number": AC_PART, "quantity": 1}]},
                headers={**h, "Idempotency-Key": f"count-license-{next(n)}"}),
        }
        for name, call in calls.items():
            if name not in ("redeem",):
                call()  # warm: the token looked up, statements compiled
            client.app.state.answers.forget()  # the statements of an answer made, not remembered
            log.clear()
            r = call()
            if r.status_code not in (200, 201):
                raise RuntimeError(f"{name}: {r.status_code} {r.text[:300]}")
            transactions: list[list[str]] = []
            open_: dict[int, list[str]] = {}
            outside = 0
            for conn, what in log:
                if what == "BEGIN":
                    open_[conn] = []
                elif what == "END":
                    if conn in open_:
                        transactions.append(open_.pop(conn))
                elif conn in open_:
                    open_[conn].append(what)
                else:
                    outside += 1
            transactions += open_.values()
            out[name] = {"transactions": [len(t) for t in transactions], "outside": outside,
                         "total": outside + sum(len(t) for t in transactions),
                         "statements": transactions}
    return out


# --- one database ---------------------------------------------------------------------------------------

def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    console.print(f"[bold]{name}[/] ({db.version}): building the world through the API…")
    windows = args.rounds + (len(args.scale_workers) if args.scale and name == "postgresql" else 0)
    keys = args.keys or max(5_000, int(windows * (args.duration + args.warmup) * 900) + 2_000)
    world = build_world(db.url, workdir, customers=args.connections, keys=keys)
    out: dict[str, Any] = {"version": db.version, "customers": len(world.customers), "keys": keys}
    out["statements"] = {}
    if args.server_src is None:  # counted in this process, so of this tree's code
        console.print("  counting the statements of one request of each case (in-process)…")
        out["statements"] = count_statements(db.url, workdir, world, world.codes.pop())
    env = {}
    if args.server_src is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(args.server_src.resolve()), os.environ.get("PYTHONPATH")]))
    requests = Requests(world, datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
    pg_database = make_url(db.url).database if name == "postgresql" else None
    rounds: list[dict[str, Any]] = []
    ok_redeems = 1 if out["statements"] else 0  # the one counted above
    console.print(f"  one server process, {args.connections} connections, {args.rounds} round(s) of "
                  f"{len(args.cases)} cases ({args.warmup:g} s warm-up + {args.duration:g} s each)…")
    factory = "entitle.api.app:app_from_env"
    if args.server_src is None:
        factory = floor.FACTORY
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [floor.ROOT, os.environ.get("PYTHONPATH")]))
    with server_process(db.url, workers=1, workdir=workdir, env=env, factory=factory) as server:
        for _ in range(args.rounds):
            got = {}
            for case in args.cases:
                got[case] = measure(server, requests.source(case), ok=STATUS_OK.get(case, 200), args=args,
                                    database=pg_database)
                if case == "redeem":
                    ok_redeems += got[case]["all_ok"]
            rounds.append(got)
    out["rounds"] = rounds
    out["cases"] = {}
    for case in args.cases:
        rs = [r[case] for r in rounds]
        ratios = [r[case]["per_second"] / r["ping"]["per_second"] for r in rounds if r["ping"]["per_second"]]
        out["cases"][case] = {
            "per_second": round(median([x["per_second"] for x in rs]), 1),
            "p50_ms": round(median([x["p50_ms"] for x in rs]), 2),
            "p99_ms": round(median([x["p99_ms"] for x in rs]), 2),
            "cpu_ms_per_request": round(median([x["cpu_ms_per_request"] or 0 for x in rs]), 3),
            "database_cpu_ms_per_request": (round(median([x["database_cpu_ms_per_request"] or 0 for x in rs]), 3)
                                            if pg_database else None),
            "to_ping": round(median(ratios), 3), "to_ping_each_round": [round(x, 3) for x in ratios],
            "not_ok": sum(x["not_ok"] for x in rs),
            "goal": GOALS.get(case),
        }
    if args.scale and name == "postgresql":
        out["scale"] = []
        for workers in args.scale_workers:
            console.print(f"  scale-out: {workers} server process(es): ping, redeem, allocate "
                          f"({args.warmup:g} s warm-up + {args.scale_duration:g} s each)…")
            with server_process(db.url, workers=workers, workdir=workdir, env=env) as server:
                row: dict[str, Any] = {"workers": workers}
                for case in ("ping", "redeem", "allocate"):
                    row[case] = measure(server, requests.source(case), ok=STATUS_OK.get(case, 200), args=args,
                                        duration=args.scale_duration, database=pg_database)
                ok_redeems += row["redeem"]["all_ok"]
            out["scale"].append(row)
    out["check"] = check(db.url, world.pool_batch, ok_redeems)
    return out


def check(url: str, pool_batch: int, ok_redeems: int) -> dict[str, Any]:
    """Every 200 to a redeem is exactly one key of the pool turned used (the world's own redeems apart)."""
    from entitle.db import make_engine
    from entitle.keys.models import LicenseKey

    engine = make_engine(url)
    with engine.connect() as conn:
        used = conn.execute(select(func.count()).select_from(LicenseKey).where(
            LicenseKey.batch_id == pool_batch, LicenseKey.state == "used")).scalar_one()
    engine.dispose()
    return {"redeem_200_answers": ok_redeems, "pool_keys_used": int(used), "ok": int(used) == ok_redeems}


# --- output ------------------------------------------------------------------------------------------------

def print_tables(report: dict[str, Any]) -> None:
    for name, d in report["databases"].items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        t = Table(title=f"{name}: one server process, {report['options']['connections']} connections, "
                        f"median of {report['options']['rounds']} round(s)")
        for col in ("case", "req/s", "p50 / p99 ms", "server CPU ms/req", "database CPU ms/req", "÷ ping",
                    "each round", "goal", "statements", "non-2xx"):
            t.add_column(col, justify="left" if col == "case" else "right")
        for case, c in d["cases"].items():
            st = d["statements"].get(case)
            stmts = "-" if st is None else f"{st['total']} ({'+'.join(map(str, st['transactions'])) or 0} in txn)"
            goal = c["goal"]
            verdict = "-" if goal is None else (f"[green]≥ {goal}[/]" if c["to_ping"] >= goal else f"[red]< {goal}[/]")
            db_cpu = c.get("database_cpu_ms_per_request")
            t.add_row(case, f"{c['per_second']:,.0f}", f"{c['p50_ms']:.1f} / {c['p99_ms']:.1f}",
                      f"{c['cpu_ms_per_request']:.2f}", "-" if db_cpu is None else f"{db_cpu:.2f}", f"{c['to_ping']:.3f}",
                      " ".join(f"{x:.2f}" for x in c["to_ping_each_round"]), verdict, stmts, str(c["not_ok"]))
        console.print(t)
        if d.get("scale"):
            s = Table(title=f"{name}: scale-out with server processes")
            for col in ("workers", "ping req/s", "redeem req/s", "redeem p50 / p99 ms", "redeem CPU ms/req: server, db",
                        "allocate req/s", "allocate p50 / p99 ms", "allocate CPU ms/req: server, db", "non-2xx"):
                s.add_column(col, justify="right")
            for row in d["scale"]:
                p, r, a = row["ping"], row["redeem"], row["allocate"]
                s.add_row(str(row["workers"]), f"{p['per_second']:,.0f}", f"{r['per_second']:,.0f}",
                          f"{r['p50_ms']:.0f} / {r['p99_ms']:.0f}",
                          f"{r['cpu_ms_per_request']:.2f}, {r['database_cpu_ms_per_request'] or 0:.2f}",
                          f"{a['per_second']:,.0f}", f"{a['p50_ms']:.0f} / {a['p99_ms']:.0f}",
                          f"{a['cpu_ms_per_request']:.2f}, {a['database_cpu_ms_per_request'] or 0:.2f}",
                          str(p["not_ok"] + r["not_ok"] + a["not_ok"]))
            console.print(s)
        c = d["check"]
        console.print(f"  {name}: {c['redeem_200_answers']:,} redeems answered 200, {c['pool_keys_used']:,} keys of "
                      f"the pool used: " + ("[green]ok[/]" if c["ok"] else "[red]MISMATCH[/]"))


def main(argv: list[str] | None = None) -> int:
    from bench.run import machine, run_report

    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "api",
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "postgres_url"},
        "notes": ["Rate limits are OFF (ENTITLE_RATE_LIMITS_ENABLED=false).",
                  "The load generator runs on the same cores as the server: compare the ratios to ping."],
        "databases": {},
    }
    return run_report(report, title="Entitle API benchmark", stem="api", args=args, bench_database=bench_database,
                      print_tables=print_tables,
                      failed=lambda r: any(not d.get("check", {"ok": True})["ok"] for d in r["databases"].values()))


if __name__ == "__main__":
    sys.exit(main())
