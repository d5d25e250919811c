"""An organization's history, the check that nobody edited it, and its export for an auditor
(R-CORE-6, docs/security.md "History tamper-evidence").

``--verify-export`` runs offline, with no database: it imports neither SQLAlchemy nor the models.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from entitle.cli.common import (ORGANIZATION, DatabaseUrl, JsonOut, context, handles_errors, org_ref, out,
                                plain, print_json, read_text_file, staged_file)
from entitle.errors import EntitleError

if TYPE_CHECKING:
    from entitle.history import services as history
    from entitle.history.audit import Audit


@handles_errors
def show_history(
    org: Annotated[str | None, typer.Option("--org", help=ORGANIZATION.help + " Not needed with --verify-export.",
                                            show_default=False)] = None,
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many entries, newest first.")] = 50,
    verify: Annotated[bool, typer.Option("--verify", help="Check the chain instead: every link, its key check "
                                         "and the head; exit 1 if an entry was changed, removed or inserted.")] = False,
    export: Annotated[Path | None, typer.Option(
        "--export", metavar="FILE", dir_okay=False,
        help="Write the history for an auditor: every entry, the signed checkpoints with a new one of the "
             "head, and the issuer's public key ring. Refused, with nothing signed, if the chain does not "
             "verify.")] = None,
    verify_export: Annotated[Path | None, typer.Option(
        "--verify-export", metavar="FILE", dir_okay=False,
        help="Verify an export offline (no database): its chain, and its checkpoints' signatures against "
             "--public-keys; exit 1 if anything is wrong.")] = None,
    public_keys: Annotated[Path | None, typer.Option(
        "--public-keys", metavar="RING", help="With --verify-export: the issuer's key ring you trust "
        "(`entitle keys signing export`, GET /api/v1/keyring), not the one inside the export.")] = None,
    previous: Annotated[Path | None, typer.Option(
        "--previous", metavar="FILE", help="With --verify-export: an earlier export of the same organization; "
        "checks that the history only grew since.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Show an organization's history, verify its chain, export it for an auditor, or verify an export offline."""
    if sum((verify, export is not None, verify_export is not None)) > 1:
        raise EntitleError("options_conflict", "Choose one of --verify, --export and --verify-export.")
    if verify_export is not None:
        _verify_export(verify_export, public_keys, previous, as_json=as_json)
        return
    if public_keys is not None or previous is not None:
        raise EntitleError("options_conflict", "--public-keys and --previous go with --verify-export.")
    if org is None:
        raise EntitleError("org_required", "Name the organization with --org (its id or its exact name).")
    from entitle.db import reading
    from entitle.history import sentences
    from entitle.history import services as history

    with context(database_url) as ctx:
        with reading(ctx.sessions) as s:
            org_id = org_ref(s, org)
            if verify:
                result = history.verify(s, org_id)
            elif export is None:
                entries = [{**history.to_dict(line.entry), "summary": line.sentence.text}
                           for line in sentences.lines(s, org_id, history.page(s, org_id, limit=limit))]
        if export is not None:
            with staged_file(export, undone="no export was written",
                             saved="The history was exported and signed in") as f:
                done = history.export(ctx.sessions, org_id, f, now=ctx.now())
    if verify:
        _report(org_id, result, as_json=as_json)
    elif export is not None:
        _exported(done, export, as_json=as_json)
    elif as_json:
        print_json(entries)
    else:
        _table(org_id, entries)


def _report(org: int, result: history.Verification, *, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        plain(f"OK: the history of organization {org} is intact ({result.checked} entries checked).")
    else:
        plain(f"BROKEN: the history of organization {org} fails at entry seq {result.first_bad_seq}: "
              f"{result.reason} ({result.checked} entries before it are intact).")
    if not result.ok:
        raise typer.Exit(1)


def _exported(done: history.Exported, path: Path, *, as_json: bool) -> None:
    if as_json:
        print_json({"org_id": done.org_id, "entries": done.entries, "file": str(path), "checkpoint": done.checkpoint})
    else:
        cp = done.checkpoint
        plain(f"Exported the history of organization {done.org_id} to {path}: {done.entries} entries, the head "
              f"signed at seq {cp['seq']} by key {cp['kid']}. Verify it with: entitle history --verify-export "
              f"{path} --public-keys RING")


def _verify_export(path: Path, public_keys: Path | None, previous: Path | None, *, as_json: bool) -> None:
    from entitle_device import KeyRing, LicenseError

    from entitle.history import audit

    if public_keys is None:
        raise EntitleError("public_keys_required", "--verify-export needs --public-keys: the issuer's key ring you "
                           "trust (`entitle keys signing export`), not the one inside the export.")
    try:
        ring = KeyRing.loads(read_text_file(public_keys))
    except LicenseError as exc:
        raise EntitleError(f"license_{exc.code}", f"{public_keys}: {exc}") from None
    try:
        document = audit.parse(read_text_file(path), name=str(path))
        earlier = audit.parse(read_text_file(previous), name=str(previous)) if previous else None
        result = audit.audit(document, ring, previous=earlier)
    except audit.Malformed as exc:
        raise EntitleError("history_export_invalid", str(exc)) from None
    _audited(path, result, as_json=as_json)


def _audited(path: Path, result: Audit, *, as_json: bool) -> None:
    if as_json:
        print_json(result.to_dict())
    elif result.ok:
        plain(f"OK: {path} verifies: the history of organization {result.org_id}, {result.entries} entries, "
              f"signed at seq {result.signed_seq} on {result.signed_at} by key {result.kid}.")
    else:
        where = f" at entry seq {result.first_bad_seq}" if result.first_bad_seq is not None else ""
        plain(f"BROKEN: {path} (organization {result.org_id}) fails{where}: {result.reason}.")
    if not result.ok:
        raise typer.Exit(1)


def _table(org: int, entries: list[dict[str, object]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    # What happened, in the sentences of the History page; --json has each entry's before and after.
    table = Table("seq", "when (UTC)", "what happened",
                  title=f"History of organization {org}, newest first", title_justify="left")
    for e in entries:
        table.add_row(str(e["seq"]), str(e["at"])[:16].replace("T", " "), escape(str(e["summary"])))
    out.print(table)
