"""The My2N pages through their HTTP interface (SPEC §4, R-MY-1 … R-MY-6): Sites (My2N), the site
dashboard, apartments and devices, CSV export and import, the migration checklist and the
vendor's model change, vouchers and the site credit pool, card payments, the People tab (site
roles), the issuer's voucher batches; their forms, CSRF, roles and isolation."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from conftest import World
from entitle.actors import operator
from entitle.db import transaction
from entitle.keys.models import KeyBatch
from entitle.my2n import access
from entitle.my2n import services as my2n
from entitle.my2n.models import VoucherBatch
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role
from test_web import HTMX, sign_in
from test_web_ac import content_of, error_text, text_of

VENDOR = operator("2n-support")


# --- helpers -----------------------------------------------------------------------------------

class SitePages:
    """One site's pages, driven through the web forms as a signed-in user."""

    def __init__(self, client: TestClient, csrf: str, site_id: int) -> None:
        self.client, self.csrf, self.site_id = client, csrf, site_id
        self.url = f"/my2n/sites/{site_id}"

    def get(self, tab: str = "dashboard", status: int = 200) -> str:
        r = self.client.get(f"{self.url}?tab={tab}")
        assert r.status_code == status, r.text
        return r.text

    def post(self, path: str, data: dict[str, Any] | None = None) -> Any:
        return self.client.post(f"{self.url}/{path}", data={"csrf_token": self.csrf, **(data or {})}, headers=HTMX)

    def apartment(self, name: str) -> Any:
        return self.post("apartments", {"name": name})

    def device(self, serial: str, kind: str, apartment: str = "", local_mode: bool = False) -> Any:
        return self.post("devices", {"serial": serial, "kind": kind, "apartment": apartment,
                                     **({"local_mode": "on"} if local_mode else {})})

    def assign(self, serial: str, apartment: str, tab: str = "apartments") -> Any:
        return self.post("devices/assign", {"serial": serial, "apartment": apartment, "tab": tab})

    def import_csv(self, content: str | bytes, filename: str = "site.csv") -> Any:
        return self.client.post(f"{self.url}/import", data={"csrf_token": self.csrf},
                                files={"csv_file": (filename, content, "text/csv")}, headers=HTMX)

    def grant(self, email: str, role: str, apartment: str = "", payments: bool = False) -> Any:
        return self.post("roles", {"email": email, "role": role, "apartment": apartment,
                                   **({"payments": "on"} if payments else {})})

    def revoke(self, user_id: int) -> Any:
        return self.post("roles/revoke", {"user_id": str(user_id)})


def row_of(page: str, serial: str) -> str:
    m = re.search(rf'<tr data-serial="{re.escape(serial)}">(.*?)</tr>', page, re.S)
    assert m, f"no row for {serial}"
    return m.group(1)


def create_site(client: TestClient, csrf: str, name: str) -> Any:
    return client.post("/my2n/sites", data={"csrf_token": csrf, "name": name}, headers=HTMX)


def owner_site(world: World, client: TestClient, *, email: str = "ann@example.com", org_name: str = "Residence",
               region: str = "EU", site: str = "Block A") -> tuple[int, SitePages]:
    org = world.org(org_name, region=region, owner=world.user(email))
    csrf = sign_in(client, email)
    r = create_site(client, csrf, site)
    assert r.status_code == 200, r.text
    m = re.search(r'<tr data-site="[^"]+">\s*<td[^>]*><a href="/my2n/sites/(\d+)">', r.text)
    assert m, "no site row"
    return org, SitePages(client, csrf, int(m.group(1)))


def status_text(page: str) -> str:
    m = re.search(r'<p class="message ok" role="status">(.*?)</p>', page, re.S)
    assert m, "no status message on the page"
    return text_of(m.group(1))


def field(page: str, name: str) -> str:
    m = re.search(rf'data-field="{name}"[^>]*>(.*?)</(dd|p|strong|span)>', page, re.S)
    assert m, f"no field {name}"
    return text_of(m.group(1))


def has_field(page: str, name: str) -> bool:
    return f'data-field="{name}"' in page


def apartment_section(page: str, name: str) -> str:
    m = re.search(rf'<section class="my2n-apartment" [^>]*data-apartment="{re.escape(name)}".*?</section>', page, re.S)
    assert m, f"no apartment {name}"
    return m.group(0)


def serials_in(html: str) -> list[str]:
    return re.findall(r'<tr data-serial="([^"]+)">', html)


def site_with_custom_model(world: World, org: int, name: str = "Old") -> int:
    with transaction(world.ctx.sessions) as s:
        return my2n.create_site(s, org_id=org, name=name, model="custom", actor=VENDOR, now=world.now,
                                custom_expires_at=world.now + timedelta(days=60)).id


def vouchers(world: World, *, years: int = 1, count: int = 1, scope: str = "apartment",
             part: str = "9137958") -> list[str]:
    with transaction(world.ctx.sessions) as s:
        return my2n.mint_vouchers(s, part_number=part, name="Distributor", years=years, subscriptions=count,
                                  scope=scope, actor=VENDOR, now=world.now)[1]


# --- Sites (My2N) (R-MY-1) -------------------------------------------------------------------------

def test_sites_list_creates_an_apartment_model_site(world, client):  # R-MY-1
    world.org("Residence", owner=world.user("ann@example.com"))
    csrf = sign_in(client, "ann@example.com")
    home = client.get("/").text
    assert re.search(r'<a href="/my2n"[^>]*>My2N</a>', home)
    listing = client.get("/my2n")
    assert listing.status_code == 200
    assert "Residence has no site yet" in text_of(content_of(listing.text))
    assert "part 9137958" in text_of(listing.text)  # an EU company orders 9137958
    r = create_site(client, csrf, "Block A")
    assert r.status_code == 200
    assert status_text(r.text) == "Site Block A is created with the apartment model. Add its apartments and devices."
    row = re.search(r'<tr data-site="Block A">(.*?)</tr>', r.text, re.S).group(1)
    assert "Apartment model" in text_of(row) and 'data-model="apartment"' in row
    # The same name twice is refused with the form kept.
    r = create_site(client, csrf, "Block A")
    assert r.status_code == 409 and error_text(r.text).startswith("site_exists")
    assert 'value="Block A"' in r.text


def test_a_custom_model_site_shows_when_it_expires(world, client):  # R-MY-1
    org = world.org("Legacy", owner=world.user("ann@example.com"))
    site_id = site_with_custom_model(world, org)
    pages = SitePages(client, sign_in(client, "ann@example.com"), site_id)
    row = re.search(r'<tr data-site="Old">(.*?)</tr>', client.get("/my2n").text, re.S).group(1)
    assert text_of(row).startswith("Old Custom model (retired): expires on 2026-03-16")
    page = pages.get()
    assert "cannot be prolonged" in field(page, "custom-expiry") and "2026-03-16" in field(page, "custom-expiry")
    # The create form offers only the apartment model: there is no way to choose custom.
    assert 'name="model"' not in client.get("/my2n").text


def test_a_viewer_sees_sites_without_forms(world, client):  # R-MY-1
    org, pages = owner_site(world, client)
    world.member(org, world.user("vic@example.com"), Role.viewer)
    vic = SitePages(client, sign_in(client, "vic@example.com"), pages.site_id)
    listing = client.get("/my2n").text
    assert "Block A" in listing and "Create site</button>" not in listing
    page = vic.get("apartments")
    assert "Create apartment</button>" not in page and "Add device</button>" not in page
    r = vic.apartment("1A")
    assert r.status_code == 403 and error_text(r.text).startswith("site_admin_required")
    r = create_site(client, vic.csrf, "Mine")
    assert r.status_code == 403 and error_text(r.text).startswith("role_insufficient")


# --- the site dashboard (R-MY-3, R-MY-6) ----------------------------------------------------------

def test_dashboard_the_seed_example_five_apartments_one_empty_four_to_order(world, client):  # R-MY-3
    _org, pages = owner_site(world, client)
    for i in range(1, 6):
        assert pages.apartment(f"A{i}").status_code == 200
    assert pages.device("IC-1", "intercom").status_code == 200
    for i in range(1, 5):
        r = pages.device(f"PHONE-{i}", "phone", apartment=f"A{i}")
        assert r.status_code == 200, r.text
    page = pages.get()
    assert field(page, "apartments") == "5"
    assert field(page, "needing-license") == "4"
    assert field(page, "order") == "4 × 9137958"
    # Never paid: the four that need a license are "Not paid" (not "Lapsed", issue 14 point 10).
    assert field(page, "not-paid").startswith("4 apartments not paid: A1, A2, A3, A4.")
    assert not has_field(page, "lapsed")
    assert re.search(r'<tr data-apartment="A5">.*?data-state="no_license_needed"', page, re.S)
    assert re.search(r'<tr data-apartment="A1">.*?data-state="not_paid">Not paid<', page, re.S)


def test_us_sites_order_02683_and_local_mode_needs_no_license(world, client):  # R-MY-3
    _org, pages = owner_site(world, client, region="US", org_name="Tower")
    pages.apartment("1A")
    assert pages.device("TAB-1", "tablet", apartment="1A", local_mode=True).status_code == 200
    assert pages.device("AU-1", "answering_unit", apartment="1A").status_code == 200
    page = pages.get()
    assert field(page, "needing-license") == "0" and field(page, "order") == "0 × 02683-001"
    # Local mode off: the tablet makes the apartment need a license.
    r = pages.post("devices/local-mode", {"serial": "TAB-1", "local_mode": "off"})
    assert r.status_code == 200 and status_text(r.text) == "Device TAB-1: local mode is off."
    assert field(pages.get(), "order") == "1 × 02683-001"


def test_the_device_form_picks_the_apartment_and_local_mode_buttons_say_what_they_do(world, client):
    # Issue 16 point 6: the apartment is chosen from the site's apartments; the button names the change.
    _org, pages = owner_site(world, client, region="US", org_name="Tower")
    pages.apartment("1A")
    pages.apartment("2B")
    page = pages.get("apartments")
    select = re.search(r'<select id="device-apartment" name="apartment">(.*?)</select>', page, re.S)
    assert select, "the apartment is not a list"
    assert re.findall(r'<option value="([^"]*)"', select.group(1)) == ["", "1A", "2B"]
    assert pages.device("TAB-1", "tablet", apartment="2B").status_code == 200
    page = pages.get("apartments")
    assert ">Turn local mode on</button>" in row_of(page, "TAB-1")
    pages.post("devices/local-mode", {"serial": "TAB-1", "local_mode": "on"})
    assert ">Turn local mode off</button>" in row_of(pages.get("apartments"), "TAB-1")


def test_dashboard_warns_before_a_license_lapses_then_shows_it_lapsed(world, client):  # R-MY-6
    _org, pages = owner_site(world, client)
    pages.apartment("A1")
    pages.device("P-1", "phone", apartment="A1")
    [code] = vouchers(world)
    assert pages.post("vouchers/redeem", {"code": code}).status_code == 200
    page = pages.get("vouchers")
    apt_id = re.search(r'action="/my2n/sites/\d+/apartments/(\d+)/pay"', page).group(1)
    nonce = re.search(r'name="nonce" value="([^"]+)"', page).group(1)
    assert pages.post(f"apartments/{apt_id}/pay", {"nonce": nonce}).status_code == 200
    page = pages.get()
    assert field(page, "lapse-ok").startswith("No apartment license has lapsed")
    world.ctx.clock.advance(timedelta(days=365 - 20))  # 2026-12-26: 20 days left
    pages.csrf = sign_in(client, "ann@example.com")
    page = pages.get()
    assert field(page, "lapsing-soon").startswith("1 apartment license lapses within 30 days: A1.")
    assert re.search(r'<tr data-apartment="A1">.*?data-state="lapsing_soon"', page, re.S)
    world.ctx.clock.advance(timedelta(days=20))
    pages.csrf = sign_in(client, "ann@example.com")
    page = pages.get()
    assert field(page, "lapsed").startswith("1 apartment license lapsed: A1.") and not has_field(page, "lapsing-soon")
    assert re.search(r'<tr data-apartment="A1">.*?data-state="lapsed">Lapsed<', page, re.S)


# --- apartments and devices (R-MY-2) -------------------------------------------------------------

def test_an_apartment_takes_four_paid_devices_the_fifth_is_refused(world, client):  # R-MY-2
    _org, pages = owner_site(world, client)
    r = pages.apartment("2B")
    assert r.status_code == 200
    assert status_text(r.text) == "Apartment 2B is created. Add its answering devices (at most 4 paid devices)."
    for serial, kind in (("D1", "phone"), ("D2", "tablet"), ("D3", "third_party"), ("D4", "phone"),
                         ("AU", "answering_unit")):
        r = pages.device(serial, kind, apartment="2B")
        assert r.status_code == 200, r.text
    assert status_text(r.text) == "2N answering unit AU is added to apartment 2B."
    section = apartment_section(r.text, "2B")
    assert "4 / 4" in text_of(section) and serials_in(section) == ["AU", "D1", "D2", "D3", "D4"]
    # The fifth paid device is refused with the message to create another apartment; the form is kept.
    r = pages.device("D5", "tablet", apartment="2B")
    assert r.status_code == 409
    assert error_text(r.text) == ("apartment_paid_device_limit This apartment already holds 4 paid devices (phones, "
                                  "tablets, third-party devices), the most it can; create another apartment for this "
                                  "device.")
    assert 'value="D5"' in r.text and ">Create another apartment</a>" in r.text
    # Assigning a loose paid device there is refused the same way; intercoms never go in.
    assert pages.device("LOOSE", "phone").status_code == 200
    r = pages.assign("LOOSE", "2B")
    assert r.status_code == 409 and "create another apartment" in error_text(r.text)
    pages.device("IC", "intercom")
    r = pages.assign("IC", "2B")
    assert r.status_code == 409 and error_text(r.text).startswith("intercom_not_in_apartment")
    page = pages.get("apartments")
    assert serials_in(apartment_section(page, "2B")) == ["AU", "D1", "D2", "D3", "D4"]
    loose = re.search(r'<section class="my2n-loose".*?</section>', page, re.S).group(0)
    assert serials_in(loose) == ["IC", "LOOSE"]
    # A second apartment takes it.
    pages.apartment("2C")
    r = pages.assign("LOOSE", "2C")
    assert r.status_code == 200 and status_text(r.text) == "Device LOOSE is assigned to apartment 2C."
    assert serials_in(apartment_section(r.text, "2C")) == ["LOOSE"]
    r = pages.assign("LOOSE", "No such")
    assert r.status_code == 404 and error_text(r.text).startswith("apartment_not_found")


def test_an_apartment_admin_meets_the_same_limit(world, client):  # R-MY-2
    org, pages = owner_site(world, client)
    pages.apartment("3A")
    for i in range(4):
        pages.device(f"P{i}", "phone", apartment="3A")
    amy = world.user("amy@example.com")
    world.member(org, amy, Role.viewer)
    with transaction(world.ctx.sessions) as s:
        site = my2n.get_site(s, org, pages.site_id)
        apt = my2n.apartments_of(s, site)[0]
        access.grant_site_role(s, site=site, user_id=amy.id, role="apartment_admin", apartment_id=apt.id,
                               actor=VENDOR, now=world.now)
    amy_pages = SitePages(client, sign_in(client, "amy@example.com"), pages.site_id)
    page = amy_pages.get("apartments")
    # Her form adds to her apartment only; she creates no apartment and assigns nothing.
    assert 'name="apartment" readonly value="3A"' in page and "Create apartment</button>" not in page
    assert "Assign</button>" not in page
    r = amy_pages.device("P5", "tablet", apartment="3A")
    assert r.status_code == 409 and "create another apartment" in error_text(r.text)
    r = amy_pages.post("devices/local-mode", {"serial": "P0", "local_mode": "on"})
    assert r.status_code == 200 and status_text(r.text) == "Device P0: local mode is on."


# --- migration (R-MY-4) ------------------------------------------------------------------------

def test_migration_checklist_then_the_vendor_changes_the_model(world, client):  # R-MY-4 R-MY-1
    org = world.org("Legacy", owner=world.user("ann@example.com"))
    world.user("support@2n.example", issuer=True)  # the vendor, not a member of the company
    site_id = site_with_custom_model(world, org)
    ann = SitePages(client, sign_in(client, "ann@example.com"), site_id)
    ann.apartment("1")
    ann.device("IC", "intercom")
    ann.device("PH", "phone")
    ann.device("AU", "answering_unit")
    page = ann.get("migration")
    assert field(page, "unassigned-count") == "2 devices are not in an apartment yet."
    checklist = re.search(r'<table class="my2n-devices my2n-checklist">.*?</table>', page, re.S).group(0)
    assert serials_in(checklist) == ["AU", "PH"]  # not the intercom
    assert "Change model</button>" not in page  # the company's admin does not change the model

    # The vendor sees the site, and the change is refused while devices are unassigned.
    support = sign_in(client, "support@2n.example")
    page = client.get("/issuer/my2n").text
    assert "Old" in page and "(Legacy)" in page and "2 devices not in an apartment" in field(page, "unassigned")
    r = client.post(f"/issuer/my2n/sites/{site_id}/model", data={"csrf_token": support, "model": "apartment"},
                    headers=HTMX)
    assert r.status_code == 409 and error_text(r.text).startswith("migration_devices_unassigned 2 devices are")

    # The admin assigns them from the checklist; it empties and says to contact 2N Tech Support.
    ann.csrf = sign_in(client, "ann@example.com")
    r = ann.assign("PH", "1", tab="migration")
    assert r.status_code == 200 and status_text(r.text) == "Device PH is assigned to apartment 1."
    r = ann.assign("AU", "1", tab="migration")
    assert field(r.text, "checklist-done") == ("All devices are assigned to apartments — contact 2N Tech Support to "
                                               "change the site to the apartment model.")

    support = sign_in(client, "support@2n.example")
    r = client.post(f"/issuer/my2n/sites/{site_id}/model", data={"csrf_token": support, "model": "apartment"},
                    headers=HTMX)
    assert r.status_code == 200
    assert status_text(r.text).startswith("Site Old has the apartment model now. 1 user of the company was "
                                          "logged out")
    assert "No site is on the custom model." in r.text

    # The company's admin was logged out: the next page asks to sign in again.
    client.cookies.clear()
    ann.csrf = sign_in(client, "ann@example.com")  # a fresh sign-in works
    page = ann.get("migration")
    assert field(page, "migrated") == "The site has the apartment model since 2026-01-15."
    assert "Choose site type</button>" in page
    r = ann.post("site-type", {"site_type": "family_house", "tab": "migration"})
    assert r.status_code == 200 and status_text(r.text) == "The site type is family house."
    assert field(r.text, "site-type") == "Family house"


def test_a_model_change_logs_the_company_out(world, client):  # R-MY-4
    org = world.org("Legacy", owner=world.user("ann@example.com"))
    world.user("support@2n.example", issuer=True)
    site_id = site_with_custom_model(world, org)
    sign_in(client, "ann@example.com")
    ann_cookies = dict(client.cookies)
    with TestClient(client.app) as vendor:
        csrf = sign_in(vendor, "support@2n.example")
        r = vendor.post(f"/issuer/my2n/sites/{site_id}/model", data={"csrf_token": csrf}, headers=HTMX)
        assert r.status_code == 200, r.text
    client.cookies.clear()
    client.cookies.update(ann_cookies)
    r = client.get(f"/my2n/sites/{site_id}", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_only_the_issuer_reaches_vendor_support(world, client):  # R-MY-4
    org = world.org("Legacy", owner=world.user("ann@example.com"))
    site_id = site_with_custom_model(world, org)
    csrf = sign_in(client, "ann@example.com")
    assert "My2N support" not in client.get("/").text
    r = client.get("/issuer/my2n")
    assert r.status_code == 403 and "issuer_only" in r.text
    r = client.post(f"/issuer/my2n/sites/{site_id}/model", data={"csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 403 and "issuer_only" in r.text
    with world.ctx.sessions() as s:
        assert my2n.get_site(s, org, site_id).model == "custom"


def test_an_issuer_member_sees_change_model_on_the_checklist_and_a_second_change_is_refused(world, client):  # R-MY-4
    org = world.org("Legacy", owner=world.user("ann@example.com"))
    world.member(org, world.user("support@2n.example", issuer=True), Role.viewer)
    site_id = site_with_custom_model(world, org)
    support = SitePages(client, sign_in(client, "support@2n.example"), site_id)
    page = support.get("migration")
    assert "Change model</button>" in page and f'action="/issuer/my2n/sites/{site_id}/model"' in page
    r = client.post(f"/issuer/my2n/sites/{site_id}/model", data={"csrf_token": support.csrf}, headers=HTMX)
    assert r.status_code == 200 and "has the apartment model now" in status_text(r.text)
    # Posted again (its own session was revoked too: a fresh one), the refusal is shown on top.
    csrf = sign_in(client, "support@2n.example")
    r = client.post(f"/issuer/my2n/sites/{site_id}/model", data={"csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 409 and error_text(r.text).startswith("model_unchanged")


# --- vouchers and the credit pool (R-MY-5) ---------------------------------------------------------

def test_vouchers_fill_the_pool_and_pay_an_apartment_year(world, client):  # R-MY-5
    _org, pages = owner_site(world, client)
    pages.apartment("A")
    pages.device("A-PH", "phone", apartment="A")
    pages.apartment("B")
    for i in range(3):
        pages.device(f"B-{i}", "tablet", apartment="B")
    [apt_code] = vouchers(world)
    [dev_code] = vouchers(world, years=2, scope="device")
    page = pages.get("vouchers")
    assert field(page, "apartment-years") == "0" and field(page, "device-years") == "0"
    r = pages.post("vouchers/redeem", {"code": apt_code})
    assert r.status_code == 200
    assert status_text(r.text) == "Voucher activated: 1 apartment-year added to the site credit pool."
    r = pages.post("vouchers/redeem", {"code": dev_code})
    assert status_text(r.text) == "Voucher activated: 2 device-years added to the site credit pool."
    assert field(r.text, "apartment-years") == "1" and field(r.text, "device-years") == "2"
    # A used code is refused and kept in the field.
    r = pages.post("vouchers/redeem", {"code": apt_code})
    assert r.status_code == 409 and error_text(r.text).startswith("key_already_redeemed")
    assert f'value="{apt_code}"' in r.text

    ids = dict((n, i) for i, n in re.findall(r'action="/my2n/sites/\d+/apartments/(\d+)/pay".*?aria-label="Pay a year '
                                              r'of ([^"]+) from credit"', r.text, re.S))
    nonce = re.search(r'name="nonce" value="([^"]+)"', r.text).group(1)
    r = pages.post(f"apartments/{ids['A']}/pay", {"nonce": nonce})
    assert r.status_code == 200
    assert status_text(r.text) == "Apartment A is paid through 2027-01-15 from the site credit pool."
    assert field(r.text, "apartment-years") == "0"
    # The same form posted again pays nothing twice.
    r = pages.post(f"apartments/{ids['A']}/pay", {"nonce": nonce})
    assert r.status_code == 200 and "Nothing was paid twice" in status_text(r.text)
    assert "2027-01-15" in re.search(r'<tr data-apartment="A">.*?</tr>', r.text, re.S).group(0)
    # B has 3 billable tablets: 2 device-years are not enough.
    nonce = re.search(r'name="nonce" value="([^"]+)"', r.text).group(1)
    r = pages.post(f"apartments/{ids['B']}/pay", {"nonce": nonce})
    assert r.status_code == 409 and error_text(r.text).startswith("credit_insufficient")
    assert field(r.text, "device-years") == "2"


def test_only_payers_activate_vouchers(world, client):  # R-MY-5
    org, pages = owner_site(world, client)
    sam = world.user("sam@example.com")
    world.member(org, sam, Role.viewer)
    with transaction(world.ctx.sessions) as s:
        access.grant_site_role(s, site=my2n.get_site(s, org, pages.site_id), user_id=sam.id, role="site_admin",
                               actor=VENDOR, now=world.now)
    [code] = vouchers(world)
    sam_pages = SitePages(client, sign_in(client, "sam@example.com"), pages.site_id)
    page = sam_pages.get("vouchers")
    assert "Activate voucher</button>" not in page and "pay." in text_of(page)
    r = sam_pages.post("vouchers/redeem", {"code": code})
    assert r.status_code == 403 and error_text(r.text).startswith("payments_permission_required")
    # A site admin (without payments) still manages apartments.
    assert sam_pages.apartment("S1").status_code == 200


# --- card payments (R-MY-5) ----------------------------------------------------------------------

def test_card_and_recurring_payment_prices_only_for_payers(world, client):  # R-MY-5
    org, pages = owner_site(world, client)
    pages.apartment("A1")
    pages.device("P1", "phone", apartment="A1")
    pages.apartment("A2")
    pages.device("P2", "tablet", apartment="A2")
    page = pages.get("payments")
    assert field(page, "card") == "none" and field(page, "recurring") == "off"
    assert field(page, "price") == "12.00 EUR" and field(page, "year-total") == "24.00 EUR"
    r = pages.post("payments/recurring", {"recurring": "on"})
    assert r.status_code == 409 and error_text(r.text).startswith("card_missing")
    r = pages.post("payments/card", {"payment_method": "pm_card_visa"})
    assert r.status_code == 200 and status_text(r.text) == "The site pays with Visa •••• 4242 now."
    # R-MY-5: the amount is said before it is charged; a form whose amount is stale charges nothing.
    assert field(r.text, "preview").startswith("Turning it on charges 24.00 EUR")
    r = pages.post("payments/recurring", {"recurring": "on", "expected": "1200"})
    assert r.status_code == 409 and "24" in error_text(r.text)
    r = pages.post("payments/recurring", {"recurring": "on", "expected": "2400"})
    assert r.status_code == 200, r.text
    assert status_text(r.text) == ("Automatic recurring payment is on for 2 apartments. "
                                   "Paid now through 2027-01-15: A1, A2.")
    assert field(r.text, "recurring").startswith("on (since 2026-01-15, 2 apartments a year)")
    rows = re.findall(r'<tr data-payment="[^"]+">(.*?)</tr>', r.text, re.S)
    assert len(rows) == 1 and text_of(rows[0]).endswith("2 24.00 EUR")
    # The card cannot change while recurring payment is on.
    assert 'name="payment_method"' not in r.text
    r = pages.post("payments/card", {"payment_method": "pm_card_0005"})
    assert r.status_code == 409 and error_text(r.text).startswith("recurring_payment_active")
    assert re.search(r'<tr data-apartment="A1">.*?2027-01-15', pages.get(), re.S)
    r = pages.post("payments/recurring", {"recurring": "off"})
    assert r.status_code == 200 and status_text(r.text).startswith("Automatic recurring payment is off")
    assert 'name="payment_method"' in r.text

    # A site admin without the payments permission sees neither prices nor amounts, and cannot pay.
    sam = world.user("sam@example.com")
    world.member(org, sam, Role.viewer)
    with transaction(world.ctx.sessions) as s:
        access.grant_site_role(s, site=my2n.get_site(s, org, pages.site_id), user_id=sam.id, role="site_admin",
                               actor=VENDOR, now=world.now)
    sam_pages = SitePages(client, sign_in(client, "sam@example.com"), pages.site_id)
    page = sam_pages.get("payments")
    assert not has_field(page, "price") and "EUR" not in page and "Turn recurring payment" not in page
    assert len(re.findall(r'<tr data-payment=', page)) == 1
    r = sam_pages.post("payments/recurring", {"recurring": "on"})
    assert r.status_code == 403 and error_text(r.text).startswith("payments_permission_required")


def test_a_declined_card_pays_nothing(world, client):  # R-MY-5
    _org, pages = owner_site(world, client)
    pages.apartment("A1")
    pages.device("P1", "phone", apartment="A1")
    pages.post("payments/card", {"payment_method": "pm_card_declined"})
    world.ctx.payments.declining = True
    r = pages.post("payments/recurring", {"recurring": "on"})
    assert r.status_code == 402 and error_text(r.text).startswith("payment_declined")
    page = pages.get("payments")
    assert field(page, "recurring") == "off" and "No card payment yet." in page
    assert re.search(r'<tr data-apartment="A1">.*?data-state="not_paid"', pages.get(), re.S)  # never paid


# --- CSV export and import (the Apartments tab) ----------------------------------------------------

def csv_text(*rows: str) -> str:
    """A CSV file as the export writes it: the header, then the rows, CRLF line ends."""
    return "".join(f"{r}\r\n" for r in ("apartment,serial,kind,local_mode", *rows))


def csv_problems(page: str) -> list[tuple[str, str, str]]:
    """The (row, column, code) of each row of the import's problem table."""
    table = re.search(r'<table class="my2n-csv-problems">.*?</table>', page, re.S)
    assert table, "no problem table on the page"
    rows = re.findall(r'<tr data-row="[^"]*">(.*?)</tr>', table.group(0), re.S)
    return [tuple(text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", r, re.S)[:3]) for r in rows]


def site_contents(world: World, org: int, site_id: int) -> tuple[list[str], list[tuple[str, str, int | None]]]:
    with world.ctx.sessions() as s:
        site = my2n.get_site(s, org, site_id)
        return ([a.name for a in my2n.apartments_of(s, site)],
                [(d.serial, d.kind, d.apartment_id) for d in my2n.devices_of(s, site)])


def test_a_csv_with_bad_rows_lists_each_problem_and_imports_nothing(world, client):  # R-MY-2
    org, pages = owner_site(world, client)
    page = pages.get("apartments")
    assert "Import CSV</button>" in page and f'href="{pages.url}/export.csv"' in page
    bad = csv_text(",IC-1,intercom,false",
                   "1A,P1,phone,false",
                   "1A,P1,phone,false",          # row 4: the serial twice
                   "1B,X1,toaster,false",        # row 5: no such kind
                   "1B,IC-2,intercom,false",     # row 6: an intercom in an apartment
                   *[f"2A,T{i},tablet,false" for i in range(1, 6)],  # row 11: the fifth paid device of 2A
                   "2A,AU,answering_unit,maybe")  # row 12: local_mode
    r = pages.import_csv(bad)
    assert r.status_code == 422
    assert error_text(r.text).startswith("csv_invalid The file has 5 problems; nothing was imported. First, row 4, "
                                         "serial: Serial P1 is already on row 3.")
    assert csv_problems(r.text) == [("4", "serial", "serial_duplicate"), ("5", "kind", "device_kind_invalid"),
                                    ("6", "kind", "intercom_not_in_apartment"),
                                    ("11", "apartment", "apartment_paid_device_limit"),
                                    ("12", "local_mode", "local_mode_invalid")]
    assert "5 problems; nothing was imported." in text_of(re.search(r"<caption>(.*?)</caption>", r.text, re.S)
                                                             .group(1))
    # All or nothing: not even the good rows were written.
    assert site_contents(world, org, pages.site_id) == ([], [])
    assert "The site has no apartment yet" in pages.get("apartments")
    # A file that is not CSV at all, and no file: refused the same way.
    r = pages.import_csv(b"\xff\xfeapartment")
    assert r.status_code == 422 and csv_problems(r.text) == [("—", "—", "encoding_invalid")]
    r = pages.import_csv(b"", filename="")
    assert r.status_code == 400 and error_text(r.text).startswith("csv_file_required")


def test_a_good_csv_imports_and_exports_back_the_same(world, client):  # R-MY-2 R-MY-4
    org, pages = owner_site(world, client)
    pages.apartment("0")
    pages.device("PH-LOOSE", "phone")  # on the site, outside every apartment: the file assigns it
    good = csv_text(",IC-1,intercom,false",
                    "0,,,",
                    "1A,AU-1,answering_unit,false",
                    "1A,PH-1,phone,true",
                    "1A,PH-LOOSE,phone,false",
                    "1B,,,")
    r = pages.import_csv(good)
    assert r.status_code == 200, r.text
    assert status_text(r.text) == ("The file is imported (6 rows): 2 apartments created, 3 devices added, 1 "
                                   "device assigned to an apartment, local mode changed on 0 devices.")
    assert serials_in(apartment_section(r.text, "1A")) == ["AU-1", "PH-1", "PH-LOOSE"]
    assert "No device in this apartment." in apartment_section(r.text, "1B")
    assert "my2n-csv-problems" not in r.text
    # The same file again changes nothing.
    r = pages.import_csv(good)
    assert r.status_code == 200 and status_text(r.text).startswith(
        "The file is imported (6 rows): 0 apartments created, 0 devices added, 0 devices assigned")
    assert site_contents(world, org, pages.site_id)[0] == ["0", "1A", "1B"]

    # The export downloads the site as CSV: the same file the import read.
    r = client.get(f"{pages.url}/export.csv")
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"] == f'attachment; filename="site-{pages.site_id}-Block-A.csv"'
    assert r.headers["cache-control"] == "no-store"
    assert r.text == good


def test_a_viewer_exports_but_does_not_import(world, client):
    org, pages = owner_site(world, client)
    pages.apartment("1A")
    world.member(org, world.user("vic@example.com"), Role.viewer)
    vic = SitePages(client, sign_in(client, "vic@example.com"), pages.site_id)
    page = vic.get("apartments")
    assert "Export CSV</a>" in page and "Import CSV</button>" not in page
    r = client.get(f"{vic.url}/export.csv")
    assert r.status_code == 200 and r.text == csv_text("1A,,,")
    r = vic.import_csv(csv_text("2A,,,"))
    assert r.status_code == 403 and error_text(r.text).startswith("site_admin_required")
    r = vic.import_csv(b"", filename="")  # the role is refused first, file or not
    assert r.status_code == 403 and error_text(r.text).startswith("site_admin_required")
    assert site_contents(world, org, pages.site_id)[0] == ["1A"]


# --- People: site roles (R-MY-2, R-MY-5) ------------------------------------------------------------

def role_row(page: str, email: str) -> str:
    m = re.search(rf'<tr data-member="{re.escape(email)}">(.*?)</tr>', page, re.S)
    assert m, f"no role row for {email}"
    return m.group(1)


def user_id_of(world: World, email: str) -> int:
    with world.ctx.sessions() as s:
        return tenancy.user_by_email(s, email).id


def roles_of(world: World, org: int, site_id: int) -> list[tuple[str, str, bool]]:
    with world.ctx.sessions() as s:
        return [(r["email"], r["role"], r["payments"]) for r in access.site_roles(s, my2n.get_site(s, org, site_id))]


def test_a_company_admin_gives_and_revokes_site_roles(world, client):  # R-MY-2 R-MY-5
    org, pages = owner_site(world, client)
    pages.apartment("3A")
    for email in ("sam@example.com", "amy@example.com"):
        world.member(org, world.user(email), Role.viewer)
    world.org("Elsewhere", owner=world.user("out@example.com"))
    page = pages.get("people")
    assert "No one has a role on this site: give one below." in page
    members = re.findall(r'<option value="([^"]+@[^"]+)"', page)
    assert members == ["amy@example.com", "ann@example.com", "sam@example.com"]  # not another company's users

    r = pages.grant("sam@example.com", "site_admin", payments=True)
    assert r.status_code == 200, r.text
    assert status_text(r.text) == "sam@example.com is a site admin of Block A now, with the payments permission."
    assert text_of(role_row(r.text, "sam@example.com")) == "sam@example.com Site admin — yes Revoke"
    r = pages.grant("amy@example.com", "apartment_admin", apartment="3A")
    assert status_text(r.text) == "amy@example.com is the admin of apartment 3A now."
    assert text_of(role_row(r.text, "amy@example.com")) == "amy@example.com Apartment admin 3A no Revoke"

    # Refusals keep the form: they name the problem.
    for (email, role, apartment, payments), (status, code) in (
            (("amy@example.com", "apartment_admin", "", False), (400, "apartment_required")),
            (("amy@example.com", "apartment_admin", "9Z", False), (404, "apartment_not_found")),
            (("amy@example.com", "apartment_admin", "3A", True), (400, "payments_permission_site_admins_only")),
            (("out@example.com", "site_admin", "", False), (404, "member_not_found")),
            (("nobody@example.com", "site_admin", "", False), (404, "member_not_found")),
            (("amy@example.com", "owner", "", False), (400, "site_role_invalid"))):
        r = pages.grant(email, role, apartment, payments)
        assert r.status_code == status and error_text(r.text).startswith(code), (email, role, r.text)
        new_role = re.search(r'<section id="new-role".*?</section>', r.text, re.S).group(0)
        assert 'class="message error"' in new_role  # shown by the form, which keeps what was chosen
        if email in members:
            assert re.search(rf'<option value="{re.escape(email)}" selected>', new_role), email
        if apartment:
            assert f'name="apartment" list="apartment-list" maxlength="200" autocomplete="off" value="{apartment}"' \
                in new_role
        assert ('name="payments" value="on" checked' in new_role) == payments
    assert roles_of(world, org, pages.site_id) == [("sam@example.com", "site_admin", True),
                                                   ("amy@example.com", "apartment_admin", False)]

    # The role works: Sam pays (the voucher form is his now).
    sam = SitePages(client, sign_in(client, "sam@example.com"), pages.site_id)
    assert "Activate voucher</button>" in sam.get("vouchers")

    pages.csrf = sign_in(client, "ann@example.com")
    r = pages.revoke(user_id_of(world, "amy@example.com"))
    assert r.status_code == 200 and status_text(r.text) == "amy@example.com has no role on Block A any more."
    assert 'data-member="amy@example.com"' not in r.text and 'data-member="sam@example.com"' in r.text
    r = pages.revoke(user_id_of(world, "amy@example.com"))
    assert r.status_code == 409 and error_text(r.text).startswith("site_role_missing")
    assert roles_of(world, org, pages.site_id) == [("sam@example.com", "site_admin", True)]


def test_only_company_admins_give_or_revoke_site_roles(world, client):  # R-MY-2
    org, pages = owner_site(world, client)
    sam, vic = world.user("sam@example.com"), world.user("vic@example.com")
    world.member(org, sam, Role.viewer)
    world.member(org, vic, Role.viewer)
    assert pages.grant("sam@example.com", "site_admin", payments=True).status_code == 200
    # A site admin, even with the payments permission, sees the roles but neither the form nor Revoke.
    sam_pages = SitePages(client, sign_in(client, "sam@example.com"), pages.site_id)
    page = sam_pages.get("people")
    assert "sam@example.com" in role_row(page, "sam@example.com")
    assert "Give role</button>" not in page and ">Revoke</button>" not in page
    assert "Company admins give and take away the roles on a site." in text_of(page)
    r = sam_pages.grant("vic@example.com", "site_admin")
    assert r.status_code == 403 and error_text(r.text).startswith("role_insufficient")
    r = sam_pages.revoke(sam.id)
    assert r.status_code == 403 and error_text(r.text).startswith("role_insufficient")
    # A viewer is refused the same way.
    vic_pages = SitePages(client, sign_in(client, "vic@example.com"), pages.site_id)
    assert "Give role</button>" not in vic_pages.get("people")
    r = vic_pages.grant("vic@example.com", "site_admin", payments=True)
    assert r.status_code == 403 and error_text(r.text).startswith("role_insufficient")
    assert roles_of(world, org, pages.site_id) == [("sam@example.com", "site_admin", True)]


# --- the issuer's voucher batches (R-MY-5) -----------------------------------------------------------

def voucher_form(client: TestClient) -> tuple[str, str]:
    """The voucher batches page's CSRF token and nonce."""
    page = client.get("/issuer/my2n/vouchers")
    assert page.status_code == 200, page.text
    return (re.search(r'name="csrf_token" value="([^"]+)"', content_of(page.text)).group(1),
            re.search(r'name="nonce" value="([^"]+)"', page.text).group(1))


def mint(client: TestClient, csrf: str, nonce: str, **fields: Any) -> Any:
    data = {"part_number": "9137958", "name": "Distributor 7", "years": "2", "subscriptions": "3",
            "scope": "apartment", **fields}
    return client.post("/issuer/my2n/vouchers", data={"csrf_token": csrf, "nonce": nonce, **data}, headers=HTMX)


def batch_count(world: World) -> tuple[int, int]:
    with world.ctx.sessions() as s:
        return s.scalar(select(func.count()).select_from(VoucherBatch)), s.scalar(
            select(func.count()).select_from(KeyBatch))


def test_the_issuer_mints_a_voucher_batch_and_a_double_post_mints_one(world, client):  # R-MY-5
    world.user("support@2n.example", issuer=True)
    sign_in(client, "support@2n.example")
    support = client.get("/issuer/my2n").text
    assert re.search(r'<a href="/issuer/my2n/vouchers"[^>]*>Voucher batches</a>', support)
    csrf, nonce = voucher_form(client)
    before = batch_count(world)
    r = mint(client, csrf, nonce)
    assert r.status_code == 200, r.text
    codes = re.search(r'<textarea id="minted-codes"[^>]*>(.*?)</textarea>', r.text, re.S).group(1).split()
    assert len(codes) == 3 and len(set(codes)) == 3
    assert "These codes are shown once." in r.text
    # The cut-off is the moment of purchase three years on, not midnight: date, time and zone.
    assert field(r.text, "minted-batch") == ("Distributor 7: 2 apartment-years per code, valid until "
                                             "2029-01-15 09:00 UTC.")
    # The codes download as CSV, with the batch's part number, years, scope and cut-off (issue 16).
    batch = re.search(r'action="/issuer/my2n/vouchers/(\d+)/codes.csv"', r.text).group(1)
    shown = re.search(r'<input type="hidden" name="codes" value="([^"]+)">', r.text).group(1)
    download = client.post(f"/issuer/my2n/vouchers/{batch}/codes.csv", data={"codes": shown, "csrf_token": csrf})
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    rows = download.text.splitlines()
    assert rows[0] == "code,part_number,years,scope,valid_until" and [r.split(",")[0] for r in rows[1:]] == codes
    assert rows[1].split(",")[1:4] == ["9137958", "2", "apartment"]
    assert batch_count(world) == (before[0] + 1, before[1] + 1)
    # The same form posted again (a double click, a reload) mints nothing and shows no codes.
    r = mint(client, csrf, nonce)
    assert r.status_code == 200
    assert re.fullmatch(r"This form was already submitted: batch \d+ \(3 codes of 9137958\) was minted then, and "
                        r"its codes were shown once\. Nothing was minted twice\.", status_text(r.text))
    assert "minted-codes" not in r.text and codes[0] not in r.text
    assert batch_count(world) == (before[0] + 1, before[1] + 1)
    # The same nonce with other values is refused, and mints nothing either.
    r = mint(client, csrf, nonce, subscriptions="4")
    assert r.status_code == 422 and error_text(r.text).startswith("form_already_submitted")
    assert batch_count(world) == (before[0] + 1, before[1] + 1)
    rows = re.findall(r'<tr data-batch="\d+">(.*?)</tr>', r.text, re.S)
    # R-MY-5: the batch's codes by state (all three Active).
    assert len(rows) == 1 and ("Distributor 7 2 3 Apartment support@2n.example 2026-01-15 2029-01-15 09:00 UTC 3 0 0"
                               in text_of(rows[0]))

    # The codes are real: one activated on a site adds its 2 apartment-years to the pool.
    org = world.org("Residence", owner=world.user("ann@example.com"))
    with transaction(world.ctx.sessions) as s:
        site = my2n.create_site(s, org_id=org, name="Block A", actor=VENDOR, now=world.now)
        assert my2n.redeem_voucher(s, site=site, code=codes[0], actor=VENDOR, now=world.now)["pool"] == {
            "apartment_years": 2, "device_years": 0}


def test_voucher_batch_refusals_keep_the_form_and_mint_nothing(world, client):  # R-MY-5
    world.user("support@2n.example", issuer=True)
    sign_in(client, "support@2n.example")
    before = batch_count(world)
    for fields, (status, code) in (({"years": "11"}, (400, "years_invalid")),
                                   ({"scope": "building"}, (400, "voucher_scope_invalid")),
                                   ({"part_number": "91379040"}, (400, "sku_not_voucher")),  # an Access Commander part
                                   ({"subscriptions": "10001"}, (400, "count_invalid")),
                                   ({"nonce": ""}, (400, "form_expired"))):
        csrf, nonce = voucher_form(client)
        r = mint(client, csrf, fields.pop("nonce", nonce), **fields)
        assert r.status_code == status and error_text(r.text).startswith(code), (fields, r.text)
        assert 'value="Distributor 7"' in r.text  # the form is kept
    assert batch_count(world) == before
    # A US & APAC part, per device.
    csrf, nonce = voucher_form(client)
    r = mint(client, csrf, nonce, part_number="02683-001", scope="device", years="1", subscriptions="1")
    assert r.status_code == 200 and field(r.text, "minted-batch").startswith("Distributor 7: 1 device-year per code")


def test_only_the_issuer_mints_voucher_batches(world, client):  # R-MY-5
    world.org("Residence", owner=world.user("ann@example.com"))
    csrf = sign_in(client, "ann@example.com")
    r = client.get("/issuer/my2n/vouchers")
    assert r.status_code == 403 and "issuer_only" in r.text
    before = batch_count(world)
    r = mint(client, csrf, "a-nonce")
    assert r.status_code == 403 and "issuer_only" in r.text
    assert batch_count(world) == before


# --- CSRF and isolation --------------------------------------------------------------------------

def test_forms_need_the_csrf_token(world, client):
    _org, pages = owner_site(world, client)
    r = client.post(f"{pages.url}/apartments", data={"name": "X"}, headers=HTMX)
    assert r.status_code == 403 and "csrf_invalid" in r.text
    assert "Apartment X" not in pages.get("apartments")


def test_another_companys_site_is_not_found(world, client):  # R-MY-1
    _org, pages = owner_site(world, client)
    pages.apartment("Secret")
    world.org("Other", owner=world.user("bob@example.com"))
    bob = SitePages(client, sign_in(client, "bob@example.com"), pages.site_id)
    for tab in ("dashboard", "apartments", "vouchers", "payments", "people"):
        r = client.get(f"{bob.url}?tab={tab}")
        assert r.status_code == 404 and "site_not_found" in r.text and "Secret" not in r.text, tab
    r = client.get(f"{bob.url}/export.csv")
    assert r.status_code == 404 and "site_not_found" in r.text and "Secret" not in r.text
    for path, data in (("apartments", {"name": "X"}), ("devices", {"serial": "S", "kind": "phone"}),
                       ("devices/assign", {"serial": "S", "apartment": "Secret"}),
                       ("vouchers/redeem", {"code": "X"}), ("payments/recurring", {"recurring": "on"}),
                       ("roles", {"email": "bob@example.com", "role": "site_admin"}),
                       ("roles/revoke", {"user_id": "1"})):
        r = bob.post(path, data)
        assert r.status_code == 404 and "site_not_found" in r.text, path
    r = bob.import_csv(csv_text("Secret2,,,"))
    assert r.status_code == 404 and "site_not_found" in r.text
    assert 'data-site="Block A"' not in client.get("/my2n").text
