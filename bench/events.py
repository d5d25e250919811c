"""``make bench-events``: webhook deliveries per second to a local receiver (R-CORE-8).

    python -m bench.run events [--events 5000] [--endpoints 3] [--runs 1,2t,2p] [--limit 100]
                               [--databases sqlite,postgresql] [--postgres-url URL] [--keep]

One organization with ``--endpoints`` webhook endpoints (every event type) on a receiver on
127.0.0.1 (an asyncio HTTP/1.1 server in a process of its own that checks each signature and
answers 200 at once). For each run, ``--events`` events are emitted through ``events.emit`` (the
outbox: the event and one delivery per endpoint in the same transaction, 500 events a
transaction), then workers run ``webhooks.deliver_due`` until nothing is pending: ``1`` one
worker, ``2t`` two threads of one process, ``2p`` two processes (each its own engine and HTTP
client). The figures: deliveries per second (events × endpoints) and events per second (each
event at every endpoint), from the workers' start until the last delivery was recorded.

A run stops after ``--max-seconds`` (default 120) even if deliveries are left; the rates are
then of what was delivered. Checks (else exit code 1): every delivery made is ``delivered``
after one attempt, none failed, the receiver got each (endpoint, event) at most once with a
valid signature, in event order per endpoint; ``finished`` says whether all of them went out. Writes
every figure to ``bench/results/events-<UTC time>.json``; docs/benchmarks.md ("Events: webhook
deliveries") says what they mean.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import http.client
import json
import multiprocessing as mp
import os
import secrets
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402
from sqlalchemy import func, make_url, select  # noqa: E402

from bench import databases  # noqa: E402

console = Console(width=None if sys.stdout.isatty() else 160)

POSTGRES_URL = os.environ.get("ENTITLE_BENCH_EVENTS_POSTGRES_URL",
                              "postgresql+psycopg://postgres@127.0.0.1:5432/entitle_bench_events")
EMIT_BATCH = 500  # events per transaction while emitting
RUNS = {"1": (1, "thread"), "2t": (2, "thread"), "2p": (2, "process")}
IDLE_SLEEP = 0.002  # a worker that found nothing due while others hold the heads of line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run events", description=__doc__.split("\n\n")[0])
    p.add_argument("--events", type=int, default=5000, help="events emitted per run (default 5,000)")
    p.add_argument("--endpoints", type=int, default=3, help="webhook endpoints, each wanting every event (default 3)")
    p.add_argument("--runs", default="1,2t,2p",
                   help="worker set-ups, comma-separated: 1 (one worker), 2t (two threads), 2p (two processes)")
    p.add_argument("--limit", type=int, default=100, help="deliver_due's limit per call (default 100)")
    p.add_argument("--max-seconds", type=float, default=120.0,
                   help="stop a run's workers after this long even if deliveries are left (default 120)")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--postgres-url", default=POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (created, then dropped; never 'test'); "
                        "also ENTITLE_BENCH_EVENTS_POSTGRES_URL")
    p.add_argument("--keep", action="store_true", help="keep the PostgreSQL database afterwards")
    args = p.parse_args(argv)
    args.runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    if not args.runs or set(args.runs) - set(RUNS):
        p.error(f"--runs: comma-separated, of {', '.join(RUNS)}")
    if args.events < 1 or args.endpoints < 1 or args.limit < 1:
        p.error("--events, --endpoints and --limit must be positive")
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if set(args.databases) - {"sqlite", "postgresql"}:
        p.error("use sqlite and/or postgresql")
    if make_url(args.postgres_url).database in (None, "", "test"):
        p.error("--postgres-url must name the benchmark's own database (it is dropped), not the test suite's 'test'")
    return args


# --- the receiver (a process of its own) ---------------------------------------------------------

class _Tally:
    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.reset()

    def reset(self) -> None:
        self.seen: dict[str, list[int]] = {}  # path -> event ids in arrival order
        self.bad_signatures = 0
        self.requests = 0

    def take(self, path: str, headers: dict[str, str], body: bytes) -> None:
        self.requests += 1
        header = headers.get("entitle-signature", "")
        parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
        secret = self.secrets.get(path, "")
        expected = hmac.new(secret.encode(), f"{parts.get('t', '')}.".encode() + body, hashlib.sha256).hexdigest()
        if not secret or not hmac.compare_digest(expected, parts.get("v1", "")):
            self.bad_signatures += 1
        self.seen.setdefault(path, []).append(int(headers.get("entitle-event-id", "evt_0")[4:]))

    def stats(self) -> dict[str, Any]:
        per_path = {}
        for path, ids in self.seen.items():
            per_path[path] = {"received": len(ids), "distinct": len(set(ids)),
                              "in_order": all(a < b for a, b in zip(ids, ids[1:]))}
        return {"requests": self.requests, "bad_signatures": self.bad_signatures, "paths": per_path}


async def _serve(tally: _Tally, ready: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if ":" in x)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                out = b"ok"
                if method == "POST" and path == "/_reset":
                    tally.secrets = json.loads(body)
                    tally.reset()
                elif method == "GET" and path == "/_stats":
                    out = json.dumps(tally.stats()).encode()
                else:
                    tally.take(path, headers, body)
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: "
                             + str(len(out)).encode() + b"\r\n\r\n" + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    ready.send(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def _receiver_main(ready: Any) -> None:
    asyncio.run(_serve(_Tally(), ready))


class Receiver:
    def __init__(self) -> None:
        parent, child = mp.get_context("spawn").Pipe()
        self.process = mp.get_context("spawn").Process(target=_receiver_main, args=(child,), daemon=True)
        self.process.start()
        if not parent.poll(30):
            raise RuntimeError("the receiver did not start within 30 s")
        self.port: int = parent.recv()

    def _call(self, method: str, path: str, body: bytes = b"") -> bytes:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body=body)
        data = conn.getresponse().read()
        conn.close()
        return data

    def reset(self, secrets_by_path: dict[str, str]) -> None:
        self._call("POST", "/_reset", json.dumps(secrets_by_path).encode())

    def stats(self) -> dict[str, Any]:
        return json.loads(self._call("GET", "/_stats"))  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        self.process.join(10)


# --- the workers ---------------------------------------------------------------------------------

def _pending(factory: Any) -> int:
    from entitle.delivery.models import WebhookDelivery

    with factory() as s:
        return int(s.scalar(select(func.count()).select_from(WebhookDelivery)
                            .where(WebhookDelivery.state == "pending")) or 0)


def work(factory: Any, key: bytes, limit: int, deadline: float) -> dict[str, int]:
    """What ``entitle deliver`` does, until nothing is pending (or the wall clock passes
    ``deadline``): deliver_due, again and again."""
    import httpx

    from entitle.delivery import webhooks

    totals = {"delivered": 0, "pending": 0, "failed": 0, "calls": 0, "idle": 0}
    with httpx.Client(timeout=10) as client:
        while time.time() < deadline:
            counts = webhooks.deliver_due(factory, now=lambda: datetime.now(UTC), key=key, limit=limit, client=client)
            totals["calls"] += 1
            for k, v in counts.items():
                totals[k] += v
            if not any(counts.values()):
                if _pending(factory) == 0:
                    return totals
                totals["idle"] += 1
                time.sleep(IDLE_SLEEP)
    return totals


def _process_main(url: str, key: bytes, limit: int, seconds: float, ready: Any, go: Any, out: Any) -> None:
    from entitle.db import make_engine, make_session_factory
    from entitle.models import load_all

    load_all()
    engine = make_engine(url)
    factory = make_session_factory(engine)
    _pending(factory)  # connected
    ready.put(os.getpid())
    go.wait()
    out.put(work(factory, key, limit, time.time() + seconds))
    engine.dispose()


def run_workers(url: str, factory: Any, key: bytes, limit: int, workers: int, kind: str,
                max_seconds: float) -> tuple[float, list[dict[str, int]]]:
    if kind == "thread":
        results: list[dict[str, int]] = []
        deadline = time.time() + max_seconds
        threads = [threading.Thread(target=lambda: results.append(work(factory, key, limit, deadline)))
                   for _ in range(workers)]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - started, results
    ctx = mp.get_context("spawn")
    ready, out, go = ctx.Queue(), ctx.Queue(), ctx.Event()
    procs = [ctx.Process(target=_process_main, args=(url, key, limit, max_seconds, ready, go, out))
             for _ in range(workers)]
    for p in procs:
        p.start()
    for _ in procs:
        ready.get(timeout=120)
    started = time.perf_counter()
    go.set()
    results = [out.get(timeout=3600) for _ in procs]
    seconds = time.perf_counter() - started
    for p in procs:
        p.join(30)
    return seconds, results


# --- one database --------------------------------------------------------------------------------

def emit_events(factory: Any, org_id: int, count: int, run: str) -> float:
    from entitle.db import transaction
    from entitle.platform import events

    started = time.perf_counter()
    for first in range(0, count, EMIT_BATCH):
        with transaction(factory) as s:
            now = datetime.now(UTC)
            for i in range(first, min(count, first + EMIT_BATCH)):
                events.emit(s, org_id=org_id, type="my2n.apartment.lapsed", now=now, apartment=f"{run}-{i}",
                            site="Bench")
    return time.perf_counter() - started


def check(factory: Any, stats: dict[str, Any], paths: list[str], events_count: int) -> dict[str, Any]:
    """Nothing twice, in order, signed, never failed, one attempt each; ``finished``: all delivered."""
    from entitle.delivery.models import WebhookAttempt, WebhookDelivery

    with factory() as s:
        states = dict(s.execute(select(WebhookDelivery.state, func.count()).group_by(WebhookDelivery.state)).all())
        attempts = int(s.scalar(select(func.count()).select_from(WebhookAttempt)) or 0)
    got = [stats["paths"].get(p, {"received": 0, "distinct": 0, "in_order": True}) for p in paths]
    received = sum(g["received"] for g in got)
    delivered = states.get("delivered", 0)
    ok = (all(g["received"] == g["distinct"] and g["in_order"] for g in got) and stats["bad_signatures"] == 0
          and states.get("failed", 0) == 0 and attempts == delivered == received)
    return {"ok": ok, "finished": all(g["received"] == events_count for g in got) and states.get("pending", 0) == 0,
            "delivered": delivered, "received": received, "distinct": sum(g["distinct"] for g in got),
            "in_order": all(g["in_order"] for g in got), "bad_signatures": stats["bad_signatures"],
            "states": states, "attempts_in_database": attempts}


def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from entitle.actors import operator
    from entitle.db import make_engine, make_session_factory, transaction
    from entitle.delivery import webhooks
    from entitle.delivery.models import WebhookAttempt, WebhookDelivery
    from entitle.models import load_all
    from entitle.tenancy import services as tenancy

    load_all()
    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    engine = make_engine(db.url)
    factory = make_session_factory(engine)
    receiver = Receiver()
    key = secrets.token_bytes(32)
    try:
        now = datetime.now(UTC)
        paths = [f"/endpoint-{i}" for i in range(args.endpoints)]
        with transaction(factory) as s:
            org = tenancy.create_organization(s, name="Bench", region="EU", actor=operator(), now=now)
            org_id = org.id
            secrets_by_path = {}
            for path in paths:
                _endpoint, secret = webhooks.create_endpoint(
                    s, org_id=org_id, url=f"http://127.0.0.1:{receiver.port}{path}", event_types=[],
                    actor=operator(), now=now, key=key)
                secrets_by_path[path] = secret
        out: dict[str, Any] = {"version": db.version, "runs": []}
        for run in args.runs:
            workers, kind = RUNS[run]
            receiver.reset(secrets_by_path)
            with engine.begin() as conn:  # each run starts from empty delivery tables
                conn.execute(WebhookAttempt.__table__.delete())
                conn.execute(WebhookDelivery.__table__.delete())
            emit_seconds = emit_events(factory, org_id, args.events, run)
            deliveries = args.events * args.endpoints
            console.print(f"  run {run}: {args.events:,} events emitted ({deliveries:,} deliveries) in "
                          f"{emit_seconds:.1f} s; {workers} × {kind} deliver…")
            databases.vacuum_analyze(engine, "webhook_deliveries", "webhook_attempts", "events")
            seconds, results = run_workers(db.url, factory, key, args.limit, workers, kind, args.max_seconds)
            verdict = check(factory, receiver.stats(), paths, args.events)
            m = {"run": run, "workers": workers, "kind": kind, "events": args.events, "endpoints": args.endpoints,
                 "deliveries": deliveries, "emit_seconds": round(emit_seconds, 2),
                 "emitted_per_s": round(args.events / emit_seconds, 1), "seconds": round(seconds, 2),
                 "delivered": verdict["delivered"], "finished": verdict["finished"],
                 "deliveries_per_s": round(verdict["delivered"] / seconds, 1),
                 "events_per_s": round(verdict["delivered"] / args.endpoints / seconds, 1),
                 "workers_results": results, "check": verdict}
            out["runs"].append(m)
            console.print(f"    {m['delivered']:,} delivered in {seconds:.1f} s"
                          + ("" if m["finished"] else " [yellow](stopped at --max-seconds)[/]")
                          + f": {m['deliveries_per_s']:,.0f} deliveries/s ({m['events_per_s']:,.0f} events/s at "
                          f"every endpoint); calls {sum(r['calls'] for r in results):,}, idle "
                          f"{sum(r['idle'] for r in results):,}; "
                          + ("[green]checks ok[/]" if verdict["ok"] else f"[red]CHECK FAILED[/] {verdict}"))
        return out
    finally:
        receiver.stop()
        engine.dispose()
        if name == "postgresql" and not args.keep:
            databases.drop_postgresql(db.url)


# --- output ----------------------------------------------------------------------------------------

def print_tables(report: dict[str, Any]) -> None:
    o = report["options"]
    t = Table(title=f"Webhook deliveries: {o['events']:,} events × {o['endpoints']} endpoints on a local receiver, "
                    f"deliver_due(limit={o['limit']}) until nothing is pending")
    for col in ("database", "workers", "emit events/s", "delivered", "seconds", "deliveries/s",
                "events/s (all endpoints)", "deliver_due calls", "idle", "once, in order, signed"):
        t.add_column(col, justify="left" if col == "database" else "right")
    for name, d in report["databases"].items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        for r in d["runs"]:
            t.add_row(name, f"{r['workers']} {r['kind']}" + ("" if r["workers"] == 1 else "es" if r["kind"] == "process"
                                                             else "s"),
                      f"{r['emitted_per_s']:,.0f}",
                      f"{r['delivered']:,}" + ("" if r["finished"] else f" of {r['deliveries']:,}"),
                      f"{r['seconds']:.1f}", f"{r['deliveries_per_s']:,.0f}",
                      f"{r['events_per_s']:,.0f}", f"{sum(w['calls'] for w in r['workers_results']):,}",
                      f"{sum(w['idle'] for w in r['workers_results']):,}",
                      "[green]yes[/]" if r["check"]["ok"] else "[red]NO[/]")
    console.print(t)


def failed(report: dict[str, Any]) -> bool:
    return any(not r["check"]["ok"] for d in report["databases"].values() for r in d.get("runs", []))


def main(argv: list[str] | None = None) -> int:
    from bench.run import machine, run_report

    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "benchmark": "events",
        "started_at": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"},
        "notes": ["The receiver, the workers and the database share the machine's cores.",
                  "Deliveries per endpoint go out in event order: one at a time per endpoint."],
        "databases": {},
    }
    run: Callable[..., int] = run_report
    return run(report, title="Entitle events benchmark (webhook deliveries)", stem="events", args=args,
               bench_database=bench_database, print_tables=print_tables, failed=failed)


if __name__ == "__main__":
    sys.exit(main())
