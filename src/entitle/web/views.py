"""The web UI: server-rendered pages with htmx for organization admins, resellers and the issuer.

One handler serves the full page, or only its content for an htmx request (netbox's pattern):
page templates extend ``base_template``, which is either the layout or a bare content block.
Refusals (``EntitleError``) raised in a web handler become a page or fragment with the message
first and the stable code in small print (``_error.html``), never the API's JSON; the API's own
error handlers are left alone.

Every POST carries the session's CSRF token, as the form field ``csrf_token`` or, for htmx, the
``X-CSRF-Token`` header that <body hx-headers> adds to every request.
"""

from __future__ import annotations

import csv
import io
import secrets
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, FastAPI, File, Form, Header, Query, Request, Response, UploadFile
from fastapi import Path as PathParam  # Path is pathlib's here
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import exists, func, select
from sqlalchemy.exc import SQLAlchemyError

from entitle import attention
from entitle.actors import Actor
from entitle.api.routing import OneHopRoute
from entitle.attention import organization as attention_org
from entitle.api.deps import client_id
from entitle.catalog import services as catalog
from entitle.context import Context
from entitle.db import reading, transaction
from entitle.errors import EntitleError, Forbidden, retry_after
from entitle.history import browse, sentences
from entitle.history import services as history
from entitle.keys import services as keys
from entitle.ledger import services as ledger
from entitle.systems import services as systems
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role, User, WebSession
from entitle.text import plural
from entitle.web import charts

HERE = Path(__file__).parent
SESSION_COOKIE = "entitle_session"
# Double-submit token of the sign-in form (there is no session yet to hold one).
LOGIN_COOKIE = "entitle_login_csrf"
PAGE_SIZE = 50
RECENT_HISTORY = 8
# The web form mints small batches and shows them on screen; larger ones go through the CLI/API.
MAX_WEB_MINT = 10_000
# A user whose password someone else chose (first-run, a console reset) sees only this page until
# they choose their own; signing out stays possible.
PASSWORD_PAGE = "/account/password"
OPEN_WHILE_PASSWORD_MUST_CHANGE = frozenset({PASSWORD_PAGE, "/logout"})
# Where the account page's password form returns to (the page then says it is done).
ACCOUNT_PASSWORD_CHANGED = "/account?changed=1"

templates = Jinja2Templates(directory=HERE / "templates")
# Pages load nothing from elsewhere and are never framed; they can hold secrets shown once (new
# keys, new tokens), so they are never cached either.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'self'; frame-ancestors 'none'; base-uri 'self'; "
                               "form-action 'self'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


# --- formatting ------------------------------------------------------------------------------

def _num(value: int | None) -> str:
    return "∞" if value is None else f"{value:,}"


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else "—"


def _kv(value: dict[str, Any] | None) -> str:
    if not value:
        return ""
    return ", ".join(f"{k.replace('_', ' ')}: {v}" for k, v in value.items())


def _history_line(row: Any) -> sentences.Line:
    """A history entry as the History tables show it (pages that read names pass Lines)."""
    if isinstance(row, sentences.Line):
        return row
    return sentences.Line(row, sentences.render(row), sentences.area_of(row.action))


templates.env.filters.update(num=_num, when=_when, kv=_kv, history_line=_history_line,
                             time_left=attention.time_left, plural=plural)


# --- who is asking -----------------------------------------------------------------------------

@dataclass(frozen=True)
class OrgChoice:
    id: int
    name: str
    region: str
    role: Role


@dataclass(frozen=True)
class Viewer:
    """The signed-in user as the pages need them, read once per request."""

    session_id: int
    user_id: int
    email: str
    is_issuer: bool
    csrf_token: str
    actor: Actor
    orgs: list[OrgChoice]
    org: OrgChoice | None  # the organization the pages show
    must_change_password: bool = False

    def require_org(self) -> OrgChoice:
        if self.org is None:
            raise EntitleError("organization_none",
                               "You are not a member of any organization yet: ask an owner of one "
                               "to add you.", status=404)
        return self.org


class LoginRequired(Exception):
    pass


class PasswordChangeRequired(Exception):
    pass


def _ctx(request: Request) -> Context:
    return request.app.state.ctx  # type: ignore[no-any-return]


def current_viewer(request: Request) -> Viewer:
    ctx = _ctx(request)
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise LoginRequired
    with reading(ctx.sessions) as s:
        ws = tenancy.resolve_session(s, cookie, now=ctx.clock.now())
        user = s.get(User, ws.user_id) if ws else None
        if ws is None or user is None:
            raise LoginRequired
        actor = tenancy.actor_for(user)
        orgs = [OrgChoice(o.id, o.name, o.region, actor.roles[o.id])
                for o in tenancy.organizations_of(s, actor)]
    current = next((o for o in orgs if o.id == ws.current_org_id), orgs[0] if orgs else None)
    viewer = Viewer(ws.id, user.id, user.email, user.is_issuer, ws.csrf_token, actor, orgs, current,
                    must_change_password=user.must_change_password)
    request.state.viewer = viewer
    if viewer.must_change_password and request.url.path not in OPEN_WHILE_PASSWORD_MUST_CHANGE:
        raise PasswordChangeRequired
    return viewer


def _same(sent: str | None, expected: str) -> bool:
    return bool(sent) and secrets.compare_digest(str(sent).encode(), expected.encode())


def checked_viewer(viewer: Annotated[Viewer, Depends(current_viewer)],
                   csrf_token: Annotated[str, Form()] = "",
                   x_csrf_token: Annotated[str | None, Header()] = None) -> Viewer:
    """The viewer of a POST whose CSRF token matches the session's; anything else is refused."""
    if not _same(x_csrf_token or csrf_token, viewer.csrf_token):
        raise Forbidden("csrf_invalid", "This form is out of date or did not come from this site: "
                                        "reload the page and try again.")
    return viewer


AnyViewer = Annotated[Viewer, Depends(current_viewer)]
PostingViewer = Annotated[Viewer, Depends(checked_viewer)]


# --- the navigation ----------------------------------------------------------------------------

@dataclass(frozen=True)
class NavLink:
    label: str
    href: str
    active: str  # the ``active`` name of the pages it leads to
    used: bool = True  # a licensing model the organization uses (shown in the top row)


@dataclass(frozen=True)
class NavGroup:
    label: str
    links: list[NavLink]

    def holds(self, active: str | None) -> bool:
        return any(link.active == active for link in self.links)


MODELS = (("access_commander", "Access Commander", "/ac", "ac"), ("axis", "AXIS", "/axis", "axis"),
          ("my2n", "My2N", "/my2n", "my2n"))


def models_used(request: Request, viewer: Viewer) -> set[str]:
    """The licensing models the current organization has something in (one query); all three
    when it has nothing yet, so that a new organization sees where to start."""
    if viewer.org is None:
        return set()
    from entitle.access_commander.models import Installation
    from entitle.axis.models import OrgProduct
    from entitle.my2n.models import Site

    org_id = viewer.org.id
    try:
        with reading(_ctx(request).sessions) as s:
            found = s.execute(select(
                exists().where(Installation.org_id == org_id),
                exists().where(OrgProduct.org_id == org_id),
                exists().where(Site.org_id == org_id))).one()
    except SQLAlchemyError:  # an error page must still render when the database is away
        return {name for name, *_ in MODELS}
    used = {name for (name, *_), yes in zip(MODELS, found, strict=True) if yes}
    return used or {name for name, *_ in MODELS}


def navigation(request: Request, viewer: Viewer | None) -> list[NavGroup]:
    """The navigation's groups, as the vendors' portals group them: the licenses by model, the
    organization's own pages, and the vendor's (issuer's) pages."""
    if viewer is None or viewer.must_change_password:
        return []
    groups: list[NavGroup] = []
    if viewer.org is not None:
        used = models_used(request, viewer)
        groups.append(NavGroup("Licenses", [NavLink(label, href, active, name in used)
                                            for name, label, href, active in MODELS]))
        organization = [NavLink("Wallet", "/wallet", "wallet"), NavLink("History", "/history", "history"),
                        NavLink("People", "/people", "people"), NavLink("Systems", "/systems", "systems")]
        if viewer.org.role.may_license:
            organization.append(NavLink("Webhooks", "/webhooks", "webhooks"))
        organization += [NavLink("Notifications", "/notifications", "notifications"),
                         NavLink("API tokens", "/tokens", "tokens")]
        groups.append(NavGroup("Organization", organization))
    if viewer.is_issuer:
        groups.append(NavGroup("Vendor", [NavLink("License keys", "/issuer/keys", "issuer"),
                                          NavLink("Vouchers", "/issuer/my2n/vouchers", "vouchers"),
                                          NavLink("Catalog", "/issuer/catalog", "catalog"),
                                          NavLink("My2N support", "/issuer/my2n", "my2n-support")]))
    return groups


templates.env.globals["navigation"] = navigation


# --- rendering ---------------------------------------------------------------------------------

def is_htmx(request: Request) -> bool:
    # A history restore wants the whole page, although htmx sends it.
    return (request.headers.get("HX-Request") == "true"
            and request.headers.get("HX-History-Restore-Request") != "true")


def render(request: Request, template: str, *, viewer: Viewer | None, status: int = 200,
           headers: dict[str, str] | None = None, **context: Any) -> Response:
    """The page, or only its content block when htmx asks."""
    base = "_fragment.html" if is_htmx(request) else "layout.html"
    all_headers = {**PAGE_HEADERS, "Vary": "HX-Request", **(headers or {})}
    return templates.TemplateResponse(
        request, template, {"base_template": base, "viewer": viewer, **context},
        status_code=status, headers=all_headers)


def render_error(request: Request, exc: EntitleError) -> Response:
    viewer: Viewer | None = getattr(request.state, "viewer", None)
    headers = dict(PAGE_HEADERS)
    wait = retry_after(exc)
    if wait is not None:
        headers["Retry-After"] = str(wait)
    if is_htmx(request):
        # Shown in the page's message area, whatever the request meant to update.
        headers.update({"HX-Retarget": "#flash", "HX-Reswap": "innerHTML"})
        return templates.TemplateResponse(request, "_error.html", {"error": exc},
                                          status_code=exc.status, headers=headers)
    return templates.TemplateResponse(
        request, "error.html", {"base_template": "layout.html", "viewer": viewer, "error": exc},
        status_code=exc.status, headers=headers)


def _login_redirect(request: Request) -> Response:
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=401, headers={"HX-Redirect": "/login"})
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    nxt = f"?next={quote(target, safe='')}" if request.method == "GET" and target != "/" else ""
    return RedirectResponse(f"/login{nxt}", status_code=303)


def _password_change_redirect(request: Request) -> Response:
    # htmx follows a 303 by itself and would swap the form into the page: tell it to go there.
    if request.headers.get("HX-Request") == "true":
        return Response(status_code=403, headers={"HX-Redirect": PASSWORD_PAGE})
    return RedirectResponse(PASSWORD_PAGE, status_code=303)


class WebRoute(OneHopRoute):
    """Turns refusals in web handlers into HTML (the API keeps its JSON handlers)."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            try:
                return await handler(request)
            except LoginRequired:
                return _login_redirect(request)
            except PasswordChangeRequired:
                return _password_change_redirect(request)
            except EntitleError as exc:
                return render_error(request, exc)
            except RequestValidationError as exc:
                first = exc.errors()[0] if exc.errors() else {}
                field = str(first.get("loc", ("", "?"))[-1])
                return render_error(request, EntitleError(
                    "invalid_request", f"The form field {field!r} is not valid: "
                    f"{first.get('msg', 'check it')}.", status=422))

        return handle


def _safe_next(value: str | None) -> str:
    """Only a path on this site: never an open redirect."""
    if value and value.startswith("/") and not value.startswith("//") and "\\" not in value:
        return value
    return "/"


router = APIRouter(route_class=WebRoute, include_in_schema=False)


# --- signing in and out ------------------------------------------------------------------------

def _login_page(request: Request, *, next_path: str, email: str = "", error: str | None = None,
                status: int = 200) -> Response:
    token = secrets.token_urlsafe(32)
    response = render(request, "login.html", viewer=None, status=status, login_csrf=token,
                      next_path=next_path, email=email, error=error)
    response.set_cookie(LOGIN_COOKIE, token, httponly=True, samesite="lax", path="/login",
                        secure=_ctx(request).settings.cookie_secure, max_age=3600)
    return response


@router.get("/login")
def login_form(request: Request, next: str = "/") -> Response:  # noqa: A002 - the query name
    return _login_page(request, next_path=_safe_next(next))


@router.post("/login")
def login(request: Request, email: Annotated[str, Form()] = "", password: Annotated[str, Form()] = "",
          csrf_token: Annotated[str, Form()] = "", next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    ctx = _ctx(request)
    next_path = _safe_next(next)
    if not _same(csrf_token, request.cookies.get(LOGIN_COOKIE, "")):
        return _login_page(request, next_path=next_path, email=email, status=403,
                           error="The sign-in form expired or did not come from this site: "
                                 "sign in again.")
    try:
        # Rate limited, bounded, and outside the write transaction (tenancy.sign_in).
        user_id = tenancy.sign_in(ctx.sessions, ctx.sign_in_limiter, email=email, password=password,
                                  client=client_id(request))
    except EntitleError as exc:
        # The same sentence whether or not the e-mail exists.
        page = _login_page(request, next_path=next_path, email=email, error=exc.message, status=exc.status)
        if (wait := retry_after(exc)) is not None:
            page.headers["Retry-After"] = str(wait)
        return page
    now = ctx.clock.now()
    with transaction(ctx.sessions) as s:
        old = request.cookies.get(SESSION_COOKIE)
        if old:
            tenancy.end_session(s, old, now=now)
        user = s.get(User, user_id)
        assert user is not None
        new = tenancy.start_session(s, user=user, now=now)
        if user.must_change_password:
            next_path = PASSWORD_PAGE
    response = RedirectResponse(next_path, status_code=303)
    response.set_cookie(SESSION_COOKIE, new.cookie, httponly=True, samesite="lax", path="/",
                        secure=ctx.settings.cookie_secure, max_age=ctx.settings.session_max_age_seconds)
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(request: Request, viewer: PostingViewer) -> Response:
    ctx = _ctx(request)
    with transaction(ctx.sessions) as s:
        tenancy.end_session(s, request.cookies.get(SESSION_COOKIE, ""), now=ctx.clock.now())
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# --- organization ------------------------------------------------------------------------------

@router.post("/ui/org")
def switch_org(request: Request, viewer: PostingViewer, org_id: Annotated[int, Form()],
               next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002
    """Show another of the user's organizations; any other id is 'not found' (R-CORE-1)."""
    viewer.actor.require_member(org_id)
    with transaction(_ctx(request).sessions) as s:
        ws = s.get(WebSession, viewer.session_id)
        assert ws is not None
        ws.current_org_id = org_id
    return RedirectResponse(_safe_next(next), status_code=303)


# The home page: the Attention list, then a tile per licensing model (at most this many rows in
# each, the ones that need something first; the model's own page lists them all).
ATTENTION_SHOWN = 12
ATTENTION_LISTED = 100  # beyond these the models' own pages list the rest
TILE_ROWS = 8
SEVERITY_NAMES = {"critical": "Not working", "warning": "Due", "info": "To do"}
AREA_PAGES = {"access_commander": "/ac", "axis": "/axis", "my2n": "/my2n", "organization": "/webhooks"}
AC_STATE_ORDER = {"suspended": 0, "protective": 1, "trial": 2, "active": 3}
AXIS_STATE_ORDER = {"not_licensed": 0, "partially_licensed": 1, "in_grace": 2, "trial": 3, "fully_licensed": 4}


def _tile_rows(rows: list[Any], order: Callable[[Any], Any]) -> list[Any]:
    return sorted(rows, key=order)[:TILE_ROWS]


@router.get("/")
def dashboard(request: Request, viewer: AnyViewer) -> Response:
    if viewer.org is None:
        return render(request, "dashboard.html", viewer=viewer, active="dashboard", home=None)
    ctx = _ctx(request)
    now = ctx.clock.now()
    org = viewer.org
    with reading(ctx.sessions) as s:
        home = attention.home(s, org.id, now, webhooks=org.role.may_license)
        recent = sentences.lines(s, org.id, history.page(s, org.id, limit=RECENT_HISTORY))
        wallet_chart = charts.wallet_over_time(attention_org.wallet_over_time(s, org.id, now), now)
        wallet_lines = [line for line in ledger.wallet(s, org.id, now=now) if line.units]
    counts = {
        "access_commander": Counter(t.state for t in home.installations),
        "axis": Counter(p.state for p in home.products),
    }
    return render(
        request, "dashboard.html", viewer=viewer, active="dashboard", home=home, now=now,
        items=home.attention[:ATTENTION_SHOWN], more_items=home.attention[ATTENTION_SHOWN:ATTENTION_LISTED],
        unlisted=Counter(i.area for i in home.attention[ATTENTION_LISTED:]),
        severity_names=SEVERITY_NAMES, area_names=attention.AREAS, area_pages=AREA_PAGES, counts=counts,
        recent=recent, wallet_chart=wallet_chart, wallet_lines=wallet_lines,
        installations=_tile_rows(home.installations, lambda t: (AC_STATE_ORDER.get(t.state, 9),
                                                                 t.devices.covered, t.name)),
        products=_tile_rows(home.products, lambda p: (AXIS_STATE_ORDER.get(p.state, 9), p.name)),
        sites=_tile_rows(home.sites, lambda t: (not t.stopped, not t.lapsing_soon, t.name)),
        lapsing_sites=sum(1 for t in home.sites if t.stopped or t.lapsing_soon))


# --- wallet ------------------------------------------------------------------------------------

def _wallet(request: Request, viewer: Viewer, *, fragment: bool, status: int = 200,
            message: str | None = None, error: EntitleError | None = None, typed_key: str = "") -> Response:
    org = viewer.require_org()
    with reading(_ctx(request).sessions) as s:
        lines = ledger.wallet(s, org.id, now=_ctx(request).clock.now())
    context = dict(org=org, lines=lines, may_redeem=org.role.may_license, message=message,
                   error=error, typed_key=typed_key)
    if fragment:
        return templates.TemplateResponse(request, "_wallet_panel.html", {"viewer": viewer, **context},
                                          status_code=status, headers=PAGE_HEADERS)
    return render(request, "wallet.html", viewer=viewer, active="wallet", status=status, **context)


@router.get("/wallet")
def wallet(request: Request, viewer: AnyViewer) -> Response:
    return _wallet(request, viewer, fragment=False)


@router.post("/wallet/redeem")
def redeem(request: Request, viewer: PostingViewer, key: Annotated[str, Form()] = "") -> Response:
    """Redeem a license key into the current organization's wallet (R-CORE-4)."""
    ctx = _ctx(request)
    org = viewer.require_org()
    viewer.actor.require_licensing(org.id)
    try:
        ctx.redeem_limiter.hit(org_id=org.id, client=client_id(request))
        with transaction(ctx.sessions) as s:
            done = keys.redeem(s, org_id=org.id, typed_key=key, actor=viewer.actor, now=ctx.clock.now())
    except EntitleError as exc:
        return _wallet(request, viewer, fragment=is_htmx(request), status=exc.status, error=exc,
                       typed_key=key)
    return _wallet(request, viewer, fragment=is_htmx(request),
                   message=f"Redeemed {done['quantity']} × {done['part_number']}")


# --- history -----------------------------------------------------------------------------------

def _day_field(value: str, label: str) -> date | None:
    """A date from a form's date field (empty: none)."""
    if not value.strip():
        return None
    try:
        return date.fromisoformat(value.strip())
    except ValueError:
        raise EntitleError("date_invalid", f"{label} is not a date: write it as 2026-01-15.", status=422,
                           value=value[:40]) from None


def _history_filters(area: str, person: str, object: str, since: str,  # noqa: A002 - the query name
                     until: str) -> browse.Filters:
    return browse.Filters(area=area if area in sentences.AREAS else "", person=person.strip()[:320],
                          object=object.strip()[:128], since=_day_field(since, "From"),
                          until=_day_field(until, "Until"))


HistoryQuery = Annotated[str, Query(max_length=320)]


@router.get("/history")
def history_page(request: Request, viewer: AnyViewer,
                 cursor: Annotated[int | None, Query(ge=1, le=2**63 - 1)] = None, area: HistoryQuery = "",
                 person: HistoryQuery = "", object: HistoryQuery = "",  # noqa: A002 - the query name
                 since: HistoryQuery = "", until: HistoryQuery = "") -> Response:
    """Every change, newest first, as sentences; filtered by area, person, object and dates."""
    org = viewer.require_org()
    filters = _history_filters(area, person, object, since, until)
    with reading(_ctx(request).sessions) as s:
        rows = browse.search(s, org.id, filters, limit=PAGE_SIZE + 1, before_seq=cursor)
        more = len(rows) > PAGE_SIZE
        lines = sentences.lines(s, org.id, rows[:PAGE_SIZE])
        people = [(p, sentences.person(p)) for p in browse.people(s, org.id)]
    query = filters.query()
    return render(request, "history.html", viewer=viewer, active="history", org=org, rows=lines,
                  cursor=cursor, next_cursor=lines[-1].entry.seq if more else None, filters=filters,
                  areas={k: v[0] for k, v in sentences.AREAS.items()}, people=people,
                  query=urlencode(query), csv_href="/history.csv" + (f"?{urlencode(query)}" if query else ""))


@router.get("/history.csv")
def history_csv(request: Request, viewer: AnyViewer, area: HistoryQuery = "", person: HistoryQuery = "",
                object: HistoryQuery = "",  # noqa: A002 - the query name
                since: HistoryQuery = "", until: HistoryQuery = "") -> Response:
    """The same entries as CSV: the sentence, and the raw record (action, object, before, after)."""
    org = viewer.require_org()
    filters = _history_filters(area, person, object, since, until)
    with reading(_ctx(request).sessions) as s:
        text = browse.as_csv(browse.csv_rows(s, org.id, filters))
    name = "".join(c if c.isalnum() else "-" for c in org.name).strip("-").lower() or "organization"
    return Response(text, media_type="text/csv; charset=utf-8", headers={
        **PAGE_HEADERS, "Content-Disposition": f'attachment; filename="history-{name}.csv"'})


@router.get("/history/verify")
def history_verify(request: Request, viewer: AnyViewer) -> Response:
    """Recompute the organization's hash chain (R-CORE-6)."""
    org = viewer.require_org()
    with reading(_ctx(request).sessions) as s:
        result = history.verify(s, org.id)
    return render(request, "history_verify.html", viewer=viewer, active="history", org=org,
                  result=result)


# --- issuer: license keys ----------------------------------------------------------------------

def _issuer_keys(request: Request, viewer: Viewer, *, cursor: int | None = None, status: int = 200,
                 minted: dict[str, Any] | None = None, error: EntitleError | None = None,
                 form: dict[str, Any] | None = None) -> Response:
    viewer.actor.require_issuer()
    with reading(_ctx(request).sessions) as s:
        rows = keys.batches(s, limit=PAGE_SIZE + 1, before_id=cursor)
        skus = [(p.name, [(k.part_number, k.name) for k in p.skus]) for p in catalog.products(s)]
        batch_rows = [keys.batch_to_dict(b) for b in rows[:PAGE_SIZE]]
    more = len(rows) > PAGE_SIZE
    return render(request, "issuer_keys.html", viewer=viewer, active="issuer", status=status,
                  batches=batch_rows, next_cursor=batch_rows[-1]["id"] if more else None,
                  skus=skus, minted=minted, error=error, form=form or {}, max_count=MAX_WEB_MINT)


@router.get("/issuer/keys")
def issuer_keys(request: Request, viewer: AnyViewer,
                cursor: Annotated[int | None, Query(ge=1)] = None) -> Response:
    return _issuer_keys(request, viewer, cursor=cursor)


@router.post("/issuer/keys")
def issuer_mint(request: Request, viewer: PostingViewer, part_number: Annotated[str, Form()],
                quantity_per_key: Annotated[int, Form()], count: Annotated[int, Form()],
                name: Annotated[str, Form()] = "") -> Response:
    """Mint a batch; its codes are in this answer only (the database keeps hashes)."""
    viewer.actor.require_issuer()
    ctx = _ctx(request)
    form = {"part_number": part_number, "quantity_per_key": quantity_per_key, "count": count, "name": name}
    try:
        if count > MAX_WEB_MINT:
            raise EntitleError("count_invalid", f"The web form mints at most {MAX_WEB_MINT:,} keys at "
                               "once; use the CLI or the API for larger batches.",
                               count=count, maximum=MAX_WEB_MINT)
        with transaction(ctx.sessions) as s:
            minted = keys.mint(s, sku_part=part_number, quantity_per_key=quantity_per_key, count=count,
                               name=name.strip(), actor=viewer.actor, now=ctx.clock.now(),
                               keep_codes=True)
            shown = {"batch": keys.batch_to_dict(minted.batch), "codes": minted.codes}
    except EntitleError as exc:
        return _issuer_keys(request, viewer, status=exc.status, error=exc, form=form)
    return _issuer_keys(request, viewer, minted=shown, form={"part_number": part_number})


# Codes minted on screen, downloaded as CSV: the database keeps only their hashes, so the page
# sends back the codes it shows (in the same signed-in session, the issuer's own) and gets them as
# a file; the batch's part number and quantity come from the database.
MAX_CODE_LENGTH = 64


def shown_codes(text: str) -> list[str]:
    codes = text.split()
    if not codes or len(codes) > MAX_WEB_MINT or any(len(c) > MAX_CODE_LENGTH for c in codes):
        raise EntitleError("codes_invalid", "There are no codes to download: mint a batch, then download its "
                           "codes from the page that shows them.", status=422)
    return codes


def csv_download(filename: str, header: list[str], rows: list[list[Any]]) -> Response:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers={
        **PAGE_HEADERS, "Content-Disposition": f'attachment; filename="{filename}"'})


@router.post("/issuer/keys/{batch_id}/codes.csv")
def issuer_keys_csv(request: Request, viewer: PostingViewer, batch_id: Annotated[int, PathParam(ge=1, le=2**63 - 1)],
                    codes: Annotated[str, Form()] = "") -> Response:
    """The keys of a batch just minted, as the CLI writes them (key, part number, quantity)."""
    from entitle.keys.models import KeyBatch

    viewer.actor.require_issuer()
    listed = shown_codes(codes)
    with reading(_ctx(request).sessions) as s:
        batch = s.get(KeyBatch, batch_id)
        if batch is None:
            raise EntitleError("batch_not_found", f"There is no key batch {batch_id}.", status=404)
        part, quantity = batch.sku.part_number, batch.quantity_per_key
    return csv_download(f"license-keys-batch-{batch_id}.csv", ["key", "part_number", "quantity"],
                        [[c, part, quantity] for c in listed])


# --- API tokens --------------------------------------------------------------------------------

def _tokens(request: Request, viewer: Viewer, *, new_token: str | None = None,
            message: str | None = None) -> Response:
    with reading(_ctx(request).sessions) as s:
        rows = tenancy.active_tokens(s, user_id=viewer.user_id)
    return render(request, "tokens.html", viewer=viewer, active="tokens", tokens=rows,
                  new_token=new_token, message=message)


@router.get("/tokens")
def tokens(request: Request, viewer: AnyViewer) -> Response:
    return _tokens(request, viewer)


@router.post("/tokens")
def create_token(request: Request, viewer: PostingViewer, name: Annotated[str, Form()] = "") -> Response:
    ctx = _ctx(request)
    with transaction(ctx.sessions) as s:
        user = s.get(User, viewer.user_id)
        assert user is not None
        secret, _row = tenancy.create_token(s, user=user, name=name.strip() or "web", now=ctx.clock.now())
    return _tokens(request, viewer, new_token=secret)


@router.post("/tokens/{token_id}/revoke")
def revoke_token(request: Request, viewer: PostingViewer, token_id: int) -> Response:
    ctx = _ctx(request)
    with transaction(ctx.sessions) as s:
        user = s.get(User, viewer.user_id)
        assert user is not None
        tenancy.revoke_token(s, user=user, token_id=token_id, now=ctx.clock.now())
    return _tokens(request, viewer, message="Token revoked: it no longer works.")


# --- the account: password and web sessions ----------------------------------------------------

DbId = Annotated[int, PathParam(ge=1, le=2**63 - 1)]  # a database integer


def _account(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
             password_error: str | None = None) -> Response:
    ctx = _ctx(request)
    with reading(ctx.sessions) as s:
        web_sessions = tenancy.active_sessions(s, user_id=viewer.user_id, now=ctx.clock.now())
        tokens_count = len(tenancy.active_tokens(s, user_id=viewer.user_id))
        user = s.get(User, viewer.user_id)
        changed_at = user.password_changed_at if user else None
    return render(request, "account.html", viewer=viewer, active="account", status=status, message=message,
                  password_error=password_error, web_sessions=web_sessions, tokens_count=tokens_count,
                  password_changed_at=changed_at, min_length=tenancy.PASSWORD_MIN_LENGTH,
                  max_length=tenancy.PASSWORD_MAX_LENGTH, next_path=ACCOUNT_PASSWORD_CHANGED)


@router.get("/account")
def account(request: Request, viewer: AnyViewer, changed: bool = False) -> Response:
    message = ("Your password is changed. Your other web sessions were signed out; your API tokens keep "
               "working." if changed else None)
    return _account(request, viewer, message=message)


def _password_page(request: Request, viewer: Viewer, *, status: int = 200, error: str | None = None) -> Response:
    return render(request, "account_password.html", viewer=viewer, active="account", status=status,
                  password_error=error, min_length=tenancy.PASSWORD_MIN_LENGTH,
                  max_length=tenancy.PASSWORD_MAX_LENGTH, next_path=None)


@router.get(PASSWORD_PAGE)
def password_form(request: Request, viewer: AnyViewer) -> Response:
    return _password_page(request, viewer)


@router.post(PASSWORD_PAGE)
def change_password(request: Request, viewer: PostingViewer, current_password: Annotated[str, Form()] = "",
                    new_password: Annotated[str, Form()] = "", new_password_confirm: Annotated[str, Form()] = "",
                    next: Annotated[str, Form()] = "/") -> Response:  # noqa: A002 - the form field's name
    """Choose a new password (the current one is asked for); the other web sessions end."""
    ctx = _ctx(request)
    next_path = _safe_next(next)
    try:
        if new_password != new_password_confirm:
            raise EntitleError("password_confirm_mismatch", "The new password and its confirmation differ: "
                               "type the same new password twice.")
        tenancy.change_own_password(ctx.sessions, ctx.sign_in_limiter, user_id=viewer.user_id, email=viewer.email,
                                    client=client_id(request), current_password=current_password,
                                    new_password=new_password, now=ctx.clock.now(),
                                    keep_session_id=viewer.session_id)
    except EntitleError as exc:
        # The form is shown again where it was, with the sentence only (the fields are left empty).
        if next_path == ACCOUNT_PASSWORD_CHANGED and not viewer.must_change_password:
            return _account(request, viewer, status=exc.status, password_error=exc.message)
        return _password_page(request, viewer, status=exc.status, error=exc.message)
    return RedirectResponse(next_path, status_code=303)


@router.post("/account/sessions/{session_id}/revoke")
def revoke_session(request: Request, viewer: PostingViewer, session_id: DbId) -> Response:
    """Sign one of the user's web sessions out; this one is the same as signing out."""
    ctx = _ctx(request)
    with transaction(ctx.sessions) as s:
        user = s.get(User, viewer.user_id)
        assert user is not None
        tenancy.revoke_session(s, user=user, session_id=session_id, now=ctx.clock.now())
    if session_id == viewer.session_id:
        response = _login_redirect(request) if is_htmx(request) else RedirectResponse("/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response
    return _account(request, viewer, message="That session is signed out.")


# --- systems: every installation the organization registered, whatever its model ------------------

MODEL_NAMES = {"axis": "AXIS", "access_commander": "Access Commander", "my2n": "My2N"}


@dataclass(frozen=True)
class SystemRow:
    """One registered installation as the models' own pages count it (an AXIS system's devices
    from System setup, an Access Commander installation's from its License settings)."""

    uid: str
    name: str
    model: str
    product: str
    devices: int
    need: dict[str, int]
    offline: bool
    registered_at: datetime
    updated_at: datetime | None
    href: str


def system_rows(s: Any, org_id: int) -> list[SystemRow]:
    """The organization's systems in three grouped queries (no query per system)."""
    from entitle.access_commander.models import Device, Installation
    from entitle.axis.models import AxisDevice
    from entitle.catalog.models import Product
    from entitle.systems.models import System

    need: dict[int, dict[str, int]] = {}
    for system_id, license_type, n in s.execute(
            select(AxisDevice.system_id, AxisDevice.license_type, func.count())
            .where(AxisDevice.org_id == org_id, AxisDevice.removed_at.is_(None))
            .group_by(AxisDevice.system_id, AxisDevice.license_type)):
        need.setdefault(system_id, {})[license_type] = n
    rows = []
    for system, product_name, model in s.execute(
            select(System, Product.name, Product.model).outerjoin(Product, Product.code == System.product)
            .where(System.org_id == org_id).order_by(System.id)):
        counted = need.get(system.id, {})
        href = f"/axis/products/{quote(system.product, safe='')}?tab=setup" if model == "axis" else "/systems"
        rows.append(SystemRow(system.uid, system.name, MODEL_NAMES.get(model or "", model or "—"),
                              product_name or system.product, sum(counted.values()), counted, system.offline,
                              system.registered_at, system.updated_at, href))
    devices = dict(s.execute(select(Device.installation_id, func.count()).where(Device.org_id == org_id)
                             .group_by(Device.installation_id)).all())
    for inst in s.scalars(select(Installation).where(Installation.org_id == org_id).order_by(Installation.id)):
        rows.append(SystemRow(inst.uid, inst.name, "Access Commander", "Access Commander",
                              devices.get(inst.id, 0), {}, False, inst.created_at, None,
                              f"/ac/installations/{inst.id}"))
    return rows


def _systems(request: Request, viewer: Viewer, *, status: int = 200, message: str | None = None,
             error: EntitleError | None = None, license_file: str | None = None) -> Response:
    org = viewer.require_org()
    with reading(_ctx(request).sessions) as s:
        rows = system_rows(s, org.id)
    return render(request, "systems.html", viewer=viewer, active="systems", status=status, org=org,
                  systems=rows, may_upload=org.role.may_license, message=message, error=error,
                  license_file=license_file)


@router.get("/systems")
def systems_page(request: Request, viewer: AnyViewer) -> Response:
    return _systems(request, viewer)


@router.post("/systems/upload")
def upload_system_file(request: Request, viewer: PostingViewer,
                       system_file: Annotated[UploadFile, File()]) -> Response:
    """Register or update an offline system from its system file; show its license file."""
    raw = system_file.file.read(65_537)  # a system file is at most 64 KiB; more is not one
    text = raw.decode("utf-8", errors="replace") if len(raw) <= 65_536 else ""
    ctx = _ctx(request)
    org = viewer.require_org()
    try:
        with transaction(ctx.sessions) as s:
            done = systems.upload_system_file(
                s, org_id=org.id, text=text, actor=viewer.actor, now=ctx.clock.now(), secret=ctx.secret)
            uid = done.system.uid
    except EntitleError as exc:
        return _systems(request, viewer, status=exc.status, error=exc)
    return _systems(request, viewer, license_file=done.license_file,
                    message=f"System {uid} is {done.verb}. Import this license file on the system; it is "
                            f"valid until {done.expires:%Y-%m-%d %H:%M} UTC.")


def install(app: FastAPI) -> None:
    from entitle.web import access_commander, axis, catalog, events, my2n, people

    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)
    app.include_router(access_commander.router)
    app.include_router(axis.router)
    app.include_router(my2n.router)
    app.include_router(events.router)
    app.include_router(people.router)
    app.include_router(catalog.router)
