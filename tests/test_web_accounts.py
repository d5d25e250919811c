"""The account pages through the web UI's HTTP interface: the forced password change of a user whose
password someone else chose, changing your password, signing out your other web sessions."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import PASSWORD, World, auth
from entitle.cli.main import app as cli_app
from entitle.db import transaction
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import ApiToken, User
from entitle.web.views import WebRoute
from test_web import HTMX, hidden_csrf, sign_in

NEW = "a brand new passphrase"
FORCED = "/account/password"


def forced_user(world: World, email: str = "ann@example.com") -> User:
    """A user whose password someone else chose, owner of an organization."""
    with transaction(world.ctx.sessions) as s:
        user = tenancy.create_user(s, email=email, password=PASSWORD, now=world.now, must_change_password=True)
    world.org("Acme", owner=user)
    return user


def post_login(client: TestClient, email: str, password: str = PASSWORD, next_path: str = "/") -> object:
    form = client.get("/login")
    return client.post("/login", data={"email": email, "password": password, "csrf_token": hidden_csrf(form.text),
                                       "next": next_path}, follow_redirects=False)


def forced_sign_in(client: TestClient, email: str = "ann@example.com") -> str:
    """Sign in as a user who must change their password; return the session's CSRF token."""
    r = post_login(client, email)
    assert r.status_code == 303 and r.headers["location"] == FORCED
    return hidden_csrf(client.get(FORCED).text)


def must_change(world: World, user: User) -> bool:
    with world.ctx.sessions() as s:
        return s.get(User, user.id).must_change_password


def change(client: TestClient, csrf: str, current: str = PASSWORD, new: str = NEW, confirm: str | None = None,
           **extra: str) -> object:
    return client.post(FORCED, data={"csrf_token": csrf, "current_password": current, "new_password": new,
                                     "new_password_confirm": new if confirm is None else confirm, **extra},
                       follow_redirects=False)


def _routes(routes: list[Any]) -> Iterator[Any]:
    for route in routes:
        included = getattr(route, "original_router", None)  # FastAPI keeps included routers whole
        yield from _routes(included.routes) if included is not None else [route]


def web_pages(app: Any) -> list[str]:
    """Every page of the web UI a browser can GET (the web routers are included without a prefix),
    path parameters filled in."""
    return sorted(re.sub(r"\{[^}]+\}", "1", route.path) for route in _routes(app.routes)
                  if isinstance(route, WebRoute) and "GET" in route.methods and route.path not in ("/login", FORCED))


class Form(HTMLParser):
    """The form posting to /account/password and its fields."""

    def __init__(self) -> None:
        super().__init__()
        self.form: dict[str, str | None] | None = None
        self.fields: dict[str, dict[str, str | None]] = {}
        self._inside = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form" and a.get("action") == FORCED:
            self.form, self._inside = a, True
        elif tag == "input" and self._inside and a.get("name"):
            self.fields[str(a["name"])] = a

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False


def password_form(html: str) -> Form:
    parser = Form()
    parser.feed(html)
    assert parser.form is not None, "no form posting to /account/password"
    return parser


# --- the forced change (the contract a CI smoke script relies on) ------------------------------------

def test_first_run_admin_signs_in_and_is_sent_to_choose_a_password(ctx, client):
    run = CliRunner().invoke(cli_app, ["first-run", "--json", "--database-url", ctx.settings.database_url])
    first = json.loads(run.stdout)
    r = post_login(client, first["email"], first["password"], next_path="/wallet")
    assert r.status_code == 303 and r.headers["location"] == FORCED
    page = client.get("/", follow_redirects=False)
    assert page.status_code == 303 and page.headers["location"] == FORCED


def test_every_page_sends_a_user_who_must_change_their_password_to_the_form(world, app, client):
    forced_user(world)
    forced_sign_in(client)
    pages = web_pages(app)
    assert {"/", "/wallet", "/tokens", "/account", "/history", "/ac", "/axis", "/my2n", "/notifications"} <= set(pages)
    for path in pages:
        r = client.get(path, follow_redirects=False)
        assert (r.status_code, r.headers.get("location")) == (303, FORCED), path
    # Only the form itself, signing in and out, and the static files stay open.
    assert client.get(FORCED).status_code == 200
    assert client.get("/login").status_code == 200
    assert client.get("/static/app.css").status_code == 200


def test_htmx_requests_are_told_where_to_go(world, client):
    forced_user(world)
    forced_sign_in(client)
    r = client.get("/wallet", headers=HTMX, follow_redirects=False)
    assert r.status_code == 403 and r.headers["HX-Redirect"] == FORCED and r.text == ""


def test_forms_other_than_the_password_form_do_nothing_until_it_is_changed(world, client):
    forced_user(world)
    csrf = forced_sign_in(client)
    r = client.post("/tokens", data={"name": "sneaky", "csrf_token": csrf}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, FORCED)
    with world.ctx.sessions() as s:
        assert s.query(ApiToken).count() == 0


def test_the_form_has_the_fields_and_says_why_plainly(world, client):
    forced_user(world)
    csrf = forced_sign_in(client)
    html = client.get(FORCED).text
    form = password_form(html)
    assert (form.form["method"], form.form["action"]) == ("post", FORCED)
    assert form.fields["csrf_token"]["type"] == "hidden" and form.fields["csrf_token"]["value"] == csrf
    home_meta = re.search(r'<meta name="csrf-token" content="([^"]+)"', html).group(1)
    assert csrf == home_meta  # the session's token, as every other form
    for name in ("current_password", "new_password", "new_password_confirm"):
        assert form.fields[name]["type"] == "password", name
    assert "Choose your own password before you continue: the one you signed in with was generated" in html
    # Nothing to wander off to but signing out.
    assert 'href="/wallet"' not in html and 'action="/logout"' in html


def test_changing_it_lands_on_the_dashboard_and_frees_the_pages(world, client):
    ann = forced_user(world)
    csrf = forced_sign_in(client)
    r = change(client, csrf)
    assert (r.status_code, r.headers["location"]) == (303, "/")
    assert not must_change(world, ann)
    home = client.get("/", follow_redirects=False)
    assert home.status_code == 200 and "Acme" in home.text
    assert client.get("/wallet", follow_redirects=False).status_code == 200


@pytest.mark.parametrize(("current", "new", "confirm", "status", "sentence"), [
    (PASSWORD, NEW, NEW + "!", 400, "The new password and its confirmation differ"),
    (PASSWORD, "short", "short", 400, "at least 8 characters"),
    (PASSWORD, PASSWORD, PASSWORD, 400, "The new password is the one you have now"),
    ("not my password", NEW, NEW, 403, "The current password is wrong"),
])
def test_refusals_show_the_form_again_with_a_sentence(world, client, current, new, confirm, status, sentence):
    ann = forced_user(world)
    csrf = forced_sign_in(client)
    r = change(client, csrf, current, new, confirm)
    assert r.status_code == status
    assert sentence in r.text
    assert re.search(r'class="message error" role="alert">[^<]*' + re.escape(sentence), r.text)
    assert not re.search(r"password_(too_short|current_wrong|unchanged|confirm_mismatch)", r.text)  # words, not codes
    password_form(r.text)  # the form again
    assert must_change(world, ann)
    assert client.get("/", follow_redirects=False).headers["location"] == FORCED


def test_the_password_form_needs_the_csrf_token(world, client):
    ann = forced_user(world)
    forced_sign_in(client)
    r = change(client, "forged")
    assert r.status_code == 403 and must_change(world, ann)


def test_signing_out_still_works_while_the_password_must_change(world, client):
    forced_user(world)
    csrf = forced_sign_in(client)
    r = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert client.get(FORCED, follow_redirects=False).headers["location"].startswith("/login")


def test_users_made_through_the_services_are_not_asked(world, client):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    r = post_login(client, "ann@example.com", next_path="/wallet")
    assert r.headers["location"] == "/wallet"
    assert client.get("/wallet", follow_redirects=False).status_code == 200


def test_a_console_reset_signs_the_user_out_and_asks_again_at_the_next_sign_in(world, ctx, client):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    sign_in(client, "ann@example.com")
    run = CliRunner().invoke(cli_app, ["admin", "password", "--email", "ann@example.com", "--password", NEW,
                                       "--database-url", ctx.settings.database_url])
    assert run.exit_code == 0, run.output
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    r = post_login(client, "ann@example.com", NEW)
    assert r.headers["location"] == FORCED


# --- the account page ------------------------------------------------------------------------------

def two_browsers(world: World, app: object) -> tuple[TestClient, TestClient, str, User]:
    """Ann signed in twice (as in two browsers); returns both, the first one's CSRF token and Ann."""
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    here, there = TestClient(app), TestClient(app)
    csrf = sign_in(here, "ann@example.com")
    sign_in(there, "ann@example.com")
    return here, there, csrf, ann


def test_the_account_page_is_linked_and_lists_the_web_sessions(world, app):
    here, there, _csrf, ann = two_browsers(world, app)
    home = here.get("/").text
    assert 'href="/account"' in home
    page = here.get("/account")
    assert page.status_code == 200
    rows = re.findall(r"<tr( aria-current=\"true\")?>\s*<td>([^<]+)</td><td>([^<]+)</td>", page.text)
    assert len(rows) == 2 and sum(1 for r in rows if r[0]) == 1
    assert "This session" in page.text and len(re.findall(r'action="/account/sessions/\d+/revoke"', page.text)) == 1
    assert "2026-01-15 09:00 UTC" in page.text  # created
    assert 'href="/tokens"' in page.text
    password_form(page.text)


def test_revoking_another_session_signs_that_browser_out(world, app):
    here, there, csrf, _ann = two_browsers(world, app)
    page = here.get("/account").text
    other = re.search(r'action="/account/sessions/(\d+)/revoke"', page).group(1)
    r = here.post(f"/account/sessions/{other}/revoke", data={"csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 200 and "That session is signed out." in r.text
    assert "<html" not in r.text  # htmx gets the content only
    assert there.get("/", follow_redirects=False).headers["location"] == "/login"
    assert here.get("/", follow_redirects=False).status_code == 200


def test_revoking_this_session_is_signing_out(world, app):
    here, _there, csrf, ann = two_browsers(world, app)
    with world.ctx.sessions() as s:  # the first browser signed in first: its session is the older one
        mine = min(ws.id for ws in tenancy.active_sessions(s, user_id=ann.id, now=world.now))
    r = here.post(f"/account/sessions/{mine}/revoke", data={"csrf_token": csrf}, follow_redirects=False)
    assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert here.get("/", follow_redirects=False).headers["location"] == "/login"


def test_someone_elses_session_cannot_be_revoked(world, app):
    here, _there, csrf, _ann = two_browsers(world, app)
    bob = world.user("bob@example.com")
    bobs_browser = TestClient(app)
    sign_in(bobs_browser, "bob@example.com")
    with world.ctx.sessions() as s:
        [bobs] = tenancy.active_sessions(s, user_id=bob.id, now=world.now)
    r = here.post(f"/account/sessions/{bobs.id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404
    assert bobs_browser.get("/", follow_redirects=False).status_code == 200


def test_changing_the_password_on_the_account_page_keeps_this_session_and_the_tokens(world, app):
    here, there, csrf, ann = two_browsers(world, app)
    token = world.token(ann)
    r = change(here, csrf, next="/account?changed=1")
    assert (r.status_code, r.headers["location"]) == (303, "/account?changed=1")
    page = here.get(r.headers["location"])
    assert page.status_code == 200 and "Your password is changed." in page.text
    assert "This session" in page.text and not re.search(r'action="/account/sessions/\d+/revoke"', page.text)
    assert there.get("/", follow_redirects=False).headers["location"] == "/login"  # the other browser
    assert here.get("/api/v1/me", headers=auth(token)).status_code == 200  # the token
    assert post_login(TestClient(app), "ann@example.com", NEW).status_code == 303


def test_a_refusal_on_the_account_page_shows_the_account_page_again(world, app):
    here, there, csrf, _ann = two_browsers(world, app)
    r = change(here, csrf, new="short", next="/account?changed=1")
    assert r.status_code == 400 and "Your account" in r.text and "at least 8 characters" in r.text
    assert there.get("/", follow_redirects=False).status_code == 200  # nothing changed
