"""Card payments for apartment licenses (R-MY-5): the Stripe adapter and the local provider.

The Stripe adapter talks to a fake Stripe API on 127.0.0.1; a guard refuses any other connection,
so nothing here leaves the machine. De-duplicating webhook events is the service's job: these
tests only prove that a redelivered event keeps its id.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

import pytest
import stripe

from entitle.clock import FrozenClock
from entitle.my2n.payments import (
    LocalProvider,
    PaymentError,
    StripeProvider,
    sign_webhook,
)

SECRET = "whsec_test_secret"
TIMEOUT = 0.5


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The adapter would report a blocked connection as "unreachable", so record it and fail loudly.
    real_connect = socket.socket.connect
    escaped: list[Any] = []

    def connect(self: socket.socket, address: Any) -> None:
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1"):
            escaped.append(address)
            raise OSError(f"a test tried to reach {address}")
        return real_connect(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield
    assert escaped == [], f"calls left the machine: {escaped}"


# --- A fake Stripe API ----------------------------------------------------------------------


class FakeStripe(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.requests: list[dict[str, Any]] = []
        self.mode: str | None = None  # "decline", "error", "slow"
        self.invoice_status = "paid"  # the renewal invoice Stripe made at the anniversary

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(BaseHTTPRequestHandler):
    server: FakeStripe

    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self._answer()

    def do_POST(self) -> None:
        self._answer()

    def do_DELETE(self) -> None:
        self._answer()

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        self.server.requests.append(
            {"method": self.command, "path": self.path, "headers": dict(self.headers), "form": form}
        )
        mode = self.server.mode
        if mode == "slow":
            time.sleep(TIMEOUT * 3)
        if mode == "decline" and self.command == "POST":
            return self._send(402, {"error": {
                "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
                "message": "Your card has insufficient funds.",
            }})
        if mode == "error":
            return self._send(500, {"error": {"type": "api_error", "message": "Something went wrong."}})
        self._send(200, self._object(self.command, self.path, form, self.server.invoice_status))

    @staticmethod
    def _object(method: str, path: str, form: dict[str, str], invoice_status: str) -> dict[str, Any]:
        if path == "/v1/customers":
            return {"id": "cus_1", "object": "customer", "metadata": {"entitle_site": form["metadata[entitle_site]"]}}
        if path.startswith("/v1/customers/"):
            card = None if path.endswith("cus_nocard") else "pm_card_1"
            return {"id": path.rsplit("/", 1)[1], "object": "customer",
                    "invoice_settings": {"default_payment_method": card}}
        if path == "/v1/subscriptions":
            quantity = int(form["items[0][quantity]"])
            return {"id": "sub_1", "object": "subscription", "status": "active",
                    "latest_invoice": {"id": "in_1", "object": "invoice", "amount_paid": quantity * 1200},
                    "items": {"object": "list", "data": [{"object": "subscription_item",
                                                          "quantity": int(form["items[0][quantity]"])}]}}
        if path.startswith("/v1/subscriptions/sub_1") and method == "GET":  # retrieve, the invoice expanded
            return {"id": "sub_1", "object": "subscription", "status": "active",
                    "latest_invoice": {"id": "in_2", "object": "invoice", "status": invoice_status,
                                       "amount_paid": 12 * 1200 if invoice_status == "paid" else 0,
                                       "currency": "eur"},
                    "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                                                          "quantity": 12}]}}
        if path == "/v1/subscriptions/sub_1" and method == "POST":  # a quantity update
            invoiced = form.get("proration_behavior") == "always_invoice"
            return {"id": "sub_1", "object": "subscription", "status": "active",
                    "latest_invoice": {"id": "in_3", "object": "invoice", "amount_paid": 550 if invoiced else 0,
                                       "currency": "eur"},
                    "items": {"object": "list", "data": [{"id": "si_1", "object": "subscription_item",
                                                          "quantity": int(form["items[0][quantity]"])}]}}
        if path == "/v1/invoices/in_2/pay":
            return {"id": "in_2", "object": "invoice", "status": "paid", "amount_paid": 12 * 1200, "currency": "eur"}
        if path.startswith("/v1/subscriptions/") and method == "DELETE":
            return {"id": path.rsplit("/", 1)[1], "object": "subscription", "status": "canceled",
                    "items": {"object": "list", "data": [{"object": "subscription_item", "quantity": 12}]}}
        if path == "/v1/payment_methods/pm_card_4242/attach":
            return {"id": "pm_card_4242", "object": "payment_method", "customer": form["customer"],
                    "card": {"brand": "visa", "last4": "4242"}}
        if path == "/v1/payment_intents":
            return {"id": "pi_1", "object": "payment_intent", "status": "succeeded",
                    "amount": int(form["amount"]), "currency": form["currency"]}
        raise AssertionError(f"unexpected {method} {path}")

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Request-Id", "req_test")
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (the slow case)
            pass


@pytest.fixture
def fake_stripe() -> Iterator[FakeStripe]:
    server = FakeStripe()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def provider(fake_stripe: FakeStripe, clock: FrozenClock) -> StripeProvider:
    return StripeProvider(api_key="sk_test_local", webhook_secret=SECRET, price_id="price_apartment_year",
                          api_base=fake_stripe.base, timeout=TIMEOUT, clock=clock)


# --- Stripe adapter: calls ------------------------------------------------------------------


def test_customer_is_created_for_the_site_with_the_idempotency_key(provider, fake_stripe):
    # R-MY-5: every create carries the caller's idempotency key, so a retry never makes two.
    customer_id = provider.create_customer("site-42", name="Block A", email="admin@example.com",
                                           idempotency_key="customer:site-42")
    assert customer_id == "cus_1"
    [request] = fake_stripe.requests
    assert request["headers"]["Idempotency-Key"] == "customer:site-42"
    assert request["headers"]["Authorization"] == "Bearer sk_test_local"
    assert request["form"]["metadata[entitle_site]"] == "site-42"


def test_recurring_payment_is_an_annual_subscription_for_the_apartments(provider, fake_stripe):
    # R-MY-5: recurring payment = one subscription whose quantity is the number of apartments,
    # paid now or not created at all.
    sub = provider.start_recurring("cus_1", site_reference="site-42", apartments=12, idempotency_key="sub:k1")
    assert (sub.id, sub.status, sub.apartments) == ("sub_1", "active", 12)
    # The first year's invoice comes back with it, so the service pays the apartments at once.
    assert (sub.latest_payment_id, sub.amount_minor) == ("in_1", 12 * 1200)
    [request] = fake_stripe.requests
    assert request["form"]["expand[0]"] == "latest_invoice"
    assert request["headers"]["Idempotency-Key"] == "sub:k1"
    assert request["form"]["items[0][price]"] == "price_apartment_year"
    assert request["form"]["items[0][quantity]"] == "12"
    assert request["form"]["payment_behavior"] == "error_if_incomplete"
    assert request["form"]["metadata[entitle_apartments]"] == "12"


def test_stopping_recurring_payment_cancels_the_subscription(provider, fake_stripe):
    # R-MY-5: recurring payment must be stopped before the card can change.
    sub = provider.stop_recurring("sub_1")
    assert (sub.id, sub.status) == ("sub_1", "canceled")
    assert fake_stripe.requests[0]["method"] == "DELETE"


def test_more_apartments_update_the_quantity_with_proration_invoiced_now(provider, fake_stripe):
    # R-MY-5: the subscription follows the apartments; the rest of the billing year is invoiced at once.
    sub = provider.update_quantity("sub_1", site_reference="site-42", apartments=14, amount_minor=550,
                                   idempotency_key="qty:k1")
    assert (sub.apartments, sub.latest_payment_id, sub.amount_minor, sub.currency) == (14, "in_3", 550, "eur")
    retrieve, update = fake_stripe.requests
    assert (retrieve["method"], retrieve["path"]) == ("GET", "/v1/subscriptions/sub_1")
    assert (update["method"], update["path"]) == ("POST", "/v1/subscriptions/sub_1")
    assert update["headers"]["Idempotency-Key"] == "qty:k1"
    form = update["form"]
    assert (form["items[0][id]"], form["items[0][quantity]"]) == ("si_1", "14")  # the same item, not a new one
    assert (form["proration_behavior"], form["payment_behavior"]) == ("always_invoice", "error_if_incomplete")
    assert form["metadata[entitle_apartments]"] == "14"


def test_fewer_apartments_lower_the_quantity_and_refund_nothing(provider, fake_stripe):
    # R-MY-5: an apartment that stops needing a license is not renewed; what was paid stays paid.
    sub = provider.update_quantity("sub_1", site_reference="site-42", apartments=10, amount_minor=0,
                                   idempotency_key="qty:k2")
    assert (sub.apartments, sub.latest_payment_id, sub.amount_minor) == (10, None, None)
    assert fake_stripe.requests[1]["form"]["proration_behavior"] == "none"


def test_a_renewal_pays_the_open_anniversary_invoice_once(provider, fake_stripe):
    # R-MY-5: at the anniversary Stripe makes the invoice; a retry pays it with the caller's key.
    fake_stripe.invoice_status = "open"
    renews = datetime(2027, 1, 15, tzinfo=UTC)
    sub = provider.renew("sub_1", site_reference="site-42", apartments=12, amount_minor=12 * 1200,
                         renews_at=renews, idempotency_key="renew:k1")
    assert (sub.latest_payment_id, sub.amount_minor, sub.currency) == ("in_2", 12 * 1200, "eur")
    retrieve, pay = fake_stripe.requests
    assert retrieve["path"].startswith("/v1/subscriptions/sub_1") and "latest_invoice" in retrieve["path"]
    assert (pay["path"], pay["headers"]["Idempotency-Key"]) == ("/v1/invoices/in_2/pay", "renew:k1")


def test_a_renewal_already_paid_by_stripe_is_not_paid_again(provider, fake_stripe):
    # R-MY-5: nobody pays twice: a paid invoice is only read.
    sub = provider.renew("sub_1", site_reference="site-42", apartments=12, amount_minor=12 * 1200,
                         renews_at=datetime(2027, 1, 15, tzinfo=UTC), idempotency_key="renew:k2")
    assert sub.latest_payment_id == "in_2" and [r["method"] for r in fake_stripe.requests] == ["GET"]


def test_a_declined_renewal_is_payment_declined(provider, fake_stripe):
    # R-MY-5: the retry window's charge fails: the service keeps the apartments and tries again.
    fake_stripe.invoice_status, fake_stripe.mode = "open", "decline"
    with pytest.raises(PaymentError) as refused:
        provider.renew("sub_1", site_reference="site-42", apartments=12, amount_minor=12 * 1200,
                       renews_at=datetime(2027, 1, 15, tzinfo=UTC), idempotency_key="renew:k3")
    assert refused.value.code == "payment_declined"


def test_a_card_is_attached_and_made_the_default(provider, fake_stripe):
    # R-MY-5: the card the user entered in the provider's form becomes the one recurring payment uses.
    label = provider.set_card("cus_1", payment_method="pm_card_4242", idempotency_key="card:k1")
    assert label == "Visa •••• 4242"  # R-MY-5: the brand and the last four digits
    attach, update = fake_stripe.requests
    assert (attach["path"], attach["headers"]["Idempotency-Key"]) == ("/v1/payment_methods/pm_card_4242/attach", "card:k1")
    assert attach["form"]["customer"] == "cus_1"
    assert (update["path"], update["form"]["invoice_settings[default_payment_method]"]) == (
        "/v1/customers/cus_1", "pm_card_4242")


def test_a_one_off_charge_uses_the_card_on_file_and_the_key(provider, fake_stripe):
    charge = provider.charge_once("cus_1", site_reference="site-42", amount_minor=2400, currency="EUR",
                                  idempotency_key="charge:k1", description="2 apartments")
    assert (charge.id, charge.status, charge.amount_minor, charge.currency) == ("pi_1", "succeeded", 2400, "eur")
    lookup, create = fake_stripe.requests
    assert lookup["method"] == "GET"
    assert create["headers"]["Idempotency-Key"] == "charge:k1"
    assert create["form"]["payment_method"] == "pm_card_1"
    assert create["form"]["off_session"] == "true"


def test_a_one_off_charge_without_a_card_asks_for_one(provider, fake_stripe):
    with pytest.raises(PaymentError) as refused:
        provider.charge_once("cus_nocard", site_reference="site-42", amount_minor=100, currency="eur",
                             idempotency_key="charge:k2")
    assert refused.value.code == "payment_method_missing"
    assert len(fake_stripe.requests) == 1  # nothing was attempted


# --- Stripe adapter: failures ---------------------------------------------------------------


def test_a_declined_card_is_payment_declined_with_the_reason(provider, fake_stripe):
    fake_stripe.mode = "decline"
    with pytest.raises(PaymentError) as refused:
        provider.start_recurring("cus_1", site_reference="site-42", apartments=3, idempotency_key="sub:k2")
    assert refused.value.code == "payment_declined"
    assert refused.value.status == 402
    assert refused.value.detail["decline_code"] == "insufficient_funds"
    assert "insufficient funds" in refused.value.message


def test_a_provider_failure_is_payment_provider_error(provider, fake_stripe):
    fake_stripe.mode = "error"
    with pytest.raises(PaymentError) as refused:
        provider.charge_once("cus_1", site_reference="site-42", amount_minor=100, currency="eur",
                             idempotency_key="charge:k3")
    assert refused.value.code == "payment_provider_error"
    assert refused.value.detail["provider_status"] == 500
    assert len(fake_stripe.requests) == 1  # no automatic retries


def test_a_slow_provider_is_unreachable_after_the_timeout(provider, fake_stripe):
    fake_stripe.mode = "slow"
    started = time.monotonic()
    with pytest.raises(PaymentError) as refused:
        provider.start_recurring("cus_1", site_reference="site-42", apartments=3, idempotency_key="sub:k3")
    assert refused.value.code == "payment_provider_unreachable"
    assert refused.value.status == 503
    assert time.monotonic() - started < TIMEOUT * 3
    assert len(fake_stripe.requests) == 1  # no automatic retries


def test_a_provider_that_refuses_connections_is_unreachable(clock):
    with socket.socket() as s:  # a port nobody listens on (kept bound: no parallel worker can take it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        provider = StripeProvider(api_key="sk_test_local", webhook_secret=SECRET, price_id="price_x",
                                  api_base=f"http://127.0.0.1:{port}", timeout=TIMEOUT, clock=clock)
        with pytest.raises(PaymentError) as refused:
            provider.create_customer("site-42", name="Block A", email=None, idempotency_key="customer:site-42")
    assert refused.value.code == "payment_provider_unreachable"


# --- Webhooks -------------------------------------------------------------------------------


def _invoice_paid(event_id: str = "evt_1", site: str | None = "site-42") -> bytes:
    metadata = {"entitle_site": site, "entitle_apartments": "12"} if site else {}
    return json.dumps({
        "id": event_id, "object": "event", "type": "invoice.paid", "created": 1768467600,
        "data": {"object": {
            "id": "in_1", "object": "invoice", "customer": "cus_1", "amount_paid": 14400, "currency": "eur",
            "parent": {"type": "subscription_details",
                       "subscription_details": {"subscription": "sub_1", "metadata": metadata}},
            "lines": {"object": "list", "data": [{"object": "line_item", "quantity": 12}]},
        }},
    }).encode()


def _stripe_header(payload: bytes, clock: FrozenClock, secret: str = SECRET, age: int = 0) -> str:
    """Signed by the stripe package itself, as Stripe would."""
    timestamp = int(clock.now().timestamp()) - age
    return stripe.WebhookSignature.generate_signature_header(payload.decode(), secret, timestamp=timestamp)


def test_a_correctly_signed_renewal_parses(provider, clock):
    event = provider.parse_webhook(_invoice_paid(), _stripe_header(_invoice_paid(), clock))
    assert event.event_id == "evt_1"
    assert event.type == "payment_succeeded"
    assert (event.site_reference, event.subscription_id, event.payment_id) == ("site-42", "sub_1", "in_1")
    assert (event.amount_minor, event.currency, event.apartments) == (14400, "eur", 12)


@pytest.mark.parametrize("case", ["tampered", "wrong secret", "too old", "no header", "garbage header"])
def test_a_webhook_that_does_not_verify_is_refused(provider, clock, case):
    payload = _invoice_paid()
    header = {
        "tampered": _stripe_header(payload, clock),
        "wrong secret": _stripe_header(payload, clock, secret="whsec_other"),
        "too old": _stripe_header(payload, clock, age=301),
        "no header": "",
        "garbage header": "t=abc,v0=zz",
    }[case]
    if case == "tampered":
        payload = payload.replace(b"14400", b"1")
    with pytest.raises(PaymentError) as refused:
        provider.parse_webhook(payload, header)
    assert refused.value.code == "webhook_signature_invalid"


def test_a_recent_webhook_within_the_tolerance_parses(provider, clock):
    assert provider.parse_webhook(_invoice_paid(), _stripe_header(_invoice_paid(), clock, age=299)).event_id == "evt_1"


def test_a_redelivered_event_keeps_its_id(provider, clock):
    # Stripe re-signs each delivery; the event id is what the service de-duplicates on.
    first = provider.parse_webhook(_invoice_paid(), _stripe_header(_invoice_paid(), clock))
    clock.advance(timedelta(minutes=10))
    again = provider.parse_webhook(_invoice_paid(), _stripe_header(_invoice_paid(), clock))
    assert first.event_id == again.event_id == "evt_1"
    assert first.occurred_at == again.occurred_at


def test_events_without_our_site_or_of_other_types_are_ignored(provider, clock):
    foreign = _invoice_paid(site=None)
    assert provider.parse_webhook(foreign, _stripe_header(foreign, clock)).type == "ignored"
    other = json.dumps({"id": "evt_2", "object": "event", "type": "customer.updated", "created": 1768467600,
                        "data": {"object": {"id": "cus_1", "object": "customer"}}}).encode()
    assert provider.parse_webhook(other, _stripe_header(other, clock)).type == "ignored"


def test_local_signatures_are_stripe_signatures(clock):
    payload = _invoice_paid()
    timestamp = int(clock.now().timestamp())
    assert sign_webhook(payload, SECRET, timestamp) == stripe.WebhookSignature.generate_signature_header(
        payload.decode(), SECRET, timestamp=timestamp)


# --- Local provider -------------------------------------------------------------------------


@pytest.fixture
def local(clock: FrozenClock) -> LocalProvider:
    return LocalProvider(webhook_secret=SECRET, clock=clock)


def test_local_provider_hands_out_deterministic_ids_and_honours_keys(local):
    customer = local.create_customer("site-42", name="Block A", email=None, idempotency_key="c1")
    assert customer == "cus_local_0001"
    assert local.create_customer("site-42", name="Block A", email=None, idempotency_key="c1") == customer
    sub = local.start_recurring(customer, site_reference="site-42", apartments=4, idempotency_key="s1")
    assert sub.id == "sub_local_0001"
    assert local.start_recurring(customer, site_reference="site-42", apartments=4, idempotency_key="s1") == sub
    with pytest.raises(PaymentError) as refused:  # the same key for another request, as at Stripe
        local.start_recurring(customer, site_reference="site-42", apartments=5, idempotency_key="s1")
    assert refused.value.code == "payment_provider_error"


def test_local_decline_switch_leaves_nothing_paid(local):
    customer = local.create_customer("site-42", name="Block A", email=None, idempotency_key="c1")
    local.declining = True
    with pytest.raises(PaymentError) as refused:
        local.start_recurring(customer, site_reference="site-42", apartments=4, idempotency_key="s1")
    assert refused.value.code == "payment_declined"
    with pytest.raises(PaymentError) as refused:
        local.charge_once(customer, site_reference="site-42", amount_minor=100, currency="eur", idempotency_key="p1")
    assert refused.value.code == "payment_declined"
    assert (local.subscriptions, local.charges, local.outbox) == ({}, {}, [])


def test_local_time_out_switch_then_retry_with_the_same_key_pays_once(local):
    customer = local.create_customer("site-42", name="Block A", email=None, idempotency_key="c1")
    local.timing_out = True
    with pytest.raises(PaymentError) as refused:
        local.charge_once(customer, site_reference="site-42", amount_minor=100, currency="eur", idempotency_key="p1")
    assert refused.value.code == "payment_provider_unreachable"
    with pytest.raises(PaymentError):
        local.stop_recurring("sub_local_0001")
    local.timing_out = False
    for _ in range(2):
        local.charge_once(customer, site_reference="site-42", amount_minor=100, currency="eur", idempotency_key="p1")
    assert list(local.charges) == ["pi_local_0001"]


def test_local_webhooks_go_through_the_same_verification(local, clock):
    # R-MY-5: what the local provider sends reads exactly like Stripe's events.
    customer = local.create_customer("site-42", name="Block A", email=None, idempotency_key="c1")
    sub = local.start_recurring(customer, site_reference="site-42", apartments=4, idempotency_key="s1")
    local.stop_recurring(sub.id)
    local.charge_once(customer, site_reference="site-42", amount_minor=250, currency="eur", idempotency_key="p1")
    events = [local.parse_webhook(payload, header) for payload, header in local.outbox]
    assert [(e.type, e.subscription_id, e.amount_minor, e.apartments) for e in events] == [
        ("payment_succeeded", sub.id, 4 * local.annual_price_minor, 4),
        ("subscription_cancelled", sub.id, None, 4),
        ("payment_succeeded", None, 250, None),
    ]
    assert {e.site_reference for e in events} == {"site-42"}
    assert len({e.event_id for e in events}) == 3

    payload, header = local.outbox[0]
    with pytest.raises(PaymentError) as refused:
        LocalProvider(webhook_secret="whsec_other", clock=clock).parse_webhook(payload, header)
    assert refused.value.code == "webhook_signature_invalid"
    clock.advance(timedelta(minutes=6))
    with pytest.raises(PaymentError) as refused:
        local.parse_webhook(payload, header)
    assert refused.value.code == "webhook_signature_invalid"
