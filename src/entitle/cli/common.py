"""What every command shares: the database option, the context, output, and error handling.

Commands stay thin: open a context, run services in one transaction, print. Data goes to stdout
(only JSON with ``--json``); errors and progress go to stderr.

Every command module imports this one, the offline ones too (``license verify``…): it imports
SQLAlchemy, the models and rich only where they are used, so that those pay for none of them.
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import typer

from entitle.context import Context, build
from entitle.errors import EntitleError, NotFound

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from sqlalchemy import ColumnElement
    from sqlalchemy.orm import Session

    from entitle.actors import Actor
    from entitle.config import Settings

DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="Database to use; overrides ENTITLE_DATABASE_URL.", show_default=False)]
JsonOut = Annotated[bool, typer.Option("--json", help="Print only JSON on stdout.")]

P = ParamSpec("P")
R = TypeVar("R")


@functools.cache
def console(*, stderr: bool = False) -> Console:
    """The rich console of stdout (``out``) or stderr (``err``), made on first use."""
    from rich.console import Console

    # soft_wrap: a message is one line however narrow the terminal, so scripts can grep it.
    return Console(stderr=stderr, soft_wrap=True)


def __getattr__(name: str) -> Console:
    # `from entitle.cli.common import out, err`: the consoles, made when a module asks for them.
    if name in ("out", "err"):
        return console(stderr=name == "err")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def settings_for(database_url: str | None) -> Settings:
    """Settings from the environment, with ``--database-url`` taking precedence.

    Built fresh rather than mutating the environment, so that one process (a test run) can point
    successive commands at different databases.
    """
    from entitle.config import get_settings

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
    from entitle.actors import operator

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
        from rich.markup import escape

        err = console(stderr=True)
        # escape: messages quote names people chose ("[red] team"), which are no markup.
        err.print(f"[bold red]error[/] [bold]{error.code}[/]: {escape(error.message)}", highlight=False)
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
        except Exception as exc:
            refusal = database_refusal(exc)
            if refusal is None:
                raise
            fail(refusal, as_json=as_json)
        raise AssertionError("unreachable")  # fail() always exits

    return wrapper


def database_refusal(exc: BaseException) -> EntitleError | None:
    """What a database error tells the user to do; None for any other exception. A command that
    opened no database has not imported SQLAlchemy, and so cannot have raised one of its errors."""
    if "sqlalchemy" not in sys.modules:
        return None
    from sqlalchemy.exc import OperationalError, ProgrammingError

    if isinstance(exc, OperationalError):
        return EntitleError("database_unavailable",
                            "The database cannot be reached or used; check --database-url "
                            f"(or ENTITLE_DATABASE_URL) and run `entitle migrate`. ({exc.orig})")
    if isinstance(exc, ProgrammingError):
        return EntitleError("database_not_migrated",
                            f"The database schema is missing or old; run `entitle migrate`. ({exc.orig})")
    return None


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


# --- naming things: one way for every command ----------------------------------------------------

# A name that matches nothing is refused with at most this many of the candidates ("and N more").
CANDIDATES_SHOWN = 10
# A reference of more digits than a 64-bit id can hold is no id; it may still be a name.
MAX_ID = 2**63 - 1

M = TypeVar("M")


@dataclass(frozen=True)
class Kind:
    """A kind of thing an option names (``--org``, ``--site``…): by its id, else its exact ``key``
    (a uid, for kinds that have one), else its exact name. Its help and refusals read the same in
    every command."""

    what: str  # "organization": the codes organization_not_found, organization_ambiguous
    plural: str
    option: str  # "org" for --org: also the key of the ref in a refusal's detail
    listing: str  # the command that lists them
    key: str | None = None

    @property
    def ways(self) -> str:
        return f"its id, its {self.key} or its exact name" if self.key else "its id or its exact name"

    @property
    def help(self) -> str:
        return f"{self.what.capitalize()}: {self.ways} (see `{self.listing}`)."


def named(session: Session, model: type[M], kind: Kind, ref: str, *,
          scope: Sequence[ColumnElement[bool]] = (), within: str = "") -> M:
    """The row of ``model`` among ``scope`` that ``ref`` names: the one with that id, else with
    that exact key, else with that exact name. A reference of digits is the id when such a row
    exists in the scope, else a key or a name like any other text. A name several rows share is
    refused with their ids; one that matches nothing with the candidates. ``within`` says in the
    sentences whose rows they are (" of organization 2")."""
    from sqlalchemy import func, select

    table: Any = model
    ref = ref.strip()
    digits = ref.isascii() and ref.isdigit()
    if digits and int(ref) <= MAX_ID:
        found = session.scalars(select(model).where(table.id == int(ref), *scope)).one_or_none()
        if found is not None:
            return found
    by_name = (table.name, "are named", f"the id or the {kind.key}" if kind.key else "the id")
    by_key = [(getattr(table, kind.key), f"have the {kind.key}", "the id")] if kind.key else []
    for column, matching, instead in [*by_key, by_name]:
        rows = list(session.scalars(select(model).where(column == ref, *scope).order_by(table.id)))
        if len(rows) == 1:
            return rows[0]
        if rows:
            ids = [row.id for row in rows]
            raise EntitleError(f"{kind.what}_ambiguous",
                               f"{len(ids)} {kind.plural}{within} {matching} {ref!r} "
                               f"(ids {_bounded([str(i) for i in ids])}); give {instead} instead.",
                               **{kind.option: ref}, ids=ids)
    total = session.scalar(select(func.count()).select_from(model).where(*scope)) or 0
    shown = session.scalars(select(model).where(*scope).order_by(table.id).limit(CANDIDATES_SHOWN))
    labels = [f"{row.id} {getattr(row, kind.key)} ({row.name})" if kind.key else f"{row.id} {row.name}"
              for row in shown]
    tried = (["the id"] if digits else []) + ([f"the {kind.key}"] if kind.key else [])
    matching = f"has {', '.join(tried[:-1] + [tried[-1] + ' or the name'])}" if tried else "is named"
    raise NotFound(kind.what, f"No {kind.what}{within} {matching} {ref!r}; {kind.plural}{within}: "
                   f"{_bounded(labels, total) or 'none'} (see `{kind.listing}`).", **{kind.option: ref})


def _bounded(items: list[str], total: int | None = None) -> str:
    """``items`` joined: at most CANDIDATES_SHOWN of them, then how many more (of ``total``)."""
    total = len(items) if total is None else total
    shown = items[:CANDIDATES_SHOWN]
    return ", ".join(shown) + (f" and {total - len(shown)} more" if total > len(shown) else "")


ORGANIZATION = Kind("organization", "organizations", "org", "entitle org list")
OrgRef = Annotated[str, typer.Option("--org", help=ORGANIZATION.help)]


def org_ref(session: Session, ref: str) -> int:
    """The id of the organization ``ref`` names (see ``named``), if the console may act in it."""
    from entitle.tenancy import services as tenancy
    from entitle.tenancy.models import Organization

    org = named(session, Organization, ORGANIZATION, ref)
    return tenancy.get_organization(session, org.id, actor=console_actor()).id


def read_text_file(path: Path) -> str:
    """A UTF-8 text file the user named (a license, a key ring, a system file), or a refusal
    that names it: ``file_unreadable``."""
    try:
        return path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise EntitleError("file_unreadable", f"Cannot read {path}: {exc}") from None


def plain(text: str) -> None:
    console().print(text, markup=False, highlight=False)


def day(iso: str | None) -> str:
    return datetime.fromisoformat(iso).strftime("%Y-%m-%d") if iso else "-"


def make_table(title: str | None, *columns: str, caption: str | None = None) -> Table:
    """Columns marked ``=`` (ids, codes, times) never wrap and ``>`` (numbers, right-aligned)
    neither; the others fold on narrow terminals. The tables fit 80 columns; --json has it all."""
    from rich import box
    from rich.table import Table

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
