"""The one source of the current time (R-CORE-7).

Everything that depends on time asks a :class:`Clock`; tests pass a :class:`FrozenClock` and move
it. Times are always timezone-aware UTC.
"""

from __future__ import annotations

import calendar
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class FrozenClock:
    """A clock that stands still until moved; safe to share between threads."""

    def __init__(self, start: datetime) -> None:
        self._now = ensure_utc(start)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def set(self, when: datetime) -> None:
        with self._lock:
            self._now = ensure_utc(when)

    def advance(self, delta: timedelta) -> datetime:
        with self._lock:
            self._now += delta
            return self._now


def ensure_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: Entitle only handles timezone-aware times")
    return value.astimezone(UTC)


def add_years(moment: datetime, years: int) -> datetime:
    """The same day and time ``years`` later; 29 February becomes 28 February in a common year."""
    year = moment.year + years
    day = min(moment.day, calendar.monthrange(year, moment.month)[1])
    return moment.replace(year=year, day=day)
