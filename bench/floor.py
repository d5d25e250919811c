"""The app the API benchmark serves: the real one, plus two routes that do nothing but the
plumbing every authenticated read pays (``bench/api.py``, the ``floor_*`` cases).

- ``GET /api/v1/_bench/actor``: a quick read that authenticates its token (the remembered
  actor) and answers a constant: routing, FastAPI's dependencies, the answer.
- ``GET /api/v1/_bench/statement/{org_id}``: the same with the request's session, the clock and
  an organization id in the path, as the read routes take them, and one ``SELECT 1`` through
  that session: what a read costs before its own statements.

They sit right after ``/api/v1/ping`` in the route table, so that the router finds them as fast as
it finds ping (every other route then pays two more failed matches, a few microseconds). Served
with ``uvicorn --factory bench.floor:app_from_env``; never part of the product's app.
"""

# No ``from __future__ import annotations``: the routes are made inside ``_routes`` (so that the
# benchmark's own process, which imports the paths, does not load the app), and FastAPI reads
# their annotations as objects.
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi import FastAPI

ACTOR = "/api/v1/_bench/actor"
STATEMENT = "/api/v1/_bench/statement/{org_id}"
FACTORY = "bench.floor:app_from_env"
# The server runs in its own directory: it finds this package here.
ROOT = str(Path(__file__).resolve().parents[1])


def _routes() -> list[Any]:
    from fastapi import APIRouter
    from sqlalchemy import text

    from entitle.api.deps import DB, CurrentActor, Now
    from entitle.api.routing import OneHopRoute, quick_read

    one = text("SELECT 1")
    router = APIRouter(route_class=OneHopRoute, include_in_schema=False)

    @router.get(ACTOR)
    @quick_read
    def actor_only(actor: CurrentActor) -> dict[str, Any]:
        return {"ok": True}

    @router.get(STATEMENT)
    @quick_read
    def one_statement(org_id: int, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
        return {"ok": db.execute(one).scalar() == 1}

    return list(router.routes)


def app_from_env() -> "FastAPI":
    from entitle.api.app import app_from_env as product_app

    app = product_app()
    routes = app.router.routes
    after_ping = next(i for i, r in enumerate(routes) if getattr(r, "path", None) == "/api/v1/ping") + 1
    routes[after_ping:after_ping] = _routes()
    return app
