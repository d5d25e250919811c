from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import EXPIRES, ISSUED, KID, NOW, PAYLOAD, SYSTEM_ID
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from entitle_device import (
    DEFAULT_CLOCK_SKEW,
    BadSignature,
    Expired,
    IssuedInFuture,
    KeyRing,
    License,
    LicenseError,
    MalformedLicense,
    NotForThisSystem,
    UnknownKey,
    UnsupportedVersion,
    sign_license,
    verify,
)
from entitle_device._encoding import b64u_encode
from entitle_device.licensefile import DOMAIN


def sign(key: Ed25519PrivateKey, **changes: Any) -> str:
    arguments: dict[str, Any] = dict(kid=KID, payload=PAYLOAD, issued=ISSUED, expires=EXPIRES,
                                     ttl=0, subject=SYSTEM_ID)
    arguments.update(changes)
    return sign_license(key, **arguments)


def replace_line(text: str, prefix: str, new_line: str) -> str:
    lines = text.split("\n")
    (index,) = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    lines[index] = new_line
    return "\n".join(lines)


def resign(text: str, key: Ed25519PrivateKey) -> str:
    """Sign the header lines of ``text`` as they are (keeping the last header's name): for files
    that only a careless or hostile issuer would make (the library's own signer refuses to)."""
    lines = text.split("\n")
    signed = "\n".join(lines[1:-3]) + "\n"
    name = lines[-3].partition(": ")[0]
    lines[-3] = f"{name}: " + b64u_encode(key.sign(DOMAIN + signed.encode()))
    return "\n".join(lines)


# --- round trip ---------------------------------------------------------------------------------

def test_a_signed_license_file_verifies_and_returns_what_was_signed(
    issuer: Ed25519PrivateKey, ring: KeyRing, license_text: str
) -> None:
    # R-CORE-9: the issuer signs, the device verifies offline with the public key alone
    license = verify(license_text, ring, NOW, SYSTEM_ID)
    assert license == License(kid=KID, issued=ISSUED, expires=EXPIRES, ttl=0,
                              subject=(SYSTEM_ID, "ACCC8E000001"), payload=PAYLOAD)
    assert license.is_for("ACCC8E000001") and not license.is_for("ACCC8E000002")
    assert verify(license_text.encode("ascii"), ring, NOW) == license  # bytes too
    assert verify(license_text, ring, NOW, "ACCC8E000001") == license  # any listed subject


def test_the_file_is_the_documented_text(license_text: str) -> None:
    # R-CORE-9: key id, algorithm, issued, expiry, payload and signature, in this order
    lines = license_text.split("\n")
    assert lines[0] == "-----BEGIN ENTITLE LICENSE FILE-----"
    assert lines[1:8] == [
        "Version: 1", "Algorithm: Ed25519", f"Key-Id: {KID}", "Issued: 2026-11-23T19:00:00Z",
        "Expires: 2027-11-23T19:00:00Z", "TTL: 0", f"Subject: {SYSTEM_ID},ACCC8E000001",
    ]
    assert lines[8].startswith("Payload: ") and lines[9].startswith("Signature: ")
    assert lines[10:] == ["-----END ENTITLE LICENSE FILE-----", ""]


def test_the_signature_covers_every_header_line_under_the_domain_prefix(
    issuer: Ed25519PrivateKey, license_text: str
) -> None:
    # R-CORE-9: signature over a domain-separated prefix and all header lines
    lines = license_text.split("\n")
    message = DOMAIN + ("\n".join(lines[1:9]) + "\n").encode()
    signature_line = "Signature: " + b64u_encode(issuer.sign(message))
    assert lines[9] == signature_line


def test_a_license_that_never_expires(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9
    text = sign(issuer, expires=None)
    assert "\nExpires: never\n" in text
    far_future = datetime(9999, 12, 31, tzinfo=timezone.utc)
    assert verify(text, ring, far_future).expires is None


def test_times_are_stored_in_utc_to_the_second(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9, R-CORE-7: aware UTC times
    prague = timezone(timedelta(hours=1))
    text = sign(issuer, issued=datetime(2026, 11, 23, 20, 0, 0, 750_000, tzinfo=prague))
    assert "\nIssued: 2026-11-23T19:00:00Z\n" in text
    assert verify(text, ring, NOW).issued == ISSUED


def test_old_files_keep_verifying_after_rotation(issuer: Ed25519PrivateKey) -> None:
    # R-CORE-9: signing keys can be rotated; old files keep verifying against the ring
    new_key = Ed25519PrivateKey.generate()
    old_file = sign(issuer)
    new_file = sign(new_key, kid="20271123-next")
    ring = KeyRing({KID: issuer.public_key()}).with_key("20271123-next", new_key.public_key())
    assert verify(old_file, ring, NOW).kid == KID
    assert verify(new_file, ring, NOW).kid == "20271123-next"


def test_refresh_due_is_issued_plus_ttl(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: the TTL says how long the file may be trusted without a refresh
    assert verify(sign(issuer), ring, NOW).refresh_due is None
    assert verify(sign(issuer, ttl=3600), ring, ISSUED).refresh_due == ISSUED + timedelta(hours=1)
    end_of_time = License(KID, datetime(9999, 1, 1, tzinfo=timezone.utc), None, 10**9, ("a",), {})
    assert end_of_time.refresh_due == datetime.max.replace(tzinfo=timezone.utc)


# --- each failure, told apart --------------------------------------------------------------------

def test_unknown_key(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: unknown key
    with pytest.raises(UnknownKey) as raised:
        verify(sign(issuer, kid="20991123-unknown"), ring, NOW)
    assert raised.value.code == "unknown_key"
    assert raised.value.detail == {"kid": "20991123-unknown"}


def test_bad_signature_from_another_key_under_a_known_id(ring: KeyRing) -> None:
    # R-CORE-9: bad signature
    with pytest.raises(BadSignature) as raised:
        verify(sign(Ed25519PrivateKey.generate()), ring, NOW)
    assert raised.value.code == "bad_signature"


@pytest.mark.parametrize("old, new", [
    ("Expires: 2027-11-23T19:00:00Z", "Expires: 2037-11-23T19:00:00Z"),
    ("Issued: 2026-11-23T19:00:00Z", "Issued: 2026-11-23T19:00:01Z"),
    (f"Subject: {SYSTEM_ID}", "Subject: SYS-ACCC8E-000043"),
    ("TTL: 0", "TTL: 1"),
    (f"Key-Id: {KID}", "Key-Id: 20251123-vectors"),
])
def test_a_changed_header_line_breaks_the_signature(
    issuer: Ed25519PrivateKey, old: str, new: str
) -> None:
    # R-CORE-9: header fields are signed too, not only the payload
    text = sign(issuer)
    ring = KeyRing({KID: issuer.public_key(), "20251123-vectors": issuer.public_key()})
    assert old in text
    with pytest.raises(BadSignature):
        verify(text.replace(old, new), ring, NOW)


def test_a_changed_payload_breaks_the_signature(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9
    other = sign(issuer, payload={**PAYLOAD, "licenses": [{"type": "core", "count": 200}]})
    payload_line = [line for line in other.split("\n") if line.startswith("Payload: ")][0]
    with pytest.raises(BadSignature):
        verify(replace_line(sign(issuer), "Payload: ", payload_line), ring, NOW)


def test_not_for_this_system(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: not for this system/device
    text = sign(issuer, subject=[SYSTEM_ID, "54-2211-0318"])
    assert verify(text, ring, NOW, "54-2211-0318").subject == (SYSTEM_ID, "54-2211-0318")
    with pytest.raises(NotForThisSystem) as raised:
        verify(text, ring, NOW, "54-2211-0319")
    assert raised.value.code == "not_for_this_system"
    assert raised.value.detail == {"expected": "54-2211-0319", "subject": f"{SYSTEM_ID},54-2211-0318"}
    with pytest.raises(NotForThisSystem):
        verify(text, ring, NOW, SYSTEM_ID.lower())  # serials compare exactly


def test_expired_from_the_expiry_instant_on(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: expired; valid while now < Expires
    text = sign(issuer)
    assert verify(text, ring, EXPIRES - timedelta(seconds=1)).expires == EXPIRES
    with pytest.raises(Expired) as raised:
        verify(text, ring, EXPIRES)
    assert raised.value.code == "expired"
    assert raised.value.detail == {"reason": "expires", "at": "2027-11-23T19:00:00Z"}


def test_expired_when_the_ttl_ran_out(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: a file past its TTL must be refreshed; it is no longer trusted
    text = sign(issuer, ttl=86_400)
    assert verify(text, ring, ISSUED + timedelta(seconds=86_399)).ttl == 86_400
    with pytest.raises(Expired) as raised:
        verify(text, ring, ISSUED + timedelta(days=1))
    assert raised.value.detail == {"reason": "ttl", "at": "2026-11-24T19:00:00Z"}


def test_issued_in_the_future_means_the_clock_was_set_back(
    issuer: Ed25519PrivateKey, ring: KeyRing
) -> None:
    # R-CORE-9: issued in the future (clock set back), beyond a small allowed skew
    text = sign(issuer)
    assert verify(text, ring, ISSUED - DEFAULT_CLOCK_SKEW).issued == ISSUED
    with pytest.raises(IssuedInFuture) as raised:
        verify(text, ring, ISSUED - DEFAULT_CLOCK_SKEW - timedelta(seconds=1))
    assert raised.value.code == "issued_in_future"
    assert raised.value.detail == {"issued": "2026-11-23T19:00:00Z", "now": "2026-11-23T18:54:59Z"}
    with pytest.raises(IssuedInFuture):
        verify(text, ring, ISSUED - timedelta(seconds=1), clock_skew=timedelta(0))


def test_checks_run_in_the_documented_order(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: format -> version -> key -> signature -> subject -> time; first failure wins
    expired_elsewhere = sign(issuer, subject="SYS-OTHER", expires=ISSUED + timedelta(days=1))
    with pytest.raises(NotForThisSystem):  # subject before time
        verify(expired_elsewhere, ring, NOW, SYSTEM_ID)
    with pytest.raises(Expired):
        verify(expired_elsewhere, ring, NOW)
    forged = sign(Ed25519PrivateKey.generate(), subject="SYS-OTHER")
    with pytest.raises(BadSignature):  # signature before subject
        verify(forged, ring, NOW, SYSTEM_ID)
    unknown = sign(Ed25519PrivateKey.generate(), kid="20991123-unknown")
    with pytest.raises(UnknownKey):  # key before signature
        verify(unknown, ring, NOW)
    with pytest.raises(UnsupportedVersion):  # version before key
        verify(unknown.replace("Version: 1", "Version: 2"), ring, NOW)
    with pytest.raises(MalformedLicense):  # format before version
        verify(unknown.replace("Version: 1", "Version: 2").replace("-----BEGIN", "----BEGIN"),
               ring, NOW)


def test_a_newer_version_is_reported_as_such_whatever_follows(ring: KeyRing) -> None:
    # R-CORE-9: a device can say "update me" rather than "broken file"
    text = "-----BEGIN ENTITLE LICENSE FILE-----\nVersion: 2\nAnything: new\n" \
           "-----END ENTITLE LICENSE FILE-----\n"
    with pytest.raises(UnsupportedVersion) as raised:
        verify(text, ring, NOW)
    assert raised.value.code == "unsupported_version" and raised.value.detail == {"version": "2"}


def test_now_must_be_aware(license_text: str, ring: KeyRing) -> None:
    # R-CORE-7: aware UTC only; a naive now is the caller's bug, not a bad file
    with pytest.raises(ValueError, match="timezone-aware"):
        verify(license_text, ring, datetime(2026, 12, 1))


def test_now_in_another_zone_is_the_same_instant(license_text: str, ring: KeyRing) -> None:
    tokyo = timezone(timedelta(hours=9))
    with pytest.raises(Expired):
        verify(license_text, ring, EXPIRES.astimezone(tokyo))


# --- strict format: each rule ------------------------------------------------------------------

def malformations(text: str) -> dict[str, str]:
    lines = text.split("\n")
    payload = lines[8]
    return {
        "too large": text + " " * (64 * 1024),
        "not ascii": text.replace("Ed25519", "Ed25519\u00e9"),
        "BOM": "\ufeff" + text,
        "empty": "",
        "text before BEGIN": "x\n" + text,
        "blank line after END": text + "\n",
        "no END": "\n".join(lines[:-2]),
        "lone CR": text.replace("\nTTL", "\rTTL"),
        "CR inside a line": text.replace("TTL: 0", "TTL: \r0"),
        "no Version line": text.replace("Version: 1\n", ""),
        "Version not first": text.replace("Version: 1\nAlgorithm: Ed25519",
                                          "Algorithm: Ed25519\nVersion: 1"),
        "Version with a leading zero": text.replace("Version: 1", "Version: 01"),
        "Version not a number": text.replace("Version: 1", "Version: one"),
        "Version with trailing space": text.replace("Version: 1", "Version: 1 "),
        "other algorithm": text.replace("Algorithm: Ed25519", "Algorithm: Ed448"),
        "lower-case header": text.replace("Key-Id:", "key-id:"),
        "no space after colon": text.replace("Key-Id: ", "Key-Id:"),
        "two spaces after colon": text.replace("Key-Id: ", "Key-Id:  "),
        "duplicate header": text.replace("TTL: 0\n", "TTL: 0\nTTL: 0\n"),
        "missing header": text.replace("TTL: 0\n", ""),
        "swapped headers": text.replace("Issued: 2026-11-23T19:00:00Z\nExpires: 2027-11-23T19:00:00Z",
                                        "Expires: 2027-11-23T19:00:00Z\nIssued: 2026-11-23T19:00:00Z"),
        "unknown header": text.replace("TTL: 0\n", "Comment: 0\n"),
        "signature renamed": text.replace("Signature: ", "Sig: "),
        "signature not last": "\n".join(lines[:8] + [lines[9], lines[8]] + lines[10:]),
        "signature too short": replace_line(text, "Signature: ", lines[9][:-3]),
        "signature padded": replace_line(text, "Signature: ", lines[9] + "=="),
        "key id with a space": text.replace(f"Key-Id: {KID}", "Key-Id: a b"),
        "empty key id": text.replace(f"Key-Id: {KID}", "Key-Id: "),
        "issued with offset": text.replace("Issued: 2026-11-23T19:00:00Z",
                                           "Issued: 2026-11-23T19:00:00+00:00"),
        "issued not a date": text.replace("Issued: 2026-11-23", "Issued: 2026-02-30"),
        "expires before issued": text.replace("Expires: 2027-11-23T19:00:00Z",
                                              "Expires: 2025-11-23T19:00:00Z"),
        "expires equal to issued": text.replace("Expires: 2027-11-23T19:00:00Z",
                                                "Expires: 2026-11-23T19:00:00Z"),
        "expires Never": text.replace("Expires: 2027-11-23T19:00:00Z", "Expires: Never"),
        "negative TTL": text.replace("TTL: 0", "TTL: -1"),
        "TTL with leading zero": text.replace("TTL: 0", "TTL: 010"),
        "TTL with eleven digits": text.replace("TTL: 0", "TTL: 10000000000"),
        "TTL with underscore": text.replace("TTL: 0", "TTL: 1_0"),
        "empty subject": text.replace(f"Subject: {SYSTEM_ID},ACCC8E000001", "Subject: "),
        "subject with space": text.replace(f"Subject: {SYSTEM_ID},", f"Subject: {SYSTEM_ID}, "),
        "subject trailing comma": text.replace(",ACCC8E000001", ",ACCC8E000001,"),
        "subject twice": text.replace(",ACCC8E000001", f",{SYSTEM_ID}"),
        "payload padded": text.replace(payload, payload + "="),
        "payload standard base64": text.replace(payload, "Payload: +" + payload[10:]),
        "payload not json": replace_line(text, "Payload: ", "Payload: " + b64u_encode(b"hello")),
        "payload a list": replace_line(text, "Payload: ", "Payload: " + b64u_encode(b"[1]")),
        "payload latin-1": replace_line(text, "Payload: ",
                                        "Payload: " + b64u_encode('{"a":"\u00e9"}'.encode("latin-1"))),
        "payload NaN": replace_line(text, "Payload: ", "Payload: " + b64u_encode(b'{"a":NaN}')),
        "payload deeply nested": replace_line(text, "Payload: ",
                                              "Payload: " + b64u_encode(b'{"a":' + b"[" * 40_000)),
    }


MALFORMATION_NAMES = list(malformations(sign(Ed25519PrivateKey.generate())))


@pytest.mark.parametrize("name", MALFORMATION_NAMES)
def test_a_malformed_file_is_refused_before_any_key_is_used(
    name: str, issuer: Ed25519PrivateKey, ring: KeyRing, license_text: str
) -> None:
    # R-CORE-9: strict, cheap parsing; "malformed" even when re-signed by the right key
    text = malformations(license_text)[name]
    with pytest.raises(MalformedLicense) as raised:
        verify(text, ring, NOW)
    assert raised.value.code == "malformed"
    # Problems in the header lines stay problems when the issuer's key signs them.
    if (not name.startswith("signature") and text.count("\n") == 11
            and text.endswith("-----END ENTITLE LICENSE FILE-----\n")):
        with pytest.raises(MalformedLicense):
            verify(resign(text, issuer), ring, NOW)


def test_non_ascii_bytes_are_malformed(license_text: str, ring: KeyRing) -> None:
    # R-CORE-9
    with pytest.raises(MalformedLicense):
        verify(license_text.encode("ascii") + b"\xff", ring, NOW)
    with pytest.raises(MalformedLicense):
        verify(license_text.encode("ascii") + b" " * (64 * 1024), ring, NOW)


def test_the_size_limit_is_64_kib(issuer: Ed25519PrivateKey, ring: KeyRing) -> None:
    # R-CORE-9: a file up to the limit is read, one byte more is not
    skeleton = sign(issuer, payload={"pad": ""})
    pad = "x" * ((64 * 1024 - len(skeleton)) * 3 // 4)
    text = sign(issuer, payload={"pad": pad})
    while len(text) < 64 * 1024:
        pad += "x"
        text = sign(issuer, payload={"pad": pad})
    text = sign(issuer, payload={"pad": pad[:-1]})  # the largest that fits
    assert verify(text, ring, NOW).payload == {"pad": pad[:-1]}
    with pytest.raises(ValueError, match="at most 65536"):
        sign(issuer, payload={"pad": pad + "xxxx"})


def test_crlf_line_endings_read_as_the_same_file(license_text: str, ring: KeyRing) -> None:
    # R-CORE-9: decided: \r\n and \n are the same file (mail and Windows editors change them);
    # the final line ending is optional. Nothing else about the text may differ.
    expected = verify(license_text, ring, NOW)
    assert verify(license_text.replace("\n", "\r\n"), ring, NOW) == expected
    assert verify(license_text.rstrip("\n"), ring, NOW) == expected
    mixed = license_text.replace("\n", "\r\n", 4)
    assert verify(mixed, ring, NOW) == expected


# --- signing-side refusals ---------------------------------------------------------------------

@pytest.mark.parametrize("changes, error", [
    ({"kid": "bad id"}, ValueError),
    ({"expires": ISSUED}, ValueError),
    ({"ttl": -1}, ValueError),
    ({"ttl": 10**10}, ValueError),
    ({"ttl": True}, ValueError),
    ({"ttl": 1.5}, ValueError),
    ({"subject": []}, ValueError),
    ({"subject": ["a", "a"]}, ValueError),
    ({"subject": "a,b"}, ValueError),
    ({"issued": datetime(2026, 11, 23)}, ValueError),
    ({"expires": datetime(2027, 11, 23)}, ValueError),
    ({"payload": [1]}, TypeError),
    ({"payload": {"a": (1, 2)}}, ValueError),
    ({"payload": {1: "a"}}, ValueError),
    ({"payload": {"a": float("inf")}}, ValueError),
    ({"payload": {"a": object()}}, TypeError),
])
def test_the_signer_refuses_what_a_verifier_could_not_read_back(
    issuer: Ed25519PrivateKey, changes: dict[str, Any], error: type[Exception]
) -> None:
    # R-CORE-9: the server cannot make a file the devices would refuse or misread
    with pytest.raises(error):
        sign(issuer, **changes)


def test_the_signer_needs_an_ed25519_private_key(issuer: Ed25519PrivateKey) -> None:
    with pytest.raises(TypeError, match="Ed25519PrivateKey"):
        sign(issuer.public_key())  # type: ignore[arg-type]


# --- properties --------------------------------------------------------------------------------

def canonical(text: str) -> str:
    """The decided equivalence: \\r\\n is \\n, and the final line ending is optional."""
    return text.replace("\r\n", "\n").removesuffix("\n")


@st.composite
def mutations(draw: st.DrawFn, text: str) -> bytes:
    data = bytearray(text.encode("ascii"))
    kind = draw(st.sampled_from(["flip", "truncate", "insert", "delete", "swap lines", "dup line",
                                 "set byte", "crlf"]))
    lines = text.split("\n")
    if kind == "flip":
        index = draw(st.integers(0, len(data) - 1))
        data[index] ^= 1 << draw(st.integers(0, 7))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)):]
    elif kind == "insert":
        index = draw(st.integers(0, len(data)))
        data[index:index] = draw(st.binary(min_size=1, max_size=4))
    elif kind == "delete":
        index = draw(st.integers(0, len(data) - 1))
        del data[index:index + draw(st.integers(1, 4))]
    elif kind == "swap lines":
        first, second = draw(st.integers(0, len(lines) - 1)), draw(st.integers(0, len(lines) - 1))
        lines[first], lines[second] = lines[second], lines[first]
        data = bytearray("\n".join(lines).encode("ascii"))
    elif kind == "dup line":
        index = draw(st.integers(0, len(lines) - 1))
        lines.insert(index, lines[index])
        data = bytearray("\n".join(lines).encode("ascii"))
    elif kind == "set byte":
        data[draw(st.integers(0, len(data) - 1))] = draw(st.sampled_from(b"\r\n =-_Aa0:,"))
    else:
        index = draw(st.integers(0, len(lines) - 2))
        data = bytearray(("\n".join(lines[:index + 1]) + "\r\n" + "\n".join(lines[index + 1:]))
                         .encode("ascii"))
    return bytes(data)


@pytest.fixture(scope="module")
def sample(issuer: Ed25519PrivateKey) -> str:
    return sign(issuer, subject=[SYSTEM_ID, "ACCC8E000001"], ttl=2_592_000)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_changed_file_is_never_accepted_and_never_crashes(
    data: st.DataObject, sample: str, ring: KeyRing
) -> None:
    # R-CORE-9: flips, truncations, insertions, deletions, reordered and repeated lines: only the
    # library's errors, and nothing accepted unless it is the same file by the decided equivalence
    original = verify(sample, ring, NOW)
    mutated = data.draw(mutations(sample))
    for text in (mutated, mutated.decode("latin-1")):
        try:
            result = verify(text, ring, NOW)
        except LicenseError:
            continue
        assert canonical(mutated.decode("ascii")) == canonical(sample)
        assert result == original


@settings(max_examples=500)
@given(st.one_of(st.text(max_size=300), st.binary(max_size=300)))
def test_arbitrary_input_raises_only_library_errors(text: str | bytes) -> None:
    # R-CORE-9: never a KeyError, ValueError or UnicodeError from a file
    ring = KeyRing({KID: Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()})
    with pytest.raises(LicenseError):
        verify(text, ring, NOW)


HEADER_VALUE = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=127), max_size=30)


@settings(max_examples=500, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(field=st.sampled_from(["Key-Id", "Issued", "Expires", "TTL", "Subject"]), value=HEADER_VALUE)
def test_any_header_value_signed_by_the_issuer_gives_a_license_or_a_library_error(
    field: str, value: str, issuer: Ed25519PrivateKey, sample: str, ring: KeyRing
) -> None:
    # R-CORE-9: even a correctly signed file with odd values never crashes the verifier
    text = resign(replace_line(sample, f"{field}: ", f"{field}: {value}"), issuer)
    try:
        license = verify(text, ring, NOW)
    except LicenseError:
        return
    assert isinstance(license, License)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children,
                                                                        max_size=4),
    max_leaves=20,
).filter(lambda value: not isinstance(value, (list, tuple))).map(
    lambda value: value if isinstance(value, dict) else {"value": value}))
def test_any_json_payload_round_trips(
    payload: dict[str, Any], issuer: Ed25519PrivateKey, ring: KeyRing
) -> None:
    # R-CORE-9: what the issuer signs is what the device reads
    assert verify(sign(issuer, payload=payload), ring, NOW).payload == payload
    assert json.loads(json.dumps(payload)) == payload


def test_read_unverified_shows_contents_without_trusting_them(issuer: Ed25519PrivateKey) -> None:
    # R-CORE-9: `entitle license show` reads a file for a person; a forged signature still reads,
    # while verify refuses it.
    from entitle_device import read_unverified

    text = sign(issuer)
    shown = read_unverified(text)
    assert shown.kid == KID and shown.subject == (SYSTEM_ID,) and shown.payload == PAYLOAD
    lines = text.split("\n")
    forged = "\n".join(line if not line.startswith("Signature: ") else "Signature: " + "A" * 86
                       for line in lines)
    assert read_unverified(forged).payload == PAYLOAD
    with pytest.raises(MalformedLicense):
        read_unverified("not a license file")
