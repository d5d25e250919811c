"""What every interface (API, web UI, CLI) needs: settings, database, clock, shared limiters."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from entitle.clock import Clock, FrozenClock, SystemClock
from entitle.config import Settings, get_settings
from entitle.db import make_engine, make_session_factory
from entitle.errors import EntitleError
from entitle.my2n.payments import LocalProvider, PaymentProvider, StripeProvider
from entitle.platform.ratelimit import RedeemLimiter, make_storage
from entitle.signing.secrets import load_secret_key


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    redeem_limiter: RedeemLimiter
    payments: PaymentProvider

    _secret: bytes | None = None

    def now(self) -> datetime:
        return self.clock.now()

    @property
    def secret(self) -> bytes:
        """The key that encrypts signing keys at rest (loaded, or made, on first use)."""
        if self._secret is None:
            self._secret = load_secret_key(self.settings)
        return self._secret


def build(settings: Settings | None = None, clock: Clock | None = None,
          engine: Engine | None = None) -> Context:
    settings = settings or get_settings()
    if clock is None:
        clock = FrozenClock(settings.now) if settings.now is not None else SystemClock()
    engine = engine or make_engine(settings.database_url)
    limiter = RedeemLimiter(
        make_storage(engine, clock, settings.redis_url),
        per_org=settings.redeem_limit_per_org,
        per_client=settings.redeem_limit_per_client,
        clock=clock,
        enabled=settings.rate_limits_enabled,
    )
    return Context(settings, engine, make_session_factory(engine), clock, limiter, payment_provider(settings, clock))


def payment_provider(settings: Settings, clock: Clock) -> PaymentProvider:
    """The configured card-payment provider (docs/my2n.md): Stripe, or the local one."""
    if settings.payment_provider == "stripe":
        missing = [name for name in ("stripe_api_key", "stripe_webhook_secret", "stripe_price_id")
                   if not getattr(settings, name)]
        if missing:
            raise EntitleError("payment_provider_misconfigured",
                               f"ENTITLE_PAYMENT_PROVIDER=stripe needs {', '.join('ENTITLE_' + m.upper() for m in missing)}.",
                               status=500, missing=missing)
        return StripeProvider(api_key=settings.stripe_api_key or "", webhook_secret=settings.stripe_webhook_secret or "",
                              price_id=settings.stripe_price_id or "", api_base=settings.stripe_api_base, clock=clock)
    return LocalProvider(webhook_secret=settings.local_webhook_secret, instance=f"{secrets.token_hex(4)}_",
                         annual_price_minor=settings.apartment_year_price_minor,
                         currency=settings.apartment_year_currency, clock=clock)
