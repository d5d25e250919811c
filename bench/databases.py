"""Fresh benchmark databases, built the way production builds them (``alembic upgrade head``).

SQLite: a file in a temp directory. PostgreSQL: the database ``entitle_bench`` (never ``test``,
which the test suite uses), created if missing and emptied by dropping its schema.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import make_url, text
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
