"""A database that cannot be reached answers 503 ``database_unavailable`` with Retry-After in the
error shape, never a 500 (issue 17: the pool has no per-checkout ping). After a PostgreSQL
restart, the dead pooled connection costs one 503 at most, and the next request works."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from conftest import auth
from entitle.api.app import create_app
from entitle.config import Settings
from helpers import org_with_owner

UNREACHABLE = "postgresql+psycopg://postgres@127.0.0.1:1/test"  # nothing listens on port 1


def test_an_unreachable_database_answers_503_in_the_error_shape():
    app = create_app(Settings(database_url=UNREACHABLE, secret_key="x" * 64))
    with TestClient(app) as client:
        r = client.get("/api/v1/orgs", headers=auth("ent_" + "a" * 43))
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["code"] == "database_unavailable"
        assert "Try again in a moment" in r.json()["error"]["message"]
        assert client.get("/api/v1/ping").status_code == 200  # the process itself is fine


def test_the_openapi_document_lists_503_for_every_operation(client):
    spec = client.get("/openapi.json").json()
    missing = [f"{method} {path}" for path, ops in spec["paths"].items() for method, op in ops.items()
               if "503" not in op["responses"]]
    assert not missing, missing


def test_connections_cut_under_the_pool_cost_at_most_one_503(world, client):
    # A PostgreSQL restart, as the pool sees it: every connection it holds is closed by the server.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    assert client.get(f"/api/v1/orgs/{org}", headers=auth(owner.token)).status_code == 200
    engine = world.ctx.engine
    if engine.dialect.name == "postgresql":
        # From a connection of its own (not the pool's): this worker's database only.
        outside = create_engine(engine.url, poolclass=NullPool)
        with outside.connect() as c:
            cut = c.execute(text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                 "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar()
        outside.dispose()
        assert cut >= 1  # the pool's connection was among them
    else:  # SQLite has no server to restart: the pool's connections are closed under it instead
        for record in list(getattr(engine.pool, "_pool").queue):
            record.dbapi_connection.close()
    answers = [client.get(f"/api/v1/orgs/{org}", headers=auth(owner.token)) for _ in range(3)]
    statuses = [r.status_code for r in answers]
    assert statuses.count(503) <= 1 and statuses[-1] == 200, [(r.status_code, r.text[:200]) for r in answers]
    for r in answers:
        if r.status_code == 503:
            assert r.json()["error"]["code"] == "database_unavailable"
