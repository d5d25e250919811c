"""The small, strict encodings both file formats share: identifiers, base64url, timestamps, JSON.

Parsers take the error class to raise, so each format reports its own error and nothing else
escapes (no ValueError, binascii.Error or UnicodeError).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, NoReturn

from entitle_device.errors import LicenseError

# Identifiers: key ids, system ids, device serials, products, license types. A leading
# alphanumeric, then a short run of URL- and filename-safe characters; never a space or a comma.
IDENTIFIER_MAX = 128
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}", re.ASCII)
_PADDING = (b"", b"", b"==", b"=")  # by length mod 4
# By length mod 4: the characters that may end an unpadded base64url text of length 2 or 3 (mod
# 4). Their unused low bits must be zero, or two texts would decode to the same bytes.
_LAST: tuple[frozenset[str], ...] = (
    frozenset(), frozenset(), frozenset("AQgw"), frozenset("AEIMQUYcgkosw048")
)
_TIMESTAMP = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z", re.ASCII)

JsonObject = dict[str, Any]


def fail(error: type[LicenseError], message: str, **detail: str) -> NoReturn:
    raise error(message, detail)


# For hot paths: a match (truthy) for an identifier, None for anything else.
match_identifier = _IDENTIFIER.fullmatch


def is_identifier(text: str) -> bool:
    return _IDENTIFIER.fullmatch(text) is not None


def check_identifier(value: object, what: str) -> str:
    """For the signing side: refuse what the reading side would refuse, before signing it."""
    if not isinstance(value, str) or not is_identifier(value):
        raise ValueError(
            f"{what} must be 1-{IDENTIFIER_MAX} characters of A-Z a-z 0-9 . _ : - "
            f"starting with a letter or digit, not {value!r}"
        )
    return value


def b64u_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64u_decode(text: str, error: type[LicenseError], what: str) -> bytes:
    """Decode unpadded base64url, accepting exactly one text for each byte string."""
    remainder = len(text) & 3
    if (
        (remainder and (remainder == 1 or text[-1] not in _LAST[remainder]))
        or "+" in text
        or "/" in text
        or "=" in text
    ):
        fail(error, f"{what} is not canonical unpadded base64url", field=what)
    try:
        # base64url to base64 for strict mode, which refuses anything else outside the alphabet
        # (binascii.Error); non-ASCII text does not encode (UnicodeEncodeError): ValueErrors both.
        # Two replaces cost a tenth of bytes.translate: they only copy when there is something
        # to replace, and find it at memchr speed.
        data = text.encode("ascii").replace(b"-", b"+").replace(b"_", b"/")
        return binascii.a2b_base64(data + _PADDING[remainder], strict_mode=True)
    except ValueError:
        fail(error, f"{what} is not canonical unpadded base64url", field=what)


def format_timestamp(moment: datetime) -> str:
    """UTC, whole seconds, ``Z``. Sub-second parts are dropped (floored)."""
    require_aware(moment, "timestamp")
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def whole_seconds(moment: datetime) -> datetime:
    require_aware(moment, "timestamp")
    return moment.astimezone(timezone.utc).replace(microsecond=0)


def parse_timestamp(text: str, error: type[LicenseError], what: str) -> datetime:
    if _TIMESTAMP.fullmatch(text) is None:
        fail(error, f"{what} must look like 2026-11-23T19:00:00Z", field=what)
    try:
        return datetime.fromisoformat(text)  # 3.11+: reads the trailing Z as UTC
    except ValueError:  # the shape is right but the date is not (month 13, February 30)
        fail(error, f"{what} is not a real date and time", field=what)


def require_aware(moment: datetime, what: str) -> None:
    if not isinstance(moment, datetime):
        raise TypeError(f"{what} must be a datetime, not {type(moment).__name__}")
    if moment.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC); naive datetimes are refused")


def canonical_json(value: JsonObject) -> bytes:
    """Sorted keys, no whitespace, ASCII only, no NaN: one text for one value."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _refuse_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999 reads as inf, which JSON cannot say
        raise ValueError(f"{text} is out of range")
    return value


# Built once: json.loads with hooks would build a new decoder on every call.
_JSON = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)
# The C scanner behind _JSON.decode, without decode's whitespace handling (typeshed omits it).
_SCAN: Callable[[str, int], tuple[Any, int]] = _JSON.scan_once  # type: ignore[attr-defined]


def parse_json_object(raw: bytes, error: type[LicenseError], what: str) -> JsonObject:
    try:
        text = raw.decode("utf-8")
        # The usual text is one value from its first character to its last: scan just that. The
        # rest (whitespace around the value, extra data, no value at all) goes through decode,
        # which accepts or refuses exactly as it always did.
        try:
            value, end = _SCAN(text, 0)
        except StopIteration:  # no value at 0: decode says why (or skips leading whitespace)
            end = -1
        if end != len(text):
            value = _JSON.decode(text)
    except (ValueError, RecursionError):  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        fail(error, f"{what} is not UTF-8 JSON", field=what)
    if not isinstance(value, dict):
        fail(error, f"{what} must be a JSON object", field=what)
    return value
