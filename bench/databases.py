"""Fresh benchmark databases, built the way production builds them (``alembic upgrade head``).

SQLite: a file in a temp directory. PostgreSQL: the database ``entitle_bench`` (never ``test``,
which the test suite uses), created if missing and emptied by dropping its schema.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, make_url, text
from sqlalchemy.pool import NullPool

from entitle.db import make_engine
from entitle.migrate import upgrade

POSTGRES_URL = os.environ.get(
    "ENTITLE_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/entitle_bench"
)


@dataclass(frozen=True)
class Database:
    name: str  # "sqlite" or "postgresql"
    url: str
    version: str


def fresh_sqlite(workdir: Path) -> Database:
    path = workdir / "entitle-bench.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    url = f"sqlite:///{path}"
    upgrade(url)
    import sqlite3

    return Database("sqlite", url, f"SQLite {sqlite3.sqlite_version}")


def fresh_postgresql(url: str = POSTGRES_URL) -> Database:
    """Create the bench database if needed, then drop and recreate its schema."""
    target = make_url(url)
    name = target.database
    if not name or name == "test":
        raise ValueError("the benchmark needs a database of its own, not the test suite's 'test'")
    admin = make_engine(target.set(database="postgres").render_as_string(hide_password=False),
                        isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        if not exists:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    engine = make_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
        version = conn.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    upgrade(url)
    return Database("postgresql", url, f"PostgreSQL {version}")


def vacuum_analyze(engine: Engine, *tables: str) -> None:
    """After a bulk load, as autovacuum would eventually: statistics, and on PostgreSQL the
    visibility map an index-only scan needs to skip the table."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(f"VACUUM ANALYZE {', '.join(tables)}"))
    else:
        with engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")
            conn.commit()


def drop_postgresql(url: str) -> None:
    target = make_url(url)
    admin = make_engine(target.set(database="postgres").render_as_string(hide_password=False),
                        isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)'))
    admin.dispose()


def timed(calls: dict[str, Callable[[], Any]], repeats: int, warmups: int = 2) -> dict[str, dict[str, Any]]:
    """Median (and spread) of ``repeats`` calls of each, after ``warmups`` calls of each (warm:
    connection, statement caches, pages). The calls take turns, so that a busy moment of the
    machine falls on all of them alike."""
    for _ in range(warmups):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            started = time.perf_counter()
            call()
            times[name].append((time.perf_counter() - started) * 1000)
    return {name: {"median_ms": round(statistics.median(ts), 2), "min_ms": round(min(ts), 2),
                   "max_ms": round(max(ts), 2), "runs_ms": [round(t, 2) for t in ts]}
            for name, ts in times.items()}
