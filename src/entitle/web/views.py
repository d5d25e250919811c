"""The web UI (server-rendered, htmx). Filled in by the web UI work."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    return None
