"""License keys: mint (with a progress bar), cancel, redeem; the wallet they fill."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Annotated

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from entitle.cli.common import (DatabaseUrl, JsonOut, OrgRef, console_actor, context, err, handles_errors, org_ref,
                                out, print_json, staged_file)
from entitle.cli.licensing import signing_app
from entitle.db import reading, transaction
from entitle.errors import EntitleError
from entitle.keys import services as keys
from entitle.ledger import services as ledger
from entitle.text import plural

# Printing more than this many codes to a terminal helps nobody and risks losing them.
PRINT_LIMIT = 1000

keys_app = typer.Typer(help="License keys: mint and cancel (issuer).", no_args_is_help=True)
wallet_app = typer.Typer(help="An organization's wallet of unallocated units.", no_args_is_help=True)
# `entitle keys signing …`: the signing keys are defined beside the license files they sign.
keys_app.add_typer(signing_app, name="signing")

KeyCode = Annotated[str, typer.Option("--key", help="The key as typed, e.g. 7KQ2M-XW9PD-4HN3R-T8VCG.")]


@keys_app.command("mint")
@handles_errors
def keys_mint(
    sku: Annotated[str, typer.Option(help="Part number of the SKU the keys grant.")],
    quantity_per_key: Annotated[int, typer.Option(help="Units each key grants.")],
    count: Annotated[int, typer.Option(help="How many keys to mint.")],
    out_file: Annotated[Path | None, typer.Option(
        "--out", dir_okay=False, help="Write the keys to this CSV file (needed above 1,000 keys).")] = None,
    name: Annotated[str, typer.Option(help="A name for the batch.")] = "",
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Mint a batch of single-use license keys; only their hashes are stored."""
    if out_file is None:
        if count > PRINT_LIMIT:
            raise EntitleError("out_required", f"{count:,} keys are too many to print; give --out "
                               f"FILE.csv to write them to a file (at most {PRINT_LIMIT:,} are printed).",
                               count=count, limit=PRINT_LIMIT)
        codes: list[str] = []
        batch = _mint(database_url, sku, quantity_per_key, count, name, sink=codes.extend)
        if as_json:
            print_json({"batch": batch, "keys": codes})
            return
        for code in codes:
            typer.echo(code)
        err.print(_minted(batch), markup=False, highlight=False)
        err.print("The keys are shown only this once.", style="dim")
        return

    with _staged_csv(out_file) as staged:
        batch = _mint(database_url, sku, quantity_per_key, count, name,
                      sink=keys.csv_sink(staged, sku, quantity_per_key), before_commit=staged)
    if as_json:
        print_json({"batch": batch, "out": str(out_file)})
    else:
        out.print(f"{_minted(batch)} Written to {out_file}.", markup=False, highlight=False)


def _mint(database_url: str | None, sku: str, quantity_per_key: int, count: int, name: str, *,
          sink: Callable[[list[str]], None], before_commit: IO[str] | None = None) -> dict[str, object]:
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        keys.sku_to_mint(s, sku)  # a part that cannot be minted here is refused before the bar shows
        # The bar stops before the commit: nothing that can fail runs between commit and rename.
        with _progress(count) as advance:
            minted = keys.mint(s, sku_part=sku, quantity_per_key=quantity_per_key, count=count,
                               name=name, actor=console_actor(), now=ctx.clock.now(), sink=sink,
                               on_progress=advance)
        if before_commit is not None:
            # A disk that is full fails here, before commit, so no keys exist without their file.
            before_commit.flush()
            os.fsync(before_commit.fileno())
        return keys.batch_to_dict(minted.batch)


def _minted(batch: dict[str, object]) -> str:
    count, quantity = batch["count"], batch["quantity_per_key"]
    assert isinstance(count, int) and isinstance(quantity, int)
    return (f"Minted {plural(count, 'key')} of {batch['part_number']}, {plural(quantity, 'unit')} each "
            f"(batch {batch['id']}).")


@contextmanager
def _staged_csv(target: Path) -> Iterator[IO[str]]:
    """The CSV of keys becomes ``target`` only if minting commits; owner-only (it holds secrets),
    and never overwrites a file."""
    if target.exists():
        raise EntitleError("out_exists", f"{target} already exists; choose another file name "
                           "(a file of keys is never overwritten).", out=str(target))
    with staged_file(target, newline="", undone="no keys were minted",
                     saved="The keys were minted and saved in") as f:
        yield f  # mkstemp makes it owner-only


class _RateColumn(ProgressColumn):
    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} keys/s" if speed else "", style="progress.data.speed")


@contextmanager
def _progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr (stdout stays clean for --json); yields ``advance(n)``."""
    progress = Progress(TextColumn("minting"), BarColumn(),
                        TextColumn("{task.completed:,.0f}/{task.total:,.0f} keys"), _RateColumn(),
                        TimeElapsedColumn(), TimeRemainingColumn(), console=err)
    with progress:
        task = progress.add_task("mint", total=total)
        yield lambda n: progress.advance(task, n)


@keys_app.command("cancel")
@handles_errors
def keys_cancel(key: KeyCode, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Cancel a key that was not redeemed; its units leave the batch."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        result = keys.cancel(s, typed_key=key, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(result)
    else:
        out.print(f"Key {result['key_id']} is cancelled.", markup=False, highlight=False)


@handles_errors
def redeem(org: OrgRef, key: KeyCode, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Redeem a license key into an organization's wallet (no rate limit at the console)."""
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        org_id = org_ref(s, org)
        result = keys.redeem(s, org_id=org_id, typed_key=key, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(result)
    else:
        alts = result.get("alt_part_numbers") or []
        part = result["part_number"] + (f" (also sold as {', '.join(alts)})" if alts else "")
        out.print(f"Redeemed {plural(result['quantity'], 'unit')} of {part} into organization "
                  f"{org_id}; its wallet now holds {result['wallet_units']:,} of them.",
                  markup=False, highlight=False)


@wallet_app.command("show")
@handles_errors
def wallet_show(org: OrgRef, database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Units redeemed into an organization and not yet allocated, per part number."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        org_id = org_ref(s, org)
        lines = [{"part_number": w.part_number, "name": w.name, "product": w.product,
                  "grant_kind": w.grant_kind, "units": w.units} for w in ledger.wallet(s, org_id, now=ctx.clock.now())]
    if as_json:
        print_json({"org_id": org_id, "lines": lines})
        return
    if not lines:
        out.print(f"The wallet of organization {org_id} is empty.", markup=False)
        return
    table = Table("part number", "name", "product", "units", title=f"Wallet of organization {org_id}",
                  title_justify="left")
    for line in lines:
        table.add_row(escape(str(line["part_number"])), escape(str(line["name"])),
                      escape(str(line["product"])), f"{line['units']:,}")
    out.print(table)
