"""The `entitle` command line (Typer).

Each command opens one context, runs the services in one transaction and prints; with ``--json``
stdout carries only JSON. Refusals print their code and message on stderr and exit with 1.
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from entitle.cli.access_commander import ac_app
from entitle.cli.axis import allocate, axis_app, renew, subscription_app
from entitle.cli.catalog import catalog_app
from entitle.cli.common import DatabaseUrl, settings_for
from entitle.cli.history import show_history
from entitle.cli.keys import keys_app, redeem, wallet_app
from entitle.cli.licensing import license_app, signing_app, system_file_app
from entitle.cli.my2n import apartment_app, site_app, voucher_app
from entitle.cli.sweep import sweep
from entitle.cli.tenancy import admin_app, first_run, member_app, org_app, token_app
from entitle.cli.webhooks import deliver, webhook_app
from entitle.config import get_settings

app = typer.Typer(help="Entitle: license management for devices and device software.",
                  no_args_is_help=True, pretty_exceptions_enable=False)

app.command("first-run")(first_run)
app.add_typer(admin_app, name="admin")
app.add_typer(org_app, name="org")
app.add_typer(member_app, name="member")
app.add_typer(catalog_app, name="catalog")
app.add_typer(keys_app, name="keys")
app.command("redeem")(redeem)
app.add_typer(wallet_app, name="wallet")
app.command("history")(show_history)
app.add_typer(token_app, name="token")
keys_app.add_typer(signing_app, name="signing")
app.add_typer(license_app, name="license")
app.add_typer(system_file_app, name="system-file")
app.add_typer(ac_app, name="ac")
app.add_typer(subscription_app, name="subscription")
app.command("allocate")(allocate)
app.command("renew")(renew)
app.add_typer(axis_app, name="axis")
app.add_typer(site_app, name="site")
app.add_typer(apartment_app, name="apartment")
app.add_typer(voucher_app, name="voucher")
app.add_typer(webhook_app, name="webhook")
app.command("deliver")(deliver)
app.command("sweep")(sweep)


@app.command()
def migrate(database_url: DatabaseUrl = None) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from entitle.migrate import upgrade

    upgrade(settings_for(database_url).database_url)
    typer.echo("database is up to date")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes; they share state through the database.")] = 1,
    sweep_every: Annotated[float, typer.Option(
        "--sweep-every", min=0, metavar="SECONDS",
        help="Every SECONDS, in this process (one loop however many --workers): run `entitle sweep`, send the "
             "webhook deliveries due and mail the notifications due. 0: not at all (run `entitle sweep` and "
             "`entitle deliver` yourself, e.g. from cron).")] = 0,
    database_url: DatabaseUrl = None,
) -> None:
    """Serve the REST API and the web UI."""
    import uvicorn

    from entitle.cli.sweep import Ticker, default_jobs
    from entitle.context import build

    if database_url:
        # Worker processes build their settings from the environment.
        os.environ["ENTITLE_DATABASE_URL"] = database_url
        get_settings.cache_clear()
    # The scheduled sweep runs beside the server in this process, with its own engine; a failed
    # tick is logged and the next one retries. It stops when the server does.
    ctx = build(get_settings()) if sweep_every > 0 else None
    ticker = Ticker(default_jobs(ctx), sweep_every).start() if ctx else None
    try:
        uvicorn.run("entitle.api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                    log_level="warning", access_log=False)
    finally:
        if ticker and ctx:
            ticker.stop()
            ctx.engine.dispose()


if __name__ == "__main__":
    app()
