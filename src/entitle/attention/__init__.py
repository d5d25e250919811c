"""What needs doing in an organization, derived whenever it is read (R-CORE-7).

The organization's home page and ``GET /api/v1/orgs/{org_id}/attention`` show the same answer:
an Attention list, most urgent first, each item with its deadline and the page that fixes it,
and one tile per licensing model the organization uses (Access Commander's License tile, the
AXIS product list, the My2N sites). Nothing here is stored or swept: each model's module loads
what its rules read in a few grouped queries for the whole organization (never one query per
installation, product or site) and hands it to the rules' own functions.
"""

from __future__ import annotations

from entitle.attention.items import AREAS, SEVERITIES, Item, time_left
from entitle.attention.services import Home, home

__all__ = ["AREAS", "SEVERITIES", "Home", "Item", "home", "time_left"]
