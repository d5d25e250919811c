from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, status
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging, client_id, refusals
from entitle.api.answers import remembered, valid_until
from entitle.api.routing import OneHopRoute, quick_read
from entitle.api.schemas import (ApiTokenOut, MemberIn, MemberOut, MemberPage, MeOut, OrgIn, OrgOut, OrgPage,
                                 PasswordChangedOut, PasswordChangeIn, SessionPage, TokenOut, TokenPage, TokenRequest,
                                 WebSessionOut)
from entitle.db import transaction
from entitle.errors import NotFound
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role, User

router = APIRouter(route_class=OneHopRoute, tags=["organizations"])

DbId = Annotated[int, Path(ge=1, le=2**63 - 1)]  # a database integer


@router.post("/auth/token", response_model=TokenOut, status_code=status.HTTP_201_CREATED, tags=["auth"],
             responses=refusals(401, 429, 503))
def create_token(body: TokenRequest, request: Request, ctx: Ctx, now: Now) -> dict[str, object]:
    """Exchange an e-mail and password for an API token (shown once, stored hashed). Refusals:
    credentials_invalid (401), rate_limited (429: too many failed sign-ins for the account or
    this address), password_checks_busy (503: try again in a second)."""
    user_id = tenancy.sign_in(ctx.sessions, ctx.sign_in_limiter, email=body.email, password=body.password,
                              client=client_id(request))
    with transaction(ctx.sessions) as s:
        user = s.get(User, user_id)
        assert user is not None
        secret, row = tenancy.create_token(s, user=user, name=body.name, now=now)
        return {"id": row.id, "token": secret, "prefix": row.prefix}


def _me(db: Session, actor: Actor) -> User:
    user = db.get(User, actor.user_id)
    assert user is not None  # the token was just resolved to this user
    return user


@router.get("/me", response_model=MeOut, tags=["auth"])
@quick_read
def me(actor: CurrentActor, db: DB) -> dict[str, object]:
    user = _me(db, actor)
    orgs = tenancy.organizations_of(db, actor)
    return {"id": user.id, "email": user.email, "is_issuer": user.is_issuer,
            "must_change_password": user.must_change_password,
            "organizations": [tenancy.org_to_dict(o, actor.role_in(o.id)) for o in orgs]}


@router.post("/auth/password", response_model=PasswordChangedOut, tags=["auth"],
             responses=refusals(403, 404, 409, 429, 503))
def change_password(body: PasswordChangeIn, request: Request, actor: CurrentActor, ctx: Ctx,
                    now: Now) -> dict[str, object]:
    """Choose a new password. Every web session of yours is signed out; API tokens keep working.
    Refusals: password_too_short, password_too_long, password_current_wrong (counted as a failed
    sign-in), password_unchanged, password_changed_meanwhile, rate_limited, password_checks_busy."""
    assert actor.user_id is not None  # a token always belongs to a user
    ended = tenancy.change_own_password(ctx.sessions, ctx.sign_in_limiter, user_id=actor.user_id, email=actor.label,
                                        client=client_id(request), current_password=body.current_password,
                                        new_password=body.new_password, now=now)
    return {"password_changed_at": now.isoformat(), "web_sessions_ended": ended}



@router.get("/auth/sessions", response_model=SessionPage, tags=["auth"])
def list_sessions(actor: CurrentActor, db: DB, now: Now, page: Paging) -> dict[str, Any]:
    """Your signed-in web sessions, newest first."""
    rows = tenancy.active_sessions(db, user_id=_me(db, actor).id, now=now, before_id=page.cursor, limit=page.fetch)
    return page.answer(rows, tenancy.session_to_dict)


@router.post("/auth/sessions/{session_id}/revoke", response_model=WebSessionOut, tags=["auth"])
def revoke_session(session_id: DbId, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Sign one of your web sessions out (again: no change). Refusal: session_not_found."""
    return tenancy.session_to_dict(tenancy.revoke_session(db, user=_me(db, actor), session_id=session_id, now=now))


@router.get("/auth/tokens", response_model=TokenPage, tags=["auth"])
def list_tokens(actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """Your API tokens that work, newest first (the tokens themselves are never shown again)."""
    rows = tenancy.active_tokens(db, user_id=_me(db, actor).id, before_id=page.cursor, limit=page.fetch)
    return page.answer(rows, tenancy.token_to_dict)


@router.post("/auth/tokens/{token_id}/revoke", response_model=ApiTokenOut, tags=["auth"])
def revoke_token(token_id: DbId, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """Revoke one of your API tokens, this one too (again: no change). Refusal: token_not_found."""
    return tenancy.token_to_dict(tenancy.revoke_token(db, user=_me(db, actor), token_id=token_id, now=now))


@router.get("/orgs", response_model=OrgPage)
@remembered
@quick_read
def list_orgs(request: Request, actor: CurrentActor, db: DB, page: Paging) -> dict[str, object]:
    rows = tenancy.organization_page(db, actor, after=page.cursor, fetch=page.fetch)
    valid_until(request, None)  # names, regions and roles: no time rule changes them
    return page.answer(rows, lambda o: tenancy.org_to_dict(o, actor.role_in(o.id)))


@router.post("/orgs", response_model=OrgOut, status_code=status.HTTP_201_CREATED)
def create_org(body: OrgIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, object]:
    """Create an organization; the caller becomes its owner (resellers hold many)."""
    user = db.get(User, actor.user_id)
    org = tenancy.create_organization(db, name=body.name, region=body.region, actor=actor,
                                      now=now, owner=user)
    return tenancy.org_to_dict(org, Role.owner)


@router.get("/orgs/{org_id}", response_model=OrgOut)
@quick_read
def get_org(org_id: int, actor: CurrentActor, db: DB) -> dict[str, object]:
    org = tenancy.get_organization(db, org_id, actor=actor)
    return tenancy.org_to_dict(org, actor.role_in(org_id))


@router.get("/orgs/{org_id}/members", response_model=MemberPage)
@quick_read
def list_members(org_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The organization's members, oldest first."""
    actor.require_member(org_id)
    rows = tenancy.members(db, org_id, after_id=page.cursor, limit=page.fetch)
    return page.answer(rows, lambda m: {"email": m.user.email, "role": m.role})


@router.post("/orgs/{org_id}/members", response_model=MemberOut, status_code=status.HTTP_201_CREATED,
             responses=refusals(403, 409))
def set_member(org_id: int, body: MemberIn, actor: CurrentActor, db: DB, now: Now) -> dict[str, str]:
    """Add an existing user to the organization, or change their role (owners only). Refusals:
    role_insufficient (403), user_not_found (404), last_owner (409: it would demote the only owner)."""
    actor.require_owner(org_id)
    user = tenancy.user_by_email(db, body.email)
    if user is None:
        raise NotFound("user", email=body.email)
    m = tenancy.add_member(db, org_id=org_id, user=user, role=Role(body.role), actor=actor,
                           now=now)
    return {"email": user.email, "role": m.role}


@router.delete("/orgs/{org_id}/members/{email}", response_model=MemberOut, responses=refusals(403, 409))
def remove_member(org_id: int, email: Annotated[str, Path(max_length=320)], actor: CurrentActor, db: DB,
                  now: Now) -> dict[str, str]:
    """Take a user out of the organization (owners only); their account and their other
    organizations stay. Answers the membership removed. Refusals: role_insufficient (403),
    member_not_found (404), last_owner (409: the organization's only owner)."""
    m = tenancy.remove_member(db, org_id=org_id, email=email, actor=actor, now=now)
    return {"email": m.user.email, "role": m.role}
