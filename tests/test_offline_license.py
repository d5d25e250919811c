"""An offline system's license file grants what the portal shows, and no longer (R-AX-11).

The file carries the end of the grace period or trial it grants and expires no later than the next
moment the state can change without a new upload; the device library refuses it afterwards.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import Expired, License, make_system_file, verify

from conftest import World
from entitle.axis.services import TRIAL
from entitle.clock import add_years
from entitle.signing import services as signing
from entitle.systems import services as systems
from entitle.systems.services import OFFLINE_LICENSE_VALIDITY
from test_axis_services import DAY, OP, P, Org, new_org, utc

S0 = utc(2026, 3, 1)
SECOND = timedelta(seconds=1)


class Offline:
    """One offline system of ``org``: each upload is a new system file (fresh nonce)."""

    def __init__(self, world: World, org: Org, uid: str = "SYS-OFF-1") -> None:
        self.world, self.org, self.uid, self.key = world, org, uid, Ed25519PrivateKey.generate()

    def upload(self, now: datetime, need: dict[str, int]) -> License:
        text = make_system_file(self.key, self.uid, P, need, [], now)
        with self.org.tx() as s:
            done = systems.upload_system_file(s, org_id=self.org.id, text=text, actor=OP, now=now,
                                              secret=self.world.ctx.secret)
        lic = self.verify(done.license_file, now)
        assert lic.expires == done.expires.replace(microsecond=0)
        self.file = done.license_file
        return lic

    def verify(self, text: str, now: datetime) -> License:
        with self.world.ctx.sessions() as s:
            ring = signing.keyring(s)
        return verify(text, ring, now, self.uid)

    def subscribed(self, core: int, *, redeem: int = 0, allocate: int = 0) -> None:
        """The first upload (``core`` devices) registers the product at S0; its subscription
        starts then, with ``redeem`` one-year Core units redeemed and ``allocate`` of them
        allocated to year 0."""
        self.upload(S0, {"core": core})
        self.org.start(S0)
        if redeem:
            self.org.redeem("AXIS-ACS-CORE-1Y", redeem, S0)
        if allocate:
            self.org.allocate(S0, ("core", 0, allocate))

    def refused_at(self, now: datetime) -> None:
        with pytest.raises(Expired) as exc:
            self.verify(self.file, now)
        assert exc.value.detail["reason"] == "expires"


@pytest.fixture
def offline(world: World) -> Offline:
    return Offline(world, new_org(world))


def test_a_trial_file_carries_the_trial_end_and_expires_then(offline: Offline) -> None:  # R-AX-13, R-AX-11
    lic = offline.upload(S0, {"core": 4})  # the first upload registers the product: its trial starts
    licensed = lic.payload["licensed"]
    trial_end = S0 + TRIAL
    assert licensed["state"] == "trial"
    assert datetime.fromisoformat(licensed["trial_end"]) == trial_end
    assert (licensed["valid_until_reason"], lic.expires) == ("trial_end", trial_end)
    offline.verify(offline.file, trial_end - SECOND)
    offline.refused_at(trial_end)


def test_a_file_uploaded_in_grace_carries_the_grace_end_and_expires_then(offline: Offline) -> None:  # R-AX-3, R-AX-11
    offline.subscribed(4)
    now = S0 + 10 * DAY
    lic = offline.upload(now, {"core": 4})
    licensed = lic.payload["licensed"]
    grace_end = S0 + 30 * DAY
    assert licensed["state"] == "in_grace" and datetime.fromisoformat(licensed["grace_end"]) == grace_end
    assert (licensed["valid_until_reason"], lic.expires) == ("grace_end", grace_end)
    offline.verify(offline.file, grace_end - SECOND)
    offline.refused_at(grace_end)


def test_a_renewal_grace_file_expires_at_that_grace_end(offline: Offline) -> None:  # R-AX-6, R-AX-11
    offline.subscribed(4, redeem=4, allocate=4)
    year1 = add_years(S0, 1)
    lic = offline.upload(year1 + 5 * DAY, {"core": 4})  # year 1 is not allocated: its renewal grace
    assert lic.payload["licensed"]["state"] == "in_grace"
    assert lic.expires == year1 + 30 * DAY
    offline.refused_at(year1 + 30 * DAY)


def test_a_licensed_file_expires_at_the_end_of_its_last_licensed_year(offline: Offline) -> None:  # R-AX-5, R-AX-11
    offline.subscribed(4, redeem=8, allocate=4)
    now = S0 + 200 * DAY
    lic = offline.upload(now, {"core": 4})
    licensed = lic.payload["licensed"]
    year1 = add_years(S0, 1)
    assert licensed["state"] == "fully_licensed" and licensed["grace_end"] is None
    assert (licensed["valid_until_reason"], lic.expires) == ("licensed_until", year1)
    offline.verify(offline.file, year1 - SECOND)
    offline.refused_at(year1)
    # Year 1 allocated too: the next change is past a year away, so the file lasts its year.
    offline.org.allocate(now, ("core", 1, 4))
    lic = offline.upload(now, {"core": 4})
    assert datetime.fromisoformat(lic.payload["licensed"]["licensed_until"]) == add_years(S0, 2)
    assert (lic.payload["licensed"]["valid_until_reason"], lic.expires) == ("refresh", now + OFFLINE_LICENSE_VALIDITY)


def test_an_underlicensed_file_expires_when_the_next_year_starts(offline: Offline) -> None:  # R-AX-6, R-AX-11
    offline.subscribed(4, redeem=2, allocate=2)
    lic = offline.upload(S0 + 40 * DAY, {"core": 4})  # past the grace: partially licensed
    assert lic.payload["licensed"]["state"] == "partially_licensed"
    assert (lic.payload["licensed"]["valid_until_reason"], lic.expires) == ("year_end", add_years(S0, 1))


def test_a_state_change_within_the_second_of_issue_still_gives_a_valid_file(offline: Offline) -> None:  # R-AX-11
    # Times in the file are whole seconds: a grace ending 0.4 s after the upload gives one second.
    offline.subscribed(1)
    lic = offline.upload(S0 + 30 * DAY - timedelta(milliseconds=400), {"core": 1})
    assert lic.payload["licensed"]["state"] == "in_grace"
    assert lic.expires == S0 + 30 * DAY
