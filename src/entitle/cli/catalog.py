"""The issuer's catalog of products and SKUs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from entitle.catalog import services as catalog
from entitle.cli.common import DatabaseUrl, JsonOut, console_actor, context, handles_errors, out, print_json
from entitle.db import reading, transaction
from entitle.text import plural

catalog_app = typer.Typer(help="Products and SKUs (the issuer's catalog).", no_args_is_help=True)


@catalog_app.command("load")
@handles_errors
def catalog_load(
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True,
                                         help="A catalog in YAML, or JSON when it ends in .json.")],
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Create or update products and SKUs from a file (never deletes)."""
    doc = catalog.parse(file.read_text(encoding="utf-8"), filename=file.name)
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        counts = catalog.load(s, doc, actor=console_actor(), now=ctx.clock.now())
    if as_json:
        print_json(counts)
    else:
        out.print(f"Catalog loaded from {file}: {plural(counts['products_created'], 'product')} created, "
                  f"{counts['products_updated']:,} updated; {plural(counts['skus_created'], 'SKU')} created, "
                  f"{counts['skus_updated']:,} updated.", markup=False, highlight=False)


@catalog_app.command("show")
@handles_errors
def catalog_show(database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Show every product and its SKUs."""
    with context(database_url) as ctx, reading(ctx.sessions) as s:
        products = [catalog.product_to_dict(p) for p in catalog.products(s)]
    if as_json:
        print_json(products)
        return
    if not products:
        out.print("The catalog is empty: load one with `entitle catalog load FILE`.", markup=False)
    for p in products:
        table = Table("part number", "name", "grants", "term", "regions",
                      title=escape(f"{p['name']} ({p['code']}, {p['model']})"), title_justify="left")
        for sku in p["skus"]:
            grants = ", ".join(f"{k}: {v}" for k, v in sku["grants"].items()) or sku["grant_kind"]
            term = f"{sku['term_years']} y" if sku["term_years"] else ""
            table.add_row(escape(sku["part_number"]), escape(sku["name"]), escape(grants), term,
                          escape(", ".join(sku["regions"]) or "all"))
        out.print(table)
