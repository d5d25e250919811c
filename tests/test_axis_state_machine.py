"""AXIS licensing as a state machine (SPEC §3, R-AX-4, R-AX-5, R-AX-6, R-AX-7, R-AX-8, R-AX-10;
R-CORE-5): random redemptions, allocations (some that must be refused), renewals, devices,
hardware and jumps in time, against a small model of the wallet, the allocations and the need.
After every step the ledger balances, nothing is negative, units are conserved and what the
services show agrees with the model."""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test
from sqlalchemy import func, select

from conftest import World
from entitle.actors import operator
from entitle.axis import rules
from entitle.axis import services as axis
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.keys import services as keys
from entitle.ledger import services as ledger
from entitle.ledger.models import Account, Entry
from entitle.platform.models import Event
from helpers import balances_by_kind

OP = operator("axis-machine")
P = "axis-camera-station"
TYPES = ("core", "universal")
PART = {("core", 1): "AXIS-ACS-CORE-1Y", ("core", 5): "AXIS-ACS-CORE-5Y",
        ("universal", 1): "AXIS-ACS-UNIVERSAL-1Y", ("universal", 5): "AXIS-ACS-UNIVERSAL-5Y"}
WALLET_PARTS = {part: ("subscription", t, term) for (t, term), part in PART.items()}
WALLET_PARTS["AXIS-ACS-CORE-EXP"] = ("expansion", "core", 1)
STARTS = [datetime(2026, 1, 15, 9, tzinfo=UTC), datetime(2028, 2, 29, tzinfo=UTC),
          datetime(2027, 3, 1, 12, 30, tzinfo=UTC)]
KINDS = {"issued", "key_batch", "wallet", "axis_allocation", "hardware_license", "expired", "upgraded", "cancelled"}


@dataclass
class Lot:
    """The model of a wallet lot: units that entered the wallet together."""

    seq: int
    part: str
    grant_kind: str
    license_type: str
    term: int
    received_at: datetime
    units: int
    recorded: bool = False  # its expiry is in the ledger

    @property
    def expires_at(self) -> datetime:
        return rules.add_years(self.received_at, rules.STORAGE_YEARS)

    def usable(self, now: datetime) -> bool:
        return self.units > 0 and now < self.expires_at


def test_axis_licensing_keeps_its_invariants_across_any_sequence(world: World) -> None:
    ctx = world.ctx
    examples = iter(range(1_000_000))

    class AxisMachine(RuleBasedStateMachine):
        def __init__(self) -> None:
            super().__init__()
            # Examples share the database (wiping it is slow on PostgreSQL): each has its own
            # organization and compares global balances with where they started.
            self.baseline = Counter(balances_by_kind(ctx.engine))
            self.minted = 0
            self.lots: list[Lot] = []
            self.alloc: dict[str, Counter[int]] = {t: Counter() for t in TYPES}
            self.devices: list[tuple[str, datetime]] = []  # subscription devices (not on hardware)
            self.hardware: dict[str, int] = {}  # serial -> licenses
            self.on_hardware: Counter[str] = Counter()  # serial -> devices on it
            self.expired = 0  # units whose expiry the ledger recorded
            self.remainder: dict[str, int] = defaultdict(int)  # license-days per part
            self.seq = 0
            self.cams = 0

        # --- helpers ---------------------------------------------------------------------------

        def call(self, fn: Any, **kw: Any) -> Any:
            with transaction(ctx.sessions) as s:
                return fn(s, org_id=self.org, actor=OP, now=self.now, **kw)

        def refused(self, code: str, fn: Any, **kw: Any) -> EntitleError:
            try:
                self.call(fn, **kw)
            except EntitleError as exc:
                assert exc.code == code, (exc.code, exc.message)
                return exc
            raise AssertionError(f"expected {code}")

        def mint(self, part: str, quantity: int) -> str:
            [code] = world.mint(part, quantity=quantity)
            self.minted += quantity
            return code

        def current(self) -> rules.Year:
            y = rules.year_at(self.start, self.now)
            assert y is not None
            return y

        def need_at(self, license_type: str, at: datetime) -> int:
            return sum(1 for t, added in self.devices if t == license_type and added <= at)

        def usable(self, grant_kind: str, license_type: str, term: int) -> list[Lot]:
            return sorted((lot for lot in self.lots if lot.usable(self.now) and lot.grant_kind == grant_kind
                           and lot.license_type == license_type and lot.term == term),
                          key=lambda lot: (lot.received_at, lot.seq))

        def record_expiry(self) -> None:
            """Every successful allocation first records the expiry of lots past five years."""
            for lot in self.lots:
                if lot.units > 0 and not lot.recorded and lot.expires_at <= self.now:
                    lot.recorded = True
                    self.expired += lot.units

        def take(self, pool: list[Lot], units: int) -> None:
            for lot in pool:
                n = min(lot.units, units)
                lot.units -= n
                units -= n
            assert units == 0

        def new_lot(self, part: str, units: int) -> None:
            kind, license_type, term = WALLET_PARTS[part]
            self.seq += 1
            self.lots.append(Lot(self.seq, part, kind, license_type, term, self.now, units))

        # --- setup ------------------------------------------------------------------------------

        @initialize(start=st.sampled_from(STARTS), later=st.sampled_from([0, 29, 30, 45, 200]),
                    core=st.integers(0, 6), universal=st.integers(0, 3))
        def setup(self, start: datetime, later: int, core: int, universal: int) -> None:
            self.n = next(examples)
            self.org = world.org(f"Machine {self.n}")
            self.start = self.now = start
            system = self.call(axis.register_system, uid=f"ACS-M{self.n}", name="HQ", product_code=P)
            self.system_id = system.id
            self.call(axis.start_subscription, product_code=P)
            self.now = start + timedelta(days=later)  # in the first grace period, at its end, or after
            self._add(core, universal)

        def _add(self, core: int, universal: int) -> None:
            devices = [axis.NewDevice(f"{t}-{self.n}-{len(self.devices) + i}", t)
                       for i, t in enumerate(["core"] * core + ["universal"] * universal)]
            if devices:
                self.call(axis.add_devices, system_id=self.system_id, devices=devices)
                self.devices += [(d.license_type, self.now) for d in devices]

        # --- rules ------------------------------------------------------------------------------

        @rule(part=st.sampled_from(sorted(WALLET_PARTS)), quantity=st.integers(1, 25))
        def redeem(self, part: str, quantity: int) -> None:
            code = self.mint(part, quantity)
            with transaction(ctx.sessions) as s:
                keys.redeem(s, org_id=self.org, typed_key=code, actor=OP, now=self.now)
            self.new_lot(part, quantity)

        @rule(core=st.integers(0, 8), universal=st.integers(0, 3))
        def add_devices(self, core: int, universal: int) -> None:  # R-AX-2 R-AX-8 R-AX-9: never refused
            self._add(core, universal)

        @rule(lines=st.lists(st.tuples(st.sampled_from(TYPES), st.one_of(st.just(0), st.integers(-1, 6)),
                                       st.integers(1, 8), st.sampled_from([1, 5])), min_size=1, max_size=2))
        def allocate(self, lines: list[tuple[str, int, int, int]]) -> None:  # R-AX-5 R-AX-7 R-AX-4
            """Any lines: some must be refused (too few units, a year out of reach)."""
            cur = self.current().index
            lines = [axis.Line(t, cur + offset, units, term) for t, offset, units, term in lines]
            self._allocate(lines, axis.allocate, product_code=P, lines=lines)

        @rule(license_type=st.sampled_from(TYPES), term=st.sampled_from([1, 1, 5]), units=st.integers(1, 10),
              offset=st.one_of(st.just(0), st.integers(0, rules.AHEAD_YEARS)), extra=st.integers(0, 6))
        def allocate_what_the_wallet_holds(self, license_type: str, term: int, units: int, offset: int,
                                           extra: int) -> None:
            """A line the wallet can pay for (after redeeming what it lacks, and some more), mostly
            to the current year: compensated when after its grace (R-AX-5, R-AX-7)."""
            short = units - sum(lot.units for lot in self.usable("subscription", license_type, term))
            if short > 0:
                self.redeem(PART[(license_type, term)], short + extra)
            lines = [axis.Line(license_type, self.current().index + offset, units, term)]
            self._allocate(lines, axis.allocate, product_code=P, lines=lines)

        @rule(years_ahead=st.integers(0, 3), buy_first=st.booleans())
        def renew(self, years_ahead: int, buy_first: bool) -> None:  # R-AX-6 R-AX-5 R-AX-12
            """Renew the current year and the years ahead, as they are or after redeeming the
            one-year units they miss: the wallet's five-year units first, then one-year units,
            for the earliest year first; all or nothing."""
            cur = self.current()
            years = list(range(cur.index, cur.index + years_ahead + 1))
            lock = min(self.now, cur.grace_end)

            def plan() -> tuple[list[axis.Line], dict[str, int]]:
                lines, short = [], {}
                for t in TYPES:
                    missing = {i: max(0, self.need_at(t, lock if i == cur.index else self.now) - self.alloc[t][i])
                               for i in years}
                    wallet = {term: sum(lot.units for lot in self.usable("subscription", t, term)) for term in (1, 5)}
                    to_buy, placed = rules.cover(missing, wallet, years)
                    short[t] = sum(to_buy.values())
                    lines += [axis.Line(t, i, units, term) for i, term, units in placed]
                return lines, short

            lines, short = plan()
            if buy_first:
                for t in TYPES:
                    if short[t]:
                        self.redeem(PART[(t, 1)], short[t])
                lines, short = plan()
            if any(short.values()):
                exc = self.refused("insufficient_units", axis.renew, product_code=P, years_ahead=years_ahead)
                assert exc.detail["missing"] == sum(short.values())
                return
            if not lines:
                assert self.call(axis.renew, product_code=P, years_ahead=years_ahead)["allocations"] == []
                return
            self._allocate(lines, axis.renew, product_code=P, years_ahead=years_ahead)

        def _allocate(self, planned: list[axis.Line], fn: Any, **kw: Any) -> None:
            cur = self.current().index
            if any(not cur <= line.year <= cur + rules.AHEAD_YEARS for line in planned):
                exc = self.refused("year_out_of_range", fn, **kw)
                assert (exc.detail["first"], exc.detail["last"]) == (cur, cur + rules.AHEAD_YEARS)
                return
            wanted: Counter[tuple[str, int]] = Counter()
            for line in planned:
                wanted[(line.license_type, line.term_years)] += line.units
            short = {k: n - sum(lot.units for lot in self.usable("subscription", *k))
                     for k, n in wanted.items()}
            short = {k: m for k, m in short.items() if m > 0}
            if short:
                exc = self.refused("insufficient_units", fn, **kw)
                assert exc.detail["missing"] == sum(short.values())
                return
            out = self.call(fn, **kw)
            self.record_expiry()
            for k, n in wanted.items():
                self.take(self.usable("subscription", *k), n)
            assert len(out["allocations"]) == len(planned)
            for line, got in zip(planned, out["allocations"], strict=True):  # one allocation per line, in order
                assert (got["license_type"], got["year"], got["years"], got["units"]) == (
                    line.license_type, line.year, line.term_years, line.units)
                period = rules.year(self.start, line.year)
                # R-AX-7: after the year's grace the units cover from now; the days before are given back.
                days = (self.now - period.start).days if self.now >= period.start + rules.GRACE else 0
                total = line.units * days
                assert got["compensation_license_days"] == total
                part = PART[(line.license_type, line.term_years)]
                # Given back as whole units of the line's SKU, each worth the license-days of the
                # subscription years it licenses (365 or 366 each); the rest is kept for later.
                unit_days = (rules.year(self.start, line.year + line.term_years).start - period.start).days
                # A remainder is turned into units by a compensation of its part only, at that
                # compensation's unit worth: an allocation with none leaves it as it is, even when
                # it is worth a unit of a shorter year (docs/axis.md, "Compensation").
                credit = 0
                if total:
                    credit, self.remainder[part] = divmod(self.remainder[part] + total, unit_days)
                assert got["compensation_units"] == credit, (line, got)
                for index in range(line.year, line.year + line.term_years):
                    self.alloc[line.license_type][index] += line.units
                if credit:
                    self.new_lot(part, credit)

        @rule(preloaded=st.integers(0, 10))
        def register_hardware(self, preloaded: int) -> None:  # R-AX-10
            serial = f"HW-{self.n}-{len(self.hardware)}"
            if preloaded:
                code = self.mint("AXIS-S30-PRELOADED-CORE", preloaded)
                # Not for the wallet: refused there, then it activates the hardware it came with.
                with transaction(ctx.sessions) as s:
                    try:
                        keys.redeem(s, org_id=self.org, typed_key=code, actor=OP, now=self.now)
                    except EntitleError as exc:
                        assert exc.code == "key_not_for_wallet"
                    else:
                        raise AssertionError("a preloaded key went into the wallet")
                self.call(axis.register_hardware, product_code=P, serial=serial, preloaded_key=code)
            else:
                self.call(axis.register_hardware, product_code=P, serial=serial, license_type="core")
            self.hardware[serial] = preloaded

        def some_hardware(self, pick: int) -> str:
            if not self.hardware:
                self.register_hardware(pick % 5)
            return sorted(self.hardware)[pick % len(self.hardware)]

        @rule(pick=st.integers(0, 9), cameras=st.integers(1, 5))
        def add_devices_on_hardware(self, pick: int, cameras: int) -> None:  # R-AX-10: not in the need
            serial = self.some_hardware(pick)
            self.cams += cameras
            devices = [axis.NewDevice(f"{serial}-cam-{self.cams - i}", "core", serial) for i in range(cameras)]
            self.call(axis.add_devices, system_id=self.system_id, devices=devices)
            self.on_hardware[serial] += cameras

        @rule(pick=st.integers(0, 9), units=st.integers(1, 10), buy_first=st.booleans())
        def allocate_to_hardware(self, pick: int, units: int, buy_first: bool) -> None:  # R-AX-10
            serial = self.some_hardware(pick)
            have = sum(lot.units for lot in self.usable("expansion", "core", 1))
            if buy_first and have < units:
                self.redeem("AXIS-ACS-CORE-EXP", units - have)
            pool = self.usable("expansion", "core", 1)
            have = sum(lot.units for lot in pool)
            if have < units:
                exc = self.refused("insufficient_units", axis.allocate_to_hardware, serial=serial, units=units)
                assert exc.detail == {"missing": units - have, "available": have, "needed": units}
                return
            out = self.call(axis.allocate_to_hardware, serial=serial, units=units)
            self.record_expiry()
            self.take(pool, units)
            self.hardware[serial] += units
            assert out["licenses"] == self.hardware[serial]

        @rule(jump=st.one_of(st.tuples(st.just("days"), st.integers(1, 40)),
                             st.tuples(st.just("years"), st.integers(1, 3)),
                             st.tuples(st.sampled_from(["grace_or_renewal", "lot_expiry"]), st.sampled_from([0, -1]))))
        def time_passes(self, jump: tuple[str, int]) -> None:
            """Days or years pass, or the clock goes to (or one microsecond before) the next grace
            end or renewal (R-AX-3, R-AX-6) or the next expiry of a wallet lot (R-AX-4)."""
            what, n = jump
            if what == "days":
                self.now += timedelta(days=n)
                return
            if what == "years":
                self.now = rules.add_years(self.now, n)
                return
            if what == "grace_or_renewal":
                cur = self.current()
                moment = cur.grace_end if self.now < cur.grace_end else cur.end
            else:
                pending = [lot.expires_at for lot in self.lots if lot.units and lot.expires_at > self.now]
                if not pending:
                    return
                moment = min(pending)
            self.now = max(self.now, moment + timedelta(microseconds=n))

        # --- invariants ---------------------------------------------------------------------------

        @invariant()
        def the_ledger_is_sound(self) -> None:  # R-CORE-5
            with ctx.sessions() as s:
                assert ledger.unbalanced_transactions(s) == []
                assert ledger.negative_accounts(s) == []
                assert ledger.running_balance_mismatches(s) == []
                assert int(s.scalar(select(func.coalesce(func.sum(Entry.amount), 0)))) == 0

        @invariant()
        def units_are_conserved(self) -> None:
            kinds = Counter(balances_by_kind(ctx.engine))
            kinds.subtract(self.baseline)
            assert -kinds["issued"] == self.minted
            assert sum(v for k, v in kinds.items() if k != "issued") == self.minted
            assert {k for k, v in kinds.items() if v} <= KINDS

        @invariant()
        def the_services_agree_with_the_model(self) -> None:
            if not hasattr(self, "org"):
                return
            with ctx.sessions() as s:
                product = axis.product_by_code(s, P)
                st_ = axis.status(s, org_id=self.org, product=product, now=self.now)
                ledger_wallet = int(s.scalar(
                    select(func.coalesce(func.sum(Entry.amount), 0)).join(Account, Account.id == Entry.account_id)
                    .where(Account.org_id == self.org, Account.kind == "wallet")) or 0)
                expired = int(s.scalar(
                    select(func.coalesce(func.sum(Entry.amount), 0)).join(Account, Account.id == Entry.account_id)
                    .where(Account.org_id == self.org, Account.kind == "expired")) or 0)
                hardware = {hw.serial: axis.hardware_licenses(s, hw) for hw in axis.hardware_of(s, self.org)}
                growth = Counter(e.payload["year"] for e in s.scalars(select(Event).where(
                    Event.org_id == self.org, Event.type == "axis.growth_allowance.exceeded")))
            # R-AX-4: the wallet shows the usable lots, oldest first; expired ones are gone from the
            # moment they expire, and from the ledger once a write records it.
            shown = [(lot["part_number"], lot["units"], lot["received_at"]) for lot in st_["wallet"]["lots"]]
            model = sorted((lot for lot in self.lots if lot.usable(self.now)), key=lambda x: (x.received_at, x.seq))
            assert shown == [(lot.part, lot.units, lot.received_at.isoformat()) for lot in model]
            unrecorded = sum(lot.units for lot in self.lots
                             if lot.units and not lot.recorded and lot.expires_at <= self.now)
            assert sum(lot["units"] for lot in st_["wallet"]["lots"]) == ledger_wallet - unrecorded
            assert expired == self.expired
            # R-AX-5, R-AX-2, R-AX-8: allocations per year and the need, now and at the grace end.
            cur = self.current()
            lock = min(self.now, cur.grace_end)
            assert st_["current_year"]["index"] == cur.index
            for year in st_["years"]:
                for t in TYPES:
                    assert year["license_types"][t]["allocated"] == self.alloc[t][year["index"]], (t, year)
            needs = {t: self.need_at(t, lock) for t in TYPES}
            for t in TYPES:
                v = st_["license_types"][t]
                assert (v["need_now"], v["need"], v["allocated"]) == (
                    self.need_at(t, self.now), needs[t], self.alloc[t][cur.index])
            # R-AX-3, R-AX-5, R-AX-6: the state.
            if all(self.alloc[t][cur.index] >= needs[t] for t in TYPES):
                state = "fully_licensed"
            elif self.now < cur.grace_end:
                state = "in_grace"
            elif any(self.alloc[t][cur.index] > 0 and needs[t] > 0 for t in TYPES):
                state = "partially_licensed"
            else:
                state = "not_licensed"
            # R-AX-10: devices on hardware beyond its licenses keep it from being fully licensed.
            if state == "fully_licensed" and any(self.on_hardware[h] > n for h, n in self.hardware.items()):
                some = (any(self.alloc[t][cur.index] > 0 and needs[t] > 0 for t in TYPES)
                        or any(min(self.on_hardware[h], n) for h, n in self.hardware.items()))
                state = "partially_licensed" if some else "not_licensed"
            assert st_["state"] == state
            assert {h["serial"]: h["missing"] for h in st_["hardware"]} == {
                h: max(0, self.on_hardware[h] - n) for h, n in self.hardware.items()}
            # R-AX-7: the license-days kept until they make a unit.
            assert st_["wallet"]["remainder_license_days"] == {p: d for p, d in self.remainder.items() if d}
            # R-AX-10: hardware licenses never move or expire.
            assert hardware == self.hardware
            # R-AX-9: at most one growth event per subscription year.
            assert all(n == 1 for n in growth.values())

    run_state_machine_as_test(AxisMachine, settings=settings(
        max_examples=int(os.environ.get("ENTITLE_HYPOTHESIS_EXAMPLES", "25")), stateful_step_count=20, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
