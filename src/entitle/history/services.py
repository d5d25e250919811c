"""The organization's append-only history: a keyed chain with a signed head (R-CORE-6).

history/chain.py has the chain's rules; docs/security.md ("History tamper-evidence") what they
detect and what they cannot. Appends and verification need the server's secret key (the chain
key is derived from it): the sessions of a context carry it (``use_secret``).
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

from sqlalchemy import bindparam, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from entitle.actors import Actor
from entitle.db import is_postgres, reading, transaction
from entitle.errors import EntitleError, NotFound
from entitle.history import chain
from entitle.history.chain import GENESIS, entry_hash
from entitle.history.models import HistoryCheckpoint, HistoryEntry, HistoryHead
from entitle.tenancy.models import Organization

# Session.info: a callable returning the server's secret key (made, or loaded, when first called).
SECRET = "entitle.secret"


def use_secret(sessions: sessionmaker[Session], secret: Callable[[], bytes]) -> None:
    """Give every session of ``sessions`` the server's secret key, for the history's key checks."""
    info = dict(sessions.kw.get("info") or {})
    info[SECRET] = secret
    sessions.configure(info=info)


@functools.cache
def _settings_secret() -> bytes:
    # Sessions made outside a context (benchmarks, scripts) use the settings' key, as a server would.
    from entitle.config import get_settings
    from entitle.signing.secrets import load_secret_key

    return load_secret_key(get_settings())


def _secret(session: Session) -> bytes:
    source = session.info.get(SECRET)
    return source() if source is not None else _settings_secret()


def _chain_key(session: Session) -> bytes:
    return chain.chain_key(_secret(session))


_LOCKS_HELD = "entitle.organizations_locked"  # session.info: (transaction, the organizations it locked)


def lock_organization(session: Session, org_id: int) -> None:
    """Serialise writers of one organization (history order, wallet checks).

    SQLite already has one writer (BEGIN IMMEDIATE); PostgreSQL locks the organization row
    FOR NO KEY UPDATE: it excludes other writers but not the KEY SHARE locks that foreign-key
    checks take on the row (an idempotency record or an account inserted earlier in another
    transaction); FOR UPDATE would deadlock with those.
    """
    if needs_lock(session, org_id):
        session.execute(_LOCK, {"org_id": org_id})
        locked(session, org_id)


def needs_lock(session: Session, org_id: int) -> bool:
    """Whether ``lock_organization`` would lock now. A writer that reads the organization row
    first can lock it in that same statement (``FOR NO KEY UPDATE OF organizations``, as
    ``LOCK_OF`` gives), then say so with ``locked``: one statement instead of two."""
    return is_postgres(session) and org_id not in _held(session)


def locked(session: Session, org_id: int) -> None:
    """Note that this transaction holds the organization's lock (see ``needs_lock``)."""
    _held(session).add(org_id)


# What a statement reading the organization row takes to lock it as ``lock_organization`` does.
LOCK_OF = {"key_share": True, "of": Organization}
_LOCK = select(Organization.id).where(Organization.id == bindparam("org_id")).with_for_update(**LOCK_OF)


def _held(session: Session) -> set[int]:
    # Taken once per transaction (a redeem locks before its wallet figure, then records history):
    # remembered per innermost transaction, since a savepoint rolled back releases its locks.
    txn = session.get_nested_transaction() or session.get_transaction()
    held = session.info.get(_LOCKS_HELD)
    if held is None or held[0] is not txn:
        held = (txn, set())
        session.info[_LOCKS_HELD] = held
    return held[1]  # type: ignore[no-any-return]


# Built once: an append is part of every business write.
_HEADS = HistoryHead.__table__
_ENTRIES = HistoryEntry.__table__
_INSERT_ENTRY = _ENTRIES.insert()
_HEAD = select(_HEADS.c.seq, _HEADS.c.hash, _HEADS.c.mac).where(_HEADS.c.org_id == bindparam("org_id"))
_MOVE_HEAD = (update(_HEADS).where(_HEADS.c.org_id == bindparam("of_org"))
              .values(seq=bindparam("to_seq"), hash=bindparam("to_hash"), mac=bindparam("to_mac")))
# PostgreSQL: the entry and the head's move in one statement (a data-modifying CTE).
_APPEND = _MOVE_HEAD.add_cte(_INSERT_ENTRY.values(
    {c: bindparam(f"e_{c.name}", type_=c.type) for c in _ENTRIES.c if c.name != "id"}).cte("appended"))


@dataclass(frozen=True)
class Head:
    """The head as a writer read it with its first statement (``HEAD_COLUMNS``), while holding
    the organization's lock (PostgreSQL) or the write lock (SQLite): ``record`` then does not
    read it again."""

    seq: int
    hash: str
    mac: str


# The head's columns, outer-joined to a statement that reads the organization row (``head_of``).
HEAD_COLUMNS = (_HEADS.c.seq.label("head_seq"), _HEADS.c.hash.label("head_hash"), _HEADS.c.mac.label("head_mac"))
HEADS = _HEADS


def head_of(row: Any) -> Head | None:
    """The ``Head`` in a row read with ``HEAD_COLUMNS`` (None: the organization has none yet)."""
    return None if row.head_seq is None else Head(row.head_seq, row.head_hash, row.head_mac)


def record(session: Session, *, org_id: int, actor: Actor, now: datetime, action: str,
           object_type: str, object_id: str | int, before: dict[str, Any] | None = None,
           after: dict[str, Any] | None = None, head: Head | None = None) -> None:
    """Append one entry in the caller's transaction, and move the head to it (Core statements
    on the session's connection: nothing reads the entry back as an ORM object; on PostgreSQL
    one statement). ``head``: the head the caller read under the lock (``Head``), else read here.

    The entry follows the head, not the last entry found: entries removed from the end stay a gap
    that verify reports. A head that does not verify (changed, removed, another key) is not
    trusted silently: the new entry's key check says so (``chain.entry_mac``)."""
    lock_organization(session, org_id)
    key = _chain_key(session)
    conn = session.connection()  # Core on the session's connection: no ORM work for the head
    if head is None:
        read = conn.execute(_HEAD, {"org_id": org_id}).first()
        head = None if read is None else Head(read.seq, read.hash, read.mac)
    if head is not None:
        seq, prev = head.seq + 1, head.hash
        head_ok = chain.same(head.mac, chain.head_mac(key, org_id=org_id, seq=head.seq, hash=head.hash))
    else:
        last = session.execute(select(HistoryEntry.seq, HistoryEntry.hash).where(HistoryEntry.org_id == org_id)
                               .order_by(HistoryEntry.seq.desc()).limit(1)).first()
        seq, prev = (last.seq + 1, last.hash) if last else (1, GENESIS)
        head_ok = last is None  # entries without a head: the head was removed
    if not head_ok:
        # Through the standard library: on stderr wherever nothing else is set up, so that the
        # console's --json output stays JSON.
        logging.getLogger("entitle.history").warning(
            "history.head_unverified org_id=%s seq=%s: the head did not verify with this process's secret key "
            "(changed behind the software's back, or another server has another ENTITLE_SECRET_KEY); "
            "run `entitle history --verify`", org_id, seq)
    fields = dict(seq=seq, at=now, actor=actor.label, action=action, object_type=object_type,
                  object_id=str(object_id), before=before, after=after)
    digest = entry_hash(prev, **fields)
    entry = {"org_id": org_id, "prev_hash": prev, "hash": digest, **fields,
             "mac": chain.entry_mac(key, org_id=org_id, seq=seq, hash=digest, head_ok=head_ok)}
    moved = {"of_org": org_id, "to_seq": seq, "to_hash": digest,
             "to_mac": chain.head_mac(key, org_id=org_id, seq=seq, hash=digest)}
    if head is None:
        conn.execute(_INSERT_ENTRY, entry)
        conn.execute(_HEADS.insert(), {"org_id": org_id, "seq": seq, "hash": digest, "mac": moved["to_mac"]})
    elif conn.dialect.name == "postgresql":
        conn.execute(_APPEND, {**{f"e_{name}": value for name, value in entry.items()}, **moved})
    else:
        conn.execute(_INSERT_ENTRY, entry)
        conn.execute(_MOVE_HEAD, moved)


@dataclass(frozen=True)
class Verification:
    ok: bool
    checked: int
    first_bad_seq: int | None = None
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked, "first_bad_seq": self.first_bad_seq,
                "reason": self.reason}


def entries_in_order(session: Session, org_id: int, *, page: int = 2000) -> Iterator[HistoryEntry]:
    """Every entry in seq order, read a page at a time by seq: no cursor is held open, so that it
    works in a read transaction and in an autocommit read (an API GET on PostgreSQL) alike."""
    after = 0
    while True:
        rows = session.scalars(select(HistoryEntry).where(HistoryEntry.org_id == org_id, HistoryEntry.seq > after)
                               .order_by(HistoryEntry.seq).limit(page)).all()
        yield from rows
        if len(rows) < page:
            return
        after = rows[-1].seq


class _Verifier:
    """verify(), one entry at a time (export writes the entries as they are checked).

    The head and the checkpoints are read *before* the entries: on PostgreSQL every statement may
    see a newer state (read committed, or autocommit), and appends go on meanwhile. Whatever the
    head and checkpoints name was committed before, so the entries read after must include it; an
    entry read beyond the head is then judged by the head as it is after the entries were read."""

    def __init__(self, session: Session, org_id: int) -> None:
        self.session, self.org_id = session, org_id
        self.check = chain.ChainCheck(org_id, _chain_key(session))
        self.checked = 0
        # Signed checkpoints are few; each must name an entry of this chain.
        self.checkpoints = {seq: hash for seq, hash in session.execute(
            select(HistoryCheckpoint.seq, HistoryCheckpoint.hash).where(HistoryCheckpoint.org_id == org_id))}
        self.head = self._head()

    def _head(self) -> Any:
        return self.session.execute(_HEAD, {"org_id": self.org_id}).first()

    def add(self, e: HistoryEntry) -> bool:
        if not self.check.add(e):
            return False
        signed = self.checkpoints.get(e.seq)
        if signed is not None and signed != e.hash:
            return self.check.fail(e.seq, "entry does not match the signed checkpoint of its seq")
        self.checked += 1
        return True

    def result(self) -> Verification:
        head, ahead = self.head, False
        if head is None or head.seq < self.check.last_seq:
            # Entries past the head read first: appended since (then the head has moved on with
            # them: it was written in their transaction), or added behind the software's back.
            head = self._head()
            ahead = True
        broken = self.check.finish(head_seq=head.seq if head else None, head_hash=head.hash if head else None,
                                   head_mac_value=head.mac if head else None, moved_on=ahead)
        beyond = [seq for seq in self.checkpoints if seq > self.check.last_seq]
        if broken is None and beyond:
            broken = chain.Break(self.check.last_seq + 1, f"a signed checkpoint covers {max(beyond)} entries, "
                                                          f"{self.check.last_seq} are left: entries were removed")
        if broken is None:
            return Verification(True, self.checked)
        return Verification(False, self.checked, broken.seq, broken.reason)


def verify(session: Session, org_id: int) -> Verification:
    """Check the chain, every link's key check, the head and the signed checkpoints; report the
    first entry that was changed, removed or inserted behind the software's back."""
    verifier = _Verifier(session, org_id)
    for e in entries_in_order(session, org_id):
        if not verifier.add(e):
            break
    return verifier.result()


# --- export: the history for an auditor ------------------------------------------------------

@dataclass(frozen=True)
class Exported:
    org_id: int
    entries: int
    checkpoint: dict[str, Any]


def checkpoint_to_dict(c: HistoryCheckpoint) -> dict[str, Any]:
    return {"org_id": c.org_id, "seq": c.seq, "hash": c.hash, "at": _checkpoint_at(c.at), "kid": c.kid,
            "signature": c.signature}


def _checkpoint_at(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def export_entry(e: HistoryEntry) -> dict[str, Any]:
    """An entry as an export carries it: everything its hash covers, the link and the key check."""
    return {**to_dict(e), "prev_hash": e.prev_hash, "mac": e.mac}


def export(sessions: sessionmaker[Session], org_id: int, out: IO[str], *, now: datetime) -> Exported:
    """Write an organization's history for an auditor (history/audit.py verifies it offline):
    every entry, every signed checkpoint with a new one of the head just verified, and the
    issuer's public key ring. Refused, with nothing signed, when the chain does not verify.

    The entries are read and checked in a read transaction (on SQLite no writer waits behind a
    long export); only the new checkpoint is written, briefly, after."""
    from entitle.signing import services as signing

    with reading(sessions) as s:
        org = s.get(Organization, org_id)
        if org is None:
            raise NotFound("organization", org_id=org_id)
        out.write(f'{{"format": "{chain.EXPORT_FORMAT}",\n"org": {json.dumps({"id": org.id, "name": org.name})},\n'
                  f'"exported_at": {json.dumps(_checkpoint_at(now))},\n"entries": [')
        verifier = _Verifier(s, org_id)
        for e in entries_in_order(s, org_id):
            if not verifier.add(e):
                break
            out.write(("\n" if verifier.checked == 1 else ",\n") + json.dumps(export_entry(e), default=str))
        result = verifier.result()
        if not result.ok:
            raise EntitleError("history_broken", f"The history of organization {org_id} fails at entry seq "
                               f"{result.first_bad_seq}: {result.reason}. Nothing was signed; "
                               "`entitle history --verify` shows the same.", status=409,
                               first_bad_seq=result.first_bad_seq, reason=result.reason)
        seq, head = verifier.check.last_seq, verifier.check.last_hash
    with transaction(sessions) as s:
        at = now.astimezone(UTC)
        kid, signature = signing.sign_bytes(s, secret=_secret(s), now=now, message=chain.checkpoint_message(
            org_id=org_id, seq=seq, hash=head, at=_checkpoint_at(at)))
        made = HistoryCheckpoint(org_id=org_id, seq=seq, hash=head, at=at, kid=kid, signature=signature)
        s.add(made)
        s.flush()
        checkpoints = [checkpoint_to_dict(c) for c in s.scalars(
            select(HistoryCheckpoint).where(HistoryCheckpoint.org_id == org_id)
            .order_by(HistoryCheckpoint.seq, HistoryCheckpoint.id))]
        ring = signing.public_ring(s)
    out.write(f'\n],\n"checkpoints": {json.dumps(checkpoints)},\n"keyring": {json.dumps(ring)}}}\n')
    return Exported(org_id, seq, checkpoint_to_dict(made))


SEQ_MAX = 2**31 - 1  # the largest seq an INTEGER column holds on every database


def page(session: Session, org_id: int, *, limit: int, before_seq: int | None = None,
         actions: Sequence[str] = (), action_prefix: str | None = None) -> list[HistoryEntry]:
    """Newest first; ``before_seq`` is the cursor. With ``actions`` and/or ``action_prefix``,
    only entries whose action is one of them or starts with the prefix."""
    stmt = select(HistoryEntry).where(HistoryEntry.org_id == org_id)
    if actions or action_prefix:
        wanted = [HistoryEntry.action.in_(list(actions))] if actions else []
        if action_prefix:
            wanted.append(HistoryEntry.action.startswith(action_prefix, autoescape=True))
        stmt = stmt.where(or_(*wanted))
    # seq is a 32-bit INTEGER on PostgreSQL: a cursor above it (the API's go up to 2^63-1) is
    # above every entry, so it bounds nothing, where binding it would fail ("out of range").
    if before_seq is not None and before_seq <= SEQ_MAX:
        stmt = stmt.where(HistoryEntry.seq < before_seq)
    return list(session.scalars(stmt.order_by(HistoryEntry.seq.desc()).limit(limit)))


def to_dict(e: HistoryEntry) -> dict[str, Any]:
    return {"seq": e.seq, "at": e.at.isoformat(), "actor": e.actor, "action": e.action,
            "object_type": e.object_type, "object_id": e.object_id, "before": e.before,
            "after": e.after, "hash": e.hash}
