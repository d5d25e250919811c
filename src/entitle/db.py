"""Engine, sessions and column types shared by every business area.

SQLite is the embedded default (WAL, one writer: every transaction starts with BEGIN IMMEDIATE so
that two writers queue instead of failing half-way); PostgreSQL is the production database.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import JSON, BigInteger, DateTime, Engine, Integer, MetaData, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker
from sqlalchemy.types import TypeDecorator

READ_ONLY = "entitle_read_only"

# A statement built from a caller's list binds one parameter per value (``serial IN (…)``): the
# PostgreSQL protocol counts a statement's parameters in 16 bits (65,535 at most) and SQLite allows
# 32,766 by default. Such a statement binds at most this many values from the list, which leaves
# room for the statement's own parameters (see ``chunks``).
BIND_VALUES = 10_000

_T = TypeVar("_T")

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

class _BigId(TypeDecorator[int]):
    """An id: BIGINT, INTEGER on SQLite (it only auto-increments INTEGER PRIMARY KEY). An integer
    beyond 64 bits (an id typed in a path, say) can name no row: it binds as NULL, which equals
    nothing, so a lookup finds nothing (404 from the caller) where the drivers would refuse the
    value (OverflowError on SQLite, DataError on PostgreSQL)."""

    impl = BigInteger
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        return dialect.type_descriptor(Integer() if dialect.name == "sqlite" else BigInteger())

    def process_bind_param(self, value: int | None, dialect: Any) -> int | None:
        if value is not None and not -(2**63) <= value < 2**63:
            return None
        return value


BigId = _BigId()


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC in, aware UTC out, on every database (SQLite stores no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the database")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime, dict[str, Any]: JSON, list[str]: JSON, list[Any]: JSON}


# The worker threads that run a server's sync routes and dependencies at once (anyio's default,
# which FastAPI uses): each holds at most one connection while it runs.
THREADPOOL = 40


def make_engine(url: str, *, max_connections: int = 50, **kwargs: Any) -> Engine:
    """The engine of ``url``; on PostgreSQL at most ``max_connections`` at once, 10 of them kept
    (``ENTITLE_DATABASE_MAX_CONNECTIONS``)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        if "poolclass" not in kwargs and parsed.database not in (None, "", ":memory:"):
            # As many kept connections as threads that may use one (and the server's own: the
            # heartbeat flusher, a sweep): a connection given back to a full pool is closed, and
            # a new one costs its PRAGMAs (docs/benchmarks.md, "The API layer").
            kwargs.setdefault("pool_size", THREADPOOL + 8)
            kwargs.setdefault("max_overflow", THREADPOOL)
        engine = create_engine(
            url,
            connect_args={"timeout": 60, "check_same_thread": False},
            json_serializer=_dumps,
            **kwargs,
        )
        _sqlite_pragmas(engine)
        return engine
    if "poolclass" not in kwargs:
        # 10 kept and at most 50 at once per process. Each kept connection is one of
        # PostgreSQL's max_connections (100 by default) for every process of every machine
        # (server processes, sweeps, the CLI): 20 kept ran two servers and a test run out of
        # them ("too many clients already", a 500) under load. A busier deployment raises
        # max_connections or puts PgBouncer in front (docs/architecture.md).
        kwargs.setdefault("pool_size", min(10, max_connections))
        kwargs.setdefault("max_overflow", max_connections - kwargs["pool_size"])
    # No ping per checkout (a round trip per request): a connection the server dropped fails the
    # one statement that finds it, and SQLAlchemy then renews every connection of the pool.
    return create_engine(url, json_serializer=_dumps, **kwargs)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), sort_keys=True, default=str)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the driver, decide when a transaction begins.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # Take the write lock up front: a reader that later writes can never be refused
        # half-way with "database is locked". Read-only work (see `reading`) needs no lock in WAL.
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception."""
    with factory() as session, session.begin():
        yield session


@contextmanager
def reading(factory: sessionmaker[Session]) -> Iterator[Session]:
    """A transaction that only reads: on SQLite it does not queue behind writers."""
    bind = factory.kw["bind"]
    with factory(bind=bind.execution_options(**{READ_ONLY: True})) as session, session.begin():
        yield session


def request_reads(engine: Engine) -> Engine:
    """The bind of an API request that only reads (``GET``): on SQLite a deferred ``BEGIN`` (no
    write lock, one snapshot for all its statements); on PostgreSQL autocommit, which saves the
    BEGIN and ROLLBACK round trips and changes nothing a read sees: at READ COMMITTED every
    statement takes its own snapshot inside a transaction too. Made once per engine."""
    made = engine.__dict__.get("_entitle_request_reads")
    if made is None:
        options: dict[str, Any] = {READ_ONLY: True}
        if engine.dialect.name == "postgresql":
            options["isolation_level"] = "AUTOCOMMIT"
        made = engine.__dict__["_entitle_request_reads"] = engine.execution_options(**options)
    return made  # type: ignore[no-any-return]


class HealthCheck:
    """The database's mark, for ``/healthz`` and the remembered answers (``api.answers``), read on
    the event loop, off the pool and the thread pool, so that it answers whatever the load on the
    pool. The mark moves whenever anything is committed: SQLite's ``PRAGMA data_version`` on a
    connection of its own, which never writes (the value moves when any other connection, of any
    process, commits; no I/O: it reads the WAL index); PostgreSQL's ``pg_current_snapshot()`` as
    text (the transactions that have written and are still running, and the next transaction id:
    it moves when one that wrote ends, or a new one writes), on an asynchronous psycopg
    connection of its own (autocommit; made again after a failure), read in batches: every
    request that arrives while a read runs waits for the next one, which starts when that one ends
    and answers them all. So each mark comes from a round trip begun after the request arrived,
    and a flood of checks costs one round trip at a time."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._sqlite: Any = None
        self._loop: Any = None  # asyncio objects belong to the loop that made them
        self._pg: Any = None
        self._next: Any = None  # the future of the check the requests now arriving wait for
        self._running = False

    async def __call__(self) -> Any:
        if self.engine.dialect.name == "sqlite":
            if self._sqlite is None:
                conn = self.engine.raw_connection()
                conn.detach()  # its own, not the pool's: an app never closed keeps no pool slot
                self._sqlite = conn
            return self._sqlite.dbapi_connection.execute("PRAGMA data_version").fetchone()[0]
        import asyncio

        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # a test client's loop, then another's
            self._loop, self._pg, self._next, self._running = loop, None, None, False
        if self._next is None:
            self._next = loop.create_future()
        waiting = self._next
        if not self._running:
            self._running = True
            loop.create_task(self._checks())
        return await asyncio.shield(waiting)

    async def _checks(self) -> None:
        import psycopg

        try:
            while self._next is not None:
                answering, self._next = self._next, None
                try:
                    if self._pg is None or self._pg.closed:
                        url = self.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
                        self._pg = await psycopg.AsyncConnection.connect(url, autocommit=True, connect_timeout=10)
                    [(mark,)] = await (await self._pg.execute("SELECT pg_current_snapshot()::text")).fetchall()
                except Exception as exc:
                    if self._pg is not None:
                        await self._pg.close()
                    self._pg = None
                    answering.set_exception(exc)
                    answering.exception()  # retrieved: a request that went away asks nothing
                except BaseException:  # cancelled: the server stops
                    answering.cancel()
                    raise
                else:
                    answering.set_result(mark)
        finally:
            self._running = False

    async def aclose(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()
            self._sqlite = None
        if self._pg is not None:
            conn, self._pg = self._pg, None
            await conn.close()
        self._loop = None


def chunks(items: Iterable[_T], size: int | None = None, *, columns: int = 1) -> Iterator[list[_T]]:
    """``items`` in lists of at most ``size``, in order; by default as many as bind at most
    ``BIND_VALUES`` parameters at ``columns`` per item (a row of a multi-row INSERT, or a tuple
    in ``tuple_(a, b).in_(…)``, binds one per column). For every statement built from a caller's
    list, however long: ``for part in chunks(serials): session.execute(… .in_(part))``."""
    if size is None:
        if columns < 1:
            raise ValueError("columns must be at least 1")
        size = max(1, BIND_VALUES // columns)
    if size < 1:
        raise ValueError("size must be at least 1")
    it = iter(items)
    while part := list(islice(it, size)):
        yield part


def is_postgres(session: Session) -> bool:
    return session.get_bind().dialect.name == "postgresql"
