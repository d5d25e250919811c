"""Who may do what on a My2N site (R-MY-2, R-MY-5).

My2N has three kinds of administrators, and Entitle maps them onto its own roles:

- **company admins** are the organization's owners and admins (and operators at the console):
  everything on every site of the company, paying and prices included;
- **site admins** hold a ``site_admin`` row in ``my2n_site_roles`` for one site: its apartments
  and devices; with the ``payments`` permission they also pay and see prices;
- **apartment admins** hold an ``apartment_admin`` row for one apartment of one site: they add
  devices to that apartment and switch their local mode, and meet the same four-paid-device limit.

A site or apartment role is given to a member of the organization (any role, a viewer too); it
never lets anyone see another organization. Everyone in the organization can read the sites.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal, get_args

from sqlalchemy import select
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.errors import Conflict, EntitleError, Forbidden, NotFound
from entitle.history import services as history
from entitle.my2n.models import Apartment, Site, SiteRole
from entitle.tenancy.models import Membership, User

SiteRoleName = Literal["site_admin", "apartment_admin"]
ROLES: tuple[str, ...] = get_args(SiteRoleName)


def is_company_admin(actor: Actor, org_id: int) -> bool:
    role = actor.role_in(org_id)
    return role is not None and role.may_license


def _grant(session: Session, actor: Actor, site: Site) -> SiteRole | None:
    if actor.user_id is None:
        return None
    return session.scalars(select(SiteRole).where(SiteRole.site_id == site.id,
                                                  SiteRole.user_id == actor.user_id)).one_or_none()


def require_site_admin(session: Session, actor: Actor, site: Site) -> None:
    """Company admins and this site's admins."""
    actor.require_member(site.org_id)
    if is_company_admin(actor, site.org_id):
        return
    grant = _grant(session, actor, site)
    if grant is None or grant.role != "site_admin":
        raise Forbidden("site_admin_required",
                        "Only a company admin or an admin of this site can do this; ask one of them.",
                        site=site.id)


def require_apartment_admin(session: Session, actor: Actor, site: Site, apartment_id: int | None) -> None:
    """Company admins, this site's admins, and the apartment's own admin."""
    actor.require_member(site.org_id)
    if is_company_admin(actor, site.org_id):
        return
    grant = _grant(session, actor, site)
    if grant is not None and (grant.role == "site_admin"
                              or (apartment_id is not None and grant.apartment_id == apartment_id)):
        return
    raise Forbidden("apartment_admin_required",
                    "Only a company admin, an admin of this site or this apartment's admin can do this.",
                    site=site.id, apartment=apartment_id)


def can_pay(session: Session, actor: Actor, site: Site) -> bool:
    """R-MY-5: company admins, and site admins with the payments permission."""
    if actor.role_in(site.org_id) is None:
        return False
    if is_company_admin(actor, site.org_id):
        return True
    grant = _grant(session, actor, site)
    return grant is not None and grant.role == "site_admin" and grant.payments


def permissions(session: Session, actor: Actor, site: Site) -> dict[str, Any]:
    """What the actor may do on the site, for showing only the forms they can use: ``company``
    (a company admin: hands out site roles), ``admin``
    (company admin or this site's admin), ``apartment`` (the id of the apartment they administer,
    if that is their role), ``pay``."""
    if actor.role_in(site.org_id) is None:
        return {"company": False, "admin": False, "apartment": None, "pay": False}
    company = is_company_admin(actor, site.org_id)
    grant = None if company else _grant(session, actor, site)
    site_admin = company or (grant is not None and grant.role == "site_admin")
    return {"company": company, "admin": site_admin,
            "apartment": grant.apartment_id if grant is not None and grant.role == "apartment_admin" else None,
            "pay": company or (grant is not None and grant.role == "site_admin" and grant.payments)}


def require_payer(session: Session, actor: Actor, site: Site) -> None:
    actor.require_member(site.org_id)
    if not can_pay(session, actor, site):
        raise Forbidden("payments_permission_required",
                        "Only company admins, and site admins with the payments permission, pay or see prices; "
                        "ask a company admin.", site=site.id)


def grant_site_role(session: Session, *, site: Site, user_id: int, role: str, actor: Actor, now: datetime,
                    apartment_id: int | None = None, payments: bool = False) -> SiteRole:
    """Give (or change) a member's role on the site. Only company admins do this."""
    actor.require_licensing(site.org_id)
    if role not in ROLES:
        raise EntitleError("site_role_invalid", f"A site role is one of: {', '.join(ROLES)}.", role=role,
                           allowed=list(ROLES))
    if role == "apartment_admin":
        if apartment_id is None:
            raise EntitleError("apartment_required", "An apartment admin is the admin of one apartment; name it.")
        apt = session.get(Apartment, apartment_id)
        if apt is None or apt.site_id != site.id:
            raise NotFound("apartment", apartment_id=apartment_id)
        if payments:
            raise EntitleError("payments_permission_site_admins_only",
                               "The payments permission is for site admins only.")
    else:
        apartment_id = None
    if session.scalar(select(Membership.id).where(Membership.org_id == site.org_id,
                                                  Membership.user_id == user_id)) is None:
        raise NotFound("member", user_id=user_id)
    history.lock_organization(session, site.org_id)
    grant = session.scalars(select(SiteRole).where(SiteRole.site_id == site.id,
                                                   SiteRole.user_id == user_id)).one_or_none()
    before = _role_dict(grant) if grant else None
    if grant is None:
        grant = SiteRole(org_id=site.org_id, site_id=site.id, user_id=user_id, created_at=now)
        session.add(grant)
    grant.role, grant.apartment_id, grant.payments = role, apartment_id, payments
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site_role.granted",
                   object_type="my2n_site", object_id=site.id, before=before, after=_role_dict(grant))
    return grant


def revoke_site_role(session: Session, *, site: Site, user_id: int, actor: Actor, now: datetime) -> None:
    actor.require_licensing(site.org_id)
    history.lock_organization(session, site.org_id)
    grant = session.scalars(select(SiteRole).where(SiteRole.site_id == site.id,
                                                   SiteRole.user_id == user_id)).one_or_none()
    if grant is None:
        raise Conflict("site_role_missing", "This user has no role on this site.", user_id=user_id)
    before = _role_dict(grant)
    session.delete(grant)
    session.flush()
    history.record(session, org_id=site.org_id, actor=actor, now=now, action="my2n.site_role.revoked",
                   object_type="my2n_site", object_id=site.id, before=before)


def _role_dict(grant: SiteRole) -> dict[str, Any]:
    return {"user_id": grant.user_id, "role": grant.role, "apartment_id": grant.apartment_id,
            "payments": grant.payments}


def site_roles(session: Session, site: Site) -> list[dict[str, Any]]:
    return [site_role_to_dict(grant, email) for grant, email in site_role_rows(session, site)]


def site_role_rows(session: Session, site: Site, *, after_id: int | None = None,
                   limit: int | None = None) -> list[tuple[SiteRole, str]]:
    """The site's roles with each user's e-mail, oldest grant first; a page of them with
    ``after_id`` and ``limit``."""
    stmt = select(SiteRole, User.email).join(User, User.id == SiteRole.user_id).where(SiteRole.site_id == site.id)
    if after_id is not None:
        stmt = stmt.where(SiteRole.id > after_id)
    return [(grant, email) for grant, email in session.execute(stmt.order_by(SiteRole.id).limit(limit))]


def site_role_to_dict(grant: SiteRole, email: str) -> dict[str, Any]:
    return {**_role_dict(grant), "email": email}
