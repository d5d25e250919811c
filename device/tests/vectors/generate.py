"""Write the test vectors in this folder. Ed25519 signatures are deterministic, so running this
again writes the same bytes; tests/test_vectors.py checks that the committed files still match.

    ../.venv-device/bin/python tests/vectors/generate.py     (from device/)
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import KeyRing, make_system_file, sign_license
from entitle_device._encoding import format_timestamp

HERE = Path(__file__).parent
ISSUER_SEED_HEX = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"  # RFC 8032 test 1
OLD_ISSUER_SEED_HEX = "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb"  # RFC 8032 test 2
STRANGER_SEED_HEX = "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"  # RFC 8032 test 3
SYSTEM_SEED_HEX = "f5e5767cf153319517630f226876b86c8160cc583bc013744c6bf255f5cc0ee5"  # RFC 8032 test 1024
KID = "20261123-vectors"
OLD_KID = "20251123-vectors"
ISSUED = datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
EXPIRES = datetime(2027, 11, 23, 19, 0, tzinfo=timezone.utc)
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)
SYSTEM_ID = "SYS-ACCC8E-000042"
PAYLOAD: dict[str, Any] = {
    "organization": "org_7f3a2c",
    "product": "axis",
    "system": SYSTEM_ID,
    "devices": ["ACCC8E000001", "ACCC8E000002"],
    "licenses": [{"type": "core", "count": 2, "year": {"start": "2026-11-23", "end": "2027-11-22"}}],
    "features": ["ldap", "csv-sync"],
}


def axis_offline(state: str, until: datetime, reason: str, **ends: str | None) -> dict[str, Any]:
    """What the server puts in an offline AXIS system's license file (docs/license-file.md); times
    in the payload are ISO 8601 as the server writes them."""
    licensed = {"state": state, "subscription_start": ends.pop("subscription_start", None),
                "grace_end": None, "trial_end": None, "licensed_until": None,
                "valid_until": until.isoformat(), "valid_until_reason": reason, "years": []}
    licensed.update(ends)
    return {"organization": 7, "system": SYSTEM_ID, "product": "axis-camera-station", "need": {"core": 2},
            "devices": ["ACCC8E000001", "ACCC8E000002"], "licensed": licensed}


# Offline AXIS files: each expires at the next moment its state can change (R-AX-11).
GRACE_ISSUED = datetime(2026, 11, 20, tzinfo=timezone.utc)
GRACE_END = datetime(2026, 12, 15, tzinfo=timezone.utc)
GRACE_PAYLOAD = axis_offline("in_grace", GRACE_END, "grace_end",
                             subscription_start="2026-11-15T00:00:00+00:00", grace_end=GRACE_END.isoformat())
TRIAL_ISSUED = datetime(2026, 11, 1, tzinfo=timezone.utc)
TRIAL_END = TRIAL_ISSUED + timedelta(days=90)
TRIAL_PAYLOAD = axis_offline("trial", TRIAL_END, "trial_end", trial_end=TRIAL_END.isoformat())
ENDED_GRACE_END = datetime(2026, 10, 31, tzinfo=timezone.utc)
ENDED_PAYLOAD = axis_offline("in_grace", ENDED_GRACE_END,
                             "grace_end", subscription_start="2026-10-01T00:00:00+00:00",
                             grace_end=ENDED_GRACE_END.isoformat())
# The same file read at other moments: (file, now, expected result).
MOMENTS = [
    ("license-axis-in-grace.lic", GRACE_END - timedelta(seconds=1), "ok"),
    ("license-axis-in-grace.lic", GRACE_END, "expired"),
    ("license-axis-trial.lic", TRIAL_END - timedelta(seconds=1), "ok"),
    ("license-axis-trial.lic", TRIAL_END, "expired"),
]


def key(seed_hex: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))


def replace_line(text: str, prefix: str, new_line: str) -> str:
    lines = text.split("\n")
    (index,) = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    lines[index] = new_line
    return "\n".join(lines)


def main() -> None:
    issuer, old_issuer, stranger = key(ISSUER_SEED_HEX), key(OLD_ISSUER_SEED_HEX), key(STRANGER_SEED_HEX)
    ring = KeyRing({KID: issuer.public_key(), OLD_KID: old_issuer.public_key()})
    valid = sign_license(issuer, KID, PAYLOAD, ISSUED, EXPIRES, 0, [SYSTEM_ID, "ACCC8E000001"])
    tampered_payload = sign_license(issuer, KID, {**PAYLOAD, "devices": ["ACCC8E000001"]}, ISSUED,
                                    EXPIRES, 0, [SYSTEM_ID, "ACCC8E000001"])
    signature_line = [l for l in valid.split("\n") if l.startswith("Signature: ")][0]
    system = make_system_file(key(SYSTEM_SEED_HEX), SYSTEM_ID, "axis", {"core": 2, "universal": 1},
                              ["ACCC8E000001", "ACCC8E000002"], NOW, nonce=bytes(range(16, 48)))
    system_signature = [l for l in system.split("\n") if l.startswith("Signature: ")][0]
    files: dict[str, str] = {
        "license-valid.lic": valid,
        "license-valid-crlf.lic": valid.replace("\n", "\r\n"),
        "license-old-key.lic": sign_license(old_issuer, OLD_KID, PAYLOAD, ISSUED, None, 0, SYSTEM_ID),
        "license-ttl.lic": sign_license(issuer, KID, PAYLOAD, ISSUED, None, 86_400, SYSTEM_ID),
        "license-expired.lic": sign_license(issuer, KID, PAYLOAD, ISSUED - timedelta(days=400),
                                            ISSUED - timedelta(days=35), 0, SYSTEM_ID),
        "license-issued-in-future.lic": sign_license(issuer, KID, PAYLOAD, NOW + timedelta(hours=1),
                                                     None, 0, SYSTEM_ID),
        "license-other-system.lic": sign_license(issuer, KID, PAYLOAD, ISSUED, EXPIRES, 0,
                                                 "SYS-ACCC8E-000099"),
        "license-unknown-key.lic": sign_license(stranger, "20261123-stranger", PAYLOAD, ISSUED,
                                                EXPIRES, 0, SYSTEM_ID),
        "license-wrong-key.lic": sign_license(stranger, KID, PAYLOAD, ISSUED, EXPIRES, 0, SYSTEM_ID),
        # Another file's payload line under this file's signature.
        "license-tampered-payload.lic": replace_line(
            valid, "Payload: ",
            [l for l in tampered_payload.split("\n") if l.startswith("Payload: ")][0]),
        "license-tampered-expires.lic": valid.replace("Expires: 2027-11-23T19:00:00Z",
                                                      "Expires: 2037-11-23T19:00:00Z"),
        "license-tampered-subject.lic": valid.replace(f"Subject: {SYSTEM_ID},", "Subject: SYS-OTHER,"),
        "license-version-2.lic": valid.replace("Version: 1", "Version: 2"),
        "license-duplicate-header.lic": valid.replace("TTL: 0\n", "TTL: 0\nTTL: 0\n"),
        # The same 64 signature bytes, spelled with non-zero unused bits in the last character.
        "license-noncanonical-signature.lic": replace_line(
            valid, "Signature: ", signature_line[:-1] + chr(ord(signature_line[-1]) + 1)),
        "license-axis-in-grace.lic": sign_license(issuer, KID, GRACE_PAYLOAD, GRACE_ISSUED, GRACE_END, 0,
                                                  SYSTEM_ID),
        "license-axis-grace-ended.lic": sign_license(issuer, KID, ENDED_PAYLOAD,
                                                     datetime(2026, 10, 10, tzinfo=timezone.utc),
                                                     ENDED_GRACE_END, 0, SYSTEM_ID),
        "license-axis-trial.lic": sign_license(issuer, KID, TRIAL_PAYLOAD, TRIAL_ISSUED, TRIAL_END, 0, SYSTEM_ID),
        "system-valid.sys": system,
        "system-tampered-need.sys": system.replace(
            [l for l in system.split("\n") if l.startswith("Payload: ")][0],
            [l for l in make_system_file(key(SYSTEM_SEED_HEX), SYSTEM_ID, "axis", {"core": 1},
                                         ["ACCC8E000001"], NOW, nonce=bytes(16)).split("\n")
             if l.startswith("Payload: ")][0]),
        "system-tampered-id.sys": system.replace(f"System-Id: {SYSTEM_ID}", "System-Id: SYS-OTHER"),
        "system-version-2.sys": system.replace("Version: 1", "Version: 2"),
        "system-short-nonce.sys": make_system_file(key(SYSTEM_SEED_HEX), SYSTEM_ID, "axis", {}, [],
                                                   NOW, nonce=bytes(16)).replace(
            "Nonce: AAAAAAAAAAAAAAAAAAAAAA", "Nonce: AAAAAAAAAAAAAAAAAAAA"),
        "system-noncanonical-signature.sys": replace_line(
            system, "Signature: ", system_signature[:-1] + chr(ord(system_signature[-1]) + 1)),
    }
    expectations = {
        "license-valid.lic": "ok",
        "license-valid-crlf.lic": "ok",
        "license-old-key.lic": "ok",
        "license-ttl.lic": "expired",  # TTL of one day, NOW is eight days after Issued
        "license-expired.lic": "expired",
        "license-issued-in-future.lic": "issued_in_future",
        "license-other-system.lic": "not_for_this_system",
        "license-unknown-key.lic": "unknown_key",
        "license-wrong-key.lic": "bad_signature",
        "license-tampered-payload.lic": "bad_signature",
        "license-tampered-expires.lic": "bad_signature",
        "license-tampered-subject.lic": "bad_signature",
        "license-version-2.lic": "unsupported_version",
        "license-duplicate-header.lic": "malformed",
        "license-noncanonical-signature.lic": "malformed",
        "license-axis-in-grace.lic": "ok",  # NOW is in the grace period the file grants
        "license-axis-grace-ended.lic": "expired",  # its grace period ended before NOW
        "license-axis-trial.lic": "ok",
        "system-valid.sys": "ok",
        "system-tampered-need.sys": "bad_signature",
        "system-tampered-id.sys": "bad_signature",
        "system-version-2.sys": "unsupported_version",
        "system-short-nonce.sys": "malformed_system_file",
        "system-noncanonical-signature.sys": "malformed_system_file",
    }
    assert set(files) == set(expectations)
    vectors = []
    for name, text in files.items():
        (HERE / name).write_bytes(text.encode("ascii"))
        entry: dict[str, Any] = {"file": name, "expect": expectations[name]}
        if name.startswith("license-"):
            entry.update(kind="license", now=format_timestamp(NOW), expected_subject=SYSTEM_ID)
        else:
            entry.update(kind="system")
        vectors.append(entry)
    for name, now, expect in MOMENTS:
        vectors.append({"file": name, "expect": expect, "kind": "license", "now": format_timestamp(now),
                        "expected_subject": SYSTEM_ID})
    (HERE / "keyring.json").write_text(ring.dumps())
    document = {
        "comment": "Entitle device library test vectors; see docs/license-file.md. Seeds are "
                   "Ed25519 private keys (RFC 8032 section 7.1 test keys), hex.",
        "issuer": {"kid": KID, "seed_hex": ISSUER_SEED_HEX},
        "old_issuer": {"kid": OLD_KID, "seed_hex": OLD_ISSUER_SEED_HEX},
        "stranger": {"kid": "20261123-stranger", "seed_hex": STRANGER_SEED_HEX},
        "system": {"system_id": SYSTEM_ID, "seed_hex": SYSTEM_SEED_HEX},
        "keyring": "keyring.json",
        "expected": {
            "license-valid.lic": {
                "kid": KID, "issued": format_timestamp(ISSUED), "expires": format_timestamp(EXPIRES),
                "ttl": 0, "subject": [SYSTEM_ID, "ACCC8E000001"], "payload": PAYLOAD,
            },
            "license-axis-in-grace.lic": {
                "kid": KID, "issued": format_timestamp(GRACE_ISSUED), "expires": format_timestamp(GRACE_END),
                "ttl": 0, "subject": [SYSTEM_ID], "payload": GRACE_PAYLOAD,
            },
            "license-axis-trial.lic": {
                "kid": KID, "issued": format_timestamp(TRIAL_ISSUED), "expires": format_timestamp(TRIAL_END),
                "ttl": 0, "subject": [SYSTEM_ID], "payload": TRIAL_PAYLOAD,
            },
            "system-valid.sys": {
                "system_id": SYSTEM_ID, "product": "axis", "created": format_timestamp(NOW),
                "nonce_hex": bytes(range(16, 48)).hex(), "need": {"core": 2, "universal": 1},
                "devices": ["ACCC8E000001", "ACCC8E000002"],
                "public_key_hex": key(SYSTEM_SEED_HEX).public_key().public_bytes_raw().hex(),
            },
        },
        "vectors": vectors,
    }
    (HERE / "vectors.json").write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
