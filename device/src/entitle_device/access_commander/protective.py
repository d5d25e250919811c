"""The protective period (R-AC-5): how long the installation keeps working without its license
device, set by how long that device had been connected (2N's manual, "License suspension").

| connected (cumulative, since the license was added) | protective period |
| --- | --- |
| under 24 hours                                       | 1 day    |
| 24 hours to 30 days, both inclusive                  | 10 days  |
| over 30 days, up to 180 days inclusive               | 1 month  |
| over 180 days                                        | 3 months |

Months are calendar months from the disconnect moment (``add_months``).
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from entitle_device._encoding import require_aware

__all__ = ["Period", "add_months", "protective_period", "protective_period_end"]

_DAY = timedelta(days=1)
_MONTH_FROM = timedelta(days=30)  # connected longer than this: 1 month
_QUARTER_FROM = timedelta(days=180)  # connected longer than this: 3 months


@dataclass(frozen=True, slots=True)
class Period:
    """A length of time in calendar months and days (months first, then days)."""

    months: int = 0
    days: int = 0

    def after(self, start: datetime) -> datetime:
        """The moment this period after ``start`` ends."""
        return add_months(start, self.months) + timedelta(days=self.days)


def protective_period(connected: timedelta) -> Period:
    """The protective period for a license device connected this long in total (R-AC-5)."""
    if connected < timedelta(0):
        raise ValueError("connected time cannot be negative")
    if connected < _DAY:
        return Period(days=1)
    if connected <= _MONTH_FROM:
        return Period(days=10)
    if connected <= _QUARTER_FROM:
        return Period(months=1)
    return Period(months=3)


def protective_period_end(disconnected_at: datetime, connected: timedelta) -> datetime:
    """When the protective period that starts at ``disconnected_at`` runs out (in UTC). At that
    instant the license is suspended: it is protective while *now* is strictly earlier."""
    require_aware(disconnected_at, "disconnected_at")
    return protective_period(connected).after(disconnected_at.astimezone(timezone.utc))


def add_months(start: datetime, months: int) -> datetime:
    """``start`` moved by whole calendar months: the same day of the month (the month's last day
    when it has fewer: Jan 31 + 1 month = Feb 28, or 29 in a leap year), the same time."""
    index = start.year * 12 + start.month - 1 + months
    year, month = divmod(index, 12)
    day = min(start.day, calendar.monthrange(year, month + 1)[1])
    return start.replace(year=year, month=month + 1, day=day)
