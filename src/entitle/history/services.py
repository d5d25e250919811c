"""The organization's append-only history, chained by SHA-256 (R-CORE-6)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.db import is_postgres
from entitle.history.models import HistoryEntry
from entitle.tenancy.models import Organization

GENESIS = "0" * 64


def entry_hash(prev_hash: str, *, seq: int, at: datetime, actor: str, action: str, object_type: str,
               object_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "before": before,
            "after": after,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def lock_organization(session: Session, org_id: int) -> None:
    """Serialise writers of one organization (history order, wallet checks).

    SQLite already has one writer (BEGIN IMMEDIATE); PostgreSQL locks the organization row
    FOR NO KEY UPDATE: it excludes other writers but not the KEY SHARE locks that foreign-key
    checks take on the row (an idempotency record or an account inserted earlier in another
    transaction); FOR UPDATE would deadlock with those.
    """
    if is_postgres(session):
        session.execute(select(Organization.id).where(Organization.id == org_id)
                        .with_for_update(key_share=True))


def record(session: Session, *, org_id: int, actor: Actor, now: datetime, action: str,
           object_type: str, object_id: str | int, before: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None) -> HistoryEntry:
    """Append one entry in the caller's transaction."""
    lock_organization(session, org_id)
    last = session.execute(
        select(HistoryEntry.seq, HistoryEntry.hash)
        .where(HistoryEntry.org_id == org_id)
        .order_by(HistoryEntry.seq.desc())
        .limit(1)
    ).first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    fields = dict(seq=seq, at=now, actor=actor.label, action=action, object_type=object_type,
                  object_id=str(object_id), before=before, after=after)
    entry = HistoryEntry(org_id=org_id, prev_hash=prev, hash=entry_hash(prev, **fields), **fields)
    session.add(entry)
    session.flush()
    return entry


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "first_bad_seq": self.first_bad_seq,
                "reason": self.reason}


def _stream(session: Session, org_id: int) -> Iterator[HistoryEntry]:
    stmt = select(HistoryEntry).where(HistoryEntry.org_id == org_id).order_by(HistoryEntry.seq)
    yield from session.scalars(stmt.execution_options(yield_per=2000))


def verify(session: Session, org_id: int) -> Verification:
    """Recompute the chain; report the first entry that was changed, removed or inserted."""
    prev, expected_seq, checked = GENESIS, 1, 0
    for e in _stream(session, org_id):
        if e.seq != expected_seq:
            return Verification(False, checked, expected_seq, "entry missing or out of order")
        if e.prev_hash != prev:
            return Verification(False, checked, e.seq, "link to the previous entry is broken")
        recomputed = entry_hash(prev, seq=e.seq, at=e.at, actor=e.actor, action=e.action,
                                object_type=e.object_type, object_id=e.object_id,
                                before=e.before, after=e.after)
        if recomputed != e.hash:
            return Verification(False, checked, e.seq, "entry content does not match its hash")
        prev, expected_seq, checked = e.hash, expected_seq + 1, checked + 1
    return Verification(True, checked)


def page(session: Session, org_id: int, *, limit: int, before_seq: int | None = None,
         actions: Sequence[str] = (), action_prefix: str | None = None) -> list[HistoryEntry]:
    """Newest first; ``before_seq`` is the cursor. With ``actions`` and/or ``action_prefix``,
    only entries whose action is one of them or starts with the prefix."""
    stmt = select(HistoryEntry).where(HistoryEntry.org_id == org_id)
    if actions or action_prefix:
        wanted = [HistoryEntry.action.in_(list(actions))] if actions else []
        if action_prefix:
            wanted.append(HistoryEntry.action.startswith(action_prefix, autoescape=True))
        stmt = stmt.where(or_(*wanted))
    if before_seq is not None:
        stmt = stmt.where(HistoryEntry.seq < before_seq)
    return list(session.scalars(stmt.order_by(HistoryEntry.seq.desc()).limit(limit)))


def to_dict(e: HistoryEntry) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
            "object_type": e.object_type, "object_id": e.object_id, "before": e.before,
            "after": e.after, "hash": e.hash}
