"""Writers of one organization take its lock before the rows they change, so that two kinds of
write at once never deadlock on PostgreSQL (SQLite has one writer: nothing to order there).

Found by the API benchmark (issue 17): a redeem locks the organization, then the wallet account;
an Access Commander license generation locked its license row, then the wallet account (its
units), then the organization (its history entry) -- and PostgreSQL broke the cycle by failing
one of them ("deadlock detected", a 500).
"""

from __future__ import annotations

import threading
from typing import Any

from conftest import World
from entitle.access_commander import services as ac
from entitle.db import transaction
from entitle.keys import services as keys
from test_ac_heartbeat import OP, Site, keys_for

ROUNDS = 15


def test_redeems_and_license_generation_in_one_organization_never_deadlock(world: World) -> None:  # R-AC-3 R-CORE-4
    ctx = world.ctx
    site = Site(ctx, "Lock order", ["D1"], license_device="D1")
    codes = keys_for(ctx, count=2 * ROUNDS)
    failures: list[BaseException] = []
    start = threading.Barrier(3)

    def redeem(mine: list[str]) -> None:
        start.wait()
        for code in mine:
            try:
                with transaction(ctx.sessions) as s:
                    keys.redeem(s, org_id=site.org, typed_key=code, actor=OP, now=ctx.clock.now())
            except BaseException as exc:  # noqa: BLE001 -- any failure is the finding
                failures.append(exc)

    def generate() -> None:
        start.wait()
        for _ in range(ROUNDS):
            try:
                with transaction(ctx.sessions) as s:
                    inst = ac.get_installation(s, site.org, site.id)
                    ac.generate_license(s, installation=inst, license_device="D1", packages=[("91379040", 1)],
                                        actor=OP, now=ctx.clock.now(), secret=ctx.secret)
            except BaseException as exc:  # noqa: BLE001
                failures.append(exc)

    threads = [threading.Thread(target=redeem, args=(codes[:ROUNDS],)),
               threading.Thread(target=redeem, args=(codes[ROUNDS:],)), threading.Thread(target=generate)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    # Every redeem and every license counted: 1 + 2 x ROUNDS units redeemed, one held by the license.
    with ctx.sessions() as s:
        licenses: list[Any] = ac.licenses_of(s, ac.get_installation(s, site.org, site.id))
    assert len(licenses) == 1 + ROUNDS


def test_the_organization_lock_is_taken_once_per_transaction_and_again_after_a_savepoint_rolls_back(world: World) -> None:
    # A redeem locks the organization before its wallet figure, then records its history entry,
    # which locks it too: one statement. A savepoint rolled back releases the locks it took, so
    # the lock is taken again after one (docs/benchmarks.md, "The API layer").
    from sqlalchemy import event

    from entitle.history import services as history

    org = world.org("Locks")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, sql: str, *_args: Any) -> None:
        if "FOR NO KEY UPDATE" in sql:
            statements.append(sql)

    event.listen(world.ctx.engine, "before_cursor_execute", seen)
    try:
        with transaction(world.ctx.sessions) as s:
            history.lock_organization(s, org)
            history.lock_organization(s, org)  # held: no statement
            with s.begin_nested() as nested:
                history.lock_organization(s, org)  # in the savepoint: taken there
                nested.rollback()
            history.lock_organization(s, org)  # the savepoint's is gone: taken again
            history.lock_organization(s, org)
        with transaction(world.ctx.sessions) as s:  # a new transaction holds no lock yet
            history.lock_organization(s, org)
    finally:
        event.remove(world.ctx.engine, "before_cursor_execute", seen)
    postgres = world.ctx.engine.dialect.name == "postgresql"
    assert len(statements) == (4 if postgres else 0)
