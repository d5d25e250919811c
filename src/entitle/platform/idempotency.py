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

from sqlalchemy import bindparam, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from entitle.db import transaction
from entitle.errors import EntitleError, NotFound
from entitle.history import services as history
from entitle.platform.models import IdempotencyRecord
from entitle.tenancy.models import Organization

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
        stored: Callable[[dict[str, Any]], dict[str, Any]] = lambda body: body, lock: bool = False) -> Outcome:
    """Do ``work`` once per (organization, key). ``stored`` trims what is kept for replays
    (never store secrets such as freshly minted key codes). ``lock``: the claim also takes the
    organization's lock (``history.lock_organization``) in its statement, for work that takes it
    first anyway (a redeem): on PostgreSQL everything the work reads after it is then current."""
    which = {"org_id": org_id, "key": key}
    try:
        with transaction(factory) as session:
            # Claims the key in one statement; a concurrent twin waits here until this transaction
            # ends, then finds the record (and replays it) or, if this one rolled back, claims it.
            dialect = session.get_bind().dialect.name
            locking = lock and history.needs_lock(session, org_id)
            claimed = session.execute(_CLAIM_LOCKING if locking else _CLAIM[dialect],
                                      {**which, "fingerprint": fp, "created_at": now}).scalar()
            if locking:
                history.locked(session, org_id)
            if claimed is None:
                existing = session.scalars(_RECORD, which).one_or_none()
                if existing is None and locking:  # the organization row was not there to lock
                    raise NotFound("organization", org_id=org_id)
                if existing is None:  # pragma: no cover - the twin's record cannot vanish
                    raise IntegrityError("idempotency record", which, Exception("claimed, then gone"))
                return _replay(existing, fp)
            status, body = work(session)
            session.execute(_ANSWER, {"record_id": claimed, "status_code": status, "response": stored(body)})
            return Outcome(status, body, False)
    except IntegrityError:
        with transaction(factory) as session:
            existing = session.scalars(_RECORD, which).one_or_none()
            if existing is None:
                raise
            return _replay(existing, fp)


_RECORD = select(IdempotencyRecord).where(IdempotencyRecord.org_id == bindparam("org_id"),
                                          IdempotencyRecord.key == bindparam("key"))
_CLAIM = {name: dialect.insert(IdempotencyRecord.__table__).values(
    org_id=bindparam("org_id"), key=bindparam("key"), fingerprint=bindparam("fingerprint"), status_code=0,
    response=bindparam("empty", {}, type_=IdempotencyRecord.__table__.c.response.type),
    created_at=bindparam("created_at", type_=IdempotencyRecord.__table__.c.created_at.type),
).on_conflict_do_nothing(index_elements=["org_id", "key"]).returning(IdempotencyRecord.__table__.c.id)
    for name, dialect in (("postgresql", postgresql), ("sqlite", sqlite))}
# PostgreSQL, ``lock``: the organization's row locked in a CTE, the record inserted from it.
_HELD = (select(Organization.id).where(Organization.id == bindparam("org_id"))
         .with_for_update(**history.LOCK_OF).cte("held"))
_CLAIM_LOCKING = postgresql.insert(IdempotencyRecord.__table__).from_select(
    ["org_id", "key", "fingerprint", "status_code", "response", "created_at"],
    select(_HELD.c.id, bindparam("key", type_=IdempotencyRecord.__table__.c.key.type),
           bindparam("fingerprint", type_=IdempotencyRecord.__table__.c.fingerprint.type), literal(0),
           bindparam("empty", {}, type_=IdempotencyRecord.__table__.c.response.type),
           bindparam("created_at", type_=IdempotencyRecord.__table__.c.created_at.type)),
).on_conflict_do_nothing(index_elements=["org_id", "key"]).returning(IdempotencyRecord.__table__.c.id)
_ANSWER = (update(IdempotencyRecord).where(IdempotencyRecord.id == bindparam("record_id"))
           .values(status_code=bindparam("status_code"),
                   response=bindparam("response", type_=IdempotencyRecord.__table__.c.response.type))
           .execution_options(synchronize_session=False))
