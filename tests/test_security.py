"""Sign-in under attack: failed sign-ins are rate limited, password checks are bounded per
process, and no password check holds the database's write lock (docs/security.md)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import ExitStack
from datetime import timedelta

import anyio
import pytest
from fastapi.testclient import TestClient
from structlog.testing import capture_logs

from conftest import PASSWORD
from entitle.api.app import create_app
from entitle.context import Context, build
from entitle.tenancy import services as tenancy
from test_web import hidden_csrf


def limited(ctx: Context, *, per_account: str = "1000/minute", per_client: str = "1000/minute") -> Context:
    settings = ctx.settings.model_copy(update={"sign_in_limit_per_account": per_account,
                                               "sign_in_limit_per_client": per_client})
    return build(settings, ctx.clock, engine=ctx.engine)


def token(client: TestClient, email: str, password: str):  # noqa: ANN201
    return client.post("/api/v1/auth/token", json={"email": email, "password": password})


def test_failed_sign_ins_per_account_are_limited_with_retry_after(ctx, world, clock):
    world.user("ann@example.com")
    with TestClient(create_app(ctx=limited(ctx, per_account="3/minute"))) as client:
        assert [token(client, "ann@example.com", "wrong").status_code for _ in range(3)] == [401, 401, 401]
        r = token(client, "ANN@example.com", PASSWORD)  # the same account, however it is typed
        assert r.status_code == 429 and r.json()["error"]["code"] == "rate_limited"
        assert r.json()["error"]["detail"]["scope"] == "account"
        retry = int(r.headers["Retry-After"])
        assert 1 <= retry <= 60
        # Another account from the same address is not affected by Ann's failures.
        world.user("bob@example.com")
        assert token(client, "bob@example.com", PASSWORD).status_code == 201
        clock.advance(timedelta(seconds=retry))
        assert token(client, "ann@example.com", PASSWORD).status_code == 201


def test_successful_sign_ins_are_not_counted(ctx, world):
    world.user("ann@example.com")
    with TestClient(create_app(ctx=limited(ctx, per_account="2/minute"))) as client:
        assert {token(client, "ann@example.com", PASSWORD).status_code for _ in range(5)} == {201}


def test_failed_sign_ins_per_client_are_limited_across_accounts(ctx, world):
    with TestClient(create_app(ctx=limited(ctx, per_client="4/minute"))) as client:
        codes = [token(client, f"nobody{n}@example.com", "guess").status_code for n in range(4)]
        assert codes == [401] * 4  # unknown e-mails count like wrong passwords
        world.user("carol@example.com")
        r = token(client, "carol@example.com", PASSWORD)
        assert r.status_code == 429 and r.json()["error"]["detail"]["scope"] == "client"


def test_web_sign_in_is_limited_too(ctx, world):
    world.user("ann@example.com")
    with TestClient(create_app(ctx=limited(ctx, per_account="2/minute"))) as client:
        for expected in (401, 401, 429):
            form = client.get("/login")
            r = client.post("/login", data={"email": "ann@example.com", "password": "wrong",
                                            "csrf_token": hidden_csrf(form.text), "next": "/"},
                            follow_redirects=False)
            assert r.status_code == expected
        assert "Too many failed sign-ins" in r.text and "rate_limited" not in r.text
        assert int(r.headers["Retry-After"]) >= 1


def test_a_wrong_current_password_counts_as_a_failed_sign_in(ctx, world):
    ann = world.user("ann@example.com")
    bearer = {"Authorization": f"Bearer {world.token(ann)}"}
    with TestClient(create_app(ctx=limited(ctx, per_account="2/minute"))) as client:
        for expected in (403, 403, 429):
            r = client.post("/api/v1/auth/password", headers=bearer,
                            json={"current_password": "wrong", "new_password": "a-new-password"})
            assert r.status_code == expected, r.text


def test_password_checks_beyond_the_bound_are_refused_at_once(client, world):
    # The bound comes from the memory budget; every slot taken, the next check is a 503 at once.
    world.user("ann@example.com")
    with ExitStack() as held:
        for _ in range(tenancy.password_checks_at_once()):
            held.enter_context(tenancy.password_work())
        r = token(client, "ann@example.com", PASSWORD)
        assert r.status_code == 503 and r.json()["error"]["code"] == "password_checks_busy"
        assert r.headers["Retry-After"] == "1"
    assert token(client, "ann@example.com", PASSWORD).status_code == 201  # the slots came back


def test_the_bound_follows_the_argon2_memory_cost(monkeypatch):
    settings = tenancy.get_settings().model_copy(update={"argon2_memory_cost": 65536,
                                                         "password_check_memory_mib": 256})
    monkeypatch.setattr(tenancy, "get_settings", lambda: settings)
    monkeypatch.setattr(tenancy.os, "cpu_count", lambda: 64)
    assert tenancy.password_checks_at_once() == 4  # 4 x 64 MiB
    monkeypatch.setattr(tenancy, "get_settings", lambda: settings.model_copy(update={"argon2_memory_cost": 1 << 20}))
    assert tenancy.password_checks_at_once() == 1  # never none


def test_the_bound_follows_the_cores(monkeypatch):
    # Each check runs argon2's 4 lanes in threads: no more checks at once than the cores run, so
    # that /healthz keeps a core during a flood; never none.
    settings = tenancy.get_settings().model_copy(update={"argon2_memory_cost": 65536,
                                                         "password_check_memory_mib": 1024})
    monkeypatch.setattr(tenancy, "get_settings", lambda: settings)
    for cores, checks in ((2, 1), (4, 1), (8, 2), (16, 4), (64, 16), (None, 1)):
        monkeypatch.setattr(tenancy.os, "cpu_count", lambda cores=cores: cores)
        assert tenancy.password_checks_at_once() == checks, cores


@pytest.mark.parametrize("route", ["token", "password"])
def test_a_password_check_never_holds_the_write_lock(ctx, world, client, monkeypatch, route):
    # While a sign-in (or a password change) checks its password, another request can write.
    if ctx.engine.dialect.name != "sqlite":
        pytest.skip("only SQLite has a database-wide write lock; PostgreSQL readers never block writers")
    ann = world.user("ann@example.com")
    bearer = {"Authorization": f"Bearer {world.token(ann)}"}
    checking, release = threading.Event(), threading.Event()
    real = tenancy.password_matches

    def slow(password_hash: str, password: str) -> bool:
        checking.set()
        assert release.wait(10)
        return real(password_hash, password)

    monkeypatch.setattr(tenancy, "password_matches", slow)
    answers: list[int] = []

    def request() -> None:
        if route == "token":
            answers.append(token(client, "ann@example.com", PASSWORD).status_code)
        else:
            answers.append(client.post("/api/v1/auth/password", headers=bearer, json={
                "current_password": PASSWORD, "new_password": "another-password"}).status_code)

    worker = threading.Thread(target=request)
    worker.start()
    try:
        assert checking.wait(10)
        # A connection of its own that fails after 200 ms rather than wait for a held lock.
        conn = sqlite3.connect(ctx.engine.url.database, timeout=0.2, isolation_level=None)
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("UPDATE users SET created_at = created_at WHERE id = ?", (ann.id,))
            conn.execute("COMMIT")
        finally:
            conn.close()
    finally:
        release.set()
        worker.join(10)
    assert answers == [201 if route == "token" else 200]


# --- request bodies, headers, unhandled errors ----------------------------------------------------

def test_a_body_over_the_limit_is_refused_with_413_before_it_is_read(client, world):
    ann = world.user("ann@example.com")
    big = b'{"name": "' + b"x" * (1024 * 1024) + b'", "region": "EU"}'
    r = client.post("/api/v1/orgs", content=big, headers={"Authorization": f"Bearer {world.token(ann)}",
                                                          "Content-Type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    assert r.json()["error"]["detail"]["limit_bytes"] == 1024 * 1024 and "1 MiB" in r.json()["error"]["message"]
    # Just under the limit is read (and refused for what it says, not for its size).
    fits = b'{"name": "' + b"x" * (1024 * 1024 - 64) + b'", "region": "EU"}'
    r = client.post("/api/v1/orgs", content=fits, headers={"Authorization": f"Bearer {world.token(ann)}",
                                                           "Content-Type": "application/json"})
    assert r.status_code != 413


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(ctx):
    # No Content-Length: the middleware counts what is read and stops at the limit.
    app = create_app(ctx=ctx)
    chunks = [b"x" * (600 * 1024)] * 4
    read: list[int] = []
    sent: list[dict] = []

    async def receive() -> dict:
        read.append(1)
        body = chunks[len(read) - 1] if len(read) <= len(chunks) else b""
        return {"type": "http.request", "body": body, "more_body": len(read) < len(chunks)}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
             "scheme": "http", "path": "/api/v1/auth/token", "raw_path": b"/api/v1/auth/token", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"host", b"test")], "client": ("1.2.3.4", 1),
             "server": ("test", 80), "root_path": "", "state": {}}
    anyio.run(app, scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    assert start["status"] == 413
    assert len(read) == 2  # 1.2 MB read of 2.4: the rest was never taken in


def test_the_catalog_takes_a_larger_body(client, world):
    issuer = world.user("issuer@example.com", issuer=True)
    body = b'{"products": [], "skus": [], "padding": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    r = client.post("/api/v1/catalog", content=body, headers={"Authorization": f"Bearer {world.token(issuer)}",
                                                              "Content-Type": "application/json"})
    assert r.status_code != 413, r.text


def test_every_answer_says_nosniff_and_hsts_only_behind_https(ctx, client):
    for path in ("/api/v1/ping", "/healthz", "/login", "/static/app.css", "/api/v1/nothing-here"):
        r = client.get(path)
        assert r.headers["X-Content-Type-Options"] == "nosniff", path
        assert "Strict-Transport-Security" not in r.headers
    secure = build(ctx.settings.model_copy(update={"cookie_secure": True}), ctx.clock, engine=ctx.engine)
    with TestClient(create_app(ctx=secure)) as c:
        assert c.get("/api/v1/ping").headers["Strict-Transport-Security"] == "max-age=31536000"


def test_an_unhandled_error_answers_the_error_shape_with_the_request_id_in_the_log(ctx):
    app = create_app(ctx=ctx)

    @app.get("/api/v1/test-boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    with capture_logs() as logs, TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/v1/test-boom")
    assert r.status_code == 500 and r.headers["content-type"] == "application/json"
    error = r.json()["error"]
    request_id = error["detail"]["request_id"]
    assert error["code"] == "internal_error" and request_id in error["message"]
    assert r.headers["X-Request-ID"] == request_id
    assert [e for e in logs if e["event"] == "request.failed" and e["request_id"] == request_id]


def test_a_device_batch_at_the_schemas_maximum_fits_its_limit(client, world):
    # 100,000 devices (the schema's maximum) with long serials are under the batch limit: the
    # answer is about the devices (here: no such system), not the body's size.
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    devices = [{"serial": f"ACCC8E{n:06d}-{'x' * 40}", "license_type": "core"} for n in range(100_000)]
    r = client.post(f"/api/v1/orgs/{org}/axis/systems/999/devices", json={"devices": devices},
                    headers={"Authorization": f"Bearer {world.token(ann)}"})
    assert len(r.request.content) > 1024 * 1024
    assert r.status_code != 413, r.text
