"""``make bench``: minting and redeeming license keys on SQLite and PostgreSQL.

    python -m bench.run [--quick] [--only mint|redeem] [--databases sqlite,postgresql]
                        [--keys N] [--duration S] [--connections C] [--workers 1,2]
    python -m bench.run heartbeat [--quick] …   # Access Commander heartbeats (bench/heartbeat.py)
    python -m bench.run api [--quick] …         # the API layer's reads and writes vs ping (bench/api.py)
    python -m bench.run verify [--seconds S]     # license-file verifies vs raw Ed25519 (bench/verify.py)
    python -m bench.run portal [--sites N] …    # the home page of a large organization vs ping (bench/portal.py)
    python -m bench.run my2n [--old-full] …      # the My2N site dashboard at 50,000 apartments (bench/my2n.py)
    python -m bench.run events [--events N] …    # webhook deliveries per second (bench/events.py)
    python -m bench.run cli [--runs N]           # the console's cold starts vs `import typer` (bench/cli.py)
    python -m bench.run history [--appends N] …  # one history append vs a one-row write (bench/history.py)
    python -m bench.run sign-in [--connections C] … # 40 wrong sign-ins at once: memory, /healthz (bench/signin.py)

Prints the figures as tables and writes them, with the machine and the options, to
``bench/results/bench-<UTC time>.json``. docs/benchmarks.md says what each figure means.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# Setting up the benchmark's users hashes their passwords; the server never does during a run.
os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import func, make_url, select  # noqa: E402
from sqlalchemy.exc import OperationalError  # noqa: E402

from bench import databases, world  # noqa: E402
from bench.load import LoadResult, get, post_json, run_load  # noqa: E402
from bench.server import serving  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
# Wide enough for the tables when the output is a file or a pipe, not a terminal.
console = Console(width=None if sys.stdout.isatty() else 130)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="short runs (3 s windows, 20,000 keys) to check that everything works")
    p.add_argument("--only", choices=["mint", "redeem"], help="run one of the two benchmarks")
    p.add_argument("--databases", default="sqlite,postgresql",
                   help="comma-separated: sqlite, postgresql (default both)")
    p.add_argument("--keys", type=int, help="keys in the large mint (default 100,000; 20,000 with "
                                            "--quick); the small mint is a fifth of it")
    p.add_argument("--duration", type=float, help="seconds measured per HTTP run (default 10; 3 with --quick)")
    p.add_argument("--warmup", type=float, help="seconds of load before each measured window "
                                                "(default 2; 0.5 with --quick)")
    p.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    p.add_argument("--workers", default="1,2", help="server processes to try, comma-separated (default 1,2)")
    p.add_argument("--postgres-url", default=databases.POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (dropped and rebuilt; never 'test')")
    args = p.parse_args(argv)
    args.keys = args.keys or (20_000 if args.quick else 100_000)
    args.duration = args.duration or (3.0 if args.quick else 10.0)
    args.warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 2.0)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    unknown = set(args.databases) - {"sqlite", "postgresql"}
    if unknown:
        p.error(f"unknown database(s): {', '.join(sorted(unknown))}; use sqlite and/or postgresql")
    args.workers = [int(w) for w in args.workers.split(",")]
    if make_url(args.postgres_url).database in (None, "", "test"):
        p.error("--postgres-url must name the benchmark's own database (it is dropped and rebuilt), "
                "not the test suite's 'test'")
    if args.keys < 5:
        p.error("--keys must be at least 5")
    return args


# --- the machine -------------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpus": os.cpu_count(), "cpu_model": cpu, "python": platform.python_version(),
            "platform": platform.platform(), "load_average_at_start": os.getloadavg(),
            "sha256_1kib_per_s_at_start": cpu_speed()}


# A quiet 2-core machine of the project's kind hashes ~1,300,000 KiB-blocks per second on one core.
QUIET_SHA256_PER_S = 1_300_000


def cpu_speed(seconds: float = 0.3) -> int:
    """SHA-256 of 1 KiB per second on one core: shows how much of the CPU this run really had."""
    block, n = b"x" * 1024, 0
    start = time.perf_counter()
    while (elapsed := time.perf_counter() - start) < seconds:
        for _ in range(1000):
            hashlib.sha256(block).digest()
        n += 1000
    return int(n / elapsed)


# --- minting -----------------------------------------------------------------------------------

def mint_in_subprocess(url: str, count: int, csv_path: Path) -> dict[str, Any]:
    """A fresh process per mint: its peak RSS then belongs to that mint alone."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-m", "bench.mint", url, str(count), str(csv_path)],
                         cwd=ROOT, env=env, check=True, capture_output=True, text=True)
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["peak_rss_growth_mib"] = (result["peak_rss_after_kib"] - result["rss_before_kib"]) / 1024
    return result


def read_codes(paths: list[Path]) -> list[str]:
    codes: list[str] = []
    for path in paths:
        with path.open(newline="") as f:
            rows = csv.reader(f)
            next(rows)  # header
            codes.extend(row[0] for row in rows)
    return codes


# --- redeeming over HTTP ---------------------------------------------------------------------

class RedeemRequests:
    """Each request: a key never sent before, a fresh Idempotency-Key, the connection's customer."""

    def __init__(self, codes: list[str], customers: list[world.Customer], run_id: str) -> None:
        self.codes = iter(codes)
        self.customers = customers
        self.counter = itertools.count()
        self.run_id = run_id

    def __call__(self, connection: int) -> bytes | None:
        code = next(self.codes, None)
        if code is None:
            return None
        customer = self.customers[connection % len(self.customers)]
        return post_json(
            f"/api/v1/orgs/{customer.org_id}/wallet/redeem",
            json.dumps({"key": code}).encode(),
            {"Authorization": f"Bearer {customer.token}",
             "Idempotency-Key": f"bench-{self.run_id}-{next(self.counter)}"},
        )


def summary(r: LoadResult) -> dict[str, Any]:
    return {"requests": r.requests, "seconds": round(r.seconds, 3), "per_second": round(r.per_second, 1),
            "p50_ms": round(r.percentile(50), 2), "p99_ms": round(r.percentile(99), 2),
            "statuses": {str(k): v for k, v in sorted(r.statuses.items())},
            "ran_out_of_keys": r.ran_out}


def used_keys(url: str) -> int:
    from entitle.db import make_engine
    from entitle.keys.models import LicenseKey

    engine = make_engine(url)
    with engine.connect() as conn:
        n = conn.execute(select(func.count()).select_from(LicenseKey).where(LicenseKey.state == "used")).scalar_one()
    engine.dispose()
    return int(n)


# --- one database ------------------------------------------------------------------------------

def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    customers = world.build(db.url, customers=args.connections)
    out: dict[str, Any] = {"version": db.version, "customers": len(customers)}
    csvs: list[Path] = []
    if args.only in (None, "mint"):
        out["mint"] = []
        for count in (args.keys // 5, args.keys):
            path = workdir / f"{name}-{count}.csv"
            console.print(f"  minting {count:,} keys in one transaction, codes to {path.name}…")
            out["mint"].append(mint_in_subprocess(db.url, count, path))
            csvs.append(path)
    if args.only in (None, "redeem"):
        if not csvs:
            path = workdir / f"{name}-pool.csv"
            console.print(f"  minting {args.keys:,} keys to redeem…")
            mint_in_subprocess(db.url, args.keys, path)
            csvs.append(path)
        codes = read_codes(csvs)
        requests = RedeemRequests(codes, customers, datetime.now(UTC).strftime("%Y%m%d%H%M%S"))
        healthz = get("/healthz")
        out["http"] = []
        ok_total = 0
        for workers in args.workers:
            console.print(f"  {workers} server process(es), {args.connections} connections: /healthz, "
                          f"then redeem ({args.warmup:g} s warm-up + {args.duration:g} s each)…")
            with serving(db.url, workers=workers, workdir=workdir) as port:
                bare = run_load(port, lambda _i: healthz, connections=args.connections,
                                warmup=args.warmup, duration=args.duration)
                redeem = run_load(port, requests, connections=args.connections,
                                  warmup=args.warmup, duration=args.duration)
            ok_total += redeem.all_statuses.get(200, 0)
            out["http"].append({
                "workers": workers, "connections": args.connections, "healthz": summary(bare),
                "redeem": summary(redeem),
                "redeem_to_healthz": round(redeem.per_second / bare.per_second, 4) if bare.per_second else None,
            })
        # Every 200 must be exactly one key turned from active to used, and nothing else.
        used = used_keys(db.url)
        out["check"] = {"redeem_200_answers": ok_total, "keys_used_in_database": used,
                        "ok": used == ok_total}
    return out


# --- output ------------------------------------------------------------------------------------

def print_tables(report: dict[str, Any]) -> None:
    dbs = report["databases"]
    mint = Table(title="Minting keys (keys.services.mint, one transaction, CSV sink)")
    for col in ("database", "keys", "seconds", "keys/s", "peak RSS growth"):
        mint.add_column(col, justify="right" if col != "database" else "left")
    http = Table(title="HTTP, rate limits OFF, "
                       f"{report['options']['connections']} keep-alive connections, Python load generator")
    for col in ("database", "workers", "/healthz req/s", "healthz p50 / p99 ms", "redeem req/s",
                "redeem p50 / p99 ms", "redeem ÷ healthz", "non-200"):
        http.add_column(col, justify="right" if col != "database" else "left")
    for name, d in dbs.items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        for m in d.get("mint", []):
            mint.add_row(name, f"{m['count']:,}", f"{m['seconds']:.1f}", f"{m['keys_per_s']:,.0f}",
                         f"{m['peak_rss_growth_mib']:.1f} MiB")
        for h in d.get("http", []):
            b, r = h["healthz"], h["redeem"]
            bad = sum(v for k, v in r["statuses"].items() if k != "200") + \
                sum(v for k, v in b["statuses"].items() if k != "200")
            http.add_row(name, str(h["workers"]), f"{b['per_second']:,.0f}", f"{b['p50_ms']:.1f} / {b['p99_ms']:.1f}",
                         f"{r['per_second']:,.0f}" + (" (ran out of keys)" if r["ran_out_of_keys"] else ""),
                         f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f}",
                         f"{h['redeem_to_healthz']:.3f}" if h["redeem_to_healthz"] else "-", str(bad))
    if mint.row_count:
        console.print(mint)
        for name, d in dbs.items():
            ms = d.get("mint", [])
            if len(ms) == 2:
                small, large = ms
                times = large["count"] / small["count"]
                console.print(f"  {name}: {times:g}× the keys, peak RSS growth "
                              f"{small['peak_rss_growth_mib']:.1f} → {large['peak_rss_growth_mib']:.1f} MiB "
                              f"(proportional would be {times * small['peak_rss_growth_mib']:.0f} MiB): "
                              + ("bounded" if bounded(small, large) else "[red]GROWS WITH THE BATCH[/]"))
    if http.row_count:
        console.print(http)
        for name, d in dbs.items():
            if "check" in d:
                c = d["check"]
                verdict = "[green]ok[/]" if c["ok"] else "[red]MISMATCH[/]"
                console.print(f"  {name}: {c['redeem_200_answers']:,} redeems answered 200, "
                              f"{c['keys_used_in_database']:,} keys used in the database: {verdict}")


def bounded(small: dict[str, Any], large: dict[str, Any]) -> bool:
    """Proportional growth would be large/small (5×); allow 2× and 4 MiB of noise."""
    return large["peak_rss_growth_mib"] <= 2 * small["peak_rss_growth_mib"] + 4


def busy(load1: float, sha_per_s: int) -> None:
    share = sha_per_s / QUIET_SHA256_PER_S
    line = (f"Load average {load1:.1f}; SHA-256 of 1 KiB: {sha_per_s:,}/s on one core "
            f"({share:.0%} of a quiet machine of this kind).")
    if load1 > 1.0 or share < 0.8:
        console.print(f"[yellow]{line} Other processes share the cores: the figures will be low; "
                      "compare ratios within the run.[/]")
    else:
        console.print(line)


def run_report(report: dict[str, Any], *, title: str, stem: str, args: Any,
               bench_database: Callable[[str, Any, Path], dict[str, Any]],
               print_tables: Callable[[dict[str, Any]], None], failed: Callable[[dict[str, Any]], bool]) -> int:
    """What every benchmark does around its measurements: note the machine's load before and
    after, run ``bench_database`` for each database asked for (one that cannot be reached is
    reported as skipped), print the tables and write the report to bench/results/STEM-*.json."""
    started = datetime.fromisoformat(report["started_at"])
    m = report["machine"]
    console.print(f"[bold]{title}[/] — {m['cpus']} CPUs, Python {m['python']}")
    busy(m["load_average_at_start"][0], m["sha256_1kib_per_s_at_start"])
    with tempfile.TemporaryDirectory(prefix=f"entitle-bench-{stem}-") as tmp:
        for name in args.databases:
            try:
                report["databases"][name] = bench_database(name, args, Path(tmp))
            except OperationalError as exc:
                reason = " ".join(str(exc.orig or exc).split())
                report["databases"][name] = {"skipped": f"cannot reach the database: {reason}"}
    report["seconds"] = round((datetime.now(UTC) - started).total_seconds(), 1)
    report["machine"]["load_average_at_end"] = os.getloadavg()
    report["machine"]["sha256_1kib_per_s_at_end"] = cpu_speed()
    print_tables(report)
    busy(report["machine"]["load_average_at_end"][0], report["machine"]["sha256_1kib_per_s_at_end"])
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{stem}-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(report, indent=2, default=str) + "\n")
    console.print(f"Written to {path.relative_to(ROOT)} in {report['seconds']:.0f} s.")
    return 1 if failed(report) else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["verify"]:  # license-file verification vs raw Ed25519 (bench/verify.py)
        from bench import verify

        return verify.main(argv[1:])
    if argv[:1] == ["portal"]:  # the home page of a large organization vs ping (bench/portal.py)
        from bench import portal

        return portal.main(argv[1:])
    if argv[:1] == ["my2n"]:  # the My2N site dashboard of 50,000 apartments (bench/my2n.py)
        from bench import my2n

        return my2n.main(argv[1:])
    if argv[:1] == ["cli"]:  # cold starts of the console against `python -c "import typer"` (bench/cli.py)
        from bench import cli

        return cli.main(argv[1:])
    if argv[:1] == ["sign-in"]:  # parallel wrong sign-ins: the server's memory and /healthz (bench/signin.py)
        from bench import signin

        return signin.main(argv[1:])
    if argv[:1] == ["history"]:  # what a history append costs a business write (bench/history.py)
        from bench import history

        return history.main(argv[1:])
    if argv[:1] == ["events"]:  # webhook deliveries per second to a local receiver (bench/events.py)
        from bench import events

        return events.main(argv[1:])
    if argv[:1] == ["axis"]:  # AXIS need and licensing state of one organization (bench/axis.py)
        from bench import axis

        return axis.main(argv[1:])
    if argv[:1] == ["api"]:  # the API layer's reads and writes vs the bare endpoint (bench/api.py)
        from bench import api

        return api.main(argv[1:])
    if argv[:1] == ["heartbeat"]:  # Access Commander heartbeats vs a bare endpoint (bench/heartbeat.py)
        from bench import heartbeat

        return heartbeat.main(argv[1:])
    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "notes": ["Rate limits are OFF for the HTTP runs (ENTITLE_RATE_LIMITS_ENABLED=false).",
                  "The load generator runs on the same cores as the server."],
        "databases": {},
    }
    console.print("Rate limits are OFF for the HTTP runs.")
    return run_report(report, title="Entitle benchmark", stem="bench", args=args, bench_database=bench_database,
                      print_tables=print_tables,
                      failed=lambda r: any(not d.get("check", {"ok": True})["ok"] for d in r["databases"].values()))


if __name__ == "__main__":
    sys.exit(main())
