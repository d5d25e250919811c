"""Registering systems, and licensing offline systems from their system files (R-AX-1, R-AX-11)."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from entitle_device import BadSignature, LicenseError, UnsupportedVersion, read_system_file
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from entitle.actors import Actor
from entitle.errors import Conflict, EntitleError, NotFound
from entitle.history import services as history
from entitle.signing import services as signing
from entitle.systems.models import System, SystemFileReceipt

# How long the license file an offline system receives stays valid before it must upload a new
# system file. A year, like a subscription year; the file has no shorter TTL because the system
# cannot reach us to refresh it.
OFFLINE_LICENSE_VALIDITY = timedelta(days=365)


def _read(text: str) -> Any:
    try:
        return read_system_file(text)
    except BadSignature:
        raise EntitleError("system_file_bad_signature",
                           "The system file's signature does not match its contents: it was changed "
                           "after the system made it. Make a new system file on the system.") from None
    except UnsupportedVersion as exc:
        raise EntitleError("system_file_unsupported_version",
                           f"This system file's format is newer than this server understands ({exc}).") from None
    except LicenseError as exc:
        raise EntitleError("system_file_malformed",
                           f"This is not a readable system file: {exc}. Upload the file exactly as the "
                           "system made it.") from None


@dataclass(frozen=True, slots=True)
class Uploaded:
    """What an upload did: the system, its new license file, and whether the upload registered
    the system (its first file) or updated it (a newer file of a system registered before)."""

    system: System
    license_file: str
    registered: bool
    expires: datetime

    @property
    def verb(self) -> str:
        return "registered" if self.registered else "updated"


def upload_system_file(session: Session, *, org_id: int, text: str, actor: Actor, now: datetime,
                       secret: bytes) -> Uploaded:
    """Register or update the offline system the file describes, in the uploader's
    organization, and return the signed license file for it. Nothing changes on refusal.

    The license file expires no later than the next moment the system's licensing can change
    without a new upload (the end of its grace period or trial, the end of its last licensed
    year), and at most ``OFFLINE_LICENSE_VALIDITY`` after issue: a device that keeps using it
    afterwards is refused by the device library with ``Expired``."""
    actor.require_licensing(org_id)
    sf = _read(text)
    system = session.scalars(select(System).where(System.uid == sf.system_id)).one_or_none()
    if system is not None and system.org_id != org_id:
        raise Conflict("system_registered_elsewhere",
                       "This system is registered to another organization; a registration cannot move "
                       "between organizations. Upload the file in the organization that owns it.")
    if system is not None and system.public_key != sf.public_key:
        raise Conflict("system_key_mismatch",
                       "This system file is signed by a different key than the system registered with; "
                       "it did not come from that installation.", system=sf.system_id)
    nonce = base64.urlsafe_b64encode(sf.nonce).decode()
    if system is not None and session.scalar(select(SystemFileReceipt.id).where(
            SystemFileReceipt.system_id == system.id, SystemFileReceipt.nonce == nonce)) is not None:
        raise _replayed(sf.system_id)
    before = {"need": system.need, "devices": len(system.devices)} if system else None
    if system is None:
        system = System(org_id=org_id, uid=sf.system_id, name=sf.system_id, product=sf.product,
                        public_key=sf.public_key, offline=True, need=sf.need, devices=list(sf.devices),
                        registered_at=now, updated_at=now)
        session.add(system)
    else:
        system.product, system.need, system.devices = sf.product, sf.need, list(sf.devices)
        system.offline, system.updated_at = True, now
    session.flush()
    from entitle.axis import services as axis  # the licensing model of the system's product

    axis.sync_system_file(session, system=system, actor=actor, now=now)
    payload = license_payload(system)
    payload["licensed"] = axis.licensed_payload(session, system, now, limit=now + OFFLINE_LICENSE_VALIDITY)
    expires = valid_until(payload["licensed"], now)
    text_out, kid = signing.sign(session, secret=secret, now=now, subject=system.uid, payload=payload,
                                 expires=expires)
    try:
        with session.begin_nested():
            session.add(SystemFileReceipt(org_id=org_id, system_id=system.id, nonce=nonce,
                                          file_created_at=sf.created, received_at=now, license_kid=kid))
    except IntegrityError:  # the same file uploaded twice at once
        raise _replayed(sf.system_id) from None
    history.record(session, org_id=org_id, actor=actor, now=now,
                   action="system.registered" if before is None else "system.updated",
                   object_type="system", object_id=system.uid, before=before,
                   after={"need": system.need, "devices": len(system.devices), "license_kid": kid,
                          "license_expires": expires.isoformat()})
    return Uploaded(system, text_out, before is None, expires)


def valid_until(licensed: dict[str, Any], now: datetime) -> datetime:
    """When the license file stops being valid: ``licensed["valid_until"]`` (the next change of
    state, as the licensing model says), else a year. A file cannot expire in the second it is
    issued (its times are whole seconds): a change due within this second gets one second."""
    until = licensed.get("valid_until")
    expires = datetime.fromisoformat(until) if until else now + OFFLINE_LICENSE_VALIDITY
    return max(expires, now.replace(microsecond=0) + timedelta(seconds=1))


def _replayed(system_uid: str) -> Conflict:
    return Conflict("system_file_replayed",
                    "This system file was uploaded before. Make a new system file on the system "
                    "(each one carries a fresh nonce).", system=system_uid)


def license_payload(system: System) -> dict[str, Any]:
    """What the license file states. The licensing models add what is licensed (years, counts)."""
    return {"organization": system.org_id, "system": system.uid, "product": system.product,
            "need": dict(system.need), "devices": list(system.devices), "licensed": {}}


def systems_of(session: Session, org_id: int, *, after_id: int | None = None,
               limit: int | None = None) -> list[System]:
    stmt = select(System).where(System.org_id == org_id)
    if after_id is not None:
        stmt = stmt.where(System.id > after_id)
    return list(session.scalars(stmt.order_by(System.id).limit(limit)))


def get(session: Session, org_id: int, system_id: int) -> System:
    system = session.get(System, system_id)
    if system is None or system.org_id != org_id:
        raise NotFound("system", system_id=system_id)
    return system


def to_dict(s: System) -> dict[str, Any]:
    return {"id": s.id, "uid": s.uid, "name": s.name, "product": s.product, "offline": s.offline,
            "need": s.need, "devices": s.devices, "registered_at": s.registered_at.isoformat(),
            "updated_at": s.updated_at.isoformat()}
