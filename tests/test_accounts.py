"""Passwords and accounts: changing your own password, a console reset, web sessions and API tokens
(the services, the REST API and `entitle admin password`)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import PASSWORD, World, auth
from entitle.cli.main import app as cli_app
from entitle.config import get_settings
from entitle.context import Context
from entitle.db import transaction
from entitle.errors import EntitleError
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import User, WebSession
from helpers import error_code, person

NEW = "a brand new passphrase"
Cli = Callable[..., Result]


def start_sessions(world: World, user: User, n: int) -> list[int]:
    """``n`` signed-in web sessions of the user (as many browsers), oldest first."""
    ids = []
    with transaction(world.ctx.sessions) as s:
        for _ in range(n):
            new = tenancy.start_session(s, user=s.get(User, user.id), now=world.now)
            ids.append(tenancy.resolve_session(s, new.cookie, now=world.now).id)
    return ids


def signed_in(world: World, user: User) -> set[int]:
    with world.ctx.sessions() as s:
        return {ws.id for ws in tenancy.active_sessions(s, user_id=user.id, now=world.now)}


def stored(world: World, user: User) -> User:
    with world.ctx.sessions() as s:
        return s.get(User, user.id)


def password_works(world: World, email: str, password: str) -> bool:
    with world.ctx.sessions() as s:
        try:
            tenancy.authenticate(s, email=email, password=password)
        except EntitleError:
            return False
    return True


def change(world: World, user: User, current: str, new: str, keep: int | None = None) -> int:
    with transaction(world.ctx.sessions) as s:
        return tenancy.change_password(s, user=s.get(User, user.id), current_password=current, new_password=new,
                                       now=world.now, keep_session_id=keep)


def refusal(call: Callable[[], object]) -> EntitleError:
    with pytest.raises(EntitleError) as caught:
        call()
    return caught.value


# --- the rules -------------------------------------------------------------------------------------

def test_one_minimum_length_for_creating_and_changing(world):
    short, enough = "x" * (tenancy.PASSWORD_MIN_LENGTH - 1), "y" * tenancy.PASSWORD_MIN_LENGTH
    with world.ctx.sessions() as s:
        err = refusal(lambda: tenancy.create_user(s, email="short@example.com", password=short, now=world.now))
    assert err.code == "password_too_short" and f"at least {tenancy.PASSWORD_MIN_LENGTH}" in err.message
    assert err.detail == {"minimum": tenancy.PASSWORD_MIN_LENGTH, "length": len(short)}

    ann = world.user("ann@example.com")
    err = refusal(lambda: change(world, ann, PASSWORD, short))
    assert err.code == "password_too_short"
    change(world, ann, PASSWORD, enough)
    assert password_works(world, "ann@example.com", enough)


def test_a_password_longer_than_the_maximum_is_refused(world):
    ann = world.user("ann@example.com")
    err = refusal(lambda: change(world, ann, PASSWORD, "z" * (tenancy.PASSWORD_MAX_LENGTH + 1)))
    assert err.code == "password_too_long" and err.detail["maximum"] == tenancy.PASSWORD_MAX_LENGTH


def test_the_current_password_must_be_the_right_one(world):
    ann = world.user("ann@example.com")
    err = refusal(lambda: change(world, ann, "not my password", NEW))
    assert (err.code, err.status) == ("password_current_wrong", 403)
    assert "current password is wrong" in err.message
    assert password_works(world, "ann@example.com", PASSWORD)
    assert not password_works(world, "ann@example.com", NEW)


def test_the_new_password_must_differ_from_the_old_one(world):
    ann = world.user("ann@example.com")
    err = refusal(lambda: change(world, ann, PASSWORD, PASSWORD))
    assert (err.code, err.status) == ("password_unchanged", 400)
    assert stored(world, ann).password_changed_at is None


def test_refusals_come_in_the_documented_order(world):
    # Length first (no hashing), then the current password, then "unchanged".
    ann = world.user("ann@example.com")
    assert refusal(lambda: change(world, ann, "wrong", "short")).code == "password_too_short"
    assert refusal(lambda: change(world, ann, "wrong", PASSWORD)).code == "password_current_wrong"


def test_changing_ends_the_other_web_sessions_but_keeps_this_one_and_the_tokens(world):
    ann = world.user("ann@example.com")
    bob = world.user("bob@example.com")
    token = world.token(ann)
    this, other, third = start_sessions(world, ann, 3)
    [bobs] = start_sessions(world, bob, 1)

    assert change(world, ann, PASSWORD, NEW, keep=this) == 2

    assert signed_in(world, ann) == {this}
    assert signed_in(world, bob) == {bobs}  # nobody else's
    with world.ctx.sessions() as s:
        assert tenancy.user_for_token(s, token).id == ann.id
        ended = {ws.id: ws.revoked_at for ws in s.scalars(select(WebSession).where(WebSession.id.in_([other, third])))}
    assert ended == {other: world.now, third: world.now}
    assert password_works(world, "ann@example.com", NEW) and not password_works(world, "ann@example.com", PASSWORD)
    assert stored(world, ann).password_changed_at == world.now


def test_changing_your_own_password_clears_must_change(world):
    with transaction(world.ctx.sessions) as s:
        ann = tenancy.create_user(s, email="ann@example.com", password=PASSWORD, now=world.now,
                                  must_change_password=True)
    assert stored(world, ann).must_change_password is True
    change(world, ann, PASSWORD, NEW)
    assert stored(world, ann).must_change_password is False


def test_a_reset_ends_every_web_session_sets_must_change_and_keeps_tokens(world):
    ann = world.user("ann@example.com")
    token = world.token(ann)
    start_sessions(world, ann, 2)
    with transaction(world.ctx.sessions) as s:
        ended = tenancy.reset_password(s, user=s.get(User, ann.id), new_password=NEW, now=world.now)
    assert ended == 2 and signed_in(world, ann) == set()
    assert stored(world, ann).must_change_password is True
    assert password_works(world, "ann@example.com", NEW)
    with world.ctx.sessions() as s:
        assert tenancy.user_for_token(s, token) is not None


def test_expired_sessions_are_not_listed_and_not_counted(world):
    ann = world.user("ann@example.com")
    [old] = start_sessions(world, ann, 1)
    world.ctx.clock.advance(timedelta(seconds=world.ctx.settings.session_max_age_seconds + 1))
    [new] = start_sessions(world, ann, 1)
    assert signed_in(world, ann) == {new}
    assert change(world, ann, PASSWORD, NEW, keep=new) == 0
    assert old not in signed_in(world, ann)


# --- the API -----------------------------------------------------------------------------------------

def test_api_changes_the_password_and_signs_out_every_web_session(world, client):
    ann = person(world, "ann@example.com")
    start_sessions(world, ann.user, 2)
    r = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW},
                    headers=auth(ann.token))
    assert r.status_code == 200, r.text
    assert r.json() == {"password_changed_at": world.now.isoformat(), "web_sessions_ended": 2}
    assert signed_in(world, ann.user) == set()
    # The token that asked keeps working; the new password gets a new token, the old does not.
    assert client.get("/api/v1/me", headers=auth(ann.token)).status_code == 200
    assert client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": NEW}).status_code == 201
    old = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": PASSWORD})
    assert (old.status_code, error_code(old)) == (401, "credentials_invalid")


@pytest.mark.parametrize(("current", "new", "status", "code"), [
    (PASSWORD, "short", 400, "password_too_short"),
    (PASSWORD, PASSWORD, 400, "password_unchanged"),
    ("not my password", NEW, 403, "password_current_wrong"),
    (PASSWORD, "x" * (tenancy.PASSWORD_MAX_LENGTH + 1), 422, "invalid_request"),
])
def test_api_password_refusals_have_the_error_shape(world, client, current, new, status, code):
    ann = person(world, "ann@example.com")
    r = client.post("/api/v1/auth/password", json={"current_password": current, "new_password": new},
                    headers=auth(ann.token))
    assert r.status_code == status, r.text
    body = r.json()["error"]
    assert body["code"] == code and body["message"]
    assert password_works(world, "ann@example.com", PASSWORD)


def test_api_password_change_needs_a_token(world, client):
    world.user("ann@example.com")
    r = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW})
    assert (r.status_code, error_code(r)) == (401, "authentication_required")


def test_api_lists_and_revokes_your_web_sessions_only(world, client):
    ann, bob = person(world, "ann@example.com"), person(world, "bob@example.com")
    first, second = start_sessions(world, ann.user, 2)
    [bobs] = start_sessions(world, bob.user, 1)

    listed = client.get("/api/v1/auth/sessions", headers=auth(ann.token)).json()["items"]
    assert [s["id"] for s in listed] == [second, first]  # newest first
    assert listed[0]["revoked_at"] is None and listed[0]["expires_at"] > listed[0]["created_at"]

    r = client.post(f"/api/v1/auth/sessions/{first}/revoke", headers=auth(ann.token))
    assert r.status_code == 200 and r.json()["revoked_at"] == world.now.isoformat()
    assert signed_in(world, ann.user) == {second}
    world.ctx.clock.advance(timedelta(minutes=5))
    again = client.post(f"/api/v1/auth/sessions/{first}/revoke", headers=auth(ann.token))
    assert again.json()["revoked_at"] == r.json()["revoked_at"]  # again: no change

    theirs = client.post(f"/api/v1/auth/sessions/{bobs}/revoke", headers=auth(ann.token))
    assert (theirs.status_code, error_code(theirs)) == (404, "session_not_found")
    assert signed_in(world, bob.user) == {bobs}


def test_api_lists_and_revokes_your_tokens_only(world, client):
    ann, bob = person(world, "ann@example.com"), person(world, "bob@example.com")
    with transaction(world.ctx.sessions) as s:
        deploy, row = tenancy.create_token(s, user=s.get(User, ann.user.id), name="deploy", now=world.now)
    listed = client.get("/api/v1/auth/tokens", headers=auth(ann.token)).json()["items"]
    assert [t["name"] for t in listed] == ["deploy", "test"] and listed[0]["id"] == row.id  # newest first
    assert all(t["prefix"] and t["revoked_at"] is None for t in listed)
    assert deploy not in json.dumps(listed)  # a token is shown once, at its creation

    r = client.post(f"/api/v1/auth/tokens/{row.id}/revoke", headers=auth(ann.token))
    assert r.status_code == 200 and r.json()["revoked_at"] == world.now.isoformat()
    assert client.get("/api/v1/me", headers=auth(deploy)).status_code == 401
    assert [t["name"] for t in client.get("/api/v1/auth/tokens", headers=auth(ann.token)).json()["items"]] == ["test"]

    with world.ctx.sessions() as s:
        bobs_id = tenancy.active_tokens(s, user_id=bob.user.id)[0].id
    theirs = client.post(f"/api/v1/auth/tokens/{bobs_id}/revoke", headers=auth(ann.token))
    assert (theirs.status_code, error_code(theirs)) == (404, "token_not_found")
    assert client.get("/api/v1/me", headers=auth(bob.token)).status_code == 200


def test_api_keeps_working_for_a_user_who_must_change_their_password(world, client):
    # docs/decisions.md: only the web UI insists; a token was created deliberately.
    with transaction(world.ctx.sessions) as s:
        ann = tenancy.create_user(s, email="ann@example.com", password=PASSWORD, now=world.now,
                                  must_change_password=True)
    token = world.token(ann)
    me = client.get("/api/v1/me", headers=auth(token))
    assert me.status_code == 200 and me.json()["must_change_password"] is True
    r = client.post("/api/v1/auth/password", json={"current_password": PASSWORD, "new_password": NEW},
                    headers=auth(token))
    assert r.status_code == 200
    assert client.get("/api/v1/me", headers=auth(token)).json()["must_change_password"] is False


# --- the console -------------------------------------------------------------------------------------

@pytest.fixture
def cli(ctx: Context, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """`entitle ARGS --database-url …` at the tests' moment (the sessions' clock), with typed input."""
    def run(*args: str, input: str | None = None) -> Result:  # noqa: A002 - CliRunner's name
        return CliRunner().invoke(cli_app, [*args, "--database-url", ctx.settings.database_url], input=input,
                                  prog_name="entitle")

    monkeypatch.setenv("ENTITLE_NOW", ctx.clock.now().isoformat())
    get_settings.cache_clear()  # the console reads ENTITLE_NOW once per process
    yield run
    get_settings.cache_clear()


def test_console_reset_of_another_user_ends_their_sessions_and_sets_must_change(world, cli):
    ann = world.user("ann@example.com")
    token = world.token(ann)
    start_sessions(world, ann, 2)
    r = cli("admin", "password", "--email", "Ann@Example.com", "--password", NEW, "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout) == {"email": "ann@example.com", "web_sessions_ended": 2, "must_change_password": True}
    assert signed_in(world, ann) == set()
    assert stored(world, ann).must_change_password is True
    assert password_works(world, "ann@example.com", NEW)
    with world.ctx.sessions() as s:
        assert tenancy.user_for_token(s, token) is not None


def test_console_reset_prompts_twice_hidden_and_says_what_happened(world, cli):
    world.user("ann@example.com")
    r = cli("admin", "password", "--email", "ann@example.com", input=f"{NEW}\n{NEW}\n")
    assert r.exit_code == 0, r.output
    assert "New password" in r.output and "Repeat for confirmation" in r.output
    assert NEW not in r.output  # hidden
    assert ("The password of ann@example.com is set; 0 web sessions were signed out. They will be asked to "
            "choose their own password at the next sign-in.") in r.stdout
    assert password_works(world, "ann@example.com", NEW)


def test_console_reset_with_a_mistyped_confirmation_changes_nothing(world, cli):
    world.user("ann@example.com")
    r = cli("admin", "password", "--email", "ann@example.com", input=f"{NEW}\n{NEW}x\n")
    assert r.exit_code != 0
    assert password_works(world, "ann@example.com", PASSWORD)


def test_console_reset_can_leave_the_password_as_it_is_set(world, cli):
    ann = world.user("ann@example.com")
    r = cli("admin", "password", "--email", "ann@example.com", "--password", NEW, "--no-change-required")
    assert r.exit_code == 0, r.output
    assert "asked to choose" not in r.stdout
    assert stored(world, ann).must_change_password is False


@pytest.mark.parametrize(("args", "code"), [
    (("--email", "nobody@example.com", "--password", NEW), "user_not_found"),
    (("--email", "ann@example.com", "--password", "short"), "password_too_short"),
])
def test_console_reset_refusals(world, cli, args, code):
    world.user("ann@example.com")
    r = cli("admin", "password", *args)
    assert r.exit_code == 1 and r.stdout == "" and f"error {code}:" in r.stderr
    assert password_works(world, "ann@example.com", PASSWORD)


def test_first_run_admin_must_choose_their_own_password(ctx, cli):
    r = cli("first-run", "--json")
    assert r.exit_code == 0, r.output
    with ctx.sessions() as s:
        admin = tenancy.user_by_email(s, json.loads(r.stdout)["email"])
        assert admin.must_change_password is True
