"""The `entitle` command line (Typer)."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from entitle.config import get_settings

app = typer.Typer(help="Entitle: license management for devices and device software.",
                  no_args_is_help=True, pretty_exceptions_enable=False)


def _use_database(database_url: str | None) -> str:
    if database_url:
        os.environ["ENTITLE_DATABASE_URL"] = database_url
        get_settings.cache_clear()
    return get_settings().database_url


@app.command()
def migrate(database_url: Annotated[str | None, typer.Option(help="Overrides ENTITLE_DATABASE_URL.")] = None) -> None:
    """Bring the database schema up to date (alembic upgrade head)."""
    from entitle.migrate import upgrade

    url = _use_database(database_url)
    upgrade(url)
    typer.echo("database is up to date")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    workers: Annotated[int, typer.Option(help="Server processes; they share state through the database.")] = 1,
    database_url: Annotated[str | None, typer.Option(help="Overrides ENTITLE_DATABASE_URL.")] = None,
) -> None:
    """Serve the REST API and the web UI."""
    import uvicorn

    _use_database(database_url)
    uvicorn.run("entitle.api.app:app_from_env", factory=True, host=host, port=port, workers=workers,
                log_level="warning", access_log=False)


if __name__ == "__main__":
    app()
