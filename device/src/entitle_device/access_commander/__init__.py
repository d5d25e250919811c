"""Access Commander licensing (SPEC §2, R-AC-1 to R-AC-8) as pure, typed code: one
implementation that the Entitle server and the installation itself (offline) both run.

No I/O, no clock: every function takes ``now`` (timezone-aware) and data. See
docs/access-commander.md.

- capacity: ``Capacity``, ``TRIAL``, ``capacity_from_grants``, ``packages_for``,
  ``cheapest_tier_for`` (R-AC-1, R-AC-2);
- protective period: ``protective_period``, ``protective_period_end``, ``add_months`` (R-AC-5);
- the license device's connection: ``ConnectionRecord``, ``on_seen``, ``on_disconnect``,
  ``on_recovered``, ``connected_time``, ``license_state`` -> ``LicenseStatus`` (R-AC-4 to R-AC-6);
- enforcement: ``check_activation``, ``check_attendance``, ``check_admin``, ``check_integration`` (R-AC-6 to
  R-AC-8), refusing with ``AccessCommanderError`` subclasses;
- the offline tracker: ``InstallationLicense``, ``LicenseTerms``, ``license_payload``, and
  ``add_license_file`` (the source's "License Adding", offline).

Visitors are never limited by a license: nothing here counts them.
"""

from entitle_device.access_commander.capacity import (
    INTEGRATION,
    TRIAL,
    Capacity,
    capacity_from_grants,
    cheapest_tier_for,
    packages_for,
)
from entitle_device.access_commander.connection import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    ConnectionRecord,
    LicenseState,
    LicenseStatus,
    connected_time,
    is_connected,
    license_state,
    on_disconnect,
    on_recovered,
    on_seen,
)
from entitle_device.access_commander.enforcement import (
    check_activation,
    check_admin,
    check_attendance,
    check_integration,
)
from entitle_device.access_commander.errors import (
    AccessCommanderError,
    AdminLimitReached,
    AttendanceLimitReached,
    DeviceLimitReached,
    IntegrationNotLicensed,
    LicenseDeviceFirst,
    LicenseDeviceNotConnected,
    LicenseDeviceUnknown,
    LicenseOlder,
    LicenseSuspended,
    NoPackageAvailable,
    NotAnAccessCommanderLicense,
)
from entitle_device.access_commander.installation import (
    MODEL,
    InstallationLicense,
    LicenseTerms,
    add_license_file,
    capacity_in_state,
    license_payload,
)
from entitle_device.access_commander.protective import (
    Period,
    add_months,
    protective_period,
    protective_period_end,
)

__all__ = [
    "DEFAULT_HEARTBEAT_TIMEOUT",
    "INTEGRATION",
    "MODEL",
    "TRIAL",
    "AccessCommanderError",
    "AdminLimitReached",
    "AttendanceLimitReached",
    "Capacity",
    "ConnectionRecord",
    "DeviceLimitReached",
    "InstallationLicense",
    "IntegrationNotLicensed",
    "LicenseDeviceFirst",
    "LicenseDeviceNotConnected",
    "LicenseDeviceUnknown",
    "LicenseOlder",
    "LicenseState",
    "LicenseStatus",
    "LicenseSuspended",
    "LicenseTerms",
    "NoPackageAvailable",
    "NotAnAccessCommanderLicense",
    "Period",
    "add_license_file",
    "add_months",
    "capacity_from_grants",
    "capacity_in_state",
    "cheapest_tier_for",
    "check_activation",
    "check_admin",
    "check_attendance",
    "check_integration",
    "connected_time",
    "is_connected",
    "license_payload",
    "license_state",
    "on_disconnect",
    "on_recovered",
    "on_seen",
    "packages_for",
    "protective_period",
    "protective_period_end",
]
