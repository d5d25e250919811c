"""Hardening (issue 15): big batches on every database (point 4), control characters refused in
names and serials, and CSV exports safe to open (point 8)."""

from __future__ import annotations

import csv
import io
import itertools
import re
import time
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs
from typer.testing import CliRunner

from conftest import World, auth
from entitle import db, text
from entitle.access_commander import services as ac
from entitle.actors import operator
from entitle.api.app import create_app
from entitle.axis import services as axis
from entitle.catalog import services as catalog
from entitle.cli.main import app as cli_app
from entitle.delivery import webhooks
from entitle.errors import EntitleError
from entitle.keys import services as keys
from entitle.my2n import csvio
from entitle.my2n import services as my2n
from entitle.tenancy import services as tenancy
from helpers import org_with_owner, person
from test_web import HTMX, sign_in
from test_web_ac import error_text

API = "/api/v1"
P = "axis-camera-station"


# --- point 4: statements built from a caller's list are chunked -------------------------------------

def test_chunks_cut_a_list_in_order_into_bounded_pieces():
    assert list(db.chunks(range(7), 3)) == [[0, 1, 2], [3, 4, 5], [6]]
    assert list(db.chunks([], 3)) == []
    assert list(db.chunks(iter("abcd"), 2)) == [["a", "b"], ["c", "d"]]
    # By default a piece binds at most BIND_VALUES parameters, one per column of an item.
    assert [len(c) for c in db.chunks(range(25_000))] == [10_000, 10_000, 5_000]
    assert max(len(c) for c in db.chunks(range(25_000), columns=7)) * 7 <= db.BIND_VALUES
    assert db.BIND_VALUES * 2 < 32_766 < 65_535  # well under SQLite's and PostgreSQL's limits
    with pytest.raises(ValueError):
        list(db.chunks([1], 0))


@pytest.mark.slow
def test_an_axis_batch_at_the_schemas_maximum_works_and_is_refused_whole_when_repeated(client, world):
    # R-AX-8 at the schema's maximum: 100,000 devices in one call (past PostgreSQL's 65,535 bind
    # parameters for one IN list), added, counted, refused as a whole when sent again, removed.
    org, owner = org_with_owner(world, "Cams", "owner@example.com")
    base = f"{API}/orgs/{org}/axis"
    r = client.post(f"{base}/systems", json={"uid": "ACS-BIG", "name": "HQ", "product": P}, headers=auth(owner.token))
    assert r.status_code == 201, r.text
    system_id = r.json()["id"]
    serials = [f"ACCC8E{n:06d}" for n in range(100_000)]
    body = {"devices": [{"serial": s, "license_type": "core"} for s in serials]}

    started = time.perf_counter()
    r = client.post(f"{base}/systems/{system_id}/devices", json=body, headers=auth(owner.token))
    added = time.perf_counter() - started
    assert r.status_code == 201, r.text[:500]
    assert r.json()["added"] == 100_000

    r = client.get(f"{base}/systems/{system_id}", headers=auth(owner.token))
    assert r.status_code == 200 and r.json()["devices"] == {"core": 100_000}, r.text[:500]

    # The same batch again: every serial is taken, found across all chunks of the lookup.
    r = client.post(f"{base}/systems/{system_id}/devices", json=body, headers=auth(owner.token))
    assert r.status_code == 409 and r.json()["error"]["code"] == "device_exists", r.text[:500]
    assert r.json()["error"]["detail"]["count"] == 100_000

    started = time.perf_counter()
    r = client.post(f"{base}/systems/{system_id}/devices/remove", json={"serials": serials},
                    headers=auth(owner.token))
    removed = time.perf_counter() - started
    assert r.status_code == 200 and r.json()["removed"] == 100_000, r.text[:500]
    print(f"100,000 devices: added in {added:.1f} s, removed in {removed:.1f} s")


def test_a_statement_past_the_databases_limit_would_answer_the_error_shape_with_a_request_id(ctx, world, monkeypatch):
    # What 65,534+ devices did on PostgreSQL before chunking, now as the error shape: a JSON 500
    # with a request id that the log line carries too, never a plain-text 500.
    if ctx.engine.dialect.name != "postgresql":
        pytest.skip("SQLite here allows 250,000 parameters per statement")
    monkeypatch.setattr(axis, "chunks", lambda items, size=None, columns=1: iter([list(items)]))
    org, owner = org_with_owner(world, "Cams", "owner@example.com")
    app = create_app(ctx=ctx)  # before capturing: it configures the logging
    with capture_logs() as logs, TestClient(app, raise_server_exceptions=False) as c:
        r = c.post(f"{API}/orgs/{org}/axis/systems", json={"uid": "ACS-1", "product": P}, headers=auth(owner.token))
        assert r.status_code == 201, r.text
        body = {"devices": [{"serial": f"CAM-{n}", "license_type": "core"} for n in range(70_000)]}
        r = c.post(f"{API}/orgs/{org}/axis/systems/{r.json()['id']}/devices", json=body, headers=auth(owner.token))
    assert r.status_code == 500 and r.headers["content-type"] == "application/json", r.text[:300]
    error = r.json()["error"]
    assert error["code"] == "internal_error"
    request_id = error["detail"]["request_id"]
    assert r.headers["X-Request-ID"] == request_id and request_id in error["message"]
    assert [e for e in logs if e["event"] == "request.failed" and e["request_id"] == request_id]


# --- point 8: names and serials are one line of visible text ------------------------------------------

REFUSED = {
    "\x00": "U+0000", "\t": "U+0009", "\n": "U+000A", "\r": "U+000D", "\x1b": "U+001B", "\x7f": "U+007F",
    "\x85": "U+0085", "\x9b": "U+009B", "\u2028": "U+2028", "\u2029": "U+2029", "\u202e": "U+202E",
    "\u202a": "U+202A", "\u2066": "U+2066", "\u2069": "U+2069", "\ud800": "U+D800",
}
# Names people write: accents, right-to-left scripts with their marks, emoji joined by U+200D.
ALLOWED = ["Zürich Süd", "O'Brien & Søn", "شقة ١", "דירה \u200f3", "👩\u200d💻 lab", "=A1", "  padded  "]


@pytest.mark.parametrize(("character", "code_point"), REFUSED.items())
def test_single_line_refuses_control_line_break_and_direction_characters(character, code_point):
    with pytest.raises(EntitleError) as refused:
        text.single_line(f"Block{character}A", "site name")
    error = refused.value
    assert (error.code, error.status) == ("text_control_characters", 422)
    assert error.detail == {"field": "name", "character": code_point, "position": 6}
    assert error.message.startswith("The site name holds ") and code_point in error.message


@pytest.mark.parametrize("value", ALLOWED)
def test_single_line_keeps_names_in_every_script(value):
    assert text.single_line(value, "name") == value
    assert re.fullmatch(text.SINGLE_LINE_PATTERN, value)


def test_the_openapi_pattern_says_what_the_check_refuses():
    # The documented pattern and the check agree on every character but the surrogates, which an
    # ECMA pattern cannot name (see entitle.text) and JSON can carry only as "\ud800" escapes.
    pattern = re.compile(text.SINGLE_LINE_PATTERN)
    for cp in itertools.chain(range(0xD800), range(0xE000, 0x10000), (0x1F600, 0x10FFFF)):
        c = chr(cp)
        assert (pattern.fullmatch(c) is None) == (text.control_character(c) is not None), hex(cp)


class Estate:
    """One organization (its owner's token), an issuer, and one of each thing that has a name."""

    def __init__(self, world: World, client: TestClient) -> None:
        self.client = client
        self.org, owner = org_with_owner(world, "Acme", "owner@example.com")
        self.owner = owner.token
        self.issuer = person(world, "vendor@example.com", issuer=True).token
        base = f"{API}/orgs/{self.org}"
        self.installation = self.ok("POST", f"{base}/ac/installations", {"name": "HQ"})["installation"]["id"]
        self.system = self.ok("POST", f"{base}/axis/systems", {"uid": "ACS-1", "product": P})["id"]
        self.site = self.ok("POST", f"{base}/sites", {"name": "Block A"})["id"]

    def call(self, method: str, path: str, body: Any, token: str | None = None) -> Any:
        return self.client.request(method, path, json=body,
                                   headers=auth(token or self.owner, f"idem-{time.monotonic_ns()}"))

    def ok(self, method: str, path: str, body: Any) -> Any:
        r = self.call(method, path, body)
        assert r.status_code in (200, 201), r.text
        return r.json()


# (what, path under /api/v1 (with {org}, {inst}, {system}, {site}), body with X where the text goes,
# issuer's token?)
NAMED: list[tuple[str, str, Callable[[str], Any], bool]] = [
    ("organization", "/orgs", lambda x: {"name": x}, False),
    ("token", "/auth/token", lambda x: {"email": "owner@example.com", "password": "correct horse battery",
                                        "name": x}, False),
    ("installation", "/orgs/{org}/ac/installations", lambda x: {"name": x}, False),
    ("installation id", "/orgs/{org}/ac/installations", lambda x: {"name": "HQ 2", "uid": x}, False),
    ("ac device", "/orgs/{org}/ac/installations/{inst}/devices", lambda x: {"serial": x, "type": "ip_intercom"}, False),
    ("ac device name", "/orgs/{org}/ac/installations/{inst}/devices",
     lambda x: {"serial": "D-1", "type": "ip_intercom", "name": x}, False),
    ("attendance user", "/orgs/{org}/ac/installations/{inst}/attendance-users", lambda x: {"name": x}, False),
    ("system user", "/orgs/{org}/ac/installations/{inst}/system-users", lambda x: {"name": x}, False),
    ("axis system", "/orgs/{org}/axis/systems", lambda x: {"uid": "ACS-2", "name": x, "product": P}, False),
    ("axis device", "/orgs/{org}/axis/systems/{system}/devices",
     lambda x: {"devices": [{"serial": "CAM-1", "license_type": "core"}, {"serial": x, "license_type": "core"}]},
     False),
    ("hardware", "/orgs/{org}/axis/hardware", lambda x: {"serial": x, "product": P, "license_type": "core"}, False),
    ("site", "/orgs/{org}/sites", lambda x: {"name": x}, False),
    ("apartment", "/orgs/{org}/sites/{site}/apartments", lambda x: {"name": x}, False),
    ("my2n device", "/orgs/{org}/sites/{site}/devices", lambda x: {"serial": x, "kind": "intercom"}, False),
    ("webhook", "/orgs/{org}/webhooks", lambda x: {"url": "https://example.com/hook", "description": x}, False),
    ("key batch", "/issuer/key-batches", lambda x: {"part_number": "91379040", "count": 1, "name": x}, True),
    ("voucher batch", "/issuer/voucher-batches", lambda x: {"part_number": "9137958", "subscriptions": 1,
                                                            "name": x}, True),
]


@pytest.mark.parametrize(("what", "path", "body", "as_issuer"), NAMED, ids=[n[0] for n in NAMED])
def test_every_name_and_serial_the_api_accepts_refuses_control_characters(client, world, what, path, body,
                                                                          as_issuer):
    estate = Estate(world, client)
    url = API + path.format(org=estate.org, inst=estate.installation, system=estate.system, site=estate.site)
    token = estate.issuer if as_issuer else None
    for character, code_point in [("\x00", "U+0000"), ("\t", "U+0009"), ("\x85", "U+0085"), ("\u202e", "U+202E")]:
        r = estate.call("POST", url, body(f"Name{character}1"), token)
        assert r.status_code == 422, (what, r.text)
        error = r.json()["error"]
        assert error["code"] == "text_control_characters" and error["message"], (what, error)
        assert error["detail"]["character"] == code_point and error["detail"]["position"] == 5, error
    r = estate.call("POST", url, body("Name ✓ 1"), token)  # the same without the character passes
    assert r.status_code in (200, 201), (what, r.text)


def test_the_openapi_document_shows_the_rule_on_names_and_serials(client):
    doc = client.get("/openapi.json").json()
    schemas = doc["components"]["schemas"]

    def pattern(schema: str, prop: str) -> str | None:
        found = schemas[schema]["properties"][prop]
        found = next((s for s in found.get("anyOf", []) if s.get("type") == "string"), found)
        return found.get("pattern")

    names = [(s, p) for s, p in [("OrgIn", "name"), ("TokenRequest", "name"), ("MintIn", "name"),
                                 ("SiteIn", "name"), ("ApartmentIn", "name"), ("InstallationIn", "name"),
                                 ("InstallationIn", "uid"), ("AttendanceIn", "name"), ("SystemUserIn", "name"),
                                 ("SystemIn", "uid"), ("SystemIn", "name"), ("HardwareIn", "serial"),
                                 ("VoucherBatchIn", "name"), ("EndpointIn", "description")]]
    assert {(s, p): pattern(s, p) for s, p in names} == dict.fromkeys(names, text.SINGLE_LINE_PATTERN)
    serial_schemas = [n for n, s in schemas.items() if n.startswith("DeviceIn") or n.endswith("__DeviceIn")]
    assert serial_schemas and all(pattern(n, "serial") == text.SINGLE_LINE_PATTERN for n in serial_schemas)


def test_the_services_refuse_them_for_the_cli_and_the_web_too(world):
    # The same rule below the API: what the CLI, the web forms and the CSV import call.
    ctx, now, bad = world.ctx, world.now, "Line\none"
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    actor = world.actor(ann)

    def refused(call: Callable[[Any], Any]) -> dict[str, Any]:
        with ctx.sessions() as s, pytest.raises(EntitleError) as exc:
            call(s)
        assert exc.value.code == "text_control_characters" and exc.value.status == 422, exc.value.to_dict()
        return exc.value.detail

    refused(lambda s: tenancy.create_organization(s, name=bad, region="EU", actor=operator(), now=now))
    assert refused(lambda s: tenancy.create_user(s, email="a\u202e@example.com", password="long enough pw",
                                                 now=now))["field"] == "email"
    refused(lambda s: tenancy.create_token(s, user=s.get(type(ann), ann.id), name=bad, now=now))
    refused(lambda s: ac.create_installation(s, org_id=org, name=bad, actor=actor, now=now))
    refused(lambda s: axis.register_system(s, org_id=org, uid="ACS-9", name=bad, product_code=P, actor=actor,
                                           now=now))
    refused(lambda s: my2n.create_site(s, org_id=org, name=bad, actor=actor, now=now))
    refused(lambda s: keys.mint(s, sku_part="91379040", quantity_per_key=1, count=1, name=bad, actor=operator(),
                                now=now))
    refused(lambda s: webhooks.create_endpoint(s, org_id=org, url="https://example.com/\u2028", event_types=[],
                                               actor=actor, now=now, key=ctx.secret))
    with ctx.sessions() as s:
        system = axis.register_system(s, org_id=org, uid="ACS-1", name="HQ", product_code=P, actor=actor, now=now)
        devices = [axis.NewDevice("CAM-1", "core"), axis.NewDevice("CAM-\x1b[2J", "core")]
        with pytest.raises(EntitleError) as exc:
            axis.add_devices(s, org_id=org, system_id=system.id, devices=devices, actor=actor, now=now)
        assert exc.value.detail["field"] == "devices.1.serial"
    # A catalog file names the product, the SKU and the field.
    with pytest.raises(EntitleError) as exc:
        catalog.parse_obj({"products": [{"code": "p", "name": "P\t1", "model": "axis", "skus": []}]})
    assert exc.value.code == "catalog_invalid"
    assert exc.value.detail["errors"][0]["at"] == "products.0.name"
    assert "U+0009" in exc.value.detail["errors"][0]["problem"]


def test_the_cli_refuses_them_with_the_code(ctx):
    r = CliRunner().invoke(cli_app, ["org", "create", "--name", "Acme\u202eevil", "--region", "EU", "--json",
                                 "--database-url", ctx.settings.database_url], prog_name="entitle")
    assert r.exit_code == 1 and r.stdout == ""
    assert '"text_control_characters"' in r.stderr and "U+202E" in r.stderr


def test_a_web_form_refuses_them_with_the_sentence(world, client):
    world.org("Residence", owner=world.user("ann@example.com"))
    csrf = sign_in(client, "ann@example.com")
    r = client.post("/my2n/sites", data={"csrf_token": csrf, "name": "Block\tA"}, headers=HTMX)
    assert r.status_code == 422
    assert error_text(r.text).startswith("text_control_characters The site name holds a tab (U+0009")


# --- point 8: the CSV import and export ----------------------------------------------------------------

def _site(world: World) -> tuple[Any, int, int]:
    """A company admin, the organization and its site."""
    ann = world.user("ann@example.com")
    org = world.org("Residence", owner=ann)
    actor = world.actor(ann)
    with world.ctx.sessions() as s, s.begin():
        return actor, org, my2n.create_site(s, org_id=org, name="Block A", actor=actor, now=world.now).id


def test_a_csv_row_with_a_control_character_gets_its_own_refusal(world):
    actor, org, site_id = _site(world)
    data = ("apartment,serial,kind,local_mode\r\n"
            "1A,PH-1,phone,false\r\n"
            "1A,\"PH\u202e2\",phone,false\r\n"   # row 3: a text-direction control
            "\"1\x85B\",PH-3,phone,false\r\n"    # row 4: a C1 control (NEL)
            "1C,PH-4,phone,false\r\n")
    with world.ctx.sessions() as s, pytest.raises(EntitleError) as exc:
        csvio.import_csv(s, site=my2n.get_site(s, org, site_id), data=data, actor=actor, now=world.now)
    rows = exc.value.detail["rows"]
    assert exc.value.code == "csv_invalid"
    assert [(p["row"], p["column"], p["code"], p["character"]) for p in rows] == [
        (3, "serial", "text_control_characters", "U+202E"), (4, "apartment", "text_control_characters", "U+0085")]
    assert all("one line of visible text" in p["message"] for p in rows)


def test_a_csv_export_opens_safely_in_a_spreadsheet_and_reads_back_the_same(world):
    # Cells a spreadsheet would run as formulas (= + - @) are written with a leading ', which the
    # import takes off again; the control bytes of the report cannot be stored in the first place.
    actor, org, site_id = _site(world)
    serials = ["=HYPERLINK(\"http://evil\")", "+1+1", "-2", "@SUM(A1)", "'quoted", "PH-1"]
    with world.ctx.sessions() as s, s.begin():
        site = my2n.get_site(s, org, site_id)
        apartment = my2n.create_apartment(s, site=site, name="=1A", actor=actor, now=world.now)
        for serial in serials[:4]:
            my2n.add_device(s, site=site, serial=serial, kind="phone", apartment_id=apartment.id, actor=actor,
                            now=world.now)
        for serial in serials[4:]:
            my2n.add_device(s, site=site, serial=serial, kind="intercom", actor=actor, now=world.now)
        with pytest.raises(EntitleError):
            my2n.add_device(s, site=site, serial="\x07\x08\x1b", kind="intercom", actor=actor, now=world.now)
    with world.ctx.sessions() as s:
        exported = csvio.export_csv(s, my2n.get_site(s, org, site_id), actor=actor)
    cells = [c for row in csv.reader(io.StringIO(exported)) for c in row[:2]]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@"))]
    assert not [c for c in cells if text.control_character(c)]
    assert {"'=1A", "'=HYPERLINK(\"http://evil\")", "'+1+1", "'-2", "'@SUM(A1)", "''quoted", "PH-1"} <= set(cells)
    rows = csvio.parse(exported)
    assert sorted(r.serial for r in rows) == sorted(serials) and {r.apartment for r in rows} == {"", "=1A"}
