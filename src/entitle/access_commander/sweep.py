"""Access Commander's time-driven transitions for the sweep (R-AC-5, R-AC-6, R-CORE-8).

When the license device disconnects, a protective period runs (1 day to 3 calendar months, by
the connected time; docs/access-commander.md); at its end the license is suspended and every
device of the installation is inactive until the admin activates the reconnected license device.
The moments come from the device library's rules (``services.status_of`` →
``license_state``), nothing here recomputes them:

- ``ac.protective_period.ending``: 3 days before the end (at the disconnection, for a period of
  3 days or less), while the period still runs;
- ``ac.protective_period.ended``: the period ran out and the license is suspended;
- ``ac.devices.inactive``: at that moment, the devices the admin had activated stopped working
  (not sent when none were active).

The subject is the license and the end of its protective period
(``ac/license/<id>/<end>``): a disconnection after a reconnection is a new period with its own
end, and a suspension keeps its moment (``suspended_at``) through later disconnections, so each
period warns and ends once. A suspension recovered before any sweep saw it is not announced.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from entitle.access_commander import services
from entitle.access_commander.models import AcLicense, Device, Installation
from entitle.db import chunks
from entitle.delivery.sweep import Transition

LOOK_BACK = timedelta(days=90)  # older transitions are not announced any more (a sweep off for months)
ENDING_NOTICE = timedelta(days=3)
# Pre-filters only (the rules decide): the longest protective period is 3 calendar months, and
# no installation's heartbeat timeout is under 30 seconds.
_LONGEST_PERIOD = timedelta(days=93)
_SHORTEST_TIMEOUT = timedelta(seconds=30)
_DEVICES_LISTED = 100  # serials in an ac.devices.inactive payload (the count is always whole)


def subject(lic: AcLicense, end: datetime) -> str:
    return f"ac/license/{lic.id}/{end.isoformat()}"


def find(session: Session, now: datetime) -> Iterator[Transition]:
    since = now - LOOK_BACK
    not_connected = or_(AcLicense.rec_connected_since.is_(None), AcLicense.rec_last_seen.is_(None),
                        AcLicense.rec_last_seen < now - _SHORTEST_TIMEOUT)
    rows = session.execute(
        select(AcLicense, Installation).join(Installation, Installation.id == AcLicense.installation_id)
        .where(AcLicense.replaced_at.is_(None),
               or_(AcLicense.rec_suspended_at > since,
                   and_(AcLicense.rec_suspended_at.is_(None), not_connected,
                        func.coalesce(AcLicense.rec_last_seen, AcLicense.added_at) > since - _LONGEST_PERIOD)))
        .order_by(AcLicense.id)).all()
    ended: list[tuple[AcLicense, Installation, datetime, dict[str, Any]]] = []
    for lic, inst in rows:
        status = services.status_of(lic, inst, now)
        payload = {"installation": inst.uid, "installation_name": inst.name, "license": lic.id,
                   "license_device": lic.license_device,
                   "disconnected_at": status.disconnected_at.isoformat() if status.disconnected_at else None,
                   "protective_until": status.protective_until.isoformat() if status.protective_until else None}
        if status.state == "protective" and status.protective_until is not None:
            end = status.protective_until
            assert status.disconnected_at is not None
            at = max(end - ENDING_NOTICE, status.disconnected_at)
            if since < at <= now:
                yield Transition("ac.protective_period.ending", subject(lic, end), lic.org_id, at, payload)
        elif status.state == "suspended" and status.suspended_at is not None:
            end = status.suspended_at
            if since < end <= now:
                yield Transition("ac.protective_period.ended", subject(lic, end), lic.org_id, end, payload)
                ended.append((lic, inst, end, payload))
    active = _active_devices(session, [inst.id for _, inst, _, _ in ended])
    for lic, inst, end, payload in ended:
        serials = active.get(inst.id, [])
        if serials:
            yield Transition("ac.devices.inactive", subject(lic, end), lic.org_id, end,
                             {**payload, "devices": serials[:_DEVICES_LISTED], "count": len(serials)})


def _active_devices(session: Session, installation_ids: list[int]) -> dict[int, list[str]]:
    """The devices the admin activated, per installation: while the license is suspended they
    are all inactive (R-AC-6), and they come back as they were after the recovery."""
    out: dict[int, list[str]] = defaultdict(list)
    for part in chunks(installation_ids, 500):
        for installation_id, serial in session.execute(
                select(Device.installation_id, Device.serial)
                .where(Device.installation_id.in_(part), Device.active.is_(True))
                .order_by(Device.installation_id, Device.serial)):
            out[installation_id].append(serial)
    return out
