"""The history's chain, as plain functions: no database (R-CORE-6, docs/security.md "History
tamper-evidence").

An organization's entries form a public chain: ``hash`` is SHA-256 over the previous entry's hash
and the entry's canonical JSON, so anyone holding the entries (an auditor with an export) can
recompute it. On its own the public chain only catches careless edits: whoever can write the
database can recompute it. Three things make an edit detectable:

- every link carries a key check, ``mac``: HMAC-SHA256 under the *chain key* of the organization,
  the entry's seq and its hash (which commits to every entry before it). The chain key is derived
  from the server's secret key, which never lives in the database;
- every organization has a *head* (its last seq and hash) with a key check of its own, rewritten on
  every append: removing the newest entries leaves a head that names entries that are gone;
- *checkpoints* sign the head with the issuer's Ed25519 key ring, for auditors who hold only the
  public keys (``audit.py``).

The functions here are used by the server (``services.py``), the migration that keyed the chains
that existed before (0015) and the offline verifier (``audit.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

GENESIS = "0" * 64
EXPORT_FORMAT = "entitle-history-export/1"
# Distinct labels, so that no value computed for one purpose is ever valid for another.
_CHAIN_KEY_LABEL = b"entitle/history/chain-key/v1"
_ENTRY = "entitle/history/entry/v1"
_HEAD = "entitle/history/head/v1"
CHECKPOINT_PREFIX = b"entitle/history/checkpoint/v1\n"


def entry_hash(prev_hash: str, *, seq: int, at: datetime, actor: str, action: str, object_type: str,
               object_id: str, before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """The public link: SHA-256 of the previous hash and the entry's canonical JSON."""
    body = json.dumps(
        {
            "seq": seq,
            "at": at.isoformat(timespec="microseconds"),
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "before": before,
            "after": after,
        },
        sort_keys=True,
        separators=(",", ":"),
        default=str,
    )
    return hashlib.sha256(f"{prev_hash}\n{body}".encode()).hexdigest()


def chain_key(secret: bytes) -> bytes:
    """The key of every history key check, derived from the server's secret key (HMAC as a KDF):
    one secret to keep, and no value computed with it for another purpose is a valid check."""
    return hmac.new(secret, _CHAIN_KEY_LABEL, hashlib.sha256).digest()


def entry_mac(key: bytes, *, org_id: int, seq: int, hash: str, head_ok: bool = True) -> str:
    """The key check of one link. ``head_ok`` is false when the head did not verify at the append
    (it was changed, removed, or written with another key): the entry then carries that fact, so
    that appending after a truncation never makes the truncation disappear."""
    mark = "" if head_ok else "\nhead-unverified"
    return _mac(key, f"{_ENTRY}\n{org_id}\n{seq}\n{hash}{mark}")


def head_mac(key: bytes, *, org_id: int, seq: int, hash: str) -> str:
    return _mac(key, f"{_HEAD}\n{org_id}\n{seq}\n{hash}")


def _mac(key: bytes, message: str) -> str:
    return hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def same(a: str | None, b: str) -> bool:
    return a is not None and hmac.compare_digest(a, b)


def checkpoint_message(*, org_id: int, seq: int, hash: str, at: str) -> bytes:
    """What a checkpoint's Ed25519 signature covers: a domain-separated prefix and canonical JSON
    of the organization, the chain's length (the head's seq; 0 for an empty chain), its head hash
    and when it was signed."""
    body = json.dumps({"org_id": org_id, "seq": seq, "hash": hash, "at": at}, sort_keys=True,
                      separators=(",", ":"))
    return CHECKPOINT_PREFIX + body.encode()


class Entry(Protocol):
    @property
    def seq(self) -> int: ...
    @property
    def at(self) -> datetime: ...
    @property
    def actor(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def object_type(self) -> str: ...
    @property
    def object_id(self) -> str: ...
    @property
    def before(self) -> dict[str, Any] | None: ...
    @property
    def after(self) -> dict[str, Any] | None: ...
    @property
    def prev_hash(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def mac(self) -> str | None: ...


@dataclass(frozen=True)
class Break:
    """Where a chain fails: the first entry that is not intact, and why."""

    seq: int
    reason: str


class ChainCheck:
    """Checks entries one at a time, in seq order, and remembers the first break. With ``key``
    (the server), every link's key check too; without (an auditor), the public chain only."""

    def __init__(self, org_id: int, key: bytes | None = None) -> None:
        self.org_id, self.key = org_id, key
        self.last_seq, self.last_hash = 0, GENESIS
        self.broken: Break | None = None

    def add(self, e: Entry) -> bool:
        """Check the next entry; False once the chain is broken (later entries are not checked)."""
        if self.broken is not None:
            return False
        expected = self.last_seq + 1
        if e.seq != expected:
            return self.fail(expected, "entry missing or out of order")
        if e.prev_hash != self.last_hash:
            return self.fail(e.seq, "link to the previous entry is broken")
        recomputed = entry_hash(self.last_hash, seq=e.seq, at=e.at, actor=e.actor, action=e.action,
                                object_type=e.object_type, object_id=e.object_id, before=e.before, after=e.after)
        if recomputed != e.hash:
            return self.fail(e.seq, "entry content does not match its hash")
        if self.key is not None:
            failed = self._key_check(e)
            if failed:
                return self.fail(e.seq, failed)
        self.last_seq, self.last_hash = e.seq, e.hash
        return True

    def _key_check(self, e: Entry) -> str | None:
        assert self.key is not None
        if e.mac is None:
            return "entry has no key check: it was not intact when the chain was keyed (migration 0015)"
        fields = dict(org_id=self.org_id, seq=e.seq, hash=e.hash)
        if same(e.mac, entry_mac(self.key, **fields)):
            return None
        if same(e.mac, entry_mac(self.key, **fields, head_ok=False)):
            return ("entry was appended when the history's head did not verify: entries before it were "
                    "removed, or a server with another secret key wrote")
        return ("entry does not match its key check (HMAC): it was changed and re-hashed without the key, "
                "or written by a server with another secret key")

    def finish(self, *, head_seq: int | None, head_hash: str | None, head_mac_value: str | None,
               moved_on: bool = False) -> Break | None:
        """After the last entry: the head must verify and name exactly the last entry — or, when
        ``moved_on`` (the head was read after the entries, and appends may have committed
        meanwhile), the last entry or one after it. With no key (an auditor) the head is not
        checked here: the signed checkpoints stand in for it."""
        if self.broken is not None or self.key is None:
            return self.broken
        after_last = self.last_seq + 1
        if head_seq is None or head_hash is None:
            if self.last_seq:
                self.fail(after_last, f"the history's head record is missing: entries after seq {self.last_seq} "
                                        "may have been removed")
            return self.broken
        if not same(head_mac_value, head_mac(self.key, org_id=self.org_id, seq=head_seq, hash=head_hash)):
            self.fail(after_last, "the history's head record does not verify: it was changed behind the "
                                    "software's back (entries at the end removed?), or written with another key")
        elif head_seq > self.last_seq and not moved_on:
            self.fail(after_last, f"entries were removed from the end: the head records {head_seq} entries, "
                                    f"{self.last_seq} are left")
        elif head_seq < self.last_seq:
            self.fail(head_seq + 1, f"entries after the head (seq {head_seq}) were added behind the "
                                      "software's back, or the head was put back to an older one")
        elif head_seq == self.last_seq and head_hash != self.last_hash:
            self.fail(self.last_seq, "the last entry does not match the history's head")
        return self.broken

    def fail(self, seq: int, reason: str) -> bool:
        """Record a break found here or by the caller (e.g. a checkpoint that does not match)."""
        self.broken = Break(seq, reason)
        return False
