"""Migrating a custom-model site early keeps the time its license paid, and a custom site about to
expire is announced like an apartment (issue 14 point 7, R-MY-1, R-MY-4, R-MY-6).

The site of the issue: valid until 2027-06-30, migrated on 2027-01-01."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from conftest import World
from entitle.actors import operator
from entitle.db import transaction
from entitle.delivery import sweep as sweeping
from entitle.delivery.models import Notification
from entitle.history.models import HistoryEntry
from entitle.my2n import billing, board, rules
from entitle.my2n import services as my2n
from entitle.my2n import sweep as my2n_sweep
from entitle.my2n.models import Apartment
from entitle.my2n.payments import LocalProvider
from entitle.platform.models import Event
from helpers import org_with_owner

US = timedelta(microseconds=1)
DAY = timedelta(days=1)
VENDOR = operator("2n-support")
EXPIRES = datetime(2027, 6, 30, tzinfo=UTC)
MIGRATED = datetime(2027, 1, 1, 10, 0, tzinfo=UTC)


class Legacy:
    """A custom-model site: A1 with a phone (needs a license), A2 with its phone in local mode,
    A3 empty, and an intercom of the site."""

    def __init__(self, world: World, expires: datetime = EXPIRES) -> None:
        self.world = world
        self.org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
        self.ann = world.actor(owner.user)
        with transaction(world.ctx.sessions) as s:
            site = my2n.create_site(s, org_id=self.org_id, name="Old Block", model="custom",
                                    custom_expires_at=expires, actor=VENDOR, now=world.now)
            self.site_id = site.id
            apts = [my2n.create_apartment(s, site=site, name=f"A{i}", actor=self.ann, now=world.now)
                    for i in (1, 2, 3)]
            my2n.add_device(s, site=site, serial="IC", kind="intercom", actor=self.ann, now=world.now)
            my2n.add_device(s, site=site, serial="P1", kind="phone", apartment_id=apts[0].id, actor=self.ann,
                            now=world.now)
            my2n.add_device(s, site=site, serial="P2", kind="phone", apartment_id=apts[1].id, local_mode=True,
                            actor=self.ann, now=world.now)

    def migrate(self, at: datetime) -> dict[str, Any]:
        with transaction(self.world.ctx.sessions) as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            return my2n.change_model(s, site=site, model="apartment", actor=VENDOR, now=at)

    def paid_through(self) -> dict[str, datetime | None]:
        with self.world.ctx.sessions() as s:
            return {a.name: a.paid_through for a in s.scalars(
                select(Apartment).where(Apartment.site_id == self.site_id).order_by(Apartment.id))}

    def works(self, at: datetime) -> dict[str, bool]:
        with self.world.ctx.sessions() as s:
            site = my2n.get_site(s, self.org_id, self.site_id)
            return {d["serial"]: d["works"] for d in my2n.devices_with_state(s, site=site, now=at)}

    def board(self, at: datetime) -> dict[str, Any]:
        with self.world.ctx.sessions() as s:
            return board.dashboard(s, site=my2n.get_site(s, self.org_id, self.site_id), now=at)

    def history(self, action: str) -> list[HistoryEntry]:
        with self.world.ctx.sessions() as s:
            return list(s.scalars(select(HistoryEntry).where(HistoryEntry.org_id == self.org_id,
                                                             HistoryEntry.action == action)
                                  .order_by(HistoryEntry.seq)))


def test_migrating_early_keeps_the_custom_license_paid_time(world: World) -> None:
    # R-MY-4 (issue 14 point 7): migrated on 2027-01-01, the apartment needing a license is paid
    # through 2027-06-30, recorded in history as paid by the custom license; its phone works to
    # the moment the custom license would have ended, not a microsecond more.
    site = Legacy(world)
    done = site.migrate(MIGRATED)
    assert done["custom_license_kept"] == {"paid_through": EXPIRES.isoformat(), "apartments": 1}
    assert site.paid_through() == {"A1": EXPIRES, "A2": None, "A3": None}
    assert site.works(MIGRATED) == {"IC": True, "P1": True, "P2": True}
    assert site.works(EXPIRES - US)["P1"] is True and site.works(EXPIRES)["P1"] is False
    [paid] = site.history("my2n.apartment.paid")
    assert (paid.after or {})["by"] == "custom_license" and (paid.before or {}) == {"paid_through": None}
    [changed] = site.history("my2n.site.model_changed")
    assert (changed.before or {})["custom_expires_at"] == EXPIRES.isoformat()
    assert (changed.after or {})["custom_license_kept"] == done["custom_license_kept"]
    # The dashboard shows it paid, lapsing in the last 30 days, then lapsed; and what to order
    # from then on: a year for A1 (not paid through the next twelve months).
    shown = site.board(MIGRATED)
    assert [r["state"] for r in shown["rows"]] == ["paid", "no_license_needed", "no_license_needed"]
    assert (shown["lapsed"], shown["not_paid"], shown["order"]) == ([], [], {"part_number": "9137958",
                                                                             "quantity": 1})
    assert site.board(EXPIRES - rules.LAPSE_WARNING)["lapsing_soon"] == ["A1"]
    assert site.board(EXPIRES)["lapsed"] == ["A1"]


def test_an_apartment_that_starts_needing_a_license_after_the_change_is_paid_like_any_other(world: World) -> None:
    # R-MY-3, R-MY-4: A2's phone leaves local mode after the change: a new need, not paid.
    site = Legacy(world)
    site.migrate(MIGRATED)
    with transaction(world.ctx.sessions) as s:
        my2n.set_local_mode(s, site=my2n.get_site(s, site.org_id, site.site_id), serial="P2", local_mode=False,
                            actor=site.ann, now=MIGRATED + DAY)
    assert site.works(MIGRATED + DAY) == {"IC": True, "P1": True, "P2": False}
    assert site.board(MIGRATED + DAY)["not_paid"] == ["A2"]


@pytest.mark.parametrize(("at", "kept"), [(EXPIRES - US, True), (EXPIRES, False), (EXPIRES + DAY, False)])
def test_migrating_at_or_after_the_expiry_keeps_nothing(world: World, at: datetime, kept: bool) -> None:
    # R-MY-4: the time kept is the time left; a license that ended keeps none (and the apartment
    # was never paid: "not paid", issue 14 point 10).
    site = Legacy(world)
    done = site.migrate(at)
    assert site.paid_through()["A1"] == (EXPIRES if kept else None)
    assert (done["custom_license_kept"] is not None) is kept
    assert site.board(at)["not_paid"] == ([] if kept else ["A1"])


def test_card_payment_after_an_early_migration_charges_from_the_custom_expiry(world: World) -> None:
    # R-MY-5: recurring payment turned on at the migration pays A1 only from 2027-06-30 to its
    # anniversary, 2028-01-01 10:00: 185 days and 10 hours, 186 days started.
    site = Legacy(world)
    site.migrate(MIGRATED)
    local = LocalProvider(clock=world.ctx.clock)
    with transaction(world.ctx.sessions) as s:
        at = my2n.get_site(s, site.org_id, site.site_id)
        billing.set_card(s, site=at, payment_method="pm_card_visa", actor=site.ann, now=MIGRATED, provider=local)
        preview = billing.activation_preview(s, site=at, actor=site.ann, now=MIGRATED, provider=local)
    assert preview["lines"] == [{"apartment": "A1", "days": 186, "amount_minor": round(1200 * 186 / 365)}]


# --- a custom site about to expire (R-MY-1, R-MY-6) ----------------------------------------------

def _sweep(world: World, at: datetime) -> dict[str, int]:
    return sweeping.sweep(world.ctx.sessions, now=at, using=[my2n_sweep.finder(LocalProvider(clock=world.ctx.clock))])


def _events(world: World, kind: str) -> list[Event]:
    with world.ctx.sessions() as s:
        return list(s.scalars(select(Event).where(Event.type == kind).order_by(Event.id)))


def test_a_custom_site_is_announced_30_days_before_it_expires_and_when_it_expired(world: World) -> None:
    # R-MY-6 for the custom model (issue 14 point 7): an event and a notification to the admins
    # 30 days before (not a microsecond earlier), once; then when it expired, once.
    site = Legacy(world)
    _sweep(world, EXPIRES - rules.LAPSE_WARNING - US)
    assert _events(world, "my2n.site.custom_expiring") == []
    _sweep(world, EXPIRES - rules.LAPSE_WARNING)
    _sweep(world, EXPIRES - rules.LAPSE_WARNING + DAY)
    [warned] = _events(world, "my2n.site.custom_expiring")
    assert (warned.org_id, warned.payload["site"], warned.payload["expires_on"]) == (site.org_id, "Old Block",
                                                                                     "2027-06-30")
    with world.ctx.sessions() as s:
        [note] = s.scalars(select(Notification).where(Notification.event_id == warned.id))
    assert note.title == ("My2N: the custom-model license of site Old Block expires on 2027-06-30; migrate the site "
                          "to the apartment model before then.")
    _sweep(world, EXPIRES - US)
    assert _events(world, "my2n.site.custom_expired") == []
    _sweep(world, EXPIRES)
    _sweep(world, EXPIRES + DAY)
    assert len(_events(world, "my2n.site.custom_expired")) == 1
    assert len(_events(world, "my2n.site.custom_expiring")) == 1


def test_a_migrated_site_is_not_announced_and_a_late_sweep_sends_only_the_expiry(world: World) -> None:
    # R-MY-6: migrated before the warning, nothing about the custom license is sent (the
    # apartments warn for themselves); a sweep first run after the expiry sends no late warning.
    migrated = Legacy(world)
    migrated.migrate(MIGRATED)
    _sweep(world, EXPIRES - rules.LAPSE_WARNING)
    assert _events(world, "my2n.site.custom_expiring") == []
    assert [e.payload["apartment"] for e in _events(world, "my2n.apartment.expiring")] == ["A1"]
    with transaction(world.ctx.sessions) as s:
        my2n.create_site(s, org_id=migrated.org_id, name="Late Block", model="custom",
                         custom_expires_at=EXPIRES + 10 * DAY, actor=VENDOR, now=world.now)
    _sweep(world, EXPIRES + 11 * DAY)
    assert _events(world, "my2n.site.custom_expiring") == []
    assert [e.payload["site"] for e in _events(world, "my2n.site.custom_expired")] == ["Late Block"]
