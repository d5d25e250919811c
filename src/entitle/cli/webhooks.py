"""Webhooks from the console (R-CORE-8): `entitle webhook add|list|update|deliveries|redeliver|
test|types`, and `entitle deliver`, the worker that sends what is due (once, or ``--loop``).

Thin over ``entitle.delivery.webhooks`` and the API's route module (the event-type list, the
test event, one delivery with its attempts). ``--json`` prints the same dicts the REST API
returns. docs/webhooks.md says what a receiver gets.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Annotated

import httpx
import typer
from rich.markup import escape

from entitle.delivery.webhooks import EVENT_TYPES, check_event_types, delivery_detail, send_test_event
from entitle.cli.common import (DatabaseUrl, JsonOut, OrgRef, console_actor, context, handles_errors, make_table,
                                org_ref, out, plain, print_json)
from entitle.context import Context
from entitle.db import reading, transaction
from entitle.delivery import notifications, webhooks
from entitle.errors import EntitleError

webhook_app = typer.Typer(help="Webhook endpoints of an organization: add, list, change, their deliveries and "
                          "attempts, redelivery, a test event.", no_args_is_help=True)

EndpointId = Annotated[int, typer.Option("--endpoint", help="The endpoint's id (see `entitle webhook list`).")]
Types = Annotated[list[str] | None, typer.Option(
    "--type", help="An event type to send (repeat for more; area.* for a whole area, e.g. my2n.*). "
                   "None: every type. See `entitle webhook types`.", show_default=False)]

# `entitle deliver` runs the worker pass after pass while passes finish deliveries (each pass
# sends an endpoint's next event only once the one before it is done), at most this many.
MAX_PASSES = 1000


def _types(types: list[str]) -> str:
    return ", ".join(types) if types else "all"


def _when(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S") if iso else "-"


# --- endpoints -------------------------------------------------------------------------------------

@webhook_app.command("add")
@handles_errors
def add(org: OrgRef, url: Annotated[str, typer.Option("--url", help="The full http(s) URL to POST events to.")],
        event_types: Types = None,
        description: Annotated[str, typer.Option("--description", help="What receives them (for people).")] = "",
        database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Add an endpoint; prints its signing secret, this once."""
    types = check_event_types(event_types or [])
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        endpoint, secret = webhooks.create_endpoint(s, org_id=org_id, url=url, event_types=types,
                                                    actor=console_actor(), now=ctx.clock.now(), key=ctx.secret,
                                                    description=description)
        made = {**webhooks.endpoint_to_dict(endpoint), "secret": secret}
    if as_json:
        print_json(made)
        return
    plain(f"Webhook endpoint {made['id']} added to organization {org_id}: {made['url']} "
          f"(event types: {_types(made['event_types'])}).")
    plain(f"Signing secret (shown this once; deliveries are signed with it): {secret}")


@webhook_app.command("list")
@handles_errors
def list_endpoints(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """The organization's endpoints (secrets are never shown again)."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        rows = [webhooks.endpoint_to_dict(e) for e in webhooks.endpoints_of(s, org_id)]
    if as_json:
        print_json(rows)
        return
    if not rows:
        plain(f"Organization {org_id} has no webhook endpoints; add one with `entitle webhook add`.")
        return
    table = make_table(f"Webhook endpoints of organization {org_id}", "id>", "url", "event types", "active=",
                       "added=")
    for e in rows:
        table.add_row(str(e["id"]), escape(e["url"]), escape(_types(e["event_types"])), "yes" if e["active"] else "NO",
                      _when(e["created_at"])[:10])
    out.print(table)


@webhook_app.command("update")
@handles_errors
def update(org: OrgRef, endpoint: EndpointId,
           url: Annotated[str | None, typer.Option("--url", help="A new URL.", show_default=False)] = None,
           event_types: Types = None,
           all_types: Annotated[bool, typer.Option("--all-types", help="Send every event type (clears --type).")]
           = False,
           active: Annotated[bool | None, typer.Option("--active/--inactive", help="Switch the endpoint on or off "
                                                      "(off: it gets nothing until switched on again).",
                                                      show_default=False)] = None,
           database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Change an endpoint's URL or event types (replaced whole), or switch it off and on."""
    if all_types and event_types:
        raise EntitleError("options_conflict", "Give --type or --all-types, not both.")
    types = [] if all_types else (check_event_types(event_types) if event_types else None)
    if url is None and types is None and active is None:
        raise EntitleError("nothing_to_change", "Say what to change: --url, --type, --all-types, --active or "
                           "--inactive.")
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        changed = webhooks.endpoint_to_dict(webhooks.update_endpoint(
            s, org_id=org_id, endpoint_id=endpoint, actor=console_actor(), now=ctx.clock.now(), url=url,
            event_types=types, active=active))
    if as_json:
        print_json(changed)
        return
    plain(f"Webhook endpoint {changed['id']}: {changed['url']}, event types: {_types(changed['event_types'])}, "
          f"{'active' if changed['active'] else 'INACTIVE (gets nothing)'}.")


@webhook_app.command("types")
@handles_errors
def types(database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Every event type an endpoint can ask for."""
    del database_url  # taken like by every command (scripts pass it to all); the list is the code's
    rows = [{"type": t, "description": d, "notifies_admins": t in notifications.TITLES}
            for t, d in sorted(EVENT_TYPES.items())]
    if as_json:
        print_json(rows)
        return
    table = make_table("Event types (area.* asks for a whole area)", "type=", "what happened")
    for r in rows:
        table.add_row(r["type"], escape(r["description"]))
    out.print(table)


# --- deliveries ------------------------------------------------------------------------------------

@webhook_app.command("deliveries")
@handles_errors
def deliveries(org: OrgRef, endpoint: EndpointId,
               limit: Annotated[int, typer.Option("--limit", min=1, max=500, help="How many, newest first.")] = 20,
               before: Annotated[int | None, typer.Option("--before", min=1, help="Only deliveries older than this "
                                                          "id (the next page).", show_default=False)] = None,
               attempts: Annotated[bool, typer.Option("--attempts", help="Also list every attempt.")] = False,
               database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """An endpoint's deliveries, newest first, with their state and last answer (--attempts: each attempt)."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        webhooks.get_endpoint(s, org_id, endpoint)
        rows = webhooks.deliveries_of(s, org_id=org_id, endpoint_id=endpoint, limit=limit + 1, before_id=before)
    more, rows = len(rows) > limit, rows[:limit]
    if as_json:
        print_json({"items": rows, "next_cursor": rows[-1]["id"] if more else None})
        return
    if not rows:
        plain(f"Endpoint {endpoint} has no deliveries{' before ' + str(before) if before else ''}.")
        return
    table = make_table(f"Deliveries to endpoint {endpoint}", "id>", "event=", "type=", "state=", "tries>", "last=",
                       "next / delivered (UTC)=", caption=f"More: --before {rows[-1]['id']}" if more else None)
    for d in rows:
        # The status answered, else the kind of error (ConnectError, ReadTimeout); --attempts has it whole.
        last = str(d["last_status"]) if d["last_status"] is not None else (d["last_error"] or "-").split(":")[0]
        when = _when(d["delivered_at"]) if d["state"] == "delivered" else _when(d["next_attempt_at"])
        table.add_row(str(d["id"]), d["event"]["id"], d["event"]["type"], d["state"], str(d["attempts"]),
                      escape(last), when)
    out.print(table)
    if attempts:
        log = make_table("Attempts", "delivery>", "at (UTC)=", "status=", "ms>", "error")
        for d in rows:
            for a in d["attempt_log"]:
                log.add_row(str(d["id"]), _when(a["at"]), str(a["status_code"] or "-"), str(a["duration_ms"]),
                            escape(a["error"] or ""))
        out.print(log)


@webhook_app.command("redeliver")
@handles_errors
def redeliver(org: OrgRef, endpoint: EndpointId,
              delivery: Annotated[int, typer.Option("--delivery", help="The delivery's id (see `entitle webhook "
                                                    "deliveries`).")],
              database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Queue a delivery again, under the same event id (a failed one, or one the receiver lost)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        webhooks.get_endpoint(s, org_id, endpoint)
        delivery_detail(s, org_id, endpoint, delivery)  # this endpoint's, or none
        webhooks.redeliver(s, org_id=org_id, delivery_id=delivery, actor=console_actor(), now=ctx.clock.now())
        shown = delivery_detail(s, org_id, endpoint, delivery)
    if as_json:
        print_json(shown)
        return
    plain(f"Delivery {delivery} ({shown['event']['id']}, {shown['event']['type']}) is queued again; "
          "`entitle deliver` sends it.")


@webhook_app.command("test")
@handles_errors
def test(org: OrgRef, endpoint: EndpointId, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Queue a webhook.test event for this endpoint only; `entitle deliver` sends it."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        made = send_test_event(s, org_id=org_id, endpoint_id=endpoint, actor=console_actor(), now=ctx.clock.now())
        shown = delivery_detail(s, org_id, endpoint, made.id)
    if as_json:
        print_json(shown)
        return
    plain(f"Test event {shown['event']['id']} queued for endpoint {endpoint} (delivery {shown['id']}); "
          "`entitle deliver` sends it.")


# --- the worker ------------------------------------------------------------------------------------

def deliver_round(ctx: Context, client: httpx.Client) -> Counter[str]:
    """Send everything due now: pass after pass while a pass finishes a delivery (which lets
    that endpoint's next event go)."""
    total: Counter[str] = Counter()
    for _ in range(MAX_PASSES):
        counts = webhooks.deliver_due(ctx.sessions, now=ctx.clock.now, key=ctx.secret, client=client)
        total.update(counts)
        if not counts["delivered"] + counts["failed"]:
            break
    return total


def _report(counts: Counter[str], as_json: bool, at: datetime) -> None:
    row = {"at": at.isoformat(), "delivered": counts["delivered"], "retrying": counts["pending"],
           "failed": counts["failed"]}
    if as_json:
        typer.echo(json.dumps(row))
    else:
        plain(f"{_when(row['at'])} delivered {row['delivered']}, will retry {row['retrying']}, "
              f"gave up {row['failed']}.")
    sys.stdout.flush()  # a line per round, as it happens, also into a pipe or a service's log


@contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM (a service manager stopping us) ends the loop after the round in progress, like Ctrl-C."""
    try:
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    except ValueError:  # not the main thread: no handler, the default applies
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@handles_errors
def deliver(loop: Annotated[bool, typer.Option("--loop", help="Keep running: a round every --every seconds.")]
            = False,
            every: Annotated[float, typer.Option("--every", min=0.1, help="Seconds between rounds with --loop.")]
            = 5.0,
            timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="Seconds to wait for a receiver's "
                                                   "answer.")] = webhooks.TIMEOUT_SECONDS,
            database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Send the webhook deliveries that are due (signed, retried with back-off); once, or with
    --loop until stopped (Ctrl-C or SIGTERM). Several may run at once: each delivery is sent by one."""
    with context(database_url) as ctx, httpx.Client(timeout=timeout, follow_redirects=False) as client:
        if not loop:
            _report(deliver_round(ctx, client), as_json, ctx.clock.now())
            return
        stop = threading.Event()
        try:
            with _stop_on_sigterm(stop):
                while not stop.is_set():
                    counts = deliver_round(ctx, client)
                    if sum(counts.values()):
                        _report(counts, as_json, ctx.clock.now())
                    stop.wait(every)
        except KeyboardInterrupt:
            pass
        if not as_json:
            plain("Stopped; what was not sent yet goes with the next `entitle deliver`.")
