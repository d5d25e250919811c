"""The ordering calculator (R-AC-1): the packages to order for a need, and the smallest tier.

Plain data in and out, no database: the catalog is a list of SKUs, the database's (the services
read it) or the one Entitle ships (``default_catalog``), so that ``entitle ac calculate`` answers on
a machine with no database too. The decisions are ``entitle_device.access_commander``'s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from entitle_device import access_commander as rules

from entitle.errors import EntitleError

MODEL = "access_commander"
DEFAULT_CATALOG = Path(__file__).resolve().parent.parent / "catalog" / "default_catalog.yaml"


@dataclass(frozen=True)
class CatalogSku:
    """An Access Commander package or tier, as the calculator reads it."""

    part_number: str
    name: str
    grants: Mapping[str, Any]
    # The same package's other part numbers (Axis sells 91379040 as 01372-001).
    alt_part_numbers: tuple[str, ...] = ()


def error_of(exc: rules.AccessCommanderError) -> EntitleError:
    """A refusal of the Access Commander rules, as the error every interface answers with."""
    status = {"no_package_available": 422, "not_access_commander_license": 400}.get(exc.code, 409)
    return EntitleError(exc.code, exc.message, status=status, **dict(exc.detail))


def calculate(catalog: Sequence[CatalogSku], *, devices: int, attendance_users: int,
              integration: bool) -> dict[str, Any]:
    if devices < 0 or attendance_users < 0:
        raise EntitleError("need_invalid", "Counts of devices and Attendance users are 0 or more.",
                           devices=devices, attendance_users=attendance_users)
    grants = [(s.part_number, s.grants) for s in catalog]
    names = {s.part_number: s.name for s in catalog}
    alts = {s.part_number: list(s.alt_part_numbers) for s in catalog}
    try:
        order = rules.packages_for(devices, attendance_users, integration, grants)
    except rules.AccessCommanderError as exc:
        raise error_of(exc) from None
    by_part = dict(grants)
    capacity = rules.capacity_from_grants((by_part[p], q) for p, q in order) if order else rules.TRIAL
    tier = rules.cheapest_tier_for(devices, attendance_users, integration, grants)
    return {"need": {"devices": devices, "attendance_users": attendance_users, "integration": integration},
            "packages": [{"part_number": p, "alt_part_numbers": alts[p], "name": names[p], "quantity": q}
                         for p, q in order],
            "capacity": capacity.as_dict(),
            "tier": {"part_number": tier, "name": names[tier]} if tier else None}


@cache
def default_catalog() -> tuple[CatalogSku, ...]:
    """The Access Commander SKUs of the catalog Entitle ships (catalog/default_catalog.yaml, what
    `entitle first-run` and `entitle catalog load` put in a database), by part number."""
    import yaml

    doc = yaml.safe_load(DEFAULT_CATALOG.read_text(encoding="utf-8"))
    skus = [CatalogSku(str(sku["part_number"]), sku["name"], sku.get("grants") or {},
                       tuple(str(alt) for alt in sku.get("alt_part_numbers") or ()))
            for product in doc["products"] if product["model"] == MODEL for sku in product.get("skus", [])]
    return tuple(sorted(skus, key=lambda sku: sku.part_number))
