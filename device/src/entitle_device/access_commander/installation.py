"""The offline tracker (R-AC-4 to R-AC-6) the installation itself runs: its verified license,
the license device's connection record, and the state and capacity they give at any ``now``.

Access Commander license payload (signed by the issuer, built by ``license_payload``)::

    {"model": "access_commander",
     "organization": "org_7f3a2c",
     "installation": "SYS-AC-000042",
     "license_device": "54-0123-4567",
     "capacity": {"devices": 20, "attendance_users": 75, "admins": null,
                  "integration": true, "tier": null},
     "packages": [{"part_number": "91379040", "quantity": 4}, ...]}

``capacity`` is authoritative (the server computes it with ``capacity_from_grants`` from the
catalog when it signs), so the installation needs no catalog; ``packages`` is what the license
was made of, for display. The file's subject must list both the installation and the license
device.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from entitle_device._encoding import canonical_json, format_timestamp
from entitle_device.access_commander.capacity import Capacity, capacity_from_grants
from entitle_device.access_commander.connection import (
    DEFAULT_HEARTBEAT_TIMEOUT,
    ConnectionRecord,
    LicenseStatus,
    license_state,
    on_disconnect,
    on_recovered,
    on_seen,
)
from entitle_device.access_commander.enforcement import check_activation
from entitle_device.access_commander.errors import (
    LicenseDeviceUnknown,
    LicenseOlder,
    NotAnAccessCommanderLicense,
)
from entitle_device.keyring import KeyRing
from entitle_device.licensefile import DEFAULT_CLOCK_SKEW, License, verify

__all__ = ["MODEL", "InstallationLicense", "LicenseTerms", "add_license_file", "license_payload"]

MODEL = "access_commander"
_STATE_FORMAT = "entitle-access-commander-state/1"
_STRINGS = ("organization", "installation", "license_device")


@dataclass(frozen=True, slots=True)
class LicenseTerms:
    """What an Access Commander license payload says."""

    organization: str
    installation: str
    license_device: str
    capacity: Capacity
    packages: tuple[tuple[str, int], ...]  # (part number, quantity)

    @classmethod
    def from_license(cls, license: License) -> LicenseTerms:
        """Read a verified license's payload; NotAnAccessCommanderLicense when it is not one."""
        payload = license.payload
        try:
            if payload.get("model") != MODEL:
                raise ValueError(f"model is not {MODEL}")
            if set(payload) != {"model", *_STRINGS, "capacity", "packages"}:
                raise ValueError("members are model, organization, installation, license_device, "
                                 "capacity and packages")
            organization, installation, device = (payload[name] for name in _STRINGS)
            if not all(isinstance(value, str) for value in (organization, installation, device)):
                raise ValueError("organization, installation and license_device are strings")
            packages = tuple(_package(item) for item in _list(payload["packages"]))
            terms = cls(organization, installation, device, Capacity.from_dict(payload["capacity"]),
                        packages)
        except ValueError as error:
            raise NotAnAccessCommanderLicense(
                f"The license file is not an Access Commander license: {error}.", {}
            ) from None
        if installation not in license.subject or device not in license.subject:
            raise NotAnAccessCommanderLicense(
                "The license file's subject must list the installation and the license device.",
                {"installation": installation, "license_device": device},
            )
        return terms


def license_payload(
    *,
    organization: str,
    installation: str,
    license_device: str,
    packages: Iterable[tuple[str, Mapping[str, object], int]],
) -> dict[str, Any]:
    """The payload to sign for a license of these packages: (part number, grants, quantity)."""
    lines = list(packages)
    capacity = capacity_from_grants((grants, quantity) for _, grants, quantity in lines)
    return {
        "model": MODEL,
        "organization": organization,
        "installation": installation,
        "license_device": license_device,
        "capacity": capacity.as_dict(),
        "packages": [{"part_number": part, "quantity": quantity} for part, _, quantity in lines],
    }


def capacity_in_state(capacity: Capacity, status: LicenseStatus) -> Capacity:
    """What a license of ``capacity`` owns in ``status``: all of it while active or protective.
    **Decision:** while suspended, no device and no Attendance user, no integration; admins keep
    their limit (they must log in to recover), and only the license device may be activated
    (``check_activation``)."""
    if status.state == "suspended":
        return Capacity(devices=0, attendance_users=0, admins=capacity.admins,
                        integration=False, tier=capacity.tier)
    return capacity


class InstallationLicense:
    """The installation's license and its license device's connection, tracked offline.

    Feed it what the installation sees of the license device (``seen``, ``disconnected``) and
    the admin's activation of it after a suspension (``recovered``); ask ``status(now)`` and
    ``capacity(now)``. Persist it with ``to_json`` and restore it with ``from_json`` together
    with the license file, verified again. With no license the installation uses ``TRIAL``.
    """

    def __init__(
        self,
        license: License,
        record: ConnectionRecord,
        *,
        heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> None:
        self.license = license
        self.terms = LicenseTerms.from_license(license)
        self.heartbeat_timeout = heartbeat_timeout
        self._record = record

    @classmethod
    def added(
        cls,
        license: License,
        at: datetime,
        *,
        heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> InstallationLicense:
        """The admin added ``license`` at ``at``: it replaces the previous one whole (R-AC-3),
        and its connection record starts empty."""
        record = ConnectionRecord(license_added_at=at)
        return cls(license, record, heartbeat_timeout=heartbeat_timeout)

    @property
    def record(self) -> ConnectionRecord:
        return self._record

    @property
    def license_device(self) -> str:
        return self.terms.license_device

    def seen(self, at: datetime) -> None:
        """The license device was heard from (heartbeat or "connected" report) at ``at``."""
        self._record = on_seen(self._record, at, self.heartbeat_timeout)

    def disconnected(self, at: datetime) -> None:
        """The license device was reported disconnected at ``at``."""
        self._record = on_disconnect(self._record, at)

    def recovered(self, at: datetime) -> None:
        """The admin activated the license device at ``at`` after a suspension (R-AC-6)."""
        self._record = on_recovered(self._record, at, self.heartbeat_timeout)

    def status(self, now: datetime) -> LicenseStatus:
        return license_state(self._record, now, self.heartbeat_timeout)

    def capacity(self, now: datetime) -> Capacity:
        """The license's capacity at ``now`` (``capacity_in_state``)."""
        return capacity_in_state(self.terms.capacity, self.status(now))

    def check_activation(
        self, serial: str, now: datetime, *, license_device_active: bool, active_count: int
    ) -> None:
        """``check_activation`` with this license's device, capacity and status at ``now``."""
        check_activation(
            serial,
            license_device_serial=self.license_device,
            license_device_active=license_device_active,
            active_count=active_count,
            capacity=self.terms.capacity,
            status=self.status(now),
        )

    def to_json(self) -> str:
        """The state to persist: the record, tied to this license by a fingerprint."""
        return json.dumps({
            "format": _STATE_FORMAT,
            "license": _fingerprint(self.license),
            "record": self._record.as_dict(),
        }, sort_keys=True)

    def is_same_license(self, license: License) -> bool:
        """Whether ``license`` is this tracker's license (the same signed file's contents)."""
        return _fingerprint(license) == _fingerprint(self.license)

    @classmethod
    def from_json(
        cls,
        text: str,
        license: License,
        *,
        heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT,
    ) -> InstallationLicense:
        """Restore ``to_json``'s state for ``license``. ValueError when the text is not such a
        state, or belongs to another license (a new license starts a new record: ``added``)."""
        state = json.loads(text)
        if not isinstance(state, dict) or set(state) != {"format", "license", "record"} or (
            state["format"] != _STATE_FORMAT
        ):
            raise ValueError(f"not an {_STATE_FORMAT} document")
        if state["license"] != _fingerprint(license):
            raise ValueError("the saved state belongs to another license")
        return cls(license, ConnectionRecord.from_dict(state["record"]),
                   heartbeat_timeout=heartbeat_timeout)


def add_license_file(
    text: str | bytes,
    keyring: KeyRing,
    now: datetime,
    *,
    installation: str,
    devices: Collection[str],
    current: InstallationLicense | None = None,
    heartbeat_timeout: timedelta = DEFAULT_HEARTBEAT_TIMEOUT,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> InstallationLicense:
    """The source's "License Adding", offline: read a license file and make it the license.

    Checked in this order: the file itself (``verify``: malformed, unknown key, bad signature,
    not for ``installation``, expired, issued in the future), an Access Commander license
    (``not_access_commander_license``), its license device one of the installation's
    ``devices`` (``license_device_unknown``), newer than ``current`` (``license_older``: a file
    issued at or before the current license's issue time). The current license's own file
    returns ``current`` unchanged (adding it again changes nothing).

    A new license replaces the current one whole (R-AC-3) with a new connection record from
    ``now``; call ``seen(now)`` when the license device is connected. After it, no device is
    active until the license device is activated (R-AC-7): the installation makes its devices
    inactive, then activates the license device first.
    """
    license = verify(text, keyring, now, installation, clock_skew=clock_skew)
    terms = LicenseTerms.from_license(license)
    if current is not None and current.is_same_license(license):
        return current
    if terms.license_device not in devices:
        raise LicenseDeviceUnknown(
            f"The license was generated for the device {terms.license_device}, which is not a "
            f"device of this installation. Add that device, or ask for a license for one of "
            f"the installation's connected devices.",
            {"license_device": terms.license_device},
        )
    if current is not None and license.issued <= current.license.issued:
        raise LicenseOlder(
            f"The license file was issued {format_timestamp(license.issued)}, not after the "
            f"current license ({format_timestamp(current.license.issued)}): adding it would "
            f"replace a newer license with an older one. Add the newest license file.",
            {"issued": format_timestamp(license.issued),
             "current_issued": format_timestamp(current.license.issued)},
        )
    return InstallationLicense.added(license, now, heartbeat_timeout=heartbeat_timeout)


def _fingerprint(license: License) -> str:
    identity = {"kid": license.kid, "issued": format_timestamp(license.issued),
                "subject": list(license.subject), "payload": license.payload}
    return hashlib.sha256(canonical_json(identity)).hexdigest()


def _list(value: object) -> list[object]:
    if not isinstance(value, list):
        raise ValueError("packages is a list")
    return value


def _package(item: object) -> tuple[str, int]:
    if not isinstance(item, dict) or set(item) != {"part_number", "quantity"}:
        raise ValueError("each package is {part_number, quantity}")
    part, quantity = item["part_number"], item["quantity"]
    if not isinstance(part, str) or isinstance(quantity, bool) or not isinstance(quantity, int):
        raise ValueError("a package's part_number is a string and its quantity a whole number")
    return part, quantity
