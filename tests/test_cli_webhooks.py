"""Webhooks from the console (R-CORE-8): `entitle webhook add|list|update|deliveries|redeliver|
test|types` and `entitle deliver`, against a real receiver on 127.0.0.1. The console's clock is
ENTITLE_NOW (``cli.now``); one test runs `entitle deliver --loop` as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from conftest import START, TEST_SECRET_KEY, World
from entitle.delivery.webhooks import EVENT_TYPES
from entitle.context import Context
from entitle.db import transaction
from entitle.delivery import webhooks
from entitle.platform import events
from helpers import REPO, ClockedCli, clocked_cli
from webhook_receiver import Receiver, running_receiver

Cli = ClockedCli


@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        yield r


def emit(world: World, org: str, type: str = "my2n.apartment.lapsed", **payload: Any) -> str:
    with transaction(world.ctx.sessions) as s:
        event = events.emit(s, org_id=int(org), type=type, now=world.now, **payload)
        s.flush()
        return f"evt_{event.id}"


def add(cli: Cli, org: str, url: str, *types: str) -> dict[str, Any]:
    made: dict[str, Any] = cli.json("webhook", "add", "--org", org, "--url", url,
                                    *[a for t in types for a in ("--type", t)])
    return made


# --- endpoints -------------------------------------------------------------------------------------

def test_add_prints_the_secret_once_and_list_never_again(world: World, cli: Cli) -> None:
    # R-CORE-8: the secret is shown when the endpoint is made, and nowhere after.
    org = str(world.org("Hooks Inc"))
    text = cli.ok("webhook", "add", "--org", "Hooks Inc", "--url", "http://127.0.0.1:9/erp", "--type", "my2n.*",
                  "--description", "ERP")
    assert "Webhook endpoint 1 added to organization" in text and "event types: my2n.*" in text
    secret = text.split("shown this once; deliveries are signed with it): ")[1].strip()
    assert secret.startswith("whsec_")
    made = add(cli, org, "http://127.0.0.1:9/all")
    assert made["secret"].startswith("whsec_") and made["secret"] != secret and made["event_types"] == []
    listed = cli.json("webhook", "list", "--org", org)
    assert [(e["id"], e["url"], e["event_types"], e["active"]) for e in listed] == [
        (1, "http://127.0.0.1:9/erp", ["my2n.*"], True), (made["id"], "http://127.0.0.1:9/all", [], True)]
    text = cli.ok("webhook", "list", "--org", org)
    assert "http://127.0.0.1:9/erp" in text and "my2n.*" in text and "all" in text
    assert secret not in text and made["secret"] not in text and "secret" not in json.dumps(listed)


def test_refusals_name_the_problem(world: World, cli: Cli) -> None:
    org = str(world.org("Hooks Inc"))
    detail = cli.refused("event_type_unknown", "webhook", "add", "--org", org, "--url", "http://127.0.0.1:9/h",
                         "--type", "my2n.apartment.lapse")
    assert detail["detail"] == {"event_type": "my2n.apartment.lapse"}
    cli.refused("webhook_url_invalid", "webhook", "add", "--org", org, "--url", "127.0.0.1:9/h")
    cli.refused("organization_not_found", "webhook", "add", "--org", "Nobody", "--url", "http://127.0.0.1:9/h")
    assert cli.json("webhook", "list", "--org", org) == []
    made = add(cli, org, "http://127.0.0.1:9/h")
    at = ["--org", org, "--endpoint", str(made["id"])]
    cli.refused("nothing_to_change", "webhook", "update", *at)
    cli.refused("options_conflict", "webhook", "update", *at, "--type", "key.redeemed", "--all-types")
    cli.refused("webhook_endpoint_not_found", "webhook", "update", "--org", org, "--endpoint", "999", "--inactive")
    cli.refused("webhook_endpoint_not_found", "webhook", "deliveries", "--org", org, "--endpoint", "999")


def test_update_changes_the_url_the_types_and_switches_off_and_on(world: World, cli: Cli) -> None:
    org = str(world.org("Hooks Inc"))
    made = add(cli, org, "http://127.0.0.1:9/h", "key.redeemed")
    at = ["--org", org, "--endpoint", str(made["id"])]
    changed = cli.json("webhook", "update", *at, "--url", "http://127.0.0.1:9/new", "--type", "axis.*",
                       "--type", "my2n.apartment.lapsed")
    assert (changed["url"], changed["event_types"]) == ("http://127.0.0.1:9/new", ["axis.*", "my2n.apartment.lapsed"])
    assert cli.json("webhook", "update", *at, "--all-types")["event_types"] == []
    text = cli.ok("webhook", "update", *at, "--inactive")
    assert "INACTIVE (gets nothing)" in text
    cli.refused("webhook_endpoint_inactive", "webhook", "test", *at)
    assert cli.json("webhook", "update", *at, "--active")["active"] is True


def test_types_lists_every_event_type(cli: Cli) -> None:
    rows = cli.json("webhook", "types")
    assert [r["type"] for r in rows] == sorted(EVENT_TYPES)
    assert "my2n.apartment.lapsed" in cli.ok("webhook", "types")


# --- deliver, deliveries, redeliver ----------------------------------------------------------------

def test_deliver_sends_every_due_event_in_order_signed(world: World, cli: Cli, receiver: Receiver) -> None:
    # R-CORE-8: one `entitle deliver` sends everything due, each endpoint's events in order,
    # signed with that endpoint's secret.
    org = str(world.org("Hooks Inc"))
    made = add(cli, org, receiver.url("/a"))
    add(cli, org, receiver.url("/b"), "key.*")
    emitted = [emit(world, org, apartment=f"Flat {i}") for i in range(4)]
    key_event = emit(world, org, type="key.redeemed", key_id=1)
    assert cli.json("deliver") == {"at": START.isoformat(), "delivered": 6, "retrying": 0, "failed": 0}
    assert receiver.ids("/a") == [*emitted, key_event] and receiver.ids("/b") == [key_event]
    for got in receiver.at("/a"):
        assert webhooks.verify(made["secret"], got.body, got.signature, now=START.timestamp())
    assert "delivered 0, will retry 0, gave up 0" in cli.ok("deliver")  # nothing due any more


def test_failures_and_timeouts_are_retried_and_each_attempt_is_shown(world: World, cli: Cli,
                                                                      receiver: Receiver) -> None:
    # R-CORE-8: the receiver fails, then times out (--timeout), then answers; `webhook deliveries
    # --attempts` shows every attempt's status or error.
    org = str(world.org("Hooks Inc"))
    made = add(cli, org, receiver.url())
    at = ["--org", org, "--endpoint", str(made["id"])]
    event_id = emit(world, org)
    receiver.script = ["fail", "slow"]
    receiver.slow_seconds = 3.0
    assert cli.json("deliver", "--timeout", "1")["retrying"] == 1
    cli.now += timedelta(minutes=5)
    assert cli.json("deliver", "--timeout", "1")["retrying"] == 1
    cli.now += timedelta(minutes=5)
    assert cli.json("deliver", "--timeout", "1")["delivered"] == 1
    assert receiver.ids() == [event_id] * 3
    [d] = cli.json("webhook", "deliveries", *at)["items"]
    assert d["state"] == "delivered" and d["attempts"] == 3
    assert [a["status_code"] for a in d["attempt_log"]] == [500, None, 200]
    assert "Timeout" in d["attempt_log"][1]["error"]
    text = cli.ok("webhook", "deliveries", *at, "--attempts")
    assert event_id in text and "delivered" in text and "500" in text and "Timeout" in text


def test_deliveries_come_a_page_at_a_time(world: World, cli: Cli, receiver: Receiver) -> None:
    org = str(world.org("Hooks Inc"))
    made = add(cli, org, receiver.url())
    at = ["--org", org, "--endpoint", str(made["id"])]
    emitted = [emit(world, org) for _ in range(3)]
    page = cli.json("webhook", "deliveries", *at, "--limit", "2")
    assert [d["event"]["id"] for d in page["items"]] == emitted[:0:-1] and page["next_cursor"]
    rest = cli.json("webhook", "deliveries", *at, "--limit", "2", "--before", str(page["next_cursor"]))
    assert [d["event"]["id"] for d in rest["items"]] == emitted[:1] and rest["next_cursor"] is None
    assert f"More: --before {page['next_cursor']}" in cli.ok("webhook", "deliveries", *at, "--limit", "2")


def test_redeliver_and_test_queue_a_delivery_that_deliver_sends(world: World, cli: Cli, receiver: Receiver) -> None:
    # R-CORE-8: manual redelivery sends the same event id again; a test event reaches that endpoint only.
    org = str(world.org("Hooks Inc"))
    made = add(cli, org, receiver.url("/mine"), "key.redeemed")
    other = add(cli, org, receiver.url("/other"))
    at = ["--org", org, "--endpoint", str(made["id"])]
    queued = cli.json("webhook", "test", *at)
    assert queued["state"] == "pending" and queued["event"]["type"] == "webhook.test"
    assert "Test event" in cli.ok("webhook", "test", *at)
    cli.json("deliver")
    assert [r.json["type"] for r in receiver.at("/mine")] == ["webhook.test"] * 2 and receiver.at("/other") == []
    again = cli.json("webhook", "redeliver", *at, "--delivery", str(queued["id"]))
    assert again["state"] == "pending" and again["event"]["id"] == queued["event"]["id"]
    assert "queued again" in cli.ok("webhook", "redeliver", *at, "--delivery", str(queued["id"]))
    cli.json("deliver")
    assert receiver.ids("/mine").count(queued["event"]["id"]) == 2
    cli.refused("webhook_delivery_not_found", "webhook", "redeliver", "--org", org, "--endpoint", str(other["id"]),
                "--delivery", str(queued["id"]))


def test_deliver_loop_keeps_sending_until_stopped(world: World, cli: Cli, receiver: Receiver) -> None:
    # R-CORE-8: `entitle deliver --loop --every S` as a real process picks up events made while it runs.
    org = str(world.org("Hooks Inc"))
    add(cli, org, receiver.url())
    first = emit(world, org)
    env = {**os.environ, "ENTITLE_DATABASE_URL": cli.url, "ENTITLE_SECRET_KEY": TEST_SECRET_KEY,
           "ENTITLE_NOW": START.isoformat()}
    proc = subprocess.Popen([sys.executable, "-m", "entitle.cli.main", "deliver", "--loop", "--every", "0.2",
                             "--json"], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while receiver.ids() != [first] and time.monotonic() < deadline:
            time.sleep(0.05)
        second = emit(world, org)
        while receiver.ids() != [first, second] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.ids() == [first, second]
        assert proc.poll() is None  # still running
    finally:
        proc.terminate()  # SIGTERM: it ends after the round in progress
        stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    rounds = [json.loads(line) for line in stdout.splitlines()]
    assert sum(r["delivered"] for r in rounds) == 2, (stdout, stderr)
    assert cli.json("deliver")["delivered"] == 0  # nothing left: both were recorded before it stopped
