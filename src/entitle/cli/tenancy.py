"""People and organizations: first-run, admin, org, member, token."""

from __future__ import annotations

import secrets
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from entitle.catalog import services as catalog
from entitle.cli.common import (ORGANIZATION, DatabaseUrl, JsonOut, OrgRef, console_actor, context, err,
                                handles_errors, org_ref, out, print_json)
from entitle.db import reading, transaction
from entitle.errors import EntitleError
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Role, User

FIRST_ADMIN = "admin@localhost"
FIRST_ORG = "My organization"

admin_app = typer.Typer(help="Users: create issuer staff and organization admins.", no_args_is_help=True)
org_app = typer.Typer(help="Organizations (tenants).", no_args_is_help=True)
member_app = typer.Typer(help="Memberships of users in organizations.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens.", no_args_is_help=True)

Email = Annotated[str, typer.Option(help="The user's e-mail address.")]


def _user(session: Session, email: str) -> User:
    user = tenancy.user_by_email(session, email)
    if user is None:
        raise EntitleError("user_not_found", f"No user has the e-mail {email}; create one with "
                           "`entitle admin create`.", status=404, email=email)
    return user


@handles_errors
def first_run(
    url: Annotated[str, typer.Option(help="Where the server will answer.")] = "http://127.0.0.1:8000",
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Set up an empty installation once: an issuer admin, "My organization", the default catalog.

    Does nothing but print the URL when users already exist.
    """
    password = secrets.token_urlsafe(15)
    org_id: int | None = None
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        created = not s.scalar(select(exists().where(User.id.is_not(None))))
        if created:
            now, actor = ctx.clock.now(), console_actor()
            admin = tenancy.create_user(s, email=FIRST_ADMIN, password=password, now=now, is_issuer=True,
                                        must_change_password=True)
            org = tenancy.create_organization(s, name=FIRST_ORG, region="EU", actor=actor, now=now,
                                              owner=admin)
            catalog.load(s, catalog.parse(catalog.DEFAULT_CATALOG.read_text(),
                                          filename=catalog.DEFAULT_CATALOG.name), actor=actor, now=now)
            org_id = org.id
    if as_json:
        print_json({"url": url, "created": created} |
                   ({"email": FIRST_ADMIN, "password": password, "org_id": org_id} if created else {}))
        return
    if created:
        out.print(f"Entitle is set up: organization [bold]{FIRST_ORG}[/] (id {org_id}, region EU) "
                  "and the default catalog.")
        out.print(f"Sign in as [bold]{FIRST_ADMIN}[/] with the password [bold]{escape(password)}[/]",
                  highlight=False)
        out.print("The password is shown only this once; you will be asked to choose your own password "
                  "at the first sign-in.")
    out.print(f"Entitle will answer at {url}", markup=False)


@admin_app.command("create")
@handles_errors
def admin_create(
    email: Email,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          help=f"At least {tenancy.PASSWORD_MIN_LENGTH} characters; asked for "
                                               "when left out.")],
    issuer: Annotated[bool, typer.Option("--issuer", help="Issuer staff: catalog and minting.")] = False,
    org: Annotated[str | None, typer.Option(
        "--org", help=f"Also add the user to this organization: {ORGANIZATION.ways}.", show_default=False)] = None,
    role: Annotated[Role | None, typer.Option(help="The user's role in --org.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create a user, optionally adding them to an organization."""
    if (org is None) != (role is None):
        raise EntitleError("org_and_role_together", "Give --org and --role together to add the user "
                           "to an organization, or neither.")
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        now, actor = ctx.clock.now(), console_actor()
        org_id = org_ref(s, org) if org is not None else None
        user = tenancy.create_user(s, email=email, password=password, now=now, is_issuer=issuer)
        if org_id is not None and role is not None:
            tenancy.add_member(s, org_id=org_id, user=user, role=role, actor=actor, now=now)
        result = {"id": user.id, "email": user.email, "issuer": user.is_issuer,
                  "org_id": org_id, "role": role.value if role else None}
    if as_json:
        print_json(result)
    else:
        where = f" as {role.value} of organization {org_id}" if org_id is not None and role else ""
        out.print(f"Created user {result['email']} (id {result['id']}"
                  f"{', issuer' if issuer else ''}){where}.", highlight=False, markup=False)


@admin_app.command("password")
@handles_errors
def admin_password(
    email: Email,
    password: Annotated[str, typer.Option(prompt="New password", hide_input=True, confirmation_prompt=True,
                                          help=f"At least {tenancy.PASSWORD_MIN_LENGTH} characters; asked for "
                                               "when left out.")],
    change_required: Annotated[bool, typer.Option(
        "--change-required/--no-change-required",
        help="Whether the user must choose their own password at the next web sign-in.")] = True,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Set any user's password, without the current one (the way back in for someone locked out).

    The user's web sessions are signed out; their API tokens keep working.
    """
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        user = _user(s, email)
        ended = tenancy.reset_password(s, user=user, new_password=password, now=ctx.clock.now(),
                                       must_change=change_required)
        result = {"email": user.email, "web_sessions_ended": ended, "must_change_password": change_required}
    if as_json:
        print_json(result)
        return
    sessions = "1 web session was" if ended == 1 else f"{ended} web sessions were"
    then = (" They will be asked to choose their own password at the next sign-in." if change_required else "")
    out.print(f"The password of {result['email']} is set; {sessions} signed out.{then}",
              highlight=False, markup=False)


@org_app.command("create")
@handles_errors
def org_create(
    name: Annotated[str, typer.Option(help="The organization's name.")],
    region: Annotated[str, typer.Option(help=f"Sales region: {', '.join(tenancy.REGIONS)}.")],
    owner: Annotated[str | None, typer.Option(help="E-mail of an existing user to make owner.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create an organization."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org = tenancy.create_organization(s, name=name, region=region, actor=console_actor(),
                                          now=ctx.clock.now(), owner=_user(s, owner) if owner else None)
        result = tenancy.org_to_dict(org) | {"owner": owner}
    if as_json:
        print_json(result)
    else:
        out.print(f"Created organization {result['name']} (id {result['id']}, region {result['region']}).",
                  highlight=False, markup=False)


@org_app.command("list")
@handles_errors
def org_list(database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """List every organization."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        rows = [tenancy.org_to_dict(o) | {"issuer": o.is_issuer}
                for o in tenancy.organizations_of(s, console_actor())]
    if as_json:
        print_json(rows)
        return
    table = Table("id", "name", "region", "created", "")
    for r in rows:
        table.add_row(str(r["id"]), escape(r["name"]), r["region"], r["created_at"], "issuer" if r["issuer"] else "")
    out.print(table)


@member_app.command("add")
@handles_errors
def member_add(
    org: OrgRef,
    email: Email,
    role: Annotated[Role, typer.Option(help="owner, admin (licensing) or viewer (read only).")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Add a user to an organization, or change their role there."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        actor = console_actor()
        m = tenancy.add_member(s, org_id=org_ref(s, org), user=_user(s, email), role=role, actor=actor,
                               now=ctx.clock.now())
        result = {"org_id": m.org_id, "email": email.strip().lower(), "role": m.role}
    if as_json:
        print_json(result)
    else:
        out.print(f"{result['email']} is now {result['role']} of organization {result['org_id']}.",
                  highlight=False, markup=False)


@member_app.command("remove")
@handles_errors
def member_remove(
    org: OrgRef,
    email: Email,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Take a user out of an organization (their account and other organizations stay)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        m = tenancy.remove_member(s, org_id=org_ref(s, org), email=email, actor=console_actor(),
                                  now=ctx.clock.now())
        result = {"org_id": m.org_id, "email": email.strip().lower(), "role": m.role}
    if as_json:
        print_json(result)
    else:
        out.print(f"{result['email']} (was {result['role']}) is no longer a member of organization "
                  f"{result['org_id']}.", highlight=False, markup=False)


@token_app.command("create")
@handles_errors
def token_create(
    email: Email,
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, help="Asked for when left out.")],
    name: Annotated[str, typer.Option(help="A label to recognise the token by.")] = "cli",
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create an API token for a user (it is shown once, only its hash is kept)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        user = tenancy.authenticate(s, email=email, password=password)
        secret, row = tenancy.create_token(s, user=user, name=name, now=ctx.clock.now())
        result = {"id": row.id, "name": row.name, "token": secret}
    if as_json:
        print_json(result)
    else:
        typer.echo(result["token"])
        err.print("Store it now: it is not shown again.", style="dim")
