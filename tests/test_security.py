"""Sign-in under attack: failed sign-ins are rate limited, password checks are bounded per
process, and no password check holds the database's write lock (docs/security.md)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import ExitStack
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient

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
    assert tenancy.password_checks_at_once() == 4  # 4 x 64 MiB
    monkeypatch.setattr(tenancy, "get_settings", lambda: settings.model_copy(update={"argon2_memory_cost": 1 << 20}))
    assert tenancy.password_checks_at_once() == 1  # never none


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
