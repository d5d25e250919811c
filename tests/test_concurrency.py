"""Many clients at once against real uvicorn processes (R-CORE-4, R-CORE-5).

The servers are started as a deployment starts them (``python -m uvicorn
entitle.api.app:app_from_env --factory``) on the test database; the clients are threads released
together by a barrier.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conftest import auth
from entitle.history.models import HistoryEntry
from entitle.ledger import services as ledger
from entitle.ledger.models import LedgerTransaction
from helpers import count_rows, org_with_owner, wallet_of, uvicorn_process

# One worker runs this module's tests (its servers are module fixtures: started once, not once
# per worker that gets one of its tests).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("concurrency")]
CLIENTS = 50


def _servers(database_url: str, tmp: Path, n: int, **limits: str) -> Iterator[list[str]]:
    settings = {"secret_key_file": str(tmp / "secret.key"), "redeem_limit_per_client": "100000/minute",
                **limits}
    if n == 1:
        with uvicorn_process(database_url, **settings) as a:
            yield [a]
    else:
        with uvicorn_process(database_url, **settings) as a, uvicorn_process(database_url, **settings) as b:
            yield [a, b]


@pytest.fixture(scope="module")
def one_server(database_url, tmp_path_factory) -> Iterator[list[str]]:  # noqa: ANN001
    yield from _servers(database_url, tmp_path_factory.mktemp("one"), 1,
                        redeem_limit_per_org="100000/minute")


@pytest.fixture(scope="module")
def two_servers(database_url, tmp_path_factory) -> Iterator[list[str]]:  # noqa: ANN001
    yield from _servers(database_url, tmp_path_factory.mktemp("two"), 2, redeem_limit_per_org="60/minute")


def at_once(n: int, request: Callable[[httpx.Client, int], httpx.Response]) -> list[httpx.Response]:
    """Run ``request`` in n threads that all start at the same moment."""
    barrier = threading.Barrier(n)
    results: list[httpx.Response | BaseException | None] = [None] * n

    def worker(i: int) -> None:
        with httpx.Client(timeout=120) as client:
            try:
                barrier.wait()
                results[i] = request(client, i)
            except BaseException as exc:  # noqa: BLE001 - reported below
                results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    errors = [r for r in results if not isinstance(r, httpx.Response)]
    assert not errors, errors[:3]
    return results  # type: ignore[return-value]


def outcome(r: httpx.Response) -> tuple[int, str]:
    if r.status_code < 400:
        return r.status_code, ""
    try:
        return r.status_code, r.json()["error"]["code"]
    except (ValueError, KeyError):
        return r.status_code, r.text[:200]


def assert_ledger_sound(world) -> None:  # noqa: ANN001
    with world.ctx.sessions() as s:
        assert ledger.unbalanced_transactions(s) == []
        assert ledger.negative_accounts(s) == []
        assert ledger.running_balance_mismatches(s) == []


def redeemed_history(world, org: int) -> int:  # noqa: ANN001
    with world.ctx.sessions() as s:
        return s.query(HistoryEntry).filter_by(org_id=org, action="key.redeemed").count()


def test_fifty_clients_redeeming_one_key_get_one_success(world, one_server):
    # R-CORE-4 / R-CORE-5: exactly one 200, 49 x 409 key_already_redeemed, units moved once.
    [url] = one_server
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040", quantity=7)
    results = at_once(CLIENTS, lambda c, i: c.post(f"{url}/api/v1/orgs/{org}/wallet/redeem",
                                                   json={"key": code}, headers=auth(owner.token, f"k{i}")))
    assert Counter(outcome(r) for r in results) == {(200, ""): 1, (409, "key_already_redeemed"): CLIENTS - 1}
    assert wallet_of(world.ctx.engine, org) == {"91379040": 7}
    assert redeemed_history(world, org) == 1
    assert_ledger_sound(world)


def test_fifty_clients_with_one_idempotency_key_get_the_same_answer(world, one_server):
    # R-CORE-5: one redemption; every client gets the same 200 answer; all but one are replays.
    [url] = one_server
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379041", quantity=3)
    results = at_once(CLIENTS, lambda c, i: c.post(f"{url}/api/v1/orgs/{org}/wallet/redeem",
                                                   json={"key": code}, headers=auth(owner.token, "same")))
    assert {r.status_code for r in results} == {200}
    assert len({r.text for r in results}) == 1
    assert sum(r.headers.get("Idempotent-Replayed") == "true" for r in results) == CLIENTS - 1
    assert wallet_of(world.ctx.engine, org) == {"91379041": 3}
    with world.ctx.sessions() as s:
        assert s.query(LedgerTransaction).filter_by(kind="redeem").count() == 1
    assert redeemed_history(world, org) == 1
    assert_ledger_sound(world)


def test_fifty_keys_redeemed_at_once_record_one_chain_of_wallet_figures(world, one_server):
    # R-CORE-5, R-CORE-6: the redeem reads the wallet, the history head and the batch account in
    # its first statement, after the organization's lock (issue 17): redeems of one SKU into one
    # organization at once, and of the same batch into a second one, each see what the one before
    # committed. Every "wallet before" is the "wallet after" of the one before, the chain
    # links each entry to the one before, and the batch's shared account ends where its entries say.
    [url] = one_server
    acme, ann = org_with_owner(world, "Acme", "ann@example.com")
    beta, bob = org_with_owner(world, "Beta", "bob@example.com")
    codes = world.mint("91379040", count=CLIENTS)
    into = [(acme, ann) if i % 5 else (beta, bob) for i in range(CLIENTS)]  # 40 into Acme, 10 into Beta
    results = at_once(CLIENTS, lambda c, i: c.post(f"{url}/api/v1/orgs/{into[i][0]}/wallet/redeem",
                                                   json={"key": codes[i]}, headers=auth(into[i][1].token, f"m{i}")))
    assert Counter(outcome(r) for r in results) == {(200, ""): CLIENTS}
    assert wallet_of(world.ctx.engine, acme) == {"91379040": 40}
    assert wallet_of(world.ctx.engine, beta) == {"91379040": 10}
    with world.ctx.sessions() as s:
        for org, n in ((acme, 40), (beta, 10)):
            figures = [(e.before["wallet"], e.after["wallet"]) for e in s.query(HistoryEntry)
                       .filter_by(org_id=org, action="key.redeemed").order_by(HistoryEntry.seq)]
            assert figures == [(i, i + 1) for i in range(n)], figures
            chain = s.query(HistoryEntry).filter_by(org_id=org).order_by(HistoryEntry.seq).all()
            assert [e.seq for e in chain] == list(range(1, len(chain) + 1))
            assert all(e.prev_hash == p.hash for p, e in zip(chain, chain[1:]))  # the servers' key is their own
    assert sorted(r.json()["wallet_units"] for r, (org, _) in zip(results, into) if org == acme) == list(range(1, 41))
    assert_ledger_sound(world)


def test_two_processes_share_one_key_and_one_rate_limit(world, two_servers):
    # R-CORE-4 / R-CORE-5: two server processes on one database behave as one.
    urls = two_servers
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379041", quantity=2)
    results = at_once(CLIENTS, lambda c, i: c.post(f"{urls[i % 2]}/api/v1/orgs/{org}/wallet/redeem",
                                                   json={"key": code}, headers=auth(owner.token, f"k{i}")))
    assert Counter(outcome(r) for r in results) == {(200, ""): 1, (409, "key_already_redeemed"): CLIENTS - 1}
    assert wallet_of(world.ctx.engine, org) == {"91379041": 2}
    assert_ledger_sound(world)

    # Rate limit: 60 per organization per minute across both processes (50 used above).
    keys = world.mint("91379041", count=20)
    results = at_once(20, lambda c, i: c.post(f"{urls[i % 2]}/api/v1/orgs/{org}/wallet/redeem",
                                              json={"key": keys[i]}, headers=auth(owner.token, f"r{i}")))
    got = Counter(outcome(r) for r in results)
    assert got == {(200, ""): 10, (429, "rate_limited"): 10}
    assert all(r.headers.get("Retry-After") for r in results if r.status_code == 429)
    assert wallet_of(world.ctx.engine, org) == {"91379041": 2 + 10}
    assert count_rows(world.ctx.engine, LedgerTransaction) == 2 + 11  # 2 mints, 11 redeems
    assert_ledger_sound(world)
