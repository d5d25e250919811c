"""Who is acting. Every action takes one, keyword-only, and writes it into history."""

from __future__ import annotations

from dataclasses import dataclass, field

from entitle.errors import Forbidden, NotFound
from entitle.tenancy.models import Role


@dataclass(frozen=True)
class Actor:
    label: str
    user_id: int | None = None
    is_issuer: bool = False
    roles: dict[int, Role] = field(default_factory=dict)
    # Operators at the server's console (the CLI) act in every organization as owner.
    is_operator: bool = False

    def role_in(self, org_id: int) -> Role | None:
        if self.is_operator:
            return Role.owner
        return self.roles.get(org_id)

    def require_member(self, org_id: int) -> Role:
        """Another organization's id looks exactly like one that does not exist (R-CORE-1)."""
        role = self.role_in(org_id)
        if role is None:
            raise NotFound("organization", org_id=org_id)
        return role

    def require_licensing(self, org_id: int) -> Role:
        role = self.require_member(org_id)
        if not role.may_license:
            raise Forbidden(
                "role_insufficient",
                "Your role in this organization is viewer: ask an owner or admin to do this.",
                role=role.value,
                required=["owner", "admin"],
            )
        return role

    def require_owner(self, org_id: int) -> Role:
        role = self.require_member(org_id)
        if role is not Role.owner:
            raise Forbidden(
                "role_insufficient",
                "Only an owner of this organization can manage its members.",
                role=role.value,
                required=["owner"],
            )
        return role

    def require_issuer(self) -> None:
        if not (self.is_issuer or self.is_operator):
            raise Forbidden(
                "issuer_only",
                "Only the issuer (the vendor) can change the catalog or mint license keys.",
            )


def operator(label: str = "cli") -> Actor:
    return Actor(label=label, is_issuer=True, is_operator=True)
