"""Rate limits shared by every app process (R-CORE-4).

The `limits` library does the counting; its counters live in the database (the default, so
that ``--workers N`` and several servers agree) or in Redis when ``ENTITLE_REDIS_URL`` is set.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import RedisStorage, Storage
from limits.strategies import FixedWindowRateLimiter
from sqlalchemy import Engine, case, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from entitle.clock import Clock
from entitle.errors import EntitleError, RateLimited
from entitle.platform.models import RateLimitCounter


class SqlStorage(Storage):
    """A `limits` storage over the ``rate_limit_counters`` table (fixed windows)."""

    STORAGE_SCHEME = ["entitle+sql"]

    def __init__(self, engine: Engine, clock: Clock) -> None:
        super().__init__()
        self.engine = engine
        self.clock = clock
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    @property
    def base_exceptions(self) -> type[Exception]:
        return SQLAlchemyError

    def _now(self) -> float:
        return self.clock.now().timestamp()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        now = self._now()
        t = RateLimitCounter.__table__
        ins = self._insert(t).values(key=key, count=amount, expires_at=now + expiry)
        expired = t.c.expires_at <= now
        stmt = ins.on_conflict_do_update(
            index_elements=[t.c.key],
            set_={
                "count": case((expired, amount), else_=t.c.count + amount),
                "expires_at": case((expired, now + expiry), else_=t.c.expires_at),
            },
        ).returning(t.c.count)
        with self.engine.begin() as conn:
            return int(conn.execute(stmt).scalar_one())

    def get(self, key: str) -> int:
        with self.engine.connect() as conn:
            row = conn.execute(select(RateLimitCounter.count, RateLimitCounter.expires_at)
                               .where(RateLimitCounter.key == key)).first()
        return int(row[0]) if row and row[1] > self._now() else 0

    def get_expiry(self, key: str) -> float:
        with self.engine.connect() as conn:
            exp = conn.execute(select(RateLimitCounter.expires_at).where(RateLimitCounter.key == key)).scalar()
        return float(exp) if exp and exp > self._now() else self._now()

    def check(self) -> bool:
        try:
            with self.engine.connect() as conn:
                conn.execute(select(1))
            return True
        except SQLAlchemyError:
            return False

    def reset(self) -> int | None:
        with self.engine.begin() as conn:
            return conn.execute(delete(RateLimitCounter)).rowcount

    def clear(self, key: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(RateLimitCounter).where(RateLimitCounter.key == key))


@dataclass(frozen=True)
class Limit:
    scope: str
    item: RateLimitItem


class RedeemLimiter:
    def __init__(self, storage: Storage, *, per_org: str, per_client: str, clock: Clock,
                 enabled: bool = True) -> None:
        self.limiter = FixedWindowRateLimiter(storage)
        self.per_org = Limit("organization", parse(per_org))
        self.per_client = Limit("client", parse(per_client))
        self.clock = clock
        self.enabled = enabled

    def hit(self, *, org_id: int, client: str) -> None:
        if not self.enabled:
            return
        for limit, ident in ((self.per_org, f"org:{org_id}"), (self.per_client, f"client:{client}")):
            if not self.limiter.hit(limit.item, "redeem", ident):
                retry = _retry(self.limiter, limit, "redeem", ident, self.clock)
                raise RateLimited(
                    f"Too many redeem attempts for this {limit.scope}: at most {limit.item.amount} "
                    f"per {limit.item.GRANULARITY.name}. Try again in {retry} s.",
                    retry_after=retry, scope=limit.scope, limit=limit.item.amount,
                )


class SignInLimiter:
    """Failed sign-ins per account (the e-mail typed, known or not) and per client address.

    Only failures count, so someone who types their password right is never slowed down; a
    client or an account past its limit is refused before its password is checked, so a flood
    costs no argon2 work. Counters live in the same storage as redeem's (database or Redis), so
    every server process sees the same counts.
    """

    def __init__(self, storage: Storage, *, per_account: str, per_client: str, clock: Clock,
                 enabled: bool = True) -> None:
        self.limiter = FixedWindowRateLimiter(storage)
        self.per_account = Limit("account", parse(per_account))
        self.per_client = Limit("client", parse(per_client))
        self.clock = clock
        self.enabled = enabled

    def _pairs(self, email: str, client: str) -> tuple[tuple[Limit, str], ...]:
        return ((self.per_account, f"account:{email.strip().lower()}"), (self.per_client, f"client:{client}"))

    def check(self, *, email: str, client: str) -> None:
        """Refuse (429, Retry-After) when the account or the client used up its failures."""
        if not self.enabled:
            return
        for limit, ident in self._pairs(email, client):
            if not self.limiter.test(limit.item, "sign-in", ident):
                retry = _retry(self.limiter, limit, "sign-in", ident, self.clock)
                raise RateLimited(
                    f"Too many failed sign-ins for this {limit.scope}: at most {limit.item.amount} "
                    f"per {limit.item.GRANULARITY.name}. Try again in {retry} s.",
                    retry_after=retry, scope=limit.scope, limit=limit.item.amount,
                )

    def failed(self, *, email: str, client: str) -> None:
        if not self.enabled:
            return
        for limit, ident in self._pairs(email, client):
            self.limiter.hit(limit.item, "sign-in", ident)


def _retry(limiter: FixedWindowRateLimiter, limit: Limit, name: str, ident: str, clock: Clock) -> int:
    reset = limiter.get_window_stats(limit.item, name, ident).reset_time
    return max(1, math.ceil(reset - clock.now().timestamp()))


def make_storage(engine: Engine, clock: Clock, redis_url: str | None) -> Storage:
    if redis_url:
        # The redis client is the optional `[redis]` extra; `limits` imports it on first use.
        if importlib.util.find_spec("redis") is None:
            raise EntitleError(
                "redis_unavailable",
                "ENTITLE_REDIS_URL is set but the redis client is not installed: install the "
                "`redis` extra (pip install 'entitle[redis]', or -e '.[redis]' in a checkout), "
                "or unset ENTITLE_REDIS_URL to keep the rate-limit counters in the database.",
                status=500)
        return RedisStorage(redis_url)
    return SqlStorage(engine, clock)
