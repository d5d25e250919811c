"""Key ring actions: the first key, rotation, the public ring, loading the current private key."""

from __future__ import annotations

import base64
import json
import secrets
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import KeyRing, sign_license
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.history import services as history
from entitle.signing.models import SigningKey
from entitle.signing.secrets import seal, unseal
from entitle.tenancy import services as tenancy

RAW = serialization.Encoding.Raw


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _new_kid(now: datetime) -> str:
    return f"{now:%Y%m%d}-{secrets.token_hex(4)}"


def _create(session: Session, *, secret: bytes, now: datetime) -> SigningKey:
    private = Ed25519PrivateKey.generate()
    kid = _new_kid(now)
    raw_private = private.private_bytes(RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    row = SigningKey(kid=kid, algorithm="Ed25519",
                     public_key=private.public_key().public_bytes(RAW, serialization.PublicFormat.Raw),
                     private_key_encrypted=seal(secret, raw_private, context=f"signing-key:{kid}"),
                     is_current=True, created_at=now)
    session.add(row)
    session.flush()
    return row


def current(session: Session, *, secret: bytes, now: datetime) -> SigningKey:
    """The key that signs new files; the first one is made on first use."""
    stmt = select(SigningKey).where(SigningKey.is_current.is_(True))
    row = session.scalars(stmt).one_or_none()
    if row is not None:
        return row
    try:
        with session.begin_nested():
            return _create(session, secret=secret, now=now)
    except IntegrityError:  # another process made the first key meanwhile
        return session.scalars(stmt).one()


def rotate(session: Session, *, secret: bytes, actor: Actor, now: datetime) -> SigningKey:
    """Make a new current key. Older keys stay in the public ring, so their files keep verifying."""
    actor.require_issuer()
    old = session.scalars(select(SigningKey).where(SigningKey.is_current.is_(True))).one_or_none()
    session.execute(update(SigningKey).where(SigningKey.is_current.is_(True))
                    .values(is_current=False, retired_at=now))
    row = _create(session, secret=secret, now=now)
    history.record(session, org_id=tenancy.issuer_organization(session, now=now).id, actor=actor,
                   now=now, action="signing_key.rotated", object_type="signing_key", object_id=row.kid,
                   before={"kid": old.kid} if old else None, after={"kid": row.kid})
    return row


def private_key(row: SigningKey, *, secret: bytes) -> Ed25519PrivateKey:
    raw = unseal(secret, row.private_key_encrypted, context=f"signing-key:{row.kid}")
    return Ed25519PrivateKey.from_private_bytes(raw)


def public_ring(session: Session) -> dict[str, Any]:
    """Every key ever used, newest first, in the device library's key-ring format."""
    rows = session.scalars(select(SigningKey).order_by(SigningKey.id.desc()))
    return {"keys": [{"kid": r.kid, "alg": r.algorithm, "public_key": b64u(r.public_key)} for r in rows]}


def keyring(session: Session) -> KeyRing:
    return KeyRing.loads(json.dumps(public_ring(session)))


def sign(session: Session, *, secret: bytes, now: datetime, subject: str | list[str],
         payload: dict[str, Any], expires: datetime | None, ttl: int = 0) -> tuple[str, str]:
    """Sign a license file with the current key (the device library's format and code).
    Returns the file's text and the key id."""
    row = current(session, secret=secret, now=now)
    text = sign_license(private_key(row, secret=secret), row.kid, payload, now, expires, ttl, subject)
    return text, row.kid


def sign_bytes(session: Session, *, secret: bytes, now: datetime, message: bytes) -> tuple[str, str]:
    """Sign ``message`` (already domain-separated by the caller, e.g. a history checkpoint) with the
    current key. Returns the key id and the signature, base64url."""
    row = current(session, secret=secret, now=now)
    return row.kid, b64u(private_key(row, secret=secret).sign(message))
