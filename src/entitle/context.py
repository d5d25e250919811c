"""What every interface (API, web UI, CLI) needs: settings, database, clock, shared limiters.

What only some commands use is made on first use (the rate limiter, the payment provider, the
secret key), and imported then: every CLI command builds a context, and Stripe's SDK alone takes
~0.5 s to import. A server makes them all at start (``prepare``).
"""

from __future__ import annotations

import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from entitle.clock import Clock, FrozenClock, SystemClock
from entitle.errors import EntitleError

if TYPE_CHECKING:
    from sqlalchemy import Engine
    from sqlalchemy.orm import Session, sessionmaker

    from entitle.config import Settings
    from entitle.my2n.payments import PaymentProvider
    from limits.storage import Storage

    from entitle.platform.ratelimit import RedeemLimiter, SignInLimiter
    from entitle.tenancy.services import TokenActors


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock

    _storage: Storage | None = None
    _redeem_limiter: RedeemLimiter | None = None
    _sign_in_limiter: SignInLimiter | None = None
    _payments: PaymentProvider | None = None
    _secret: bytes | None = None
    _token_actors: TokenActors | None = None
    _making: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def now(self) -> datetime:
        return self.clock.now()

    def _limits_storage(self) -> Storage:
        """Where rate-limit counters live: the database, or Redis when set (the caller holds _making)."""
        if self._storage is None:
            from entitle.platform.ratelimit import make_storage

            self._storage = make_storage(self.engine, self.clock, self.settings.redis_url)
        return self._storage

    @property
    def redeem_limiter(self) -> RedeemLimiter:
        """The limits on redeeming keys, counted in the database or in Redis (made on first use)."""
        with self._making:
            if self._redeem_limiter is None:
                from entitle.platform.ratelimit import RedeemLimiter

                s = self.settings
                self._redeem_limiter = RedeemLimiter(
                    self._limits_storage(), per_org=s.redeem_limit_per_org,
                    per_client=s.redeem_limit_per_client, clock=self.clock, enabled=s.rate_limits_enabled)
            return self._redeem_limiter

    @property
    def sign_in_limiter(self) -> SignInLimiter:
        """The limits on failed sign-ins, in the same storage as redeem's (made on first use)."""
        with self._making:
            if self._sign_in_limiter is None:
                from entitle.platform.ratelimit import SignInLimiter

                s = self.settings
                self._sign_in_limiter = SignInLimiter(
                    self._limits_storage(), per_account=s.sign_in_limit_per_account,
                    per_client=s.sign_in_limit_per_client, clock=self.clock, enabled=s.rate_limits_enabled)
            return self._sign_in_limiter

    @property
    def payments(self) -> PaymentProvider:
        """The card-payment provider (made on first use, by ``payment_provider``)."""
        with self._making:
            if self._payments is None:
                self._payments = payment_provider(self.settings, self.clock)
            return self._payments

    @property
    def secret(self) -> bytes:
        """The key that encrypts signing keys at rest (loaded, or made, on first use)."""
        with self._making:
            if self._secret is None:
                from entitle.signing.secrets import load_secret_key

                self._secret = load_secret_key(self.settings)
            return self._secret

    @property
    def token_actors(self) -> TokenActors:
        """API token -> actor, remembered for ``heartbeat_token_ttl_seconds``: the same bound as
        installation tokens' (docs/architecture.md, "Authentication")."""
        made = self._token_actors
        if made is None:
            with self._making:
                if self._token_actors is None:
                    from entitle.tenancy.services import TokenActors

                    self._token_actors = TokenActors(float(self.settings.heartbeat_token_ttl_seconds))
                made = self._token_actors
        return made

    def prepare(self) -> None:
        """Make now what is otherwise made on first use: a server with Redis or Stripe misconfigured
        then refuses to start, rather than its first redeem or payment."""
        self.redeem_limiter, self.sign_in_limiter, self.payments  # noqa: B018


def build(settings: Settings | None = None, clock: Clock | None = None,
          engine: Engine | None = None) -> Context:
    from entitle.config import get_settings
    from entitle.db import make_engine, make_session_factory

    settings = settings or get_settings()
    if clock is None:
        clock = FrozenClock(settings.now) if settings.now is not None else SystemClock()
    engine = engine or make_engine(settings.database_url, max_connections=settings.database_max_connections)
    ctx = Context(settings, engine, make_session_factory(engine), clock)
    # History appends and checks need the secret key (the chain key is derived from it): every
    # session of this context loads it, from these settings, when first needed.
    from entitle.history.services import use_secret

    use_secret(ctx.sessions, lambda: ctx.secret)
    return ctx


def payment_provider(settings: Settings, clock: Clock) -> PaymentProvider:
    """The configured card-payment provider (docs/my2n.md): Stripe, or the local one."""
    from entitle.my2n.payments import LocalProvider, StripeProvider

    if settings.payment_provider == "stripe":
        missing = [name for name in ("stripe_api_key", "stripe_webhook_secret", "stripe_price_id")
                   if not getattr(settings, name)]
        # A region with a price of its own needs the Stripe Price of that price (issue 14 point 8).
        missing += [f"stripe_price_ids[{region}]" for region in settings.apartment_year_prices
                    if region not in settings.stripe_price_ids]
        if missing:
            raise EntitleError("payment_provider_misconfigured",
                               f"ENTITLE_PAYMENT_PROVIDER=stripe needs {', '.join('ENTITLE_' + m.upper() for m in missing)}.",
                               status=500, missing=missing)
        return StripeProvider(api_key=settings.stripe_api_key or "", webhook_secret=settings.stripe_webhook_secret or "",
                              price_id=settings.stripe_price_id or "", api_base=settings.stripe_api_base, clock=clock,
                              annual_price_minor=settings.apartment_year_price_minor,
                              currency=settings.apartment_year_currency, prices=settings.apartment_year_prices,
                              price_ids=settings.stripe_price_ids)
    return LocalProvider(webhook_secret=settings.local_webhook_secret, instance=f"{secrets.token_hex(4)}_",
                         annual_price_minor=settings.apartment_year_price_minor,
                         currency=settings.apartment_year_currency, prices=dict(settings.apartment_year_prices),
                         clock=clock,
                         declining=settings.local_payment_outcome == "decline",
                         timing_out=settings.local_payment_outcome == "timeout")
