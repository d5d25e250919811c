"""Card payments for My2N apartment licenses (R-MY-5), behind one interface.

:class:`PaymentProvider` is what the my2n services call. Two implementations:

- :class:`StripeProvider` is the real adapter. It talks to Stripe through the official ``stripe``
  package (a :class:`stripe.StripeClient` with its own API key, base URL and timeout, no automatic
  network retries) and verifies webhooks with Stripe's own signature check.
- :class:`LocalProvider` is the local one, for development and tests. It keeps everything in
  memory, hands out deterministic ids, can be told to decline cards or to time out, and signs its
  webhooks in Stripe's ``Stripe-Signature`` format so they go through the same parsing path.

Every failure is a :class:`PaymentError` with a stable code. Recurring payment is one annual
subscription per site, its quantity the number of apartments needing a license, renewing at the
site's anniversary; it has to be stopped before the card can be changed (R-MY-5). What is charged
is decided by the service (``rules.charge_lines``: what is not paid yet, pro rata by day) and
passed in as ``amount_minor``; the provider charges that, or nothing when it is 0.

Callers own idempotency: every call that creates something takes an ``idempotency_key``, and a
call that failed with ``payment_provider_unreachable`` must be retried with the *same* key -- the
provider may have done the work before the connection dropped, and only the key stops a second
charge. Webhook events can arrive more than once and out of order; de-duplicating them by
``PaymentEvent.event_id`` is the service's job, not this module's.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, Protocol, TypeVar, cast

import stripe
from stripe.params import CustomerCreateParams

from entitle.clock import Clock, SystemClock
from entitle.errors import EntitleError

PaymentEventType = Literal["payment_succeeded", "payment_failed", "subscription_cancelled", "ignored"]

# Metadata keys written on every object we create, read back from webhooks.
SITE_KEY = "entitle_site"
APARTMENTS_KEY = "entitle_apartments"

T = TypeVar("T")

WEBHOOK_TOLERANCE_SECONDS = 300  # Stripe's own default: older deliveries are refused as replays.


class PaymentError(EntitleError):
    """A payment that did not happen, or a webhook we refuse.

    Codes: ``payment_declined`` (402), ``payment_method_missing`` (402),
    ``payment_provider_unreachable`` (503; time-outs and connection errors -- the outcome is
    unknown, retry with the same idempotency key), ``payment_provider_error`` (502; the provider
    answered with an error), ``webhook_signature_invalid`` (400).
    """

    _STATUS = {
        "payment_declined": 402,
        "payment_method_missing": 402,
        "payment_provider_unreachable": 503,
        "payment_provider_error": 502,
        "webhook_signature_invalid": 400,
    }

    def __init__(self, code: str, message: str, **detail: Any) -> None:
        super().__init__(code, message, status=self._STATUS.get(code, 502), **detail)


def _declined(reason: str, provider_message: str | None = None) -> PaymentError:
    said = f" ({provider_message.rstrip('.')})" if provider_message else ""
    return PaymentError(
        "payment_declined",
        f"The card was declined{said}. Use another card, or ask the card holder's bank why.",
        decline_code=reason,
    )


def _unreachable(reason: str) -> PaymentError:
    return PaymentError(
        "payment_provider_unreachable",
        "The payment provider did not answer. Nothing is confirmed as paid; try again in a few minutes.",
        reason=reason,
    )


def _signature_invalid(reason: str) -> PaymentError:
    return PaymentError(
        "webhook_signature_invalid",
        "The webhook's signature does not verify (wrong secret, altered body or too old); it was ignored.",
        reason=reason,
    )


@dataclass(frozen=True)
class Subscription:
    id: str
    status: str  # the provider's word: "active" once paid, "canceled" once stopped
    apartments: int
    # The invoice that paid the first year (when the provider says so), and what it took: the
    # service pays the apartments at once, keyed by this id, and the invoice's webhook finds
    # them paid.
    latest_payment_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None


@dataclass(frozen=True)
class Charge:
    id: str
    status: str  # "succeeded" when the money is taken; anything else waits for a webhook
    amount_minor: int
    currency: str


@dataclass(frozen=True)
class PaymentEvent:
    """A verified webhook, reduced to what the my2n services need.

    ``type`` is ``ignored`` for verified events that concern nothing of ours (other event types,
    objects without our site metadata); the endpoint should still answer 200 to them.
    """

    event_id: str
    type: PaymentEventType
    occurred_at: datetime
    provider_type: str  # e.g. "invoice.paid", kept for logs
    site_reference: str | None = None
    customer_id: str | None = None
    subscription_id: str | None = None
    payment_id: str | None = None  # the invoice or payment intent
    amount_minor: int | None = None
    currency: str | None = None
    apartments: int | None = None
    failure_message: str | None = None


class PaymentProvider(Protocol):
    annual_price_minor: int  # an apartment-year, in minor units: of a region without a price of its own
    currency: str

    def price(self, region: str) -> tuple[int, str]:
        """An apartment-year for a site of ``region``: minor units and currency (lower case)."""
        ...

    def create_customer(
        self, site_reference: str, *, name: str, email: str | None, idempotency_key: str
    ) -> str:
        """Create the provider's customer for a site and return its id (the service stores it)."""
        ...

    def start_recurring(
        self, customer_id: str, *, site_reference: str, apartments: int, idempotency_key: str,
        renews_at: datetime | None = None, amount_minor: int | None = None, region: str | None = None,
    ) -> Subscription:
        """Start the annual subscription for ``apartments`` apartments, renewing at ``renews_at``
        and charging ``amount_minor`` now (None: a whole year of every apartment; 0: nothing), at
        the price and in the currency of the site's ``region`` (``price``).

        A declined first payment raises ``payment_declined`` and leaves no subscription behind.
        """
        ...

    def update_quantity(
        self, subscription_id: str, *, site_reference: str, apartments: int, amount_minor: int,
        idempotency_key: str, region: str | None = None,
    ) -> Subscription:
        """Make the subscription's quantity ``apartments``, charging the proration
        ``amount_minor`` now (0: nothing, e.g. fewer apartments: nothing is refunded). ``region``:
        the site's, whose currency it is charged in (the subscription's own Price on Stripe)."""
        ...

    def renew(
        self, subscription_id: str, *, site_reference: str, apartments: int, amount_minor: int,
        renews_at: datetime, idempotency_key: str, region: str | None = None,
    ) -> Subscription:
        """Charge the next billing year (``amount_minor`` for ``apartments``), which ends at
        ``renews_at``. A declined card raises ``payment_declined``; retried with the same key,
        an attempt that went through returns the same payment."""
        ...

    def stop_recurring(self, subscription_id: str) -> Subscription:
        """Cancel the subscription at once (needed before the card can be changed)."""
        ...

    def set_card(self, customer_id: str, *, payment_method: str, idempotency_key: str) -> str:
        """Make ``payment_method`` (a card the customer entered in the provider's own form) the
        customer's default card; return a label to show (brand and last four digits)."""
        ...

    def charge_once(
        self,
        customer_id: str,
        *,
        site_reference: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        description: str = "",
    ) -> Charge:
        """Charge the customer's card on file once, off-session."""
        ...

    def parse_webhook(self, payload: bytes, signature_header: str) -> PaymentEvent:
        """Verify the signature over the raw body and return the event; refuse anything else."""
        ...


# --- Webhooks: one parsing path for both providers ------------------------------------------


def sign_webhook(payload: bytes, secret: str, timestamp: int) -> str:
    """A ``Stripe-Signature`` header value: ``t=<unix time>,v1=<hex HMAC-SHA256 of "t.body">``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + payload, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


def parse_signed_event(
    payload: bytes,
    signature_header: str,
    *,
    secret: str,
    now: datetime,
    tolerance: int = WEBHOOK_TOLERANCE_SECONDS,
) -> PaymentEvent:
    """Verify with Stripe's own signature check, then refuse deliveries older than ``tolerance``.

    The age is measured against our clock rather than Stripe's ``time.time()`` so tests can move it.
    """
    try:
        stripe.WebhookSignature.verify_header(payload, signature_header, secret, tolerance=None)
    except stripe.SignatureVerificationError as exc:
        raise _signature_invalid(str(exc)) from None
    except UnicodeDecodeError:
        raise _signature_invalid("body is not UTF-8") from None
    timestamp = int(dict(part.split("=", 1) for part in signature_header.split(",") if "=" in part)["t"])
    if timestamp < now.timestamp() - tolerance:
        raise _signature_invalid(f"signed at {timestamp}, more than {tolerance} s ago")
    try:
        event = json.loads(payload)
        return _event_from_stripe(event)
    except (ValueError, KeyError, TypeError) as exc:
        raise PaymentError(
            "payment_provider_error", "The payment provider sent a webhook we cannot read.", reason=str(exc)
        ) from None


def _event_from_stripe(event: Mapping[str, Any]) -> PaymentEvent:
    kind: str = event["type"]
    obj: Mapping[str, Any] = event["data"]["object"]
    base: dict[str, Any] = {
        "event_id": event["id"],
        "provider_type": kind,
        "occurred_at": datetime.fromtimestamp(int(event["created"]), UTC),
        "customer_id": obj.get("customer"),
    }
    mapped: PaymentEventType
    if kind in ("invoice.paid", "invoice.payment_failed"):
        # Since API version 2025-03-31 the subscription sits under ``parent``.
        details = (obj.get("parent") or {}).get("subscription_details") or obj.get("subscription_details") or {}
        metadata = details.get("metadata") or {}
        lines = (obj.get("lines") or {}).get("data") or []
        mapped = "payment_succeeded" if kind == "invoice.paid" else "payment_failed"
        base |= {
            "subscription_id": details.get("subscription"),
            "payment_id": obj.get("id"),
            "amount_minor": obj.get("amount_paid") if mapped == "payment_succeeded" else obj.get("amount_due"),
            "currency": obj.get("currency"),
            "apartments": lines[0].get("quantity") if lines else _int_or_none(metadata.get(APARTMENTS_KEY)),
        }
    elif kind == "customer.subscription.deleted":
        metadata = obj.get("metadata") or {}
        items = (obj.get("items") or {}).get("data") or []
        mapped = "subscription_cancelled"
        base |= {
            "subscription_id": obj.get("id"),
            "apartments": items[0].get("quantity") if items else _int_or_none(metadata.get(APARTMENTS_KEY)),
        }
    elif kind in ("payment_intent.succeeded", "payment_intent.payment_failed"):
        # Subscription invoices make payment intents too, without our metadata: those are ignored
        # here because the invoice event already reports them.
        metadata = obj.get("metadata") or {}
        mapped = "payment_succeeded" if kind == "payment_intent.succeeded" else "payment_failed"
        error = obj.get("last_payment_error") or {}
        base |= {
            "payment_id": obj.get("id"),
            "amount_minor": obj.get("amount"),
            "currency": obj.get("currency"),
            "failure_message": error.get("message"),
        }
    else:
        return PaymentEvent(type="ignored", **base)
    site = metadata.get(SITE_KEY)
    return PaymentEvent(type=mapped if site else "ignored", site_reference=site, **base)


def _int_or_none(value: Any) -> int | None:
    return int(value) if value not in (None, "") else None


# --- The real adapter -----------------------------------------------------------------------


class StripeProvider:
    """Stripe, through the official ``stripe`` package.

    ``price_id`` is the annual per-apartment Price. ``api_base`` is Stripe's unless a test points it
    at a local server. Network retries are off: a failed call surfaces at once as
    ``payment_provider_unreachable`` and the service decides when to retry (with the same key).
    """

    def __init__(
        self,
        *,
        api_key: str,
        webhook_secret: str,
        price_id: str,
        api_base: str = stripe.DEFAULT_API_BASE,
        timeout: float = 20.0,
        clock: Clock | None = None,
        annual_price_minor: int = 1200,
        currency: str = "eur",
        prices: Mapping[str, tuple[int, str]] | None = None,
        price_ids: Mapping[str, str] | None = None,
    ) -> None:
        # The Price's amount, for the pro-rata charges the service computes: keep them equal.
        # ``prices`` / ``price_ids``: the regions with a Price of their own (amount, currency, id).
        self.annual_price_minor, self.currency = annual_price_minor, currency
        self._prices = dict(prices or {})
        self._webhook_secret = webhook_secret
        self._price_id = price_id
        self._price_ids = dict(price_ids or {})
        self._clock = clock or SystemClock()
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": api_base},
            max_network_retries=0,
            http_client=stripe.RequestsClient(timeout=timeout),
        )

    def create_customer(
        self, site_reference: str, *, name: str, email: str | None, idempotency_key: str
    ) -> str:
        params: CustomerCreateParams = {"name": name, "metadata": {SITE_KEY: site_reference}}
        if email:
            params["email"] = email
        with _stripe_errors():
            customer = self._client.v1.customers.create(params, {"idempotency_key": idempotency_key})
        return str(customer.id)

    def price(self, region: str) -> tuple[int, str]:
        minor, currency = self._prices.get(region.upper(), (self.annual_price_minor, self.currency))
        return minor, currency.lower()

    def _price_of(self, region: str | None) -> str:
        return self._price_ids.get(region.upper(), self._price_id) if region else self._price_id

    def start_recurring(
        self, customer_id: str, *, site_reference: str, apartments: int, idempotency_key: str,
        renews_at: datetime | None = None, amount_minor: int | None = None, region: str | None = None,
    ) -> Subscription:
        _check_positive("apartments", apartments)
        metadata = {SITE_KEY: site_reference, APARTMENTS_KEY: str(apartments)}
        price_id = self._price_of(region)
        params: dict[str, Any] = {
            "customer": customer_id,
            "items": [{"price": price_id, "quantity": apartments}],
            # The first year is paid now or the call fails: no half-made subscription.
            "payment_behavior": "error_if_incomplete",
            "off_session": True,
            "metadata": metadata,
            "expand": ["latest_invoice"],
        }
        if renews_at is not None:
            # The site's billing year continues: Stripe bills the quantity from the anniversary
            # on, and now only what the service says is not paid yet (one invoice item).
            params |= {"billing_cycle_anchor": int(renews_at.timestamp()), "proration_behavior": "none"}
            if amount_minor:
                params["add_invoice_items"] = [{"price_data": {
                    "currency": self.price(region)[1] if region else self.currency, "product": self._product(price_id),
                    "unit_amount": amount_minor}}]
        with _stripe_errors():
            sub = self._client.v1.subscriptions.create(params, {"idempotency_key": idempotency_key})  # type: ignore[arg-type]
        return _subscription(sub.to_dict(), apartments)

    def _product(self, price_id: str) -> str:
        with _stripe_errors():
            price = self._client.v1.prices.retrieve(price_id)
        product = price.to_dict().get("product")
        return str(product["id"] if isinstance(product, Mapping) else product)

    def update_quantity(
        self, subscription_id: str, *, site_reference: str, apartments: int, amount_minor: int,
        idempotency_key: str, region: str | None = None,
    ) -> Subscription:
        _check_positive("apartments", apartments)
        with _stripe_errors():
            current = self._client.v1.subscriptions.retrieve(subscription_id).to_dict()
            item = ((current.get("items") or {}).get("data") or [{}])[0]
            sub = self._client.v1.subscriptions.update(subscription_id, {  # type: ignore[arg-type]
                "items": [{"id": item.get("id"), "quantity": apartments}],
                # More apartments: Stripe invoices the rest of the year at once; fewer: no refund.
                "proration_behavior": "always_invoice" if amount_minor > 0 else "none",
                "payment_behavior": "error_if_incomplete",
                "metadata": {SITE_KEY: site_reference, APARTMENTS_KEY: str(apartments)},
                "expand": ["latest_invoice"],
            }, {"idempotency_key": idempotency_key})
        return _subscription(sub.to_dict(), apartments, paid_now=amount_minor > 0)

    def renew(
        self, subscription_id: str, *, site_reference: str, apartments: int, amount_minor: int,
        renews_at: datetime, idempotency_key: str, region: str | None = None,
    ) -> Subscription:
        # Stripe makes the renewal invoice itself at the anniversary and tries the card; this
        # pays it when it is still open (the retry), or returns it when it is paid.
        with _stripe_errors():
            sub = self._client.v1.subscriptions.retrieve(
                subscription_id, {"expand": ["latest_invoice"]}).to_dict()
            invoice = sub.get("latest_invoice") or {}
            if invoice.get("status") == "open":
                invoice = self._client.v1.invoices.pay(
                    invoice["id"], {"off_session": True}, {"idempotency_key": idempotency_key}).to_dict()
        if invoice.get("status") != "paid":
            raise _declined("invoice_not_paid", "The renewal invoice is not paid")
        return Subscription(id=subscription_id, status=str(sub.get("status")), apartments=apartments,
                            latest_payment_id=invoice.get("id"), amount_minor=_int_or_none(invoice.get("amount_paid")),
                            currency=invoice.get("currency"))

    def stop_recurring(self, subscription_id: str) -> Subscription:
        # A DELETE: idempotent at Stripe by definition, so no key.
        with _stripe_errors():
            sub = self._client.v1.subscriptions.cancel(subscription_id)
        items = (sub.to_dict().get("items") or {}).get("data") or [{}]
        return Subscription(id=sub.id, status=sub.status, apartments=int(items[0].get("quantity") or 0))

    def set_card(self, customer_id: str, *, payment_method: str, idempotency_key: str) -> str:
        with _stripe_errors():
            method = self._client.v1.payment_methods.attach(
                payment_method, {"customer": customer_id}, {"idempotency_key": idempotency_key}
            )
            self._client.v1.customers.update(
                customer_id, {"invoice_settings": {"default_payment_method": payment_method}}
            )
        card = method.to_dict().get("card") or {}
        return _card_label(card.get("brand"), card.get("last4"))

    def charge_once(
        self,
        customer_id: str,
        *,
        site_reference: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        description: str = "",
    ) -> Charge:
        _check_positive("amount_minor", amount_minor)
        with _stripe_errors():
            customer = self._client.v1.customers.retrieve(customer_id)
            card = (customer.to_dict().get("invoice_settings") or {}).get("default_payment_method")
            if not card:
                raise PaymentError(
                    "payment_method_missing",
                    "The site has no card on file. Add a card, then pay again.",
                    customer_id=customer_id,
                )
            intent = self._client.v1.payment_intents.create(
                {
                    "customer": customer_id,
                    "payment_method": card if isinstance(card, str) else card["id"],
                    "amount": amount_minor,
                    "currency": currency.lower(),
                    "confirm": True,
                    "off_session": True,
                    "description": description,
                    "metadata": {SITE_KEY: site_reference},
                },
                {"idempotency_key": idempotency_key},
            )
        return Charge(id=intent.id, status=intent.status, amount_minor=intent.amount, currency=intent.currency)

    def parse_webhook(self, payload: bytes, signature_header: str) -> PaymentEvent:
        return parse_signed_event(payload, signature_header, secret=self._webhook_secret, now=self._clock.now())


@contextmanager
def _stripe_errors() -> Iterator[None]:
    """Translate the ``stripe`` package's exceptions into :class:`PaymentError`."""
    try:
        yield
    except stripe.CardError as exc:
        reason = (exc.error.decline_code if exc.error else None) or exc.code or "card_declined"
        raise _declined(reason, exc.user_message) from exc
    except stripe.APIConnectionError as exc:  # time-outs and connection errors alike
        raise _unreachable(type(exc.__cause__ or exc).__name__) from exc
    except stripe.StripeError as exc:
        raise PaymentError(
            "payment_provider_error",
            "The payment provider refused the request. Try again later; if it keeps failing, contact support.",
            provider_status=exc.http_status,
            provider_code=exc.code,
            request_id=exc.request_id,
        ) from exc


def _subscription(sub: Mapping[str, Any], apartments: int, *, paid_now: bool = True) -> Subscription:
    invoice = sub.get("latest_invoice") or {}
    if isinstance(invoice, str):
        invoice = {"id": invoice}
    paid = _int_or_none(invoice.get("amount_paid"))
    if not paid_now or paid == 0:  # a 0 invoice (nothing was due now) pays nothing
        invoice, paid = {}, None
    return Subscription(id=str(sub.get("id")), status=str(sub.get("status")), apartments=apartments,
                        latest_payment_id=invoice.get("id"), amount_minor=paid, currency=invoice.get("currency"))


_BRANDS = {"visa": "Visa", "mastercard": "Mastercard", "amex": "American Express", "discover": "Discover",
           "diners": "Diners Club", "jcb": "JCB", "unionpay": "UnionPay", "cartes_bancaires": "Cartes Bancaires"}


def _card_label(brand: Any, last4: Any) -> str:
    """How a card is shown: its brand and its last four digits, e.g. "Visa •••• 4242"."""
    name = _BRANDS.get(str(brand).lower(), str(brand).title()) if brand else "Card"
    return f"{name} •••• {last4 or '????'}"


# The local provider's cards: Stripe's test payment methods, with their brand and digits.
# Any other id stands for a Visa card whose last four digits come from the id (no real card).
LOCAL_CARDS: dict[str, tuple[str, str]] = {
    "pm_card_visa": ("visa", "4242"), "pm_card_visa_debit": ("visa", "5556"),
    "pm_card_mastercard": ("mastercard", "4444"), "pm_card_amex": ("amex", "8431"),
    "pm_card_discover": ("discover", "9424"),
    "pm_card_chargeDeclined": ("visa", "0002"), "pm_card_chargeDeclinedInsufficientFunds": ("visa", "9995"),
}
LOCAL_DECLINING_CARDS = frozenset({"pm_card_chargeDeclined", "pm_card_chargeDeclinedInsufficientFunds"})


def local_card(payment_method: str) -> tuple[str, str]:
    """The brand and last four digits the local provider gives a payment-method id."""
    if payment_method in LOCAL_CARDS:
        return LOCAL_CARDS[payment_method]
    digest = int(hashlib.sha256(payment_method.encode()).hexdigest(), 16)
    return "visa", f"{digest % 10_000:04d}"


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


# --- The local provider ---------------------------------------------------------------------


@dataclass
class LocalProvider:
    """In memory, deterministic, no network. For development and tests.

    Prices subscriptions at ``annual_price_minor`` per apartment. Set ``declining`` to make every
    card payment fail with ``payment_declined``, ``timing_out`` to make every call fail with
    ``payment_provider_unreachable`` (nothing is recorded: the local provider times out *before*
    doing the work); ``ENTITLE_LOCAL_PAYMENT_OUTCOME=decline`` or ``timeout`` sets them for a
    whole process (e.g. ``entitle sweep``, to see a renewal fail). A card from
    ``LOCAL_DECLINING_CARDS`` (``pm_card_chargeDeclined``) declines every charge too. Events it
    would send are appended to ``outbox`` as ``(payload, signature_header)``, ready for the
    webhook endpoint.
    """

    webhook_secret: str = "whsec_local"
    annual_price_minor: int = 1200  # per apartment
    currency: str = "eur"
    prices: dict[str, tuple[int, str]] = field(default_factory=dict)  # the regions with a price of their own
    clock: Clock = field(default_factory=SystemClock)
    declining: bool = False
    timing_out: bool = False
    # Set (e.g. to a random "a1b2c3_") where several processes share a database: every id this
    # instance makes is then unique across them, and it accepts the customers and subscriptions
    # the others made (it has no shared memory of them). Empty: the ids tests expect.
    instance: str = ""
    customers: dict[str, dict[str, str]] = field(default_factory=dict)
    subscriptions: dict[str, Subscription] = field(default_factory=dict)
    charges: dict[str, Charge] = field(default_factory=dict)
    outbox: list[tuple[bytes, str]] = field(default_factory=list)
    invoices: dict[str, tuple[str, int]] = field(default_factory=dict)  # id: (subscription, amount)
    _customer_of: dict[str, str] = field(default_factory=dict)
    _counters: dict[str, int] = field(default_factory=dict)
    _by_key: dict[str, tuple[object, object]] = field(default_factory=dict)
    _site_of: dict[str, str] = field(default_factory=dict)
    _region_of: dict[str, str] = field(default_factory=dict)  # subscription: the region it was started for

    def create_customer(
        self, site_reference: str, *, name: str, email: str | None, idempotency_key: str
    ) -> str:
        params = ("customer", site_reference, name, email)
        return self._once(idempotency_key, params, lambda: self._new_customer(site_reference, name, email))

    def price(self, region: str) -> tuple[int, str]:
        minor, currency = self.prices.get(region.upper(), (self.annual_price_minor, self.currency))
        return minor, currency.lower()

    def _currency_of(self, subscription_id: str) -> str:
        region = self._region_of.get(subscription_id)
        return self.price(region)[1] if region else self.currency

    def start_recurring(
        self, customer_id: str, *, site_reference: str, apartments: int, idempotency_key: str,
        renews_at: datetime | None = None, amount_minor: int | None = None, region: str | None = None,
    ) -> Subscription:
        _check_positive("apartments", apartments)
        price = self.price(region)[0] if region else self.annual_price_minor
        amount = apartments * price if amount_minor is None else amount_minor
        # The request is what it charges: a region is part of it through its currency only.
        params = ("subscription", customer_id, site_reference, apartments, renews_at, amount,
                  self.price(region or "")[1])
        return self._once(
            idempotency_key, params,
            lambda: self._new_subscription(customer_id, site_reference, apartments, amount, region),
        )

    def update_quantity(
        self, subscription_id: str, *, site_reference: str, apartments: int, amount_minor: int,
        idempotency_key: str, region: str | None = None,
    ) -> Subscription:
        _check_positive("apartments", apartments)
        params = ("quantity", subscription_id, apartments, amount_minor)

        def update() -> Subscription:
            self._active(subscription_id, site_reference, region)
            return self._invoice(subscription_id, site_reference, apartments, amount_minor)

        return self._once(idempotency_key, params, update)

    def renew(
        self, subscription_id: str, *, site_reference: str, apartments: int, amount_minor: int,
        renews_at: datetime, idempotency_key: str, region: str | None = None,
    ) -> Subscription:
        params = ("renewal", subscription_id, apartments, amount_minor, renews_at)

        def renewal() -> Subscription:
            self._active(subscription_id, site_reference, region)
            return self._invoice(subscription_id, site_reference, apartments, amount_minor)

        return self._once(idempotency_key, params, renewal)

    def _active(self, subscription_id: str, site_reference: str, region: str | None = None) -> None:
        if region:  # a subscription another process started: charged in the site's currency all the same
            self._region_of.setdefault(subscription_id, region)
        current = self.subscriptions.get(subscription_id)
        if current is None and self.instance and subscription_id.startswith("sub_local_"):
            # Made by the local provider of another process: take it as it is.
            current = Subscription(id=subscription_id, status="active", apartments=0)
            self.subscriptions[subscription_id], self._site_of[subscription_id] = current, site_reference
        if current is None or current.status != "active":
            raise PaymentError("payment_provider_error", "The payment provider has no active subscription "
                               "of this site; turn recurring payment off and on again.",
                               subscription_id=subscription_id)

    def _invoice(self, subscription_id: str, site_reference: str, apartments: int, amount: int) -> Subscription:
        """Set the quantity and charge ``amount`` (when there is one) on one new invoice."""
        customer = self._customer_of.get(subscription_id)
        if amount > 0 and (self.declining or (customer and self._card_declines(customer))):
            raise _declined("card_declined", "Your card was declined.")
        invoice = self._next_id("in") if amount > 0 else None
        currency = self._currency_of(subscription_id)
        sub = Subscription(id=subscription_id, status="active", apartments=apartments, latest_payment_id=invoice,
                           amount_minor=amount if invoice else None, currency=currency if invoice else None)
        self.subscriptions[subscription_id] = sub
        if invoice:
            self.invoices[invoice] = (subscription_id, amount)
            self.outbox.append(self.make_webhook(
                "payment_succeeded", site_reference=site_reference, subscription_id=subscription_id,
                payment_id=invoice, amount_minor=amount, currency=currency, apartments=apartments,
            ))
        return sub

    def _card_declines(self, customer_id: str) -> bool:
        return self.customers.get(customer_id, {}).get("card") in LOCAL_DECLINING_CARDS

    def stop_recurring(self, subscription_id: str) -> Subscription:
        self._maybe_time_out()
        current = self.subscriptions.get(subscription_id)
        if current is None and self.instance and subscription_id.startswith("sub_local_"):
            # Made by another process: nothing of it is here to cancel.
            return Subscription(id=subscription_id, status="canceled", apartments=0)
        if current is None:
            raise PaymentError(
                "payment_provider_error", "The payment provider does not know this subscription.",
                subscription_id=subscription_id,
            )
        if current.status != "canceled":
            current = Subscription(id=current.id, status="canceled", apartments=current.apartments)
            self.subscriptions[subscription_id] = current
            self.outbox.append(self.make_webhook(
                "subscription_cancelled", site_reference=self._site_of[subscription_id],
                subscription_id=subscription_id, apartments=current.apartments,
            ))
        return current

    def set_card(self, customer_id: str, *, payment_method: str, idempotency_key: str) -> str:
        """Any payment-method id is a card (``local_card``: Stripe's test cards by name)."""
        params = ("card", customer_id, payment_method)

        def attach() -> str:
            self._customer(customer_id)["card"] = payment_method
            return _card_label(*local_card(payment_method))

        return self._once(idempotency_key, params, attach)

    def charge_once(
        self,
        customer_id: str,
        *,
        site_reference: str,
        amount_minor: int,
        currency: str,
        idempotency_key: str,
        description: str = "",
    ) -> Charge:
        _check_positive("amount_minor", amount_minor)
        params = ("charge", customer_id, site_reference, amount_minor, currency.lower())
        return self._once(
            idempotency_key, params, lambda: self._new_charge(customer_id, site_reference, amount_minor, currency)
        )

    def parse_webhook(self, payload: bytes, signature_header: str) -> PaymentEvent:
        return parse_signed_event(payload, signature_header, secret=self.webhook_secret, now=self.clock.now())

    def sign(self, payload: bytes, *, at: datetime | None = None) -> str:
        return sign_webhook(payload, self.webhook_secret, int((at or self.clock.now()).timestamp()))

    def make_webhook(
        self,
        type: PaymentEventType,
        *,
        site_reference: str,
        subscription_id: str | None = None,
        payment_id: str | None = None,
        amount_minor: int | None = None,
        currency: str | None = None,
        apartments: int | None = None,
    ) -> tuple[bytes, str]:
        """A signed event shaped like Stripe's, so it is read by the same code as Stripe's."""
        metadata = {SITE_KEY: site_reference}
        if type == "subscription_cancelled":
            kind = "customer.subscription.deleted"
            obj: dict[str, Any] = {
                "object": "subscription", "id": subscription_id, "status": "canceled", "metadata": metadata,
                "items": {"data": [{"quantity": apartments}]},
            }
        elif subscription_id is not None:
            kind = "invoice.paid" if type == "payment_succeeded" else "invoice.payment_failed"
            amount_field = "amount_paid" if type == "payment_succeeded" else "amount_due"
            obj = {
                "object": "invoice", "id": payment_id, amount_field: amount_minor, "currency": currency,
                "parent": {"subscription_details": {"subscription": subscription_id, "metadata": metadata}},
                "lines": {"data": [{"quantity": apartments}]},
            }
        else:
            kind = "payment_intent.succeeded" if type == "payment_succeeded" else "payment_intent.payment_failed"
            obj = {"object": "payment_intent", "id": payment_id, "amount": amount_minor, "currency": currency,
                   "metadata": metadata}
        event = {
            "id": self._next_id("evt"), "object": "event", "type": kind,
            "created": int(self.clock.now().timestamp()), "data": {"object": obj},
        }
        payload = json.dumps(event).encode()
        return payload, self.sign(payload)

    # Like Stripe: the same key with the same request returns the first result; with another
    # request it is an error.
    def _once(self, key: str, params: object, make: Callable[[], T]) -> T:
        self._maybe_time_out()
        if key in self._by_key:
            first_params, result = self._by_key[key]
            if first_params != params:
                raise PaymentError(
                    "payment_provider_error",
                    "The payment provider refused the request. Try again later; if it keeps failing, contact support.",
                    provider_code="idempotency_key_in_use",
                )
            return cast(T, result)
        result = make()
        self._by_key[key] = (params, result)
        return result

    def _maybe_time_out(self) -> None:
        if self.timing_out:
            raise _unreachable("local provider told to time out")

    def _next_id(self, prefix: str) -> str:
        self._counters[prefix] = self._counters.get(prefix, 0) + 1
        return f"{prefix}_local_{self.instance}{self._counters[prefix]:04d}"

    def _customer(self, customer_id: str) -> dict[str, str]:
        if customer_id not in self.customers and self.instance and customer_id.startswith("cus_local_"):
            # Made by the local provider of another process (the CLI, a second server process).
            self.customers[customer_id] = {"site": "", "name": "", "email": ""}
        if customer_id not in self.customers:
            raise PaymentError(
                "payment_provider_error", "The payment provider does not know this customer.", customer_id=customer_id
            )
        return self.customers[customer_id]

    def _new_customer(self, site_reference: str, name: str, email: str | None) -> str:
        customer_id = self._next_id("cus")
        self.customers[customer_id] = {"site": site_reference, "name": name, "email": email or ""}
        return customer_id

    def _new_subscription(self, customer_id: str, site_reference: str, apartments: int, amount: int,
                          region: str | None = None) -> Subscription:
        self._customer(customer_id)
        if amount > 0 and (self.declining or self._card_declines(customer_id)):
            raise _declined("card_declined", "Your card was declined.")
        sub_id = self._next_id("sub")
        self._site_of[sub_id], self._customer_of[sub_id] = site_reference, customer_id
        if region:
            self._region_of[sub_id] = region
        self.subscriptions[sub_id] = Subscription(id=sub_id, status="active", apartments=apartments)
        return self._invoice(sub_id, site_reference, apartments, amount)

    def renewal_webhook(self, subscription_id: str) -> tuple[bytes, str]:
        """A renewal invoice the provider charged on its own (as Stripe does at the anniversary),
        reported only by its webhook: ``invoice.paid``, or ``invoice.payment_failed`` while
        ``declining``."""
        sub = self.subscriptions[subscription_id]
        if sub.status != "active":
            raise ValueError("only an active subscription renews")
        region = self._region_of.get(subscription_id)
        invoice = self._next_id("in")
        amount = sub.apartments * (self.price(region)[0] if region else self.annual_price_minor)
        if not self.declining:
            self.invoices[invoice] = (subscription_id, amount)
        event = self.make_webhook(
            "payment_failed" if self.declining else "payment_succeeded", site_reference=self._site_of[sub.id],
            subscription_id=sub.id, payment_id=invoice, amount_minor=amount,
            currency=self._currency_of(sub.id), apartments=sub.apartments,
        )
        self.outbox.append(event)
        return event

    def _new_charge(self, customer_id: str, site_reference: str, amount_minor: int, currency: str) -> Charge:
        self._customer(customer_id)
        if self.declining:
            raise _declined("card_declined", "Your card was declined.")
        if self._card_declines(customer_id):
            raise _declined("card_declined", "Your card was declined.")
        charge = Charge(id=self._next_id("pi"), status="succeeded", amount_minor=amount_minor, currency=currency.lower())
        self.charges[charge.id] = charge
        self.outbox.append(self.make_webhook(
            "payment_succeeded", site_reference=site_reference, payment_id=charge.id,
            amount_minor=amount_minor, currency=charge.currency,
        ))
        return charge
