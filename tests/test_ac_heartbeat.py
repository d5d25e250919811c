"""Device heartbeats at fleet rate: POST /api/v1/ac/heartbeat, buffered and flushed in batches
(docs/access-commander.md, "Heartbeats: the write path"; R-AC-4, R-AC-5, R-CORE-1)."""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import select, update

from conftest import START, World
from entitle.access_commander import services as ac
from entitle.access_commander.heartbeat import (MAX_SERIALS, Heartbeats, KnownInstallation, add_moment,
                                                openapi_route_kwargs)
from entitle.access_commander.models import AcLicense, Device, Installation
from entitle.actors import operator
from entitle.api.app import create_app
from entitle.clock import FrozenClock, SystemClock
from entitle.config import Settings
from entitle.context import Context, build
from entitle.db import reading, transaction
from entitle.keys import services as keys
from helpers import uvicorn_process

URL = "/api/v1/ac/heartbeat"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "access-commander.md"
OP = operator("test")


def quiet(ctx: Context, **overrides: Any) -> Context:
    """The test's context with a flusher that does not fire by itself during a test: the tests
    flush when they mean to (``app.state.heartbeats.flush()``)."""
    return build(ctx.settings.model_copy(update={"heartbeat_flush_interval_seconds": 60, **overrides}),
                 ctx.clock, engine=ctx.engine)


class Site:
    """An organization's installation with devices, set up through the services."""

    def __init__(self, ctx: Context, name: str, serials: list[str], *, timeout: int = 300,
                 license_device: str | None = None) -> None:
        self.ctx = ctx
        now = ctx.clock.now()
        with transaction(ctx.sessions) as s:
            from entitle.tenancy import services as tenancy

            self.org = tenancy.create_organization(s, name=f"Org {name}", region="EU", actor=OP, now=now).id
            inst, self.token = ac.create_installation(s, org_id=self.org, name=name, actor=OP, now=now,
                                                      heartbeat_timeout_seconds=timeout)
            self.id = inst.id
            for serial in serials:
                ac.add_device(s, installation=inst, serial=serial, type="ip_intercom", actor=OP, now=now)
                ac.report_state(s, installation=inst, serial=serial, connected=True, now=now)
        if license_device is not None:
            [code] = keys_for(ctx)
            with transaction(ctx.sessions) as s:
                keys.redeem(s, org_id=self.org, typed_key=code, actor=OP, now=now)
                ac.generate_license(s, installation=ac.get_installation(s, self.org, self.id),
                                    license_device=license_device, packages=[("91379040", 1)], actor=OP,
                                    now=now, secret=ctx.secret)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def device(self, serial: str) -> Device:
        with self.ctx.sessions() as s:
            return s.scalars(select(Device).where(Device.installation_id == self.id, Device.serial == serial)).one()

    def view(self) -> dict[str, Any]:
        with self.ctx.sessions() as s:
            inst = s.get(Installation, self.id)
            return ac.overview_to_dict(ac.overview(s, inst, self.ctx.clock.now()))

    def known(self) -> KnownInstallation:
        with self.ctx.sessions() as s:
            inst = s.get(Installation, self.id)
            return KnownInstallation(inst.id, inst.org_id, ac.timeout_of(inst))


def keys_for(ctx: Context, count: int = 1) -> list[str]:
    with transaction(ctx.sessions) as s:
        return keys.mint(s, sku_part="91379040", quantity_per_key=1, count=count, actor=OP, now=ctx.clock.now(),
                         keep_codes=True).codes


@pytest.fixture
def hctx(world: World) -> Context:
    return quiet(world.ctx)


@pytest.fixture
def app(hctx: Context) -> Any:
    return create_app(ctx=hctx)


@pytest.fixture
def client(app: Any) -> Iterator[TestClient]:
    with TestClient(app) as c:
        yield c


def beat(client: TestClient, site: Site, *serials: str) -> httpx.Response:
    body = {"serial": serials[0]} if len(serials) == 1 else {"serials": list(serials)}
    return client.post(URL, json=body, headers=site.headers())


# --- the endpoint --------------------------------------------------------------------------------

def test_a_heartbeat_is_visible_after_the_flush(hctx: Context, app: Any, client: TestClient) -> None:
    # R-AC-4: the server learns that the device is connected; written by the next flush.
    site = Site(hctx, "Plant", ["D-1", "D-2"])
    clock = hctx.clock
    before = site.device("D-1").last_seen
    clock.advance(timedelta(seconds=90))
    r = beat(client, site, "D-1")
    assert r.status_code == 202 and r.json() == {"accepted": 1}
    assert site.device("D-1").last_seen == before  # buffered, not written yet
    assert app.state.heartbeats.flush() == 1
    assert site.device("D-1").last_seen == clock.now()
    assert site.device("D-2").last_seen == before
    clock.advance(timedelta(seconds=250))  # 340 s after D-2's last heartbeat, 250 s after D-1's
    connected = {d["serial"]: d["connected"] for d in site.view()["device_list"]}
    assert connected == {"D-1": True, "D-2": False}


def test_one_request_can_carry_many_devices(hctx: Context, app: Any, client: TestClient) -> None:
    serials = [f"D-{i}" for i in range(50)]
    site = Site(hctx, "Plant", serials)
    hctx.clock.advance(timedelta(seconds=30))
    r = beat(client, site, *serials)
    assert r.status_code == 202 and r.json() == {"accepted": 50}
    assert app.state.heartbeats.flush() == 50
    assert {site.device(s).last_seen for s in serials} == {hctx.clock.now()}
    r = client.post(URL, json={"serials": ["D-1"] * (MAX_SERIALS + 1)}, headers=site.headers())
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"


def test_the_installation_token_is_required(hctx: Context, client: TestClient) -> None:
    site = Site(hctx, "Plant", ["D-1"])
    r = client.post(URL, json={"serial": "D-1"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "authentication_required"
    assert r.headers["www-authenticate"] == "Bearer"
    r = client.post(URL, json={"serial": "D-1"}, headers={"Authorization": "Bearer eac_not-a-token"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_invalid"
    assert set(r.json()["error"]) == {"code", "message", "detail"}
    r = client.post(URL, json={"serial": "D-1"}, headers={"Authorization": f"Basic {site.token}"})
    assert r.status_code == 401


def test_an_unknown_serial_is_refused_and_nothing_is_recorded(hctx: Context, app: Any, client: TestClient) -> None:
    site = Site(hctx, "Plant", ["D-1"])
    hctx.clock.advance(timedelta(seconds=10))
    r = beat(client, site, "NOPE")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "device_not_found" and r.json()["error"]["detail"] == {"serial": "NOPE"}
    r = beat(client, site, "D-1", "NOPE", "ALSO-NOPE")
    assert r.status_code == 404 and r.json()["error"]["detail"] == {"serials": ["NOPE", "ALSO-NOPE"], "unknown": 2}
    assert app.state.heartbeats.pending_devices() == 0
    assert app.state.heartbeats.flush() == 0


def test_a_device_added_later_is_accepted(world: World) -> None:
    # The serials a process knows are looked up again on an unknown serial (here: at once).
    hctx = quiet(world.ctx, heartbeat_serials_refresh_seconds=0)
    app = create_app(ctx=hctx)
    site = Site(hctx, "Plant", ["D-1"])
    with TestClient(app) as client:
        assert beat(client, site, "D-1").status_code == 202
        with transaction(hctx.sessions) as s:
            ac.add_device(s, installation=s.get(Installation, site.id), serial="D-2", type="access_unit",
                          actor=OP, now=hctx.clock.now())
        assert beat(client, site, "D-2").status_code == 202


@pytest.mark.parametrize("body", [b"not json", b"[]", b"{}", b'{"serial": ""}', b'{"serial": 5}',
                                  b'{"serials": []}', b'{"serials": "D-1"}', b'{"serials": [null]}',
                                  b'{"serial": "D-1", "serials": ["D-1"]}', b'{"serial": "' + b"x" * 65 + b'"}'])
def test_a_malformed_body_is_refused(hctx: Context, client: TestClient, body: bytes) -> None:
    site = Site(hctx, "Plant", ["D-1"])
    r = client.post(URL, content=body, headers={**site.headers(), "content-type": "application/json"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request", r.text
    assert r.json()["error"]["detail"]["errors"]


def test_an_oversized_body_is_refused(hctx: Context, client: TestClient) -> None:
    site = Site(hctx, "Plant", ["D-1"])
    r = client.post(URL, content=b" " * 200_000, headers=site.headers())
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


def test_another_organizations_token_cannot_touch_this_organizations_devices(
        hctx: Context, app: Any, client: TestClient) -> None:
    # R-CORE-1: B's installation token reports A's serials: refused, and A's devices unchanged.
    a = Site(hctx, "Alpha", ["A-1", "SHARED-1"], license_device="A-1")
    b = Site(hctx, "Bravo", ["SHARED-1"])
    before = {s: a.device(s).last_seen for s in ("A-1", "SHARED-1")}
    lic_before = a.view()
    hctx.clock.advance(timedelta(seconds=100))
    r = beat(client, b, "A-1")
    assert r.status_code == 404 and r.json()["error"]["code"] == "device_not_found"
    assert "Alpha" not in r.text
    assert beat(client, b, "SHARED-1").status_code == 202  # B's own device of the same serial
    app.state.heartbeats.flush()
    assert {s: a.device(s).last_seen for s in ("A-1", "SHARED-1")} == before
    assert b.device("SHARED-1").last_seen == hctx.clock.now()
    assert a.view()["license"] == lic_before["license"]
    assert a.view()["connected_seconds"] == lic_before["connected_seconds"]


# --- what the rules see -------------------------------------------------------------------------

def test_heartbeats_extend_the_license_devices_connected_time(hctx: Context, app: Any, client: TestClient) -> None:
    # R-AC-5: connected time counts up to the last heartbeat written, across flushes.
    site = Site(hctx, "Plant", ["LD-1"], license_device="LD-1")
    clock = hctx.clock
    for _ in range(3):
        clock.advance(timedelta(seconds=200))
        assert beat(client, site, "LD-1").status_code == 202
        app.state.heartbeats.flush()
    clock.advance(timedelta(seconds=100))
    v = site.view()
    assert v["state"] == "active" and v["connected_seconds"] == 600


def test_a_gap_inside_one_flush_window_is_not_counted(hctx: Context, app: Any, client: TestClient) -> None:
    # R-AC-5: heartbeats within the timeout of each other are one connection; a longer silence
    # between two heartbeats of the same window is a disconnection, even though one flush
    # writes both.
    site = Site(hctx, "Plant", ["LD-1"], license_device="LD-1")
    clock = hctx.clock
    for step in (200, 200, 200):  # continuous: 600 s
        clock.advance(timedelta(seconds=step))
        beat(client, site, "LD-1")
    clock.advance(timedelta(seconds=1000))  # silence longer than the 300 s timeout
    beat(client, site, "LD-1")
    clock.advance(timedelta(seconds=250))
    beat(client, site, "LD-1")
    app.state.heartbeats.flush()
    v = site.view()
    assert v["connected_seconds"] == 600 + 250
    assert site.device("LD-1").connected_since == clock.now() - timedelta(seconds=250)


def test_the_evidence_chain_keeps_only_what_tells_the_story() -> None:
    t, timeout = START, timedelta(seconds=300)
    chain = [t]
    for s in (100, 200, 250, 300):  # within the timeout of the first: first and last are enough
        add_moment(chain, t + timedelta(seconds=s), timeout)
    assert chain == [t, t + timedelta(seconds=300)]
    add_moment(chain, t + timedelta(seconds=500), timeout)  # 500 - 0 > 300: the middle one stays
    assert chain == [t, t + timedelta(seconds=300), t + timedelta(seconds=500)]
    add_moment(chain, t + timedelta(seconds=100), timeout)  # older than the last: ignored
    add_moment(chain, t + timedelta(seconds=500), timeout)  # the same moment: ignored
    assert len(chain) == 3


# --- crashes --------------------------------------------------------------------------------------

def test_a_crash_loses_at_most_the_unflushed_heartbeats_and_never_over_counts(world: World) -> None:
    # R-AC-5: the buffer of a crashed process is gone. The connected time stops at the last
    # heartbeat that was written, never later: the protective period can only be shorter.
    hctx = quiet(world.ctx)
    site = Site(hctx, "Plant", ["LD-1"], license_device="LD-1")
    clock = hctx.clock
    added = clock.now()
    app = create_app(ctx=hctx)
    client = TestClient(app)  # no lifespan: no flusher, no flush on shutdown
    for s in (60, 120):
        clock.set(added + timedelta(seconds=s))
        assert beat(client, site, "LD-1").status_code == 202
    app.state.heartbeats.flush()
    clock.set(added + timedelta(seconds=180))
    assert beat(client, site, "LD-1").status_code == 202
    assert app.state.heartbeats.drop_buffer() == 1  # the crash
    clock.set(added + timedelta(seconds=1000))
    v = site.view()
    assert v["connected_seconds"] == 120  # not 180 (lost), never 1000
    assert v["state"] == "protective" and v["disconnected_at"] == (added + timedelta(seconds=120)).isoformat()
    assert v["protective_until"] == (added + timedelta(seconds=120, days=1)).isoformat()
    # A new process picks up: the silence since 120 s is a disconnection, counted as nothing.
    app2 = create_app(ctx=hctx)
    client2 = TestClient(app2)
    assert beat(client2, site, "LD-1").status_code == 202
    app2.state.heartbeats.flush()
    clock.set(added + timedelta(seconds=1200))
    beat(client2, site, "LD-1")
    app2.state.heartbeats.flush()
    v = site.view()
    assert v["state"] == "active" and v["connected_seconds"] == 120 + 200


def test_shutdown_writes_what_is_buffered(hctx: Context) -> None:
    site = Site(hctx, "Plant", ["D-1"])
    hctx.clock.advance(timedelta(seconds=42))
    with TestClient(create_app(ctx=hctx)) as client:
        assert beat(client, site, "D-1").status_code == 202
        assert site.device("D-1").last_seen == START
    assert site.device("D-1").last_seen == START + timedelta(seconds=42)


def documented_interval() -> float:
    section = DOCS.read_text().split("## Heartbeats: the write path", 1)[1].split("\n## ", 1)[0]
    m = re.search(r"heartbeat_flush_interval_seconds` \(default \*\*([\d.]+) s\*\*\)", section)
    assert m, "the section states the flush interval's default"
    assert re.search(r"loss window", section, re.IGNORECASE)
    return float(m.group(1))


def test_the_documented_loss_window_is_the_configured_interval() -> None:
    default = Settings.model_fields["heartbeat_flush_interval_seconds"].default
    assert documented_interval() == default
    assert f"({default:g} s by default)" in openapi_route_kwargs()["description"]


def test_a_crash_loses_at_most_one_flush_interval_of_heartbeats(world: World) -> None:
    # The real flusher, on the real clock: heartbeats sent continuously, then the process "dies"
    # (its flusher stops, its buffer is dropped). What is written is at most one interval (plus
    # the flush that was running) behind the last heartbeat answered, and never ahead of it.
    interval = 0.25
    hctx = build(world.ctx.settings.model_copy(update={"heartbeat_flush_interval_seconds": interval}),
                 SystemClock(), engine=world.ctx.engine)
    site = Site(hctx, "Plant", ["D-1"])
    app = create_app(ctx=hctx)
    hb: Heartbeats = app.state.heartbeats
    with TestClient(app) as client:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            assert beat(client, site, "D-1").status_code == 202
            last_answered = datetime.now(UTC)
            time.sleep(0.01)
        hb.stop(flush=False)  # the crash: no final flush
        hb.drop_buffer()
    assert hb.stats.flushes >= 3 and hb.stats.failures == 0
    written = site.device("D-1").last_seen
    assert written is not None and written <= last_answered
    loss = (last_answered - written).total_seconds()
    # scheduling slack on a shared machine: 0.25 s
    assert loss <= interval + hb.stats.max_seconds + 0.25, (loss, hb.stats)


# --- several processes ----------------------------------------------------------------------------

def test_two_flushers_in_any_order_never_move_last_seen_backwards(world: World) -> None:
    # Two server processes (two buffers) over one database, each flushing what it heard.
    hctx = quiet(world.ctx)
    site = Site(hctx, "Plant", ["LD-1", "D-2"], license_device="LD-1")
    one, two = Heartbeats(hctx), Heartbeats(hctx)
    inst = site.known()
    t0 = START
    one.record(inst, ["LD-1", "D-2"], t0 + timedelta(seconds=20))
    two.record(inst, ["LD-1", "D-2"], t0 + timedelta(seconds=10))  # heard earlier (or a clock behind)
    one.flush()
    two.flush()  # older evidence, flushed later
    assert site.device("LD-1").last_seen == site.device("D-2").last_seen == t0 + timedelta(seconds=20)
    two.record(inst, ["D-2"], t0 + timedelta(seconds=40))
    one.record(inst, ["D-2"], t0 + timedelta(seconds=30))
    two.flush()
    one.flush()
    assert site.device("D-2").last_seen == t0 + timedelta(seconds=40)
    assert site.device("D-2").connected_since == t0
    hctx.clock.set(t0 + timedelta(seconds=40))
    assert site.view()["connected_seconds"] == 20


def test_concurrent_flushers_never_move_last_seen_backwards_nor_over_count(world: World) -> None:
    # Two flushers in threads, each with its own buffer, writing interleaved heartbeats of the
    # same devices at the same time; a reader checks that last_seen only ever moves forward.
    hctx = quiet(world.ctx)
    serials = ["LD-1"] + [f"D-{i}" for i in range(30)]
    site = Site(hctx, "Plant", serials, license_device="LD-1")
    inst = site.known()
    flushers = [Heartbeats(hctx), Heartbeats(hctx)]
    rounds = 15
    moments = [[START + timedelta(seconds=10 * r + w * 5 + random.random()) for r in range(1, rounds + 1)]
               for w in range(2)]
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []
    stop = threading.Event()
    seen_by_reader: list[datetime] = []

    def writer(w: int) -> None:
        try:
            order = list(range(rounds))
            random.shuffle(order)  # out of order, as several processes' flushes may land
            for r in order:
                flushers[w].record(inst, serials, moments[w][r])
                barrier.wait(timeout=60)
                flushers[w].flush()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
            barrier.abort()

    def reader() -> None:
        while not stop.is_set():
            with reading(hctx.sessions) as s:
                seen_by_reader.append(s.scalar(select(Device.last_seen).where(
                    Device.installation_id == site.id, Device.serial == "D-7")))
            time.sleep(0.002)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(2)]
    watcher = threading.Thread(target=reader)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    watcher.join()
    assert not errors, errors
    latest = max(max(m) for m in moments)
    assert {site.device(s).last_seen for s in serials} == {latest}
    assert seen_by_reader == sorted(seen_by_reader)  # never backwards
    with hctx.sessions() as s:
        lic = s.scalars(select(AcLicense).where(AcLicense.installation_id == site.id)).one()
        assert lic.rec_last_seen == latest
        hctx.clock.set(latest + timedelta(hours=1))
        connected = ac.status_of(lic, s.get(Installation, site.id), hctx.clock.now()).connected_time
    assert connected <= latest - START  # never more than the time the evidence spans


def test_the_sql_update_applies_the_device_rule(world: World) -> None:
    # seen() writes devices with one SQL statement; it must give exactly what the rule gives.
    ctx = world.ctx
    site = Site(ctx, "Rule", ["D-1"])
    timeout = timedelta(seconds=300)
    moment = st.integers(0, 2000).map(lambda s: START + timedelta(seconds=s, microseconds=s % 7))

    @given(data=st.data())
    @settings(max_examples=60, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def run(data: st.DataObject) -> None:
        last_seen = data.draw(st.none() | moment, "last_seen")
        since = None if last_seen is None else data.draw(st.none() | st.integers(0, 600).map(
            lambda back: max(START, last_seen - timedelta(seconds=back))), "connected_since")
        first, last = data.draw(moment, "first"), data.draw(moment, "last")
        with transaction(ctx.sessions) as s:
            s.execute(update(Device).where(Device.installation_id == site.id)
                      .values(connected_since=since, last_seen=last_seen))
        with transaction(ctx.sessions) as s:
            ac.seen(s, s.get(Installation, site.id), {"D-1": (first, last)})
        dev = site.device("D-1")
        assert (dev.connected_since, dev.last_seen) == ac._device_seen(since, last_seen, (first, last), timeout)

    run()


@pytest.mark.slow
def test_two_real_servers_write_every_heartbeat_by_shutdown(world: World, database_url: str,
                                                            tmp_path: Path) -> None:
    # Two uvicorn processes over one database, as a deployment runs them: heartbeats to both,
    # then a normal stop (SIGTERM) writes what each had buffered.
    hctx = world.ctx
    hctx.clock.set(datetime.now(UTC) - timedelta(minutes=5))
    serials = [f"D-{i}" for i in range(20)]
    site = Site(hctx, "Plant", serials)
    settings = {"secret_key_file": str(tmp_path / "secret.key"), "heartbeat_flush_interval_seconds": "30"}
    started = datetime.now(UTC)
    with uvicorn_process(database_url, **settings) as a, uvicorn_process(database_url, **settings) as b:
        for i, serial in enumerate(serials):
            r = httpx.post((a, b)[i % 2] + URL, json={"serial": serial}, headers=site.headers())
            assert r.status_code == 202, r.text
        assert all(site.device(s).last_seen < started for s in serials)  # buffered (30 s interval)
    assert all(site.device(s).last_seen >= started for s in serials)
