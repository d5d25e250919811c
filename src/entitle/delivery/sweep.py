"""The sweep (R-CORE-8): the transitions that happen with time alone -- a grace period ending, a
protective period running out, an apartment license lapsing -- found and recorded as events,
each exactly once.

Each licensing model has a *finder*: plain queries that list, for a moment ``now``, the
transitions that have happened by then (within a look-back window), each with a stable identity
(``kind`` and ``subject``, e.g. ``my2n.apartment.lapsed`` and ``apt/12/2027-03-01T00:00:00+00:00``:
the apartment *and* the paid-through date that lapsed, so a renewed and again lapsed license is a
new transition). ``sweep`` records each one with a :class:`SweepMark` whose (kind, subject) is
unique, in the same transaction as its event; so

- two sweeps running at once record each transition once (the second insert of a mark waits for
  the first transaction and then fails on the unique key, and that transition is skipped);
- a sweep killed halfway has committed whole batches only; the next sweep records the rest.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from entitle.db import chunks, reading
from entitle.delivery.models import SweepMark
from entitle.platform import events
from entitle.platform.models import Event


@dataclass(frozen=True)
class Transition:
    kind: str  # the event type recorded
    subject: str  # what it happened to, unique per occurrence (at most 255 characters)
    org_id: int
    due_at: datetime  # when it happened
    payload: dict[str, Any] = field(default_factory=dict)
    # How to record it when that is more than its event (an AXIS lot's expiry also moves its
    # units in the ledger and writes history): called in the sweep's transaction instead of
    # ``record_once``, it records the event through ``record_once`` too, or returns None when the
    # transition was recorded meanwhile.
    record: Callable[[Session, datetime], Event | None] | None = field(default=None, compare=False, repr=False)


Finder = Callable[[Session, datetime], Iterable[Transition]]


def finders() -> list[Finder]:
    """Every licensing model's finder."""
    from entitle.my2n import sweep as my2n_sweep

    found: list[Finder] = [my2n_sweep.find]
    for area in ("entitle.axis.sweep", "entitle.access_commander.sweep"):
        try:
            module = __import__(area, fromlist=["find"])
        except ModuleNotFoundError:
            continue
        found.append(module.find)
    return found


def _unmarked(session: Session, found: list[Transition]) -> list[Transition]:
    """Leave out what an earlier sweep recorded (read in chunks; the unique key decides races)."""
    seen: set[tuple[str, str]] = set()
    for chunk in chunks(found, 500):
        seen.update((kind, subject) for kind, subject in session.execute(
            select(SweepMark.kind, SweepMark.subject).where(
                tuple_(SweepMark.kind, SweepMark.subject).in_([(t.kind, t.subject) for t in chunk]))))
    # A transition that records more than its event decides itself (an expired lot still holding
    # units was announced by a sweep of an earlier version, which left the ledger untouched).
    return [t for t in found if t.record is not None or (t.kind, t.subject) not in seen]


def sweep(factory: sessionmaker[Session], *, now: datetime, using: list[Finder] | None = None,
          batch: int = 200, on_batch: Callable[[int], None] | None = None) -> dict[str, int]:
    """Record every transition due by ``now`` that no sweep has recorded; returns how many were
    found, recorded now, and skipped because another sweep recorded them meanwhile."""
    with reading(factory) as s:  # on SQLite, no write lock while the finders read
        found = [t for finder in (using or finders()) for t in finder(s, now) if t.due_at <= now]
        todo = _unmarked(s, found)
    recorded = skipped = 0
    for chunk in chunks(todo, batch):
        with factory.begin() as s:
            for t in chunk:
                if (t.record(s, now) if t.record is not None else record_once(s, t, now=now)) is None:
                    skipped += 1
                else:
                    recorded += 1
        if on_batch is not None:
            on_batch(len(chunk))
    return {"found": len(found), "recorded": recorded, "skipped": skipped}


def record_once(session: Session, t: Transition, *, now: datetime) -> Event | None:
    """Record ``t``'s event with its mark, in the caller's transaction, unless another
    transaction recorded it (the mark's unique key refuses it: None). A write path that notices
    a time-driven transition itself (an AXIS wallet lot found expired by the next allocation)
    records it through here too, so that it and the sweep announce it once between them."""
    mark = SweepMark(kind=t.kind, subject=t.subject[:255], org_id=t.org_id, due_at=t.due_at, recorded_at=now)
    try:
        with session.begin_nested():
            session.add(mark)
            session.flush()
    except IntegrityError:
        return None
    event = events.emit(session, org_id=t.org_id, type=t.kind, now=now, due_at=t.due_at.isoformat(), **t.payload)
    session.flush()
    mark.event_id = event.id
    return event
