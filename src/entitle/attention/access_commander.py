"""Access Commander's License tile for every installation of the organization (SPEC §2).

Three grouped queries: the installations with their current licenses, the devices counted per
installation, the Attendance users counted per installation. The license state is the device
library's (``access_commander.services.status_of``), read at ``now``: a license device that fell
silent shows its protective period without any sweep (R-AC-5, R-CORE-7).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from entitle_device import access_commander as rules
from sqlalchemy import and_, func, select
from sqlalchemy.orm import Session, defer

from entitle.access_commander import services as ac
from entitle.access_commander.models import AcLicense, AttendanceUser, Device, Installation
from entitle.attention.items import Item, moment
from entitle.text import plural


@dataclass(frozen=True, slots=True)
class Count:
    """Required / owned, as the License tile shows them; ``owned`` None is unlimited."""

    required: int
    owned: int | None
    in_use: int  # active devices, monitored Attendance users

    @property
    def covered(self) -> bool:
        return self.owned is None or self.required <= self.owned

    def to_dict(self) -> dict[str, Any]:
        return {"required": self.required, "owned": self.owned, "in_use": self.in_use}


@dataclass(frozen=True, slots=True)
class InstallationTile:
    id: int
    uid: str
    name: str
    state: rules.LicenseState
    license_device: str | None
    license_device_connected: bool
    # R-AC-7: a new license waits for its license device to be activated first.
    license_device_waiting: bool
    devices: Count
    attendance_users: Count
    disconnected_at: datetime | None
    protective_until: datetime | None
    suspended_at: datetime | None

    @property
    def href(self) -> str:
        return f"/ac/installations/{self.id}"

    def to_dict(self) -> dict[str, Any]:
        def iso(t: datetime | None) -> str | None:
            return t.isoformat() if t else None

        return {"id": self.id, "uid": self.uid, "name": self.name, "state": self.state,
                "license_device": self.license_device, "license_device_connected": self.license_device_connected,
                "devices": self.devices.to_dict(), "attendance_users": self.attendance_users.to_dict(),
                "disconnected_at": iso(self.disconnected_at), "protective_until": iso(self.protective_until),
                "suspended_at": iso(self.suspended_at), "href": self.href}


def installations(session: Session, org_id: int, now: datetime) -> list[InstallationTile]:
    rows = session.execute(
        select(Installation, AcLicense)
        .outerjoin(AcLicense, and_(AcLicense.installation_id == Installation.id, AcLicense.replaced_at.is_(None)))
        .where(Installation.org_id == org_id)
        .options(defer(AcLicense.file), defer(Installation.token_hash))
        .order_by(Installation.name, Installation.id)).all()
    if not rows:
        return []
    devices = {i: (int(n), int(active)) for i, n, active in session.execute(
        select(Device.installation_id, func.count(), func.count().filter(Device.active.is_(True)))
        .where(Device.org_id == org_id).group_by(Device.installation_id))}
    users = {i: (int(n), int(monitored)) for i, n, monitored in session.execute(
        select(AttendanceUser.installation_id, func.count(), func.count().filter(AttendanceUser.monitored.is_(True)))
        .where(AttendanceUser.org_id == org_id).group_by(AttendanceUser.installation_id))}
    out = []
    for inst, lic in rows:
        status = ac.status_of(lic, inst, now)
        suspended = status.state == "suspended"
        # Owned is what the license grants, also while suspended (as on the installation's page).
        owned = rules.Capacity.from_dict(lic.capacity) if lic is not None else rules.TRIAL
        n_devices, n_active = devices.get(inst.id, (0, 0))
        n_users, n_monitored = users.get(inst.id, (0, 0))
        out.append(InstallationTile(
            inst.id, inst.uid, inst.name, status.state, lic.license_device if lic else None,
            status.license_device_connected,
            lic is not None and lic.license_device_activated_at is None and not suspended,
            Count(n_devices, owned.devices, 0 if suspended else n_active),
            Count(n_users, owned.attendance_users, n_monitored),
            status.disconnected_at, status.protective_until, status.suspended_at))
    return out


def items(tiles: list[InstallationTile]) -> list[Item]:
    out = []
    for t in tiles:
        if t.state == "protective" and t.protective_until is not None:
            out.append(Item(
                "ac.protective_period", "warning", "access_commander", t.name,
                f"The license device {t.license_device} of {t.name} is disconnected: the protective period ends "
                f"on {moment(t.protective_until)}. Reconnect it before then, or every device becomes inactive.",
                t.href, "Open the License settings", t.protective_until))
        elif t.state == "suspended":
            out.append(Item(
                "ac.suspended", "critical", "access_commander", t.name,
                f"The license of {t.name} is suspended and every device is inactive: the protective period ran "
                f"out on {moment(t.suspended_at) if t.suspended_at else '—'}. Connect and activate the license "
                f"device {t.license_device}, or add a new license generated for another device.",
                t.href, "Recover the license", t.suspended_at))
        elif t.license_device_waiting:
            out.append(Item(
                "ac.license_device_first", "warning", "access_commander", t.name,
                f"A new license was added to {t.name}: activate the license device {t.license_device} first; "
                "the other devices stay inactive until it is.", t.href, "Activate the license device"))
        if t.state != "suspended" and not (t.devices.covered and t.attendance_users.covered):
            over = [f"{c.required:,} / {plural(c.owned, noun)}" for c, noun in
                    ((t.devices, "device"), (t.attendance_users, "Attendance user")) if not c.covered]
            holder = "the trial" if t.state == "trial" else "its license"
            out.append(Item(
                "ac.over_capacity", "info", "access_commander", t.name,
                f"{t.name} has more than {holder} owns (required / owned: {'; '.join(over)}): generate a "
                "license with more packages.", t.href + "#license-adding", "Generate a license"))
    return out
