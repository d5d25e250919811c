"""Verifying a history export offline, with the issuer's public key ring and nothing else: no
database, no secret key (docs/security.md "History tamper-evidence").

An export (``entitle history export``) holds an organization's entries, the checkpoints the server
signed of its chain (the last one made by the export itself, of every entry in it) and the
issuer's public key ring. The auditor recomputes the public chain, checks every checkpoint's
Ed25519 signature with the ring *they* trust (not the one inside the export, which whoever wrote
the file could have replaced) and that the last checkpoint covers every entry. Given an earlier
export, it also checks that the history only grew since: the same entries up to the earlier
export's signed head.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from entitle_device import KeyRing

from entitle.history import chain
from entitle.history.chain import EXPORT_FORMAT


@dataclass(frozen=True)
class Audit:
    ok: bool
    org_id: int | None
    entries: int
    # The longest signed checkpoint that verifies: how many entries it covers, when, by which key.
    signed_seq: int | None = None
    signed_at: str | None = None
    kid: str | None = None
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "org_id": self.org_id, "entries": self.entries, "signed_seq": self.signed_seq,
                "signed_at": self.signed_at, "kid": self.kid, "first_bad_seq": self.first_bad_seq,
                "reason": self.reason}


class Malformed(ValueError):
    """The file is no history export (or is damaged past reading)."""


def parse(text: str, *, name: str = "the file") -> dict[str, Any]:
    """An export's JSON document; ``Malformed`` for anything else."""
    try:
        document = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Malformed(f"{name} is not JSON: {exc}") from None
    if not isinstance(document, dict) or document.get("format") != EXPORT_FORMAT:
        raise Malformed(f"{name} is not an Entitle history export ({EXPORT_FORMAT})")
    return document


@dataclass(frozen=True)
class _Entry:
    seq: int
    at: datetime
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str
    mac: str | None = None

    @classmethod
    def of(cls, item: Any) -> _Entry:
        try:
            return cls(seq=int(item["seq"]), at=datetime.fromisoformat(item["at"]), actor=item["actor"],
                       action=item["action"], object_type=item["object_type"], object_id=item["object_id"],
                       before=item["before"], after=item["after"], prev_hash=item["prev_hash"], hash=item["hash"])
        except (KeyError, TypeError, ValueError) as exc:
            raise Malformed(f"an entry of the export cannot be read ({exc!r})") from None


def audit(document: dict[str, Any], ring: KeyRing, *, previous: dict[str, Any] | None = None) -> Audit:
    """Verify an export (as ``load`` reads it) against ``ring``; with ``previous``, an earlier
    export of the same organization, also that this one extends it."""
    try:
        org_id = int(document["org"]["id"])
        items = document["entries"]
        checkpoints = document["checkpoints"]
    except (KeyError, TypeError, ValueError):
        raise Malformed("the export lacks its organization, entries or checkpoints") from None
    check = chain.ChainCheck(org_id)
    hashes = [chain.GENESIS]  # hashes[seq]: the chain's head after seq entries
    for item in items:
        if not check.add(_Entry.of(item)):
            assert check.broken is not None
            return Audit(False, org_id, len(items), first_bad_seq=check.broken.seq, reason=check.broken.reason)
        hashes.append(check.last_hash)
    count = len(hashes) - 1

    best: dict[str, Any] | None = None
    for cp in checkpoints:
        failed = _checkpoint_fails(cp, org_id, hashes, ring)
        if failed:
            return Audit(False, org_id, count, first_bad_seq=failed[0], reason=failed[1])
        if best is None or cp["seq"] >= best["seq"]:
            best = cp
    if best is None:
        return Audit(False, org_id, count, first_bad_seq=1 if count else None,
                     reason="the export has no signed checkpoint")
    signed = dict(signed_seq=best["seq"], signed_at=best["at"], kid=best["kid"])
    if best["seq"] < count:
        return Audit(False, org_id, count, **signed, first_bad_seq=best["seq"] + 1,
                     reason=f"entries after seq {best['seq']} are covered by no signed checkpoint: "
                            "they were added to the export after the server signed it")
    if previous is not None:
        earlier = audit(previous, ring)
        if not earlier.ok:
            return Audit(False, org_id, count, **signed, first_bad_seq=earlier.first_bad_seq,
                         reason=f"the earlier export does not verify: {earlier.reason}")
        if earlier.org_id != org_id:
            return Audit(False, org_id, count, **signed,
                         reason=f"the earlier export is of organization {earlier.org_id}, not {org_id}")
        assert earlier.signed_seq is not None
        old_head = previous["entries"][earlier.signed_seq - 1]["hash"] if earlier.signed_seq else chain.GENESIS
        if earlier.signed_seq > count:
            return Audit(False, org_id, count, **signed, first_bad_seq=count + 1,
                         reason=f"the earlier export has {earlier.signed_seq} signed entries, this one {count}: "
                                "the history was cut back since")
        if hashes[earlier.signed_seq] != old_head:
            first = next(seq for seq in range(1, earlier.signed_seq + 1)
                         if hashes[seq] != previous["entries"][seq - 1]["hash"])
            return Audit(False, org_id, count, **signed, first_bad_seq=first,
                         reason="the history was rewritten since the earlier export: this entry differs")
    return Audit(True, org_id, count, **signed)


def _checkpoint_fails(cp: Any, org_id: int, hashes: list[str], ring: KeyRing) -> tuple[int | None, str] | None:
    try:
        seq, head, at, kid, signature = int(cp["seq"]), cp["hash"], cp["at"], cp["kid"], _b64u(cp["signature"])
        cp_org = int(cp["org_id"])
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None, "a checkpoint of the export cannot be read"
    key = ring.get(kid)
    if key is None:
        return seq, f"the checkpoint of seq {seq} is signed by key {kid}, which is not in the key ring given"
    try:
        key.verify(signature, chain.checkpoint_message(org_id=cp_org, seq=seq, hash=head, at=at))
    except InvalidSignature:
        return seq, f"the checkpoint of seq {seq} does not verify with key {kid}: it was forged or changed"
    if cp_org != org_id:
        return seq, f"the checkpoint of seq {seq} is of organization {cp_org}, not {org_id}"
    if seq < 0 or seq >= len(hashes):
        return len(hashes), (f"the checkpoint of seq {seq} signs entries the export does not have: "
                             f"entries after seq {len(hashes) - 1} were removed")
    if hashes[seq] != head:
        return seq, f"the chain at seq {seq} does not match its signed checkpoint: entries up to it were changed"
    return None


def _b64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
