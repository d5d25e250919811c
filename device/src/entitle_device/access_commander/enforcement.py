"""Activation and enforcement (R-AC-6, R-AC-7, R-AC-8): pure decisions about ONE new thing.

Each check returns None when the new activation (device), monitored Attendance user or use of
integration is allowed, and raises an AccessCommanderError otherwise. They only refuse new
things: nothing already active is ever deactivated by a smaller capacity (the counts passed in
may exceed the capacity; the error then reports both). Visitors are never limited by a license,
so there is no check for them.
"""

from __future__ import annotations

from datetime import datetime

from entitle_device.access_commander.capacity import Capacity
from entitle_device.access_commander.connection import LicenseStatus
from entitle_device.access_commander.errors import (
    AdminLimitReached,
    AttendanceLimitReached,
    DeviceLimitReached,
    IntegrationNotLicensed,
    LicenseDeviceFirst,
    LicenseDeviceNotConnected,
    LicenseSuspended,
)

__all__ = ["check_activation", "check_attendance", "check_integration"]


def check_activation(
    serial: str,
    *,
    license_device_serial: str | None,
    license_device_active: bool,
    active_count: int,
    capacity: Capacity,
    status: LicenseStatus,
) -> None:
    """May the device ``serial`` (not active now) be activated? Checked in this order:

    1. the license is suspended: only the license device, and only while connected
       (``license_suspended``, ``license_device_not_connected``); activating it is the recovery,
       so the device count does not apply (every device was made inactive);
    2. a license was added (or recovered) and its license device is not active yet: it must be
       activated first (``license_device_first``);
    3. ``active_count`` devices are active and the license owns no more (``device_limit_reached``).

    ``license_device_serial`` is None with no license (the trial).
    """
    if status.state == "suspended":
        if serial != license_device_serial:
            raise LicenseSuspended(
                f"The license is suspended: its license device {license_device_serial} was "
                f"disconnected and the protective period ran out at {_iso(status.suspended_at)}. "
                f"Only the license device can be activated now; connect and activate it, or add "
                f"a new license.",
                {"serial": serial, "license_device": license_device_serial,
                 "suspended_at": _iso(status.suspended_at)},
            )
        if not status.license_device_connected:
            raise LicenseDeviceNotConnected(
                f"The license device {serial} is not connected. Connect it, then activate it to "
                f"recover the suspended license.",
                {"serial": serial, "disconnected_at": _iso(status.disconnected_at)},
            )
        return
    new_license = license_device_serial is not None and not license_device_active
    if new_license and serial != license_device_serial:
        raise LicenseDeviceFirst(
            f"Activate the license device {license_device_serial} first: the license was "
            f"generated for it (it is the license's hardware key), and no other device can be "
            f"activated until it is active.",
            {"serial": serial, "license_device": license_device_serial},
        )
    if capacity.devices is not None and active_count >= capacity.devices:
        raise DeviceLimitReached(
            f"The license owns {_count(capacity.devices, 'device', 'devices')} and "
            f"{_count(active_count, 'is', 'are')} active. Add a license with more devices to "
            f"activate {serial}.",
            {"serial": serial, "owned": capacity.devices, "active": active_count},
        )


def check_attendance(monitored_count: int, capacity: Capacity) -> None:
    """May one more Attendance user be monitored, ``monitored_count`` being monitored now?"""
    if capacity.attendance_users is not None and monitored_count >= capacity.attendance_users:
        raise AttendanceLimitReached(
            f"The license owns "
            f"{_count(capacity.attendance_users, 'Attendance user', 'Attendance users')} and "
            f"{_count(monitored_count, 'is', 'are')} monitored. Add a license with more "
            f"Attendance users.",
            {"owned": capacity.attendance_users, "monitored": monitored_count},
        )


def check_admin(admin_count: int, capacity: Capacity) -> None:
    """May one more system user be an administrator, ``admin_count`` being administrators now?
    Packages leave admins unlimited; tiers such as Basic (1) and Advanced (5) limit them."""
    if capacity.admins is not None and admin_count >= capacity.admins:
        raise AdminLimitReached(
            f"The license allows {_count(capacity.admins, 'administrator', 'administrators')} and "
            f"{_count(admin_count, 'is an administrator', 'are administrators')}. Make another "
            f"system user an ordinary user, or add a license of a larger tier.",
            {"owned": capacity.admins, "admins": admin_count},
        )


def check_integration(capacity: Capacity) -> None:
    """May LDAP or CSV synchronisation be used?"""
    if not capacity.integration:
        raise IntegrationNotLicensed(
            "LDAP and CSV synchronisation need the integration license, which this license "
            "does not include.",
            {"tier": capacity.tier},
        )


def _count(n: int, one: str, many: str) -> str:
    """``n`` and the word in the right number: "1 device", "0 devices", "5 devices"."""
    return f"{n} {one if n == 1 else many}"


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
