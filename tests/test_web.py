"""The web UI through its HTTP interface: sign-in, CSRF, wallet, roles, organizations, issuer."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from limits import parse
from sqlalchemy import select, update

from conftest import PASSWORD, World, auth
from entitle.db import transaction
from entitle.history.models import HistoryEntry
from entitle.keys import codes
from entitle.keys import services as keys
from entitle.keys.models import KeyBatch
from entitle.ledger import services as ledger
from entitle.platform.ratelimit import Limit
from entitle.tenancy.models import ApiToken, Role

TEMPLATES = Path(__file__).resolve().parents[1] / "src" / "entitle" / "web" / "templates"
HTMX = {"HX-Request": "true"}


# --- helpers -----------------------------------------------------------------------------------

def hidden_csrf(html: str) -> str:
    m = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert m, "no csrf_token field on the page"
    return m.group(1)


def sign_in(client: TestClient, email: str, password: str = PASSWORD) -> str:
    """Sign in through the form; return the session's CSRF token (from the page's meta tag)."""
    form = client.get("/login")
    r = client.post("/login", data={"email": email, "password": password,
                                    "csrf_token": hidden_csrf(form.text), "next": "/"},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    page = client.get("/")
    m = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert m, page.text
    return m.group(1)


def wallet_units(world: World, org_id: int) -> dict[str, int]:
    with world.ctx.sessions() as s:
        return {line.part_number: line.units for line in ledger.wallet(s, org_id)}


def mistype(code: str) -> str:
    """Change one data character to another valid one: the check character must catch it."""
    swap = next(c for c in codes.ALPHABET if c != code[0])
    return swap + code[1:]


# --- signing in --------------------------------------------------------------------------------

def test_pages_need_a_session(world, client):
    r = client.get("/wallet", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fwallet"
    # An htmx request is told where to go instead of getting the login page as a fragment.
    r = client.get("/wallet", headers=HTMX, follow_redirects=False)
    assert r.status_code == 401 and r.headers["HX-Redirect"] == "/login"


def test_sign_in_then_sign_out(world, client):
    ann = world.user("ann@example.com")
    world.org("Acme", region="US", owner=ann)
    form = client.get("/login")
    r = client.post("/login", data={"email": "ANN@example.com", "password": PASSWORD,
                                    "csrf_token": hidden_csrf(form.text), "next": "/wallet"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/wallet"
    cookie = r.headers["set-cookie"]
    assert cookie.startswith("entitle_session=")
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Secure" not in cookie
    secret = client.cookies["entitle_session"]

    home = client.get("/")
    assert home.status_code == 200
    # The home page: organization name, region and the user's role, and the Attention list.
    assert "Acme" in home.text and "US" in home.text and "owner" in home.text
    assert 'id="attention-heading"' in home.text

    csrf = re.search(r'<meta name="csrf-token" content="([^"]+)"', home.text).group(1)
    out = client.post("/logout", data={"csrf_token": csrf}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/login"
    assert client.get("/", follow_redirects=False).status_code == 303
    # The session is ended on the server, not only forgotten by the browser.
    client.cookies.set("entitle_session", secret)
    assert client.get("/", follow_redirects=False).status_code == 303


def test_wrong_password_and_unknown_email_read_the_same(world, client):
    world.user("ann@example.com")
    answers = []
    for email, password in (("ann@example.com", "wrong password"), ("nobody@example.com", PASSWORD)):
        form = client.get("/login")
        r = client.post("/login", data={"email": email, "password": password,
                                        "csrf_token": hidden_csrf(form.text)}, follow_redirects=False)
        assert r.status_code == 401
        assert "E-mail or password is wrong." in r.text
        assert "entitle_session" not in client.cookies
        answers.append(re.search(r'role="alert">([^<]*)<', r.text).group(1))
    assert answers[0] == answers[1]


def test_sign_in_form_needs_its_own_token(world, client):
    world.user("ann@example.com")
    client.get("/login")
    r = client.post("/login", data={"email": "ann@example.com", "password": PASSWORD,
                                    "csrf_token": "forged"}, follow_redirects=False)
    assert r.status_code == 403
    assert "entitle_session" not in client.cookies


def test_next_never_leaves_the_site(world, client):
    world.user("ann@example.com")
    form = client.get("/login")
    r = client.post("/login", data={"email": "ann@example.com", "password": PASSWORD,
                                    "csrf_token": hidden_csrf(form.text), "next": "//evil.example/"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/"


# --- CSRF --------------------------------------------------------------------------------------

def test_post_without_the_csrf_token_is_refused_and_changes_nothing(world, client):
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    [code] = world.mint("91379040", quantity=5)
    csrf = sign_in(client, "ann@example.com")

    missing = client.post("/wallet/redeem", data={"key": code})
    wrong = client.post("/wallet/redeem", data={"key": code, "csrf_token": csrf[:-2] + "xx"})
    wrong_header = client.post("/wallet/redeem", data={"key": code}, headers={"X-CSRF-Token": "nope"})
    for r in (missing, wrong, wrong_header):
        assert r.status_code == 403
        assert "csrf_invalid" in r.text and r.headers["content-type"].startswith("text/html")
    assert wallet_units(world, org) == {}

    # The header htmx sends is accepted: the key was never spent by the refused attempts.
    ok = client.post("/wallet/redeem", data={"key": code}, headers={**HTMX, "X-CSRF-Token": csrf})
    assert ok.status_code == 200 and wallet_units(world, org) == {"91379040": 5}


# --- wallet ------------------------------------------------------------------------------------

def test_redeem_form_moves_the_keys_units_into_the_wallet(world, client):
    # R-CORE-4
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    [first, second] = world.mint("91379040", count=2, quantity=5)
    csrf = sign_in(client, "ann@example.com")

    page = client.get("/wallet")
    assert 'for="redeem-key"' in page.text and "The wallet is empty." in page.text

    r = client.post("/wallet/redeem", data={"key": first.lower(), "csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 200
    assert "Redeemed 5 × 91379040" in r.text
    # Only the wallet panel comes back for htmx: the page around it stays.
    assert r.text.lstrip().startswith('<section id="wallet-panel"') and "<html" not in r.text
    assert re.search(r'data-part="91379040">.*?class="n units">5<', r.text, re.S)
    assert wallet_units(world, org) == {"91379040": 5}

    # Without htmx the same form gives the whole page.
    full = client.post("/wallet/redeem", data={"key": second, "csrf_token": csrf})
    assert full.status_code == 200 and "<html" in full.text and "Redeemed 5 × 91379040" in full.text
    assert wallet_units(world, org) == {"91379040": 10}
    assert "key.redeemed" in client.get("/history").text


def test_refused_keys_show_their_error_code(world, client):
    # R-CORE-4: a mistyped, a malformed and an already-redeemed key each say what went wrong.
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    [code] = world.mint("91379040", quantity=5)
    csrf = sign_in(client, "ann@example.com")

    mistyped = client.post("/wallet/redeem", data={"key": mistype(code), "csrf_token": csrf}, headers=HTMX)
    assert mistyped.status_code == 400 and "key_mistyped" in mistyped.text
    # The sentence first, then the stable code in small print (issue 16 point 6).
    shown = re.search(r'<p class="message error" role="alert"><span class="error-message">([^<]+)</span> '
                      r'<small class="error-code">Code: <code>([^<]+)</code></small></p>', mistyped.text)
    assert shown and "mistyped" in shown.group(1) and shown.group(2) == "key_mistyped"
    # The typed key stays in the field so the user can correct it.
    assert f'value="{mistype(code)}"' in mistyped.text

    malformed = client.post("/wallet/redeem", data={"key": "hello", "csrf_token": csrf}, headers=HTMX)
    assert malformed.status_code == 400 and "key_malformed" in malformed.text

    assert client.post("/wallet/redeem", data={"key": code, "csrf_token": csrf}, headers=HTMX).status_code == 200
    again = client.post("/wallet/redeem", data={"key": code, "csrf_token": csrf}, headers=HTMX)
    assert again.status_code == 409 and "key_already_redeemed" in again.text
    assert wallet_units(world, org) == {"91379040": 5}


def test_redeem_attempts_are_rate_limited(world, ctx, client):
    # R-CORE-4: the web form goes through the same limiter as the API.
    ctx.redeem_limiter.per_org = Limit("organization", parse("2/minute"))
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    csrf = sign_in(client, "ann@example.com")
    statuses = [client.post("/wallet/redeem", data={"key": "hello", "csrf_token": csrf},
                            headers=HTMX) for _ in range(3)]
    assert [r.status_code for r in statuses] == [400, 400, 429]
    assert "rate_limited" in statuses[2].text and "Try again in" in statuses[2].text


def test_viewer_sees_the_wallet_but_cannot_redeem(world, client):
    # R-CORE-2: viewers are read only.
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    vic = world.user("vic@example.com")
    world.member(org, vic, Role.viewer)
    [code] = world.mint("91379040", quantity=5)
    with transaction(world.ctx.sessions) as s:
        keys.redeem(s, org_id=org, typed_key=world.mint("91379040", quantity=2)[0],
                    actor=world.actor(ann), now=world.now)

    csrf = sign_in(client, "vic@example.com")
    page = client.get("/wallet")
    assert page.status_code == 200
    assert 'data-part="91379040"' in page.text          # sees the wallet
    assert 'for="redeem-key"' not in page.text          # but not the form
    r = client.post("/wallet/redeem", data={"key": code, "csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 403 and "role_insufficient" in r.text
    assert wallet_units(world, org) == {"91379040": 2}


# --- organizations -----------------------------------------------------------------------------

def test_org_switcher_lists_only_the_users_organizations_and_refuses_others(world, client):
    # R-CORE-1: another organization's id is answered as if it did not exist.
    reseller = world.user("res@example.com")
    alpha = world.org("Alpha GmbH", owner=reseller)
    beta = world.org("Beta Ltd", region="APAC")
    world.member(beta, reseller, Role.admin)
    other_owner = world.user("zed@example.com")
    secret_org = world.org("Secret Corp", owner=other_owner)
    csrf = sign_in(client, "res@example.com")

    home = client.get("/")
    assert "Alpha GmbH" in home.text and "Beta Ltd" in home.text and "Secret Corp" not in home.text

    r = client.post("/ui/org", data={"org_id": beta, "csrf_token": csrf, "next": "/wallet"},
                    follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/wallet"
    home = client.get("/")
    assert "<h1>Beta Ltd</h1>" in home.text and "APAC" in home.text and "admin" in home.text

    refused = client.post("/ui/org", data={"org_id": secret_org, "csrf_token": csrf}, follow_redirects=False)
    assert refused.status_code == 404 and "organization_not_found" in refused.text
    assert "Secret Corp" not in refused.text
    assert "<h1>Beta Ltd</h1>" in client.get("/").text  # still showing Beta
    # Back to the first organization: the switcher works both ways.
    client.post("/ui/org", data={"org_id": alpha, "csrf_token": csrf})
    assert "<h1>Alpha GmbH</h1>" in client.get("/").text


def test_switching_organization_needs_the_csrf_token(world, client):
    user = world.user("res@example.com")
    world.org("Alpha GmbH", owner=user)
    beta = world.org("Beta Ltd")
    world.member(beta, user, Role.admin)
    sign_in(client, "res@example.com")
    assert client.post("/ui/org", data={"org_id": beta}).status_code == 403
    assert "<h1>Alpha GmbH</h1>" in client.get("/").text


# --- history -----------------------------------------------------------------------------------

def test_history_pages_newest_first_and_verify_detects_an_edit(world, client):
    # R-CORE-6
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    for i in range(60):
        world.member(org, world.user(f"u{i}@example.com"), Role.viewer)
    sign_in(client, "ann@example.com")

    first = client.get("/history")
    seqs = [int(s) for s in re.findall(r'<td class="n">(\d+)</td>', first.text)]
    assert seqs == list(range(62, 12, -1))  # 62 entries, newest first, 50 per page
    older = client.get("/history?cursor=13", headers=HTMX)
    assert "<html" not in older.text
    assert [int(s) for s in re.findall(r'<td class="n">(\d+)</td>', older.text)] == list(range(12, 0, -1))
    assert "/history?cursor=13" in first.text

    ok = client.get("/history/verify", headers=HTMX)
    assert ok.status_code == 200 and "intact: 62 entries checked" in ok.text

    with transaction(world.ctx.sessions) as s:
        s.execute(update(HistoryEntry).where(HistoryEntry.org_id == org, HistoryEntry.seq == 7)
                  .values(actor="someone-else"))
    broken = client.get("/history/verify", headers=HTMX)
    assert "history_chain_broken" in broken.text and "#7" in broken.text


# --- issuer ------------------------------------------------------------------------------------

def test_issuer_page_is_forbidden_to_non_issuers(world, client):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    csrf = sign_in(client, "ann@example.com")
    assert "/issuer/keys" not in client.get("/").text
    page = client.get("/issuer/keys")
    assert page.status_code == 403 and "issuer_only" in page.text
    assert page.headers["content-type"].startswith("text/html")
    mint = client.post("/issuer/keys", data={"part_number": "91379040", "quantity_per_key": 1,
                                             "count": 1, "csrf_token": csrf})
    assert mint.status_code == 403
    with world.ctx.sessions() as s:
        assert s.scalars(select(KeyBatch)).all() == []


def test_issuer_mints_and_sees_the_codes_once(world, client):
    # R-CORE-4: minted from the web form; the codes appear in that answer only.
    world.user("vendor@example.com", issuer=True)
    ann = world.user("ann@example.com")
    org = world.org("Acme", owner=ann)
    csrf = sign_in(client, "vendor@example.com")
    page = client.get("/issuer/keys")
    assert page.status_code == 200 and '<option value="91379041"' in page.text

    r = client.post("/issuer/keys", data={"part_number": "91379041", "quantity_per_key": 3, "count": 4,
                                          "name": "Spring", "csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 200 and "shown once" in r.text
    minted = re.search(r'<textarea id="minted-codes"[^>]*>([^<]*)</textarea>', r.text).group(1).split()
    assert len(minted) == 4 and len(set(minted)) == 4
    # The form keeps the part number for the next batch, and the codes download as CSV (issue 16).
    assert re.search(r'<option value="91379041" selected>', r.text)
    batch = re.search(r'action="/issuer/keys/(\d+)/codes.csv"', r.text).group(1)
    shown = re.search(r'<input type="hidden" name="codes" value="([^"]+)">', r.text).group(1)
    download = client.post(f"/issuer/keys/{batch}/codes.csv", data={"codes": shown, "csrf_token": csrf})
    assert download.status_code == 200 and download.headers["content-type"].startswith("text/csv")
    assert download.headers["content-disposition"] == f'attachment; filename="license-keys-batch-{batch}.csv"'
    assert download.text.splitlines() == ["key,part_number,quantity"] + [f"{c},91379041,3" for c in minted]
    assert client.post(f"/issuer/keys/{batch}/codes.csv", data={"codes": shown}).status_code == 403  # no CSRF
    later = client.get("/issuer/keys").text
    assert "Spring" in later and not any(code in later for code in minted)

    too_many = client.post("/issuer/keys", data={"part_number": "91379041", "quantity_per_key": 1,
                                                 "count": 10_001, "csrf_token": csrf})
    assert too_many.status_code == 400 and "count_invalid" in too_many.text
    unknown = client.post("/issuer/keys", data={"part_number": "NOPE", "quantity_per_key": 1,
                                                "count": 1, "csrf_token": csrf})
    assert unknown.status_code == 404 and "sku_not_found" in unknown.text

    # The minted codes work: the organization's owner redeems one.
    client.cookies.clear()
    csrf = sign_in(client, "ann@example.com")
    client.post("/wallet/redeem", data={"key": minted[0], "csrf_token": csrf})
    assert wallet_units(world, org) == {"91379041": 3}


# --- API tokens --------------------------------------------------------------------------------

def test_api_token_is_shown_once_and_can_be_revoked(world, client):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    csrf = sign_in(client, "ann@example.com")
    r = client.post("/tokens", data={"name": "deploy", "csrf_token": csrf}, headers=HTMX)
    assert r.status_code == 200 and "shown once" in r.text
    token = re.search(r'id="new-token" readonly value="([^"]+)"', r.text).group(1)
    assert client.get("/api/v1/me", headers=auth(token)).json()["email"] == "ann@example.com"

    listing = client.get("/tokens").text
    assert "deploy" in listing and token[:10] in listing and token not in listing
    token_id = re.search(r'action="/tokens/(\d+)/revoke"', listing).group(1)
    revoked = client.post(f"/tokens/{token_id}/revoke", data={"csrf_token": csrf})
    assert revoked.status_code == 200 and "Token revoked" in revoked.text
    assert client.get("/api/v1/me", headers=auth(token)).status_code == 401


def test_someone_elses_token_cannot_be_revoked(world, client):
    bob = world.user("bob@example.com")
    bobs = world.token(bob)
    world.user("ann@example.com")
    csrf = sign_in(client, "ann@example.com")
    with world.ctx.sessions() as s:
        bob_token_id = s.scalars(select(ApiToken.id)).one()
    r = client.post(f"/tokens/{bob_token_id}/revoke", data={"csrf_token": csrf})
    assert r.status_code == 404 and "token_not_found" in r.text
    assert client.get("/api/v1/me", headers=auth(bobs)).status_code == 200


# --- errors, static files ----------------------------------------------------------------------

def test_web_refusals_are_pages_not_json(world, client):
    ann = world.user("ann@example.com")
    world.org("Acme", owner=ann)
    sign_in(client, "ann@example.com")
    r = client.get("/history?cursor=abc")
    assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
    assert "invalid_request" in r.text and "cursor" in r.text
    # An htmx request gets the message in the page's message area.
    r = client.get("/issuer/keys", headers=HTMX)
    assert r.status_code == 403 and r.headers["HX-Retarget"] == "#flash" and "<html" not in r.text
    # The API keeps its JSON errors.
    assert client.get("/api/v1/me").json()["error"]["code"] == "authentication_required"


def test_static_files_are_served_locally(client):
    js = client.get("/static/htmx.min.js")
    css = client.get("/static/simple.min.css")
    assert js.status_code == 200 and "htmx" in js.text[:200] and "0BSD" in js.text[:200]
    assert css.status_code == 200 and "MIT" in css.text[:200]
    assert client.get("/static/app.css").status_code == 200
    login = client.get("/login").text
    assert client.get("/static/app.js").status_code == 200
    for asset in ("/static/htmx.min.js", "/static/simple.min.css", "/static/app.css", "/static/app.js"):
        assert f'"{asset}"' in login
    templates = list(TEMPLATES.rglob("*.html"))
    assert templates
    for template in templates:
        text = template.read_text()
        assert not re.search(r"https?://|src=\"//|href=\"//", text), f"{template.name} loads from the network"
