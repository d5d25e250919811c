from __future__ import annotations

from fastapi import APIRouter, status

from entitle.api.deps import DB, CurrentActor, Now, Paging
from entitle.api.schemas import MemberIn, MemberOut, MeOut, OrgIn, OrgOut, OrgPage, TokenOut, TokenRequest
from entitle.errors import NotFound
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role, User

router = APIRouter(tags=["organizations"])


@router.post("/auth/token", response_model=TokenOut, status_code=status.HTTP_201_CREATED, tags=["auth"])
def create_token(body: TokenRequest, db: DB, now: Now) -> dict[str, object]:
    """Exchange an e-mail and password for an API token (shown once, stored hashed)."""
    user = tenancy.authenticate(db, email=body.email, password=body.password)
    secret, row = tenancy.create_token(db, user=user, name=body.name, now=now)
    return {"id": row.id, "token": secret, "prefix": row.prefix}


@router.get("/me", response_model=MeOut, tags=["auth"])
def me(actor: CurrentActor, db: DB) -> dict[str, object]:
    user = db.get(User, actor.user_id)
    assert user is not None
    orgs = tenancy.organizations_of(db, actor)
    return {"id": user.id, "email": user.email, "is_issuer": user.is_issuer,
            "organizations": [tenancy.org_to_dict(o, actor.role_in(o.id)) for o in orgs]}


@router.get("/orgs", response_model=OrgPage)
def list_orgs(actor: CurrentActor, db: DB, page: Paging) -> dict[str, object]:
    orgs = [o for o in tenancy.organizations_of(db, actor) if page.cursor is None or o.id > page.cursor]
    orgs.sort(key=lambda o: o.id)
    items = orgs[: page.limit]
    more = len(orgs) > page.limit
    return {"items": [tenancy.org_to_dict(o, actor.role_in(o.id)) for o in items],
            "next_cursor": items[-1].id if more else None}


@router.post("/orgs", response_model=OrgOut, status_code=status.HTTP_201_CREATED)
def create_org(body: OrgIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, object]:
    """Create an organization; the caller becomes its owner (resellers hold many)."""
    user = db.get(User, actor.user_id)
    org = tenancy.create_organization(db, name=body.name, region=body.region, actor=actor,
                                      now=now, owner=user)
    return tenancy.org_to_dict(org, Role.owner)


@router.get("/orgs/{org_id}", response_model=OrgOut)
def get_org(org_id: int, actor: CurrentActor, db: DB) -> dict[str, object]:
    org = tenancy.get_organization(db, org_id, actor=actor)
    return tenancy.org_to_dict(org, actor.role_in(org_id))


@router.get("/orgs/{org_id}/members", response_model=list[MemberOut])
def list_members(org_id: int, actor: CurrentActor, db: DB) -> list[dict[str, str]]:
    actor.require_member(org_id)
    return [{"email": m.user.email, "role": m.role} for m in tenancy.members(db, org_id)]


@router.post("/orgs/{org_id}/members", response_model=MemberOut, status_code=status.HTTP_201_CREATED)
def set_member(org_id: int, body: MemberIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, str]:
    """Add an existing user to the organization, or change their role (owners only)."""
    actor.require_owner(org_id)
    user = tenancy.user_by_email(db, body.email)
    if user is None:
        raise NotFound("user", email=body.email)
    m = tenancy.add_member(db, org_id=org_id, user=user, role=Role(body.role), actor=actor,
                           now=now)
    return {"email": user.email, "role": m.role}
