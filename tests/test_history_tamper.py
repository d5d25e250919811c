"""The history cannot be re-forged behind the software's back (R-CORE-6, issue 15 point 7).

Someone who can write the database, but holds neither the server's secret key nor the issuer's
private signing key, changes, inserts, removes or cuts off entries, recomputing whatever the
public formula lets them: verify names the first entry that is not intact, and an export signed
before or after the edit does not verify offline. docs/security.md "History tamper-evidence".
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from datetime import datetime
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from entitle_device import KeyRing
from entitle_device.keyring import public_key_bytes
from sqlalchemy import Engine, delete, insert, make_url, select, text, update
from sqlalchemy.pool import NullPool

from conftest import TEST_SECRET_KEY, World
from entitle.clock import FrozenClock
from entitle.actors import operator
from entitle.config import Settings
from entitle.context import build
from entitle.db import make_engine, reading, transaction
from entitle.history import audit, chain
from entitle.history import services as history
from entitle.history.models import HistoryCheckpoint, HistoryEntry, HistoryHead
from entitle.migrate import upgrade
from entitle.signing import services as signing
from entitle.tenancy.models import Organization
from helpers import clocked_cli

E = HistoryEntry.__table__
H = HistoryHead.__table__
OTHER_SECRET_KEY = "b3RoZXItc2VjcmV0LWtleS0zMi1ieXRlcy0hISEhISE="


# --- a chain, and an attacker with the database and the public formula ---------------------------

def five_entries(world: World, name: str = "Acme") -> int:
    org = world.org(name)  # organization.created
    append(world, org, 4)
    return org


def append(world: World, org: int, count: int) -> None:
    with transaction(world.ctx.sessions) as s:
        for i in range(count):
            history.record(s, org_id=org, actor=operator("cli:ops"), now=world.now, action="key.redeemed",
                           object_type="license_key", object_id=100 + i, before={"wallet": i}, after={"wallet": i + 1})


def verify(world: World, org: int) -> history.Verification:
    with world.ctx.sessions() as s:
        return history.verify(s, org)


def rows(engine: Engine, org: int) -> list[Any]:
    # Read before a write transaction opens (on SQLite a second connection would wait for its lock).
    with engine.connect() as conn:
        return list(conn.execute(select(E).where(E.c.org_id == org).order_by(E.c.seq)))


def rehash_from(engine: Engine, org: int, seq: int, **changes: Any) -> None:
    """What someone with write access and the documented formula does: change entry ``seq`` and
    recompute the public chain from it to the end, head included (its key check they cannot)."""
    prev = chain.GENESIS
    entries = rows(engine, org)
    with engine.begin() as conn:
        for row in entries:
            fields = {k: getattr(row, k) for k in ("seq", "at", "actor", "action", "object_type", "object_id",
                                                   "before", "after")}
            if row.seq == seq:
                fields.update(changes)
            if row.seq >= seq:
                digest = chain.entry_hash(prev, **fields)
                edited = changes if row.seq == seq else {}
                conn.execute(update(E).where(E.c.id == row.id).values(prev_hash=prev, hash=digest, **edited))
                prev = digest
            else:
                prev = row.hash
        conn.execute(update(H).where(H.c.org_id == org).values(hash=prev))


def broken(result: history.Verification, seq: int, words: str) -> None:
    assert (result.ok, result.first_bad_seq) == (False, seq), result
    assert result.checked == seq - 1, result
    assert words in (result.reason or ""), result


def test_an_untouched_chain_verifies_with_a_key_check_on_every_link_and_a_head(world: World) -> None:
    org = five_entries(world)
    assert verify(world, org) == history.Verification(True, 5)
    entries = rows(world.ctx.engine, org)
    assert all(e.mac and len(e.mac) == 64 for e in entries)
    with world.ctx.sessions() as s:
        head = s.get(HistoryHead, org)
    assert head is not None and (head.seq, head.hash) == (5, entries[-1].hash)


# --- changed --------------------------------------------------------------------------------------

def test_a_changed_entry_is_detected(world: World) -> None:
    org = five_entries(world)
    with world.ctx.engine.begin() as conn:
        conn.execute(update(E).where((E.c.org_id == org) & (E.c.seq == 3)).values(after={"wallet": 500}))
    broken(verify(world, org), 3, "does not match its hash")


def test_a_changed_entry_with_the_chain_recomputed_without_the_key_is_detected_at_that_entry(world: World) -> None:
    # The attack of issue 15: the whole public chain and the head's hash recomputed after the edit.
    org = five_entries(world)
    rehash_from(world.ctx.engine, org, 2, after={"wallet": 500})
    broken(verify(world, org), 2, "key check (HMAC)")


def test_key_checks_recomputed_with_a_guessed_key_do_not_verify(world: World) -> None:
    # Without the server's secret key, any key the attacker picks gives checks that fail.
    org = five_entries(world)
    rehash_from(world.ctx.engine, org, 4, actor="someone-else")
    guessed = chain.chain_key(base64.b64decode(OTHER_SECRET_KEY))
    entries = rows(world.ctx.engine, org)
    with world.ctx.engine.begin() as conn:
        for row in entries[3:]:
            conn.execute(update(E).where(E.c.id == row.id).values(
                mac=chain.entry_mac(guessed, org_id=org, seq=row.seq, hash=row.hash)))
    broken(verify(world, org), 4, "key check (HMAC)")


def test_an_entry_moved_from_another_organization_is_detected(world: World) -> None:
    # The key check names the organization: another's entry, chain and check included, is no link here.
    org, other = five_entries(world), five_entries(world, "Other")
    theirs = rows(world.ctx.engine, other)
    with world.ctx.engine.begin() as conn:
        conn.execute(delete(E).where(E.c.org_id == org))
        for row in theirs:
            conn.execute(insert(E).values({**{k: v for k, v in row._asdict().items() if k != "id"}, "org_id": org}))
        conn.execute(update(H).where(H.c.org_id == org).values(hash=theirs[-1].hash))
    broken(verify(world, org), 1, "key check (HMAC)")
    assert verify(world, other).ok


# --- inserted -------------------------------------------------------------------------------------

def _forged_entry(org: int, seq: int, prev: str, at: Any) -> dict[str, Any]:
    fields = dict(seq=seq, at=at, actor="cli:ops", action="key.redeemed", object_type="license_key",
                  object_id="999", before={"wallet": 0}, after={"wallet": 1000})
    return {**fields, "org_id": org, "prev_hash": prev, "hash": chain.entry_hash(prev, **fields), "mac": "0" * 64}


def test_an_entry_inserted_at_the_end_is_detected(world: World) -> None:
    org = five_entries(world)
    last = rows(world.ctx.engine, org)[-1]
    with world.ctx.engine.begin() as conn:
        conn.execute(insert(E).values(_forged_entry(org, 6, last.hash, last.at)))
    broken(verify(world, org), 6, "key check (HMAC)")


def test_an_entry_inserted_in_the_middle_is_detected(world: World) -> None:
    # Room is made by moving the later entries one seq up, and the chain recomputed after it.
    org = five_entries(world)
    engine = world.ctx.engine
    second = rows(engine, org)[1]
    with engine.begin() as conn:
        for seq in (5, 4, 3):
            conn.execute(update(E).where((E.c.org_id == org) & (E.c.seq == seq)).values(seq=seq + 1))
        conn.execute(insert(E).values(_forged_entry(org, 3, second.hash, world.now)))
    rehash_from(engine, org, 3)
    broken(verify(world, org), 3, "key check (HMAC)")


# --- removed and truncated ------------------------------------------------------------------------

def test_a_removed_entry_is_detected(world: World) -> None:
    org = five_entries(world)
    with world.ctx.engine.begin() as conn:
        conn.execute(delete(E).where((E.c.org_id == org) & (E.c.seq == 3)))
    broken(verify(world, org), 3, "missing")


def test_the_newest_entry_removed_is_detected(world: World) -> None:
    # The hole issue 15 found: removing the newest entry left a chain that verified.
    org = five_entries(world)
    with world.ctx.engine.begin() as conn:
        conn.execute(delete(E).where((E.c.org_id == org) & (E.c.seq == 5)))
    broken(verify(world, org), 5, "removed from the end: the head records 5 entries, 4 are left")


def cut_after_3(world: World, org: int, head: str) -> None:
    """Someone with write access removes the entries after seq 3, and with the head row does as
    ``head`` says: "kept" (as it was), "moved back" (to entry 3) or "removed"."""
    kept = rows(world.ctx.engine, org)[2]
    with world.ctx.engine.begin() as conn:
        conn.execute(delete(E).where((E.c.org_id == org) & (E.c.seq > 3)))
        if head == "moved back":
            conn.execute(update(H).where(H.c.org_id == org).values(seq=3, hash=kept.hash))
        elif head == "removed":
            conn.execute(delete(H).where(H.c.org_id == org))


@pytest.mark.parametrize("head", ["moved back", "removed"])
def test_the_newest_entries_removed_with_the_head_moved_back_or_removed_are_detected(world: World, head: str) -> None:
    org = five_entries(world)
    cut_after_3(world, org, head)
    broken(verify(world, org), 4, "head record")


@pytest.mark.parametrize("head", ["kept", "moved back", "removed"])
def test_a_truncation_stays_detected_after_the_software_appends_again(world: World, head: str) -> None:
    # The next business write must not heal the cut: it follows the head (leaving the gap), or,
    # when the head cannot be trusted, carries that fact in its own key check.
    org = five_entries(world)
    cut_after_3(world, org, head)
    append(world, org, 2)
    result = verify(world, org)
    if head == "kept":
        broken(result, 4, "missing")
    else:
        broken(result, 4, "head did not verify")


def test_the_whole_database_put_back_to_an_older_copy_is_not_detected_by_verify(world: World) -> None:
    # The documented limit: a consistent older state (here: the head row and the entries as they
    # were at seq 3) verifies. Only an export signed later, kept elsewhere, tells (test below).
    org = world.org("Acme")
    append(world, org, 2)
    with world.ctx.engine.connect() as conn:
        saved_head = conn.execute(select(H).where(H.c.org_id == org)).one()
    append(world, org, 2)
    with world.ctx.engine.begin() as conn:
        conn.execute(delete(E).where((E.c.org_id == org) & (E.c.seq > 3)))
        conn.execute(update(H).where(H.c.org_id == org).values(seq=saved_head.seq, hash=saved_head.hash,
                                                                 mac=saved_head.mac))
    assert verify(world, org) == history.Verification(True, 3)


# --- another key --------------------------------------------------------------------------------

def test_a_server_with_another_secret_key_writes_entries_that_verify_reports(world: World) -> None:
    org = five_entries(world)
    stranger = build(world.ctx.settings.model_copy(update={"secret_key": OTHER_SECRET_KEY}), world.ctx.clock,
                     engine=world.ctx.engine)
    with transaction(stranger.sessions) as s:
        history.record(s, org_id=org, actor=operator(), now=world.now, action="x.y", object_type="x", object_id=1)
    broken(verify(world, org), 6, "another secret key")


# --- checkpoints and exports ----------------------------------------------------------------------

@pytest.fixture
def cli(ctx: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    with clocked_cli(ctx.settings.database_url, monkeypatch) as driver:
        yield driver


def public_ring(world: World, where: Path) -> Path:
    with world.ctx.sessions() as s:
        ring = signing.public_ring(s)
    path = where / "keyring.json"
    path.write_text(json.dumps(ring))
    return path


def exported(cli: Any, org: int, path: Path) -> dict[str, Any]:
    done = cli.json("history", "--org", str(org), "--export", str(path))
    assert done["entries"] == done["checkpoint"]["seq"]
    return json.loads(path.read_text())


def audited(document: dict[str, Any], ring_path: Path, previous: dict[str, Any] | None = None) -> audit.Audit:
    return audit.audit(document, KeyRing.loads(ring_path.read_text()), previous=previous)


def test_an_export_verifies_offline_with_the_public_key_ring_alone(world: World, cli: Any, tmp_path: Path) -> None:
    org = five_entries(world)
    path = tmp_path / "history.json"
    document = exported(cli, org, path)
    assert [e["seq"] for e in document["entries"]] == [1, 2, 3, 4, 5]
    assert document["org"] == {"id": org, "name": "Acme"}
    ring = public_ring(world, tmp_path)
    assert document["keyring"] == json.loads(ring.read_text())
    result = audited(document, ring)
    assert (result.ok, result.entries, result.signed_seq) == (True, 5, 5)

    # The command an auditor runs: a fresh interpreter, no database, no secret key, no settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLE_")}
    env["ENTITLE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'absent' / 'none.db'}"
    code = ("import json, sys; from entitle.cli.main import app\n"
            "try:\n    app(sys.argv[1:], prog_name='entitle')\nexcept SystemExit as e:\n    code = e.code\n"
            "print(json.dumps({'code': code, 'sqlalchemy': 'sqlalchemy' in sys.modules}))")
    done = subprocess.run([sys.executable, "-c", code, "history", "--verify-export", str(path),
                           "--public-keys", str(ring)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.startswith(f"OK: {path} verifies: the history of organization {org}, 5 entries, "
                                  "signed at seq 5"), done.stdout + done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"code": 0, "sqlalchemy": False}
    assert not (tmp_path / "absent").exists() and not (tmp_path / "var").exists()


def test_an_export_is_refused_and_nothing_signed_when_the_chain_is_broken(world: World, cli: Any,
                                                                          tmp_path: Path) -> None:
    org = five_entries(world)
    with world.ctx.engine.begin() as conn:
        conn.execute(delete(E).where((E.c.org_id == org) & (E.c.seq == 5)))
    body = cli.refused("history_broken", "history", "--org", str(org), "--export", str(tmp_path / "h.json"))
    assert body["detail"]["first_bad_seq"] == 5
    assert not (tmp_path / "h.json").exists()
    with world.ctx.sessions() as s:
        assert s.scalars(select(HistoryCheckpoint)).all() == []


def test_an_export_changed_after_it_was_signed_does_not_verify(world: World, cli: Any, tmp_path: Path) -> None:
    org = five_entries(world)
    document = exported(cli, org, tmp_path / "history.json")
    ring = public_ring(world, tmp_path)

    changed = json.loads(json.dumps(document))
    changed["entries"][1]["after"] = {"wallet": 500}
    assert audited(changed, ring).reason == "entry content does not match its hash"

    rehashed = json.loads(json.dumps(document))  # the public chain recomputed: the checkpoint does not match
    prev = chain.GENESIS
    for e in rehashed["entries"]:
        if e["seq"] == 2:
            e["after"] = {"wallet": 500}
        e["prev_hash"], e["hash"] = prev, chain.entry_hash(prev, **_fields(e))
        prev = e["hash"]
    result = audited(rehashed, ring)
    assert (result.ok, result.first_bad_seq) == (False, 5) and "signed checkpoint" in (result.reason or "")

    cut = json.loads(json.dumps(document))
    del cut["entries"][-1]
    result = audited(cut, ring)
    assert (result.ok, result.first_bad_seq) == (False, 5) and "were removed" in (result.reason or "")

    grown = json.loads(json.dumps(document))
    last = grown["entries"][-1]
    forged = _forged_entry(org, 6, last["hash"], audit._Entry.of(last).at)
    grown["entries"].append({**forged, "at": forged["at"].isoformat()})
    result = audited(grown, ring)
    assert (result.ok, result.first_bad_seq) == (False, 6) and "covered by no signed checkpoint" in (result.reason or "")


def _fields(e: dict[str, Any]) -> dict[str, Any]:
    entry = audit._Entry.of(e)
    return {k: getattr(entry, k) for k in ("seq", "at", "actor", "action", "object_type", "object_id", "before",
                                           "after")}


def test_a_forged_checkpoint_signature_does_not_verify(world: World, cli: Any, tmp_path: Path) -> None:
    org = five_entries(world)
    document = exported(cli, org, tmp_path / "history.json")
    ring = public_ring(world, tmp_path)
    cp = document["checkpoints"][-1]

    moved = json.loads(json.dumps(document))  # a valid signature, over other numbers
    moved["checkpoints"][-1]["seq"] = 4
    moved["checkpoints"][-1]["hash"] = document["entries"][3]["hash"]
    assert "does not verify with key" in (audited(moved, ring).reason or "")

    bits = bytearray(audit._b64u(cp["signature"]))
    bits[0] ^= 1
    flipped = json.loads(json.dumps(document))
    flipped["checkpoints"][-1]["signature"] = signing.b64u(bytes(bits))
    assert "does not verify with key" in (audited(flipped, ring).reason or "")

    # Whoever forges with a key of their own, and puts its public half in the export, is not
    # trusted: the auditor checks against the ring they hold.
    mine = Ed25519PrivateKey.generate()
    own = json.loads(json.dumps(document))
    own["entries"][1]["after"] = {"wallet": 500}
    own_ring = {"keys": [{"kid": cp["kid"], "alg": "Ed25519", "public_key": signing.b64u(public_key_bytes(mine))}]}
    own["keyring"] = own_ring
    prev = chain.GENESIS
    for e in own["entries"]:
        e["prev_hash"], e["hash"] = prev, chain.entry_hash(prev, **_fields(e))
        prev = e["hash"]
    message = chain.checkpoint_message(org_id=org, seq=5, hash=prev, at=cp["at"])
    own["checkpoints"] = [{**cp, "hash": prev, "signature": signing.b64u(mine.sign(message))}]
    assert audit.audit(own, KeyRing.loads(json.dumps(own_ring))).ok  # what a fooled auditor would see
    result = audited(own, ring)
    assert not result.ok and "does not verify with key" in (result.reason or "")

    unknown = json.loads(json.dumps(document))
    unknown["checkpoints"][-1]["kid"] = "20990101-deadbeef"
    assert "not in the key ring given" in (audited(unknown, ring).reason or "")


def test_a_later_export_must_extend_an_earlier_one(world: World, cli: Any, tmp_path: Path) -> None:
    # What catches the rollback verify cannot: the auditor keeps an export, and checks the next
    # one against it (--previous).
    org = five_entries(world)
    first = exported(cli, org, tmp_path / "first.json")
    append(world, org, 2)
    second = exported(cli, org, tmp_path / "second.json")
    ring = public_ring(world, tmp_path)
    assert [c["seq"] for c in second["checkpoints"]] == [5, 7]
    assert audited(second, ring, previous=first).ok
    cut_back = audited(first, ring, previous=second)  # the database put back to the first state
    assert (cut_back.ok, cut_back.first_bad_seq) == (False, 6) and "cut back" in (cut_back.reason or "")

    text = cli("history", "--verify-export", str(tmp_path / "first.json"), "--public-keys",
               str(tmp_path / "keyring.json"), "--previous", str(tmp_path / "second.json"))
    assert text.exit_code == 1 and text.stdout.startswith("BROKEN: ") and "cut back" in text.stdout
    body = cli.json("history", "--verify-export", str(tmp_path / "second.json"), "--public-keys",
                    str(tmp_path / "keyring.json"), "--previous", str(tmp_path / "first.json"))
    assert body == {"ok": True, "org_id": org, "entries": 7, "signed_seq": 7, "signed_at": second["checkpoints"][-1]["at"],
                    "kid": second["checkpoints"][-1]["kid"], "first_bad_seq": None, "reason": None}


def test_verify_checks_the_stored_checkpoints_too(world: World, cli: Any, tmp_path: Path) -> None:
    # Someone holding the chain key (not the signing key) who rewrites an exported part is caught
    # by the checkpoint the export left in the database.
    org = five_entries(world)
    exported(cli, org, tmp_path / "history.json")
    key = chain.chain_key(base64.b64decode(TEST_SECRET_KEY))
    rehash_from(world.ctx.engine, org, 2, after={"wallet": 500})
    entries = rows(world.ctx.engine, org)
    with world.ctx.engine.begin() as conn:
        for row in entries:
            conn.execute(update(E).where(E.c.id == row.id).values(
                mac=chain.entry_mac(key, org_id=org, seq=row.seq, hash=row.hash)))
        head = entries[-1]
        conn.execute(update(H).where(H.c.org_id == org).values(mac=chain.head_mac(key, org_id=org, seq=5,
                                                                                   hash=head.hash)))
    broken(verify(world, org), 5, "signed checkpoint")


# --- concurrency ----------------------------------------------------------------------------------

def test_concurrent_appends_from_separate_connections_chain_in_order(world: World) -> None:
    # Each writer is its own connection and transaction, as separate server processes are; on
    # PostgreSQL they queue on the organization row, on SQLite on the write lock.
    org = world.org("Busy")
    writers, each = 6, 10
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write() -> None:
        try:
            start.wait()
            for _ in range(each):
                append(world, org, 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert verify(world, org) == history.Verification(True, 1 + writers * each)


def test_an_append_committed_while_verify_reads_is_no_break(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # On PostgreSQL each statement of a read may see a newer state: appends that commit after
    # verify read the head, before and after it read the entries, must not look like tampering.
    org = five_entries(world)
    real = history.entries_in_order

    def appends_around(session: Any, org_id: int, **kw: Any) -> Iterator[HistoryEntry]:
        append(world, org, 1)  # another connection, committed before the entries are read
        yield from real(session, org_id, **kw)
        append(world, org, 1)  # and after them, before the head is looked at again

    monkeypatch.setattr(history, "entries_in_order", appends_around)
    with reading(world.ctx.sessions) as s:
        result = history.verify(s, org)
    assert result.ok, result  # 5 entries on SQLite (its read keeps one snapshot), 6 on PostgreSQL
    monkeypatch.undo()
    assert verify(world, org) == history.Verification(True, 7)


def test_verify_while_appends_go_on_reports_no_break(world: World) -> None:
    org = five_entries(world)
    stop, errors, results = threading.Event(), [], []

    def write() -> None:
        try:
            while not stop.is_set():
                append(world, org, 1)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    try:
        for _ in range(20):
            with reading(world.ctx.sessions) as s:
                results.append(history.verify(s, org))
    finally:
        stop.set()
        writer.join()
    assert errors == [] and all(r.ok for r in results), [r for r in results if not r.ok] or errors
    assert verify(world, org).ok


APPENDER = """
import sys
from datetime import UTC, datetime
from entitle.actors import operator
from entitle.config import Settings
from entitle.context import build
from entitle.db import transaction
from entitle.history import services as history
from entitle.models import load_all

url, secret, org, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
load_all()
ctx = build(Settings(database_url=url, secret_key=secret))
print("ready", flush=True)
sys.stdin.readline()  # all processes start appending at once
for i in range(count):
    with transaction(ctx.sessions) as s:
        history.record(s, org_id=org, actor=operator("proc"), now=datetime.now(UTC), action="x.appended",
                       object_type="x", object_id=i)
"""


def test_concurrent_appends_from_several_processes_chain_in_order(world: World) -> None:
    org = world.org("Busy")
    processes, each = 3, 15
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENTITLE_")}
    procs = [subprocess.Popen([sys.executable, "-c", APPENDER, world.ctx.settings.database_url, TEST_SECRET_KEY,
                               str(org), str(each)], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert verify(world, org) == history.Verification(True, 1 + processes * each)


# --- existing chains: migration 0015 --------------------------------------------------------------

@pytest.fixture
def legacy_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """A database of its own, at the revision before 0015."""
    if not database_url.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / 'legacy.db'}"
        return
    name = f"entitle_legacy_{os.getpid()}"
    admin = make_engine(database_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(database_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def legacy_organization(conn: Any, org_id: int, name: str, at: datetime) -> None:
    conn.execute(insert(Organization.__table__).values(id=org_id, name=name, region="EU", is_issuer=False,
                                                       created_at=at))


def legacy_chain(conn: Any, org_id: int, count: int, at: datetime) -> None:
    """Entries as Entitle wrote them before 0015: the public chain, no key check, no head."""
    prev = chain.GENESIS
    for seq in range(1, count + 1):
        fields = dict(seq=seq, at=at, actor="cli:ops", action="member.set", object_type="user", object_id=str(seq),
                      before=None, after={"role": "viewer"})
        digest = chain.entry_hash(prev, **fields)
        conn.execute(insert(E).values(org_id=org_id, prev_hash=prev, hash=digest, **fields))
        prev = digest


def test_migration_keys_existing_chains_up_to_their_first_break(legacy_url: str, monkeypatch: pytest.MonkeyPatch,
                                                                clock: FrozenClock) -> None:
    upgrade(legacy_url, "0014_my2n")
    engine = make_engine(legacy_url, poolclass=NullPool)
    now = clock.now()
    with engine.begin() as conn:
        legacy_organization(conn, 1, "Intact", now)
        legacy_chain(conn, 1, 3, now)
        legacy_organization(conn, 2, "Edited", now)
        legacy_chain(conn, 2, 4, now)
        # Edited before the upgrade, the plain way: its public chain breaks at seq 2.
        conn.execute(update(E).where((E.c.org_id == 2) & (E.c.seq == 2)).values(actor="x"))
    monkeypatch.setenv("ENTITLE_SECRET_KEY", TEST_SECRET_KEY)  # the migration keys with the server's settings
    upgrade(legacy_url)

    ctx = build(Settings(database_url=legacy_url, secret_key=TEST_SECRET_KEY), clock, engine=engine)
    with ctx.sessions() as s:
        assert history.verify(s, 1) == history.Verification(True, 3)
        assert history.verify(s, 2) == history.Verification(False, 1, 2, "entry content does not match its hash")
        assert [(h.org_id, h.seq) for h in s.scalars(select(HistoryHead).order_by(HistoryHead.org_id))] == \
            [(1, 3), (2, 4)]
        assert s.scalars(select(HistoryEntry.mac).where(HistoryEntry.org_id == 2).order_by(HistoryEntry.seq)
                         ).all()[1:] == [None, None, None]  # nothing after the break is vouched for
    with transaction(ctx.sessions) as s:  # and the keyed chain goes on
        history.record(s, org_id=1, actor=operator(), now=now, action="x.y", object_type="x", object_id=1)
    with ctx.sessions() as s:
        assert history.verify(s, 1) == history.Verification(True, 4)
    engine.dispose()


def test_migration_refuses_a_secret_key_the_signing_keys_do_not_open_with(
        legacy_url: str, monkeypatch: pytest.MonkeyPatch, clock: FrozenClock) -> None:
    upgrade(legacy_url, "0014_my2n")
    engine = make_engine(legacy_url, poolclass=NullPool)
    now = clock.now()
    with engine.begin() as conn:
        legacy_organization(conn, 1, "Issuer", now)
        legacy_chain(conn, 1, 2, now)
    ctx = build(Settings(database_url=legacy_url, secret_key=TEST_SECRET_KEY), clock, engine=engine)
    with transaction(ctx.sessions) as s:
        signing.current(s, secret=ctx.secret, now=now)
    monkeypatch.setenv("ENTITLE_SECRET_KEY", OTHER_SECRET_KEY)
    with pytest.raises(RuntimeError, match="another one"):
        upgrade(legacy_url)
    engine.dispose()
