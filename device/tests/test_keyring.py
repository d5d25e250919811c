from __future__ import annotations

import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import InvalidKeyRing, KeyRing, public_key_bytes
from entitle_device._encoding import b64u_encode


def entry(key: Ed25519PrivateKey, kid: str = "k1") -> dict[str, Any]:
    return {"kid": kid, "alg": "Ed25519", "public_key": b64u_encode(public_key_bytes(key))}


def test_a_ring_round_trips_through_its_json_document() -> None:
    # R-CORE-9: the public key ring devices carry
    first, second = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = KeyRing({"k2": second.public_key(), "k1": first.public_key()})
    document = json.loads(ring.dumps())
    assert [key["kid"] for key in document["keys"]] == ["k1", "k2"]
    assert document["keys"][0] == entry(first)
    loaded = KeyRing.loads(ring.dumps())
    assert loaded == ring and loaded is not ring
    assert KeyRing.loads(ring.dumps().encode()) == ring


def test_a_ring_is_a_read_only_mapping_of_key_objects() -> None:
    key = Ed25519PrivateKey.generate().public_key()
    ring = KeyRing({"k1": key})
    assert ring["k1"] is key and ring.get("k1") is key
    assert ring.get("k2") is None and ring.get("k2", key) is key
    assert list(ring) == ["k1"] and len(ring) == 1 and "k1" in ring
    assert repr(ring) == "KeyRing(['k1'])"
    assert len(KeyRing()) == 0
    with pytest.raises(TypeError):
        ring["k2"] = key  # type: ignore[index]


def test_rotation_adds_a_key_and_keeps_the_old_ones() -> None:
    # R-CORE-9: signing keys rotate; old files keep verifying against the ring
    old, new = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    ring = KeyRing({"old": old.public_key()})
    rotated = ring.with_key("new", new.public_key())
    assert set(rotated) == {"old", "new"} and set(ring) == {"old"}
    assert rotated.with_key("new", new.public_key()) == rotated  # adding it again changes nothing
    with pytest.raises(ValueError, match="already in the ring"):
        rotated.with_key("old", new.public_key())


def test_a_ring_holds_only_ed25519_keys_under_valid_ids() -> None:
    key = Ed25519PrivateKey.generate()
    with pytest.raises(ValueError, match="key id"):
        KeyRing({"bad id": key.public_key()})
    with pytest.raises(TypeError, match="Ed25519PublicKey"):
        KeyRing({"k1": key})  # type: ignore[dict-item]


def test_public_key_bytes_of_a_private_key_is_its_public_half() -> None:
    key = Ed25519PrivateKey.generate()
    assert public_key_bytes(key) == public_key_bytes(key.public_key())
    assert len(public_key_bytes(key)) == 32


KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


@pytest.mark.parametrize("document", [
    "not json",
    "[" * 100_000,
    "[]",
    json.dumps({"keys": [], "extra": 1}),
    json.dumps({"keys": {}}),
    json.dumps({"keys": ["k1"]}),
    json.dumps({"keys": [{**entry(KEY), "use": "sig"}]}),
    json.dumps({"keys": [{**entry(KEY), "kid": 7}]}),
    json.dumps({"keys": [{**entry(KEY), "kid": "bad id"}]}),
    json.dumps({"keys": [entry(KEY), entry(KEY)]}),
    json.dumps({"keys": [{**entry(KEY), "alg": "RS256"}]}),
    json.dumps({"keys": [{**entry(KEY), "public_key": 7}]}),
    json.dumps({"keys": [{**entry(KEY), "public_key": entry(KEY)["public_key"] + "="}]}),
    json.dumps({"keys": [{**entry(KEY), "public_key": "é" + entry(KEY)["public_key"][1:]}]}),
    json.dumps({"keys": [{**entry(KEY), "public_key": b64u_encode(bytes(31))}]}),
])
def test_a_malformed_ring_is_refused_with_the_ring_error(document: str) -> None:
    # R-CORE-9: a broken key ring is a clear, typed error, never a KeyError or ValueError
    with pytest.raises(InvalidKeyRing) as raised:
        KeyRing.loads(document)
    assert raised.value.code == "invalid_key_ring"
