"""License files (R-CORE-9): signed by the issuer, verified offline with the public key ring.

The format is specified in docs/license-file.md. ``verify`` checks, in this order, and stops at the
first failure:

1. framing            -> MalformedLicense     (size, ASCII, BEGIN/END, first line Version)
2. version            -> UnsupportedVersion   (Version is a number other than 1)
3. version 1 fields   -> MalformedLicense     (header names and order, every value, the payload)
4. key                -> UnknownKey           (Key-Id not in the key ring)
5. signature          -> BadSignature
6. subject            -> NotForThisSystem     (only when an expected subject is given)
7. time               -> IssuedInFuture, then Expired (Expires reached, or TTL ran out)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import _document
from entitle_device._encoding import (
    JsonObject,
    b64u_decode,
    b64u_encode,
    canonical_json,
    check_identifier,
    fail,
    format_timestamp,
    match_identifier,
    parse_json_object,
    parse_timestamp,
    require_aware,
    whole_seconds,
)
from entitle_device.errors import (
    BadSignature,
    Expired,
    IssuedInFuture,
    MalformedLicense,
    NotForThisSystem,
    UnknownKey,
)
from entitle_device.keyring import KeyRing

__all__ = ["DEFAULT_CLOCK_SKEW", "MAX_TTL", "License", "sign_license", "verify"]

DOMAIN = b"entitle-license-file/v1\n"
NEVER = "never"
MAX_TTL = 9_999_999_999  # ten digits, about 317 years
# How far the verifier's clock may lag the issuer's before a new file counts as "issued in the
# future" (a clock set back). Devices without NTP drift; five minutes is generous and still useful.
DEFAULT_CLOCK_SKEW = timedelta(minutes=5)
_UTC_MAX = datetime.max.replace(tzinfo=timezone.utc)
_SECOND = timedelta(seconds=1)

KIND = _document.DocumentKind(
    begin="-----BEGIN ENTITLE LICENSE FILE-----",
    end="-----END ENTITLE LICENSE FILE-----",
    fields=("Key-Id", "Issued", "Expires", "TTL", "Subject", "Payload"),
    domain=DOMAIN,
    malformed=MalformedLicense,
    name="license file",
)


@dataclass(frozen=True, slots=True)
class License:
    """A verified license file's contents."""

    kid: str
    issued: datetime
    expires: datetime | None  # None: never expires
    ttl: int  # seconds from ``issued`` the file may be trusted without a refresh; 0: no limit
    subject: tuple[str, ...]  # the system ids and device serials the file is for
    payload: JsonObject  # what it licenses; the issuer's JSON object

    def is_for(self, identifier: str) -> bool:
        return identifier in self.subject

    @property
    def refresh_due(self) -> datetime | None:
        """When the TTL runs out (the file must be replaced before then), or None without a TTL."""
        if not self.ttl:
            return None
        try:
            return self.issued + timedelta(seconds=self.ttl)
        except OverflowError:  # past year 9999: as good as never
            return _UTC_MAX


def sign_license(
    private_key: Ed25519PrivateKey,
    kid: str,
    payload: Mapping[str, Any],
    issued: datetime,
    expires: datetime | None,
    ttl: int,
    subject: str | Sequence[str],
) -> str:
    """Make a signed license file. Times are stored in UTC to the second (fractions dropped).

    Raises ValueError or TypeError for arguments a verifier would refuse to read back.
    """
    if not isinstance(private_key, Ed25519PrivateKey):
        raise TypeError("private_key must be an Ed25519PrivateKey")
    check_identifier(kid, "key id")
    issued = whole_seconds(issued)
    if expires is not None:
        expires = whole_seconds(expires)
        if expires <= issued:
            raise ValueError("expires must be later than issued")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 <= ttl <= MAX_TTL:
        raise ValueError(f"ttl must be an integer number of seconds from 0 to {MAX_TTL}")
    subjects = [subject] if isinstance(subject, str) else list(subject)
    if not subjects:
        raise ValueError("a license file is for at least one system or device")
    for item in subjects:
        check_identifier(item, "subject")
    if len(set(subjects)) != len(subjects):
        raise ValueError("subject lists a system or device twice")
    if not isinstance(payload, Mapping):
        raise TypeError("payload must be a mapping")
    encoded = canonical_json(dict(payload))
    # What the device reads back must be what the server meant: no tuples turned into lists, no
    # integer keys turned into strings.
    if parse_json_object(encoded, MalformedLicense, "Payload") != dict(payload):
        raise ValueError("payload must be plain JSON: str keys, lists, str, int, float, bool, None")
    values = [
        kid,
        format_timestamp(issued),
        NEVER if expires is None else format_timestamp(expires),
        str(ttl),
        ",".join(subjects),
        b64u_encode(encoded),
    ]
    return _document.build(KIND, values, private_key)


def _read(text: str | bytes) -> tuple[License, bytes, bytes]:
    """Steps 1-3: the file's contents, unverified, with the signed message and the signature."""
    values, message, signature = _document.parse(text, KIND)
    kid, issued_text, expires_text, ttl_text, subject_text, payload_text = values
    if match_identifier(kid) is None:
        fail(MalformedLicense, "Key-Id is 1-128 characters of A-Z a-z 0-9 . _ : -", field="Key-Id")
    issued = parse_timestamp(issued_text, MalformedLicense, "Issued")
    expires = None
    if expires_text != NEVER:
        expires = parse_timestamp(expires_text, MalformedLicense, "Expires")
        if expires <= issued:
            fail(MalformedLicense, "Expires is not later than Issued", field="Expires")
    # 0, or 1 to 10 digits without a leading zero (the file is ASCII, so isdigit means 0-9).
    if not (ttl_text.isdigit() and len(ttl_text) <= 10 and (ttl_text[0] != "0" or ttl_text == "0")):
        fail(MalformedLicense, "TTL is a number of seconds (0 to 10 digits, no leading zero)",
             field="TTL")
    subject = tuple(subject_text.split(","))
    if not all(map(match_identifier, subject)):
        fail(MalformedLicense, "Subject is a comma-separated list of identifiers", field="Subject")
    if len(subject) > 1 and len(set(subject)) != len(subject):
        fail(MalformedLicense, "Subject lists an identifier twice", field="Subject")
    payload = parse_json_object(
        b64u_decode(payload_text, MalformedLicense, "Payload"), MalformedLicense, "Payload"
    )
    license = License(kid, issued, expires, int(ttl_text), subject, payload)
    return license, message, signature


def read_unverified(text: str | bytes) -> License:
    """The file's contents WITHOUT checking its signature, key or dates: for showing a file to a
    person. Never trust what it returns; use ``verify``. Raises MalformedLicense or
    UnsupportedVersion for a file that cannot be read."""
    return _read(text)[0]


def verify(
    text: str | bytes,
    keyring: KeyRing,
    now: datetime,
    expected_subject: str | None = None,
    *,
    clock_skew: timedelta = DEFAULT_CLOCK_SKEW,
) -> License:
    """Verify a license file offline and return its contents.

    ``now`` is the verifier's current time, timezone-aware. ``expected_subject`` is this system's
    id or this device's serial; when given, the file must list it. Raises exactly one
    LicenseError subclass for a file that is not good now (see the module docstring for the
    order); ValueError for a naive ``now``.
    """
    require_aware(now, "now")
    license, message, signature = _read(text)
    key = keyring.get(license.kid)
    if key is None:
        fail(UnknownKey, f"the license file is signed with key {license.kid}, which this "
             "verifier does not know", kid=license.kid)
    try:
        key.verify(signature, message)
    except InvalidSignature:
        fail(BadSignature, "the license file's signature does not match: it was changed or "
             "forged", kid=license.kid)
    if expected_subject is not None and expected_subject not in license.subject:
        fail(NotForThisSystem, f"the license file is not for {expected_subject}",
             expected=expected_subject, subject=",".join(license.subject))
    # Differences, not sums: nothing can overflow near datetime.min or datetime.max.
    if license.issued - now > clock_skew:
        fail(IssuedInFuture, "the license file was issued after this system's current time: "
             "is the clock set back?", issued=format_timestamp(license.issued),
             now=format_timestamp(now))
    if license.expires is not None and now >= license.expires:
        fail(Expired, "the license expired", reason="expires",
             at=format_timestamp(license.expires))
    # Whole seconds since Issued (floored) reach the TTL exactly when the time since Issued does;
    # this costs a third of building timedelta(seconds=ttl) on every call.
    if license.ttl and (now - license.issued) // _SECOND >= license.ttl:
        fail(Expired, "the license file must be refreshed: its TTL ran out", reason="ttl",
             at=format_timestamp(license.issued + timedelta(seconds=license.ttl)))
    return license
