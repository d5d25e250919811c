"""Settings, read from the environment (prefix ``ENTITLE_``) or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ENTITLE_", env_file=".env", extra="ignore")

    database_url: str = f"sqlite:///{Path('var/entitle.db').absolute()}"
    # When set, rate-limit counters live in Redis instead of the database.
    redis_url: str | None = None
    # Rate limits for redeeming keys, in the `limits` notation ("N/period").
    redeem_limit_per_org: str = "30/minute"
    redeem_limit_per_client: str = "60/minute"
    rate_limits_enabled: bool = True
    session_max_age_seconds: int = 12 * 3600
    # Secure cookies need HTTPS; the embedded default serves plain HTTP on loopback.
    cookie_secure: bool = False
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


@lru_cache
def get_settings() -> Settings:
    return Settings()
