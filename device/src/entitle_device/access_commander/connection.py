"""The license device's connection record and the license state (R-AC-4, R-AC-5, R-AC-6).

A license is valid while its license device is connected (R-AC-4). The record describes that
device since the current license was added; pure transitions turn events into new records, and
``license_state`` reads the state at any ``now`` from the record alone, so the state is right
whenever it is computed, without a background job (R-CORE-7).

Connection time is counted only up to the last evidence (``last_seen``): it decides the length of
a protective period, so it must never be over-counted. The device counts as disconnected when it
was explicitly disconnected, or when nothing was heard for longer than the heartbeat timeout; the
disconnect moment is then the last evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

from entitle_device._encoding import require_aware
from entitle_device.access_commander.errors import LicenseDeviceNotConnected
from entitle_device.access_commander.protective import protective_period_end

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "ConnectionRecord",
    "LicenseState",
    "LicenseStatus",
    "connected_time",
    "is_connected",
    "license_state",
    "on_disconnect",
    "on_recovered",
    "on_seen",
]

# A license device heard from within this long still counts as connected. Installations poll
# their devices about once a minute; five missed polls is a disconnection, not a hiccup.
DEFAULT_HEARTBEAT_TIMEOUT = timedelta(minutes=5)

LicenseState = Literal["trial", "active", "protective", "suspended"]
_ZERO = timedelta(0)
_RECORD_FIELDS = ("license_added_at", "accumulated_microseconds", "connected_since", "last_seen",
                  "suspended_at")


@dataclass(frozen=True, slots=True)
class ConnectionRecord:
    """The license device since the current license was added.

    - ``accumulated``: connected time of the closed intervals;
    - ``connected_since``: start of the current interval, None when explicitly disconnected (or
      never seen);
    - ``last_seen``: the last evidence of a connection (heartbeat or "connected" report);
    - ``suspended_at``: when a protective period ran out, recorded when the device came back after
      it; cleared only by the admin activating the license device (``on_recovered``).

    A new license starts a new record: ``ConnectionRecord(license_added_at=now)``.
    """

    license_added_at: datetime
    accumulated: timedelta = _ZERO
    connected_since: datetime | None = None
    last_seen: datetime | None = None
    suspended_at: datetime | None = None

    def __post_init__(self) -> None:
        require_aware(self.license_added_at, "license_added_at")
        for name in ("connected_since", "last_seen", "suspended_at"):
            moment = getattr(self, name)
            if moment is not None:
                require_aware(moment, name)
                if moment < self.license_added_at:
                    raise ValueError(f"{name} is earlier than license_added_at")
        if self.connected_since is not None and (
            self.last_seen is None or self.last_seen < self.connected_since
        ):
            raise ValueError("an open interval needs last_seen, not earlier than connected_since")
        # Closed intervals all end before the current one starts (or at the last evidence).
        closed_by = self.connected_since or self.last_seen or self.license_added_at
        if not _ZERO <= self.accumulated <= closed_by - self.license_added_at:
            raise ValueError("accumulated must be between 0 and the time the closed intervals span")

    def as_dict(self) -> dict[str, str | int | None]:
        """JSON form: ISO 8601 times, the accumulated time in microseconds (exact)."""
        return {
            "license_added_at": self.license_added_at.isoformat(),
            "accumulated_microseconds": self.accumulated // timedelta(microseconds=1),
            "connected_since": _iso(self.connected_since),
            "last_seen": _iso(self.last_seen),
            "suspended_at": _iso(self.suspended_at),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> ConnectionRecord:
        """Read ``as_dict``'s form back; ValueError for anything else."""
        if not isinstance(data, Mapping) or set(data) != set(_RECORD_FIELDS):
            raise ValueError(f"a connection record has exactly {', '.join(_RECORD_FIELDS)}")
        microseconds = data["accumulated_microseconds"]
        if isinstance(microseconds, bool) or not isinstance(microseconds, int):
            raise ValueError("accumulated_microseconds must be a whole number")
        added = _parse_time(data["license_added_at"], "license_added_at")
        if added is None:
            raise ValueError("license_added_at is required")
        return cls(
            license_added_at=added,
            accumulated=timedelta(microseconds=microseconds),
            connected_since=_parse_time(data["connected_since"], "connected_since"),
            last_seen=_parse_time(data["last_seen"], "last_seen"),
            suspended_at=_parse_time(data["suspended_at"], "suspended_at"),
        )


@dataclass(frozen=True, slots=True)
class LicenseStatus:
    """The license at one moment.

    - ``trial``: no license (R-AC-2);
    - ``active``: the license device is connected;
    - ``protective``: it is not, and ``protective_until`` is not reached yet (R-AC-5);
    - ``suspended``: the protective period ran out at ``suspended_at`` (= ``protective_until``)
      and the admin has not activated the license device since (R-AC-6).

    ``connected_time`` is the cumulative connected time since the license was added;
    ``disconnected_at`` the last evidence before the current disconnection (None while the
    device is connected).
    """

    state: LicenseState
    connected_time: timedelta
    disconnected_at: datetime | None
    protective_until: datetime | None
    suspended_at: datetime | None

    @property
    def license_device_connected(self) -> bool:
        return self.state != "trial" and self.disconnected_at is None


def is_connected(record: ConnectionRecord, now: datetime, heartbeat_timeout: timedelta) -> bool:
    """Whether the license device counts as connected at ``now``."""
    return (
        record.connected_since is not None
        and record.last_seen is not None
        and record.connected_since <= now
        and now - record.last_seen <= heartbeat_timeout
    )


def connected_time(record: ConnectionRecord, now: datetime) -> timedelta:
    """Cumulative connected time up to ``now``: the current interval counts up to the last
    evidence, never further."""
    if record.connected_since is None or record.last_seen is None:
        return record.accumulated
    return record.accumulated + max(_ZERO, min(now, record.last_seen) - record.connected_since)


def on_seen(
    record: ConnectionRecord, at: datetime, heartbeat_timeout: timedelta
) -> ConnectionRecord:
    """A heartbeat or "connected" report from the license device at ``at``.

    Within the timeout of the last evidence it extends the current interval. After a longer gap,
    or after an explicit disconnect, it closes the old interval and opens a new one at ``at``;
    if the protective period had run out by then, the suspension is recorded (and stays until
    ``on_recovered``). Evidence not later than the last (events out of order) or from before the
    license was added is ignored.
    """
    require_aware(at, "at")
    if at < record.license_added_at or (record.last_seen is not None and at <= record.last_seen):
        return record
    if is_connected(record, at, heartbeat_timeout):
        return replace(record, last_seen=at)
    closed = _close(record)
    suspended_at = closed.suspended_at
    if suspended_at is None:
        end = protective_period_end(_disconnect_moment(closed), closed.accumulated)
        suspended_at = end if at >= end else None
    return replace(closed, connected_since=at, last_seen=at, suspended_at=suspended_at)


def on_disconnect(record: ConnectionRecord, at: datetime) -> ConnectionRecord:
    """The license device was reported disconnected at ``at``: the interval closes at the last
    evidence. A report older than the last evidence is ignored."""
    require_aware(at, "at")
    if record.last_seen is not None and at < record.last_seen:
        return record
    return _close(record)


def on_recovered(
    record: ConnectionRecord, at: datetime, heartbeat_timeout: timedelta
) -> ConnectionRecord:
    """The admin activated the license device at ``at`` (R-AC-6): a recorded suspension ends.

    Reconnecting alone does not recover a suspended license; this does, and only while the
    device is connected (else LicenseDeviceNotConnected). Without a suspension it changes nothing.
    """
    require_aware(at, "at")
    if record.suspended_at is None:
        return record
    if not is_connected(record, at, heartbeat_timeout):
        raise LicenseDeviceNotConnected(
            "The license device must be connected to be activated after a suspension.",
            {"suspended_at": record.suspended_at.isoformat(), "at": at.isoformat()},
        )
    return replace(record, suspended_at=None)


def license_state(
    record: ConnectionRecord | None, now: datetime, heartbeat_timeout: timedelta
) -> LicenseStatus:
    """The license state at ``now`` (None: no license, the trial)."""
    require_aware(now, "now")
    if record is None:
        return LicenseStatus("trial", _ZERO, None, None, None)
    connected = is_connected(record, now, heartbeat_timeout)
    time = connected_time(record, now)
    disconnected_at = None if connected else _disconnect_moment(record)
    if record.suspended_at is not None:
        return LicenseStatus("suspended", time, disconnected_at, record.suspended_at,
                             record.suspended_at)
    if disconnected_at is None:
        return LicenseStatus("active", time, None, None, None)
    end = protective_period_end(disconnected_at, connected_time(record, disconnected_at))
    if now < end:
        return LicenseStatus("protective", time, disconnected_at, end, None)
    return LicenseStatus("suspended", time, disconnected_at, end, end)


def _close(record: ConnectionRecord) -> ConnectionRecord:
    if record.connected_since is None or record.last_seen is None:
        return record
    closed = record.last_seen - record.connected_since
    return replace(record, accumulated=record.accumulated + closed, connected_since=None)


def _disconnect_moment(record: ConnectionRecord) -> datetime:
    # Never seen since the license was added: the period runs from the moment it was added.
    return record.license_added_at if record.last_seen is None else record.last_seen


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _parse_time(value: object, what: str) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{what} must be an ISO 8601 time or null")
    moment = datetime.fromisoformat(value)  # ValueError for text that is not a time
    require_aware(moment, what)
    return moment
