from __future__ import annotations

import base64
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from entitle_device._encoding import (
    b64u_decode,
    b64u_encode,
    canonical_json,
    check_identifier,
    format_timestamp,
    is_identifier,
    parse_json_object,
    parse_timestamp,
    require_aware,
    whole_seconds,
)
from entitle_device.errors import MalformedLicense


@given(st.binary(max_size=200))
def test_base64url_round_trips_without_padding(data: bytes) -> None:
    # R-CORE-9: payload, signature and keys are unpadded base64url
    text = b64u_encode(data)
    assert "=" not in text
    assert b64u_decode(text, MalformedLicense, "x") == data


@given(st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= é",
               max_size=40))
def test_base64url_accepts_exactly_one_text_per_byte_string(text: str) -> None:
    # R-CORE-9: no two spellings of one signature (a changed file must never verify)
    try:
        data = b64u_decode(text, MalformedLicense, "x")
    except MalformedLicense:
        return
    assert b64u_encode(data) == text


@pytest.mark.parametrize("text", ["QQ=", "QR", "QUF", "QUJ", "Q", "QU+D", "QU/D", "QU D", "QUé", "éUI", "QQ==QQ"])
def test_base64url_refuses_padding_noncanonical_bits_and_other_alphabets(text: str) -> None:
    # R-CORE-9
    with pytest.raises(MalformedLicense):
        b64u_decode(text, MalformedLicense, "x")


def test_base64url_matches_the_standard_library() -> None:
    data = bytes(range(256))
    assert b64u_encode(data) == base64.urlsafe_b64encode(data).decode().rstrip("=")


def test_timestamps_are_utc_whole_seconds_with_z() -> None:
    # R-CORE-9: issued and expiry are written one way only
    moment = datetime(2026, 11, 23, 20, 0, 0, 999_999, tzinfo=timezone(timedelta(hours=1)))
    assert format_timestamp(moment) == "2026-11-23T19:00:00Z"
    assert whole_seconds(moment) == datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
    parsed = parse_timestamp("2026-11-23T19:00:00Z", MalformedLicense, "Issued")
    assert parsed == datetime(2026, 11, 23, 19, 0, tzinfo=timezone.utc)
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize("text", [
    "2026-11-23T19:00:00", "2026-11-23T19:00:00+00:00", "2026-11-23 19:00:00Z",
    "2026-11-23T19:00:00.5Z", "2026-11-23t19:00:00z", "2026-02-30T19:00:00Z",
    "2026-13-01T00:00:00Z", "2026-11-23T24:00:00Z", "0000-01-01T00:00:00Z", "+026-11-23T19:00:00Z",
])
def test_timestamps_in_any_other_form_are_refused(text: str) -> None:
    # R-CORE-9
    with pytest.raises(MalformedLicense) as raised:
        parse_timestamp(text, MalformedLicense, "Issued")
    assert raised.value.detail == {"field": "Issued"}


def test_naive_or_non_datetimes_are_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        require_aware(datetime(2026, 11, 23), "now")
    with pytest.raises(TypeError, match="datetime"):
        require_aware("2026-11-23", "now")  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["SYS-1", "54-2211-0318", "a", "x" * 128, "urn:a.b_c"])
def test_identifiers(text: str) -> None:
    assert is_identifier(text)
    assert check_identifier(text, "subject") == text


@pytest.mark.parametrize("text", ["", "-a", "a b", "a,b", "x" * 129, "é", "a\n", 5])
def test_not_identifiers(text: str) -> None:
    assert not (isinstance(text, str) and is_identifier(text))
    with pytest.raises(ValueError, match="subject"):
        check_identifier(text, "subject")


def test_canonical_json_is_sorted_compact_ascii() -> None:
    assert canonical_json({"b": 1, "a": ["é", None, True]}) == b'{"a":["\\u00e9",null,true],"b":1}'
    with pytest.raises(ValueError):
        canonical_json({"a": float("nan")})


@pytest.mark.parametrize("raw", [
    b"\xff{}", b"{", b"[]", b'"x"', b'{"a":NaN}', b'{"a":Infinity}', b'{"a":1e999}',
    b"[" * 100_000, b'{"a":' + b"1" * 5000 + b"}",
])
def test_json_that_is_not_a_plain_object_is_refused(raw: bytes) -> None:
    # R-CORE-9: only the library's own error escapes, even for deep nesting or huge numbers
    with pytest.raises(MalformedLicense):
        parse_json_object(raw, MalformedLicense, "Payload")


def test_json_object_is_read() -> None:
    assert parse_json_object(b'{"a":[1.5,"x"]}', MalformedLicense, "Payload") == {"a": [1.5, "x"]}


@pytest.mark.parametrize("raw", [b' {"a":1}', b'{"a":1} ', b'\n{"a":1}\t\r\n', b'{ "a" : 1 }'])
def test_json_whitespace_around_and_inside_the_object_is_read(raw: bytes) -> None:
    # R-CORE-9: verifiers do not require canonical JSON from the (trusted) issuer
    assert parse_json_object(raw, MalformedLicense, "Payload") == {"a": 1}


@pytest.mark.parametrize("raw", [b"", b" ", b'{"a":1}{}', b'{"a":1} x', b' {"a":1}]', b"1 2"])
def test_json_with_nothing_or_more_than_one_value_is_refused(raw: bytes) -> None:
    with pytest.raises(MalformedLicense) as raised:
        parse_json_object(raw, MalformedLicense, "Payload")
    assert raised.value.detail == {"field": "Payload"}
