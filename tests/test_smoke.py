from conftest import PASSWORD, auth


def test_healthz(client):
    r = client.get("/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok"


def test_redeem_flow(world, client):
    user = world.user("ann@example.com")
    org = world.org("Acme", owner=user)
    tok = client.post("/api/v1/auth/token", json={"email": "ann@example.com", "password": PASSWORD}).json()["token"]
    [code] = world.mint("91379040", quantity=2)
    r = client.post(f"/api/v1/orgs/{org}/wallet/redeem", json={"key": code}, headers=auth(tok, "k1"))
    assert r.status_code == 200, r.text
    assert r.json()["wallet_units"] == 2
    w = client.get(f"/api/v1/orgs/{org}/wallet", headers=auth(tok)).json()
    assert [(l["part_number"], l["units"]) for l in w["lines"]] == [("91379040", 2)]
