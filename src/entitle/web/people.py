"""People: the members of the organization and their roles (R-CORE-2), in the web UI.

Every member sees who else is a member and with which role; owners add an existing user by
e-mail, change a member's role and take a member out. The organization always keeps an owner:
demoting or removing its only owner is refused (``last_owner``) with what to do instead. Each
change is written to the history ("Ann made bob@example.com an admin of the organization").
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, Response
from fastapi.responses import RedirectResponse

from entitle.db import reading, transaction
from entitle.errors import EntitleError, NotFound
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role
from entitle.text import plural, with_article
from entitle.web.views import PAGE_SIZE, AnyViewer, PostingViewer, Viewer, WebRoute, _ctx, is_htmx, render

router = APIRouter(route_class=WebRoute, include_in_schema=False)

ROLE_NAMES = {"owner": "Owner", "admin": "Admin", "viewer": "Viewer"}
ROLE_HINTS = {"owner": "manages the members and everything an admin does",
              "admin": "licenses: redeems keys, allocates, pays",
              "viewer": "sees everything, changes nothing"}


def _people(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
            error: EntitleError | None = None, cursor: int | None = None,
            form: dict[str, Any] | None = None) -> Response:
    org = viewer.require_org()
    with reading(_ctx(request).sessions) as s:
        rows = tenancy.members(s, org.id, after_id=cursor, limit=PAGE_SIZE + 1)
        members = [{"id": m.id, "email": m.user.email, "role": m.role, "since": m.created_at.date().isoformat()}
                   for m in rows[:PAGE_SIZE]]
        counts = tenancy.member_counts(s, org.id)
    more = len(rows) > PAGE_SIZE
    total = sum(counts.values())
    summary = ", ".join(plural(counts[r], ROLE_NAMES[r].lower()) for r in ROLE_NAMES if counts.get(r))
    return render(request, "people.html", viewer=viewer, active="people", status=status, org=org,
                  members=members, total=total, summary=summary, may_manage=org.role is Role.owner,
                  role_names=ROLE_NAMES, role_hints=ROLE_HINTS, message=message, error=error, cursor=cursor,
                  next_cursor=members[-1]["id"] if more else None, form=form or {}, switch_next="/people")


@router.get("/people")
def people_page(request: Request, viewer: AnyViewer,
                cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None) -> Response:
    return _people(request, viewer, cursor=cursor)


def _role(value: str) -> Role:
    try:
        return Role(value)
    except ValueError:
        raise EntitleError("role_invalid", "Choose owner, admin or viewer as the role.", status=422) from None


@router.post("/people")
def set_member(request: Request, viewer: PostingViewer, email: Annotated[str, Form(max_length=320)] = "",
               role: Annotated[str, Form(max_length=20)] = "") -> Response:
    """Add a user to the organization, or give a member another role."""
    ctx = _ctx(request)
    org = viewer.require_org()
    form = {"email": email, "role": role}
    try:
        with transaction(ctx.sessions) as s:
            user = tenancy.user_by_email(s, email.strip().lower()) if email.strip() else None
            if user is None:
                raise NotFound("user", f"There is no Entitle account for {email.strip() or 'an empty e-mail'}: "
                               "ask the person to be given an account first, then add them here.")
            was = tenancy.membership(s, org.id, user.id)
            m = tenancy.add_member(s, org_id=org.id, user=user, role=_role(role), actor=viewer.actor,
                                   now=ctx.clock.now())
            added, shown = was is None, user.email
            new_role = ROLE_NAMES[m.role].lower()
    except EntitleError as exc:
        return _people(request, viewer, status=exc.status, error=exc, form=form)
    message = (f"{shown} is now a member of {org.name}, as {with_article(new_role)}." if added
               else f"{shown} is now {with_article(new_role)} of {org.name}.")
    if shown == viewer.email and new_role != "owner":  # the page's forms are no longer theirs
        return _away(request)
    return _people(request, viewer, message=message)


@router.post("/people/remove")
def remove_member(request: Request, viewer: PostingViewer,
                  email: Annotated[str, Form(max_length=320)] = "") -> Response:
    """Take a member out of the organization; their account stays."""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        with transaction(ctx.sessions) as s:
            m = tenancy.remove_member(s, org_id=org.id, email=email, actor=viewer.actor,
                                      now=ctx.clock.now())
            removed = m.user.email
    except EntitleError as exc:
        return _people(request, viewer, status=exc.status, error=exc)
    if removed == viewer.email:
        return _away(request)
    return _people(request, viewer, message=f"{removed} is no longer a member of {org.name}; their account "
                                             "stays, with their other organizations.")


def _away(request: Request) -> Response:
    """The signed-in user left the organization or gave up owning it: to the home page."""
    if is_htmx(request):
        return Response(status_code=204, headers={"HX-Redirect": "/"})
    return RedirectResponse("/", status_code=303)
