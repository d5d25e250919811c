"""The home page that says what needs doing (issue 16): the Attention list and the tiles of the
licensing models, derived whenever read (R-CORE-7); the charts and their text equivalents; the
history that reads like sentences."""

from __future__ import annotations

import ast
import csv
import io
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, select

from conftest import START, World, auth
from entitle import attention
from entitle.access_commander import services as ac
from entitle.actors import Actor, operator
from entitle.attention import axis as axis_tiles
from entitle.axis import services as axis
from entitle.db import reading, transaction
from entitle.history import sentences
from entitle.history.models import HistoryEntry
from entitle.keys import services as keys
from entitle.my2n import board
from entitle.my2n import services as my2n
from entitle.web import charts
from helpers import org_with_owner

SRC = Path(__file__).resolve().parents[1] / "src" / "entitle"
AXIS_PRODUCT = "axis-camera-station"
VENDOR = operator("support")


@dataclass
class Scenario:
    org: int
    token: str
    actor: Actor
    installation: int
    site: int


def build_scenario(world: World, email: str = "ann@example.com") -> Scenario:
    """One organization using the three models, the clock moved so that a license device is in its
    protective period, an AXIS product in its grace period and an apartment license lapses soon:
    - My2N: apartment A1 paid a year from the start, A2 never paid; then 340 days pass;
    - AXIS: a system with 3 Core devices registered and the subscription started (grace period);
    - Access Commander: a license generated for LD-1, activated, then LD-1 disconnects."""
    org, owner = org_with_owner(world, "Acme", email)
    ann = world.actor(owner.user)
    clock = world.ctx.clock
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org, name="Riverside", actor=ann, now=clock.now())
        a1 = my2n.create_apartment(s, site=site, name="A1", actor=ann, now=clock.now())
        a2 = my2n.create_apartment(s, site=site, name="A2", actor=ann, now=clock.now())
        my2n.create_apartment(s, site=site, name="A3", actor=ann, now=clock.now())  # empty: needs none
        my2n.add_device(s, site=site, serial="PH-1", kind="phone", apartment_id=a1.id, actor=ann, now=clock.now())
        my2n.add_device(s, site=site, serial="TB-2", kind="tablet", apartment_id=a2.id, actor=ann, now=clock.now())
        _, codes = my2n.mint_vouchers(s, part_number="9137958", name="Distributor", years=1, subscriptions=1,
                                      scope="apartment", actor=VENDOR, now=clock.now())
        site_id, a1_id = site.id, a1.id
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org, site_id)
        my2n.redeem_voucher(s, site=site, code=codes[0], actor=ann, now=clock.now())
        my2n.pay_from_credit(s, site=site, apartment_id=a1_id, actor=ann, now=clock.now())
    clock.advance(timedelta(days=340))
    [axis_key] = world.mint("AXIS-ACS-CORE-1Y", quantity=1)
    [ac_key] = world.mint("91379040")
    with transaction(world.ctx.sessions) as s:
        now = clock.now()
        system = axis.register_system(s, org_id=org, uid="ACS-1", name="HQ", product_code=AXIS_PRODUCT, actor=ann,
                                      now=now)
        axis.add_devices(s, org_id=org, system_id=system.id, actor=ann, now=now,
                         devices=[axis.NewDevice(f"CAM-{i}", "core") for i in range(3)])
        axis.start_subscription(s, org_id=org, product_code=AXIS_PRODUCT, actor=ann, now=now)
        keys.redeem(s, org_id=org, typed_key=axis_key, actor=ann, now=now)
        keys.redeem(s, org_id=org, typed_key=ac_key, actor=ann, now=now)
        inst, _token = ac.create_installation(s, org_id=org, name="Plant", actor=ann, now=now)
        for serial in ("LD-1", "D-2"):
            ac.add_device(s, installation=inst, serial=serial, type="ip_intercom", actor=ann, now=now)
            ac.report_state(s, installation=inst, serial=serial, connected=True, now=now)
        ac.generate_license(s, installation=inst, license_device="LD-1", packages=None, actor=ann, now=now,
                            secret=world.ctx.secret)
        ac.activate(s, installation=inst, serial="LD-1", actor=ann, now=now)
        inst_id = inst.id
    clock.advance(timedelta(hours=2))
    with transaction(world.ctx.sessions) as s:
        inst = ac.get_installation(s, org, inst_id)
        ac.report_state(s, installation=inst, serial="LD-1", connected=False, now=clock.now())
    return Scenario(org, owner.token, ann, inst_id, site_id)


def home_of(world: World, org: int) -> attention.Home:
    with reading(world.ctx.sessions) as s:
        return attention.home(s, org, world.ctx.clock.now())


# --- the Attention list ------------------------------------------------------------------------

def test_attention_lists_the_protective_period_the_grace_end_and_the_lapsing_apartment(world):
    # R-AC-5, R-AX-3, R-MY-6, R-CORE-7: each derived at the moment it is read, without a sweep.
    sc = build_scenario(world)
    home = home_of(world, sc.org)
    kinds = [i.kind for i in home.attention]
    assert {"ac.protective_period", "axis.grace_ending", "my2n.lapsing", "my2n.not_paid"} <= set(kinds), kinds
    by_kind = {i.kind: i for i in home.attention}
    now = world.ctx.clock.now()

    protective = by_kind["ac.protective_period"]
    # Connected about two hours since the license was added: under 24 h gives a day (R-AC-5).
    assert protective.due_at == now - timedelta(hours=2) + timedelta(days=1)
    assert protective.href == f"/ac/installations/{sc.installation}"
    assert "LD-1" in protective.message and "Plant" in protective.message
    assert attention.time_left(now, protective.due_at) == "in 22 h"

    grace = by_kind["axis.grace_ending"]
    assert grace.due_at == now - timedelta(hours=2) + timedelta(days=30)
    assert grace.href == f"/axis/products/{AXIS_PRODUCT}?tab=licensing"
    assert "3 licenses still to allocate" in grace.message

    lapsing = by_kind["my2n.lapsing"]
    assert "A1" in lapsing.message and lapsing.href == f"/my2n/sites/{sc.site}?tab=dashboard"
    assert lapsing.due_at is not None and timedelta(days=24) < lapsing.due_at - now < timedelta(days=26)
    assert "A2" in by_kind["my2n.not_paid"].message and by_kind["my2n.not_paid"].severity == "critical"
    # No rule IDs and no codes in what people read.
    assert not [i.message for i in home.attention if re.search(r"R-[A-Z]+-\d|_", i.message)]

    # Most urgent first: what does not work now, then the deadlines soonest first.
    ranks = [attention.SEVERITIES.index(i.severity) for i in home.attention]
    assert ranks == sorted(ranks)
    warnings = [i.due_at for i in home.attention if i.severity == "warning" and i.due_at]
    assert warnings == sorted(warnings)
    assert home.models == ["access_commander", "axis", "my2n"]


def test_the_protective_period_runs_out_into_a_suspension_when_the_clock_moves(world):
    # R-AC-6: read a day later, with no sweep in between, the installation is suspended.
    sc = build_scenario(world)
    world.ctx.clock.advance(timedelta(days=1))
    home = home_of(world, sc.org)
    kinds = {i.kind for i in home.attention}
    assert "ac.suspended" in kinds and "ac.protective_period" not in kinds
    [tile] = home.installations
    assert tile.state == "suspended" and tile.devices.in_use == 0
    # 31 days after the start of the subscription the grace period is over: not licensed.
    world.ctx.clock.advance(timedelta(days=30))
    kinds = {i.kind for i in home_of(world, sc.org).attention}
    assert "axis.not_licensed" in kinds and "axis.grace_ending" not in kinds


def test_the_tiles_agree_with_the_models_own_pages(world):
    # The home page never contradicts the installation, the product or the site it links to.
    sc = build_scenario(world)
    now = world.ctx.clock.now()
    home = home_of(world, sc.org)
    with reading(world.ctx.sessions) as s:
        inst = ac.get_installation(s, sc.org, sc.installation)
        page = ac.overview_to_dict(ac.overview(s, inst, now))
        [tile] = home.installations
        assert tile.state == page["state"] == "protective"
        assert (tile.devices.required, tile.devices.owned, tile.devices.in_use) == (
            page["devices"]["required"], page["devices"]["owned"], page["devices"]["active"])
        assert (tile.attendance_users.required, tile.attendance_users.owned) == (
            page["attendance_users"]["required"], page["attendance_users"]["owned"])
        assert tile.protective_until.isoformat() == page["protective_until"]

        st = axis.status(s, org_id=sc.org, product=axis.product_by_code(s, AXIS_PRODUCT), now=now)
        [product] = home.products
        assert product.state == st["state"] == "in_grace"
        assert product.grace_end.isoformat() == st["current_year"]["grace_end"]
        assert {t.license_type: (t.need_now, t.need, t.allocated, t.state) for t in product.types} == {
            t: (v["need_now"], v["need"], v["allocated"], v["state"]) for t, v in st["license_types"].items()}
        assert [(lot.part_number, lot.units) for lot in home.lots] == [
            (lot["part_number"], lot["units"]) for lot in st["wallet"]["lots"]]

        shown = board.dashboard(s, site=my2n.get_site(s, sc.org, sc.site), now=now)
        [site] = home.sites
        assert (site.apartments, site.needing_license, list(site.lapsed), list(site.not_paid),
                list(site.partly_paid), list(site.lapsing_soon)) == (
            shown["apartments"], shown["needing_license"], shown["lapsed"], shown["not_paid"], shown["partly_paid"],
            shown["lapsing_soon"])
        assert (site.order_part, site.order_quantity) == (shown["order"]["part_number"], shown["order"]["quantity"])
        assert (site.apartments, site.needing_license) == (3, 2)


def test_axis_states_agree_with_the_product_page_through_a_year(world):
    # R-AX-5, R-AX-6, R-AX-7, R-AX-9: trial, grace, fully licensed, over the growth allowance,
    # a renewal's grace period, not licensed -- the tile's state is the product page's each time.
    org, owner = org_with_owner(world, "Cams", "cam@example.com")
    ann = world.actor(owner.user)
    clock = world.ctx.clock

    def same() -> axis_tiles.ProductTile:
        with reading(world.ctx.sessions) as s:
            now = clock.now()
            found = axis_tiles.products(s, org, now)
            [tile] = found.products
            st = axis.status(s, org_id=org, product=axis.product_by_code(s, AXIS_PRODUCT), now=now)
            assert tile.state == st["state"], (tile, st["state"])
            assert {t.license_type: t.allocated for t in tile.types} == {
                t: v["allocated"] for t, v in st["license_types"].items()}
            assert {t for t in tile.growth} == set(st["growth"]["license_types"])
            return tile

    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=org, uid="C-1", name="Cams", product_code=AXIS_PRODUCT, actor=ann,
                                      now=clock.now())
        axis.add_devices(s, org_id=org, system_id=system.id, actor=ann, now=clock.now(),
                         devices=[axis.NewDevice(f"C-{i}", "core") for i in range(2)])
        system_id = system.id
    assert same().state == "trial"
    with transaction(world.ctx.sessions) as s:
        axis.start_subscription(s, org_id=org, product_code=AXIS_PRODUCT, actor=ann, now=clock.now())
    assert same().state == "in_grace"
    for code in world.mint("AXIS-ACS-CORE-1Y", quantity=2, count=2):
        with transaction(world.ctx.sessions) as s:
            keys.redeem(s, org_id=org, typed_key=code, actor=ann, now=clock.now())
    with transaction(world.ctx.sessions) as s:
        axis.allocate(s, org_id=org, product_code=AXIS_PRODUCT, lines=[axis.Line("core", 0, 2)], actor=ann,
                      now=clock.now())
    assert same().state == "fully_licensed"
    clock.advance(timedelta(days=40))
    with transaction(world.ctx.sessions) as s:
        axis.add_devices(s, org_id=org, system_id=system_id, actor=ann, now=clock.now(),
                         devices=[axis.NewDevice(f"D-{i}", "core") for i in range(3)])
    tile = same()
    assert tile.state == "fully_licensed" and tile.growth == {"core": (5, 2, 4)}
    clock.advance(timedelta(days=330))
    tile = same()
    assert tile.state == "in_grace" and tile.current_year.index == 1
    clock.advance(timedelta(days=31))
    assert same().state == "not_licensed"


def test_a_product_registered_during_the_year_has_its_own_grace_end_and_need(world):
    # R-AX-7, R-AX-8: the product registered mid-year gets 30 days of its own; devices added after a
    # grace end count toward the next renewal, not the current need -- per product, in one statement.
    from entitle.catalog import services as catalog

    with transaction(world.ctx.sessions) as s:
        sku = {"part_number": "AXIS-2-CORE-1Y", "name": "Core, 1 year", "grant_kind": "subscription",
               "term_years": 1, "grants": {"license_type": "core", "devices": 1}}
        second = {"code": "axis-second", "name": "AXIS Second", "model": "axis", "skus": [sku]}
        catalog.load(s, catalog.parse_obj({"products": [second]}), actor=operator(), now=world.now)
    org, owner = org_with_owner(world, "Two", "two@example.com")
    ann = world.actor(owner.user)
    clock = world.ctx.clock

    def add(code: str, uid: str, n: int) -> None:
        with transaction(world.ctx.sessions) as s:
            system = next((x for x in axis.systems_summary(s, org) if x["uid"] == uid), None)
            if system is None:
                system_id = axis.register_system(s, org_id=org, uid=uid, name=uid, product_code=code, actor=ann,
                                                 now=clock.now()).id
                axis.start_subscription(s, org_id=org, product_code=code, actor=ann, now=clock.now())
            else:
                system_id = system["id"]
            axis.add_devices(s, org_id=org, system_id=system_id, actor=ann, now=clock.now(),
                             devices=[axis.NewDevice(f"{uid}-{clock.now().timestamp()}-{i}", "core") for i in range(n)])

    add(AXIS_PRODUCT, "FIRST", 2)
    clock.advance(timedelta(days=100))
    add("axis-second", "SECOND", 3)
    clock.advance(timedelta(days=40))
    add(AXIS_PRODUCT, "FIRST", 1)
    add("axis-second", "SECOND", 4)
    with reading(world.ctx.sessions) as s:
        now = clock.now()
        tiles = {p.code: p for p in axis_tiles.products(s, org, now).products}
        for code in (AXIS_PRODUCT, "axis-second"):
            st = axis.status(s, org_id=org, product=axis.product_by_code(s, code), now=now)
            tile = tiles[code]
            assert tile.state == st["state"] == "not_licensed"
            assert tile.grace_end.isoformat() == st["current_year"]["grace_end"]
            assert {t.license_type: (t.need_now, t.need) for t in tile.types} == {
                t: (v["need_now"], v["need"]) for t, v in st["license_types"].items()}
    core = {code: next((t.need_now, t.need) for t in tile.types if t.license_type == "core")
            for code, tile in tiles.items()}
    assert core == {AXIS_PRODUCT: (3, 2), "axis-second": (7, 3)}
    assert tiles["axis-second"].grace_end == tiles[AXIS_PRODUCT].grace_end + timedelta(days=100)


def test_units_expiring_within_90_days_and_a_failed_card_payment_and_a_failing_webhook(world):
    # R-AX-4: lots stay five years; R-MY-5: a declined charge; R-CORE-8: deliveries given up.
    from entitle.delivery import webhooks
    from entitle.delivery.models import WebhookDelivery
    from entitle.my2n.models import PaymentPlan
    from entitle.platform import events

    org, owner = org_with_owner(world, "Old", "old@example.com")
    ann = world.actor(owner.user)
    clock = world.ctx.clock
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=4)
    with transaction(world.ctx.sessions) as s:
        axis.register_system(s, org_id=org, uid="O-1", name="Old", product_code=AXIS_PRODUCT, actor=ann,
                             now=clock.now())
        keys.redeem(s, org_id=org, typed_key=code, actor=ann, now=clock.now())
        site = my2n.create_site(s, org_id=org, name="Tower", actor=ann, now=clock.now())
        s.add(PaymentPlan(org_id=org, site_id=site.id, recurring=True, apartments=0, version=1,
                          period_end=clock.now() + timedelta(days=200), charge_failed_at=clock.now(),
                          created_at=clock.now()))
        endpoint, _secret = webhooks.create_endpoint(s, org_id=org, url="https://hooks.example/x", event_types=[],
                                                     actor=ann, now=clock.now(), key=world.ctx.secret)
        events.emit(s, org_id=org, type="test.event", now=clock.now())
        s.flush()
        for d in s.scalars(select(WebhookDelivery)):
            d.state, d.attempts, d.last_error = "failed", 9, "ConnectError: refused"
        site_id = site.id
    clock.advance(timedelta(days=5 * 365 - 30))
    home = home_of(world, org)
    by_kind = {i.kind: i for i in home.attention}
    expiring = by_kind["axis.wallet_expiring"]
    assert "4 licenses" in expiring.message and expiring.href.endswith("?tab=wallet")
    card = by_kind["my2n.card_payment_failed"]
    assert card.href == f"/my2n/sites/{site_id}?tab=payments" and card.severity == "critical"
    # The failure is years old now: a webhook is listed for a week after its deliveries fail.
    assert "webhook.failing" not in by_kind
    clock.set(world.now.replace(year=2026, month=1, day=16))
    assert "webhook.failing" in {i.kind for i in home_of(world, org).attention}
    with reading(world.ctx.sessions) as s:
        viewer_home = attention.home(s, org, clock.now(), webhooks=False)
    assert "webhook.failing" not in {i.kind for i in viewer_home.attention}


def test_home_reads_a_few_grouped_queries_whatever_the_size(world):
    # Hundreds of installations, products and sites in one organization: the number of statements
    # does not grow with them (netbox's query-count baseline).
    sc = build_scenario(world)

    def statements() -> int:
        seen: list[str] = []
        engine = world.ctx.engine

        def count(*_args: Any) -> None:
            seen.append("x")

        event.listen(engine, "before_cursor_execute", count)
        try:
            home_of(world, sc.org)
        finally:
            event.remove(engine, "before_cursor_execute", count)
        return len(seen)

    small = statements()
    with transaction(world.ctx.sessions) as s:
        now = world.ctx.clock.now()
        for i in range(30):
            inst, _ = ac.create_installation(s, org_id=sc.org, name=f"Extra {i}", actor=sc.actor, now=now)
            ac.add_device(s, installation=inst, serial=f"X-{i}", type="ip_intercom", actor=sc.actor, now=now)
            site = my2n.create_site(s, org_id=sc.org, name=f"Site {i}", actor=sc.actor, now=now)
            apt = my2n.create_apartment(s, site=site, name="1", actor=sc.actor, now=now)
            my2n.add_device(s, site=site, serial=f"P-{i}", kind="phone", apartment_id=apt.id, actor=sc.actor, now=now)
    assert statements() == small <= 25


# --- the API -----------------------------------------------------------------------------------

def test_the_api_answers_the_same_attention_list(world, client):
    sc = build_scenario(world)
    r = client.get(f"/api/v1/orgs/{sc.org}/attention", headers=auth(sc.token))
    assert r.status_code == 200, r.text
    body = r.json()
    assert [i["kind"] for i in body["attention"]] == [i.kind for i in home_of(world, sc.org).attention]
    first = next(i for i in body["attention"] if i["kind"] == "ac.protective_period")
    assert first["time_left"] == "in 22 h" and first["seconds_left"] == 22 * 3600
    assert body["models"] == ["access_commander", "axis", "my2n"]
    assert body["access_commander"][0]["state"] == "protective"
    assert body["my2n"][0]["lapsing_soon"] == ["A1"]
    totals = {name: len(body[name]) for name in ("attention", "access_commander", "axis", "my2n")}
    assert body["totals"] == totals and totals["attention"] >= 2
    # Each list is bounded: the most urgent first, the totals whole.
    cut = client.get(f"/api/v1/orgs/{sc.org}/attention", params={"limit": 1}, headers=auth(sc.token)).json()
    assert cut["attention"] == body["attention"][:1] and cut["totals"] == totals
    assert all(len(cut[name]) == min(1, totals[name]) for name in totals)
    assert client.get(f"/api/v1/orgs/{sc.org}/attention", params={"limit": 501},
                      headers=auth(sc.token)).status_code == 422
    # Another organization's attention is not found (R-CORE-1).
    other, bob = org_with_owner(world, "Other", "bob@example.com")
    assert client.get(f"/api/v1/orgs/{sc.org}/attention", headers=auth(bob.token)).status_code == 404


# --- the home page on the web ------------------------------------------------------------------

def _sign_in(client: Any, email: str = "ann@example.com") -> None:
    from test_web import sign_in

    sign_in(client, email)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()


def _chart(html: str, chart_id: str) -> str:
    """The chart's figure: its SVG must have a title and a description, and its table the figures."""
    m = re.search(rf'<figure class="chart" data-chart="{chart_id}">(.*?)</figure>', html, re.S)
    assert m, f"no chart {chart_id}"
    figure = m.group(1)
    assert re.search(rf'<svg [^>]*role="img" aria-labelledby="{chart_id}-title {chart_id}-desc"', figure)
    assert re.search(rf'<title id="{chart_id}-title">[^<]+</title><desc id="{chart_id}-desc">[^<]+</desc>', figure)
    assert f'<table data-chart-table="{chart_id}">' in figure and "<tbody>" in figure
    assert "<script" not in figure and "style=" not in figure  # nothing the CSP would block
    return figure


def test_the_home_page_shows_the_attention_list_and_the_models_tiles(world, client):
    sc = build_scenario(world)
    _sign_in(client)
    page = client.get("/").text
    items = re.findall(r'<li class="attention-item severity-(\w+)" data-kind="([a-z0-9_.]+)">(.*?)</li>', page, re.S)
    kinds = [k for _s, k, _b in items]
    assert kinds[:2] == ["my2n.not_paid", "ac.protective_period"], kinds
    body = dict((k, b) for _s, k, b in items)
    protective = body["ac.protective_period"]
    assert 'data-field="time-left">in 22 h</time>' in protective
    assert f'href="/ac/installations/{sc.installation}"' in protective and "Open the License settings" in protective
    assert "in 29 days" in body["axis.grace_ending"] and "Allocate licenses" in body["axis.grace_ending"]
    assert "A1" in body["my2n.lapsing"]
    # The tiles of the three models, each with what its source's tile shows.
    assert 'id="tile-license"' in page and 'id="tile-axis"' in page and 'id="tile-my2n"' in page
    plant = re.search(r'<tr data-installation="Plant">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'data-count="devices">2 / 5<', plant) and "Protective period" in plant
    product = re.search(r'<tr data-product="axis-camera-station">(.*?)</tr>', page, re.S).group(1)
    assert "In grace period" in product and re.search(r'data-field="grace-end">\d{4}-\d\d-\d\d<', product)
    assert re.search(r'class="n ratio">3 / 0<', product)
    site = re.search(r'<tr data-site="Riverside">(.*?)</tr>', page, re.S).group(1)
    assert re.search(r'data-field="needing-license">2<', site) and re.search(r'data-field="lapse">1 / 1<', site)
    # The wallet over time, from the ledger, with its figures as a table.
    wallet = _chart(page, "chart-wallet")
    assert "2N Access Commander" in wallet and "AXIS Camera Station Pro" in wallet
    # Recent history reads like sentences, with no microseconds.
    assert "ann@example.com generated a license for" in _text(page)
    assert not re.search(r"\d\d:\d\d:\d\d\.\d{6}", _text(page).replace("T", " ").split("Recorded")[0])


def test_a_viewer_sees_the_same_home_without_the_webhooks(world, client):
    sc = build_scenario(world)
    from helpers import join
    from entitle.tenancy.models import Role

    join(world, sc.org, "vic@example.com", Role.viewer)
    _sign_in(client, "vic@example.com")
    page = client.get("/").text
    assert 'data-kind="ac.protective_period"' in page and "you see everything" in page


def test_an_organization_with_nothing_yet_is_told_how_to_start(world, client):
    org, owner = org_with_owner(world, "Empty", "ann@example.com")
    _sign_in(client)
    page = client.get("/").text
    assert 'data-field="attention-none"' in page and 'id="tile-start"' in page
    assert 'id="tile-license"' not in page and "The wallet is empty" in page


def test_the_models_pages_show_their_charts_with_text_equivalents(world, client):
    sc = build_scenario(world)
    _sign_in(client)
    ac_page = client.get(f"/ac/installations/{sc.installation}").text
    figure = _chart(ac_page, "chart-required-owned")
    assert "<th scope=\"row\">Devices</th><td class=\"n\">2</td><td class=\"n\">5</td>" in figure
    timeline = _chart(ac_page, "chart-connection")
    assert "protective period runs out at" in timeline and "protective period ends" in timeline
    overview = client.get(f"/axis/products/{AXIS_PRODUCT}?tab=overview").text
    need = _chart(overview, "chart-need-core")
    assert "Growth allowance (twice the allocated)" in need
    assert need.count("<tr><th scope=\"row\">") == 6  # the current year and the five ahead
    wallet = client.get(f"/axis/products/{AXIS_PRODUCT}?tab=wallet").text
    assert "expire on" in _chart(wallet, "chart-lots")
    site = client.get(f"/my2n/sites/{sc.site}?tab=dashboard").text
    paid = _chart(site, "chart-paid-through")
    assert "<th scope=\"row\">Not paid</th><td class=\"n\">1</td>" in paid
    billable = _chart(site, "chart-billable")
    assert "<th scope=\"row\">Need a license</th><td class=\"n\">2</td>" in billable
    assert "<th scope=\"row\">Need none</th><td class=\"n\">1</td>" in billable


def test_charts_escape_what_they_show_and_scale_to_their_values():
    chart = charts.bars("c", "Title <b>", "Says & shows", "Category", ["<x>", "y"],
                        [charts.Series("A", (3, None)), charts.Series("B", (0, 12))])
    assert "<b>" not in chart.svg and "&lt;x&gt;" in chart.svg and "Says &amp; shows" in chart.svg
    assert chart.table.rows == (("<x>", "3", "0"), ("y", "unlimited", "12"))
    # Round ticks, and room above the tallest bar for its label.
    assert charts._nice_top(12) == (15, 5) and charts._nice_top(0) == (1, 1) and charts._nice_top(3) == (4, 1)


# --- history as sentences -------------------------------------------------------------------------

def _constants(node: ast.expr) -> list[str]:
    """The action types an ``action=`` argument can be: a string, or either branch of a conditional."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _constants(node.body) + _constants(node.orelse)
    return []


def _recorded_actions() -> set[str]:
    """Every action type the code records: what is given as ``action=`` to ``history.record``."""
    found: set[str] = set()
    for path in SRC.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "record"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "history"):
                found.update(c for k in node.keywords if k.arg == "action" for c in _constants(k.value))
    return found


def test_every_action_the_code_records_has_a_sentence():
    actions = _recorded_actions()
    assert {"axis.allocated", "ac.license.added", "my2n.apartment.paid", "key.redeemed", "ac.attendance.unmonitored",
            "system.updated"} <= actions
    missing = sorted(actions - set(sentences.RENDERERS))
    assert not missing, f"history actions without a sentence in entitle.history.sentences: {missing}"


def test_sentences_name_objects_and_people_and_link_them(world):
    sc = build_scenario(world)
    with reading(world.ctx.sessions) as s:
        entries = list(s.scalars(select(HistoryEntry).where(HistoryEntry.org_id == sc.org).order_by(HistoryEntry.seq)))
        lines = sentences.lines(s, sc.org, entries)
    by_action = {line.entry.action: line.sentence for line in lines}
    allocated = by_action["axis.subscription.started"]
    assert allocated.text.startswith("ann@example.com started the subscription for AXIS Camera Station Pro")
    license_added = by_action["ac.license.added"]
    assert license_added.text.startswith("ann@example.com generated a license for Plant on the license device LD-1: "
                                         "5 devices, 1 Attendance user")
    assert f'<a href="/ac/installations/{sc.installation}">Plant</a>' in license_added.__html__()
    paid = by_action["my2n.apartment.paid"]
    assert "paid a year of the apartment A1 from the credit pool: its license is paid through 2027-01-15" in paid.text
    assert f'href="/my2n/sites/{sc.site}?tab=apartments">A1</a>' in paid.__html__()
    redeemed = [line.sentence.text for line in lines if line.entry.action == "key.redeemed"]
    assert any("1 × AXIS-ACS-CORE-1Y (AXIS Camera Station Pro Core device license, 1 year) into the wallet" in t
               for t in redeemed)
    for line in lines:
        text = line.sentence.text
        assert text.endswith(".") and not re.search(r"\d{2}:\d{2}:\d{2}\.\d+", text), text
        assert "ledger_txn" not in text and "{" not in text and "None" not in text, text
        assert not re.search(r"\b(license key|site|apartment) \d+\b", text), text  # ids only as links


def test_the_allocation_sentence_reads_like_the_issue_asks(world):
    # "Ann allocated 12 Core licenses to the year 2027-01-01 – 2027-12-31 (AXIS Camera Station Pro);
    # 0 license-days given back."
    org, owner = org_with_owner(world, "Cams", "ann@example.com")
    ann = world.actor(owner.user)
    now = world.now
    [code] = world.mint("AXIS-ACS-CORE-1Y", quantity=24)
    with transaction(world.ctx.sessions) as s:
        system = axis.register_system(s, org_id=org, uid="C-1", name="Cams", product_code=AXIS_PRODUCT, actor=ann,
                                      now=now)
        axis.add_devices(s, org_id=org, system_id=system.id, actor=ann, now=now,
                         devices=[axis.NewDevice(f"C-{i}", "core") for i in range(12)])
        axis.start_subscription(s, org_id=org, product_code=AXIS_PRODUCT, actor=ann, now=now)
        keys.redeem(s, org_id=org, typed_key=code, actor=ann, now=now)
        axis.allocate(s, org_id=org, product_code=AXIS_PRODUCT, lines=[axis.Line("core", 1, 12)], actor=ann, now=now)
    with reading(world.ctx.sessions) as s:
        entry = s.scalars(select(HistoryEntry).where(HistoryEntry.org_id == org,
                                                     HistoryEntry.action == "axis.allocated")).one()
        sentence = sentences.lines(s, org, [entry])[0].sentence
    assert sentence.text == ("ann@example.com allocated 12 Core licenses (AXIS-ACS-CORE-1Y) to the year "
                             "2027-01-15 – 2028-01-14 (AXIS Camera Station Pro); 0 license-days given back.")
    assert '<a href="/axis/products/axis-camera-station">AXIS Camera Station Pro</a>' in sentence.__html__()


@pytest.mark.parametrize("action", sorted(sentences.RENDERERS))
def test_every_sentence_reads_even_from_an_old_or_sparse_record(world, action):
    # History is kept for good: an entry recorded before a key was added must still read.
    for before, after in ((None, None), ({}, {}), ({"x": 1}, {"units": None, "year": None})):
        entry = HistoryEntry(seq=1, at=world.now, actor="ann@example.com", action=action, object_type="thing",
                             object_id="7", before=before, after=after)
        sentence = sentences.render(entry)
        assert sentence.text.startswith("ann@example.com ") and sentence.text.endswith("."), sentence.text
        assert "None" not in sentence.text and "{" not in sentence.text, sentence.text


def test_time_left_reads_like_a_countdown():
    now = START
    assert attention.time_left(now, now + timedelta(days=3, hours=5)) == "in 3 days"
    assert attention.time_left(now, now + timedelta(days=1, hours=2)) == "in 1 day 2 h"
    assert attention.time_left(now, now + timedelta(hours=4, minutes=10)) == "in 4 h 10 min"
    assert attention.time_left(now, now + timedelta(seconds=30)) == "in less than a minute"
    assert attention.time_left(now, now - timedelta(days=2)) == "2 days ago"
    assert attention.time_left(now, None) == ""


def test_an_entry_of_an_unknown_action_still_reads(world):
    entry = HistoryEntry(seq=1, at=world.now, actor="sweep", action="old.thing_done", object_type="thing",
                         object_id="7", before=None, after=None)
    assert sentences.render(entry).text == "The scheduled sweep did old thing done on thing 7."


def test_the_history_page_filters_exports_csv_and_keeps_the_raw_record(world, client):
    sc = build_scenario(world)
    _sign_in(client)
    page = client.get("/history").text
    assert "generated a license for" in page and '<details class="raw">' in page
    assert "<code>ac.license.added</code>" in page  # the raw record, for auditors
    # By area: only Access Commander's entries.
    ac_only = client.get("/history?area=access_commander").text
    actions = set(re.findall(r'data-action="([a-z0-9_.]+)"', ac_only))
    assert actions and all(a.startswith("ac.") for a in actions)
    # By object: the license device's entries.
    ld = client.get("/history?object=LD-1").text
    assert set(re.findall(r'data-action="([a-z0-9_.]+)"', ld)) == {"ac.device.added", "ac.device.activated"}
    # By person and date range.
    assert 'data-action=' not in client.get("/history?person=nobody@example.com").text
    later = START + timedelta(days=300)
    dated = client.get(f"/history?since={later.date().isoformat()}").text
    assert "my2n.site.created" not in dated and "ac.installation.created" in dated
    assert client.get("/history?since=not-a-date").status_code == 422
    # The CSV export: the same filter, the sentence beside the raw record.
    r = client.get("/history.csv?area=my2n")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert 'attachment; filename="history-acme.csv"' == r.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(r.text)))
    assert rows[0] == list(browse_columns())
    assert {row[5] for row in rows[1:]} >= {"my2n.site.created", "my2n.apartment.paid"}
    assert all(row[3] == "My2N" for row in rows[1:])
    paid = next(row for row in rows if row[5] == "my2n.apartment.paid")
    assert paid[4].startswith("ann@example.com paid a year of the apartment A1") and '"paid_through"' in paid[9]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", paid[1])


def browse_columns() -> tuple[str, ...]:
    from entitle.history import browse

    return browse.CSV_COLUMNS


def test_the_product_history_tab_reads_like_sentences(world, client):
    build_scenario(world)
    _sign_in(client)
    page = client.get(f"/axis/products/{AXIS_PRODUCT}?tab=history").text
    text = _text(page)
    assert "ann@example.com added 3 Core devices to the system HQ (ACS-1)" in text
    assert "Access Commander license" not in text  # another product's key is left out
