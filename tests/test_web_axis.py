"""The AXIS License Manager pages through their HTTP interface (SPEC §3, R-AX-1 … R-AX-13): the
Product list, and per product Product overview, Product licensing, Product wallet, System setup
and History; their forms, CSRF, roles and isolation."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import World
from entitle.actors import operator
from entitle.axis import services as axis
from entitle.db import transaction
from entitle.keys import services as keys
from entitle.keys.models import LicenseKey
from entitle.tenancy.models import Role
from test_web import HTMX, sign_in
from test_web_ac import content_of, error_text, text_of

P = "axis-camera-station"
URL = f"/axis/products/{P}"
OP = operator()


# --- helpers -----------------------------------------------------------------------------------

class AxisPages:
    """An organization's AXIS pages, driven through the web forms as a signed-in user."""

    def __init__(self, world: World, client: TestClient, csrf: str, org: int) -> None:
        self.world, self.client, self.csrf, self.org = world, client, csrf, org

    def sign_in_again(self, email: str = "ann@example.com") -> None:
        """After the clock moved past the web session's lifetime."""
        self.csrf = sign_in(self.client, email)

    def get(self, tab: str = "overview", status: int = 200) -> str:
        r = self.client.get(f"{URL}?tab={tab}")
        assert r.status_code == status, r.text
        return r.text

    def post(self, path: str, data: dict[str, Any] | None = None) -> Any:
        return self.client.post(f"{URL}/{path}", data={"csrf_token": self.csrf, **(data or {})}, headers=HTMX)

    def register(self, uid: str = "ACS-1", name: str = "HQ") -> Any:
        return self.client.post("/axis/systems", data={"csrf_token": self.csrf, "product_code": P, "uid": uid,
                                                       "name": name}, headers=HTMX)

    def system_id(self, uid: str = "ACS-1") -> int:
        m = re.search(rf'<section class="axis-system" id="system-(\d+)"[^>]*data-system="{re.escape(uid)}"',
                      self.get("setup"))
        assert m, f"no system {uid} in System setup"
        return int(m.group(1))

    def add_devices(self, serials: list[str], license_type: str = "core", uid: str = "ACS-1",
                    hardware: str = "") -> Any:
        return self.post(f"systems/{self.system_id(uid)}/devices",
                         {"serials": "\n".join(serials), "license_type": license_type, "hardware_serial": hardware})

    def redeem(self, code: str) -> Any:
        return self.post("wallet/redeem", {"key": code})

    def review(self, lines: dict[str, int], term_years: int = 1) -> Any:
        return self.post("allocation/review", {"line": list(lines), "units": [str(u) for u in lines.values()],
                                               "term_years": str(term_years)})

    def confirm(self, review_page: str) -> Any:
        """Post the review's Confirm form as it is on the page."""
        form = re.search(rf'<form method="post" action="{URL}/allocation".*?</form>', review_page, re.S)
        assert form, "no Confirm form on the page"
        fields = re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0))
        data: dict[str, Any] = {}
        for k, v in fields:
            if k in ("line", "units"):
                data.setdefault(k, []).append(v)
            else:
                data[k] = v
        return self.client.post(f"{URL}/allocation", data=data, headers=HTMX)


def owner_pages(world: World, client: TestClient, email: str = "ann@example.com", org_name: str = "Cams") -> AxisPages:
    ann = world.user(email)
    org = world.org(org_name, owner=ann)
    return AxisPages(world, client, sign_in(client, email), org)


def status_text(page: str) -> str:
    m = re.search(r'<p class="message ok" role="status">(.*?)</p>', page, re.S)
    assert m, "no status message on the page"
    return text_of(m.group(1))


def field(page: str, name: str) -> str:
    m = re.search(rf'data-field="{name}"[^>]*>(.*?)</(dd|p|strong)>', page, re.S)
    assert m, f"no field {name}"
    return text_of(m.group(1))


def license_status(page: str) -> str:
    m = re.search(r'<strong class="axis-state[^"]*" data-state="([^"]+)">(.*?)</strong>', page, re.S)
    assert m, "no license status"
    return text_of(m.group(2))


def lot_units(page: str) -> list[int]:
    return [int(x) for x in re.findall(r'<td class="n units">([\d,]+)</td>', page)]


def unit_input(page: str, key: str) -> str:
    m = re.search(rf'name="line" value="{re.escape(key)}">\s*<input class="qty" name="units"[^>]*value="([^"]*)"',
                  page, re.S)
    assert m, f"no units field for {key}"
    return m.group(1)


def started_with_devices(world: World, client: TestClient, n: int = 8) -> AxisPages:
    pages = owner_pages(world, client)
    assert pages.register().status_code == 200
    assert pages.add_devices([f"CAM-{i}" for i in range(n)]).status_code == 200
    r = pages.post("subscription")
    assert r.status_code == 200, r.text
    return pages


# --- the product list (R-AX-1, R-AX-13) ---------------------------------------------------------

def test_product_list_registers_an_online_system(world, client):  # R-AX-1 R-AX-13
    pages = owner_pages(world, client)
    home = client.get("/").text
    assert 'href="/axis"' in home and ">AXIS</a>" in home
    listing = client.get("/axis").text
    assert "No AXIS product is registered" in text_of(content_of(listing))
    assert 'href="/systems">Upload system file</a>' in listing  # offline systems upload their file there
    r = pages.register(uid="ACS-1", name="HQ")
    assert r.status_code == 200
    assert status_text(r.text) == "System HQ (ACS-1) is registered to Cams. Add its devices in System setup."
    row = re.search(rf'<tr data-product="{P}">(.*?)</tr>', client.get("/axis").text, re.S).group(1)
    # A new product runs on its 90-day trial (from 2026-01-15).
    assert "AXIS Camera Station Pro" in row and "Trial" in text_of(row) and "2026-04-15" in row
    # A registration never moves, and the same id twice is refused with the form kept.
    r = pages.register(uid="ACS-1", name="Again")
    assert r.status_code == 409 and error_text(r.text) == "system_exists System ACS-1 is already registered here."
    assert 'value="Again"' in r.text
    other = world.user("bob@example.com")
    world.org("Other", owner=other)
    bob = AxisPages(world, client, sign_in(client, "bob@example.com"), 0)
    r = bob.register(uid="ACS-1")
    assert r.status_code == 409 and "system_registered_elsewhere" in error_text(r.text)


# --- Product overview (R-AX-3, R-AX-13) ---------------------------------------------------------

def test_overview_trial_then_start_the_subscription(world, client):  # R-AX-3 R-AX-13
    pages = owner_pages(world, client)
    pages.register()
    pages.add_devices(["CAM-1"])
    page = pages.get()
    assert license_status(page) == "Trial" and field(page, "trial-end") == "2026-04-15"
    assert "Start your subscription</button>" in page
    r = pages.post("subscription")
    assert r.status_code == 200
    assert status_text(r.text) == ("Subscription has started on 2026-01-15. The grace period ends on 2026-02-14: "
                                   "redeem license keys and allocate licenses before then.")
    page = pages.get()
    assert field(page, "subscription").startswith("Subscription has started (2026-01-15")
    assert field(page, "grace-end") == "2026-02-14"
    assert license_status(page) == "In grace period" and "Start your subscription</button>" not in page
    r = pages.post("subscription")
    assert r.status_code == 409 and error_text(r.text).startswith("subscription_already_started The subscription")
    # After the grace period an unlicensed product is not licensed (R-AX-6).
    world.ctx.clock.advance(timedelta(days=31))
    pages.sign_in_again()
    page = pages.get()
    assert license_status(page) == "Not licensed" and 'data-field="grace-end"' not in page


# --- Product wallet (R-AX-4) --------------------------------------------------------------------

def test_redeem_a_license_key_in_the_product_wallet(world, client):  # R-AX-4
    pages = owner_pages(world, client)
    pages.register()
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=10)
    r = pages.redeem(code)
    assert r.status_code == 200
    assert status_text(r.text) == "License key redeemed: 10 × AXIS-ACS-CORE-1Y added to the product wallet."
    lot = re.search(r'<tr data-lot="[^"]+" data-part="AXIS-ACS-CORE-1Y">(.*?)</tr>', r.text, re.S).group(1)
    assert "10" in lot and "2026-01-15" in lot and "2031-01-15" in lot  # five years in the wallet at most
    # Refusals say why and keep the typed key.
    r = pages.redeem(code)
    assert r.status_code == 409 and error_text(r.text).startswith("key_already_redeemed")
    r = pages.redeem("NOT-A-KEY")
    assert r.status_code in (400, 404, 422) and 'value="NOT-A-KEY"' in r.text and error_text(r.text)
    # Another product's key is refused here and stays unused for the Wallet page.
    [ac_code] = world.mint("91379040")
    r = pages.redeem(ac_code)
    assert r.status_code == 409
    assert error_text(r.text).startswith("key_other_product This key (91379040) is for")
    with world.ctx.sessions() as s:
        assert s.scalars(select(LicenseKey.state)).all().count("active") == 1
    # A preloaded-license key belongs to its hardware, not the wallet.
    [pre] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=4)
    r = pages.redeem(pre)
    assert r.status_code == 409 and error_text(r.text).startswith("key_not_for_wallet")
    assert lot_units(pages.get("wallet")) == [10]


# --- Product licensing (R-AX-2, R-AX-5, R-AX-12) -------------------------------------------------

def test_allocate_review_then_confirm_becomes_fully_licensed(world, client):  # R-AX-2 R-AX-5 R-AX-12
    pages = started_with_devices(world, client, n=8)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=10)
    pages.redeem(code)
    page = pages.get("licensing")
    # Current need per coming year and license type; the current year's missing units are prefilled.
    assert text_of(re.search(r'<tr data-year="0">.*?<td class="n ratio" data-type="core">(.*?)</td>', page,
                             re.S).group(1)) == "8 / 0"
    assert unit_input(page, "core:0") == "8" and unit_input(page, "core:1") == ""
    assert "Confirm allocation</button>" in page and 'data-field="short"' not in page
    # Buying guidance: the wallet's 10 cover this year's 8; 6 to buy for the next year.
    guidance = re.search(r'<table class="axis-guidance[ "].*?</table>', page, re.S).group(0)
    assert re.search(r'<tr data-year="0">.*?data-type="core">0<', guidance, re.S)
    assert re.search(r'<tr data-year="1">.*?data-type="core">6<', guidance, re.S)

    r = pages.review({"core:0": 8})
    assert r.status_code == 200
    review = r.text
    row = text_of(re.search(r'<tr data-type="core" data-year="0">(.*?)</tr>', review, re.S).group(1))
    assert row == "Core 2026-01-15 – 2027-01-15 AXIS-ACS-CORE-1Y 8 —"
    assert field(review, "state-after") == "Fully licensed"
    assert lot_units(pages.get("wallet")) == [10]  # the review changed nothing
    r = pages.confirm(review)
    assert r.status_code == 200
    assert status_text(r.text) == "8 licenses allocated. The product is fully licensed."
    assert license_status(pages.get()) == "Fully licensed"
    assert lot_units(pages.get("wallet")) == [2]
    # The same Confirm posted again replays the first answer: nothing is allocated twice.
    r = pages.confirm(review)
    assert r.status_code == 200 and "already confirmed" in status_text(r.text)
    assert lot_units(pages.get("wallet")) == [2]
    # Covered now, the fields hold the next year's need (renewing ahead of time).
    page = pages.get("licensing")
    assert unit_input(page, "core:0") == "" and unit_input(page, "core:1") == "8"


def _renewal_confirm(pages: AxisPages, review_page: str) -> Any:
    form = re.search(rf'<form method="post" action="{URL}/renewal".*?</form>', review_page, re.S)
    assert form, "no Confirm form for the renewal on the page"
    data = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', form.group(0)))
    return pages.client.post(f"{URL}/renewal", data=data, headers=HTMX)


def test_renew_in_a_renewal_grace_licenses_the_current_year_first(world, client):  # R-AX-6 R-AX-5
    pages = started_with_devices(world, client, n=10)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=40)
    pages.redeem(code)
    assert pages.confirm(pages.review({"core:0": 10}).text).status_code == 200
    world.ctx.clock.advance(timedelta(days=365))  # year 1's renewal grace: 30 units in the wallet
    pages.sign_in_again()
    assert license_status(pages.get()) == "In grace period"
    r = pages.post("renewal/review", {"years_ahead": "1"})
    assert r.status_code == 200
    review = r.text
    assert re.search(r'<tr data-type="core" data-year="1">', review) and re.search(r'data-year="2"', review)
    assert field(review, "renewal") == "Renewed: allocated to years 1, 2; years 1 to 2 are fully licensed."
    assert lot_units(pages.get("wallet")) == [30]  # the review changed nothing
    r = _renewal_confirm(pages, review)
    assert r.status_code == 200
    assert status_text(r.text) == ("Renewed: allocated to years 1, 2; years 1 to 2 are fully licensed. The product "
                                   "is fully licensed.")
    assert lot_units(pages.get("wallet")) == [10]
    r = _renewal_confirm(pages, review)  # posted again: replayed, nothing allocated twice
    assert "already confirmed" in status_text(r.text) and lot_units(pages.get("wallet")) == [10]
    # All or nothing: 5 years ahead needs 40 more units than the wallet's 10.
    r = pages.post("renewal/review", {"years_ahead": "5"})
    assert r.status_code == 409 and error_text(r.text).startswith("insufficient_units")
    r = pages.post("renewal/review", {"years_ahead": "6"})
    assert r.status_code == 400 and error_text(r.text).startswith("years_invalid")


def test_licensing_tab_says_which_hardware_needs_expansions(world, client):  # R-AX-10 R-AX-12
    pages = owner_pages(world, client)
    pages.register()
    [pre] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=8)
    pages.post("hardware", {"serial": "S30-1", "preloaded_key": pre})
    pages.add_devices([f"REC-{i}" for i in range(8)], hardware="S30-1")
    pages.post("subscription")
    assert 'data-field="expansion"' not in pages.get("licensing")  # 8 on 8: licensed
    pages.add_devices(["REC-8", "REC-9"], hardware="S30-1")
    assert license_status(pages.get()) == "Partially licensed"
    assert field(pages.get(), "state") == "Partially licensed"
    m = re.search(r'data-field="expansion" data-hardware="S30-1">(.*?)</p>', pages.get("licensing"), re.S)
    assert m and text_of(m.group(1)) == ("Hardware S30-1 runs 10 Core devices on 8 licenses: 2 need expansion "
                                         "licenses on it. Buy 2 expansion licenses for S30-1.")


def test_short_wallet_is_refused_with_the_missing_count(world, client):  # R-AX-5
    pages = started_with_devices(world, client, n=8)
    page = pages.get("licensing")
    # Nothing in the wallet: Confirm allocation is not available.
    assert re.search(r'<button type="submit" disabled[^>]*>Confirm allocation</button>', page)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=5)
    pages.redeem(code)
    page = pages.get("licensing")
    assert text_of(re.search(r'data-field="short">(.*?)</p>', page, re.S).group(1)).startswith(
        "The wallet holds too few one-year licenses for the current need: Core misses 8, the wallet holds 5: "
        "buy 3 more")
    r = pages.review({"core:0": 8})
    assert r.status_code == 409
    assert error_text(r.text) == ("insufficient_units The wallet holds too few units to confirm this allocation "
                                  "(core (1-year): 3 missing). Redeem more license keys or allocate fewer.")
    assert f'action="{URL}/allocation"' not in r.text  # no Confirm step
    assert unit_input(r.text, "core:0") == "8"  # the form keeps what was typed
    # Other refusals keep their code and sentence.
    r = pages.review({"core:0": 0})
    assert r.status_code == 400 and error_text(r.text).startswith("allocation_empty")
    r = pages.review({"core:9": 1})
    assert r.status_code == 400 and error_text(r.text).startswith("year_out_of_range")
    r = pages.review({"core:0": 1}, term_years=5)
    assert r.status_code == 409 and "core (5-year): 1 missing" in error_text(r.text)
    assert lot_units(pages.get("wallet")) == [5]


def test_allocation_before_the_subscription_is_refused(world, client):  # R-AX-3
    pages = owner_pages(world, client)
    pages.register()
    page = pages.get("licensing")
    assert "Start your subscription in" in text_of(page) and "Confirm allocation" not in page
    r = pages.review({"core:0": 1})
    assert r.status_code == 409 and error_text(r.text).startswith("subscription_not_started Start the subscription")


def test_late_allocation_shows_and_credits_compensation(world, client):  # R-AX-7
    pages = started_with_devices(world, client, n=10)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=10)
    pages.redeem(code)
    world.ctx.clock.advance(timedelta(days=100))
    pages.sign_in_again()
    r = pages.review({"core:0": 10})
    assert r.status_code == 200
    assert "1,000 license-days" in text_of(r.text)  # 10 units × 100 overlapping days
    r = pages.confirm(r.text)
    assert status_text(r.text) == ("10 licenses allocated. The product is fully licensed. 2 licenses of "
                                   "compensation for overlapping time went back to the wallet.")
    wallet = pages.get("wallet")
    assert lot_units(wallet) == [2]
    assert "AXIS-ACS-CORE-1Y: 270 license-days" in text_of(wallet)


def test_growth_beyond_the_allowance_is_flagged(world, client):  # R-AX-9 R-AX-8
    pages = started_with_devices(world, client, n=2)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=2)
    pages.redeem(code)
    assert pages.confirm(pages.review({"core:0": 2}).text).status_code == 200
    world.ctx.clock.advance(timedelta(days=40))
    pages.sign_in_again()
    pages.add_devices(["CAM-A", "CAM-B"])  # 4 = twice the 2 allocated: inside the allowance
    assert 'data-field="growth"' not in pages.get()
    pages.add_devices(["CAM-C"])
    page = pages.get()
    assert field(page, "growth").startswith("Growth allowance exceeded: Core needs 5 licenses, more than 4")
    assert 'data-field="growth"' in pages.get("licensing")


# --- System setup (R-AX-2, R-AX-10) -------------------------------------------------------------

def test_system_setup_devices_hardware_and_expansion(world, client):  # R-AX-2 R-AX-10
    pages = owner_pages(world, client)
    pages.register()
    r = pages.add_devices(["CAM-1", "CAM-2", "CAM-3"])
    assert r.status_code == 200
    assert status_text(r.text).startswith("3 Core devices added to HQ.")
    assert all(f'<tr data-serial="CAM-{i}">' in r.text for i in (1, 2, 3))
    r = pages.add_devices(["CAM-2"])
    assert r.status_code == 409 and error_text(r.text) == "device_exists Device CAM-2 is already in this system."
    assert "CAM-2</textarea>" in r.text
    r = pages.add_devices(["CAM-9"], license_type="gold")
    assert r.status_code == 400 and error_text(r.text).startswith("license_type_unknown")
    # Hardware with its preloaded key: the licenses are on it at once.
    [pre] = world.mint("AXIS-S30-PRELOADED-CORE", quantity=4)
    r = pages.post("hardware", {"serial": "S30-1", "name": "Recorder", "preloaded_key": pre})
    assert r.status_code == 200
    assert status_text(r.text) == "Hardware S30-1 is registered to Cams with 4 preloaded Core licenses."
    r = pages.add_devices([f"REC-{i}" for i in range(6)], hardware="S30-1")
    assert r.status_code == 200
    hw = re.search(r'<tr data-hardware="S30-1">(.*?)</tr>', r.text, re.S).group(1)
    assert "6 / 4" in hw and "2 missing" in text_of(hw)
    assert re.search(r'aria-label="Expansion licenses for S30-1" value="2"', hw)  # prefilled with what is missing
    # The devices on the hardware are licensed by it, not counted in the subscription need.
    assert re.search(r'<tr data-type="core">.*?<td [^>]*class="n need">3</td>', pages.get(), re.S)
    nonce = re.search(r'name="nonce" value="([^"]+)"', r.text).group(1)
    r = pages.post("hardware/allocate", {"serial": "S30-1", "units": "2", "nonce": nonce})
    assert r.status_code == 409 and error_text(r.text).startswith(
        "insufficient_units The wallet holds 0 core expansion units; 2 missing.")
    [exp] = world.mint("AXIS-ACS-CORE-EXP", quantity=2)
    pages.redeem(exp)
    nonce = re.search(r'name="nonce" value="([^"]+)"', pages.get("setup")).group(1)
    r = pages.post("hardware/allocate", {"serial": "S30-1", "units": "2", "nonce": nonce})
    assert r.status_code == 200
    assert status_text(r.text) == ("2 expansion licenses allocated to S30-1 for its lifetime: it holds 6 licenses "
                                   "for 6 devices.")
    hw = re.search(r'<tr data-hardware="S30-1">(.*?)</tr>', r.text, re.S).group(1)
    assert "6 / 6" in hw and text_of(re.search(r'<td class="licensed">(.*?)</td>', hw).group(1)) == "licensed"
    r = pages.post("hardware/allocate", {"serial": "S30-1", "units": "2", "nonce": nonce})
    assert r.status_code == 200 and "nothing was allocated twice" in status_text(r.text)
    # Removing a device.
    r = pages.post(f"systems/{pages.system_id()}/devices/remove", {"serial": "CAM-3"})
    assert r.status_code == 200 and status_text(r.text) == "Device CAM-3 is removed from HQ."
    assert '<tr data-serial="CAM-3">' not in r.text


# --- History ------------------------------------------------------------------------------------

def test_history_tab_lists_the_products_actions(world, client):
    pages = started_with_devices(world, client, n=2)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=2)
    pages.redeem(code)
    pages.confirm(pages.review({"core:0": 2}).text)
    # Something else of the organization: not this product's history.
    [ac_code] = world.mint("91379040")
    client.post("/wallet/redeem", data={"csrf_token": pages.csrf, "key": ac_code}, headers=HTMX)
    page = pages.get("history")
    actions = re.findall(r'<tr data-action="([a-z_.]+)"', page)
    assert actions[:4] == ["axis.allocated", "key.redeemed", "axis.subscription.started", "axis.devices.added"]
    assert "system.registered" in actions and "axis.product.registered" in actions
    assert actions.count("key.redeemed") == 1  # the Access Commander key is left out
    assert "ann@example.com" in page  # who did it


# --- roles, CSRF, isolation ---------------------------------------------------------------------

def test_viewer_sees_no_write_forms_and_cannot_allocate(world, client):  # R-AX-5
    ann = world.user("ann@example.com")
    org = world.org("Cams", owner=ann)
    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=org, uid="ACS-1", name="HQ", product_code=P, actor=OP, now=world.now)
        axis.add_devices(s, org_id=org, system_id=system.id, actor=OP, now=world.now,
                         devices=[axis.NewDevice("CAM-1", "core")])
        axis.start_subscription(s, org_id=org, product_code=P, actor=OP, now=world.now)
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=1)
    with transaction(world.ctx.sessions) as s:
        keys.redeem(s, org_id=org, typed_key=code, actor=OP, now=world.now)
    vic = world.user("vic@example.com")
    world.member(org, vic, Role.viewer)
    pages = AxisPages(world, client, sign_in(client, "vic@example.com"), org)
    listing = client.get("/axis").text
    assert "Register system" not in listing and "Your role here is viewer" in listing
    for tab in ("overview", "licensing", "wallet", "setup", "history"):
        page = content_of(pages.get(tab))
        assert 'method="post"' not in page, tab
    assert "1 / 0" in text_of(pages.get("licensing"))  # the need is shown
    r = pages.review({"core:0": 1})
    assert r.status_code == 403
    assert error_text(r.text).startswith("role_insufficient Your role in this organization is viewer")
    r = pages.post("allocation", {"line": "core:0", "units": "1", "nonce": "n-1"})
    assert r.status_code == 403 and "role_insufficient" in error_text(r.text)
    assert pages.redeem("ANY").status_code == 403
    assert pages.post("subscription").status_code == 403
    assert license_status(pages.get()) == "In grace period" and lot_units(pages.get("wallet")) == [1]


def test_forms_need_the_csrf_token(world, client):
    pages = owner_pages(world, client)
    pages.register()
    r = client.post(f"{URL}/subscription", data={}, headers=HTMX)
    assert r.status_code == 403 and "csrf_invalid" in r.text
    assert license_status(pages.get()) == "Trial"


def test_another_organizations_product_is_not_found(world, client):  # R-AX-1
    bob = world.user("bob@example.com")
    other = world.org("Other", owner=bob)
    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=other, uid="B-1", name="Theirs", product_code=P, actor=OP,
                                      now=world.now)
    pages = owner_pages(world, client)
    for tab in ("overview", "licensing", "wallet", "setup", "history"):
        r = client.get(f"{URL}?tab={tab}")
        assert r.status_code == 404 and "product_not_found" in r.text, tab
    assert client.get("/axis/products/no-such-product").status_code == 404
    assert "Theirs" not in client.get("/axis").text
    r = pages.post("subscription")
    assert r.status_code == 404 and "product_not_found" in r.text
    # Registered here too, their system stays out of reach.
    pages.register()
    r = pages.post(f"systems/{system.id}/devices", {"serials": "X-1", "license_type": "core"})
    assert r.status_code == 404 and "system_not_found" in r.text
    assert "B-1" not in pages.get("setup")
