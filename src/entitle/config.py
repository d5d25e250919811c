"""Settings, read from the environment (prefix ``ENTITLE_``) or a ``.env`` file."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENTITLE_", env_file=".env", extra="ignore")

    database_url: str = f"sqlite:///{Path('var/entitle.db').absolute()}"
    # PostgreSQL: the most connections one process opens (10 of them kept). Every process of every
    # machine shares the server's max_connections (100 by default): processes x this must stay
    # under it. A request beyond waits for a connection (up to 30 s) rather than failing.
    database_max_connections: int = Field(default=50, ge=1, le=1000)
    # When set, rate-limit counters live in Redis instead of the database.
    redis_url: str | None = None
    # Rate limits for redeeming keys, in the `limits` notation ("N/period").
    redeem_limit_per_org: str = "30/minute"
    redeem_limit_per_client: str = "60/minute"
    rate_limits_enabled: bool = True
    # Failed sign-ins (wrong password, API or web, and a wrong current password) per account and
    # per client address; beyond either, sign-in answers 429 with Retry-After (docs/security.md).
    sign_in_limit_per_account: str = "10/minute"
    sign_in_limit_per_client: str = "30/minute"
    # Memory the password checks of one process may use at once: argon2 takes
    # `argon2_memory_cost` KiB per check, so 256 MiB runs 4 checks at once at the default cost
    # (fewer on a machine of fewer than 16 cores: each check runs 4 threads; tenancy.services).
    # A check beyond that is answered 503 with Retry-After at once rather than queued.
    password_check_memory_mib: int = Field(default=256, ge=1)
    # The largest request body, in bytes (413 beyond). Addresses that take a file have their own
    # larger limit: the catalog (`max_catalog_bytes`) and My2N's CSV import (64 MiB).
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_catalog_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    session_max_age_seconds: int = 12 * 3600
    # Secure cookies need HTTPS; the embedded default serves plain HTTP on loopback.
    cookie_secure: bool = False
    # Tests, demos and scripted checks only: freeze the clock at this moment (ISO 8601 with a zone)
    # in every interface (R-CORE-7), e.g. ENTITLE_NOW=2027-03-01T12:00:00Z entitle ac status ...
    now: datetime | None = None
    log_level: str = "INFO"
    log_json: bool = False
    # The key that encrypts the issuer's signing keys at rest (AES-256-GCM). Either the key itself
    # (base64, 32 bytes) or a file holding it; the file is created owner-only on first use.
    # Every server process sharing a database must have the same key.
    secret_key: str | None = None
    secret_key_file: str = str(Path("var/secret.key").absolute())
    # Passed to argon2; tests lower them so that hashing does not dominate the suite.
    argon2_time_cost: int = 3
    argon2_memory_cost: int = 65536
    # Access Commander heartbeats (POST /api/v1/ac/heartbeat, docs/access-commander.md,
    # "Heartbeats: the write path"). Heartbeats are buffered in the server process and written
    # every `heartbeat_flush_interval_seconds`, all installations in one transaction: a crash
    # loses at most the heartbeats of one interval (plus the flush that was running).
    heartbeat_flush_interval_seconds: float = Field(default=1.0, gt=0, le=60)
    # How long a process trusts an installation token it has looked up: a token revoked (or an
    # installation removed) keeps working for up to this long in a process that used it. The same
    # bound holds for an API token's actor (user, roles) changed by another process
    # (tenancy.services.TokenActors, docs/architecture.md).
    heartbeat_token_ttl_seconds: float = Field(default=30.0, ge=0, le=3600)
    # Remembered answers (api.answers, docs/architecture.md): reads answered again from memory while
    # nothing was committed since and no time rule changed them. Off: every read is made.
    remember_answers: bool = True
    # Every answer given from memory is made again and compared, a mismatch is an error. For
    # tests; it takes away what remembering saves.
    answers_check: bool = False
    # A serial a process does not know is looked up again at most this often per installation
    # (a device added since is accepted after at most this long).
    heartbeat_serials_refresh_seconds: float = Field(default=2.0, ge=0, le=3600)

    # My2N card payments (R-MY-5, docs/my2n.md "Card payments"). "local" is the in-process
    # provider for development and tests (no money moves); "stripe" is the real adapter and needs
    # the three stripe_* settings. Prices are per apartment-year in minor units (cents).
    payment_provider: Literal["local", "stripe"] = "local"
    stripe_api_key: str | None = None
    stripe_webhook_secret: str | None = None
    stripe_price_id: str | None = None
    stripe_api_base: str = "https://api.stripe.com"
    local_webhook_secret: str = "whsec_local"
    # What every charge of the local provider does in this process (docs/my2n.md "Trying it
    # out"): "decline" or "timeout" to see a renewal fail, e.g. ENTITLE_LOCAL_PAYMENT_OUTCOME=decline entitle sweep.
    local_payment_outcome: Literal["succeed", "decline", "timeout"] = "succeed"
    apartment_year_price_minor: int = Field(default=1200, ge=1)
    apartment_year_currency: str = Field(default="eur", min_length=3, max_length=3)
    # A site pays in its own region's price and currency (issue 14 point 8), e.g.
    # ENTITLE_APARTMENT_YEAR_PRICES='{"US": [1500, "usd"], "APAC": [1500, "usd"]}'; a region not
    # listed pays the two settings above. With Stripe, each listed region needs its own annual
    # Price (of that amount and currency) in ENTITLE_STRIPE_PRICE_IDS='{"US": "price_…"}'.
    apartment_year_prices: dict[str, tuple[int, str]] = Field(default_factory=dict)
    stripe_price_ids: dict[str, str] = Field(default_factory=dict)

    # Notifications by e-mail (R-CORE-8, docs/events.md "Notifications"). "local" keeps the
    # messages in the process and logs them (development, tests); "smtp" sends them through the
    # configured server, with STARTTLS and a login when set.
    mail: Literal["local", "smtp"] = "local"
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_from: str = "Entitle <entitle@localhost>"
    smtp_starttls: bool = False
    smtp_timeout_seconds: float = Field(default=30.0, gt=0, le=300)

    @field_validator("now")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("ENTITLE_NOW needs a time zone, e.g. 2027-03-01T12:00:00Z")
        return value

    @field_validator("apartment_year_prices", "stripe_price_ids")
    @classmethod
    def _by_region(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:  # the default: no import (a command that needs no My2N never loads it)
            return value
        from entitle.my2n.rules import Region  # a plain module: no import cycle

        regions = get_args(Region)
        out: dict[str, Any] = {}
        for region, price in value.items():
            if region.strip().upper() not in regions:
                raise ValueError(f"unknown region {region!r}; use {', '.join(regions)}")
            if isinstance(price, tuple):
                minor, currency = price
                if minor < 1 or len(currency) != 3 or not currency.isalpha():
                    raise ValueError(f"the price of {region} is [minor units ≥ 1, a 3-letter currency], "
                                     f"not {list(price)}")
                price = (minor, currency.lower())
            out[region.strip().upper()] = price
        return out

    def apartment_year_price(self, region: str) -> tuple[int, str]:
        """An apartment-year in ``region``: its price in minor units and its currency (lower case)."""
        return self.apartment_year_prices.get(region.upper(),
                                              (self.apartment_year_price_minor, self.apartment_year_currency.lower()))


@lru_cache
def get_settings() -> Settings:
    return Settings()
