"""Test fixtures: a real database (SQLite file or PostgreSQL) built by ``alembic upgrade head``.

``ENTITLE_TEST_DATABASE_URL`` selects the database; the default is an SQLite file in a temp
directory. Every test starts from empty tables.

`make test` runs the suite in parallel (pytest-xdist): every worker is a process of its own with
its own database (SQLite: a file under its own temp dir; PostgreSQL: a database of its own), its
own temp dir for the settings' defaults (below) and free ports the kernel hands out. Tests that
must share one worker carry ``pytest.mark.xdist_group`` (``--dist loadgroup``).
"""

from __future__ import annotations

import atexit
import os
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import Engine, make_url, text
from sqlalchemy.pool import NullPool
from sqlalchemy.orm import Session

# The tests are hermetic: no ENTITLE_* setting of the shell that runs them reaches the code under
# test (or the servers and CLI processes the tests start), only the tests' own knobs.
TEST_KNOBS = {"ENTITLE_TEST_DATABASE_URL", "ENTITLE_REQUIRE_BROWSER", "ENTITLE_HYPOTHESIS_EXAMPLES",
              "ENTITLE_ARGON2_TIME_COST", "ENTITLE_ARGON2_MEMORY_COST"}
for _name in [n for n in os.environ if n.startswith("ENTITLE_") and n not in TEST_KNOBS]:
    del os.environ[_name]
os.environ.setdefault("ENTITLE_ARGON2_TIME_COST", "1")
os.environ.setdefault("ENTITLE_ARGON2_MEMORY_COST", "8192")
# Nothing defaults into the checkout's var/ (that database and secret key are `make run`'s, and
# parallel workers would race to create the same key file): each test process (each xdist worker)
# has a temp dir of its own for the default database and secret key file.
WORKER = os.environ.get("PYTEST_XDIST_WORKER", "main")
PROCESS_DIR = Path(tempfile.mkdtemp(prefix=f"entitle-tests-{WORKER}-"))
atexit.register(shutil.rmtree, PROCESS_DIR, True)
os.environ["ENTITLE_DATABASE_URL"] = f"sqlite:///{PROCESS_DIR / 'default.db'}"
os.environ["ENTITLE_SECRET_KEY_FILE"] = str(PROCESS_DIR / "secret.key")

from entitle.actors import Actor, operator  # noqa: E402
from entitle.api.app import create_app  # noqa: E402
from entitle.catalog import services as catalog  # noqa: E402
from entitle.clock import FrozenClock  # noqa: E402
from entitle.config import Settings  # noqa: E402
from entitle.context import Context, build  # noqa: E402
from entitle.db import Base, make_engine, transaction  # noqa: E402
from entitle.keys import services as keys  # noqa: E402
from entitle.migrate import upgrade  # noqa: E402
from entitle.models import load_all  # noqa: E402
from entitle.tenancy import services as tenancy  # noqa: E402
from entitle.tenancy.models import Role, User  # noqa: E402

START = datetime(2026, 1, 15, 9, 0, tzinfo=UTC)
PASSWORD = "correct horse battery"
TEST_SECRET_KEY = "dGVzdC1vbmx5LXNlY3JldC1rZXktMzItYnl0ZXMhISE="  # 32 bytes, tests only


def _database_url(tmp_root: Path) -> str:
    return os.environ.get("ENTITLE_TEST_DATABASE_URL") or f"sqlite:///{tmp_root / 'entitle-test.db'}"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SQLite: a file in a temp dir. PostgreSQL: a throw-away database created on the server
    named by ENTITLE_TEST_DATABASE_URL, so that parallel runs never share tables."""
    url = _database_url(tmp_path_factory.mktemp("db"))
    if not url.startswith("postgresql"):
        upgrade(url)
        yield url
        return
    server = make_url(url)
    # One per test process: each xdist worker (and each concurrent run) has a database of its own.
    name = f"entitle_t_{WORKER}_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    test_url = server.set(database=name).render_as_string(hide_password=False)
    upgrade(test_url)
    yield test_url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def engine(database_url: str) -> Iterator[Engine]:
    load_all()
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _wipe(engine: Engine) -> None:
    tables = [t.name for t in reversed(Base.metadata.sorted_tables)]
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
        else:
            for name in tables:
                conn.execute(text(f"DELETE FROM {name}"))


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock(START)


@pytest.fixture
def settings(database_url: str) -> Settings:
    # answers_check: every answer given from memory is made again and compared (api.answers).
    return Settings(database_url=database_url, redeem_limit_per_org="1000/minute",
                    redeem_limit_per_client="1000/minute", secret_key=TEST_SECRET_KEY, answers_check=True)


@pytest.fixture
def ctx(engine: Engine, settings: Settings, clock: FrozenClock) -> Iterator[Context]:
    _wipe(engine)
    yield build(settings, clock, engine=engine)


@pytest.fixture
def session(ctx: Context) -> Iterator[Session]:
    """A transaction that commits at the end of the block it is used in (tests call commit)."""
    with ctx.sessions() as s:
        yield s


@pytest.fixture
def app(ctx: Context) -> Any:
    return create_app(ctx=ctx)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


@dataclass
class World:
    """Factories for the data most tests need, written through the real services."""

    ctx: Context

    @property
    def now(self) -> datetime:
        return self.ctx.clock.now()

    def user(self, email: str, *, issuer: bool = False) -> User:
        with transaction(self.ctx.sessions) as s:
            return tenancy.create_user(s, email=email, password=PASSWORD, now=self.now, is_issuer=issuer)

    def org(self, name: str, *, region: str = "EU", owner: User | None = None) -> int:
        with transaction(self.ctx.sessions) as s:
            o = tenancy.create_organization(s, name=name, region=region, actor=operator(), now=self.now,
                                            owner=s.get(User, owner.id) if owner else None)
            return o.id

    def member(self, org_id: int, user: User, role: Role) -> None:
        with transaction(self.ctx.sessions) as s:
            tenancy.add_member(s, org_id=org_id, user=s.get(User, user.id), role=role,
                               actor=operator(), now=self.now)

    def token(self, user: User) -> str:
        with transaction(self.ctx.sessions) as s:
            return tenancy.create_token(s, user=s.get(User, user.id), name="test", now=self.now)[0]

    def actor(self, user: User) -> Actor:
        with self.ctx.sessions() as s:
            return tenancy.actor_for(s.get(User, user.id))

    def load_catalog(self) -> None:
        with transaction(self.ctx.sessions) as s:
            catalog.load(s, catalog.parse(catalog.DEFAULT_CATALOG.read_text()), actor=operator(), now=self.now)

    def mint(self, part: str = "91379040", *, count: int = 1, quantity: int = 1) -> list[str]:
        with transaction(self.ctx.sessions) as s:
            return keys.mint(s, sku_part=part, quantity_per_key=quantity, count=count, actor=operator(),
                             now=self.now, keep_codes=True).codes


@pytest.fixture
def world(ctx: Context) -> World:
    w = World(ctx)
    w.load_catalog()
    return w


def auth(token: str, idem: str | None = None) -> dict[str, str]:
    h = {"Authorization": f"Bearer {token}"}
    if idem is not None:
        h["Idempotency-Key"] = idem
    return h


# --- a real HTTP server ------------------------------------------------------------------------

def free_port() -> int:
    """A port free now. Another process (a parallel worker) may take it before it is used: a test
    server should rather listen on a socket that stays bound (``bound_socket``)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def bound_socket() -> socket.socket:
    """A socket bound to a free port on 127.0.0.1, kept: no other process can take that port."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    return s


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


@pytest.fixture
def live_server(app: Any) -> Iterator[LiveServer]:
    """uvicorn serving the app on a free port in a thread, for end-to-end and browser tests."""
    sock = bound_socket()  # bound before uvicorn starts: no parallel worker can take the port
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    yield LiveServer(url, server, thread)
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


Factory = Callable[..., Any]
