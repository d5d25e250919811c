"""Issue 14 points 8 and 9: a site's own region, and one device on one site.

Point 8: a site has its own region (the organization's by default, chosen at creation, changed by
a company admin until a voucher code is in its pool and not while recurring payment is on); the
voucher part its pool accepts, what to order, and the price and currency of its card payments
follow the site. Point 9: a device serial is on one site of an organization at a time; a second
add is refused with ``device_on_other_site`` naming the site, in the services, the API, the CLI,
the CSV import and the web UI, and the database's unique index on (org_id, serial) holds it too.
Every test runs on SQLite and on PostgreSQL (ENTITLE_TEST_DATABASE_URL).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import NullPool

from conftest import START, World, auth
from entitle.actors import Actor, operator
from entitle.clock import FrozenClock
from entitle.config import Settings
from entitle.context import Context, payment_provider
from entitle.db import Base, UTCDateTime, make_engine, transaction
from entitle.errors import EntitleError
from entitle.history.models import HistoryEntry
from entitle.my2n import access, billing, board, csvio
from entitle.my2n import services as my2n
from entitle.my2n.models import CardPayment, SiteDevice
from entitle.my2n.payments import LocalProvider, StripeProvider
from entitle.migrate import alembic_config, upgrade
from entitle.models import load_all
from entitle.tenancy.models import Role
from helpers import join, org_with_owner
from test_cli_my2n import cli  # noqa: F401  (the fixture)
from test_cli_my2n import Cli
from test_my2n_payments import FakeStripe
from test_web import sign_in
from test_web_ac import error_text
from test_web_my2n import SitePages, create_site, field, status_text

VENDOR = operator("2n-support")
HEADER = "apartment,serial,kind,local_mode\r\n"


def refused(error: str, fn, *args, **kwargs) -> EntitleError:  # type: ignore[no-untyped-def]
    with pytest.raises(EntitleError) as exc:
        fn(*args, **kwargs)
    assert exc.value.code == error and exc.value.message
    return exc.value


class Company:
    """An organization (EU unless told) with its owner, a company admin, through the services."""

    def __init__(self, world: World, name: str = "Residence", email: str = "owner@example.com",
                 region: str = "EU") -> None:
        self.world = world
        self.org, self.owner = org_with_owner(world, name, email, region=region)
        self.actor = world.actor(self.owner.user)

    def site(self, name: str, region: str | None = None) -> int:
        with transaction(self.world.ctx.sessions) as s:
            return my2n.create_site(s, org_id=self.org, name=name, region=region, actor=self.actor,
                                    now=self.world.now).id

    def run(self, site_id: int, fn: Any, actor: Actor | None = None, **kwargs: Any) -> Any:
        with transaction(self.world.ctx.sessions) as s:
            return fn(s, site=my2n.get_site(s, self.org, site_id), actor=actor or self.actor, now=self.world.now,
                      **kwargs)

    def apartment(self, site_id: int, name: str) -> int:
        return int(self.run(site_id, my2n.create_apartment, name=name).id)

    def device(self, site_id: int, serial: str, kind: str = "phone", apartment_id: int | None = None) -> Any:
        return self.run(site_id, my2n.add_device, serial=serial, kind=kind, apartment_id=apartment_id)

    def region(self, site_id: int) -> str:
        with self.world.ctx.sessions() as s:
            return my2n.get_site(s, self.org, site_id).region

    def serials(self, site_id: int) -> list[str]:
        with self.world.ctx.sessions() as s:
            return [d.serial for d in my2n.devices_of(s, my2n.get_site(s, self.org, site_id))]

    def history(self) -> list[tuple[str, Any]]:
        with self.world.ctx.sessions() as s:
            return [(e.action, e.after) for e in s.scalars(
                select(HistoryEntry).where(HistoryEntry.org_id == self.org).order_by(HistoryEntry.seq))]


def vouchers(world: World, part: str, count: int = 1) -> list[str]:
    with transaction(world.ctx.sessions) as s:
        return my2n.mint_vouchers(s, part_number=part, name=f"Distributor {part}", years=1, subscriptions=count,
                                  scope="apartment", actor=VENDOR, now=world.now)[1]


# --- point 8: the site's region --------------------------------------------------------------------

def test_a_site_takes_the_companys_region_unless_it_is_given_its_own(world: World) -> None:  # R-MY-1 R-MY-3
    co = Company(world)
    eu, us = co.site("Block A"), co.site("Tower", region=" us ")
    assert (co.region(eu), co.region(us)) == ("EU", "US")  # the company's by default; normalised like it
    with transaction(world.ctx.sessions) as s:
        refused("region_unknown", my2n.create_site, s, org_id=co.org, name="Moon", region="MARS", actor=co.actor,
                now=world.now)
    # What to order follows the site: 9137958 in the EU, 02683-001 on a US & APAC site.
    for site_id in (eu, us):
        apt = co.apartment(site_id, "1A")
        co.device(site_id, f"PH-{site_id}", apartment_id=apt)
    with world.ctx.sessions() as s:
        orders = [board.dashboard(s, site=my2n.get_site(s, co.org, i), now=world.now)["order"] for i in (eu, us)]
    assert orders == [{"part_number": "9137958", "quantity": 1}, {"part_number": "02683-001", "quantity": 1}]
    created = [after for action, after in co.history() if action == "my2n.site.created"]
    assert [a["region"] for a in created] == ["EU", "US"]


def test_the_pool_of_a_site_takes_the_voucher_part_of_the_sites_region(world: World) -> None:  # R-MY-5 R-CORE-4
    # An EU company's US site takes 02683-001 codes and refuses 9137958; its EU site the reverse.
    co = Company(world)
    eu, us = co.site("Block A"), co.site("Tower", region="US")
    [us_code, us_code_2] = vouchers(world, "02683-001", 2)
    [eu_code, eu_code_2] = vouchers(world, "9137958", 2)
    assert co.run(us, my2n.redeem_voucher, code=us_code)["pool"] == {"apartment_years": 1, "device_years": 0}
    assert co.run(eu, my2n.redeem_voucher, code=eu_code)["pool"] == {"apartment_years": 1, "device_years": 0}
    wrong = refused("key_wrong_region", co.run, eu, my2n.redeem_voucher, code=us_code_2)
    assert wrong.detail["site_region"] == "EU" and "this site is in EU" in wrong.message
    wrong = refused("key_wrong_region", co.run, us, my2n.redeem_voucher, code=eu_code_2)
    assert wrong.detail["site_region"] == "US" and "this site is in US" in wrong.message


def test_a_company_admin_changes_the_region_until_a_voucher_is_in_the_pool(world: World) -> None:  # R-MY-5
    co = Company(world)
    site = co.site("Block A")
    # A site admin (even with the payments permission) is not a company admin: refused.
    admin = join(world, co.org, "site-admin@example.com", Role.viewer)
    co.run(site, lambda s, site, actor, now: access.grant_site_role(
        s, site=site, user_id=admin.user.id, role="site_admin", apartment_id=None, payments=True, actor=actor,
        now=now))
    refused("role_insufficient", co.run, site, my2n.change_region, actor=world.actor(admin.user), region="US")
    refused("region_unknown", co.run, site, my2n.change_region, region="Atlantis")

    co.run(site, my2n.change_region, region="apac")
    assert co.region(site) == "APAC"
    assert co.history()[-1] == ("my2n.site.region_changed", {"region": "APAC", "part_number": "02683-001"})
    recorded = co.history()
    co.run(site, my2n.change_region, region="APAC")  # the same region: nothing changes, nothing recorded
    assert co.history() == recorded

    [code] = vouchers(world, "02683-001")
    co.run(site, my2n.redeem_voucher, code=code)
    locked = refused("region_locked", co.run, site, my2n.change_region, region="EU")
    assert locked.status == 409 and locked.detail == {"region": "APAC", "reason": "voucher_redeemed"}
    assert co.region(site) == "APAC"


def test_the_region_is_fixed_while_recurring_payment_is_on(world: World) -> None:  # R-MY-5
    co = Company(world)
    site = co.site("Block A")
    co.device(site, "PH-1", apartment_id=co.apartment(site, "1A"))
    local = LocalProvider(clock=world.ctx.clock)
    co.run(site, billing.set_card, payment_method="pm_card_visa", provider=local)
    co.run(site, billing.activate_recurring, provider=local)
    locked = refused("region_locked", co.run, site, my2n.change_region, region="US")
    assert locked.detail["reason"] == "recurring_payment_active"
    co.run(site, billing.deactivate_recurring, provider=local)
    co.run(site, my2n.change_region, region="US")  # off again: the region can change
    assert co.region(site) == "US"


def test_prices_and_currency_follow_the_site(world: World) -> None:  # R-MY-5
    # A whole year costs the region's price, charged and recorded in its currency.
    co = Company(world)
    eu, us = co.site("Block A"), co.site("Tower", region="US")
    for site_id in (eu, us):
        co.device(site_id, f"PH-{site_id}", apartment_id=co.apartment(site_id, "1A"))
    local = LocalProvider(clock=world.ctx.clock, prices={"US": (1500, "usd")})
    for site_id in (eu, us):
        co.run(site_id, billing.set_card, payment_method="pm_card_visa", provider=local)
    preview = co.run(us, billing.activation_preview, provider=local)
    assert (preview["amount_minor"], preview["currency"]) == (1500, "USD")
    assert co.run(us, billing.activate_recurring, provider=local)["currency"] == "USD"
    assert co.run(eu, billing.activate_recurring, provider=local)["currency"] == "EUR"
    with world.ctx.sessions() as s:
        paid = {(p.site_id, p.amount_minor, p.currency) for p in s.scalars(select(CardPayment))}
    assert paid == {(us, 1500, "usd"), (eu, 1200, "eur")}


def test_the_settings_price_each_region_and_stripe_needs_a_price_per_region(clock: FrozenClock) -> None:  # R-MY-5
    settings = Settings(apartment_year_prices={"us": (1500, "USD"), "APAC": (1500, "usd")})
    assert settings.apartment_year_price("US") == (1500, "usd")
    assert settings.apartment_year_price("EU") == (1200, "eur")  # not listed: the default price
    local = payment_provider(settings, clock)
    assert (local.price("APAC"), local.price("MEA")) == ((1500, "usd"), (1200, "eur"))
    with pytest.raises(ValueError, match="unknown region"):
        Settings(apartment_year_prices={"MARS": (1, "eur")})
    with pytest.raises(ValueError, match="3-letter currency"):
        Settings(apartment_year_prices={"US": (1500, "dollars")})
    stripe = settings.model_copy(update={"payment_provider": "stripe", "stripe_api_key": "sk", "stripe_price_id": "p",
                                         "stripe_webhook_secret": "whsec", "stripe_price_ids": {"US": "price_us"}})
    missing = refused("payment_provider_misconfigured", payment_provider, stripe, clock)
    assert missing.detail["missing"] == ["stripe_price_ids[APAC]"]


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def test_stripe_subscribes_a_site_to_its_regions_price(fake_stripe: FakeStripe, clock: FrozenClock) -> None:  # R-MY-5
    stripe = StripeProvider(api_key="sk_test_local", webhook_secret="whsec", price_id="price_default",
                            price_ids={"US": "price_us"}, prices={"US": (1500, "usd")}, api_base=fake_stripe.base,
                            timeout=0.5, clock=clock)
    stripe.start_recurring("cus_1", site_reference="site-1", apartments=1, idempotency_key="k-us", region="US")
    stripe.start_recurring("cus_1", site_reference="site-2", apartments=1, idempotency_key="k-eu", region="EU")
    assert [r["form"]["items[0][price]"] for r in fake_stripe.requests] == ["price_us", "price_default"]
    assert (stripe.price("US"), stripe.price("EU")) == ((1500, "usd"), (1200, "eur"))


def test_the_api_creates_a_site_in_a_region_changes_it_and_prices_it(world: World, client: Any, ctx: Context,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # R-MY-1 R-MY-3 R-MY-5
    monkeypatch.setattr(ctx.settings, "apartment_year_prices", {"US": (1500, "usd")})
    co = Company(world)
    headers = auth(co.owner.token)
    base = f"/api/v1/orgs/{co.org}/sites"
    r = client.post(base, json={"name": "Block A"}, headers=headers)
    assert r.status_code == 201 and r.json()["region"] == "EU"
    r = client.post(base, json={"name": "Tower", "region": "us"}, headers=headers)
    assert r.status_code == 201 and r.json()["region"] == "US"
    tower = r.json()["id"]
    r = client.post(base, json={"name": "Moon", "region": "MARS"}, headers=headers)
    assert r.status_code == 400 and r.json()["error"]["code"] == "region_unknown"
    r = client.get(f"{base}/{tower}/payment-plan", headers=headers)
    assert r.json()["price"]["per_apartment_year_minor"] == 1500 and r.json()["price"]["currency"] == "USD"

    r = client.put(f"{base}/{tower}/region", json={"region": "APAC"}, headers=headers)
    assert r.status_code == 200 and r.json()["region"] == "APAC"
    assert client.get(f"{base}/{tower}/dashboard", headers=headers).json()["order"]["part_number"] == "02683-001"
    viewer = join(world, co.org, "viewer@example.com", Role.viewer)
    r = client.put(f"{base}/{tower}/region", json={"region": "EU"}, headers=auth(viewer.token))
    assert r.status_code == 403
    [code] = vouchers(world, "02683-001")
    r = client.post(f"{base}/{tower}/vouchers/redeem", json={"code": code}, headers=auth(co.owner.token, "v-1"))
    assert r.status_code == 200, r.text
    r = client.put(f"{base}/{tower}/region", json={"region": "EU"}, headers=headers)
    assert r.status_code == 409 and r.json()["error"]["code"] == "region_locked"
    assert r.json()["error"]["detail"]["reason"] == "voucher_redeemed"
    # Another organization's site is not there for this caller (R-CORE-1).
    other = Company(world, "Elsewhere", "other@example.com")
    r = client.put(f"/api/v1/orgs/{other.org}/sites/{other.site('B')}/region", json={"region": "US"}, headers=headers)
    assert r.status_code == 404


def test_the_cli_creates_a_site_in_a_region_and_changes_it(world: World, cli: Cli) -> None:  # noqa: F811  R-MY-3
    org = str(world.org("Residence"))
    site = cli.json("site", "create", "--org", org, "--name", "Tower", "--region", "US")
    assert site["region"] == "US"
    assert cli.json("site", "create", "--org", org, "--name", "Block A")["region"] == "EU"
    at = ["--org", org, "--site", "Tower"]
    assert cli.json("site", "region", *at, "--region", "LATAM")["region"] == "LATAM"
    assert "region LATAM" in cli.ok("site", "show", *at)
    cli.refused("region_unknown", "site", "region", *at, "--region", "MARS")
    cli.refused("region_unknown", "site", "create", "--org", org, "--name", "Moon", "--region", "MARS")


def test_the_web_form_creates_a_site_in_a_region_and_the_dashboard_shows_it(world: World, client: Any) -> None:
    # R-MY-1 R-MY-3
    world.org("Residence", owner=world.user("ann@example.com"))
    csrf = sign_in(client, "ann@example.com")
    listing = client.get("/my2n").text
    assert re.search(r'<option value="EU" selected>', listing)  # the company's region is the default
    r = client.post("/my2n/sites", data={"csrf_token": csrf, "name": "Tower", "region": "US"})
    assert r.status_code == 200
    assert status_text(r.text) == "Site Tower is created in region US with the apartment model. Add its apartments " \
                                  "and devices."
    row = re.search(r'<tr data-site="Tower">(.*?)</tr>', r.text, re.S).group(1)
    assert 'data-field="region">US<' in row and 'data-field="part">02683-001<' in row
    site_id = int(re.search(r'<a href="/my2n/sites/(\d+)">Tower</a>', r.text).group(1))
    pages = SitePages(client, csrf, site_id)
    page = pages.get()
    assert field(page, "region") == "US" and field(page, "region-part") == "02683-001"
    r = pages.post("region", {"region": "EU"})
    assert r.status_code == 200 and "ordered as part 9137958" in status_text(r.text)
    assert field(r.text, "region") == "EU"
    r = pages.post("region", {"region": "MARS"})
    assert r.status_code == 400 and "region_unknown" in error_text(r.text)


# --- point 9: one device, one site -----------------------------------------------------------------

def test_a_serial_is_on_one_site_of_the_company_at_a_time(world: World) -> None:  # R-MY-2 R-CORE-1
    co = Company(world)
    a, b = co.site("Block A"), co.site("Block B")
    co.device(a, "PH-1", apartment_id=co.apartment(a, "1A"))
    before = co.history()
    other = refused("device_on_other_site", co.device, b, "PH-1", apartment_id=co.apartment(b, "1A"))
    assert other.status == 409
    assert other.detail == {"serial": "PH-1", "site_id": a, "site": "Block A"}
    assert other.message == "Device PH-1 is already on site Block A of this company; a device belongs to one site " \
                            "at a time."
    assert co.history() == before + [("my2n.apartment.created", {"site": b, "name": "1A"})]  # no device added
    # Compared as every serial is: spaces around it taken off, letters' case kept.
    refused("device_on_other_site", co.device, b, "  PH-1 ", kind="intercom")
    co.device(b, "ph-1", kind="intercom")
    refused("device_exists", co.device, a, "PH-1", kind="intercom")  # on the same site: as before
    assert (co.serials(a), co.serials(b)) == (["PH-1"], ["ph-1"])
    # Another company's site may hold the same serial: tenants know nothing of each other.
    elsewhere = Company(world, "Elsewhere", "other@example.com")
    elsewhere.device(elsewhere.site("Tower"), "PH-1", kind="intercom")


def test_the_database_refuses_a_second_site_for_a_serial(world: World) -> None:  # R-MY-2
    # The unique index on (org_id, serial), for a writer that skips the service's check.
    co = Company(world)
    a, b = co.site("Block A"), co.site("Block B")
    co.device(a, "IC-1", kind="intercom")
    with pytest.raises(IntegrityError):
        with transaction(world.ctx.sessions) as s:
            s.add(SiteDevice(org_id=co.org, site_id=b, serial="IC-1", kind="intercom", local_mode=False,
                             created_at=world.now))
            s.flush()
    assert co.serials(b) == []


def test_two_sites_adding_one_serial_at_once_one_wins(world: World) -> None:  # R-MY-2
    co = Company(world)
    sites = [co.site(f"Block {i}") for i in range(4)]
    results: list[str] = []
    barrier = threading.Barrier(len(sites))

    def add(site_id: int) -> None:
        barrier.wait()
        try:
            co.device(site_id, "SHARED-1", kind="intercom")
            results.append("ok")
        except EntitleError as exc:
            results.append(exc.code)

    threads = [threading.Thread(target=add, args=(i,)) for i in sites]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == ["device_on_other_site"] * 3 + ["ok"]
    with world.ctx.sessions() as s:
        assert s.scalar(select(func.count()).select_from(SiteDevice).where(SiteDevice.serial == "SHARED-1")) == 1


def test_the_csv_import_refuses_a_row_whose_device_is_on_another_site(world: World) -> None:  # R-MY-2
    co = Company(world)
    a, b = co.site("Block A"), co.site("Block B")
    co.device(a, "PH-1", apartment_id=co.apartment(a, "1A"))
    co.device(a, "IC-1", kind="intercom")
    data = HEADER + "1A,PH-2,phone,\r\n1A,PH-1,phone,\r\n,IC-1,intercom,\r\n"
    before = co.history()
    with pytest.raises(EntitleError) as exc:
        co.run(b, csvio.import_csv, data=data)
    assert exc.value.code == "csv_invalid"
    problems = exc.value.detail["rows"]
    assert [(p["row"], p["column"], p["code"], p["site"]) for p in problems] == [
        (3, "serial", "device_on_other_site", "Block A"), (4, "serial", "device_on_other_site", "Block A")]
    assert problems[0]["message"].startswith("Device PH-1 is already on site Block A")
    assert co.serials(b) == [] and co.history() == before  # nothing imported
    # The site's own devices are still its own: importing into Block A is fine.
    assert co.run(a, csvio.import_csv, data=data)["devices_added"] == 1


def test_the_api_refuses_a_device_on_another_site_with_409(world: World, client: Any) -> None:  # R-MY-2
    co = Company(world)
    a, b = co.site("Block A"), co.site("Block B")
    base = f"/api/v1/orgs/{co.org}/sites"
    r = client.post(f"{base}/{a}/devices", json={"serial": "IC-1", "kind": "intercom"}, headers=auth(co.owner.token))
    assert r.status_code == 201
    r = client.post(f"{base}/{b}/devices", json={"serial": "IC-1", "kind": "intercom"}, headers=auth(co.owner.token))
    assert r.status_code == 409
    error = r.json()["error"]
    assert error["code"] == "device_on_other_site" and "site Block A" in error["message"]
    assert error["detail"] == {"serial": "IC-1", "site_id": a, "site": "Block A"}
    r = client.post(f"{base}/{b}/import", content=(HEADER + ",IC-1,intercom,\r\n").encode(),
                    headers={**auth(co.owner.token), "Content-Type": "text/csv"})
    assert r.status_code == 422 and r.json()["error"]["detail"]["rows"][0]["code"] == "device_on_other_site"


def test_the_cli_refuses_a_device_on_another_site(world: World, cli: Cli) -> None:  # noqa: F811  R-MY-2
    org = str(world.org("Residence"))
    for name in ("Block A", "Block B"):
        cli.json("site", "create", "--org", org, "--name", name)
    cli.json("site", "device", "add", "--org", org, "--site", "Block A", "--serial", "IC-1", "--kind", "intercom")
    body = cli.refused("device_on_other_site", "site", "device", "add", "--org", org, "--site", "Block B",
                       "--serial", "IC-1", "--kind", "intercom")
    assert body["detail"]["site"] == "Block A" and "already on site Block A" in body["message"]


def test_the_web_form_refuses_a_device_on_another_site(world: World, client: Any) -> None:  # R-MY-2
    world.org("Residence", owner=world.user("ann@example.com"))
    csrf = sign_in(client, "ann@example.com")
    ids = []
    for name in ("Block A", "Block B"):
        r = create_site(client, csrf, name)
        ids.append(int(re.search(rf'<a href="/my2n/sites/(\d+)">{name}</a>', r.text).group(1)))
    a, b = (SitePages(client, csrf, i) for i in ids)
    assert a.device("IC-1", "intercom").status_code == 200
    r = b.device("IC-1", "intercom")
    assert r.status_code == 409
    assert error_text(r.text) == "device_on_other_site Device IC-1 is already on site Block A of this company; a " \
                                 "device belongs to one site at a time."


# --- the schema: the models and the migrations agree; old duplicates are renamed -------------------

def test_the_models_of_sites_and_devices_match_the_migrations(ctx: Context) -> None:
    # Tests build the schema with `alembic upgrade head`; the ORM must describe the same tables.
    load_all()

    def mine(obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any) -> bool:
        table = name if type_ == "table" else getattr(getattr(obj, "table", None), "name", None)
        return table in ("my2n_sites", "my2n_devices")

    with ctx.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": mine})
        assert compare_metadata(context, Base.metadata) == []
        names = {c["name"] for c in sa.inspect(conn).get_unique_constraints("my2n_devices")}
    assert {"uq_my2n_devices_org_id", "uq_my2n_devices_site_id"} <= names


@pytest.fixture
def scratch_url(tmp_path: Path, database_url: str) -> Iterator[str]:
    """An empty database of its own (the migration is run step by step on it)."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'scratch.db'}"
        return
    name = f"entitle_scratch_{os.getpid()}_{secrets.token_hex(3)}"
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    yield sa.make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def test_the_migration_keeps_the_oldest_of_a_serial_on_two_sites_and_renames_the_others(
        scratch_url: str, caplog: pytest.LogCaptureFixture) -> None:  # R-MY-2
    upgrade(scratch_url, "0013_my2n")
    orgs = sa.table("organizations", sa.column("id"), sa.column("name"), sa.column("region"),
                    sa.column("is_issuer"), sa.column("created_at", UTCDateTime(timezone=True)))
    sites = sa.table("my2n_sites", sa.column("id"), sa.column("org_id"), sa.column("name"), sa.column("region"),
                     sa.column("model"), sa.column("site_type"), sa.column("created_at", UTCDateTime(timezone=True)))
    devices = sa.table("my2n_devices", sa.column("id"), sa.column("org_id"), sa.column("site_id"),
                       sa.column("serial"), sa.column("kind"), sa.column("local_mode"),
                       sa.column("created_at", UTCDateTime(timezone=True)))
    long = "L" * 128
    engine = make_engine(scratch_url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.execute(orgs.insert(), [{"id": 1, "name": "One", "region": "EU", "is_issuer": False, "created_at": START},
                                     {"id": 2, "name": "Two", "region": "EU", "is_issuer": False, "created_at": START}])
        conn.execute(sites.insert(), [{"id": i, "org_id": org, "name": f"S{i}", "region": "EU", "model": "apartment",
                                       "site_type": "apartment_building", "created_at": START}
                                      for i, org in ((1, 1), (2, 1), (3, 1), (4, 2))])
        rows = [(1, 1, 1, "PH-1"), (2, 1, 2, "PH-1"), (3, 1, 3, "PH-1"), (4, 1, 2, "IC-9"), (5, 2, 4, "PH-1"),
                (6, 1, 1, long), (7, 1, 2, long)]
        conn.execute(devices.insert(), [{"id": i, "org_id": org, "site_id": site, "serial": serial, "kind": "intercom",
                                         "local_mode": False, "created_at": START} for i, org, site, serial in rows])
    with caplog.at_level(logging.WARNING, logger="entitle.migrations"):
        upgrade(scratch_url, "0014_my2n")
    with engine.connect() as conn:
        after = dict(conn.execute(sa.select(devices.c.id, devices.c.serial)).all())
    assert after == {1: "PH-1", 2: "PH-1#dup-2", 3: "PH-1#dup-3", 4: "IC-9", 5: "PH-1",  # another org: untouched
                     6: long, 7: "L" * 122 + "#dup-7"}
    assert len([r for r in caplog.records if "renamed" in r.getMessage()]) == 3
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(devices.insert(), [{"id": 8, "org_id": 1, "site_id": 3, "serial": "IC-9", "kind": "intercom",
                                         "local_mode": False, "created_at": START}])
    # And back: the index goes, the renamed serials stay renamed.
    command.downgrade(alembic_config(scratch_url), "0013_my2n")
    with engine.begin() as conn:
        conn.execute(devices.insert(), [{"id": 8, "org_id": 1, "site_id": 3, "serial": "IC-9", "kind": "intercom",
                                         "local_mode": False, "created_at": START}])
        assert conn.execute(sa.select(devices.c.serial).where(devices.c.id == 2)).scalar_one() == "PH-1#dup-2"
    engine.dispose()
