"""Access Commander refusals (R-AC-7, R-AC-8): each a stable ``code``, a sentence, the numbers.

They map one to one onto the API's error envelope (``{"error": {"code", "message", "detail"}}``).
Unlike the file errors in ``entitle_device.errors``, ``detail`` keeps numbers as numbers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "AccessCommanderError",
    "AdminLimitReached",
    "AttendanceLimitReached",
    "DeviceLimitReached",
    "IntegrationNotLicensed",
    "LicenseDeviceFirst",
    "LicenseDeviceNotConnected",
    "LicenseDeviceUnknown",
    "LicenseOlder",
    "LicenseSuspended",
    "NoPackageAvailable",
    "NotAnAccessCommanderLicense",
]

Detail = dict[str, str | int | None]


class AccessCommanderError(Exception):
    """Base of every Access Commander refusal."""

    code: ClassVar[str] = "access_commander_error"

    def __init__(self, message: str, detail: Mapping[str, str | int | None] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: Detail = dict(detail or {})


class AdminLimitReached(AccessCommanderError):
    """One more system administrator than the license (a tier) allows (R-AC-1, R-AC-8)."""

    code = "admin_limit_reached"


class LicenseDeviceFirst(AccessCommanderError):
    """A license was added (or recovered) and its license device is not active yet (R-AC-7)."""

    code = "license_device_first"


class DeviceLimitReached(AccessCommanderError):
    """Every device the license owns is active already (R-AC-8)."""

    code = "device_limit_reached"


class LicenseSuspended(AccessCommanderError):
    """The protective period ran out: only the license device may be activated (R-AC-6)."""

    code = "license_suspended"


class LicenseDeviceNotConnected(AccessCommanderError):
    """The license device must be connected to be activated while the license is suspended."""

    code = "license_device_not_connected"


class AttendanceLimitReached(AccessCommanderError):
    """Every Attendance user the license owns is monitored already (R-AC-8)."""

    code = "attendance_limit_reached"


class IntegrationNotLicensed(AccessCommanderError):
    """LDAP or CSV synchronisation without the integration feature (R-AC-8)."""

    code = "integration_not_licensed"


class NoPackageAvailable(AccessCommanderError):
    """The calculator was asked for a need that no package in the catalog grants."""

    code = "no_package_available"


class NotAnAccessCommanderLicense(AccessCommanderError):
    """A verified license file whose payload is not an Access Commander license."""

    code = "not_access_commander_license"


class LicenseDeviceUnknown(AccessCommanderError):
    """A license file whose license device is not a device of this installation (R-AC-4)."""

    code = "license_device_unknown"


class LicenseOlder(AccessCommanderError):
    """A license file issued before (or with) the current license: adding it would go back."""

    code = "license_older"
