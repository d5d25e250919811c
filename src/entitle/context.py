"""What every interface (API, web UI, CLI) needs: settings, database, clock, shared limiters."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from entitle.clock import Clock, FrozenClock, SystemClock
from entitle.config import Settings, get_settings
from entitle.db import make_engine, make_session_factory
from entitle.platform.ratelimit import RedeemLimiter, make_storage
from entitle.signing.secrets import load_secret_key


@dataclass
class Context:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    clock: Clock
    redeem_limiter: RedeemLimiter

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
    return Context(settings, engine, make_session_factory(engine), clock, limiter)
