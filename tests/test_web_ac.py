"""The Access Commander pages through their HTTP interface (SPEC §2, R-AC-1 … R-AC-8): the
installations list, each installation's License settings, their forms, CSRF, roles, isolation."""

from __future__ import annotations

import html
import re
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from conftest import World
from entitle.access_commander.models import AcLicense, Device, Installation
from entitle.db import transaction
from entitle.keys import services as keys
from entitle.tenancy.models import Role, User
from test_web import HTMX, sign_in, wallet_units


# --- helpers -----------------------------------------------------------------------------------

def text_of(page: str) -> str:
    """The page as a reader sees it: tags removed, entities decoded, spaces collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())


def content_of(page: str) -> str:
    """The <main> content (or the whole htmx fragment): no layout forms (switcher, sign-out)."""
    m = re.search(r'<main id="content"[^>]*>(.*)</main>', page, re.S)
    return m.group(1) if m else page


def row(page: str, serial: str) -> str:
    m = re.search(rf'<tr data-serial="{re.escape(serial)}">(.*?)</tr>', page, re.S)
    assert m, f"no row for {serial}"
    return m.group(1)


def device_state(page: str, serial: str) -> str:
    return text_of(re.search(r'<td class="state"[^>]*>(.*?)</td>', row(page, serial), re.S).group(1))


def nonce_of(page: str) -> str:
    m = re.search(r'name="nonce" value="([^"]+)"', page)
    assert m, "no license form on the page"
    return m.group(1)


def error_text(page: str) -> str:
    """The refusal on the page as "code sentence" (the page shows the sentence, then the code in
    small print: ``test_web.test_a_refusal_reads_sentence_first``)."""
    m = re.search(r'<p class="message error" role="alert">(.*?)</p>', page, re.S)
    assert m, "no error message on the page"
    shown = re.fullmatch(r'<span class="error-message">(.*?)</span> <small class="error-code">Code: <code>([^<]+)</code>'
                         r'</small>', m.group(1).strip(), re.S)
    if shown is None:  # a message written by its page itself
        return text_of(m.group(1))
    return f"{shown.group(2)} {text_of(shown.group(1))}"


class AcPage:
    """One installation's License settings, driven through the web forms as a signed-in user."""

    def __init__(self, client: TestClient, csrf: str, name: str = "Plant") -> None:
        self.client, self.csrf = client, csrf
        r = client.post("/ac/installations", data={"name": name, "csrf_token": csrf}, headers=HTMX)
        assert r.status_code == 200, r.text
        self.registered = r.text
        self.id = int(re.search(r'href="/ac/installations/(\d+)"', r.text).group(1))
        self.token = re.search(r'id="installation-token" readonly value="([^"]+)"', r.text).group(1)
        self.url = f"/ac/installations/{self.id}"

    def get(self) -> str:
        r = self.client.get(self.url)
        assert r.status_code == 200, r.text
        return r.text

    def post(self, path: str, data: dict[str, Any] | None = None, **kw: Any) -> Any:
        return self.client.post(f"{self.url}/{path}", data={"csrf_token": self.csrf, **(data or {})},
                                headers=HTMX, **kw)

    def add_device(self, serial: str, connected: bool = True, type: str = "ip_intercom") -> Any:
        data = {"serial": serial, "type": type}
        if connected:
            data["connected"] = "true"
        r = self.post("devices", data)
        assert r.status_code == 200, r.text
        return r

    def generate(self, device: str, quantities: dict[str, str] | None = None, nonce: str | None = None,
                 confirm: bool = True) -> Any:
        """Post the license form; ``confirm``: the preview's "Generate this license" button."""
        data: dict[str, Any] = {"license_device": device, "nonce": nonce or nonce_of(self.get())}
        if confirm:
            data["confirm"] = "yes"
        if quantities is not None:
            data["part_number"] = list(quantities)
            data["quantity"] = list(quantities.values())
        return self.post("licenses", data)

    def activate(self, serial: str) -> Any:
        return self.post("devices/activate", {"serial": serial})


def owner_page(world: World, client: TestClient, email: str = "ann@example.com") -> tuple[int, AcPage]:
    ann = world.user(email)
    org = world.org("Acme", owner=ann)
    return org, AcPage(client, sign_in(client, email))


def give(world: World, org: int, email: str, part: str, count: int = 1) -> None:
    """Redeem `count` fresh keys of `part` into the organization's wallet."""
    with world.ctx.sessions() as s:
        user = s.scalars(select(User).where(User.email == email)).one()
    for code in world.mint(part, count=count):
        with transaction(world.ctx.sessions) as s:
            keys.redeem(s, org_id=org, typed_key=code, actor=world.actor(user), now=world.now)


# --- installations -----------------------------------------------------------------------------

def test_register_an_installation_and_see_its_token_once(world, client):
    org, page = owner_page(world, client)
    assert 'href="/ac"' in client.get("/").text  # linked from the nav and the dashboard
    assert "shown once" in page.registered and page.token.startswith("eac_")
    listing = client.get("/ac").text
    assert 'data-installation="' in listing and "Plant" in listing and page.token not in listing
    # R-AC-2: it starts on the trial.
    assert re.search(r'data-installation="[^"]+">.*?Trial', listing, re.S)
    # The token is the installation's device-report credential.
    page.add_device("D-1", connected=False)
    r = client.post("/api/v1/ac/state", json={"serial": "D-1", "connected": True},
                    headers={"Authorization": f"Bearer {page.token}"})
    assert r.status_code == 200 and r.json()["connected"] is True
    assert "connected" == text_of(re.search(r'<td class="connected"[^>]*>(.*?)</td>', row(page.get(), "D-1")).group(1))
    # A refusal keeps the form and says why.
    r = client.post("/ac/installations", data={"name": "Dup", "uid": page_uid(world, page.id),
                                               "csrf_token": page.csrf}, headers=HTMX)
    assert r.status_code == 409 and "installation_exists" in r.text and 'value="Dup"' in r.text


def page_uid(world: World, installation_id: int) -> str:
    with world.ctx.sessions() as s:
        return s.get(Installation, installation_id).uid


def test_license_settings_trial_then_a_license_from_the_wallet(world, client):
    # R-AC-2 trial; R-AC-3 Active licenses required / owned and the date added; R-AC-4 the
    # license device S/N; units move from the wallet into the license.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    page.add_device("D-2")
    body = page.get()
    visible = text_of(content_of(body))
    assert "Active licenses" in visible and "License device S/N for license generation" in visible
    assert "Devices 2 / 1" in visible and "Attendance users 0 / 1" in visible
    assert 'data-state="trial"' in body and "No license added" in visible
    give(world, org, "ann@example.com", "91379040", count=2)
    give(world, org, "ann@example.com", "91379041")

    r = page.generate("LD-1", {"91379040": "2", "91379041": "1"})
    assert r.status_code == 200, r.text
    assert "<html" not in r.text  # htmx: only the content
    assert "License 1 is generated for the license device LD-1" in text_of(r.text)
    assert "-----BEGIN ENTITLE LICENSE FILE-----" in r.text
    assert wallet_units(world, org) == {"91379040": 0, "91379041": 0}

    body = page.get()
    visible = text_of(content_of(body))
    assert 'data-state="active"' in body
    assert "Devices 2 / 10" in visible and "Attendance users 0 / 25" in visible
    assert "License added: 2026-01-15 09:00 UTC" in visible
    assert "2 × 91379040 (Axis 01372-001), 1 × 91379041 (Axis 01373-001)" in visible
    assert 'data-field="license-serial">LD-1<' in body
    assert "license device" in text_of(row(body, "LD-1")) and "activate first" in text_of(row(body, "LD-1"))
    # The license file can be downloaded to import on the installation.
    f = client.get(re.search(r'href="(/ac/installations/\d+/licenses/\d+/file)"', body).group(1))
    assert f.status_code == 200 and f.text.startswith("-----BEGIN ENTITLE LICENSE FILE-----")
    assert "attachment" in f.headers["content-disposition"]


def test_activation_order_refusal_keeps_the_page(world, client):
    # R-AC-7: another device before the license device is refused with a message naming it.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    page.add_device("D-2")
    give(world, org, "ann@example.com", "91379040")
    assert page.generate("LD-1").status_code == 200

    r = page.activate("D-2")
    assert r.status_code == 409
    assert "license_device_first" in r.text and "LD-1" in error_text(r.text)
    assert "Activate the license device LD-1 first" in error_text(r.text)
    # The page is still there, with the error in the device list.
    assert 'id="devices"' in r.text and 'data-serial="D-2"' in r.text and "<html" not in r.text
    assert r.text.index('id="devices-heading"') < r.text.index("license_device_first")
    assert device_state(r.text, "D-2") == "inactive"

    # Without htmx the same form answers with the whole page.
    r = client.post(f"{page.url}/devices/activate", data={"serial": "LD-1", "csrf_token": page.csrf})
    assert r.status_code == 200 and "<html" in r.text and "Device LD-1 is active." in r.text
    r = page.activate("D-2")
    assert r.status_code == 200
    assert device_state(r.text, "LD-1") == "active" and device_state(r.text, "D-2") == "active"
    assert "Devices 2 / 5" in text_of(content_of(page.get()))
    recorded = client.get("/history").text
    assert "ac.license.added" in recorded and "ac.device.activated" in recorded
    # Deactivating works, and the button changes back.
    r = page.post("devices/deactivate", {"serial": "D-2"})
    assert r.status_code == 200 and device_state(r.text, "D-2") == "inactive"
    assert 'aria-label="Activate D-2"' in r.text


def test_device_limit_on_the_trial(world, client):
    # R-AC-2, R-AC-8: the trial owns one device; the second is refused, the first stays active.
    _org, page = owner_page(world, client)
    page.add_device("D-1")
    page.add_device("D-2")
    assert page.activate("D-1").status_code == 200
    r = page.activate("D-2")
    assert r.status_code == 409 and "device_limit_reached" in r.text
    assert "owns 1 device and 1 is active" in error_text(r.text)  # the plural right
    assert device_state(r.text, "D-1") == "active"


def test_a_reposted_license_form_does_not_generate_twice(world, client):
    # R-CORE-5 / R-AC-3: the form's nonce is the idempotency key.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040", count=2)
    nonce = nonce_of(page.get())
    first = page.generate("LD-1", {"91379040": "1"}, nonce=nonce)
    again = page.generate("LD-1", {"91379040": "1"}, nonce=nonce)
    assert first.status_code == again.status_code == 200
    assert "already submitted" in text_of(again.text) and "Nothing was generated twice" in text_of(again.text)
    assert wallet_units(world, org) == {"91379040": 1}
    with world.ctx.sessions() as s:
        assert len(s.scalars(select(AcLicense)).all()) == 1
    other = page.generate("LD-1", {"91379040": "2"}, nonce=nonce)
    assert other.status_code == 422 and "form_already_submitted" in other.text
    missing = page.post("licenses", {"license_device": "LD-1", "nonce": ""})
    assert missing.status_code == 400 and "form_expired" in missing.text
    # A page's fresh nonce generates again (replacing the license, R-AC-3).
    assert "License 2 is generated" in text_of(page.generate("LD-1", {"91379040": "2"}).text)
    assert wallet_units(world, org) == {"91379040": 0}


def test_license_package_fields_and_refusals(world, client):
    # R-AC-3, R-AC-4: explicit quantities; refusals shown in "License adding", form kept.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    page.add_device("OFF", connected=False)
    give(world, org, "ann@example.com", "91379040", count=2)
    body = page.get()
    assert '<option value="OFF" disabled' in body  # only connected devices can be license devices
    # The default: what 2 registered devices need (1 package), not the wallet's 2 units.
    assert 'placeholder="1"' in row_of_part(body, "91379040")

    r = page.generate("LD-1", {"91379040": "3", "91379041": ""})
    assert r.status_code == 409 and "insufficient_units" in r.text
    where = r.text.index("insufficient_units")
    assert r.text.index('id="adding-heading"') < where < r.text.index('id="devices-heading"')
    assert 'value="3"' in row_of_part(r.text, "91379040")  # the typed quantity stays
    r = page.generate("LD-1", {"91379040": "x"})
    assert r.status_code == 400 and "quantity_invalid" in r.text
    r = page.generate("OFF")
    assert r.status_code == 409 and "license_device_not_connected" in r.text
    r = page.generate("LD-1", {"91379040": "0"})
    assert r.status_code == 400 and "license_packages_empty" in r.text
    assert wallet_units(world, org) == {"91379040": 2}

    r = page.generate("LD-1", {"91379040": "1"})
    assert r.status_code == 200
    assert "Devices 2 / 5" in text_of(content_of(page.get()))
    assert wallet_units(world, org) == {"91379040": 1}


def row_of_part(page: str, part: str) -> str:
    m = re.search(rf'<tr data-part="{part}">(.*?)</tr>', page, re.S)
    assert m, f"no row for {part}"
    return m.group(1)


def test_protective_period_and_suspension_in_the_license_detail(world, client):
    # R-AC-5: the detail shows the protective period's end (date and time); R-AC-6: suspended,
    # every device inactive, recovered by reconnecting and activating the license device.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    page.add_device("D-2")
    give(world, org, "ann@example.com", "91379040")
    page.generate("LD-1")
    page.activate("LD-1")
    page.activate("D-2")
    world.ctx.clock.advance(timedelta(minutes=4))
    page.post("devices/state", {"serial": "LD-1", "connected": "true"})  # a heartbeat at 09:04
    world.ctx.clock.advance(timedelta(minutes=1))
    r = page.post("devices/state", {"serial": "LD-1", "connected": "false"})
    assert r.status_code == 200 and "Device LD-1 is reported disconnected." in r.text
    body = page.get()
    assert 'data-state="protective"' in body
    visible = text_of(content_of(body))
    # Connected 4 min (< 24 h, up to the last evidence at 09:04) -> 1 day of protective period.
    assert "The license expires at 2026-01-16 09:04:00 UTC" in visible
    assert re.search(r'data-field="protective-until">2026-01-16 09:04:00 UTC<', body)
    assert re.search(r'data-field="connected-time">4 min<', body)
    assert re.search(r'data-field="disconnected-at">2026-01-15 09:04:00 UTC<', body)

    world.ctx.clock.advance(timedelta(days=1))
    page.csrf = sign_in(client, "ann@example.com")  # the web session expired meanwhile
    body = page.get()
    assert 'data-state="suspended"' in body
    assert device_state(body, "LD-1") == "inactive (license suspended)"
    assert device_state(body, "D-2") == "inactive (license suspended)"
    r = page.activate("D-2")
    assert r.status_code == 409 and "license_suspended" in r.text
    r = page.activate("LD-1")
    assert r.status_code == 409 and "license_device_not_connected" in r.text
    page.post("devices/state", {"serial": "LD-1", "connected": "true"})
    r = page.activate("LD-1")
    assert r.status_code == 200 and "the license is recovered" in r.text
    assert 'data-state="active"' in r.text
    assert device_state(r.text, "LD-1") == "active" and device_state(r.text, "D-2") == "active"


def test_attendance_users_and_integration(world, client):
    # R-AC-8: beyond the owned Attendance users, or LDAP/CSV without integration: refused.
    org, page = owner_page(world, client)
    r = page.post("attendance-users", {"name": "Ann", "monitored": "true"})
    ann = re.search(r'<tr data-user="Ann">(.*?)</tr>', r.text, re.S).group(1)
    assert r.status_code == 200 and text_of(ann).startswith("Ann monitored")
    r = page.post("attendance-users", {"name": "Bob", "monitored": "true"})
    assert r.status_code == 409 and "attendance_limit_reached" in r.text
    assert 'value="Bob"' in r.text  # the form keeps what was typed
    assert page.post("attendance-users", {"name": "Bob"}).status_code == 200
    bob = re.search(r'<tr data-user="Bob">(.*?)</tr>', page.get(), re.S).group(1)
    bob_id = re.search(r'name="user_id" value="(\d+)"', bob).group(1)
    r = page.post("attendance-users/monitor", {"user_id": bob_id, "monitored": "true"})
    assert r.status_code == 409 and "attendance_limit_reached" in r.text
    ann = re.search(r'<tr data-user="Ann">(.*?)</tr>', r.text, re.S).group(1)
    ann_id = re.search(r'name="user_id" value="(\d+)"', ann).group(1)
    assert page.post("attendance-users/monitor", {"user_id": ann_id, "monitored": "false"}).status_code == 200
    r = page.post("attendance-users/monitor", {"user_id": bob_id, "monitored": "true"})
    assert r.status_code == 200 and "Bob's attendance is monitored" in text_of(r.text)

    r = page.post("sync", {"source": "ldap"})
    assert r.status_code == 409 and "integration_not_licensed" in r.text
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379042")
    page.generate("LD-1", {"91379042": "1"})
    r = page.post("sync", {"source": "csv"})
    assert r.status_code == 200 and "CSV synchronisation is allowed" in r.text


def test_ordering_calculator(world, client):
    # R-AC-1: 17 devices -> 4 x 91379040; 69 users -> 3 x 91379041; and the smallest tier.
    _org, page = owner_page(world, client)
    assert 'id="calc-heading"' in page.get() and 'action="/ac/calculate"' in page.get()
    r = client.get("/ac/calculate", params={"devices": 17, "attendance_users": 69}, headers=HTMX)
    assert r.status_code == 200 and "<html" not in r.text
    assert text_of(row_of_part(r.text, "91379040")).endswith("4")
    assert text_of(row_of_part(r.text, "91379041")).endswith("3")
    assert "20 devices, 75 Attendance users" in text_of(r.text)
    assert "Access Commander Advanced" in text_of(r.text)
    full = client.get("/ac/calculate", params={"devices": 3, "integration": "true"})
    assert full.status_code == 200 and "<html" in full.text
    assert text_of(row_of_part(full.text, "91379042")).endswith("1")
    trial = client.get("/ac/calculate", params={"devices": 1}, headers=HTMX)
    assert "nothing to order" in text_of(trial.text)
    bad = client.get("/ac/calculate", params={"devices": -1}, headers=HTMX)
    assert bad.status_code == 400 and "need_invalid" in bad.text


def test_check_a_license_file(world, client):
    # "License adding" with a file from disk: checked against the key ring and the installation.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040", count=2)
    page.generate("LD-1", {"91379040": "1"})
    link = re.search(r'href="(/ac/installations/\d+/licenses/\d+/file)"', page.get()).group(1)
    first = client.get(link).text
    r = page.post("licenses/check", files={"license_file": ("ac.lic", first.encode(), "text/plain")})
    assert r.status_code == 200, r.text
    assert "The license file is valid" in text_of(r.text) and "license device LD-1" in text_of(r.text)
    garbage = page.post("licenses/check", files={"license_file": ("x.lic", b"hello", "text/plain")})
    assert garbage.status_code == 400 and "license_malformed" in garbage.text
    page.generate("LD-1", {"91379040": "2"})
    replaced = page.post("licenses/check", files={"license_file": ("ac.lic", first.encode(), "text/plain")})
    assert replaced.status_code == 409 and "license_replaced" in replaced.text


# --- CSRF, roles, isolation --------------------------------------------------------------------

def test_every_form_needs_the_csrf_token(world, client):
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040")
    nonce = nonce_of(page.get())
    posts = [("/ac/installations", {"name": "X"}),
             (f"{page.url}/devices", {"serial": "D-9", "connected": "true"}),
             (f"{page.url}/devices/state", {"serial": "LD-1", "connected": "false"}),
             (f"{page.url}/devices/activate", {"serial": "LD-1"}),
             (f"{page.url}/devices/deactivate", {"serial": "LD-1"}),
             (f"{page.url}/licenses", {"license_device": "LD-1", "nonce": nonce}),
             (f"{page.url}/attendance-users", {"name": "Ann"}),
             (f"{page.url}/sync", {"source": "ldap"})]
    for path, data in posts:
        for token in (None, "forged"):
            sent = {**data, **({"csrf_token": token} if token else {})}
            r = client.post(path, data=sent, headers=HTMX)
            assert r.status_code == 403 and "csrf_invalid" in r.text, path
    r = client.post(f"{page.url}/licenses/check", data={"csrf_token": "forged"},
                    files={"license_file": ("a.lic", b"x", "text/plain")})
    assert r.status_code == 403 and "csrf_invalid" in r.text
    with world.ctx.sessions() as s:
        assert len(s.scalars(select(Installation)).all()) == 1
        assert [d.serial for d in s.scalars(select(Device))] == ["LD-1"]
        assert s.scalars(select(Device.active)).all() == [False]
        assert s.scalars(select(AcLicense)).all() == []
    assert wallet_units(world, org) == {"91379040": 1}
    assert 'data-state="trial"' in page.get()


def test_viewers_see_everything_read_only(world, client):
    # R-CORE-2; R-AC-6 "only administrators may change the license".
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    page.post("attendance-users", {"name": "Ann", "monitored": "true"})
    give(world, org, "ann@example.com", "91379040")
    page.generate("LD-1", {"91379040": "1"})
    vic = world.user("vic@example.com")
    world.member(org, vic, Role.viewer)
    client.cookies.clear()
    csrf = sign_in(client, "vic@example.com")

    listing = content_of(client.get("/ac").text)
    assert "Plant" in listing and 'method="post"' not in listing and "Register an installation" not in listing
    body = content_of(page.get())
    visible = text_of(body)
    assert "Active licenses" in visible and "Devices 1 / 5" in visible and 'data-serial="LD-1"' in body
    assert "Ann" in visible and 'data-field="license-serial">LD-1<' in body
    assert 'method="post"' not in body and "<button" in body  # only the calculator's GET form
    assert 'name="nonce"' not in body and 'name="license_file"' not in body
    for path, data in (("devices/activate", {"serial": "LD-1"}),
                       ("devices", {"serial": "D-2"}),
                       ("licenses", {"license_device": "LD-1", "nonce": "n-1"}),
                       ("attendance-users", {"name": "Bob"})):
        r = client.post(f"{page.url}/{path}", data={**data, "csrf_token": csrf}, headers=HTMX)
        assert r.status_code == 403 and "role_insufficient" in r.text, path
    r = client.post("/ac/installations", data={"name": "Mine", "csrf_token": csrf})
    assert r.status_code == 403 and "role_insufficient" in r.text
    with world.ctx.sessions() as s:
        assert s.scalars(select(Device.active)).all() == [False]
        assert len(s.scalars(select(AcLicense)).all()) == 1
    # Reading is allowed: the calculator and the license file.
    assert client.get("/ac/calculate", params={"devices": 17}).status_code == 200


def test_another_organizations_installation_is_not_found(world, client):
    # R-CORE-1: another organization's installation looks exactly like one that does not exist.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040")
    page.generate("LD-1", {"91379040": "1"})
    with world.ctx.sessions() as s:
        lic_id = s.scalars(select(AcLicense.id)).one()
    zed = world.user("zed@example.com")
    world.org("Zed Corp", owner=zed)
    client.cookies.clear()
    csrf = sign_in(client, "zed@example.com")
    assert "Plant" not in client.get("/ac").text
    for url in (page.url, f"{page.url}/licenses/{lic_id}/file", f"/ac/installations/{page.id + 1000}"):
        r = client.get(url)
        assert r.status_code == 404 and "installation_not_found" in r.text and "Plant" not in r.text, url
    r = client.post(f"{page.url}/devices/activate", data={"serial": "LD-1", "csrf_token": csrf})
    assert r.status_code == 404 and "installation_not_found" in r.text
    r = client.post(f"{page.url}/licenses", data={"license_device": "LD-1", "nonce": "zed-1", "csrf_token": csrf})
    assert r.status_code == 404 and "installation_not_found" in r.text
    with world.ctx.sessions() as s:
        assert s.scalars(select(Device.active)).all() == [False]


def test_the_org_switcher_on_an_installation_goes_back_to_the_list(world, client):
    # R-CORE-1: an installation belongs to one organization; switching from its page lands on the
    # other organization's list, where the installation is not found.
    org, page = owner_page(world, client)
    with world.ctx.sessions() as s:
        ann = s.scalars(select(User).where(User.email == "ann@example.com")).one()
    beta = world.org("Beta Ltd")
    world.member(beta, ann, Role.admin)
    body = page.get()
    assert '<input type="hidden" name="next" value="/ac">' in body
    r = client.post("/ui/org", data={"org_id": beta, "csrf_token": page.csrf, "next": "/ac"}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/ac"
    listing = client.get("/ac").text
    assert "Beta Ltd" in listing and "No Access Commander installations yet." in listing
    assert client.get(page.url).status_code == 404


# --- issue 13 -----------------------------------------------------------------------------------

def test_a_license_is_previewed_before_it_is_generated(world, client):
    # R-AC-1, R-AC-3: the default is what the installation needs (6 devices: 2 × 91379040), not
    # the wallet's 40 units; the preview shows what moves and changes nothing until confirmed.
    org, page = owner_page(world, client)
    for serial in ("LD-1", "D-2", "D-3", "D-4", "D-5", "D-6"):
        page.add_device(serial)
    give(world, org, "ann@example.com", "91379040", count=40)
    nonce = nonce_of(page.get())
    r = page.generate("LD-1", nonce=nonce, confirm=False)
    assert r.status_code == 200, r.text
    preview = re.search(r'data-field="preview">(.*?)</form>', r.text, re.S).group(1)
    visible = text_of(preview)
    assert "6 registered devices, 0 monitored Attendance users" in visible
    assert "The new license owns 10 devices and 1 Attendance user" in visible
    assert text_of(re.search(r'<tr data-move="91379040">(.*?)</tr>', preview, re.S).group(1)) == \
        "91379040 (Axis 01372-001) 0 2 40 38"
    assert wallet_units(world, org) == {"91379040": 40}
    with world.ctx.sessions() as s:
        assert s.scalars(select(AcLicense)).all() == []
    assert 'name="confirm" value="yes"' in preview and "Generate this license" in preview
    confirm_nonce = re.search(r'name="nonce" value="([^"]+)"', preview).group(1)
    r = page.generate("LD-1", nonce=confirm_nonce)
    assert r.status_code == 200 and "License 1 is generated" in text_of(r.text)
    assert wallet_units(world, org) == {"91379040": 38}
    # R-AC-4: a device that is not connected is refused at the preview already.
    page.add_device("OFF", connected=False)
    r = page.generate("OFF", confirm=False)
    assert r.status_code == 409 and "license_device_not_connected" in r.text


def test_a_suspended_license_shows_what_it_owns_and_how_to_recover(world, client):
    # R-AC-3, R-AC-6: Active licenses keeps required / owned from the license's grants.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040", count=2)
    page.generate("LD-1", {"91379040": "2"})
    page.activate("LD-1")
    page.post("devices/state", {"serial": "LD-1", "connected": "false"})
    world.ctx.clock.advance(timedelta(days=1))
    page.csrf = sign_in(client, "ann@example.com")
    body = page.get()
    visible = text_of(content_of(body))
    assert 'data-state="suspended"' in body
    assert "Devices 1 / 10 0 active (all devices inactive)" in visible
    assert "The license still owns 10 devices and 1 Attendance user" in visible
    assert text_of(re.search(r'data-field="next-step">(.*?)</p>', body, re.S).group(1)) == (
        "All devices are inactive. To recover, connect the license device LD-1 and activate it, or add a new "
        "license generated for another connected device.")


def test_add_a_license_file_from_disk(world, client):
    # R-AC-3, R-AC-4: "License adding" from a file; the current one changes nothing, an older one
    # and another installation's are refused, each with its code.
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040", count=3)
    page.generate("LD-1", {"91379040": "1"})
    link = re.search(r'href="(/ac/installations/\d+/licenses/\d+/file)"', page.get()).group(1)
    first = client.get(link).text
    world.ctx.clock.advance(timedelta(seconds=1))
    page.generate("LD-1", {"91379040": "2"})
    body = page.get()
    assert 'action="/ac/installations/%d/licenses/file"' % page.id in body and 'for="license-add-input"' in body
    second = client.get(re.search(r'href="(/ac/installations/\d+/licenses/\d+/file)"', body).group(1)).text

    def add(text: str) -> Any:
        return page.post("licenses/file", files={"license_file": ("ac.lic", text.encode(), "text/plain")})

    r = add(second)
    assert r.status_code == 200 and "already the current license" in text_of(r.text)
    r = add(first)
    assert r.status_code == 409 and "license_replaced" in r.text
    assert r.text.index('id="adding-heading"') < r.text.index("license_replaced") < r.text.index('id="devices-heading"')
    other = AcPage(client, page.csrf, "Other")
    other.add_device("LD-9")
    r = client.post(f"{other.url}/licenses/file", data={"csrf_token": page.csrf}, headers=HTMX,
                    files={"license_file": ("ac.lic", second.encode(), "text/plain")})
    assert r.status_code == 400 and "license_not_for_this_system" in r.text
    r = add("")
    assert r.status_code == 400 and "license_file_empty" in r.text
    assert wallet_units(world, org) == {"91379040": 1}


def test_the_calculator_shows_the_axis_part_numbers(world, client):
    # R-AC-1: each package under both its part numbers.
    _org, page = owner_page(world, client)
    r = client.get("/ac/calculate", params={"devices": 6, "attendance_users": 1, "integration": "true"}, headers=HTMX)
    assert text_of(row_of_part(r.text, "91379040")).startswith("91379040 01372-001")
    assert text_of(row_of_part(r.text, "91379042")).startswith("91379042 01374-001")
    assert "For 6 devices, 1 Attendance user and integration" in text_of(r.text)
    assert "These packages give 10 devices, 1 Attendance user and the integration feature" in text_of(r.text)


def test_after_a_license_the_page_and_the_device_list_agree_on_the_license_device(world, client):
    # Issue 16 point 6: generating the license is the license device's evidence of connection, for
    # the license and the device list alike, so that neither says "connected" while the other says
    # "disconnected" (before, the license said connected for up to five minutes after the device list
    # had turned to disconnected).
    org, page = owner_page(world, client)
    page.add_device("LD-1")
    give(world, org, "ann@example.com", "91379040")
    world.ctx.clock.advance(timedelta(minutes=4))  # LD-1 was heard 4 min ago: still connected
    r = page.generate("LD-1", {"91379040": "1"})
    assert r.status_code == 200, text_of(content_of(r.text))
    world.ctx.clock.advance(timedelta(minutes=3))  # 7 min after the device's last heartbeat
    body = page.get()
    connected = text_of(re.search(r'<td class="connected"[^>]*>(.*?)</td>', row(body, "LD-1"), re.S).group(1))
    assert 'data-state="active"' in body and "the license device LD-1 is connected" in text_of(body)
    assert connected == "connected"
    world.ctx.clock.advance(timedelta(minutes=3))  # 6 min after the license: nothing heard since
    body = page.get()
    connected = text_of(re.search(r'<td class="connected"[^>]*>(.*?)</td>', row(body, "LD-1"), re.S).group(1))
    assert 'data-state="protective"' in body and connected == "disconnected"
