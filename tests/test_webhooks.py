"""Webhook delivery end to end (R-CORE-8): events made with the change (the outbox) go to a real
HTTP receiver on 127.0.0.1 that fails, times out and succeeds; the worker retries with back-off
and jitter, keeps the order per endpoint, signs every request and gives up after the window.

Time is the test's FrozenClock (``ctx.clock``): the worker reads it for every attempt, and the
tests move it to where a retry is due.
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from conftest import World, bound_socket
from entitle.actors import operator
from entitle.context import Context
from entitle.db import transaction
from entitle.delivery import webhooks
from entitle.delivery.models import WebhookAttempt, WebhookDelivery
from entitle.platform import events
from helpers import REPO
from webhook_receiver import Receiver, running_receiver

TIMEOUT = 1.0  # the test client's (roomy on a busy machine); the receiver's slow answer takes 3 s


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with running_receiver() as r:
        r.slow_seconds = 3.0
        yield r


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=TIMEOUT) as c:
        yield c


class Hooks:
    """One organization with webhook endpoints, events emitted through ``events.emit`` and the
    worker run by hand against the frozen clock."""

    def __init__(self, world: World, http: httpx.Client, name: str = "Hooked") -> None:
        self.ctx: Context = world.ctx
        self.http = http
        self.org = world.org(name)
        self.secrets: dict[int, str] = {}

    @property
    def now(self) -> Any:
        return self.ctx.clock.now()

    def endpoint(self, url: str, types: list[str] | None = None) -> int:
        with transaction(self.ctx.sessions) as s:
            e, secret = webhooks.create_endpoint(s, org_id=self.org, url=url, event_types=types or [],
                                                 actor=operator(), now=self.now, key=self.ctx.secret)
            self.secrets[e.id] = secret
            return e.id

    def emit(self, type: str = "my2n.apartment.lapsed", **payload: Any) -> str:
        with transaction(self.ctx.sessions) as s:
            event = events.emit(s, org_id=self.org, type=type, now=self.now, **payload)
            s.flush()
            return f"evt_{event.id}"

    def deliver(self, rng: Callable[[], float] = random.random, limit: int = 100) -> Counter[str]:
        return Counter(webhooks.deliver_due(self.ctx.sessions, now=self.ctx.clock.now, key=self.ctx.secret,
                                            client=self.http, rng=rng, limit=limit))

    def drain(self, rng: Callable[[], float] = random.random) -> Counter[str]:
        """Run the worker until a pass sends nothing (one pass sends each endpoint's next one)."""
        total: Counter[str] = Counter()
        for _ in range(200):
            counts = self.deliver(rng)
            total.update(counts)
            if not sum(counts.values()):
                return total
        raise AssertionError("the worker kept finding work")

    def deliveries(self, endpoint_id: int | None = None) -> list[WebhookDelivery]:
        with self.ctx.sessions() as s:
            stmt = select(WebhookDelivery).where(WebhookDelivery.org_id == self.org).order_by(WebhookDelivery.id)
            if endpoint_id is not None:
                stmt = stmt.where(WebhookDelivery.endpoint_id == endpoint_id)
            return list(s.scalars(stmt))

    def attempts(self, delivery_id: int) -> list[WebhookAttempt]:
        with self.ctx.sessions() as s:
            return list(s.scalars(select(WebhookAttempt).where(WebhookAttempt.delivery_id == delivery_id)
                                  .order_by(WebhookAttempt.id)))

    def pending(self) -> int:
        return sum(d.state == "pending" for d in self.deliveries())

    def advance_to_next_retry(self) -> None:
        """Move the clock to the soonest retry (deliveries waiting behind it are already due)."""
        due = [d.next_attempt_at for d in self.deliveries() if d.state == "pending" and d.next_attempt_at > self.now]
        if due:
            self.ctx.clock.set(min(due))


@pytest.fixture
def hooks(world: World, http: httpx.Client) -> Hooks:
    return Hooks(world, http)


# --- at least once, one event id, through failures and time-outs ---------------------------------

def test_every_event_is_delivered_through_failures_and_timeouts_under_one_event_id(hooks: Hooks,
                                                                                   receiver: Receiver) -> None:
    # R-CORE-8: the receiver fails, then times out, then answers; every event still arrives, and
    # every retry of an event carries that event's id and the very same body.
    hooks.endpoint(receiver.url())
    emitted = [hooks.emit(apartment=f"Flat {i}") for i in range(5)]
    receiver.script = ["fail", "slow", "fail", "ok", "slow"]
    for _ in range(30):
        hooks.deliver()
        if not hooks.pending():
            break
        hooks.advance_to_next_retry()
    assert hooks.pending() == 0
    assert [d.state for d in hooks.deliveries()] == ["delivered"] * 5
    # Each event was acknowledged once, in the order emitted; retries were the same event.
    assert receiver.acknowledged() == emitted
    assert set(receiver.ids()) == set(emitted) and len(receiver.received) == 5 + 4
    for event_id in emitted:
        copies = [r for r in receiver.received if r.event_id == event_id]
        assert {r.body for r in copies} == {copies[0].body}
        assert copies[0].json["id"] == event_id and copies[0].json["type"] == "my2n.apartment.lapsed"
    # The first event took four attempts (500, time-out, 500, 200); the database kept each one.
    first = hooks.deliveries()[0]
    log = [(a.status_code, a.error) for a in hooks.attempts(first.id)]
    assert [code for code, _ in log] == [500, None, 500, 200] and first.attempts == 4
    assert log[0][1] == "HTTP 500" and "Timeout" in (log[1][1] or "") and log[3][1] is None
    assert first.last_status == 200 and first.delivered_at is not None


def test_an_unreachable_endpoint_is_retried_and_the_refusal_is_kept(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: no answer at all (connection refused): the attempt is kept with no status and its error.
    with bound_socket() as unused:  # bound, never listening: refused, and no parallel worker can take it
        closed = f"http://127.0.0.1:{unused.getsockname()[1]}/gone"
        endpoint = hooks.endpoint(closed)
        hooks.emit()
        assert hooks.deliver() == Counter({"pending": 1})
    [d] = hooks.deliveries(endpoint)
    [attempt] = hooks.attempts(d.id)
    assert attempt.status_code is None and "ConnectError" in (attempt.error or "")
    assert d.state == "pending" and d.last_status is None and d.next_attempt_at > hooks.now


# --- order per endpoint --------------------------------------------------------------------------

def test_a_later_event_waits_while_an_earlier_one_is_retried(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: order per endpoint: while the first event is being retried, the next ones wait;
    # another endpoint of the same organization is not held up.
    hooks.endpoint(receiver.url("/slowpoke"))
    hooks.endpoint(receiver.url("/healthy"))
    emitted = [hooks.emit(apartment=f"Flat {i}") for i in range(3)]
    receiver.modes["/slowpoke"] = "fail"
    hooks.drain()
    assert receiver.ids("/healthy") == emitted  # all three, in order
    assert receiver.ids("/slowpoke") == emitted[:1]  # only the first; the others wait behind it
    for _ in range(3):  # retries of the first, still failing: the others still wait
        hooks.advance_to_next_retry()
        hooks.drain()
    assert set(receiver.ids("/slowpoke")) == {emitted[0]} and len(receiver.ids("/slowpoke")) == 4
    receiver.modes["/slowpoke"] = "ok"
    hooks.advance_to_next_retry()
    hooks.drain()
    assert receiver.acknowledged("/slowpoke") == emitted
    assert receiver.ids("/slowpoke") == [emitted[0]] * 5 + emitted[1:]


# --- back-off, jitter, the retry window, redelivery -------------------------------------------------

def test_backoff_doubles_with_each_attempt_up_to_the_cap_with_jitter_between_half_and_whole() -> None:
    # R-CORE-8: exponential back-off with jitter (rng injected).
    low = [webhooks.backoff(n, lambda: 0.0) for n in range(1, 12)]
    high = [webhooks.backoff(n, lambda: 1.0) for n in range(1, 12)]
    assert high[:4] == [timedelta(seconds=s) for s in (10, 20, 40, 80)]
    assert low == [h / 2 for h in high]
    assert all(a <= b for a, b in zip(high, high[1:])) and high[-1] == webhooks.MAX_RETRY
    assert webhooks.backoff(3, lambda: 0.5) == timedelta(seconds=30)
    # However many attempts a delivery has had (redelivered again and again), the wait stays capped.
    assert webhooks.backoff(100, lambda: 1.0) == webhooks.backoff(10_000, lambda: 1.0) == webhooks.MAX_RETRY


def test_the_worker_waits_the_backoff_it_drew_before_each_retry(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: the wait after each failed attempt grows, and the jitter comes from the rng.
    hooks.endpoint(receiver.url())
    hooks.emit()
    receiver.mode = "fail"
    waits = []
    for _ in range(4):
        at = hooks.now
        assert hooks.deliver(rng=lambda: 0.25) == Counter({"pending": 1})
        [d] = hooks.deliveries()
        waits.append(d.next_attempt_at - at)
        # Not a moment early: just before the retry is due the worker sends nothing.
        hooks.ctx.clock.set(d.next_attempt_at - timedelta(milliseconds=1))
        assert hooks.deliver() == Counter()
        hooks.ctx.clock.set(d.next_attempt_at)
    assert waits == [timedelta(seconds=s * 0.625) for s in (10, 20, 40, 80)]
    assert len(receiver.received) == 4


def test_jitter_spreads_deliveries_that_failed_together(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: two endpoints failing at the same moment do not retry in step.
    hooks.endpoint(receiver.url("/a"))
    hooks.endpoint(receiver.url("/b"))
    hooks.emit()
    receiver.mode = "fail"
    draws = iter([0.0, 1.0])
    hooks.deliver(rng=lambda: next(draws))
    retry_at = sorted(d.next_attempt_at - hooks.now for d in hooks.deliveries())
    assert retry_at == [timedelta(seconds=5), timedelta(seconds=10)]


@pytest.mark.parametrize("jitter", [0.0, 1.0])  # the most attempts (shortest waits), the fewest
def test_a_delivery_gives_up_after_the_retry_window_and_manual_redelivery_sends_it_again(
        hooks: Hooks, receiver: Receiver, jitter: float) -> None:
    # R-CORE-8: retried for a bounded time (RETRY_WINDOW), then failed; manual redelivery sends it again.
    endpoint = hooks.endpoint(receiver.url())
    event_id = hooks.emit()
    emitted_at = hooks.now
    receiver.mode = "fail"
    for _ in range(100):
        hooks.deliver(rng=lambda: jitter)
        [d] = hooks.deliveries()
        if d.state != "pending":
            break
        hooks.ctx.clock.set(d.next_attempt_at)
    assert d.state == "failed" and d.delivered_at is None
    attempts = hooks.attempts(d.id)
    times = [a.attempted_at for a in attempts]
    assert len(attempts) == d.attempts > 20
    assert all(a.status_code == 500 and a.error == "HTTP 500" for a in attempts)
    assert times[-1] - emitted_at <= webhooks.RETRY_WINDOW  # no attempt after the window
    assert d.next_attempt_at - emitted_at > webhooks.RETRY_WINDOW  # the next one would have been
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(a <= b for a, b in zip(gaps, gaps[1:])) and max(gaps) == webhooks.MAX_RETRY * (0.5 + jitter / 2)
    assert len(attempts) == (56 if jitter == 0.0 else 32)  # as docs/webhooks.md says: some 30 to 55 in all
    # Given up: nothing more is sent, however long we wait.
    hooks.ctx.clock.advance(timedelta(days=3))
    assert hooks.drain() == Counter() and len(receiver.received) == len(attempts)
    # Redelivered by hand, it goes out again under the same event id, and this time arrives.
    receiver.mode = "ok"
    with transaction(hooks.ctx.sessions) as s:
        webhooks.redeliver(s, org_id=hooks.org, delivery_id=d.id, actor=operator(), now=hooks.now)
    assert hooks.deliver() == Counter({"delivered": 1})
    assert receiver.received[-1].event_id == event_id and receiver.acknowledged() == [event_id]
    [d] = hooks.deliveries(endpoint)
    assert d.state == "delivered" and d.attempts == len(attempts) + 1


def test_a_delivered_event_can_be_redelivered_under_the_same_id(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: manual redelivery of an event the receiver says it lost.
    hooks.endpoint(receiver.url())
    event_id = hooks.emit()
    assert hooks.drain() == Counter({"delivered": 1})
    [d] = hooks.deliveries()
    with transaction(hooks.ctx.sessions) as s:
        webhooks.redeliver(s, org_id=hooks.org, delivery_id=d.id, actor=operator(), now=hooks.now)
    assert hooks.drain() == Counter({"delivered": 1})
    assert receiver.ids() == [event_id, event_id]
    assert receiver.received[0].body == receiver.received[1].body


# --- the signature ---------------------------------------------------------------------------------

def test_the_signature_verifies_with_the_endpoint_secret_only_and_over_the_exact_body(
        hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: HMAC-SHA256 over "<t>.<body>" with the endpoint's own secret.
    first = hooks.endpoint(receiver.url("/one"))
    second = hooks.endpoint(receiver.url("/two"))
    hooks.emit(type="key.redeemed", key_id=7)
    hooks.drain()
    [one], [two] = receiver.at("/one"), receiver.at("/two")
    now = hooks.now.timestamp()
    assert webhooks.verify(hooks.secrets[first], one.body, one.signature, now=now)
    assert webhooks.verify(hooks.secrets[second], two.body, two.signature, now=now)
    # Another endpoint's secret, a made-up one, or a body changed by one byte: refused.
    assert not webhooks.verify(hooks.secrets[second], one.body, one.signature, now=now)
    assert not webhooks.verify("whsec_not-the-secret", one.body, one.signature, now=now)
    altered = one.body.replace(b'"key_id":7', b'"key_id":8')
    assert altered != one.body and not webhooks.verify(hooks.secrets[first], altered, one.signature, now=now)
    # The timestamp is the moment of sending; an old signature is refused (replay).
    t = int(re.match(r"t=(\d+),v1=[0-9a-f]{64}$", one.signature).group(1))  # type: ignore[union-attr]
    assert t == int(now)
    assert not webhooks.verify(hooks.secrets[first], one.body, one.signature, now=now + 3600)
    # A receiver needs nothing but the standard library to check it.
    mac = hmac.new(hooks.secrets[first].encode(), f"{t}.".encode() + one.body, hashlib.sha256).hexdigest()
    assert one.signature == f"t={t},v1={mac}"
    assert one.headers["Content-Type"] == "application/json"


def test_the_verification_example_in_the_docs_works(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: the documented receiver code accepts a real delivery and refuses a forged one.
    code = re.search(r"```python\n(.*?)```", (REPO / "docs" / "webhooks.md").read_text(), re.S)
    assert code is not None
    namespace: dict[str, Any] = {}
    exec(code.group(1), namespace)  # noqa: S102 - our own documentation
    endpoint = hooks.endpoint(receiver.url())
    hooks.emit()
    hooks.drain()
    [got] = receiver.received
    check = namespace["verify_entitle_signature"]
    secret = hooks.secrets[endpoint]
    assert check(secret, got.body, got.signature, now=hooks.now.timestamp())
    assert not check(secret, got.body + b" ", got.signature, now=hooks.now.timestamp())
    assert not check("whsec_other", got.body, got.signature, now=hooks.now.timestamp())
    assert not check(secret, got.body, got.signature, now=hooks.now.timestamp() + 600)


# --- which endpoints get what ---------------------------------------------------------------------

def test_event_type_filters_exact_and_by_area(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: an endpoint gets the types it asked for; "area.*" is every type of an area; none is all.
    paths = {"/all": [], "/my2n": ["my2n.*"], "/grace": ["axis.grace.started"], "/mixed": ["axis.*", "key.redeemed"]}
    for path, types in paths.items():
        hooks.endpoint(receiver.url(path), types)
    sent = {t: hooks.emit(type=t) for t in ("my2n.apartment.lapsed", "axis.grace.started", "axis.grace.ended",
                                            "key.redeemed", "ac.devices.inactive", "my2nx.lookalike")}
    hooks.drain()
    got = {path: [r.json["type"] for r in receiver.at(path)] for path in paths}
    assert got == {
        "/all": list(sent),
        "/my2n": ["my2n.apartment.lapsed"],
        "/grace": ["axis.grace.started"],
        "/mixed": ["axis.grace.started", "axis.grace.ended", "key.redeemed"],
    }
    assert {r.event_id for r in receiver.received} == set(sent.values())


def test_an_inactive_endpoint_gets_nothing(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: switched off, an endpoint gets no new events, nor the ones still waiting for it;
    # switched on again, it gets what was waiting and what comes next.
    endpoint = hooks.endpoint(receiver.url("/off"))
    waiting = hooks.emit()  # made while active, not yet sent
    with transaction(hooks.ctx.sessions) as s:
        webhooks.update_endpoint(s, org_id=hooks.org, endpoint_id=endpoint, actor=operator(), now=hooks.now,
                                 active=False)
    hooks.emit()  # made while inactive: no delivery at all
    hooks.ctx.clock.advance(timedelta(minutes=5))
    assert hooks.drain() == Counter() and receiver.received == []
    assert len(hooks.deliveries(endpoint)) == 1
    with transaction(hooks.ctx.sessions) as s:
        webhooks.update_endpoint(s, org_id=hooks.org, endpoint_id=endpoint, actor=operator(), now=hooks.now,
                                 active=True)
    later = hooks.emit()
    hooks.drain()
    assert receiver.acknowledged() == [waiting, later]


def test_another_organizations_endpoint_gets_nothing(world: World, hooks: Hooks, http: httpx.Client,
                                                     receiver: Receiver) -> None:
    # R-CORE-8 with R-CORE-1: an event goes to its own organization's endpoints only.
    other = Hooks(world, http, name="Other")
    other.endpoint(receiver.url("/other"))
    hooks.endpoint(receiver.url("/mine"))
    mine = hooks.emit()
    hooks.drain()
    assert receiver.ids("/mine") == [mine] and receiver.at("/other") == []


# --- several workers, and a worker that dies -------------------------------------------------------

def test_two_workers_at_once_never_send_one_delivery_twice(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: deliveries are claimed by lease: two workers running deliver_due at the same time
    # (threads, each with its own sessions) send each delivery exactly once and keep each endpoint's order.
    endpoints = 6
    paths = [f"/w{i}" for i in range(endpoints)]
    for path in paths:
        hooks.endpoint(receiver.url(path))
    emitted = [hooks.emit(apartment=f"Flat {i}") for i in range(5)]
    receiver.delay = 0.01  # each answer takes a moment: the workers overlap
    start = threading.Barrier(2)
    sent: dict[str, int] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            with httpx.Client(timeout=5) as client:
                start.wait()
                deadline = time.monotonic() + 60
                while hooks.pending() and time.monotonic() < deadline:
                    counts = webhooks.deliver_due(hooks.ctx.sessions, now=hooks.ctx.clock.now, key=hooks.ctx.secret,
                                                  client=client)
                    sent[name] = sent.get(name, 0) + sum(counts.values())
                    if not sum(counts.values()):
                        time.sleep(0.002)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("one", "two")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert not errors, errors
    assert hooks.pending() == 0
    for path in paths:
        assert receiver.ids(path) == emitted, path  # each once, in order
    assert len(receiver.received) == endpoints * len(emitted) == sum(sent.values())
    assert all(d.attempts == 1 and d.state == "delivered" for d in hooks.deliveries())
    assert sent["one"] > 0 and sent["two"] > 0  # both really worked


def test_a_worker_killed_after_claiming_leaves_the_delivery_to_be_sent_after_the_lease(
        hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: at least once: a worker that claimed a delivery and died before recording it
    # does not lose it; once the lease runs out another worker sends it.
    hooks.endpoint(receiver.url())
    event_id = hooks.emit()
    [claimed] = webhooks._claim(hooks.ctx.sessions, now=hooks.now, limit=10, key=hooks.ctx.secret)
    # ... the worker dies here: nothing sent, nothing recorded.
    assert hooks.deliver() == Counter()  # the lease holds: nobody else takes it meanwhile
    hooks.ctx.clock.advance(webhooks.LEASE - timedelta(seconds=1))
    assert hooks.deliver() == Counter() and receiver.received == []
    hooks.ctx.clock.advance(timedelta(seconds=1))
    assert hooks.deliver() == Counter({"delivered": 1})
    assert receiver.ids() == [event_id]
    [d] = hooks.deliveries()
    assert d.id == claimed.delivery_id and d.attempts == 1


def test_a_worker_killed_after_sending_but_before_recording_sends_it_again_under_the_same_id(
        hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8: the receiver may see an event twice -- the same Entitle-Event-Id, so it can tell.
    hooks.endpoint(receiver.url())
    event_id = hooks.emit()
    [claimed] = webhooks._claim(hooks.ctx.sessions, now=hooks.now, limit=10, key=hooks.ctx.secret)
    assert webhooks._send(hooks.http, claimed, hooks.now).ok  # sent; the worker dies before recording
    hooks.ctx.clock.advance(webhooks.LEASE)
    assert hooks.deliver() == Counter({"delivered": 1})
    assert receiver.ids() == [event_id, event_id]
    assert receiver.received[0].body == receiver.received[1].body


def test_events_and_deliveries_commit_together_or_not_at_all(hooks: Hooks, receiver: Receiver) -> None:
    # R-CORE-8 (outbox): a change rolled back takes its event and its deliveries with it.
    hooks.endpoint(receiver.url())

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        with transaction(hooks.ctx.sessions) as s:
            events.emit(s, org_id=hooks.org, type="key.redeemed", now=hooks.now)
            s.flush()
            raise Boom
    assert hooks.deliveries() == [] and hooks.drain() == Counter()
    kept = hooks.emit(type="key.redeemed")
    hooks.drain()
    assert receiver.ids() == [kept]


def test_docs_describe_the_numbers_the_code_uses() -> None:
    # The documented back-off, window and lease are the code's, and the documented request verifies.
    text = (Path(REPO) / "docs" / "webhooks.md").read_text()
    header = re.search(r"^Entitle-Signature: (.+)$", text, re.M).group(1)  # type: ignore[union-attr]
    body = re.search(r'^(\{"created_at".+\})$', text, re.M).group(1).encode()  # type: ignore[union-attr]
    assert webhooks.verify("whsec_example", body, header, now=1768467600)
    assert not webhooks.verify("whsec_other", body, header, now=1768467600)
    assert "10 seconds" in text and "1 hour" in text and "24 hours" in text and "60 seconds" in text
    assert webhooks.FIRST_RETRY == timedelta(seconds=10) and webhooks.MAX_RETRY == timedelta(hours=1)
    assert webhooks.RETRY_WINDOW == timedelta(hours=24) and webhooks.LEASE == timedelta(seconds=60)
