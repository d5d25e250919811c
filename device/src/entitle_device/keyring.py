"""The issuer's public keys by key id: what a verifier trusts.

Rotation adds a key with a new id; files signed by older keys keep verifying as long as their
public keys stay in the ring. The ring is a small JSON document::

    {"keys": [{"kid": "20261123-1a2b3c4d", "alg": "Ed25519", "public_key": "<base64url>"}]}
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from entitle_device._document import ALGORITHM
from entitle_device._encoding import b64u_decode, b64u_encode, check_identifier, fail, is_identifier
from entitle_device.errors import InvalidKeyRing

__all__ = ["KeyRing", "public_key_bytes"]

PUBLIC_KEY_BYTES = 32
_ENTRY_FIELDS = frozenset({"kid", "alg", "public_key"})


def public_key_bytes(key: Ed25519PublicKey | Ed25519PrivateKey) -> bytes:
    """The raw 32-byte public key (of a private key: its public half)."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


class KeyRing(Mapping[str, Ed25519PublicKey]):
    """Immutable mapping of key id to Ed25519 public key. Key objects are built once, here."""

    __slots__ = ("_keys",)

    def __init__(self, keys: Mapping[str, Ed25519PublicKey] | None = None) -> None:
        checked: dict[str, Ed25519PublicKey] = {}
        for kid, key in (keys or {}).items():
            check_identifier(kid, "key id")
            if not isinstance(key, Ed25519PublicKey):
                raise TypeError(f"key {kid} must be an Ed25519PublicKey, not {type(key).__name__}")
            checked[kid] = key
        self._keys = checked

    def __getitem__(self, kid: str) -> Ed25519PublicKey:
        return self._keys[kid]

    def get(self, kid: str, default: Any = None) -> Any:
        # Overridden for speed: Mapping.get goes through __getitem__ and a KeyError.
        return self._keys.get(kid, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"KeyRing({sorted(self._keys)!r})"

    def with_key(self, kid: str, key: Ed25519PublicKey) -> KeyRing:
        """A new ring with one more key (rotation). A key id is never reused for another key."""
        existing = self._keys.get(kid)
        if existing is not None and public_key_bytes(existing) != public_key_bytes(key):
            raise ValueError(f"key id {kid} is already in the ring with another key")
        return KeyRing({**self._keys, kid: key})

    @classmethod
    def loads(cls, text: str | bytes) -> KeyRing:
        """Read the JSON document; raises InvalidKeyRing for anything but a well-formed ring."""
        try:
            document = json.loads(text)
        except (ValueError, RecursionError):
            fail(InvalidKeyRing, "a key ring is a JSON document")
        if not isinstance(document, dict) or set(document) != {"keys"}:
            fail(InvalidKeyRing, 'a key ring is an object with one member, "keys"')
        entries = document["keys"]
        if not isinstance(entries, list):
            fail(InvalidKeyRing, '"keys" is a list')
        keys: dict[str, Ed25519PublicKey] = {}
        for index, entry in enumerate(entries):
            at = str(index)
            if not isinstance(entry, dict) or set(entry) != _ENTRY_FIELDS:
                fail(InvalidKeyRing, "each key has exactly kid, alg and public_key", index=at)
            kid, alg, encoded = entry["kid"], entry["alg"], entry["public_key"]
            if not isinstance(kid, str) or not is_identifier(kid):
                fail(InvalidKeyRing, "kid is 1-128 characters of A-Z a-z 0-9 . _ : -", index=at)
            if kid in keys:
                fail(InvalidKeyRing, f"key id {kid} appears twice", index=at, kid=kid)
            if alg != ALGORITHM:
                fail(InvalidKeyRing, f"alg must be {ALGORITHM}", index=at, kid=kid)
            if not isinstance(encoded, str):
                fail(InvalidKeyRing, "public_key is a base64url string", index=at, kid=kid)
            raw = b64u_decode(encoded, InvalidKeyRing, "public_key")
            if len(raw) != PUBLIC_KEY_BYTES:
                fail(InvalidKeyRing, f"an {ALGORITHM} public key is 32 bytes", index=at, kid=kid)
            keys[kid] = Ed25519PublicKey.from_public_bytes(raw)
        return cls(keys)

    def dumps(self) -> str:
        """The JSON document, keys in id order; ``KeyRing.loads(ring.dumps()) == ring``."""
        entries = [
            {"kid": kid, "alg": ALGORITHM, "public_key": b64u_encode(public_key_bytes(key))}
            for kid, key in sorted(self._keys.items())
        ]
        return json.dumps({"keys": entries}, indent=2) + "\n"
