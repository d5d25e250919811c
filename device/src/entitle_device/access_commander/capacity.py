"""What a license lets the installation use (R-AC-1, R-AC-2), worked out from catalog data only.

A SKU's ``grants`` (catalog data, R-CORE-3) say what one unit gives:

- a package adds to the license: ``{"devices": 5}``, ``{"attendance_users": 25}``,
  ``{"features": ["integration"]}`` (a count may be ``null``: unlimited);
- a tier sets the whole capacity: ``{"tier": "pro", "devices": 100, "attendance_users": 1000,
  "admins": null, "features": ["integration"]}`` (every count must be named; ``null``: unlimited).

Packages add up within one license and on top of its tier (licenses themselves never add up:
R-AC-3 is the server's business). No part number appears in this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from entitle_device.access_commander.errors import NoPackageAvailable

__all__ = [
    "INTEGRATION",
    "TRIAL",
    "Capacity",
    "capacity_from_grants",
    "cheapest_tier_for",
    "packages_for",
]

INTEGRATION = "integration"  # the feature name in grants: LDAP + CSV synchronisation
_COUNTS = ("devices", "attendance_users", "admins")


@dataclass(frozen=True, slots=True)
class Capacity:
    """What an installation may use. A count of None is unlimited.

    ``admins`` counts system users with the administrator role; visitors are never counted.
    """

    devices: int | None
    attendance_users: int | None
    admins: int | None
    integration: bool
    tier: str | None  # the tier the capacity comes from, None for packages or the trial

    def covers(
        self,
        *,
        devices: int = 0,
        attendance_users: int = 0,
        integration: bool = False,
        admins: int = 0,
    ) -> bool:
        """Whether this capacity is enough for the given need."""
        return (
            _at_least(self.devices, devices)
            and _at_least(self.attendance_users, attendance_users)
            and _at_least(self.admins, admins)
            and (self.integration or not integration)
        )

    def as_dict(self) -> dict[str, int | bool | str | None]:
        """The JSON form carried in license payloads."""
        return {
            "devices": self.devices,
            "attendance_users": self.attendance_users,
            "admins": self.admins,
            "integration": self.integration,
            "tier": self.tier,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Capacity:
        """Read ``as_dict``'s form back; ValueError for anything else."""
        if not isinstance(data, Mapping) or set(data) != {*_COUNTS, "integration", "tier"}:
            raise ValueError("a capacity has exactly devices, attendance_users, admins, "
                             "integration and tier")
        integration, tier = data["integration"], data["tier"]
        if not isinstance(integration, bool):
            raise ValueError("capacity integration must be true or false")
        if tier is not None and not isinstance(tier, str):
            raise ValueError("capacity tier must be a string or null")
        devices, attendance_users, admins = (_count(data[name], name) for name in _COUNTS)
        return cls(devices, attendance_users, admins, integration, tier)


# R-AC-2: no license; system users unlimited.
_TRIAL_DEVICES = 1
_TRIAL_ATTENDANCE_USERS = 1
TRIAL = Capacity(devices=_TRIAL_DEVICES, attendance_users=_TRIAL_ATTENDANCE_USERS, admins=None,
                 integration=False, tier=None)
# Where packages start without a tier: nothing counted yet, admins not limited (the package
# licenses never limited them).
_NO_TIER = Capacity(devices=0, attendance_users=0, admins=None, integration=False, tier=None)


def capacity_from_grants(lines: Iterable[tuple[Mapping[str, object], int]]) -> Capacity:
    """The capacity of one license from its lines: (the SKU's ``grants``, quantity).

    At most one tier (quantity 1) per license. **Decision:** a license never grants fewer devices or
    Attendance users than the trial (R-AC-2): a license of integration only still lets its own
    license device be activated. Raises ValueError for grants or quantities that make no sense.
    """
    total = _sum(lines)
    return Capacity(
        devices=_floor(total.devices, _TRIAL_DEVICES),
        attendance_users=_floor(total.attendance_users, _TRIAL_ATTENDANCE_USERS),
        admins=total.admins,
        integration=total.integration,
        tier=total.tier,
    )


def _sum(lines: Iterable[tuple[Mapping[str, object], int]]) -> Capacity:
    """What the lines add up to, before the trial's floor."""
    tier: Capacity | None = None
    added = Capacity(devices=0, attendance_users=0, admins=0, integration=False, tier=None)
    for grants, quantity in lines:
        _count(quantity, "quantity", unlimited=False)
        grant = _parse(grants)
        if quantity == 0:
            continue
        if grant.tier is not None:
            if tier is not None or quantity != 1:
                raise ValueError("a license holds at most one tier, once")
            tier = grant
            continue
        added = Capacity(
            devices=_add(added.devices, _times(grant.devices, quantity)),
            attendance_users=_add(added.attendance_users, _times(grant.attendance_users, quantity)),
            admins=_add(added.admins, _times(grant.admins, quantity)),
            integration=added.integration or grant.integration,
            tier=None,
        )
    base = tier or _NO_TIER
    return Capacity(
        devices=_add(base.devices, added.devices),
        attendance_users=_add(base.attendance_users, added.attendance_users),
        admins=_add(base.admins, added.admins),
        integration=base.integration or added.integration,
        tier=base.tier,
    )


def packages_for(
    need_devices: int,
    need_attendance_users: int,
    need_integration: bool,
    catalog: Iterable[tuple[str, Mapping[str, object]]],
    *,
    held: Iterable[tuple[Mapping[str, object], int]] = (),
) -> list[tuple[str, int]]:
    """The packages to order for a need (R-AC-1), as (part number, quantity): devices, then
    Attendance users, then integration; nothing for a need the trial already covers.

    ``held``: the lines (grants, quantity) a license keeps; the answer is then what to add to
    them so that the license of both covers the need (nothing when they cover it already).

    ``catalog`` is the Access Commander SKUs as (part number, grants); tiers are ignored. A package
    is a SKU that grants one thing only. When several packages grant the same thing, the one that
    covers the need with the least to spare wins, then the fewest units, then the lowest part
    number. ``capacity_from_grants`` of the answer covers the need and, without any one unit of it,
    does not. Raises NoPackageAvailable when the catalog sells no package for a need.
    """
    _count(need_devices, "need_devices", unlimited=False)
    _count(need_attendance_users, "need_attendance_users", unlimited=False)
    parsed = sorted(((part, _parse(grants)) for part, grants in catalog), key=lambda item: item[0])
    packages = [(part, grant) for part, grant in parsed if grant.tier is None]
    have = _sum(held)
    order: list[tuple[str, int]] = []
    for name, need, floor, owned in (
        ("devices", need_devices, _TRIAL_DEVICES, have.devices),
        ("attendance_users", need_attendance_users, _TRIAL_ATTENDANCE_USERS, have.attendance_users),
    ):
        # Any license owns at least the trial's counts (capacity_from_grants).
        if owned is None or need <= max(owned, floor):
            continue
        sizes = [(part, _only_count(grant, name)) for part, grant in packages]
        order.append(_best(name, need - owned, [(part, size) for part, size in sizes if size != 0]))
    if need_integration and not have.integration:
        features = [part for part, grant in packages if grant == _INTEGRATION_ONLY]
        if not features:
            raise NoPackageAvailable("the catalog has no package that grants integration",
                                     {"need": INTEGRATION})
        order.append((features[0], 1))
    return order


def cheapest_tier_for(
    need_devices: int,
    need_attendance_users: int,
    need_integration: bool,
    catalog: Iterable[tuple[str, Mapping[str, object]]],
    *,
    need_admins: int = 0,
) -> str | None:
    """The part number of the smallest tier that covers the need, or None when none does.

    Tiers are ordered by capacity: devices, then Attendance users, then admins (unlimited last),
    then without integration before with it, then part number.
    """
    covering: list[tuple[tuple[float, float, float, bool, str], str]] = []
    for part, grants in catalog:
        grant = _parse(grants)
        if grant.tier is not None and grant.covers(
            devices=need_devices, attendance_users=need_attendance_users,
            integration=need_integration, admins=need_admins,
        ):
            covering.append(((_size(grant.devices), _size(grant.attendance_users),
                              _size(grant.admins), grant.integration, part), part))
    return min(covering)[1] if covering else None


_INTEGRATION_ONLY = Capacity(devices=0, attendance_users=0, admins=0, integration=True, tier=None)


def _parse(grants: Mapping[str, object]) -> Capacity:
    """One unit's grant. Counts a package leaves out are 0; a tier must name all of them.
    Members this library does not know (other products' grants, features added later) are
    ignored, so that an older installation reads a newer catalog."""
    if not isinstance(grants, Mapping):
        raise ValueError("grants must be a JSON object")
    tier = grants.get("tier")
    if tier is not None and (not isinstance(tier, str) or not tier):
        raise ValueError("a tier's name must be a non-empty string")
    if tier is not None and not all(name in grants for name in _COUNTS):
        raise ValueError(f"tier {tier} must name devices, attendance_users and admins "
                         "(null: unlimited)")
    features = grants.get("features", [])
    if not isinstance(features, list) or not all(isinstance(item, str) for item in features):
        raise ValueError("features must be a list of names")
    devices, attendance_users, admins = (_count(grants.get(name, 0), name) for name in _COUNTS)
    return Capacity(devices, attendance_users, admins, INTEGRATION in features, tier)


def _only_count(grant: Capacity, name: str) -> int | None:
    """The count ``grant`` gives of ``name`` when that is all it gives, else 0."""
    counts = {"devices": grant.devices, "attendance_users": grant.attendance_users,
              "admins": grant.admins}
    value = counts.pop(name)
    alone = not grant.integration and all(other == 0 for other in counts.values())
    return value if alone else 0


def _best(name: str, need: int, sizes: list[tuple[str, int | None]]) -> tuple[str, int]:
    if not sizes:
        raise NoPackageAvailable(f"the catalog has no package that grants {name}", {"need": name})
    ranked: list[tuple[float, int, str]] = []
    for part, size in sizes:
        units = 1 if size is None else -(-need // size)
        spare = math.inf if size is None else units * size - need
        ranked.append((spare, units, part))
    _, units, part = min(ranked)
    return part, units


def _count(value: object, what: str, *, unlimited: bool = True) -> int | None:
    if value is None and unlimited:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        allowed = "a whole number from 0" + (" or null (unlimited)" if unlimited else "")
        raise ValueError(f"{what} must be {allowed}, not {value!r}")
    return value


def _add(a: int | None, b: int | None) -> int | None:
    return None if a is None or b is None else a + b


def _times(a: int | None, quantity: int) -> int | None:
    return None if a is None else a * quantity


def _floor(a: int | None, floor: int) -> int | None:
    return None if a is None else max(a, floor)


def _at_least(owned: int | None, need: int) -> bool:
    return owned is None or owned >= need


def _size(count: int | None) -> float:
    return math.inf if count is None else count
