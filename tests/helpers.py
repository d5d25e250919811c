"""Helpers shared by the foundation tests (not fixtures: plain functions and a server runner)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine, func, select, text

from conftest import World, auth, bound_socket
from entitle.db import Base
from entitle.history.models import HistoryEntry
from entitle.keys import codes
from entitle.ledger.models import Account, Entry, LedgerTransaction
from entitle.tenancy.models import Role, User

REPO = Path(__file__).resolve().parents[1]

# Wallet keys sold in some regions only. The default catalog's regional parts are My2N vouchers
# (9137958, 02683-001), which the wallet never takes (issue 14 point 10): tests of a wallet's
# region rules use these.
REGIONAL_SKUS = {"products": [{"code": "access-commander", "name": "2N Access Commander", "model": "access_commander",
                               "skus": [{"part_number": "AC-EU-ONLY", "name": "Devices, EU only",
                                         "grant_kind": "capacity", "grants": {"devices": 5},
                                         "regions": ["EU", "LATAM", "MEA"]},
                                        {"part_number": "AC-US-ONLY", "name": "Devices, US & APAC only",
                                         "grant_kind": "capacity", "grants": {"devices": 5},
                                         "regions": ["US", "APAC"]}]}]}


def load_regional_skus(world: World) -> None:
    from entitle.actors import operator
    from entitle.catalog import services as catalog
    from entitle.db import transaction

    with transaction(world.ctx.sessions) as s:
        catalog.load(s, catalog.parse_obj(REGIONAL_SKUS), actor=operator(), now=world.now)


@dataclass
class Member:
    user: User
    token: str


def person(world: World, email: str, *, issuer: bool = False) -> Member:
    """A user and an API token for them."""
    user = world.user(email, issuer=issuer)
    return Member(user, world.token(user))


def org_with_owner(world: World, name: str, email: str, *, region: str = "EU") -> tuple[int, Member]:
    owner = person(world, email)
    return world.org(name, region=region, owner=owner.user), owner


def join(world: World, org_id: int, email: str, role: Role) -> Member:
    m = person(world, email)
    world.member(org_id, m.user, role)
    return m


def redeem(client: Any, token: str, org_id: int, key: str, idem: str | None = "auto") -> Any:
    if idem == "auto":
        idem = f"redeem-{key}-{time.monotonic_ns()}"
    return client.post(f"/api/v1/orgs/{org_id}/wallet/redeem", json={"key": key}, headers=auth(token, idem))


def error_code(response: Any) -> str:
    return str(response.json()["error"]["code"])


def mistype(code: str) -> str:
    """The same key with one character changed (to another character of the alphabet)."""
    compact = codes.normalize(code)
    i = 7
    other = codes.ALPHABET[(codes.ALPHABET.index(compact[i]) + 1) % len(codes.ALPHABET)]
    return codes.format_code(compact[:i] + other + compact[i + 1:])


def unissued_code() -> str:
    """A well-formed key (right length, right check character) that was never minted."""
    return codes.generate()


# --- reading the database directly ---------------------------------------------------------------

def balances_by_kind(engine: Engine) -> dict[str, int]:
    """Sum of entries per account kind, over every organization and SKU."""
    with engine.connect() as conn:
        rows = conn.execute(select(Account.kind, func.coalesce(func.sum(Entry.amount), 0))
                            .join(Entry, Entry.account_id == Account.id).group_by(Account.kind)).all()
    return {kind: int(total) for kind, total in rows}


def wallet_of(engine: Engine, org_id: int) -> dict[str, int]:
    from entitle.catalog.models import Sku

    with engine.connect() as conn:
        rows = conn.execute(select(Sku.part_number, func.sum(Entry.amount))
                            .select_from(Account).join(Entry, Entry.account_id == Account.id)
                            .join(Sku, Sku.id == Account.sku_id)
                            .where(Account.org_id == org_id, Account.kind == "wallet")
                            .group_by(Sku.part_number)).all()
    return {part: int(units) for part, units in rows}


def history_of(engine: Engine, org_id: int) -> list[tuple[int, str, str]]:
    with engine.connect() as conn:
        return [tuple(r) for r in conn.execute(  # type: ignore[misc]
            select(HistoryEntry.seq, HistoryEntry.action, HistoryEntry.hash)
            .where(HistoryEntry.org_id == org_id).order_by(HistoryEntry.seq)).all()]


def count_rows(engine: Engine, model: Any) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def ledger_counts(engine: Engine) -> tuple[int, int]:
    return count_rows(engine, LedgerTransaction), count_rows(engine, Entry)


def dump_database(engine: Engine) -> str:
    """Every value of every table as text (to prove a secret is stored nowhere)."""
    parts = []
    with engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            for row in conn.execute(text(f"SELECT * FROM {table.name}")):
                parts.append(" ".join(str(v) for v in row))
    return "\n".join(parts)


# --- a real server in another process ------------------------------------------------------------

@contextmanager
def uvicorn_process(database_url: str, **settings: str) -> Iterator[str]:
    """``python -m uvicorn entitle.api.app:app_from_env --factory`` on a free port, as a deployment
    runs it; ``settings`` become ENTITLE_* variables. Yields the base URL.

    The port is bound here and handed over as a file descriptor (``--fd``, as a process manager
    does): a parallel test worker can never take it in between, nor answer in its place."""
    # Test servers share one PostgreSQL (100 connections) with the other test workers' servers.
    env = {**os.environ, "ENTITLE_DATABASE_URL": database_url, "ENTITLE_LOG_LEVEL": "WARNING",
           "ENTITLE_DATABASE_MAX_CONNECTIONS": "15",
           **{f"ENTITLE_{k.upper()}": v for k, v in settings.items()}}
    sock = bound_socket()
    sock.set_inheritable(True)
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "entitle.api.app:app_from_env", "--factory",
         "--fd", str(sock.fileno()), "--log-level", "warning"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()],
    )
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                log.seek(0)
                raise RuntimeError(f"uvicorn exited: {log.read().decode(errors='replace')}")
            try:
                if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start within 60 s")
            time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        sock.close()
        log.close()


class CliDriver:
    """Runs ``entitle PREFIX ARGS --database-url URL`` in-process and checks its answers; each
    CLI test file subclasses it to set the prefix or the clock."""

    prefix: tuple[str, ...] = ()

    def __init__(self, url: str) -> None:
        self.url = url

    def __call__(self, *args: str) -> Any:
        return self.top(*self.prefix, *args)

    def top(self, *args: str) -> Any:
        from typer.testing import CliRunner

        from entitle.cli.main import app

        return CliRunner().invoke(app, [*args, "--database-url", self.url], prog_name="entitle")

    def json(self, *args: str) -> Any:
        result = self(*args, "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)  # --json: stdout is nothing but JSON

    def ok(self, *args: str) -> str:
        result = self(*args)
        assert result.exit_code == 0, result.output
        return str(result.stdout)

    def refused(self, code: str, *args: str) -> dict[str, Any]:
        """Exit 1, nothing on stdout; the code and message on stderr, as text and as --json."""
        text = self(*args)
        assert text.exit_code == 1, text.output
        assert text.stdout == "" and f"error {code}:" in text.stderr, text.stderr
        as_json = self(*args, "--json")
        assert as_json.exit_code == 1 and as_json.stdout == ""
        body: dict[str, Any] = json.loads(as_json.stderr)["error"]
        assert body["code"] == code and body["message"]
        return body


class ClockedCli(CliDriver):
    """`entitle ARGS --database-url …` with ENTITLE_NOW set to ``now`` (tests move ``now``)."""

    def __init__(self, url: str, monkeypatch: Any) -> None:
        super().__init__(url)
        self.mp = monkeypatch
        from conftest import START

        self.now = START

    def top(self, *args: str) -> Any:
        from entitle.config import get_settings

        self.mp.setenv("ENTITLE_NOW", self.now.isoformat())
        get_settings.cache_clear()  # the console reads its settings (ENTITLE_NOW) once per process
        return super().top(*args)


@contextmanager
def clocked_cli(database_url: str, monkeypatch: Any) -> Iterator[ClockedCli]:
    """The fixture body of the CLI test files: a clocked driver with the tests' secret key."""
    from conftest import TEST_SECRET_KEY
    from entitle.config import get_settings

    monkeypatch.setenv("ENTITLE_SECRET_KEY", TEST_SECRET_KEY)
    yield ClockedCli(database_url, monkeypatch)
    get_settings.cache_clear()  # monkeypatch then removes ENTITLE_NOW
