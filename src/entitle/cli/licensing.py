"""Signed license files, the signing key ring, and system files of offline systems (R-CORE-9, R-AX-11).

`license verify`, `license show` and `system-file make` run offline (on a device, an offline
installation) with no database: the services and the database are imported only by the commands
that use them.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import KeyRing, License, LicenseError, make_system_file, read_unverified, verify

from entitle.cli.common import (DatabaseUrl, JsonOut, OrgRef, console_actor, context, handles_errors, org_ref, plain,
                                print_json, read_text_file)
from entitle.errors import EntitleError

signing_app = typer.Typer(help="The issuer's Ed25519 signing keys.", no_args_is_help=True)
license_app = typer.Typer(help="Signed license files: verify and show (offline).", no_args_is_help=True)
system_file_app = typer.Typer(help="System files of offline systems: make and upload.", no_args_is_help=True)

OutFile = Annotated[Path | None, typer.Option("--out", help="Write to this file instead of stdout.")]


def _write(text: str, path: Path | None) -> None:
    if path is None:
        typer.echo(text, nl=not text.endswith("\n"))
    else:
        path.write_text(text)



# --- signing keys ----------------------------------------------------------------------------

@signing_app.command("rotate")
@handles_errors
def signing_rotate(database_url: DatabaseUrl = None, as_json: JsonOut = False) -> None:
    """Make a new current signing key. Files signed by older keys keep verifying."""
    from entitle.db import transaction
    from entitle.signing import services as signing

    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        row = signing.rotate(s, secret=ctx.secret, actor=console_actor(), now=ctx.clock.now())
        result = {"kid": row.kid, "alg": row.algorithm, "public_key": signing.b64u(row.public_key)}
    if as_json:
        print_json(result)
    else:
        plain(f"New current signing key: {result['kid']}")


@signing_app.command("export")
@handles_errors
def signing_export(out_file: OutFile = None, database_url: DatabaseUrl = None) -> None:
    """Export the public key ring (JSON) for devices and `entitle license verify`."""
    from entitle.db import reading
    from entitle.signing import services as signing

    with context(database_url) as ctx, reading(ctx.sessions) as s:
        ring = signing.keyring(s)
    _write(ring.dumps(), out_file)


# --- license files ---------------------------------------------------------------------------

def _license_dict(lic: License) -> dict[str, Any]:
    return {"kid": lic.kid, "issued": lic.issued.isoformat(),
            "expires": lic.expires.isoformat() if lic.expires else None, "ttl": lic.ttl,
            "subject": list(lic.subject), "payload": lic.payload}


def _now() -> datetime:
    """The offline commands' clock: the machine's, or ENTITLE_NOW when set."""
    from entitle.config import Settings

    return Settings().now or datetime.now(UTC)


def _when(at: str | None) -> datetime:
    if at is None:
        return _now()
    try:
        moment = datetime.fromisoformat(at.replace("Z", "+00:00"))
    except ValueError:
        raise EntitleError("time_invalid", f"--at {at!r} is not an ISO 8601 time like 2027-01-31T12:00:00Z.") from None
    if moment.tzinfo is None:
        raise EntitleError("time_invalid", "--at needs a time zone, e.g. 2027-01-31T12:00:00Z.")
    return moment


@license_app.command("verify")
@handles_errors
def license_verify(
    file: Annotated[Path, typer.Argument(help="The license file.")],
    public_keys: Annotated[Path, typer.Option("--public-keys", help="Key ring JSON (`entitle keys signing export`).")],
    system: Annotated[str | None, typer.Option("--system", help="This system's id or device serial.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="Verify as of this time (default: now).")] = None,
    as_json: JsonOut = False,
) -> None:
    """Verify a license file offline, as a device would; exit 1 with the reason if it is not good."""
    try:
        ring = KeyRing.loads(read_text_file(public_keys))
        lic = verify(read_text_file(file), ring, _when(at), system)
    except LicenseError as exc:
        raise EntitleError(f"license_{exc.code}", str(exc), **{k: str(v) for k, v in exc.detail.items()}) from None
    if as_json:
        print_json({"valid": True, **_license_dict(lic)})
    else:
        plain(f"VALID: signed by {lic.kid}, for {', '.join(lic.subject)}, expires "
              f"{lic.expires.isoformat() if lic.expires else 'never'}")


@license_app.command("show")
@handles_errors
def license_show(file: Annotated[Path, typer.Argument(help="The license file.")], as_json: JsonOut = False) -> None:
    """Show what a license file says, WITHOUT verifying it (use `license verify` for that)."""
    try:
        lic = read_unverified(read_text_file(file))
    except LicenseError as exc:
        raise EntitleError(f"license_{exc.code}", str(exc)) from None
    data = _license_dict(lic)
    if as_json:
        print_json({"verified": False, **data})
        return
    plain("NOT VERIFIED - contents as written:")
    for name, value in data.items():
        plain(f"  {name}: {value}")


# --- system files ----------------------------------------------------------------------------

def _system_key(path: Path) -> Ed25519PrivateKey:
    """The installation's own key: read it, or make one (owner-only file) on first use."""
    if not path.exists():
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
        return key
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError, OSError) as exc:
        raise EntitleError("system_key_unreadable", f"{path} is not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise EntitleError("system_key_unreadable", f"{path} holds a key that is not Ed25519.")
    return key


def _need(items: list[str]) -> dict[str, int]:
    need: dict[str, int] = {}
    for item in items:
        kind, sep, count = item.partition("=")
        if not sep or not count.isdigit():
            raise EntitleError("need_invalid", f"--need {item!r}: write LICENSE_TYPE=COUNT, e.g. core=12.")
        need[kind] = int(count)
    return need


@system_file_app.command("make")
@handles_errors
def system_file_make(
    system_id: Annotated[str, typer.Option("--system-id", help="This installation's identity.")],
    product: Annotated[str, typer.Option("--product", help="Product code, e.g. axis-camera-station.")],
    key_file: Annotated[Path, typer.Option("--key-file", help="The installation's Ed25519 key (PEM); made if absent.")],
    need: Annotated[list[str], typer.Option("--need", help="LICENSE_TYPE=COUNT, repeatable.")] = [],  # noqa: B006
    device: Annotated[list[str], typer.Option("--device", help="A device serial number, repeatable.")] = [],  # noqa: B006
    out_file: OutFile = None,
) -> None:
    """Make a signed system file on an offline installation (identity, need, devices, nonce)."""
    try:
        text = make_system_file(_system_key(key_file), system_id, product, _need(need), device,
                                _now())
    except (ValueError, TypeError) as exc:
        raise EntitleError("system_file_invalid", str(exc)) from None
    _write(text, out_file)


@system_file_app.command("upload")
@handles_errors
def system_file_upload(
    file: Annotated[Path, typer.Argument(help="The system file.")],
    org: OrgRef,
    out_file: Annotated[Path | None, typer.Option("--out", help="Write the license file here.")] = None,
    database_url: DatabaseUrl = None,
    as_json: JsonOut = False,
) -> None:
    """Register or update an offline system from its system file; print its license file."""
    from entitle.db import transaction
    from entitle.systems import services as systems

    text = read_text_file(file)
    with context(database_url) as ctx, transaction(ctx.sessions) as s:
        done = systems.upload_system_file(s, org_id=org_ref(s, org), text=text, actor=console_actor(),
                                          now=ctx.clock.now(), secret=ctx.secret)
        result = {"system": systems.to_dict(done.system), "license_file": done.license_file,
                  "outcome": done.verb, "license_expires": done.expires.isoformat()}
    if as_json:
        print_json(result)
    elif out_file is not None:
        out_file.write_text(done.license_file)
        plain(f"System {done.system.uid} {done.verb}; license file written to {out_file}, "
              f"valid until {done.expires:%Y-%m-%d %H:%M} UTC.")
    else:
        _write(done.license_file, None)
