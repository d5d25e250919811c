"""One ledger (R-CORE-5): a state machine over the services checks the invariants after each step."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle, RuleBasedStateMachine, consumes, initialize, invariant, multiple, rule,
    run_state_machine_as_test,
)
from sqlalchemy import func, select

from entitle.actors import operator
from entitle.catalog import services as catalog
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.keys import services as keys
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.tenancy import services as tenancy
from helpers import REGIONAL_SKUS, balances_by_kind, ledger_counts

# Two parts sold in some regions only (the default catalog's, 9137958 and 02683-001, are My2N
# vouchers, which never go to a wallet).
PARTS = ["91379040", "AXIS-ACS-CORE-1Y", "AC-EU-ONLY", "AC-US-ONLY"]
# Parts whose wallet is one account per SKU; AXIS units are kept in lots (one wallet account per
# redeemed key) and are allocated oldest lot first by the AXIS services, whose own state machine
# (tests/test_axis_state_machine.py) checks that path.
ONE_ACCOUNT_PARTS = [p for p in PARTS if not p.startswith("AXIS-")]
ORGS = [("North", "EU"), ("South", "US"), ("East", "APAC")]


def test_ledger_invariants_hold_across_any_sequence_of_operations(ctx):
    # R-CORE-5: every transaction balances, no wallet / batch / allocation goes negative, and
    # units are conserved: minted = keys outstanding + wallets + allocations + cancelled.
    actor = operator("ledger-test")
    with transaction(ctx.sessions) as s:
        catalog.load(s, catalog.parse(catalog.DEFAULT_CATALOG.read_text()), actor=actor, now=ctx.clock.now())
        catalog.load(s, catalog.parse_obj(REGIONAL_SKUS), actor=actor, now=ctx.clock.now())
    examples = iter(range(1_000_000))

    class LedgerMachine(RuleBasedStateMachine):
        active = Bundle("active_keys")

        def __init__(self) -> None:
            super().__init__()
            # Examples share the database (wiping it each time is slow on PostgreSQL): each has
            # its own organizations and compares global balances with where they started.
            self.baseline = Counter(balances_by_kind(ctx.engine))
            self.expected: Counter[tuple[str, str, str]] = Counter()  # (kind, org, part) -> units
            self.minted = 0
            self.used: list[str] = []

        def tx(self):  # noqa: ANN201
            return transaction(ctx.sessions)

        @initialize()
        def setup(self) -> None:
            now = ctx.clock.now()
            n = next(examples)
            with self.tx() as s:
                self.orgs = {name: (tenancy.create_organization(s, name=f"{name} {n}", region=region,
                                                                actor=actor, now=now).id, region)
                             for name, region in ORGS}
                self.sku = {p: catalog.sku_by_part(s, p) for p in PARTS}

        @rule(target=active, part=st.sampled_from(PARTS), quantity=st.integers(1, 5),
              count=st.integers(1, 3))
        def mint(self, part: str, quantity: int, count: int):  # noqa: ANN201
            with self.tx() as s:
                minted = keys.mint(s, sku_part=part, quantity_per_key=quantity, count=count,
                                   actor=actor, now=ctx.clock.now(), keep_codes=True)
            self.minted += quantity * count
            self.expected[("key_batch", "", part)] += quantity * count
            return multiple(*[(code, part, quantity) for code in minted.codes])

        @rule(key=consumes(active), org=st.sampled_from([name for name, _ in ORGS]))
        def redeem(self, key: tuple[str, str, int], org: str) -> None:
            code, part, quantity = key
            org_id, region = self.orgs[org]
            before = ledger_counts(ctx.engine)
            try:
                with self.tx() as s:
                    keys.redeem(s, org_id=org_id, typed_key=code, actor=actor, now=ctx.clock.now())
            except EntitleError as exc:
                assert exc.code == "key_wrong_region"
                assert not self.sku[part].sold_in(region)
                assert ledger_counts(ctx.engine) == before
                return  # the key stays active (and outstanding) in its batch
            assert self.sku[part].sold_in(region)
            self.expected[("key_batch", "", part)] -= quantity
            self.expected[("wallet", org, part)] += quantity
            self.used.append(code)

        @rule(key=consumes(active))
        def cancel(self, key: tuple[str, str, int]) -> None:
            code, part, quantity = key
            with self.tx() as s:
                keys.cancel(s, typed_key=code, actor=actor, now=ctx.clock.now())
            self.expected[("key_batch", "", part)] -= quantity
            self.expected[("cancelled", "", part)] += quantity

        @rule(org=st.sampled_from([name for name, _ in ORGS]), part=st.sampled_from(ONE_ACCOUNT_PARTS),
              year=st.integers(1, 2), amount=st.integers(1, 8))
        def allocate(self, org: str, part: str, year: int, amount: int) -> None:
            # The licensing models allocate by a ledger transfer from the wallet.
            org_id, _ = self.orgs[org]
            held = self.expected[("wallet", org, part)]
            before = ledger_counts(ctx.engine)
            now = ctx.clock.now()
            try:
                with self.tx() as s:
                    sku_id = self.sku[part].id
                    ledger.transfer(
                        s, org_id=org_id, kind="allocate", actor=actor, now=now, amount=amount,
                        source=ledger.account(s, org_id=org_id, kind="wallet", sku_id=sku_id, now=now),
                        target=ledger.account(s, org_id=org_id, kind="allocation", sku_id=sku_id,
                                              ref=f"year-{year}", now=now),
                    )
            except EntitleError as exc:
                assert amount > held, "refused although the wallet held enough"
                assert exc.code == "insufficient_units"
                assert exc.detail == {"available": held, "needed": amount, "missing": amount - held,
                                      "part_number": part}
                assert ledger_counts(ctx.engine) == before, "a refused transfer wrote entries"
                return
            assert amount <= held, "over-transfer accepted"
            self.expected[("wallet", org, part)] -= amount
            self.expected[("allocation", org, part)] += amount

        @rule(key=consumes(active))
        def redeem_twice(self, key: tuple[str, str, int]) -> None:
            """Redeem where it is sold, then try again: the second attempt moves nothing."""
            code, part, quantity = key
            org = next(name for name, region in ORGS if self.sku[part].sold_in(region))
            self.redeem(key, org)
            before = ledger_counts(ctx.engine)
            with pytest.raises(EntitleError) as exc, self.tx() as s:
                keys.redeem(s, org_id=self.orgs[org][0], typed_key=code, actor=actor, now=ctx.clock.now())
            assert exc.value.code == "key_already_redeemed"
            assert ledger_counts(ctx.engine) == before

        @invariant()
        def every_transaction_balances(self) -> None:
            with ctx.sessions() as s:
                assert ledger.unbalanced_transactions(s) == []
                assert ledger.running_balance_mismatches(s) == []

        @invariant()
        def no_bounded_account_is_negative(self) -> None:
            with ctx.sessions() as s:
                assert ledger.negative_accounts(s) == []

        @invariant()
        def units_are_conserved(self) -> None:
            with ctx.sessions() as s:
                assert int(s.scalar(select(func.coalesce(func.sum(Entry.amount), 0)))) == 0
            kinds = Counter(balances_by_kind(ctx.engine))
            kinds.subtract(self.baseline)
            minted = -kinds["issued"]
            assert minted == self.minted
            held = sum(kinds[k] for k in ("key_batch", "wallet", "allocation", "cancelled"))
            assert minted == held
            assert set(kinds) <= {"issued", "key_batch", "wallet", "allocation", "cancelled"}

        @invariant()
        def balances_match_the_model(self) -> None:
            if not hasattr(self, "orgs"):
                return
            names = {org_id: name for name, (org_id, _) in self.orgs.items()}
            parts = {sku.id: part for part, sku in self.sku.items()}
            with ctx.engine.connect() as conn:
                rows = conn.execute(
                    select(Account.kind, Account.org_id, Account.sku_id, func.sum(Entry.amount))
                    .join(Entry, Entry.account_id == Account.id)
                    .where(Account.kind.in_(["wallet", "allocation"]), Account.org_id.in_(names))
                    .group_by(Account.kind, Account.org_id, Account.sku_id)).all()
            actual = {(kind, names[org_id], parts[sku_id]): int(units)
                      for kind, org_id, sku_id, units in rows if units}
            assert actual == {k: u for k, u in self.expected.items()
                              if k[0] in ("wallet", "allocation") and u}
            kinds = Counter(balances_by_kind(ctx.engine))
            kinds.subtract(self.baseline)
            for kind in ("key_batch", "wallet", "allocation", "cancelled"):
                assert kinds[kind] == sum(u for (k, _, _), u in self.expected.items() if k == kind)

        def teardown(self) -> None:
            """The services that read wallets agree with the model (once per example: slower)."""
            if not hasattr(self, "orgs"):
                return
            with ctx.sessions() as s:
                for org, (org_id, _) in self.orgs.items():
                    shown = {line.part_number: line.units for line in ledger.wallet(s, org_id) if line.units}
                    assert shown == {part: u for (k, o, part), u in self.expected.items()
                                     if k == "wallet" and o == org and u}
                    for part, sku in self.sku.items():
                        assert ledger.wallet_units(s, org_id, sku.id) == self.expected[("wallet", org, part)]

    run_state_machine_as_test(LedgerMachine, settings=settings(
        max_examples=int(os.environ.get("ENTITLE_HYPOTHESIS_EXAMPLES", "25")), stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))


def test_a_transaction_that_does_not_sum_to_zero_is_refused(world):
    # R-CORE-5: post() refuses unbalanced moves before writing anything.
    now = world.now
    with transaction(world.ctx.sessions) as s:
        sku = catalog.sku_by_part(s, "91379040")
        org = tenancy.create_organization(s, name="Acme", region="EU", actor=operator(), now=now)
        wallet = ledger.account(s, org_id=org.id, kind="wallet", sku_id=sku.id, now=now)
        issued = ledger.account(s, org_id=org.id, kind="issued", sku_id=sku.id, now=now)
    before = ledger_counts(world.ctx.engine)
    with pytest.raises(ledger.UnbalancedTransaction), transaction(world.ctx.sessions) as s:
        ledger.post(s, org_id=org.id, kind="bad", actor=operator(), now=now,
                    moves=[(issued, -5), (wallet, 4)])
    with pytest.raises(ValueError), transaction(world.ctx.sessions) as s:
        ledger.transfer(s, org_id=org.id, kind="bad", actor=operator(), now=now, amount=0,
                        source=issued, target=wallet)
    assert ledger_counts(world.ctx.engine) == before
