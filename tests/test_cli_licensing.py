"""`entitle keys signing`, `entitle license`, `entitle system-file` (R-CORE-9, R-AX-11)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from conftest import TEST_SECRET_KEY, World
from entitle.cli.main import app
from entitle.config import get_settings
from entitle.systems.models import System

runner = CliRunner()


@pytest.fixture
def cli(ctx, monkeypatch):
    # The console must share the server's secret key to use its signing keys.
    monkeypatch.setenv("ENTITLE_SECRET_KEY", TEST_SECRET_KEY)
    get_settings.cache_clear()
    url = ctx.settings.database_url

    def run(*args: str, db: bool = True) -> Result:
        return runner.invoke(app, [*args, *(["--database-url", url] if db else [])], prog_name="entitle")

    yield run
    get_settings.cache_clear()


def test_offline_system_round_trip_through_the_cli(ctx, cli, world: World, tmp_path: Path):
    # R-AX-11 + R-CORE-9: make a system file, upload it, verify the license file offline.
    org = world.org("Acme")
    key_file, sys_file = tmp_path / "system.pem", tmp_path / "system.sys"
    r = cli("system-file", "make", "--system-id", "SYS-CLI-1", "--product", "axis-camera-station",
            "--key-file", str(key_file), "--need", "core=7", "--device", "ACCC8E000001",
            "--out", str(sys_file), db=False)
    assert r.exit_code == 0, r.output
    assert key_file.stat().st_mode & 0o777 == 0o600
    lic_file = tmp_path / "system.lic"
    r = cli("system-file", "upload", str(sys_file), "--org", str(org), "--out", str(lic_file))
    assert r.exit_code == 0, r.output
    assert "System SYS-CLI-1 registered; license file written to" in r.output and "valid until" in r.output
    with ctx.sessions() as s:
        system = s.scalars(select(System)).one()
        assert (system.org_id, system.uid, system.need) == (org, "SYS-CLI-1", {"core": 7})
    ring = tmp_path / "ring.json"
    assert cli("keys", "signing", "export", "--out", str(ring)).exit_code == 0
    r = cli("license", "verify", str(lic_file), "--public-keys", str(ring), "--system", "SYS-CLI-1",
            "--json", db=False)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["payload"]["need"] == {"core": 7}
    # Not for another system.
    r = cli("license", "verify", str(lic_file), "--public-keys", str(ring), "--system", "SYS-OTHER", db=False)
    assert r.exit_code == 1 and "license_not_for_this_system" in r.stderr
    # Expired once its validity has passed (here the trial's end); the console uses the real clock.
    expires = json.loads(cli("license", "show", str(lic_file), "--json", db=False).stdout)["expires"]
    later = (datetime.fromisoformat(expires) + timedelta(seconds=1)).isoformat()
    r = cli("license", "verify", str(lic_file), "--public-keys", str(ring), "--at", later, db=False)
    assert r.exit_code == 1 and "license_expired" in r.stderr
    # Uploading the same file again is a replay.
    r = cli("system-file", "upload", str(sys_file), "--org", str(org))
    assert r.exit_code == 1 and "system_file_replayed" in r.stderr


def test_rotation_keeps_old_files_verifying(ctx, cli, world: World, tmp_path: Path):
    # R-CORE-9
    org = world.org("Acme")
    sys_file = tmp_path / "s.sys"
    cli("system-file", "make", "--system-id", "SYS-CLI-2", "--product", "p", "--key-file",
        str(tmp_path / "k.pem"), "--out", str(sys_file), db=False)
    old = tmp_path / "old.lic"
    assert cli("system-file", "upload", str(sys_file), "--org", str(org), "--out", str(old)).exit_code == 0
    r = cli("keys", "signing", "rotate", "--json")
    assert r.exit_code == 0, r.output
    new_kid = json.loads(r.stdout)["kid"]
    ring = tmp_path / "ring.json"
    cli("keys", "signing", "export", "--out", str(ring))
    assert new_kid in ring.read_text()
    r = cli("license", "verify", str(old), "--public-keys", str(ring), "--json", db=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["kid"] != new_kid


def test_tampered_license_file_and_show(ctx, cli, world: World, tmp_path: Path):
    # R-CORE-9: a changed file is refused by verify; show prints it marked as not verified.
    org = world.org("Acme")
    sys_file, lic = tmp_path / "s.sys", tmp_path / "s.lic"
    cli("system-file", "make", "--system-id", "SYS-CLI-3", "--product", "p", "--key-file",
        str(tmp_path / "k.pem"), "--need", "core=1", "--out", str(sys_file), db=False)
    cli("system-file", "upload", str(sys_file), "--org", str(org), "--out", str(lic))
    ring = tmp_path / "ring.json"
    cli("keys", "signing", "export", "--out", str(ring))
    r = cli("license", "show", str(lic), "--json", db=False)
    assert r.exit_code == 0 and json.loads(r.stdout)["verified"] is False
    text = lic.read_text()
    payload_line = next(line for line in text.splitlines() if line.startswith("Payload: "))
    flipped = payload_line[:-3] + ("A" if payload_line[-3] != "A" else "B") + payload_line[-2:]
    lic.write_text(text.replace(payload_line, flipped))
    r = cli("license", "verify", str(lic), "--public-keys", str(ring), db=False)
    assert r.exit_code == 1
    assert "license_bad_signature" in r.stderr or "license_malformed" in r.stderr


def test_system_file_make_refuses_bad_need(cli, tmp_path: Path):
    r = cli("system-file", "make", "--system-id", "S", "--product", "p", "--key-file",
            str(tmp_path / "k.pem"), "--need", "core", db=False)
    assert r.exit_code == 1 and "need_invalid" in r.stderr


VECTORS = Path(__file__).parents[1] / "device" / "tests" / "vectors"


@pytest.mark.parametrize("vector", [v for v in json.loads((VECTORS / "vectors.json").read_text())["vectors"]
                                    if v["kind"] == "license"], ids=lambda v: v["file"])
def test_license_file_vectors_through_the_cli(cli, vector):
    # R-CORE-9: the device library's shared vectors give the same results through `entitle license verify`.
    args = ["license", "verify", str(VECTORS / vector["file"]), "--public-keys", str(VECTORS / "keyring.json"),
            "--at", vector["now"]]
    if vector.get("expected_subject"):
        args += ["--system", vector["expected_subject"]]
    r = cli(*args, db=False)
    if vector["expect"] == "ok":
        assert r.exit_code == 0, r.output
    else:
        assert r.exit_code == 1 and f"license_{vector['expect']}" in r.stderr, r.output


def test_offline_verify_follows_entitle_now(tmp_path, monkeypatch) -> None:  # noqa: ANN001
    # R-CORE-7: ENTITLE_NOW moves the clock of the offline commands too (an expired file is expired then).
    from datetime import UTC, datetime, timedelta

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from entitle_device import sign_license
    from entitle_device.keyring import public_key_bytes
    from typer.testing import CliRunner

    from entitle.cli.main import app
    from entitle.signing.services import b64u

    key = Ed25519PrivateKey.generate()
    issued = datetime(2027, 1, 1, tzinfo=UTC)
    text = sign_license(key, "k1", {"x": 1}, issued, issued + timedelta(days=10), 0, "SYS1")
    (tmp_path / "l.lic").write_text(text)
    ring = {"keys": [{"kid": "k1", "alg": "Ed25519", "public_key": b64u(public_key_bytes(key.public_key()))}]}
    (tmp_path / "ring.json").write_text(__import__("json").dumps(ring))
    args = ["license", "verify", str(tmp_path / "l.lic"), "--public-keys", str(tmp_path / "ring.json"), "--json"]
    monkeypatch.setenv("ENTITLE_NOW", "2027-01-05T00:00:00Z")
    assert CliRunner().invoke(app, args).exit_code == 0
    monkeypatch.setenv("ENTITLE_NOW", "2027-01-12T00:00:00Z")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "license_expired" in result.stderr
