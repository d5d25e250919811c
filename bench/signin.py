"""``python -m bench.run sign-in``: 40 parallel wrong sign-ins against one server process, its memory
and ``/healthz`` (issue 15 point 1).

    python -m bench.run sign-in [--connections 40] [--duration S] [--databases sqlite,postgresql]

One server process (``uvicorn --workers 1``) at the production argon2 cost (time cost 3, 64 MiB:
the user's hash is made at that cost too) with the default password-check budget, started once
with rate limits OFF — every sign-in reaches the password check: the worst case, which the
per-process bound must hold alone — and once with them ON at their defaults (the account and the
address are refused before any argon2 work after 10 and 30 failures a minute). Then, for S seconds
each (default 10):

- *quiet*: a probe sends ``GET /healthz`` on one keep-alive connection every 20 ms; the server's
  RSS (``VmRSS`` of /proc/<pid>/status) is sampled every 20 ms;
- *flood*: the same probe and sampling while C connections (default 40) each send wrong-password
  ``POST /api/v1/auth/token`` back to back, the next as soon as the last is answered (401 after a
  password check, 503 ``password_checks_busy`` at once past the bound). The peak is the larger of
  the samples and the kernel's high-water mark (``VmHWM``, reset before the flood).

Reports the memory growth (peak during the flood − median RSS of the quiet phase) and the probe's
p50/p99 in both phases; fails (exit 1) when the growth reaches 300 MB or the flood's p99 200 ms
(the issue's bar). Writes the figures to ``bench/results/sign-in-<UTC time>.json``.
docs/benchmarks.md ("Sign-in floods") says what they mean.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table

from bench import databases
from bench.load import post_json, run_load
from bench.run import ROOT, console, machine, run_report
from bench.server import server_process

MB = 1_000_000
GROWTH_LIMIT_MB = 300
P99_LIMIT_MS = 200
EMAIL, PASSWORD = "flood@bench.example", "the right password 1"
# The production cost (config.py's defaults), for the server and for the user's hash.
PRODUCTION_ARGON2 = {"ENTITLE_ARGON2_TIME_COST": "3", "ENTITLE_ARGON2_MEMORY_COST": "65536"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run sign-in", description=__doc__.split("\n\n")[0])
    p.add_argument("--connections", type=int, default=40, help="parallel wrong sign-ins (default 40)")
    p.add_argument("--duration", type=float, default=10.0, help="seconds of each phase (default 10)")
    p.add_argument("--rate-limits", default="off,on", help="comma-separated: off, on (default both)")
    p.add_argument("--databases", default="sqlite", help="comma-separated: sqlite, postgresql (default sqlite)")
    p.add_argument("--postgres-url", default=databases.POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (dropped and rebuilt; never 'test')")
    args = p.parse_args(argv)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.databases) - {"sqlite", "postgresql"}:
        p.error("use sqlite and/or postgresql")
    args.rate_limits = [v.strip() for v in args.rate_limits.split(",") if v.strip()]
    if not args.rate_limits or set(args.rate_limits) - {"off", "on"}:
        p.error("--rate-limits: off and/or on")
    if args.connections < 1 or args.duration <= 0:
        p.error("--connections must be at least 1 and --duration positive")
    return args


# --- what is watched -----------------------------------------------------------------------------

def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/{pid}/status")


def reset_high_water_mark(pid: int) -> bool:
    """VmHWM := VmRSS (Linux: clear_refs 5); False where that is not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Watch:
    """Samples the server's RSS and probes /healthz, each in a thread of its own, until stopped."""

    def __init__(self, port: int, pid: int, *, every: float = 0.02) -> None:
        self.port, self.pid, self.every = port, pid, every
        self.rss_kib: list[int] = []
        self.healthz_ms: list[float] = []
        self.healthz_failed = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._sample, daemon=True),
                         threading.Thread(target=self._probe, daemon=True)]

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=30)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.rss_kib.append(status_kib(self.pid, "VmRSS"))
            self._stop.wait(self.every)

    def _probe(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
            elapsed = time.perf_counter() - started
            if ok:
                self.healthz_ms.append(elapsed * 1000)
            else:
                self.healthz_failed += 1
            self._stop.wait(max(0.0, self.every - elapsed))
        conn.close()

    def healthz(self) -> dict[str, Any]:
        ordered = sorted(self.healthz_ms)

        def pct(p: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))], 1) if ordered else float("nan")

        return {"probes": len(ordered), "failed": self.healthz_failed, "p50_ms": pct(50), "p99_ms": pct(99),
                "max_ms": round(ordered[-1], 1) if ordered else None}


# --- one database -----------------------------------------------------------------------------------

def create_user(url: str, workdir: Path) -> None:
    """The account the flood guesses at, made by the console at the production argon2 cost."""
    env = {**os.environ, **PRODUCTION_ARGON2, "ENTITLE_SECRET_KEY_FILE": str(workdir / "secret.key"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-m", "entitle.cli.main", "admin", "create", "--email", EMAIL, "--password",
                    PASSWORD, "--database-url", url], env=env, cwd=workdir, check=True, capture_output=True)


def wrong_sign_in(_connection: int) -> bytes:
    body = json.dumps({"email": EMAIL, "password": "a wrong password"}).encode()
    return post_json("/api/v1/auth/token", body, {})


def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    create_user(db.url, workdir)
    runs = []
    for limits in args.rate_limits:
        console.print(f"  rate limits {limits.upper()}:")
        runs.append(flood_once(db.url, args, workdir, limits=limits == "on"))
    return {"version": db.version, "runs": runs}


def flood_once(url: str, args: argparse.Namespace, workdir: Path, *, limits: bool) -> dict[str, Any]:
    env = {**PRODUCTION_ARGON2, "ENTITLE_RATE_LIMITS_ENABLED": "true" if limits else "false"}
    with server_process(url, workers=1, workdir=workdir, env=env) as server:
        if not limits:
            warm = run_load(server.port, wrong_sign_in, connections=1, warmup=0, duration=1.0)
            assert warm.statuses.get(401), f"a wrong sign-in was not answered 401: {warm.all_statuses}"
            time.sleep(1)  # let the warm-up's argon2 memory go back
        console.print(f"  quiet: /healthz probed every 20 ms for {args.duration:g} s…")
        with Watch(server.port, server.pid) as quiet:
            time.sleep(args.duration)
        hwm_reset = reset_high_water_mark(server.pid)
        console.print(f"  flood: {args.connections} connections of wrong sign-ins, back to back, "
                      f"for {args.duration:g} s, the probe beside them…")
        with Watch(server.port, server.pid) as flood:
            load = run_load(server.port, wrong_sign_in, connections=args.connections, warmup=0,
                            duration=args.duration)
        high_water = status_kib(server.pid, "VmHWM")
        time.sleep(1)
        after = status_kib(server.pid, "VmRSS")
    base = statistics.median(quiet.rss_kib) * 1024
    peak = max(max(flood.rss_kib) * 1024, high_water * 1024 if hwm_reset else 0)
    statuses = {str(k): v for k, v in sorted(load.all_statuses.items())}
    out = {
        "rate_limits": "on" if limits else "off", "connections": args.connections, "seconds": args.duration,
        "rss_quiet_mb": round(base / MB, 1), "rss_peak_mb": round(peak / MB, 1),
        "rss_growth_mb": round((peak - base) / MB, 1), "rss_after_mb": round(after * 1024 / MB, 1),
        "high_water_mark_reset": hwm_reset,
        "healthz_quiet": quiet.healthz(), "healthz_flood": flood.healthz(),
        "sign_ins": {"statuses": statuses, "per_second": round(load.per_second, 1),
                     "checked_per_second": round(load.statuses.get(401, 0) / load.seconds, 1) if load.seconds else 0},
    }
    q, f = out["healthz_quiet"]["p99_ms"], out["healthz_flood"]["p99_ms"]
    out["healthz_p99_flood_to_quiet"] = round(f / q, 2) if q else None
    out["ok"] = out["rss_growth_mb"] < GROWTH_LIMIT_MB and f < P99_LIMIT_MS and not flood.healthz_failed
    return out


def print_tables(report: dict[str, Any]) -> None:
    table = Table(title=f"{report['options']['connections']} parallel wrong sign-ins, one server process, "
                        "argon2 64 MiB × t=3")
    for col in ("database", "rate limits", "RSS quiet → peak", "growth", "/healthz p50 / p99 quiet", "/healthz p50 / p99 flood",
                "p99 flood ÷ quiet", "sign-ins/s (checked)", "answers", "verdict"):
        table.add_column(col, justify="left" if col in ("database", "answers", "verdict") else "right")
    for name, db in report["databases"].items():
        if "skipped" in db:
            console.print(f"[yellow]{name} skipped: {db['skipped']}[/]")
            continue
        for d in db["runs"]:
            add_row(table, name, d)
    console.print(table)
    console.print(f"The bar (issue 15): growth under {GROWTH_LIMIT_MB} MB, /healthz p99 under {P99_LIMIT_MS} ms "
                  "during the flood.")


def add_row(table: Table, name: str, d: dict[str, Any]) -> None:
    hq, hf = d["healthz_quiet"], d["healthz_flood"]
    verdict = "[green]ok[/]" if d["ok"] else "[red]OVER THE BAR[/]"
    table.add_row(name, d["rate_limits"], f"{d['rss_quiet_mb']:,.0f} → {d['rss_peak_mb']:,.0f} MB",
                  f"{d['rss_growth_mb']:,.0f} MB", f"{hq['p50_ms']:.1f} / {hq['p99_ms']:.1f} ms",
                  f"{hf['p50_ms']:.1f} / {hf['p99_ms']:.1f} ms", f"{d['healthz_p99_flood_to_quiet']:.1f}",
                  f"{d['sign_ins']['per_second']:,.0f} ({d['sign_ins']['checked_per_second']:,.1f})",
                  ", ".join(f"{k}: {v:,}" for k, v in d["sign_ins"]["statuses"].items()), verdict)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"), "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "notes": ["Rate limits OFF: every sign-in reaches the password-check bound; ON: the defaults.",
                  "The load generator and the probe run on the same cores as the server."],
        "databases": {},
    }
    return run_report(report, title="Sign-in flood", stem="sign-in", args=args, bench_database=bench_database,
                      print_tables=print_tables,
                      failed=lambda r: any(not run["ok"] for d in r["databases"].values() for run in d.get("runs", [])))
