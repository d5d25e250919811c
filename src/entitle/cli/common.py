"""What every command shares: the database option, the context, output, and error handling.

Commands stay thin: open a context, run services in one transaction, print. Data goes to stdout
(only JSON with ``--json``); errors and progress go to stderr.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import IO, Annotated, Any, ParamSpec, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table
from sqlalchemy import select
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.orm import Session

from entitle.actors import Actor, operator
from entitle.config import Settings, get_settings
from entitle.context import Context, build
from entitle.errors import EntitleError, NotFound
from entitle.tenancy import services as tenancy
from entitle.tenancy.models import Organization

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="Database to use; overrides ENTITLE_DATABASE_URL.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]

# soft_wrap: a message is one line however narrow the terminal, so scripts can grep it.
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

P = ParamSpec("P")
R = TypeVar("R")


def settings_for(database_url: str | None) -> Settings:
    """Settings from the environment, with ``--database-url`` taking precedence.

    Built fresh rather than mutating the environment, so that one process (a test run) can point
    successive commands at different databases.
    """
    base = get_settings()
    return base.model_copy(update={"database_url": database_url}) if database_url else base


@contextmanager
def context(database_url: str | None) -> Iterator[Context]:
    ctx = build(settings_for(database_url))
    try:
        yield ctx
    finally:
        ctx.engine.dispose()


def console_actor() -> Actor:
    """The operator at the server's console: acts everywhere, named in history by OS user."""
    try:
        who = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        who = str(os.getuid())
    return operator(f"cli:{who}")


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def fail(error: EntitleError, *, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(error.to_dict(), default=str), err=True)
    else:
        err.print(f"[bold red]error[/] [bold]{error.code}[/]: {error.message}", highlight=False)
        for name, value in error.detail.items():
            if value not in (None, [], {}):
                err.print(f"  {name}: {value}", highlight=False, markup=False)
    raise typer.Exit(1)


def handles_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Turn a refusal into its code and message on stderr and exit status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        as_json = bool(kwargs.get("as_json"))
        try:
            return command(*args, **kwargs)
        except EntitleError as exc:
            fail(exc, as_json=as_json)
        except OperationalError as exc:
            fail(EntitleError("database_unavailable",
                              "The database cannot be reached or used; check --database-url "
                              f"(or ENTITLE_DATABASE_URL) and run `entitle migrate`. ({exc.orig})"),
                 as_json=as_json)
        except ProgrammingError as exc:
            fail(EntitleError("database_not_migrated",
                              f"The database schema is missing or old; run `entitle migrate`. ({exc.orig})"),
                 as_json=as_json)
        raise AssertionError("unreachable")  # fail() always exits

    return wrapper


@contextmanager
def staged_file(target: Path, *, undone: str, saved: str, newline: str | None = None) -> Iterator[IO[str]]:
    """A file next to ``target`` that becomes ``target`` only if the block succeeds (the block
    commits what the file describes): a file that cannot be written leaves nothing in the
    database, and nothing is left on disk for a transaction that did not commit. ``undone`` and
    ``saved`` say what happened in the user's terms ("no keys were minted", "The keys were minted
    and saved in")."""
    if not target.parent.is_dir():
        raise EntitleError("out_directory_missing", f"The directory {target.parent} does not exist; "
                           "create it or choose another --out.", out=str(target))
    try:
        f = tempfile.NamedTemporaryFile("w", newline=newline, encoding="utf-8", dir=target.parent,
                                        prefix=f".{target.name}.", suffix=".part", delete=False)
    except OSError as exc:
        raise EntitleError("out_unwritable", f"Cannot write to {target.parent}: {exc.strerror}.",
                           out=str(target)) from exc
    staged = Path(f.name)
    try:
        with f:
            yield f
    except BaseException as exc:
        staged.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise EntitleError("out_write_failed", f"Writing {target} failed ({exc.strerror or exc}); "
                               f"{undone}.", out=str(target)) from exc
        raise
    try:
        os.replace(staged, target)
    except OSError as exc:
        raise EntitleError("out_rename_failed", f"{saved} {staged}, but it could not be renamed to "
                           f"{target} ({exc.strerror}); rename it by hand.",
                           staged=str(staged), out=str(target)) from exc


# --- shared by the licensing-model commands (AXIS, My2N) ---------------------------------------

def org_ref(session: Session, ref: str) -> int:
    """The organization by id, else by its exact name (a name two organizations share is refused)."""
    actor = console_actor()
    ref = ref.strip()
    if ref.isdigit() and session.get(Organization, int(ref)) is not None:
        return tenancy.get_organization(session, int(ref), actor=actor).id
    ids = list(session.scalars(select(Organization.id).where(Organization.name == ref).order_by(Organization.id)))
    if len(ids) > 1:
        raise EntitleError("organization_ambiguous",
                           f"{len(ids)} organizations are named {ref!r}; give the id instead (see `entitle org list`).",
                           org=ref, ids=ids)
    if not ids:
        raise NotFound("organization", org=ref)
    return tenancy.get_organization(session, ids[0], actor=actor).id


def plain(text: str) -> None:
    out.print(text, markup=False, highlight=False)


def day(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d") if iso else "-"


def make_table(title: str | None, *columns: str, caption: str | None = None) -> Table:
    """Columns marked ``=`` (ids, codes, times) never wrap and ``>`` (numbers, right-aligned)
    neither; the others fold on narrow terminals. The tables fit 80 columns; --json has it all."""
    # One space between columns (the box's own separator), so that the wide tables fit too.
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left", box=box.SIMPLE_HEAD,
                  padding=(0, 0, 0, 0), show_edge=False)
    for column in columns:
        name = column.rstrip("=>")
        fixed = column.endswith(("=", ">"))
        table.add_column(name, no_wrap=fixed, overflow="ellipsis" if fixed else "fold",
                         justify="right" if column.endswith(">") else "left",
                         min_width=None if fixed else min(len(name), 12))
    return table
