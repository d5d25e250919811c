"""System files (R-AX-11): how an offline installation tells the portal who it is and what it needs.

The installation signs the file with its own Ed25519 key and embeds the public half, so
``read_system_file`` proves the file was not changed since that key signed it. Whether that key
is the one registered for the system, whether the nonce was seen before (replay) and whether the
system belongs to the uploading organization are the server's checks, not this library's.

Format: docs/license-file.md ("System files").
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from entitle_device import _document
from entitle_device._encoding import (
    b64u_decode,
    b64u_encode,
    canonical_json,
    check_identifier,
    fail,
    format_timestamp,
    is_identifier,
    parse_json_object,
    parse_timestamp,
)
from entitle_device.errors import BadSignature, MalformedSystemFile
from entitle_device.keyring import PUBLIC_KEY_BYTES, public_key_bytes

__all__ = ["SystemFile", "make_system_file", "read_system_file"]

DOMAIN = b"entitle-system-file/v1\n"
NONCE_BYTES = 32  # what make_system_file draws
NONCE_MIN_BYTES = 16  # 128 bits, the least a reader accepts
NONCE_MAX_BYTES = 64
MAX_COUNT = 2**31 - 1

KIND = _document.DocumentKind(
    begin="-----BEGIN ENTITLE SYSTEM FILE-----",
    end="-----END ENTITLE SYSTEM FILE-----",
    fields=("System-Id", "Product", "Public-Key", "Created", "Nonce", "Payload"),
    domain=DOMAIN,
    malformed=MalformedSystemFile,
    name="system file",
)


@dataclass(frozen=True, slots=True)
class SystemFile:
    """A system file whose signature matched its embedded public key."""

    system_id: str
    product: str
    public_key: bytes  # raw 32-byte Ed25519 public key of the installation
    created: datetime
    nonce: bytes
    need: dict[str, int]  # license type -> number of devices (channels) that need one now
    devices: tuple[str, ...]  # serial numbers of the installation's devices


def make_system_file(
    private_key: Ed25519PrivateKey,
    system_id: str,
    product: str,
    need: Mapping[str, int],
    devices: Iterable[str],
    now: datetime,
    nonce: bytes | None = None,
) -> str:
    """Make a signed system file. ``nonce`` defaults to 32 fresh random bytes."""
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError("private_key must be an Ed25519PrivateKey")
    check_identifier(system_id, "system id")
    check_identifier(product, "product")
    need = dict(need)
    for license_type, count in need.items():
        check_identifier(license_type, "license type")
        if isinstance(count, bool) or not isinstance(count, int) or not 0 <= count <= MAX_COUNT:
            raise ValueError(f"the need for {license_type} must be an integer from 0 to {MAX_COUNT}")
    serials = list(devices)
    for serial in serials:
        check_identifier(serial, "device serial")
    if len(set(serials)) != len(serials):
        raise ValueError("a device serial is listed twice")
    if nonce is None:
        nonce = os.urandom(NONCE_BYTES)
    elif not isinstance(nonce, bytes) or not NONCE_MIN_BYTES <= len(nonce) <= NONCE_MAX_BYTES:
        raise ValueError(f"nonce must be {NONCE_MIN_BYTES} to {NONCE_MAX_BYTES} random bytes")
    values = [
        system_id,
        product,
        b64u_encode(public_key_bytes(private_key)),
        format_timestamp(now),
        b64u_encode(nonce),
        b64u_encode(canonical_json({"devices": serials, "need": need})),
    ]
    return _document.build(KIND, values, private_key)


def read_system_file(text: str | bytes) -> SystemFile:
    """Read a system file and check its signature with the public key it carries.

    Raises MalformedSystemFile, UnsupportedVersion or BadSignature, in that order of checking.
    """
    values, message, signature = _document.parse(text, KIND)
    system_id, product, key_text, created_text, nonce_text, payload_text = values
    for name, value in (("System-Id", system_id), ("Product", product)):
        if not is_identifier(value):
            fail(MalformedSystemFile, f"{name} is 1-128 characters of A-Z a-z 0-9 . _ : -",
                 field=name)
    raw_key = b64u_decode(key_text, MalformedSystemFile, "Public-Key")
    if len(raw_key) != PUBLIC_KEY_BYTES:
        fail(MalformedSystemFile, "an Ed25519 public key is 32 bytes", field="Public-Key")
    created = parse_timestamp(created_text, MalformedSystemFile, "Created")
    nonce = b64u_decode(nonce_text, MalformedSystemFile, "Nonce")
    if not NONCE_MIN_BYTES <= len(nonce) <= NONCE_MAX_BYTES:
        fail(MalformedSystemFile, f"Nonce is {NONCE_MIN_BYTES} to {NONCE_MAX_BYTES} bytes",
             field="Nonce")
    raw_payload = b64u_decode(payload_text, MalformedSystemFile, "Payload")
    need, devices = _read_payload(raw_payload)
    try:
        Ed25519PublicKey.from_public_bytes(raw_key).verify(signature, message)
    except InvalidSignature:
        fail(BadSignature, "the system file's signature does not match: it was changed",
             system_id=system_id)
    return SystemFile(system_id, product, raw_key, created, nonce, need, devices)


def _read_payload(raw: bytes) -> tuple[dict[str, int], tuple[str, ...]]:
    # The server reads system files from anywhere, so the payload must be exactly canonical
    # JSON: one text per content, no duplicate members, no whitespace games.
    payload = parse_json_object(raw, MalformedSystemFile, "Payload")
    if set(payload) != {"devices", "need"} or canonical_json(payload) != raw:
        fail(MalformedSystemFile, 'Payload is canonical JSON with exactly "devices" and "need"',
             field="Payload")
    need, devices = payload["need"], payload["devices"]
    if not isinstance(need, dict) or not all(
        is_identifier(license_type)
        and type(count) is int
        and 0 <= count <= MAX_COUNT
        for license_type, count in need.items()
    ):
        fail(MalformedSystemFile, "need maps license types to counts", field="Payload")
    if not isinstance(devices, list) or not all(
        isinstance(serial, str) and is_identifier(serial) for serial in devices
    ) or len(set(devices)) != len(devices):
        fail(MalformedSystemFile, "devices is a list of distinct serial numbers", field="Payload")
    return need, tuple(devices)
