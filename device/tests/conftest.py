from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import KeyRing, make_system_file, sign_license

# The machine is shared with other work: time per example varies too much for a deadline to mean
# anything. Coverage of inputs, not speed, is what these properties test (speed: bench_verify.py).
settings.register_profile("device", deadline=None)
settings.load_profile("device")

VECTORS = Path(__file__).parent / "vectors"
ISSUED = datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
EXPIRES = datetime(2027, 11, 23, 19, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
KID = "20261123-vectors"
SYSTEM_ID = "SYS-ACCC8E-000042"
PAYLOAD: dict[str, Any] = {
    "organization": "org_7f3a2c",
    "product": "axis",
    "licenses": [{"type": "core", "count": 2}],
    "features": ["ldap", "csv-sync"],
}


def load_vectors() -> dict[str, Any]:
    document: dict[str, Any] = json.loads((VECTORS / "vectors.json").read_text())
    return document


def seed_key(seed_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


@pytest.fixture(scope="session")
def issuer() -> Ed25519PrivateKey:
    return seed_key(load_vectors()["issuer"]["seed_hex"])


@pytest.fixture(scope="session")
def system_key() -> Ed25519PrivateKey:
    return seed_key(load_vectors()["system"]["seed_hex"])


@pytest.fixture(scope="session")
def ring(issuer: Ed25519PrivateKey) -> KeyRing:
    return KeyRing({KID: issuer.public_key()})


@pytest.fixture(scope="session")
def license_text(issuer: Ed25519PrivateKey) -> str:
    return sign_license(issuer, KID, PAYLOAD, ISSUED, EXPIRES, 0, [SYSTEM_ID, "ACCC8E000001"])


@pytest.fixture(scope="session")
def system_text(system_key: Ed25519PrivateKey) -> str:
    return make_system_file(system_key, SYSTEM_ID, "axis", {"core": 2}, ["ACCC8E000001"], NOW,
                            nonce=bytes(range(32)))
