"""An organization's history, and the check that nobody edited it (R-CORE-6)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from entitle.cli.common import DatabaseUrl, JsonOut, OrgRef, context, handles_errors, org_ref, out, print_json
from entitle.db import reading
from entitle.history import services as history


@handles_errors
def show_history(
    org: OrgRef,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many entries, newest first.")] = 50,
    verify: Annotated[bool, typer.Option("--verify", help="Check the hash chain instead; exit 1 if "
                                         "an entry was changed, removed or inserted.")] = False,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Show an organization's history, or verify its hash chain."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        if verify:
            result = history.verify(s, org_id)
        else:
            entries = [history.to_dict(e) for e in history.page(s, org_id, limit=limit)]
    if verify:
        _report(org_id, result, as_json=as_json)
    elif as_json:
        print_json(entries)
    else:
        _table(org_id, entries)


def _report(org: int, result: history.Verification, *, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        out.print(f"OK: the history of organization {org} is intact ({result.checked} entries checked).",
                  markup=False, highlight=False)
    else:
        out.print(f"BROKEN: the history of organization {org} fails at entry seq {result.first_bad_seq}: "
                  f"{result.reason} ({result.checked} entries before it are intact).",
                  markup=False, highlight=False)
    if not result.ok:
        raise typer.Exit(1)


def _table(org: int, entries: list[dict[str, object]]) -> None:
    table = Table("seq", "at (UTC)", "actor", "action", "object", "change",
                  title=f"History of organization {org}, newest first", title_justify="left")
    for e in entries:
        change = " -> ".join(_compact(v) for v in (e["before"], e["after"]) if v is not None)
        table.add_row(str(e["seq"]), str(e["at"])[:19].replace("T", " "), escape(str(e["actor"])),
                      str(e["action"]), escape(f"{e['object_type']} {e['object_id']}"), change)
    out.print(table)


def _compact(value: object) -> str:
    if isinstance(value, dict):
        return escape(", ".join(f"{k}={_scalar(v)}" for k, v in value.items()))
    return escape(_scalar(value))


def _scalar(value: object) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)
