"""My2N apartment license rules as plain code (SPEC §4, seed 002): business models, apartments
and their devices, who pays, paid-through dates and lapsing, the migration check, vouchers.

No I/O, no clock: every function that depends on time takes ``now`` (timezone-aware UTC) and
data, and returns values or raises ``Refusal`` (a stable ``code``, a sentence, the numbers).
The services of this area (a later step of issue 6) load the data and store what these return.

Decisions where the spec is silent:

- A device in local mode still counts towards the 4 paid devices of its apartment (it is a
  phone, tablet or third-party device all the same); it only makes no license necessary.
- When an apartment's license has lapsed (or was never paid) its paid devices stop, except
  those in local mode, which never needed the license (R-MY-3); intercoms and 2N answering
  units keep working.
- Paid-through is extended one calendar year per apartment-year credit, from
  max(now, paid-through): 29 February becomes 28 February in a common year, and each further
  year counts from that date (n credits = n one-year steps, whichever way they arrive).
- The site credit pool holds two units. A code of a per-apartment batch adds ``years``
  apartment-years; a code of a per-device batch adds ``years`` device-years, i.e. it pays one
  paid device for ``years`` years. One apartment-year is paid with one apartment-year when the
  pool has any, else with one device-year per billable device of the apartment (paid, not in
  local mode: 1 to 4), never with a mix.
- A voucher batch is valid from its purchase until purchase + 3 calendar years (end excluded):
  its Active codes can be redeemed only then.
- Card payment with recurring payment runs in the site's billing year, which ends at its
  anniversary (``period_end``). Each apartment needing a license is paid through the anniversary,
  for the days it is not paid yet: a whole year costs the price of an apartment-year, a part of it
  that price times the days not paid (a started day counts) over the days of the billing year,
  rounded to the nearest minor unit (``charge_lines``). Turning recurring payment on again before
  the anniversary continues the same billing year, so what is paid is never charged again.
- With recurring payment on, every apartment needing a license is covered until the anniversary
  plus a retry window of 7 days (``recurring_cover``): an apartment that starts needing a license
  works at once and is charged for the rest of the year by the next sweep; a renewal declined at
  the anniversary is retried daily, and only when the window ends do unpaid apartments lapse. A
  charge declined during the year shortens the cover of the apartments it was for to 7 days from
  that decline.
- Per-device vouchers are counted per device (issue 14 point 6). An apartment paid with
  device-years is paid for as many billable devices as it had (``Apartment.devices_paid_for``;
  None: paid per apartment, by an apartment-year, a card or a custom license). Each device has
  the moment it last started counting (``Device.since``: added, moved in, local mode turned off);
  with more billable devices than paid for, the apartment is ``partly_paid`` and the devices that
  started counting last stop (``unpaid_devices``). Paying from the pool then tops it up: one
  device-year per device not paid for and paid year left (``years_left``, a started year whole),
  through the same paid-through; an apartment-year does not top up. Paying the next year sets what
  the whole paid time covers: every device (an apartment-year) or the billable devices there are
  (device-years). A card pays whole apartments: a partly paid apartment is, for it, not paid
  (``whole_paid_through``) and is charged from now; once paid by card it is paid per apartment.
- Migrating from the custom model before its license expires keeps the time it paid
  (``carried_paid_through``): each apartment needing a license at the change is paid through the
  custom license's expiry. An apartment that starts needing one afterwards is a new need.
- Words (issue 14 point 10, ``apartment_state``): an apartment never paid is ``not_paid``; only a
  license that was paid and ended is ``lapsed``. A cut-off is shown as the date when it is
  midnight UTC, else with its time and zone (``moment_text``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Literal, get_args

from entitle.clock import add_years  # one calendar-year rule for every licensing model
from entitle.errors import EntitleError
from entitle.text import plural

BusinessModel = Literal["custom", "apartment"]
Region = Literal["EU", "US", "APAC", "LATAM", "MEA"]
DeviceKind = Literal["intercom", "answering_unit", "phone", "tablet", "third_party"]
VoucherScope = Literal["apartment", "device"]
CodeState = Literal["active", "used", "cancelled"]

PAID_KINDS: frozenset[DeviceKind] = frozenset({"phone", "tablet", "third_party"})  # R-MY-2
MAX_PAID_DEVICES = 4  # R-MY-2: per apartment
PART_DEFAULT = "9137958"  # R-MY-3: My2N Annual Apartment Subscription
PART_US_APAC = "02683-001"  # R-MY-3: the same, for US & APAC sites only
US_APAC: frozenset[Region] = frozenset({"US", "APAC"})
LAPSE_WARNING = timedelta(days=30)  # R-MY-6: shown on the dashboard this long before it happens
RENEWAL_RETRY_WINDOW = timedelta(days=7)  # R-MY-5: a declined renewal is retried this long
DAY = timedelta(days=1)
VOUCHER_VALIDITY_YEARS = 3  # R-MY-5


class Refusal(EntitleError):
    """A My2N rule refused the action; ``code`` is stable, ``message`` says what to do, the
    detail (JSON-ready) carries the numbers. The API maps it like any other EntitleError."""

    status = 409


# --- sites and business models (R-MY-1) ---------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Site:
    site_id: int
    model: BusinessModel
    region: Region
    custom_expires_at: datetime | None = None  # the end of a custom-model site's license


@dataclass(frozen=True, slots=True)
class CustomExpiry:
    """What a custom-model site shows: when it expires, and whether it has."""

    expires_at: datetime
    expired: bool
    days_left: int


def check_model_choice(chosen: str) -> BusinessModel:
    """The model a site may be given now: only ``apartment``; ``custom`` is retired."""
    if chosen == "custom":
        raise Refusal("model_retired", "The custom business model is retired and cannot be chosen; "
                      "choose the apartment model.", model=chosen)
    if chosen != "apartment":
        raise Refusal("model_unknown", f"There is no business model {chosen!r}; choose the apartment model.",
                      model=chosen, status=400)
    return "apartment"


def check_prolongation(site: Site) -> None:
    """A custom-model site cannot be prolonged; its admin must migrate it (R-MY-4) first."""
    if site.model == "custom":
        expires = site.custom_expires_at.date().isoformat() if site.custom_expires_at else "its expiry"
        raise Refusal("model_retired", "The custom business model is retired and cannot be prolonged; "
                      f"migrate the site to the apartment model before {expires}.",
                      site_id=site.site_id,
                      expires_at=site.custom_expires_at.isoformat() if site.custom_expires_at else None)


def custom_expiry(site: Site, now: datetime) -> CustomExpiry | None:
    """The expiry a custom-model site shows; None for an apartment-model site."""
    if site.model != "custom":
        return None
    if site.custom_expires_at is None:
        raise ValueError("a custom-model site has an expiry")
    left = site.custom_expires_at - now
    return CustomExpiry(site.custom_expires_at, expired=left <= timedelta(0), days_left=max(0, left.days))


def check_model_change(*, current: BusinessModel, chosen: str, devices: Iterable[Device]) -> BusinessModel:
    """R-MY-1, R-MY-4: the vendor-support model change. Leaving ``custom`` needs every
    non-intercom device in an apartment. (The service then revokes every session and app token
    of the site's users.)"""
    model = check_model_choice(chosen)
    if current == "custom":
        check_migration(devices)
    return model


# --- apartments and devices (R-MY-2, R-MY-3) ----------------------------------------------------

@dataclass(frozen=True, slots=True)
class Device:
    device_id: int
    kind: DeviceKind
    apartment_id: int | None = None
    local_mode: bool = False
    # When it last started counting towards its apartment's license (added, moved in, local mode
    # turned off); None: before any other. Of an apartment paid for fewer devices, the latest stop.
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Apartment:
    apartment_id: int
    paid_through: datetime | None = None  # None: never paid
    # The billable devices its paid time covers when that was paid with device-years (per-device
    # vouchers); None: paid per apartment (apartment-year, card, a custom license), every device.
    devices_paid_for: int | None = None


def is_paid_device(device: Device) -> bool:
    return device.kind in PAID_KINDS


def devices_of(apartment_id: int, devices: Iterable[Device]) -> list[Device]:
    return [d for d in devices if d.apartment_id == apartment_id]


def group_by_apartment(devices: Iterable[Device]) -> dict[int, list[Device]]:
    """Each apartment's devices (devices outside every apartment are left out), in one pass."""
    grouped: dict[int, list[Device]] = {}
    for d in devices:
        if d.apartment_id is not None:
            grouped.setdefault(d.apartment_id, []).append(d)
    return grouped


def check_assignment(device: Device, apartment_devices: Iterable[Device]) -> None:
    """May ``device`` join the apartment that holds ``apartment_devices``? Intercoms never; a
    paid device not beyond the fourth. Nothing here depends on who adds it (site admin or
    apartment admin): the limit is the same for both."""
    if device.kind == "intercom":
        raise Refusal("intercom_not_in_apartment", "Intercoms belong to the site, not to an apartment; "
                      "leave the intercom unassigned.", device_id=device.device_id)
    if not is_paid_device(device):
        return
    paid = sum(1 for d in apartment_devices if is_paid_device(d) and d.device_id != device.device_id)
    if paid >= MAX_PAID_DEVICES:
        raise Refusal("apartment_paid_device_limit",
                      f"This apartment already holds {paid} paid devices (phones, tablets, third-party "
                      f"devices), the most it can; create another apartment for this device.",
                      device_id=device.device_id, paid_devices=paid, limit=MAX_PAID_DEVICES)


def billable_devices(devices: Iterable[Device]) -> list[Device]:
    """The devices that make an apartment need a license: paid, not in local mode."""
    return [d for d in devices if is_paid_device(d) and not d.local_mode]


def needs_license(apartment_devices: Iterable[Device]) -> bool:
    """R-MY-3: at least one paid device not in local mode."""
    return bool(billable_devices(apartment_devices))


def billable_in_order(apartment_devices: Iterable[Device]) -> list[Device]:
    """An apartment's billable devices, the one counting longest first (``since``, then id)."""
    return sorted(billable_devices(apartment_devices),
                  key=lambda d: (d.since is not None, d.since.timestamp() if d.since else 0.0, d.device_id))


def unpaid_devices(apartment: Apartment, apartment_devices: Iterable[Device]) -> list[Device]:
    """R-MY-5: the billable devices the apartment's paid time does not cover. Paid with
    device-years for ``devices_paid_for`` devices, those that have counted longest are covered and
    the ones that started counting last (added, moved in, local mode turned off) are not; paid
    per apartment, every device is covered."""
    if apartment.devices_paid_for is None:
        return []
    return billable_in_order(apartment_devices)[max(0, apartment.devices_paid_for):]


def whole_paid_through(apartment: Apartment, apartment_devices: Iterable[Device]) -> datetime | None:
    """The end of the time an apartment is paid for as a whole: its paid-through, or None while
    some billable device is not paid for. A card pays whole apartments: it counts a partly paid
    apartment as not paid."""
    return None if unpaid_devices(apartment, apartment_devices) else apartment.paid_through


def part_number(region: Region) -> str:
    """R-MY-3: the part to order for a site's apartment licenses."""
    if region not in get_args(Region):
        raise ValueError(f"unknown region {region!r}")
    return PART_US_APAC if region in US_APAC else PART_DEFAULT


# --- paid-through, lapsing, what works (R-MY-5, R-MY-6) ----------------------------------------

def extend_paid_through(paid_through: datetime | None, now: datetime, credits: int = 1) -> datetime:
    """The paid-through date after ``credits`` apartment-years: each adds one calendar year to
    max(now, paid-through), so paying early loses nothing and paying late buys no past."""
    if credits < 1:
        raise ValueError("credits are 1 or more")
    end = now if paid_through is None else max(now, paid_through)
    for _ in range(credits):
        end = add_years(end, 1)
    return end


def is_lapsed(paid_through: datetime | None, now: datetime) -> bool:
    return paid_through is None or now >= paid_through


def lapses_soon(paid_through: datetime | None, now: datetime, warning: timedelta = LAPSE_WARNING) -> bool:
    """Paid now, and the paid-through date is at most ``warning`` away."""
    return paid_through is not None and now < paid_through <= now + warning


def device_works(device: Device, *, paid_through: datetime | None, now: datetime) -> bool:
    """R-MY-6: only a billable device stops when its apartment's license has lapsed."""
    if not is_paid_device(device) or device.local_mode:
        return True
    return not is_lapsed(paid_through, now)


def device_paid_through(apartment: Apartment, device: Device, apartment_devices: Iterable[Device]) -> datetime | None:
    """The end of what is paid for this device of the apartment: its paid-through, or None for a
    billable device its per-device payment does not cover (``unpaid_devices``)."""
    unpaid = {d.device_id for d in unpaid_devices(apartment, apartment_devices)}
    return None if device.device_id in unpaid else apartment.paid_through


def working_devices(apartment: Apartment, devices: Iterable[Device], now: datetime,
                    recurring: Recurring | None = None) -> list[Device]:
    """The apartment's devices that work at ``now``."""
    mine = devices_of(apartment.apartment_id, devices)
    return [d for d in mine if device_works(
        d, paid_through=covered_until(device_paid_through(apartment, d, mine), recurring), now=now)]


def years_left(paid_through: datetime, now: datetime) -> int:
    """The paid years of a paid time still running at ``now``, a started year counting whole
    (1 when it ends within a year): what paying one more device through ``paid_through`` costs
    in device-years."""
    years = 1
    while add_years(paid_through, -years) > now:
        years += 1
    return years


def moment_text(moment: datetime) -> str:
    """A cut-off as people read it: the date alone when it is midnight UTC, else the date, the
    time and the zone: "2029-12-02 10:37 UTC", with the seconds when there are any
    ("2029-12-02 10:37:15 UTC"; a fraction of a second is left out)."""
    moment = moment.astimezone(UTC)
    if moment.time() == time(0):
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%d %H:%M:%S UTC" if moment.second or moment.microsecond else "%Y-%m-%d %H:%M UTC")


@dataclass(frozen=True, slots=True)
class Recurring:
    """A site's automatic recurring payment, as the rules read it: on, the end of its billing
    year, and when a charge was first declined (None: none is failing)."""

    period_end: datetime
    failed_at: datetime | None = None

    @property
    def cover(self) -> datetime:
        """Until when it keeps every apartment needing a license working (R-MY-5): the
        anniversary plus the retry window, or the window from a decline during the year."""
        start = self.period_end if self.failed_at is None else min(self.period_end, self.failed_at)
        return start + RENEWAL_RETRY_WINDOW

    def renewal_due(self, now: datetime) -> bool:
        return now >= self.period_end


def covered_until(paid_through: datetime | None, recurring: Recurring | None) -> datetime | None:
    """The end of an apartment's license, recurring payment's cover included: what decides
    whether its paid devices work (R-MY-6), whether the sweep ran or not."""
    if recurring is None:
        return paid_through
    return recurring.cover if paid_through is None else max(paid_through, recurring.cover)


def lapse_warning_due(paid_through: datetime | None, recurring: Recurring | None, now: datetime,
                      warning: timedelta = LAPSE_WARNING) -> bool:
    """R-MY-6: shown before it happens. An apartment that recurring payment renews is not
    warned about while no charge of it is failing."""
    if recurring is not None and recurring.failed_at is None and not recurring.renewal_due(now):
        return False
    return lapses_soon(covered_until(paid_through, recurring), now, warning)


ApartmentState = Literal["no_license_needed", "not_paid", "paid", "lapsing_soon", "partly_paid", "lapsed"]


def apartment_state(apartment: Apartment, apartment_devices: Sequence[Device], now: datetime,
                    recurring: Recurring | None = None) -> ApartmentState:
    """What the dashboard, the API, the CLI and the web say of an apartment (R-MY-3, R-MY-5,
    R-MY-6), in this order: ``no_license_needed`` (no paid device outside local mode);
    ``not_paid`` (needs a license and was never paid: its paid devices do not work);
    ``lapsed`` (its license ended: only a license that was paid can lapse); ``partly_paid``
    (paid per device for fewer devices than it has: ``unpaid_devices`` do not work);
    ``lapsing_soon`` (ends within 30 days); ``paid``. Recurring payment's cover counts as paid,
    for every device."""
    if not needs_license(apartment_devices):
        return "no_license_needed"
    if is_lapsed(covered_until(apartment.paid_through, recurring), now):
        return "not_paid" if apartment.paid_through is None else "lapsed"
    if recurring is None and unpaid_devices(apartment, apartment_devices):
        return "partly_paid"
    if lapse_warning_due(apartment.paid_through, recurring, now):
        return "lapsing_soon"
    return "paid"


@dataclass(frozen=True, slots=True)
class Dashboard:
    """The site dashboard (R-MY-3, R-MY-6): apartment counts, warnings, and what to order to keep
    every apartment needing a license working for the coming year (``to_order`` apartment-years
    of ``part``, see ``to_order``). ``lapsed`` holds only licenses that ended; an apartment never
    paid is ``not_paid``."""

    apartments: int
    needing_license: int
    lapsed: tuple[int, ...]  # apartment ids needing a license whose license ended
    lapsing_soon: tuple[int, ...]
    part: str
    to_order: int
    not_paid: tuple[int, ...] = ()  # apartment ids needing a license, never paid
    partly_paid: tuple[int, ...] = ()  # paid per device for fewer devices than they have


@dataclass(frozen=True, slots=True)
class Shortfall:
    """What one apartment lacks for the coming year: ``device_years`` pay it from the pool, and
    an apartment-year does too when ``apartment_year`` (a year to pay; the devices of a partly
    paid apartment are topped up with device-years only)."""

    device_years: int
    apartment_year: bool = True


def shortfall(apartment: Apartment, apartment_devices: Sequence[Device], now: datetime, *,
              horizon: datetime | None = None) -> Shortfall | None:
    """R-MY-3, R-MY-5: an apartment needing a license not paid through ``now`` + 1 year
    (``horizon``, when the caller has it) lacks a year (one apartment-year, or a device-year per
    billable device); one paid per device for fewer devices lacks the others' device-years
    through its paid-through; None: it lacks nothing."""
    billable = billable_devices(apartment_devices)
    if not billable:
        return None
    if apartment.paid_through is None or apartment.paid_through < (horizon or add_years(now, 1)):
        return Shortfall(len(billable))
    unpaid = unpaid_devices(apartment, apartment_devices)
    if unpaid:
        return Shortfall(len(unpaid) * years_left(apartment.paid_through, now), apartment_year=False)
    return None


def order_quantity(short: Iterable[Shortfall], pool: Credit | None = None) -> int:
    """How many of the shortfalls the credit pool does not pay: an apartment-year each for the
    years to pay, then device-years, the smallest shortfalls first."""
    pool = pool or Credit()
    years = sorted((s.device_years for s in short if s.apartment_year))
    tops = sorted(s.device_years for s in short if not s.apartment_year)
    years = years[min(len(years), max(0, pool.apartment_years)):]
    rest = sorted(years + tops)
    device_years = pool.device_years
    while rest and device_years >= rest[0]:
        device_years -= rest.pop(0)
    return len(rest)


def to_order(apartments: Sequence[Apartment], devices: Sequence[Device], now: datetime, *,
             pool: Credit | None = None, recurring: Recurring | None = None) -> int:
    """R-MY-3, R-MY-5: the apartment-years a site lacks to keep every apartment needing a license
    working for the next twelve months: those not paid through ``now`` + 1 year and those paid
    per device for fewer devices (``shortfall``), less what the credit pool pays
    (``order_quantity``), and none while recurring payment is on (it pays them)."""
    if recurring is not None:
        return 0
    grouped = group_by_apartment(devices)
    horizon = add_years(now, 1)
    found = [shortfall(a, grouped.get(a.apartment_id, []), now, horizon=horizon) for a in apartments]
    return order_quantity([s for s in found if s is not None], pool)


def dashboard(site: Site, apartments: Sequence[Apartment], devices: Sequence[Device], now: datetime,
              warning: timedelta = LAPSE_WARNING, *, pool: Credit | None = None,
              recurring: Recurring | None = None) -> Dashboard:
    grouped = group_by_apartment(devices)
    states = {a.apartment_id: apartment_state(a, grouped.get(a.apartment_id, []), now, recurring)
              for a in apartments}
    needing = [a for a in apartments if states[a.apartment_id] != "no_license_needed"]
    return Dashboard(
        apartments=len(apartments),
        needing_license=len(needing),
        lapsed=tuple(a.apartment_id for a in needing if states[a.apartment_id] == "lapsed"),
        lapsing_soon=tuple(a.apartment_id for a in needing
                           if lapse_warning_due(a.paid_through, recurring, now, warning)),
        part=part_number(site.region),
        to_order=to_order(apartments, devices, now, pool=pool, recurring=recurring),
        not_paid=tuple(a.apartment_id for a in needing if states[a.apartment_id] == "not_paid"),
        partly_paid=tuple(a.apartment_id for a in needing if states[a.apartment_id] == "partly_paid"),
    )


# --- migration (R-MY-4) -------------------------------------------------------------------------

def unassigned_devices(devices: Iterable[Device]) -> list[Device]:
    """Every device that still has to be assigned to an apartment (intercoms never are)."""
    return [d for d in devices if d.kind != "intercom" and d.apartment_id is None]


def check_migration(devices: Iterable[Device]) -> None:
    left = unassigned_devices(devices)
    if left:
        raise Refusal("migration_devices_unassigned",
                      f"{plural(len(left), 'device')} {'is' if len(left) == 1 else 'are'} not in an apartment "
                      "yet; assign every device except the intercoms to an apartment, then ask for the model "
                      "change again.",
                      count=len(left), device_ids=[d.device_id for d in left])


# --- vouchers and the credit pool (R-MY-5) ------------------------------------------------------

@dataclass(frozen=True, slots=True)
class VoucherBatch:
    """A distributor's batch: ``subscriptions`` codes, each worth ``years`` years."""

    name: str
    years: int
    subscriptions: int
    scope: VoucherScope
    purchased_at: datetime

    @property
    def valid_until(self) -> datetime:
        return add_years(self.purchased_at, VOUCHER_VALIDITY_YEARS)

    def is_valid(self, now: datetime) -> bool:
        return self.purchased_at <= now < self.valid_until


_TRANSITIONS: dict[CodeState, frozenset[CodeState]] = {
    "active": frozenset({"used", "cancelled"}),
    "used": frozenset(),
    "cancelled": frozenset(),
}


def check_code_transition(current: CodeState, target: CodeState, *, by_issuer: bool = False) -> CodeState:
    """Only Active -> Used and Active -> Cancelled; only the issuer cancels."""
    if target not in _TRANSITIONS[current]:
        raise Refusal(f"voucher_code_{current}", f"This voucher code is {current} and cannot become {target}.",
                      state=current, target=target)
    if target == "cancelled" and not by_issuer:
        raise Refusal("voucher_cancel_not_issuer", "Only the distributor who issued this voucher can cancel it.",
                      status=403)
    return target


def check_redeem(batch: VoucherBatch, state: CodeState, now: datetime) -> None:
    """A code can be activated while it is Active and its batch is valid."""
    if not batch.is_valid(now):
        raise Refusal("voucher_expired", f"This voucher code was valid until "
                      f"{moment_text(batch.valid_until)}; ask your distributor for a new one.",
                      valid_until=batch.valid_until.isoformat())
    check_code_transition(state, "used")


@dataclass(frozen=True, slots=True)
class Credit:
    """The site credit pool, or an amount added to or taken from it."""

    apartment_years: int = 0
    device_years: int = 0

    def __add__(self, other: Credit) -> Credit:
        return Credit(self.apartment_years + other.apartment_years, self.device_years + other.device_years)


def code_credit(batch: VoucherBatch) -> Credit:
    """What one redeemed code of ``batch`` adds to the pool."""
    if batch.scope == "apartment":
        return Credit(apartment_years=batch.years)
    return Credit(device_years=batch.years)


def charge_apartment_year(pool: Credit, apartment_devices: Iterable[Device]) -> Credit:
    """The pool after paying one year of an apartment's license: an apartment-year if the pool
    has one, else one device-year per billable device. The apartment must need a license."""
    billable = len(billable_devices(apartment_devices))
    if billable == 0:
        raise ValueError("the apartment needs no license")
    if pool.apartment_years > 0:
        return Credit(pool.apartment_years - 1, pool.device_years)
    if pool.device_years >= billable:
        return Credit(0, pool.device_years - billable)
    raise Refusal("credit_insufficient",
                  f"The site credit pool holds no apartment-year and {plural(pool.device_years, 'device-year')}, "
                  f"and this apartment needs {billable}; activate a voucher code or pay by card.",
                  needed_device_years=billable, device_years=pool.device_years)


@dataclass(frozen=True, slots=True)
class CreditPayment:
    """What paying an apartment from the pool does: ``taken`` leaves the pool, and the apartment
    is paid through ``paid_through`` for ``devices_paid_for`` billable devices (None: every
    device). ``top_up``: it paid the devices its running paid time did not cover, through the
    same date."""

    taken: Credit
    paid_through: datetime
    devices_paid_for: int | None
    top_up: bool = False


def pay_from_pool(apartment: Apartment, apartment_devices: Sequence[Device], pool: Credit,
                  now: datetime, *, next_year: bool = False) -> CreditPayment:
    """R-MY-5, per-device vouchers counted per device. An apartment paid per device for fewer
    devices than it has now (``unpaid_devices``), while its paid time runs, is topped up: one
    device-year per device not paid for and paid year left (``years_left``), through the same
    paid-through; an apartment-year does not top up. Otherwise the next year is paid
    (``charge_apartment_year``): with an apartment-year the apartment is paid per apartment,
    with device-years for the billable devices it has now. ``next_year``: pay the next year
    whatever the running one covers (credit used on the day it would lapse)."""
    billable = len(billable_devices(apartment_devices))
    if billable == 0:
        raise ValueError("the apartment needs no license")
    unpaid = [] if next_year else unpaid_devices(apartment, apartment_devices)
    if unpaid and apartment.paid_through is not None and not is_lapsed(apartment.paid_through, now):
        need = len(unpaid) * years_left(apartment.paid_through, now)
        if pool.device_years < need:
            raise Refusal("credit_insufficient",
                          f"This apartment is paid through {moment_text(apartment.paid_through)} for "
                          f"{billable - len(unpaid)} of its {billable} paid devices outside local mode; paying the "
                          f"other {len(unpaid)} through then takes {plural(need, 'device-year')} and the site credit pool "
                          f"holds {pool.device_years}: activate a per-device voucher code, or put a device in local "
                          "mode.", needed_device_years=need, device_years=pool.device_years,
                          devices_paid_for=billable - len(unpaid), billable_devices=billable,
                          device_ids=[d.device_id for d in unpaid])
        return CreditPayment(Credit(0, need), apartment.paid_through, billable, top_up=True)
    after = charge_apartment_year(pool, apartment_devices)
    taken = Credit(pool.apartment_years - after.apartment_years, pool.device_years - after.device_years)
    return CreditPayment(taken, extend_paid_through(apartment.paid_through, now),
                         None if taken.apartment_years else billable)


def carried_paid_through(paid_through: datetime | None, custom_expires_at: datetime | None,
                         now: datetime) -> datetime | None:
    """R-MY-4: a site migrated from the custom model before its license expires keeps the time
    that license paid: its apartments are paid through the custom license's expiry (never less
    than they are paid already)."""
    if custom_expires_at is None or custom_expires_at <= now:
        return paid_through
    return custom_expires_at if paid_through is None else max(paid_through, custom_expires_at)


# --- site type, card payments (R-MY-4, R-MY-5) --------------------------------------------------

SiteType = Literal["apartment_building", "family_house", "office"]
SITE_TYPES: tuple[SiteType, ...] = get_args(SiteType)


def check_site_type(model: BusinessModel, chosen: str) -> SiteType:
    """R-MY-4: once a site has the apartment model its admin chooses the site type (an
    apartment building, a family house or an office); a custom-model site has none."""
    if model != "apartment":
        raise Refusal("site_type_needs_apartment_model",
                      "A site type is chosen once the site has the apartment model; migrate the site first.",
                      model=model)
    if chosen not in SITE_TYPES:
        raise Refusal("site_type_unknown", f"There is no site type {chosen!r}; choose one of: "
                      f"{', '.join(SITE_TYPES)}.", site_type=chosen, allowed=list(SITE_TYPES), status=400)
    return chosen  # type: ignore[return-value]


def check_card_change(*, recurring_active: bool) -> None:
    """R-MY-5: the card can be changed only while automatic recurring payment is off."""
    if recurring_active:
        raise Refusal("recurring_payment_active",
                      "Automatic recurring payment is on; turn it off before changing the card, then turn it "
                      "on again.")


def apartments_to_pay(apartments: Sequence[Apartment], devices: Sequence[Device], count: int) -> list[int]:
    """The apartments a card payment of ``count`` apartment-years pays, one year each: those that
    need a license, the ones whose license ends first (never paid first), then by id."""
    grouped = group_by_apartment(devices)
    needing = [a for a in apartments if needs_license(grouped.get(a.apartment_id, []))]
    needing.sort(key=lambda a: (a.paid_through is not None, a.paid_through.timestamp() if a.paid_through else 0.0,
                                a.apartment_id))
    return [a.apartment_id for a in needing[:max(0, count)]]


# --- the billing year of recurring payment (R-MY-5) ----------------------------------------------

def billing_period_end(current: datetime | None, now: datetime) -> datetime:
    """The end of the billing year recurring payment turned on at ``now`` runs in: the site's
    anniversary while it is ahead (turning it on again continues that year), else a year on."""
    return current if current is not None and current > now else add_years(now, 1)


def year_days(period_end: datetime) -> int:
    """The days of the billing year ending at ``period_end`` (365 or 366)."""
    return (period_end - add_years(period_end, -1)).days


def unpaid_days(paid_through: datetime | None, start: datetime, period_end: datetime) -> int:
    """The days from ``start`` (or the end of what is paid, if later) to ``period_end``, a
    started day counting whole; 0 when it is paid through ``period_end``."""
    begin = start if paid_through is None else max(start, paid_through)
    if begin >= period_end:
        return 0
    return min(math.ceil((period_end - begin) / DAY), year_days(period_end))


def pro_rata_minor(price_minor: int, days: int, period_end: datetime) -> int:
    """``days`` of the billing year at ``price_minor`` a year, half a minor unit rounded up."""
    total = year_days(period_end)
    return (2 * price_minor * days + total) // (2 * total)


@dataclass(frozen=True, slots=True)
class ChargeLine:
    """One apartment's share of a card charge: ``days`` not paid before ``period_end``."""

    apartment_id: int
    days: int
    amount_minor: int


def charge_lines(apartments: Sequence[Apartment], devices: Sequence[Device], *, start: datetime,
                 period_end: datetime, price_minor: int) -> list[ChargeLine]:
    """What paying every apartment needing a license through ``period_end`` costs, from
    ``start`` (now, or the anniversary for a renewal): apartments already paid that far cost
    nothing and are left out; a whole year costs ``price_minor``."""
    grouped = group_by_apartment(devices)
    lines = []
    for a in apartments:
        mine = grouped.get(a.apartment_id, [])
        if not needs_license(mine):
            continue
        # A card pays whole apartments: one paid per device for fewer devices is not paid yet.
        days = unpaid_days(whole_paid_through(a, mine), start, period_end)
        if days:
            lines.append(ChargeLine(a.apartment_id, days, pro_rata_minor(price_minor, days, period_end)))
    return lines
