"""Finding entries in an organization's history: by area, person, object and date range, newest
first, a page at a time; and the same entries as CSV (issue 16). Read only, like every way into
history (R-CORE-6)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.orm import Session

from entitle.history import sentences
from entitle.history.models import HistoryEntry

CSV_COLUMNS = ("seq", "when", "who", "area", "what", "action", "object_type", "object_id", "before", "after")
CSV_MAX_ROWS = 100_000


@dataclass(frozen=True, slots=True)
class Filters:
    area: str = ""  # a key of sentences.AREAS
    person: str = ""  # the actor as recorded (an e-mail, "sweep", ...)
    object: str = ""  # part of an object's id or type:id ("my2n_site:3", "LD-1", "ACS-1")
    since: date | None = None
    until: date | None = None  # inclusive

    @property
    def active(self) -> bool:
        return bool(self.area or self.person or self.object or self.since or self.until)

    def query(self) -> dict[str, str]:
        """The filters as the page's query string names them."""
        out = {"area": self.area, "person": self.person, "object": self.object,
               "since": self.since.isoformat() if self.since else "",
               "until": self.until.isoformat() if self.until else ""}
        return {k: v for k, v in out.items() if v}


def _filtered(org_id: int, f: Filters) -> Select[tuple[HistoryEntry]]:
    stmt = select(HistoryEntry).where(HistoryEntry.org_id == org_id)
    if f.area in sentences.AREAS:
        prefixes = sentences.AREAS[f.area][1]
        stmt = stmt.where(or_(*(HistoryEntry.action.startswith(p, autoescape=True) for p in prefixes)))
    if f.person:
        stmt = stmt.where(HistoryEntry.actor == f.person)
    if f.object:
        kind, sep, oid = f.object.partition(":")
        if sep and kind and oid and " " not in kind:
            stmt = stmt.where(HistoryEntry.object_type == kind, HistoryEntry.object_id == oid)
        else:
            stmt = stmt.where(HistoryEntry.object_id.contains(f.object.strip(), autoescape=True))
    if f.since:
        stmt = stmt.where(HistoryEntry.at >= datetime.combine(f.since, time.min, UTC))
    if f.until:
        stmt = stmt.where(HistoryEntry.at < datetime.combine(f.until + timedelta(days=1), time.min, UTC))
    return stmt


def search(session: Session, org_id: int, f: Filters, *, limit: int, before_seq: int | None = None
           ) -> list[HistoryEntry]:
    """Newest first; ``before_seq`` is the cursor, as for ``history.services.page``."""
    stmt = _filtered(org_id, f)
    if before_seq is not None:
        stmt = stmt.where(HistoryEntry.seq < before_seq)
    return list(session.scalars(stmt.order_by(HistoryEntry.seq.desc()).limit(limit)))


def people(session: Session, org_id: int) -> list[str]:
    """Everyone (and everything) that appears in the organization's history."""
    return sorted(session.scalars(select(HistoryEntry.actor).where(HistoryEntry.org_id == org_id).distinct()))


def _cell(value: str) -> str:
    # A spreadsheet runs a cell that starts with one of these as a formula.
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _json(value: dict[str, Any] | None) -> str:
    return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def csv_rows(session: Session, org_id: int, f: Filters, *, batch: int = 1000) -> Iterator[list[str]]:
    """The header, then every matching entry newest first: the sentence people read beside the
    raw record (action, object, before and after) auditors check."""
    yield list(CSV_COLUMNS)
    cursor: int | None = None
    done = 0
    while done < CSV_MAX_ROWS:
        entries = search(session, org_id, f, limit=min(batch, CSV_MAX_ROWS - done), before_seq=cursor)
        if not entries:
            return
        for line in sentences.lines(session, org_id, entries):
            e = line.entry
            yield [str(e.seq), e.at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"), _cell(line.who),
                   line.area_label, _cell(line.sentence.text), e.action, e.object_type, _cell(e.object_id),
                   _json(e.before), _json(e.after)]
        done += len(entries)
        cursor = entries[-1].seq


def as_csv(rows: Iterable[list[str]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for row in rows:
        writer.writerow(row)
    return out.getvalue()
