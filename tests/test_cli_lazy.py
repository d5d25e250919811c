"""The console answers at once: `entitle --help` imports no business area, a command only the areas
it uses (cli/lazy.py), and the offline commands run with no database and create none.

The import checks run the CLI in a fresh interpreter and read its ``sys.modules`` afterwards: they
are about what is imported, never about how long it takes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.main import get_command

from conftest import World
from entitle.cli.main import COMMANDS, app
from entitle.context import Context

# Runs `entitle ARGS` in this interpreter, then prints its answer and what it imported, as JSON.
RUN_AND_LIST_MODULES = """
import contextlib, io, json, sys
from entitle.cli.main import app
out, err, code = io.StringIO(), io.StringIO(), 0
with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
    try:
        app(sys.argv[1:], prog_name="entitle")
    except SystemExit as exc:
        code = exc.code or 0
print(json.dumps({"code": code, "stdout": out.getvalue(), "stderr": err.getvalue(), "modules": sorted(sys.modules)}))
"""

AREAS = ("entitle.access_commander", "entitle.axis", "entitle.my2n", "entitle.delivery", "entitle.keys",
         "entitle.ledger", "entitle.tenancy", "entitle.catalog", "entitle.systems", "entitle.signing")


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    modules: set[str]

    def imported(self, *prefixes: str) -> list[str]:
        """The modules imported that are, or are inside, one of ``prefixes``."""
        return sorted(m for m in self.modules if any(m == p or m.startswith(p + ".") for p in prefixes))


def entitle(*args: str, cwd: Path, database_url: str | None = None) -> Run:
    """`entitle ARGS` in a fresh process, in ``cwd``, with no ENTITLE_* setting but the database's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLE_")}
    if database_url:
        env["ENTITLE_DATABASE_URL"] = database_url
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.splitlines()[-1])
    return Run(answer["code"], answer["stdout"], answer["stderr"], set(answer["modules"]))


# --- the registry ---------------------------------------------------------------------------------

def _first_paragraph(text: str | None) -> str:
    """What a listing shows of a command's help: its first paragraph, on one line."""
    return " ".join((text or "").strip().split("\n\n")[0].split())


@pytest.mark.parametrize("entry", COMMANDS, ids=lambda e: e.name)
def test_the_registry_lists_each_command_with_its_own_help(entry) -> None:  # noqa: ANN001
    command = get_command(app).commands[entry.name]  # imports it
    assert command.name == entry.name
    assert entry.help == _first_paragraph(command.help), f"main.py's help for `entitle {entry.name}` has drifted"


def test_every_command_is_in_the_registry() -> None:
    # A command registered on the app itself would be imported by every `entitle` run.
    assert list(get_command(app).commands) == [entry.name for entry in COMMANDS]


# --- what each command imports ---------------------------------------------------------------------

def test_help_lists_every_command_and_imports_none(tmp_path: Path) -> None:
    run = entitle("--help", cwd=tmp_path)
    assert run.code == 0, run.stderr
    listed = {line.split()[1] for line in run.stdout.splitlines() if line.startswith("│ ") and len(line.split()) > 2}
    assert {entry.name for entry in COMMANDS} <= listed
    assert run.imported("entitle") == ["entitle", "entitle.cli", "entitle.cli.lazy", "entitle.cli.main"]
    assert run.imported("sqlalchemy", "stripe", "pydantic_settings", "httpx", "fastapi", "yaml") == []


def test_ac_help_imports_no_other_licensing_model(tmp_path: Path) -> None:
    run = entitle("ac", "--help", cwd=tmp_path)
    assert run.code == 0 and "calculate" in run.stdout and "installation" in run.stdout, run.stderr
    assert run.imported("entitle.cli.access_commander")
    assert run.imported("entitle.my2n", "entitle.axis", "entitle.cli.my2n", "entitle.cli.axis", "stripe") == []


def test_ac_status_imports_no_other_licensing_model(world: World, ctx: Context, tmp_path: Path) -> None:
    org = world.org("Acme")
    run = entitle("ac", "status", "--org", str(org), "--installation", "1", "--database-url",
                  ctx.settings.database_url, cwd=tmp_path)
    assert run.code == 1 and "installation_not_found" in run.stderr, run.stderr  # it ran, to the lookup
    assert run.imported("entitle.my2n", "entitle.axis", "entitle.cli.my2n", "entitle.cli.axis", "stripe") == []


def test_wallet_show_imports_no_licensing_model_command(world: World, ctx: Context, tmp_path: Path) -> None:
    org = world.org("Acme")
    run = entitle("wallet", "show", "--org", str(org), "--database-url", ctx.settings.database_url, cwd=tmp_path)
    assert run.code == 0, run.stderr
    assert run.imported("entitle.access_commander", "entitle.my2n", "entitle.cli.access_commander",
                        "entitle.cli.axis", "entitle.cli.my2n", "stripe") == []


# --- the offline commands: no database, none created ---------------------------------------------

@pytest.fixture
def offline(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A working directory and a database URL that names a file (in a directory) that does not
    exist; after the test neither does, nor the default ./var."""
    absent = tmp_path / "absent" / "entitle.db"
    yield tmp_path, f"sqlite:///{absent}"
    assert not absent.parent.exists() and not (tmp_path / "var").exists()


def _license_files(where: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from entitle_device import sign_license
    from entitle_device.keyring import public_key_bytes

    from entitle.signing.services import b64u

    key = Ed25519PrivateKey.generate()
    issued = datetime.now(UTC).replace(microsecond=0)
    lic, ring = where / "device.lic", where / "ring.json"
    lic.write_text(sign_license(key, "k1", {"features": ["x"]}, issued, issued + timedelta(days=30), 0, "SYS-1"))
    ring.write_text(json.dumps({"keys": [{"kid": "k1", "alg": "Ed25519",
                                          "public_key": b64u(public_key_bytes(key.public_key()))}]}))
    return lic, ring


def test_license_show_and_verify_need_no_database(offline: tuple[Path, str]) -> None:
    cwd, url = offline
    lic, ring = _license_files(cwd)
    shown = entitle("license", "show", str(lic), "--json", cwd=cwd, database_url=url)
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["subject"] == ["SYS-1"]
    verified = entitle("license", "verify", str(lic), "--public-keys", str(ring), "--system", "SYS-1", cwd=cwd,
                       database_url=url)
    assert verified.code == 0 and verified.stdout.startswith("VALID: signed by k1"), verified.stderr
    for run in (shown, verified):
        assert run.imported("sqlalchemy", "entitle.db", "stripe", *AREAS) == []


def test_system_file_make_needs_no_database(offline: tuple[Path, str]) -> None:
    cwd, url = offline
    made = entitle("system-file", "make", "--system-id", "SYS-1", "--product", "axis-camera-station",
                   "--key-file", str(cwd / "system.pem"), "--need", "core=3", "--out", str(cwd / "system.sys"),
                   cwd=cwd, database_url=url)
    assert made.code == 0, made.stderr
    assert (cwd / "system.sys").read_text().strip()
    assert made.imported("sqlalchemy", "entitle.db", "stripe", *AREAS) == []


def test_calculate_with_no_database_uses_the_shipped_catalog_and_says_so(offline: tuple[Path, str]) -> None:
    # R-AC-1 on a machine with no database: 17 devices -> 4 x 91379040, 69 users -> 3 x 91379041.
    cwd, url = offline
    text = entitle("ac", "calculate", "--devices", "17", "--attendance-users", "69", cwd=cwd, database_url=url)
    assert text.code == 0, text.stderr
    assert "91379040" in text.stdout and "Smallest tier: AC-TIER-ADVANCED" in text.stdout
    assert text.stderr.startswith("catalog: default (no database at ")
    body = json.loads(entitle("ac", "calculate", "--devices", "17", "--attendance-users", "69", "--json",
                              cwd=cwd, database_url=url).stdout)
    assert body["catalog"] == "default"
    assert [(p["part_number"], p["quantity"]) for p in body["packages"]] == [("91379040", 4), ("91379041", 3)]
