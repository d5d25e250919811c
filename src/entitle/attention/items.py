"""One thing that needs doing: what, how urgent, until when, and where it is fixed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
Area = Literal["access_commander", "axis", "my2n", "organization"]

# critical: something does not work now (suspended, lapsed, not licensed, a payment declined);
# warning: it will stop at a known moment unless someone acts; info: worth knowing.
SEVERITIES: tuple[Severity, ...] = ("critical", "warning", "info")
AREAS: dict[Area, str] = {"access_commander": "Access Commander", "axis": "AXIS License Manager",
                          "my2n": "My2N", "organization": "Organization"}
_RANK = {s: i for i, s in enumerate(SEVERITIES)}
_NEVER = datetime.max.replace(tzinfo=None)


@dataclass(frozen=True, slots=True)
class Item:
    """``kind`` is stable (for the API and tests); ``message`` is the sentence people read;
    ``due_at`` when it happens (future) or happened (past), None when no moment applies."""

    kind: str
    severity: Severity
    area: Area
    subject: str
    message: str
    href: str
    action: str
    due_at: datetime | None = None

    def sort_key(self) -> tuple[int, datetime, str]:
        due = self.due_at.replace(tzinfo=None) if self.due_at is not None else _NEVER
        return (_RANK[self.severity], due, self.subject)

    def to_dict(self, now: datetime) -> dict[str, Any]:
        return {"kind": self.kind, "severity": self.severity, "area": self.area, "subject": self.subject,
                "message": self.message, "href": self.href, "action": self.action,
                "due_at": self.due_at.isoformat() if self.due_at else None,
                "seconds_left": int((self.due_at - now).total_seconds()) if self.due_at else None,
                "time_left": time_left(now, self.due_at)}


def most_urgent_first(items: list[Item]) -> list[Item]:
    """What does not work now first, then what stops soonest, then the rest."""
    return sorted(items, key=Item.sort_key)


def _span(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    days, rest = divmod(seconds, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes = rest // 60
    if days >= 2:
        return f"{days} days"
    if days == 1:
        return "1 day" + (f" {hours} h" if hours else "")
    if hours:
        return f"{hours} h" + (f" {minutes} min" if minutes else "")
    if minutes:
        return f"{minutes} min"
    return "less than a minute"


def time_left(now: datetime, due_at: datetime | None) -> str:
    """ "in 3 days", "in 4 h 10 min", "2 days ago", or "" when there is no moment."""
    if due_at is None:
        return ""
    if due_at >= now:
        return f"in {_span(due_at - now)}"
    return f"{_span(now - due_at)} ago"


def moment(value: datetime) -> str:
    """A moment as the items name it: 2026-01-15 09:00 UTC."""
    return value.strftime("%Y-%m-%d %H:%M UTC")


def day(value: datetime) -> str:
    return value.strftime("%Y-%m-%d")


def names(values: list[str], shown: int = 5) -> str:
    """ "A1, A2 and 3 more" """
    if len(values) <= shown:
        return ", ".join(values)
    return f"{', '.join(values[:shown])} and {len(values) - shown} more"
