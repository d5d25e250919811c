"""``python -m bench.run history``: what one history append costs a business write, and verify's speed.

    python -m bench.run history [--appends N] [--entries M] [--rounds R] [--databases sqlite,postgresql]

In-process, through the real services (``history.record`` in a transaction of ``entitle.db``),
one organization, on SQLite and PostgreSQL:

- *one-row write*: a transaction that updates one row (the organization's name) — the floor of
  any business write, what the append is compared with;
- *1 append*: a transaction that appends one entry (what every business write adds);
- *10 appends*: a transaction that appends ten; (10 appends − 1 append) ÷ 9 is the append's own
  cost without the transaction's begin and commit;
- *1 / 10 plain appends*: the same with the append as it was before the keyed chain (migration
  0015): the last entry read and the entry inserted, no key check, no head — the "before" of the
  same run, in an organization of its own;
- *verify*: ``history.verify`` over M entries, entries per second (in brackets: the public chain
  alone, as verify checked it before).

The cases take turns, R rounds (default 5) of N transactions each (default 300), and the median
round is reported. Writes the figures, with the machine, to ``bench/results/history-<UTC time>.json``.
docs/benchmarks.md ("History appends") says what they mean.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from rich.table import Table
from sqlalchemy import update

from bench import databases
from bench.run import console, machine, run_report


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.run history", description=__doc__.split("\n\n")[0])
    p.add_argument("--appends", type=int, default=300, help="transactions per case and round (default 300)")
    p.add_argument("--entries", type=int, default=20_000, help="entries in the chain verified (default 20,000)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of every case, median reported (default 5)")
    p.add_argument("--databases", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    p.add_argument("--postgres-url", default=databases.POSTGRES_URL,
                   help="the benchmark's own PostgreSQL database (dropped and rebuilt; never 'test')")
    args = p.parse_args(argv)
    args.databases = [d.strip() for d in args.databases.split(",") if d.strip()]
    if args.appends < 10 or args.rounds < 1:
        p.error("--appends must be at least 10 and --rounds at least 1")
    return args


def bench_database(name: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    from entitle.actors import operator
    from entitle.config import Settings
    from entitle.context import build
    from entitle.db import transaction
    from entitle.history import chain
    from entitle.history import services as history
    from entitle.models import load_all
    from entitle.tenancy import services as tenancy
    from entitle.tenancy.models import Organization

    console.print(f"[bold]{name}[/]: building a fresh database (alembic upgrade head)…")
    db = databases.fresh_sqlite(workdir) if name == "sqlite" else databases.fresh_postgresql(args.postgres_url)
    load_all()
    ctx = build(Settings(database_url=db.url, secret_key_file=str(workdir / "secret.key")))
    actor = operator("bench")
    at = [datetime(2027, 1, 1, tzinfo=UTC)]

    def now() -> datetime:
        at[0] += timedelta(microseconds=1)
        return at[0]

    with transaction(ctx.sessions) as s:
        org_id = tenancy.create_organization(s, name="Bench history", region="EU", actor=actor, now=now()).id
        plain_org = tenancy.create_organization(s, name="Bench plain", region="EU", actor=actor, now=now()).id
        verified_org = tenancy.create_organization(s, name="Bench verify", region="EU", actor=actor, now=now()).id

    def appends(count: int) -> Callable[[], None]:
        def run() -> None:
            with transaction(ctx.sessions) as s:
                for i in range(count):
                    history.record(s, org_id=org_id, actor=actor, now=now(), action="bench.changed",
                                   object_type="bench", object_id=i, before={"units": i}, after={"units": i + 1})
        return run

    def plain_appends(count: int) -> Callable[[], None]:
        def run() -> None:
            with transaction(ctx.sessions) as s:
                for i in range(count):
                    plain_record(s, org_id=plain_org, actor=actor, now=now(), action="bench.changed",
                                 object_type="bench", object_id=i, before={"units": i}, after={"units": i + 1})
        return run

    def one_row_write() -> None:
        with transaction(ctx.sessions) as s:
            history.lock_organization(s, org_id)
            s.execute(update(Organization).where(Organization.id == org_id).values(name="Bench history"))

    cases = {"one-row write": one_row_write, "1 append": appends(1), "10 appends": appends(10),
             "1 plain append": plain_appends(1), "10 plain appends": plain_appends(10)}
    for run in cases.values():  # warm: connections, statement caches
        for _ in range(20):
            run()
    rounds: dict[str, list[float]] = {case: [] for case in cases}
    for _ in range(args.rounds):
        for case, run in cases.items():
            started = time.perf_counter()
            for _ in range(args.appends):
                run()
            rounds[case].append((time.perf_counter() - started) / args.appends * 1e6)
    per_txn = {case: round(statistics.median(us), 1) for case, us in rounds.items()}

    console.print(f"  writing a chain of {args.entries:,} entries to verify…")
    batch = 1000
    for start in range(0, args.entries, batch):
        with transaction(ctx.sessions) as s:
            for i in range(start, min(start + batch, args.entries)):
                history.record(s, org_id=verified_org, actor=actor, now=now(), action="bench.changed",
                               object_type="bench", object_id=i, before={"units": i}, after={"units": i + 1})
    times, plain_times = [], []
    for _ in range(3):
        with ctx.sessions() as s:
            started = time.perf_counter()
            result = history.verify(s, verified_org)
            times.append(time.perf_counter() - started)
        with ctx.sessions() as s:  # before the keyed chain: the public chain alone
            started = time.perf_counter()
            check = chain.ChainCheck(verified_org)
            for e in history.entries_in_order(s, verified_org):
                check.add(e)
            plain_times.append(time.perf_counter() - started)
    assert result.ok and check.broken is None, result
    ctx.engine.dispose()
    own = (per_txn["10 appends"] - per_txn["1 append"]) / 9
    plain_own = (per_txn["10 plain appends"] - per_txn["1 plain append"]) / 9
    return {"version": db.version, "transaction_us": per_txn, "rounds_us": rounds,
            "append_own_us": round(own, 1), "plain_append_own_us": round(plain_own, 1),
            "append_to_one_row_write": round(per_txn["1 append"] / per_txn["one-row write"], 3),
            "plain_append_to_one_row_write": round(per_txn["1 plain append"] / per_txn["one-row write"], 3),
            "verify": {"entries": result.checked, "median_s": round(statistics.median(times), 3),
                       "entries_per_s": round(result.checked / statistics.median(times)),
                       "plain_entries_per_s": round(result.checked / statistics.median(plain_times))}}


def plain_record(session: Any, *, org_id: int, actor: Any, now: datetime, action: str, object_type: str,
                 object_id: int, before: dict[str, Any], after: dict[str, Any]) -> None:
    """The append before migration 0015, for comparison: the plain public chain, nothing else."""
    from sqlalchemy import select

    from entitle.history import services as history
    from entitle.history.chain import GENESIS, entry_hash
    from entitle.history.models import HistoryEntry

    history.lock_organization(session, org_id)
    last = session.execute(select(HistoryEntry.seq, HistoryEntry.hash).where(HistoryEntry.org_id == org_id)
                           .order_by(HistoryEntry.seq.desc()).limit(1)).first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    fields = dict(seq=seq, at=now, actor=actor.label, action=action, object_type=object_type,
                  object_id=str(object_id), before=before, after=after)
    session.add(HistoryEntry(org_id=org_id, prev_hash=prev, hash=entry_hash(prev, **fields), **fields))
    session.flush()


def print_tables(report: dict[str, Any]) -> None:
    table = Table(title="History appends, one organization, in-process (median µs per transaction; "
                        "in brackets: the plain append before the keyed chain)")
    for col in ("database", "one-row write", "1 append (plain)", "10 appends (plain)", "append alone (plain)",
                "1 append ÷ one-row write (plain)", "verify entries/s (plain)"):
        table.add_column(col, justify="left" if col == "database" else "right")
    for name, d in report["databases"].items():
        if "skipped" in d:
            console.print(f"[yellow]{name} skipped: {d['skipped']}[/]")
            continue
        t = d["transaction_us"]
        table.add_row(name, f"{t['one-row write']:,.0f}", f"{t['1 append']:,.0f} ({t['1 plain append']:,.0f})",
                      f"{t['10 appends']:,.0f} ({t['10 plain appends']:,.0f})",
                      f"{d['append_own_us']:,.0f} ({d['plain_append_own_us']:,.0f})",
                      f"{d['append_to_one_row_write']:.2f} ({d['plain_append_to_one_row_write']:.2f})",
                      f"{d['verify']['entries_per_s']:,} ({d['verify']['plain_entries_per_s']:,})")
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = datetime.now(UTC)
    report: dict[str, Any] = {
        "started_at": started.isoformat(timespec="seconds"), "machine": machine(),
        "options": {k: v for k, v in vars(args).items() if k != "postgres_url"}, "databases": {},
    }
    return run_report(report, title="History appends", stem="history", args=args, bench_database=bench_database,
                      print_tables=print_tables, failed=lambda r: False)
