"""Running the server: bring its database up to date, serve the API and the web UI."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from entitle.cli.common import DatabaseUrl, settings_for
from entitle.config import get_settings


def migrate(database_url: DatabaseUrl = None) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from entitle.migrate import upgrade

    upgrade(settings_for(database_url).database_url)
    typer.echo("database is up to date")


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

