"""A site's apartments and devices as CSV (issue 6): export, import all or nothing with per-row
errors, the four-paid-device limit counted over the file and the site (R-MY-2), hundreds of
apartments at a bounded cost per row; and the two API routes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, select

from conftest import World, auth
from entitle.actors import Actor, operator
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.history.models import HistoryEntry
from entitle.my2n import csvio
from entitle.my2n import board
from entitle.my2n import services as my2n
from entitle.my2n.models import Apartment, SiteDevice
from entitle.tenancy.models import Role
from helpers import Member, join, org_with_owner

HEADER = "apartment,serial,kind,local_mode\r\n"


class Company:
    """An organization with its owner (a company admin) and its sites, through the services."""

    def __init__(self, world: World, name: str = "Residence", email: str = "owner@example.com") -> None:
        self.world = world
        self.org, self.owner = org_with_owner(world, name, email)
        self.actor = world.actor(self.owner.user)

    def site(self, name: str = "Block A", *, model: str = "apartment") -> int:
        with transaction(self.world.ctx.sessions) as s:
            if model == "custom":
                site = my2n.create_site(s, org_id=self.org, name=name, model="custom", actor=operator("2n-support"),
                                        custom_expires_at=self.world.now + timedelta(days=60), now=self.world.now)
            else:
                site = my2n.create_site(s, org_id=self.org, name=name, actor=self.actor, now=self.world.now)
            return site.id

    def build(self, site_id: int, apartments: list[str], devices: list[tuple[str, str, str | None, bool]]) -> None:
        """Apartments by name, then devices (serial, kind, apartment name or None, local mode)."""
        with transaction(self.world.ctx.sessions) as s:
            site = my2n.get_site(s, self.org, site_id)
            ids = {n: my2n.create_apartment(s, site=site, name=n, actor=self.actor, now=self.world.now).id
                   for n in apartments}
            for serial, kind, apt, local in devices:
                my2n.add_device(s, site=site, serial=serial, kind=kind, apartment_id=ids[apt] if apt else None,
                                local_mode=local, actor=self.actor, now=self.world.now)

    def export(self, site_id: int) -> str:
        with transaction(self.world.ctx.sessions) as s:
            return csvio.export_csv(s, my2n.get_site(s, self.org, site_id), actor=self.actor)

    def load(self, site_id: int, data: str | bytes, actor: Actor | None = None, **kw: Any) -> dict[str, Any]:
        with transaction(self.world.ctx.sessions) as s:
            return csvio.import_csv(s, site=my2n.get_site(s, self.org, site_id), data=data,
                                    actor=actor or self.actor, now=self.world.now, **kw)

    def refused(self, site_id: int, data: str | bytes, actor: Actor | None = None) -> EntitleError:
        """The import is refused and the database is as it was, history included."""
        before = (self.state(site_id), self.history())
        with pytest.raises(EntitleError) as exc:
            self.load(site_id, data, actor)
        assert exc.value.message and (self.state(site_id), self.history()) == before
        return exc.value

    def problems(self, site_id: int, data: str | bytes) -> list[tuple[int | None, str | None, str]]:
        exc = self.refused(site_id, data)
        assert exc.code == "csv_invalid" and exc.status == 422, exc.to_dict()
        assert all(p["message"] for p in exc.detail["rows"])
        assert exc.detail["problems"] == len(exc.detail["rows"])
        return [(p["row"], p["column"], p["code"]) for p in exc.detail["rows"]]

    def state(self, site_id: int) -> tuple[list[str], list[tuple[str, str, str | None, bool]]]:
        """The site's apartments (names) and devices (serial, kind, apartment name, local mode)."""
        with self.world.ctx.sessions() as s:
            site = my2n.get_site(s, self.org, site_id)
            names = {a.id: a.name for a in my2n.apartments_of(s, site)}
            devices = [(d.serial, d.kind, names.get(d.apartment_id) if d.apartment_id else None, d.local_mode)
                       for d in my2n.devices_of(s, site)]
        return sorted(names.values()), devices

    def history(self) -> list[str]:
        with self.world.ctx.sessions() as s:
            return list(s.scalars(select(HistoryEntry.action).where(HistoryEntry.org_id == self.org)
                                  .order_by(HistoryEntry.seq)))


def rows(*lines: str) -> str:
    return HEADER + "".join(line + "\r\n" for line in lines)


# --- export --------------------------------------------------------------------------------------

def test_export_writes_a_row_per_device_and_one_per_empty_apartment(world: World) -> None:
    co = Company(world)
    site = co.site()
    co.build(site, ["1A", "1B", "2A"], [("IC-1", "intercom", None, False), ("PH-1", "phone", "1A", False),
                                        ("AU-1", "answering_unit", "1A", False), ("TAB-1", "tablet", "2A", True),
                                        ("LOOSE", "third_party", None, False)])
    assert co.export(site) == rows(
        ",IC-1,intercom,false",  # outside every apartment first, by serial
        ",LOOSE,third_party,false",
        "1A,AU-1,answering_unit,false",  # then the apartments as created, their devices by serial
        "1A,PH-1,phone,false",
        "1B,,,",  # an apartment without devices
        "2A,TAB-1,tablet,true",
    )


def test_an_empty_site_exports_the_header_only(world: World) -> None:
    co = Company(world)
    assert co.export(co.site()) == HEADER


def test_export_then_import_into_an_empty_site_gives_the_same_data(world: World) -> None:
    co = Company(world)
    # Into another company's site: within one company a serial is on one site at a time (issue 14).
    other = Company(world, "Elsewhere", "other@example.com")
    a, b = co.site("Block A"), other.site("Block B")
    co.build(a, ["1A", "1B", "Penthouse, north", '2 "C"', "=SUM(A1)", "-1", "'quoted", "empty"],
             [("IC-1", "intercom", None, False), ("IC-2", "intercom", None, False),
              ("PH-1", "phone", "1A", False), ("PH-2", "phone", "1A", True), ("TAB-1", "tablet", "1A", False),
              ("3P-1", "third_party", "1A", False), ("AU-1", "answering_unit", "1A", False),
              ("AU-2", "answering_unit", "1B", False), ("PH-3", "phone", "Penthouse, north", True),
              ("+420 TAB", "tablet", '2 "C"', False), ("@ph", "phone", "=SUM(A1)", False),
              ("PH-4", "phone", "-1", False), ("PH-5", "phone", "'quoted", False),
              ("LOOSE-PH", "phone", None, False)])
    text = co.export(a)
    # Formula-like cells are written as text for spreadsheets (a leading ') and read back unchanged.
    assert "'=SUM(A1),'@ph,phone" in text and "'-1,PH-4" in text and "''quoted,PH-5" in text
    assert "'+420 TAB" in text

    result = other.load(b, text)
    assert result == {"site": b, "rows": 15, "apartments_created": 8, "devices_added": 14, "devices_assigned": 0,
                      "local_mode_changed": 0}
    assert other.state(b) == co.state(a)
    assert other.export(b) == text


def test_importing_a_sites_own_export_again_changes_nothing(world: World) -> None:
    co = Company(world)
    site = co.site()
    co.build(site, ["1A", "1B"], [("IC-1", "intercom", None, False), ("PH-1", "phone", "1A", False)])
    before, actions = co.state(site), co.history()
    result = co.load(site, co.export(site))
    assert result["apartments_created"] == result["devices_added"] == result["devices_assigned"] == 0
    assert co.state(site) == before
    assert co.history() == actions + ["my2n.site.imported"]


# --- import: what it writes ----------------------------------------------------------------------

def test_import_creates_apartments_adds_devices_and_writes_history(world: World) -> None:
    co = Company(world)
    site = co.site()
    co.build(site, ["1A"], [])
    result = co.load(site, rows(",IC-1,intercom,", "1A,PH-1,phone,yes", "1B,AU-1,answering_unit,0", "2A,,,"))
    assert result == {"site": site, "rows": 4, "apartments_created": 2, "devices_added": 3, "devices_assigned": 0,
                      "local_mode_changed": 0}
    assert co.state(site) == (["1A", "1B", "2A"], [("AU-1", "answering_unit", "1B", False),
                                                   ("IC-1", "intercom", None, False), ("PH-1", "phone", "1A", True)])
    # Each change is the service's own history entry, then one for the import.
    assert co.history()[-6:] == ["my2n.device.added", "my2n.device.added", "my2n.apartment.created",
                                 "my2n.device.added", "my2n.apartment.created", "my2n.site.imported"]


def test_import_assigns_the_sites_unassigned_devices_for_the_migration(world: World) -> None:  # R-MY-4
    co = Company(world)
    site = co.site("Legacy", model="custom")
    co.build(site, [], [("IC-1", "intercom", None, False), ("PH-1", "phone", None, False),
                        ("AU-1", "answering_unit", None, False), ("TAB-1", "tablet", None, False)])
    with world.ctx.sessions() as s:
        assert len(my2n.migration_check(s, site=my2n.get_site(s, co.org, site))) == 3
    result = co.load(site, rows(",IC-1,intercom,false", "1A,PH-1,phone,false", "1A,AU-1,answering_unit,false",
                                "1B,TAB-1,tablet,true"))
    assert result == {"site": site, "rows": 4, "apartments_created": 2, "devices_added": 0, "devices_assigned": 3,
                      "local_mode_changed": 1}
    assert co.state(site)[1] == [("AU-1", "answering_unit", "1A", False), ("IC-1", "intercom", None, False),
                                 ("PH-1", "phone", "1A", False), ("TAB-1", "tablet", "1B", True)]
    with world.ctx.sessions() as s:
        assert my2n.migration_check(s, site=my2n.get_site(s, co.org, site)) == []


def test_import_reads_spreadsheet_files(world: World) -> None:
    # A BOM, semicolons, blank lines, columns in another order, no local_mode column, yes/no.
    co = Company(world)
    site = co.site()
    data = "\ufeffkind;Serial;APARTMENT\n\nphone;PH-1;1A\n;;\nintercom;IC-1;\n".encode()
    assert co.load(site, data)["devices_added"] == 2
    assert co.state(site) == (["1A"], [("IC-1", "intercom", None, False), ("PH-1", "phone", "1A", False)])


def test_import_reports_progress_row_by_row(world: World) -> None:
    co = Company(world)
    site = co.site()
    seen: list[tuple[int, int]] = []
    co.load(site, rows("1A,PH-1,phone,", "1A,PH-2,phone,", "2A,,,"), progress=lambda done, total: seen.append(
        (done, total)))
    assert seen == [(1, 3), (2, 3), (3, 3)]


# --- import: refusals, all or nothing ------------------------------------------------------------

def test_a_fifth_paid_device_in_an_apartment_refuses_the_file(world: World) -> None:  # R-MY-2
    co = Company(world)
    site = co.site()
    exc = co.refused(site, rows("1A,PH-1,phone,", "1A,PH-2,tablet,", "1A,AU-1,answering_unit,",
                                "1A,PH-3,third_party,true", "1A,PH-4,phone,", "1A,PH-5,phone,", "1A,PH-6,phone,",
                                "1B,PH-7,phone,"))
    assert exc.code == "csv_invalid" and exc.status == 422
    # Free answering units do not count; a device in local mode does; rows 7 and 8 are the 5th and 6th.
    assert [(p["row"], p["column"], p["code"]) for p in exc.detail["rows"]] == [
        (7, "apartment", "apartment_paid_device_limit"), (8, "apartment", "apartment_paid_device_limit")]
    first = exc.detail["rows"][0]
    assert "create another apartment" in first["message"] and first["apartment"] == "1A"
    assert (first["paid_devices"], first["limit"]) == (4, 4)
    assert "row 7, apartment" in exc.message and co.state(site) == ([], [])


def test_the_limit_counts_the_paid_devices_an_apartment_already_holds(world: World) -> None:  # R-MY-2
    co = Company(world)
    site = co.site()
    co.build(site, ["2B"], [("PH-1", "phone", "2B", False), ("PH-2", "phone", "2B", True),
                            ("TAB-1", "tablet", "2B", False), ("AU-1", "answering_unit", "2B", False),
                            ("LOOSE", "phone", None, False)])
    # A fourth paid device fits; a fifth, new or one of the site's to assign, does not.
    assert co.problems(site, rows("2B,AU-2,answering_unit,", "2B,3P-1,third_party,", "2B,PH-9,phone,",
                                  "2B,LOOSE,phone,")) == [(4, "apartment", "apartment_paid_device_limit"),
                                                          (5, "apartment", "apartment_paid_device_limit")]
    assert co.load(site, rows("2B,AU-2,answering_unit,", "2B,3P-1,third_party,"))["devices_added"] == 2
    with world.ctx.sessions() as s:
        [apt] = my2n.apartments_of(s, my2n.get_site(s, co.org, site))
        assert my2n.paid_devices(s, apt) == 4


def test_every_bad_row_is_reported_with_its_row_column_and_code(world: World) -> None:
    co = Company(world)
    site = co.site()
    co.build(site, ["9Z"], [("ON-SITE-1", "phone", "9Z", False), ("ON-SITE-2", "phone", "9Z", False),
                            ("ON-SITE-3", "phone", "9Z", False), ("IC-OLD", "intercom", None, False)])
    problems = co.problems(site, rows(
        "1A,PH-1,phone,false",             # 2: fine
        "1A,TV-1,television,false",        # 3: unknown kind
        "1A," + "S" * 129 + ",phone,",     # 4: serial too long
        "1A,PH-1,tablet,",                 # 5: serial twice in the file
        "1A,ON-SITE-1,phone,",             # 6: on the site, in another apartment
        "9Z,ON-SITE-2,tablet,",            # 7: on the site with another kind
        ",ON-SITE-3,phone,",               # 8: would leave its apartment
        "1A,IC-2,intercom,",               # 9: intercoms belong to no apartment
        "1A,IC-OLD,intercom,",             # 10: nor do the site's
        "1A,PH-2,phone,maybe",             # 11: local mode
        "1A,,phone,",                      # 12: a kind without a serial
        "1A,PH-3,phone,false,extra",       # 13: a cell too many
        "A" * 201 + ",PH-4,phone,",        # 14: apartment name too long
        '1A,"PH\t5",phone,',               # 15: a control character
        "1A,PH-6,,",                       # 16: no kind
    ))
    assert problems == [
        (3, "kind", "device_kind_invalid"), (4, "serial", "serial_invalid"), (5, "serial", "serial_duplicate"),
        (6, "serial", "device_exists"), (7, "serial", "device_exists"), (8, "serial", "device_exists"),
        (9, "kind", "intercom_not_in_apartment"), (10, "kind", "intercom_not_in_apartment"),
        (11, "local_mode", "local_mode_invalid"), (12, "serial", "serial_required"), (13, None, "row_invalid"),
        (14, "apartment", "name_invalid"), (15, "serial", "text_control_characters"), (16, "kind", "device_kind_invalid")]


def test_the_refusal_names_the_first_occurrence_of_a_duplicate(world: World) -> None:
    co = Company(world)
    site = co.site()
    exc = co.refused(site, rows("1A,PH-1,phone,", "2A,,,", "1B,PH-1,phone,"))
    [problem] = exc.detail["rows"]
    assert problem["row"] == 4 and problem["first_row"] == 2 and problem["serial"] == "PH-1"


def test_header_and_file_problems(world: World) -> None:
    co = Company(world)
    site = co.site()
    assert co.problems(site, "") == [(1, None, "header_missing")]
    assert co.problems(site, "\n\n") == [(1, None, "header_missing")]
    assert co.problems(site, "apartment,serial,local_mode\n1A,PH-1,false\n") == [(1, "kind", "column_missing")]
    assert co.problems(site, "apartment,serial,kind,colour\n") == [(1, "colour", "column_unknown")]
    assert co.problems(site, "apartment,serial,kind,kind\n") == [(1, "kind", "column_duplicate")]
    assert co.problems(site, "apartment,serial,kind\n1A,\"PH-1,phone\n") == [(2, None, "csv_malformed")]
    assert co.problems(site, HEADER.encode() + b"1A,PH-\xff,phone,\r\n") == [(None, None, "encoding_invalid")]


def test_only_company_and_site_admins_import(world: World) -> None:
    co = Company(world)
    site = co.site()
    viewer: Member = join(world, co.org, "viewer@example.com", Role.viewer)
    exc = co.refused(site, rows("1A,PH-1,phone,"), actor=world.actor(viewer.user))
    assert exc.code == "site_admin_required"
    other = Company(world, "Other", "other@example.com")
    assert co.refused(site, rows("1A,PH-1,phone,"), actor=other.actor).code == "organization_not_found"


# --- hundreds of apartments ----------------------------------------------------------------------

@contextmanager
def statements(world: World) -> Iterator[list[str]]:
    seen: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(world.ctx.engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        event.remove(world.ctx.engine, "before_cursor_execute", count)


def building(apartments: int, first: int = 0) -> str:
    """Per apartment: a phone, a tablet in local mode, an answering unit; every tenth empty."""
    lines = []
    for i in range(first, first + apartments):
        if i % 10 == 9:
            lines.append(f"Apt {i:04d},,,")
        else:
            lines += [f"Apt {i:04d},PH-{i},phone,", f"Apt {i:04d},TAB-{i},tablet,true",
                      f"Apt {i:04d},AU-{i},answering_unit,"]
    return rows(*lines)


def test_a_site_of_hundreds_of_apartments_imports_at_a_bounded_cost_per_row(world: World) -> None:
    co = Company(world)
    small, big = co.site("Small"), co.site("Big")
    with statements(world) as seen:
        co.load(small, building(20))  # 56 rows
    per_row_small = len(seen) / 56
    with statements(world) as seen:
        result = co.load(big, building(220, first=1000))  # 616 rows
    assert result["rows"] == 616 and result["apartments_created"] == 220 and result["devices_added"] == 594
    per_row_big = len(seen) / 616
    # Each row costs its service calls (a few statements each; about 6 on SQLite, 9 on PostgreSQL),
    # the same for 600 rows as for 50: no statement per row that grows with the site (N+1).
    assert per_row_big <= 12, per_row_big
    assert per_row_big <= per_row_small + 0.5, (per_row_small, per_row_big)
    with world.ctx.sessions() as s:
        shown = board.dashboard(s, site=my2n.get_site(s, co.org, big), now=world.now)
    assert (shown["apartments"], shown["needing_license"]) == (220, 198)  # R-MY-3: the empty ones need none


def test_a_refused_row_among_hundreds_writes_nothing(world: World) -> None:  # R-MY-2
    co = Company(world)
    site = co.site()
    data = building(200) + "Apt 0100,PH-X1,phone,\r\nApt 0100,PH-X2,phone,\r\nApt 0100,PH-X3,phone,\r\n"
    problems = co.problems(site, data)
    assert [code for _, _, code in problems] == ["apartment_paid_device_limit"]
    with world.ctx.sessions() as s:
        assert s.scalar(select(Apartment.id).limit(1)) is None and s.scalar(select(SiteDevice.id).limit(1)) is None


# --- the API -------------------------------------------------------------------------------------

def test_api_export_and_import(world: World, client: Any) -> None:
    co = Company(world)
    other = Company(world, "Elsewhere", "other@example.com")  # one serial, one site of a company (issue 14)
    a, b = co.site("Block A"), other.site("Block B")
    co.build(a, ["1A", "1B"], [("IC-1", "intercom", None, False), ("PH-1", "phone", "1A", True)])
    base = f"/api/v1/orgs/{co.org}/sites"
    r = client.get(f"{base}/{a}/export.csv", headers=auth(co.owner.token))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    assert f'filename="site-{a}.csv"' in r.headers["content-disposition"]
    assert r.text == co.export(a)

    r = client.post(f"/api/v1/orgs/{other.org}/sites/{b}/import", content=r.content,
                    headers={**auth(other.owner.token), "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == {"site": b, "rows": 3, "apartments_created": 2, "devices_added": 2, "devices_assigned": 0,
                        "local_mode_changed": 0}
    assert other.state(b) == co.state(a)


def test_api_import_refusals_have_the_error_shape(world: World, client: Any) -> None:
    co = Company(world)
    site = co.site()
    url = f"/api/v1/orgs/{co.org}/sites/{site}/import"
    headers = {**auth(co.owner.token), "Content-Type": "text/csv"}
    r = client.post(url, content=rows("1A,PH-1,phone,", "1A,PH-1,phone,", "1A,TV,tv,"), headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "csv_invalid"
    assert [(p["row"], p["column"], p["code"]) for p in r.json()["error"]["detail"]["rows"]] == [
        (3, "serial", "serial_duplicate"), (4, "kind", "device_kind_invalid")]
    r = client.post(url, content=b"", headers=headers)
    assert r.status_code == 422 and r.json()["error"]["detail"]["rows"][0]["code"] == "header_missing"
    assert co.state(site) == ([], [])

    viewer = join(world, co.org, "viewer@example.com", Role.viewer)
    r = client.post(url, content=rows("1A,PH-1,phone,"), headers={**auth(viewer.token), "Content-Type": "text/csv"})
    assert r.status_code == 403 and r.json()["error"]["code"] == "site_admin_required"
    assert client.get(url.replace("/import", "/export.csv"), headers=auth(viewer.token)).status_code == 200

    # R-CORE-1: another organization's site is no site at all, for either route.
    other = Company(world, "Other", "other@example.com")
    for r in (client.get(url.replace("/import", "/export.csv"), headers=auth(other.owner.token)),
              client.post(url, content=rows("1A,PH-1,phone,"), headers={**auth(other.owner.token),
                                                                         "Content-Type": "text/csv"})):
        assert r.status_code == 404 and r.json()["error"]["code"] == "organization_not_found"
    theirs = other.site("Theirs")
    r = client.get(f"/api/v1/orgs/{co.org}/sites/{theirs}/export.csv", headers=auth(co.owner.token))
    assert r.status_code == 404 and r.json()["error"]["code"] == "site_not_found"
    assert co.state(site) == ([], [])
