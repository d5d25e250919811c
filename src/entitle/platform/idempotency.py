"""``Idempotency-Key`` for every POST that moves units (R-CORE-5).

The record is inserted first, in the same transaction as the work: a concurrent request with
the same key waits on the unique index, then finds the committed answer and replays it. A
refused request leaves no record (it moved nothing), so retrying it re-checks.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.platform.models import IdempotencyRecord

MAX_KEY_LENGTH = 200


@dataclass(frozen=True)
class Outcome:
    status: int
    body: dict[str, Any]
    replayed: bool


def fingerprint(method: str, path: str, body: Any) -> str:
    raw = json.dumps([method.upper(), path, body], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(raw.encode()).hexdigest()


def require_key(key: str | None) -> str:
    if not key or not key.strip():
        raise EntitleError(
            "idempotency_key_required",
            "This request moves license units: send an Idempotency-Key header (any unique string, "
            "e.g. a UUID) so that a retry cannot move them twice.",
        )
    if len(key) > MAX_KEY_LENGTH:
        raise EntitleError("idempotency_key_invalid", f"Idempotency-Key is at most {MAX_KEY_LENGTH} characters.")
    return key.strip()


def _replay(record: IdempotencyRecord, fp: str) -> Outcome:
    if record.fingerprint != fp:
        raise EntitleError(
            "idempotency_key_reused",
            "This Idempotency-Key was already used for a different request; use a new key.",
            status=422,
        )
    return Outcome(record.status_code, record.response, True)


def run(factory: sessionmaker[Session], *, org_id: int, key: str, fp: str, now: datetime,
        work: Callable[[Session], tuple[int, dict[str, Any]]],
        stored: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body) -> Outcome:
    """Do ``work`` once per (organization, key). ``stored`` trims what is kept for replays
    (never store secrets such as freshly minted key codes)."""
    try:
        with transaction(factory) as session:
            existing = session.scalars(select(IdempotencyRecord).where(
                IdempotencyRecord.org_id == org_id, IdempotencyRecord.key == key)).one_or_none()
            if existing is not None:
                return _replay(existing, fp)
            record = IdempotencyRecord(org_id=org_id, key=key, fingerprint=fp, status_code=0,
                                       response={}, created_at=now)
            session.add(record)
            session.flush()  # claims the key; a concurrent twin blocks here
            status, body = work(session)
            record.status_code, record.response = status, stored(body)
            return Outcome(status, body, False)
    except IntegrityError:
        with transaction(factory) as session:
            existing = session.scalars(select(IdempotencyRecord).where(
                IdempotencyRecord.org_id == org_id, IdempotencyRecord.key == key)).one_or_none()
            if existing is None:
                raise
            return _replay(existing, fp)
