from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest
from conftest import NOW, SYSTEM_ID
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_licensefile import canonical, mutations

from entitle_device import (
    BadSignature,
    LicenseError,
    MalformedSystemFile,
    SystemFile,
    UnsupportedVersion,
    make_system_file,
    public_key_bytes,
    read_system_file,
)
from entitle_device import _document
from entitle_device._encoding import b64u_encode, format_timestamp
from entitle_device.systemfile import KIND


def build(key: Ed25519PrivateKey, payload: bytes, nonce: bytes = bytes(16),
          public_key: bytes | None = None) -> str:
    """A system file signed over values as given: what a buggy or hostile installation sends."""
    values = [SYSTEM_ID, "axis", b64u_encode(public_key or public_key_bytes(key)),
              format_timestamp(NOW), b64u_encode(nonce), b64u_encode(payload)]
    return _document.build(KIND, values, key)


def test_a_system_file_round_trips(system_key: Ed25519PrivateKey, system_text: str) -> None:
    # R-AX-11: identity, product, current need, devices, nonce, created, signed by its own key
    assert read_system_file(system_text) == SystemFile(
        system_id=SYSTEM_ID, product="axis", public_key=public_key_bytes(system_key),
        created=NOW, nonce=bytes(range(32)), need={"core": 2}, devices=("ACCC8E000001",))
    assert read_system_file(system_text.encode("ascii")) == read_system_file(system_text)


def test_the_file_is_the_documented_text(system_text: str) -> None:
    # R-AX-11
    lines = system_text.split("\n")
    assert lines[0] == "-----BEGIN ENTITLE SYSTEM FILE-----"
    assert [line.partition(": ")[0] for line in lines[1:-2]] == [
        "Version", "Algorithm", "System-Id", "Product", "Public-Key", "Created", "Nonce",
        "Payload", "Signature"]
    assert lines[-2:] == ["-----END ENTITLE SYSTEM FILE-----", ""]


def test_the_nonce_is_fresh_and_at_least_128_bits(system_key: Ed25519PrivateKey) -> None:
    # R-AX-11: a random nonce per file, so the server can refuse a replayed one
    first = read_system_file(make_system_file(system_key, SYSTEM_ID, "axis", {}, [], NOW))
    second = read_system_file(make_system_file(system_key, SYSTEM_ID, "axis", {}, [], NOW))
    assert len(first.nonce) == 32 and first.nonce != second.nonce
    assert first.need == {} and first.devices == ()


def test_a_changed_system_file_is_refused(system_text: str) -> None:
    # R-AX-11: a system file that was tampered with is refused
    for old, new in [(f"System-Id: {SYSTEM_ID}", "System-Id: SYS-OTHER"),
                     ("Product: axis", "Product: my2n"),
                     ("Created: 2026-12-01T12:00:00Z", "Created: 2026-12-01T12:00:01Z")]:
        with pytest.raises(BadSignature) as raised:
            read_system_file(system_text.replace(old, new))
        assert raised.value.code == "bad_signature"


def test_a_more_needy_payload_under_the_old_signature_is_refused(
    system_key: Ed25519PrivateKey, system_text: str
) -> None:
    # R-AX-11: the need cannot be edited on the way to the portal
    greedy = make_system_file(system_key, SYSTEM_ID, "axis", {"core": 200}, ["ACCC8E000001"], NOW,
                              nonce=bytes(range(32)))
    payload = [line for line in greedy.split("\n") if line.startswith("Payload: ")][0]
    original = [line for line in system_text.split("\n") if line.startswith("Payload: ")][0]
    with pytest.raises(BadSignature):
        read_system_file(system_text.replace(original, payload))


def test_a_file_signed_by_another_key_than_the_one_it_carries_is_refused(
    system_key: Ed25519PrivateKey,
) -> None:
    # R-AX-11
    other = Ed25519PrivateKey.generate()
    text = build(other, b'{"devices":[],"need":{}}', public_key=public_key_bytes(system_key))
    with pytest.raises(BadSignature):
        read_system_file(text)


def test_a_newer_version_is_unsupported(system_text: str) -> None:
    # R-AX-11
    with pytest.raises(UnsupportedVersion):
        read_system_file(system_text.replace("Version: 1", "Version: 2"))


def test_a_license_file_is_not_a_system_file(system_text: str) -> None:
    # R-AX-11: the two formats cannot be confused (other framing, other domain prefix)
    with pytest.raises(MalformedSystemFile) as raised:
        read_system_file(system_text.replace("SYSTEM FILE", "LICENSE FILE"))
    assert raised.value.code == "malformed_system_file"


@pytest.mark.parametrize("payload", [
    b'{"devices":[],"need":{}',
    b'{"devices":[]}',
    b'{"devices":[],"need":{},"x":1}',
    b'{"devices": [],"need":{}}',  # not canonical
    b'{"need":{},"devices":[]}',  # not sorted
    b'{"devices":[],"devices":[],"need":{}}',  # duplicate member
    b'{"devices":[],"need":[]}',
    b'{"devices":[],"need":{"core":-1}}',
    b'{"devices":[],"need":{"core":true}}',
    b'{"devices":[],"need":{"core":1.0}}',
    b'{"devices":[],"need":{"core":2147483648}}',
    b'{"devices":[],"need":{"bad type":1}}',
    b'{"devices":{},"need":{}}',
    b'{"devices":[1],"need":{}}',
    b'{"devices":["a b"],"need":{}}',
    b'{"devices":["a","a"],"need":{}}',
])
def test_a_signed_but_malformed_payload_is_refused(
    system_key: Ed25519PrivateKey, payload: bytes
) -> None:
    # R-AX-11: the server reads files from anywhere: exactly canonical JSON of the right shape
    with pytest.raises(MalformedSystemFile):
        read_system_file(build(system_key, payload))


@pytest.mark.parametrize("change", [
    lambda text: text.replace("System-Id: ", "System-Id: -"),
    lambda text: text.replace("Product: axis", "Product: ax is"),
    lambda text: text.replace("Created: 2026-12-01T12:00:00Z", "Created: 2026-12-01"),
    lambda text: text.replace("Public-Key: ", "Public-Key: AAAA"),
    lambda text: text.replace("Nonce: AAAAAAAAAAAAAAAAAAAAAA", "Nonce: AAAAAAAAAAAAAAAAAAAA"),
    lambda text: text.replace("Nonce: ", "Nonce: " + "A" * 86),
])
def test_malformed_headers_are_refused(system_key: Ed25519PrivateKey, change: Any) -> None:
    # R-AX-11
    with pytest.raises(MalformedSystemFile):
        read_system_file(change(build(system_key, b'{"devices":[],"need":{}}')))


@pytest.mark.parametrize("arguments, error", [
    ({"system_id": "a b"}, ValueError),
    ({"product": ""}, ValueError),
    ({"need": {"core": -1}}, ValueError),
    ({"need": {"core": True}}, ValueError),
    ({"need": {"core": 2**31}}, ValueError),
    ({"need": {"bad type": 1}}, ValueError),
    ({"devices": ["a", "a"]}, ValueError),
    ({"devices": ["a,b"]}, ValueError),
    ({"nonce": bytes(15)}, ValueError),
    ({"nonce": bytes(65)}, ValueError),
    ({"nonce": "0" * 32}, ValueError),
    ({"now": datetime(2026, 12, 1)}, ValueError),
    ({"private_key": "key"}, TypeError),
])
def test_make_refuses_what_read_would_refuse(
    system_key: Ed25519PrivateKey, arguments: dict[str, Any], error: type[Exception]
) -> None:
    # R-AX-11
    call: dict[str, Any] = dict(private_key=system_key, system_id=SYSTEM_ID, product="axis",
                                need={"core": 1}, devices=["a"], now=NOW, nonce=bytes(16))
    call.update(arguments)
    with pytest.raises(error):
        make_system_file(**call)


@settings(max_examples=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_changed_system_file_is_never_accepted_and_never_crashes(
    data: st.DataObject, system_text: str
) -> None:
    # R-AX-11: tampering is refused; only the library's errors escape
    original = read_system_file(system_text)
    mutated = data.draw(mutations(system_text))
    for text in (mutated, mutated.decode("latin-1")):
        try:
            result = read_system_file(text)
        except LicenseError:
            continue
        assert canonical(mutated.decode("ascii")) == canonical(system_text)
        assert result == original


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    need=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_-]{0,10}", fullmatch=True),
                         st.integers(0, 2**31 - 1), max_size=5),
    devices=st.lists(st.from_regex(r"[A-Z0-9]{1,12}", fullmatch=True), unique=True, max_size=5),
    minutes=st.integers(0, 10**7),
)
def test_any_need_and_device_list_round_trip(
    need: dict[str, int], devices: list[str], minutes: int, system_key: Ed25519PrivateKey
) -> None:
    # R-AX-11, R-AX-2: the current need the portal reads is the one the system sent
    created = NOW + timedelta(minutes=minutes)
    read = read_system_file(make_system_file(system_key, SYSTEM_ID, "axis", need, devices, created))
    assert (read.need, read.devices, read.created) == (need, tuple(devices), created)
    assert read.created.tzinfo == timezone.utc
