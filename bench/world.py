"""The data a redeem benchmark needs, written through the real services.

Customers redeem into their own organizations: one organization per connection of the load
generator, each with an owner whose API token that connection sends.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from entitle.actors import operator
from entitle.catalog import services as catalog
from entitle.db import make_engine, make_session_factory, transaction
from entitle.models import load_all
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import User

# Access Commander +5 devices: sold in every region, one unit per key.
PART = "91379040"
PASSWORD = "bench password 1"


@dataclass(frozen=True)
class Customer:
    org_id: int
    token: str


def build(database_url: str, *, customers: int) -> list[Customer]:
    """Load the default catalog and create ``customers`` organizations, each with an owner."""
    load_all()
    engine = make_engine(database_url)
    sessions = make_session_factory(engine)
    now = datetime.now(UTC)
    cli = operator("bench")
    with transaction(sessions) as s:
        catalog.load(s, catalog.parse(catalog.DEFAULT_CATALOG.read_text()), actor=cli, now=now)
        tenancy.issuer_organization(s, now=now)
    out = []
    for i in range(customers):
        with transaction(sessions) as s:
            user = tenancy.create_user(s, email=f"owner{i}@bench.example", password=PASSWORD, now=now)
            org = tenancy.create_organization(s, name=f"Bench customer {i}", region="EU", actor=cli,
                                              now=now, owner=s.get(User, user.id))
            token, _ = tenancy.create_token(s, user=user, name="bench", now=now)
            out.append(Customer(org.id, token))
    engine.dispose()
    return out
