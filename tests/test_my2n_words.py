"""Words that match the state (issue 14 point 10, R-MY-5, R-MY-6, R-CORE-4): an apartment never
paid is "Not paid", not "Lapsed"; a voucher used twice says which site's pool it went into; a
voucher's "valid until" is the exact moment; a voucher part is minted only as a voucher batch and
the wallet refuses its codes, pointing to the site's Vouchers tab."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from conftest import START, World, auth
from entitle.actors import operator
from entitle.clock import add_years
from entitle.context import Context
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.keys import services as keys
from entitle.keys.models import LicenseKey
from entitle.my2n import rules
from entitle.my2n import services as my2n
from helpers import ClockedCli, clocked_cli, org_with_owner, person, redeem

US = timedelta(microseconds=1)
VENDOR = operator("2n-support")


@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClockedCli]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


def refused(expected: str, fn: Any, *args: Any, **kwargs: Any) -> EntitleError:
    with pytest.raises(EntitleError) as caught:
        fn(*args, **kwargs)
    assert caught.value.code == expected, caught.value.message
    return caught.value


def _codes(world: World, n: int = 1, *, at: datetime | None = None, part: str = "9137958") -> list[str]:
    with transaction(world.ctx.sessions) as s:
        return my2n.mint_vouchers(s, part_number=part, name="Order 7", years=1, subscriptions=n, scope="apartment",
                                  actor=VENDOR, now=at or world.now)[1]


# --- "Not paid" is not "Lapsed" ------------------------------------------------------------------

def test_never_paid_is_not_paid_and_only_an_ended_license_is_lapsed(world: World, client: Any, cli: ClockedCli) -> None:
    # R-MY-6 (point 10): A1 was never paid, A2 was paid and ended a microsecond ago, A3 is paid.
    org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
    ann = world.actor(owner.user)
    now = world.now
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org_id, name="Block A", actor=ann, now=now)
        for name, paid_through in (("A1", None), ("A2", now - US), ("A3", add_years(now, 1))):
            apt = my2n.create_apartment(s, site=site, name=name, actor=ann, now=now)
            apt.paid_through = paid_through
            my2n.add_device(s, site=site, serial=f"P-{name}", kind="phone", apartment_id=apt.id, actor=ann, now=now)
        site_id = site.id
    base = f"/api/v1/orgs/{org_id}/sites/{site_id}"
    board = client.get(f"{base}/dashboard", headers=auth(owner.token)).json()
    assert (board["not_paid"], board["lapsed"]) == (["A1"], ["A2"])
    assert [r["state"] for r in board["rows"]] == ["not_paid", "lapsed", "paid"]
    apartments = client.get(f"{base}/apartments", headers=auth(owner.token)).json()["items"]
    assert [(a["state"], a["lapsed"]) for a in apartments] == [("not_paid", False), ("lapsed", True), ("paid", False)]
    # Neither works (R-MY-6): the words differ, the phones stop alike.
    devices = client.get(f"{base}/devices", headers=auth(owner.token)).json()["items"]
    assert {d["serial"]: d["works"] for d in devices} == {"P-A1": False, "P-A2": False, "P-A3": True}
    # The console says the same.
    text = cli.ok("site", "dashboard", "--org", str(org_id), "--site", str(site_id))
    assert "not paid" in text and "Not paid" in text and "Lapsed" in text
    listed = cli.ok("apartment", "list", "--org", str(org_id), "--site", str(site_id))
    a1, a2 = (next(line for line in listed.splitlines() if f" {n} " in line) for n in ("A1", "A2"))
    assert "Not paid" in a1 and "Lapsed" not in a1 and "Lapsed" in a2


# --- a voucher used twice says where it went -----------------------------------------------------

def test_a_voucher_used_twice_names_the_site_whose_pool_it_went_into(world: World) -> None:
    # R-MY-5 (point 10): into this site, into another site of the company, or by another company
    # (which is not told where).
    org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
    ann = world.actor(owner.user)
    other_org, other_owner = org_with_owner(world, "Tower", "bob@example.com")
    bob = world.actor(other_owner.user)
    with transaction(world.ctx.sessions) as s:
        block_a = my2n.create_site(s, org_id=org_id, name="Block A", actor=ann, now=world.now).id
        block_b = my2n.create_site(s, org_id=org_id, name="Block B", actor=ann, now=world.now).id
        tower = my2n.create_site(s, org_id=other_org, name="Tower", actor=bob, now=world.now).id
    [code] = _codes(world)

    def activate(site_id: int, who: Any, org: int) -> dict[str, Any]:
        with transaction(world.ctx.sessions) as s:
            result: dict[str, Any] = my2n.redeem_voucher(s, site=my2n.get_site(s, org, site_id), code=code, actor=who,
                                                         now=world.now)
            return result

    activate(block_a, ann, org_id)
    same = refused("key_already_redeemed", activate, block_a, ann, org_id)
    assert "into this site's credit pool" in same.message and same.detail["site"] == "Block A"
    assert "wallet" not in same.message
    sibling = refused("key_already_redeemed", activate, block_b, ann, org_id)
    assert "into the credit pool of site Block A" in sibling.message
    assert (sibling.detail["site"], sibling.detail["site_id"]) == ("Block A", block_a)
    assert sibling.detail["redeemed_at"] == world.now.isoformat()
    foreign = refused("key_already_redeemed", activate, tower, bob, other_org)
    assert "Block A" not in foreign.message and "site" not in foreign.detail and foreign.detail.get("redeemed_at") is None


# --- "valid until" is the exact moment -----------------------------------------------------------

def test_valid_until_shows_the_time_and_zone_unless_the_cut_off_is_midnight() -> None:
    # R-MY-5 (point 10): midnight UTC is the date alone; any other moment has time and zone.
    assert rules.moment_text(datetime(2029, 1, 15, tzinfo=UTC)) == "2029-01-15"
    assert rules.moment_text(datetime(2029, 1, 15, 9, 0, tzinfo=UTC)) == "2029-01-15 09:00 UTC"
    assert rules.moment_text(datetime(2029, 1, 15, 9, 0, 5, 7, tzinfo=UTC)) == "2029-01-15 09:00:05 UTC"
    assert rules.moment_text(datetime(2029, 1, 15, tzinfo=UTC) + US) == "2029-01-15 00:00:00 UTC"
    prague = datetime(2029, 1, 15, 1, 0, tzinfo=UTC).astimezone(ZoneInfo("Europe/Prague"))  # 02:00 there
    assert rules.moment_text(prague) == "2029-01-15 01:00 UTC"


def test_a_voucher_batch_says_until_when_its_codes_can_be_activated(world: World, cli: ClockedCli) -> None:
    # R-MY-5 (point 10): bought at 09:00 UTC, valid until 09:00 UTC three years on, shown so in
    # the batch list, the console and the refusal of a code activated a microsecond late.
    org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
    ann = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site_id = my2n.create_site(s, org_id=org_id, name="Block A", actor=ann, now=world.now).id
    [code] = _codes(world)
    until = add_years(START, 3)
    with world.ctx.sessions() as s:
        [batch] = my2n.voucher_batches(s, actor=VENDOR)
        shown = my2n.voucher_batch_to_dict(batch, s)
    assert (shown["valid_until"], shown["valid_until_text"]) == (until.isoformat(), "2029-01-15 09:00 UTC")
    assert "2029-01-15 09:00 UTC" in cli.ok("voucher", "batches")
    with transaction(world.ctx.sessions) as s:
        late = refused("voucher_expired", my2n.redeem_voucher, s, site=my2n.get_site(s, org_id, site_id), code=code,
                       actor=ann, now=until)
    assert "valid until 2029-01-15 09:00 UTC;" in late.message
    with transaction(world.ctx.sessions) as s:  # a microsecond before, it is activated
        my2n.redeem_voucher(s, site=my2n.get_site(s, org_id, site_id), code=code, actor=ann, now=until - US)


# --- a voucher part is a voucher, never a wallet key ---------------------------------------------

@pytest.mark.parametrize("part", [rules.PART_DEFAULT, rules.PART_US_APAC])
def test_a_voucher_part_is_minted_only_as_a_voucher_batch(world: World, client: Any, cli: ClockedCli,
                                                          part: str) -> None:
    # R-MY-5, R-CORE-4 (point 10): plain key minting of 9137958 / 02683-001 is refused everywhere
    # (service, API, `entitle keys mint`) and mints nothing; a voucher batch of it is minted.
    with transaction(world.ctx.sessions) as s:
        refused("sku_voucher_batch_only", keys.mint, s, sku_part=part, quantity_per_key=1, count=1, actor=VENDOR,
                now=world.now)
    support = person(world, "support@2n.example", issuer=True)
    r = client.post("/api/v1/issuer/key-batches", json={"part_number": part, "count": 1, "quantity_per_key": 1},
                    headers=auth(support.token, f"mint-{part}"))
    assert (r.status_code, r.json()["error"]["code"]) == (409, "sku_voucher_batch_only")
    assert "voucher batch" in r.json()["error"]["message"] and r.json()["error"]["detail"]["part_number"] == part
    body = cli.refused("sku_voucher_batch_only", "keys", "mint", "--sku", part, "--quantity-per-key", "1",
                       "--count", "1")
    assert "entitle voucher mint" in body["message"]
    with world.ctx.sessions() as s:
        assert s.query(LicenseKey).count() == 0
    assert len(_codes(world, part=part)) == 1
    # Other parts mint as keys as before.
    with transaction(world.ctx.sessions) as s:
        assert len(keys.mint(s, sku_part="91379040", quantity_per_key=1, count=1, actor=VENDOR, now=world.now,
                             keep_codes=True).codes) == 1


def test_the_wallet_refuses_a_voucher_code_and_points_to_the_sites_vouchers_tab(world: World, client: Any,
                                                                              cli: ClockedCli) -> None:
    # R-MY-5, R-CORE-4 (point 10): redeemed into the wallet (API, console) a voucher code is refused
    # with key_is_voucher, moves nothing and stays Active; activated on the site it pays; a used
    # one typed into the wallet is refused the same way.
    org_id, owner = org_with_owner(world, "Residence", "ann@example.com")
    ann = world.actor(owner.user)
    with transaction(world.ctx.sessions) as s:
        site_id = my2n.create_site(s, org_id=org_id, name="Block A", actor=ann, now=world.now).id
    [code] = _codes(world)
    r = redeem(client, owner.token, org_id, code)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "key_is_voucher")
    assert "Vouchers tab" in r.json()["error"]["message"] and r.json()["error"]["detail"]["part_number"] == "9137958"
    body = cli.refused("key_is_voucher", "redeem", "--org", str(org_id), "--key", code)
    assert "Vouchers tab" in body["message"]
    with world.ctx.sessions() as s:
        assert [k.state for k in s.query(LicenseKey)] == ["active"]
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org_id, site_id)
        assert my2n.redeem_voucher(s, site=site, code=code, actor=ann, now=world.now)["pool"]["apartment_years"] == 1
    r = redeem(client, owner.token, org_id, code)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "key_is_voucher")
