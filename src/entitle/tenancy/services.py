"""Organizations, users, memberships, API tokens and browser sessions (R-CORE-1, R-CORE-2)."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import bindparam, event, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from entitle.actors import Actor
from entitle.config import get_settings
from entitle.db import chunks, reading, transaction
from entitle.errors import Busy, Conflict, EntitleError, NotFound, Unauthorized
from entitle.history import services as history
from entitle.tenancy.models import ApiToken, Membership, Organization, Role, User, WebSession
from entitle.text import single_line

REGIONS = ("EU", "US", "APAC", "LATAM", "MEA")
TOKEN_PREFIX = "ent_"
R = TypeVar("R", ApiToken, WebSession)  # what a user revokes of their own
# One rule for every password a person chooses (creating a user, changing, a console reset).
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1000  # argon2 takes any length; this only bounds the work a request can ask for


def _hasher() -> PasswordHasher:
    s = get_settings()
    return PasswordHasher(time_cost=s.argon2_time_cost, memory_cost=s.argon2_memory_cost)


def password_checks_at_once() -> int:
    """How many argon2 hashes or checks one process runs at once, at least one: no more than the
    memory budget holds (``argon2_memory_cost`` KiB each), nor than the cores can run beside the
    server's other work (each check runs argon2's lanes, 4 threads, in parallel: on 2 cores one
    check at a time, so that ``/healthz`` and other requests keep a core)."""
    s = get_settings()
    by_memory = s.password_check_memory_mib * 1024 // s.argon2_memory_cost
    by_cores = (os.cpu_count() or 1) // PasswordHasher().parallelism
    return max(1, min(by_memory, by_cores))


_slots_lock = threading.Lock()
_slots: dict[int, threading.BoundedSemaphore] = {}


@contextmanager
def password_work() -> Iterator[PasswordHasher]:
    """A hasher for one password hash or check, within the process's bound. Past it the request
    is answered at once (503, Retry-After) rather than queued: 40 wrong sign-ins at once must not
    take 40 x 64 MiB, nor keep ``/healthz`` waiting behind them."""
    size = password_checks_at_once()
    with _slots_lock:
        slots = _slots.setdefault(size, threading.BoundedSemaphore(size))
    if not slots.acquire(blocking=False):
        raise Busy("password_checks_busy", "Too many passwords are being checked on this server right now: "
                   "try again in a second.", limit=size)
    try:
        yield _hasher()
    finally:
        slots.release()


def hash_password(password: str) -> str:
    with password_work() as hasher:
        return hasher.hash(password)


def password_matches(password_hash: str, password: str) -> bool:
    with password_work() as hasher:
        try:
            return hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def actor_for(user: User) -> Actor:
    return Actor(label=user.email, user_id=user.id, is_issuer=user.is_issuer,
                 roles={m.org_id: Role(m.role) for m in user.memberships})


# --- organizations -------------------------------------------------------------------------

def _region(region: str) -> str:
    r = region.strip().upper()
    if r not in REGIONS:
        raise EntitleError("region_unknown", f"Unknown region {region!r}; use one of {', '.join(REGIONS)}.",
                           regions=list(REGIONS))
    return r


def create_organization(session: Session, *, name: str, region: str, actor: Actor, now: datetime,
                        owner: User | None = None) -> Organization:
    name = single_line(name, "organization name").strip()
    if not name:
        raise EntitleError("name_required", "Give the organization a name.")
    if len(name) > 200:  # the column's size, which SQLite does not enforce (the API's schema does)
        raise EntitleError("name_invalid", "Give the organization a name of at most 200 characters.",
                           length=len(name))
    org = Organization(name=name, region=_region(region), created_at=now)
    session.add(org)
    session.flush()
    history.record(session, org_id=org.id, actor=actor, now=now, action="organization.created",
                   object_type="organization", object_id=org.id,
                   after={"name": org.name, "region": org.region})
    if owner is not None:  # the first member: there is no owner yet to add them, nor one to keep
        _new_member(session, org_id=org.id, user=owner, role=Role.owner, actor=actor, now=now)
    return org


def issuer_organization(session: Session, *, now: datetime) -> Organization:
    """The vendor's own organization; its history holds catalog changes and minting."""
    org = session.scalars(select(Organization).where(Organization.is_issuer.is_(True))
                          .order_by(Organization.id).limit(1)).one_or_none()
    if org is None:
        org = Organization(name="Issuer", region="EU", is_issuer=True, created_at=now)
        session.add(org)
        session.flush()
    return org


def get_organization(session: Session, org_id: int, *, actor: Actor) -> Organization:
    actor.require_member(org_id)
    org = session.get(Organization, org_id)
    if org is None:
        raise NotFound("organization", org_id=org_id)
    return org


def organizations_of(session: Session, actor: Actor) -> list[Organization]:
    if actor.is_operator:
        return list(session.scalars(select(Organization).order_by(Organization.id)))
    if not actor.roles:
        return []
    return list(session.scalars(select(Organization).where(Organization.id.in_(actor.roles))
                                .order_by(Organization.name, Organization.id)))


_ORGS = Organization.__table__
_ORG_COLUMNS = select(_ORGS.c.id, _ORGS.c.name, _ORGS.c.region, _ORGS.c.created_at)
_ORGS_AFTER = _ORGS.c.id > bindparam("after")
# Built once (a hot read: docs/benchmarks.md, "The API layer"); Core rows, no ORM objects.
_ORG_PAGE = {
    "all": _ORG_COLUMNS.where(_ORGS_AFTER).order_by(_ORGS.c.id).limit(bindparam("fetch")),
    "of": _ORG_COLUMNS.where(_ORGS.c.id.in_(bindparam("ids", expanding=True)), _ORGS_AFTER)
    .order_by(_ORGS.c.id).limit(bindparam("fetch")),
}


def organization_page(session: Session, actor: Actor, *, after: int | None, fetch: int) -> Sequence[Any]:
    """Up to ``fetch`` of the organizations the actor sees (an operator: all), by id, after the
    id ``after``: rows with ``id``, ``name``, ``region``, ``created_at`` (``org_to_dict`` takes them)."""
    which = {"after": -1 if after is None else after, "fetch": fetch}
    if actor.is_operator:
        return session.execute(_ORG_PAGE["all"], which).all()
    if not actor.roles:
        return []
    return session.execute(_ORG_PAGE["of"], {**which, "ids": sorted(actor.roles)}).all()


def org_to_dict(org: Organization, role: Role | None = None) -> dict[str, Any]:
    d: dict[str, Any] = {"id": org.id, "name": org.name, "region": org.region,
                         "created_at": org.created_at.isoformat()}
    if role is not None:
        d["role"] = role.value
    return d


# --- users and members ---------------------------------------------------------------------

def check_new_password(password: str) -> None:
    """The rule every chosen password meets (no database: the web form checks it first too)."""
    if len(password) < PASSWORD_MIN_LENGTH:
        raise EntitleError("password_too_short", f"Choose a password of at least {PASSWORD_MIN_LENGTH} "
                           "characters.", minimum=PASSWORD_MIN_LENGTH, length=len(password))
    if len(password) > PASSWORD_MAX_LENGTH:
        raise EntitleError("password_too_long", f"Choose a password of at most {PASSWORD_MAX_LENGTH:,} "
                           "characters.", maximum=PASSWORD_MAX_LENGTH, length=len(password))


def create_user(session: Session, *, email: str, password: str, now: datetime,
                is_issuer: bool = False, must_change_password: bool = False) -> User:
    email = single_line(email, "e-mail address", field="email", max_length=320).strip().lower()
    if "@" not in email:
        raise EntitleError("email_invalid", "Give a valid e-mail address.")
    check_new_password(password)
    if session.scalars(select(User).where(User.email == email)).first():
        raise Conflict("user_exists", f"A user with the e-mail {email} already exists.", email=email)
    user = User(email=email, password_hash=hash_password(password), is_issuer=is_issuer, created_at=now,
                must_change_password=must_change_password)
    session.add(user)
    session.flush()
    return user


def user_by_email(session: Session, email: str) -> User | None:
    return session.scalars(select(User).where(User.email == email.strip().lower())).one_or_none()


def add_member(session: Session, *, org_id: int, user: User, role: Role, actor: Actor,
               now: datetime) -> Membership:
    """Add a user to the organization, or change their role there (owners only, R-CORE-2).
    Refusals: ``organization_not_found`` (not a member: R-CORE-1), ``role_insufficient`` (not an
    owner), ``last_owner`` (it would demote the organization's only owner)."""
    actor.require_owner(org_id)
    history.lock_organization(session, org_id)  # the owners counted below stay so until commit
    existing = membership(session, org_id, user.id)
    if existing is None:
        return _new_member(session, org_id=org_id, user=user, role=role, actor=actor, now=now)
    if existing.role == Role.owner.value and role is not Role.owner:
        _keep_an_owner(session, org_id, user)
    before = {"role": existing.role}
    existing.role = role.value
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="member.set",
                   object_type="user", object_id=user.email, before=before, after={"role": role.value})
    return existing


def _new_member(session: Session, *, org_id: int, user: User, role: Role, actor: Actor,
                now: datetime) -> Membership:
    m = Membership(org_id=org_id, user_id=user.id, role=role.value, created_at=now)
    session.add(m)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="member.set",
                   object_type="user", object_id=user.email, before=None, after={"role": role.value})
    return m


def remove_member(session: Session, *, org_id: int, email: str, actor: Actor, now: datetime) -> Membership:
    """Take a user out of the organization (owners only, R-CORE-2); their account stays, and so
    do their other organizations. Returns the membership removed. Refusals:
    ``organization_not_found``, ``role_insufficient``, ``member_not_found`` (the e-mail is not a
    member here), ``last_owner`` (the organization's only owner)."""
    actor.require_owner(org_id)
    history.lock_organization(session, org_id)
    email = email.strip().lower()
    user = user_by_email(session, email)
    m = membership(session, org_id, user.id) if user is not None else None
    if user is None or m is None:
        org = session.get(Organization, org_id)
        raise NotFound("member", f"{email} is not a member of {org.name if org else 'this organization'}: "
                       "check the e-mail address in the list of members.", email=email)
    if m.role == Role.owner.value:
        _keep_an_owner(session, org_id, user)
    session.delete(m)
    session.flush()
    history.record(session, org_id=org_id, actor=actor, now=now, action="member.removed",
                   object_type="user", object_id=user.email, before={"role": m.role}, after=None)
    return m


def membership(session: Session, org_id: int, user_id: int) -> Membership | None:
    return session.scalars(select(Membership).where(Membership.org_id == org_id,
                                                    Membership.user_id == user_id)).one_or_none()


def _keep_an_owner(session: Session, org_id: int, user: User) -> None:
    """Refuse a change that would leave the organization without an owner (``last_owner``):
    nobody could manage its members any more."""
    owners = session.scalar(select(func.count()).select_from(Membership).where(
        Membership.org_id == org_id, Membership.role == Role.owner.value, Membership.user_id != user.id))
    if not owners:
        org = session.get(Organization, org_id)
        name = org.name if org else "this organization"
        raise Conflict("last_owner", f"{user.email} is the only owner of {name}. Make another member an owner "
                       "first.", email=user.email, org_id=org_id)


def member_counts(session: Session, org_id: int) -> dict[str, int]:
    """How many members the organization has in each role (roles without any left out)."""
    return {role: int(n) for role, n in session.execute(
        select(Membership.role, func.count()).where(Membership.org_id == org_id).group_by(Membership.role))}


def members(session: Session, org_id: int, *, after_id: int | None = None,
            limit: int | None = None) -> list[Membership]:
    """The organization's members, oldest first; a page of them with ``after_id`` and ``limit``."""
    stmt = select(Membership).where(Membership.org_id == org_id)
    if after_id is not None:
        stmt = stmt.where(Membership.id > after_id)
    return list(session.scalars(stmt.order_by(Membership.id).limit(limit)))


def authenticate(session: Session, *, email: str, password: str) -> User:
    """The user with this e-mail and password. Slow on purpose (argon2): call it in a read-only
    transaction, never while holding the write lock (SQLite has one writer)."""
    user = user_by_email(session, email)
    # An unknown e-mail spends the same time as a real check, so that e-mails cannot be probed.
    stored = user.password_hash if user is not None else _DUMMY_HASH()
    if not password_matches(stored, password) or user is None:
        raise Unauthorized("credentials_invalid", "E-mail or password is wrong.")
    return user


@dataclass(frozen=True, slots=True)
class PasswordChange:
    """A checked password change, ready to be written: the hash it replaces and the new one."""

    user_id: int
    old_hash: str
    new_hash: str


def prepare_password_change(user: User, *, current_password: str, new_password: str) -> PasswordChange:
    """Check a change and hash the new password: the slow part, done outside any write
    transaction. Refusals, in this order: ``password_too_short`` / ``password_too_long``,
    ``password_current_wrong``, ``password_unchanged``."""
    check_new_password(new_password)
    if not password_matches(user.password_hash, current_password):
        raise EntitleError("password_current_wrong", "The current password is wrong: type the password "
                           "you signed in with.", status=403)
    if new_password == current_password:
        raise EntitleError("password_unchanged", "The new password is the one you have now: choose a "
                           "different one.")
    return PasswordChange(user.id, user.password_hash, hash_password(new_password))


def apply_password_change(session: Session, change: PasswordChange, *, now: datetime,
                          keep_session_id: int | None = None) -> int:
    """Write a prepared change (fast). Every other web session of the user ends (someone who knew
    the old password may hold one); ``keep_session_id`` is the session that made the change. API
    tokens are kept: they were created deliberately and are revoked one by one. Refused with
    ``password_changed_meanwhile`` when the password changed since it was checked. Returns how
    many sessions ended."""
    user = session.get(User, change.user_id)
    if user is None or user.password_hash != change.old_hash:
        raise Conflict("password_changed_meanwhile", "Your password was changed while this change was being "
                       "checked: type your current password again.")
    user.password_hash, user.must_change_password, user.password_changed_at = change.new_hash, False, now
    return end_web_sessions(session, user_id=user.id, now=now, except_id=keep_session_id)


def change_password(session: Session, *, user: User, current_password: str, new_password: str,
                    now: datetime, keep_session_id: int | None = None) -> int:
    """Prepare and apply a change in one transaction (the console, tests). Interfaces that serve
    many users call the two steps with a read transaction for the first."""
    change = prepare_password_change(user, current_password=current_password, new_password=new_password)
    return apply_password_change(session, change, now=now, keep_session_id=keep_session_id)


class FailedSignIns(Protocol):
    """Counts failed sign-ins (entitle.platform.ratelimit.SignInLimiter)."""

    def check(self, *, email: str, client: str) -> None: ...
    def failed(self, *, email: str, client: str) -> None: ...


def sign_in(sessions: sessionmaker[Session], limiter: FailedSignIns, *, email: str, password: str,
            client: str) -> int:
    """Check an e-mail and password for a sign-in from ``client`` (API token or web) and return
    the user's id. Refused before any argon2 work when the account or the client has used up its
    failed sign-ins (``rate_limited``); a wrong password counts against both. The check runs in a
    read transaction: a flood of wrong passwords never holds the write lock."""
    limiter.check(email=email, client=client)
    with reading(sessions) as s:
        try:
            return authenticate(s, email=email, password=password).id
        except Unauthorized:
            limiter.failed(email=email, client=client)
            raise


def change_own_password(sessions: sessionmaker[Session], limiter: FailedSignIns, *, user_id: int, email: str,
                        client: str, current_password: str, new_password: str, now: datetime,
                        keep_session_id: int | None = None) -> int:
    """A signed-in user changes their password (API or web): checked in a read transaction,
    written in a short one. A wrong current password counts as a failed sign-in. Returns how many
    web sessions ended."""
    limiter.check(email=email, client=client)
    with reading(sessions) as s:
        user = s.get(User, user_id)
        if user is None:
            raise NotFound("user")
        try:
            change = prepare_password_change(user, current_password=current_password, new_password=new_password)
        except EntitleError as exc:
            if exc.code == "password_current_wrong":
                limiter.failed(email=email, client=client)
            raise
    with transaction(sessions) as s:
        return apply_password_change(s, change, now=now, keep_session_id=keep_session_id)


def reset_password(session: Session, *, user: User, new_password: str, now: datetime,
                   must_change: bool = True) -> int:
    """The operator at the console sets a user's password without the current one (the way back
    in for someone locked out). Every web session of the user ends; API tokens are kept. With
    ``must_change`` the user chooses their own at the next web sign-in. Returns how many sessions
    ended."""
    check_new_password(new_password)
    _set_password(user, new_password, now=now, must_change=must_change)
    return end_web_sessions(session, user_id=user.id, now=now)


def _set_password(user: User, password: str, *, now: datetime, must_change: bool) -> None:
    user.password_hash = hash_password(password)
    user.must_change_password = must_change
    user.password_changed_at = now


_dummy: list[str] = []


def _DUMMY_HASH() -> str:  # noqa: N802 - cached constant
    if not _dummy:
        _dummy.append(_hasher().hash(secrets.token_hex(8)))  # once per process, outside the bound
    return _dummy[0]


# --- API tokens ----------------------------------------------------------------------------

def create_token(session: Session, *, user: User, name: str, now: datetime) -> tuple[str, ApiToken]:
    """Return the token (shown once) and its stored row (which holds only the hash)."""
    single_line(name, "token name", max_length=200)
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = ApiToken(user_id=user.id, name=name or "token", token_hash=sha256(secret),
                   prefix=secret[:10], created_at=now)
    session.add(row)
    session.flush()
    return secret, row


def active_tokens(session: Session, *, user_id: int, before_id: int | None = None,
                  limit: int | None = None) -> list[ApiToken]:
    """The user's tokens that still work, newest first; a page of them with ``before_id`` and ``limit``."""
    stmt = select(ApiToken).where(ApiToken.user_id == user_id, ApiToken.revoked_at.is_(None))
    if before_id is not None:
        stmt = stmt.where(ApiToken.id < before_id)
    return list(session.scalars(stmt.order_by(ApiToken.id.desc()).limit(limit)))


def user_for_token(session: Session, token: str) -> User | None:
    row = session.scalars(select(ApiToken).where(ApiToken.token_hash == sha256(token),
                                                 ApiToken.revoked_at.is_(None))).one_or_none()
    return session.get(User, row.user_id) if row else None


# An API token's actor in one statement (token, its user, the user's memberships): what every
# authenticated request needs, built once.
_TOKEN_ACTOR = (select(User.id, User.email, User.is_issuer, Membership.org_id, Membership.role)
                .select_from(ApiToken).join(User, User.id == ApiToken.user_id)
                .outerjoin(Membership, Membership.user_id == User.id)
                .where(ApiToken.token_hash == bindparam("token_hash"), ApiToken.revoked_at.is_(None)))


def actor_for_token_hash(session: Session, token_hash: str) -> Actor | None:
    """The actor of a token that works (the same as ``actor_for(user_for_token(...))``), or None."""
    rows = session.execute(_TOKEN_ACTOR, {"token_hash": token_hash}).all()
    if not rows:
        return None
    user_id, email, is_issuer = rows[0][:3]
    return Actor(label=email, user_id=user_id, is_issuer=bool(is_issuer),
                 roles={org_id: Role(role) for *_, org_id, role in rows if org_id is not None})


class TokenActors:
    """API token -> actor, remembered by one process for ``ttl`` seconds (docs/architecture.md,
    "Requests, connections and authentication"): a token revoked, or a role changed, by another
    process takes effect here within ``ttl``; by this process, at once (every remembered actor is
    forgotten when a transaction that changed tokens, users, memberships or organizations commits,
    see ``_note_auth_change``). Only tokens that work are remembered; an unknown token is looked up
    every time."""

    def __init__(self, ttl: float, *, monotonic: Callable[[], float] = time.monotonic,
                 max_tokens: int = 100_000) -> None:
        self.ttl = ttl
        self.max_tokens = max_tokens
        self._monotonic = monotonic
        self._actors: dict[str, tuple[float, int, Actor]] = {}  # token hash -> (looked up at, generation, actor)

    def get(self, token_hash: str) -> Actor | None:
        hit = self._actors.get(token_hash)
        if hit is not None and hit[1] == _auth_generation[0] and self._monotonic() - hit[0] < self.ttl:
            return hit[2]
        return None

    def look_up(self, session: Session, token_hash: str) -> Actor | None:
        """Read the actor (in ``session``) and remember it if the token works."""
        generation, at = _auth_generation[0], self._monotonic()  # before reading: a change meanwhile wins
        actor = actor_for_token_hash(session, token_hash)
        if actor is not None and self.ttl > 0:
            if len(self._actors) >= self.max_tokens:
                self._actors.clear()
            self._actors[token_hash] = (at, generation, actor)
        return actor


# Bumped after every commit that changed an API token, a user, a membership or an organization
# in this process: what ``TokenActors`` remembered before is then forgotten.
_auth_generation = [0]
_AUTH_TABLES = frozenset({"api_tokens", "users", "memberships", "organizations"})
_AUTH_MODELS = (ApiToken, User, Membership, Organization)
_CHANGED = "entitle_auth_changed"


def _note_flush(session: Session, _context: Any) -> None:
    if not session.info.get(_CHANGED) and any(
            isinstance(obj, _AUTH_MODELS) for objs in (session.new, session.dirty, session.deleted) for obj in objs):
        session.info[_CHANGED] = True


def _note_statement(state: Any) -> None:
    if (state.is_update or state.is_delete) and not state.session.info.get(_CHANGED):
        table = getattr(state.statement, "table", None)
        if getattr(table, "name", None) in _AUTH_TABLES:
            state.session.info[_CHANGED] = True


def _note_auth_change(session: Session) -> None:
    if session.info.pop(_CHANGED, False):
        _auth_generation[0] += 1


event.listen(Session, "after_flush", _note_flush)
event.listen(Session, "do_orm_execute", _note_statement)
event.listen(Session, "after_commit", _note_auth_change)


def revoke_token(session: Session, *, user: User, token_id: int, now: datetime) -> ApiToken:
    """Revoke one of the user's tokens; again: no change (it keeps the first revocation time)."""
    return _revoke_own(session, ApiToken, token_id, user=user, now=now, what="token")


def _revoke_own(session: Session, model: type[R], row_id: int, *, user: User, now: datetime, what: str) -> R:
    """Revoke one of the user's own tokens or web sessions (someone else's is not found); a
    second revocation keeps the first time."""
    row = session.get(model, row_id)
    if row is None or row.user_id != user.id:
        raise NotFound(what, **{f"{what}_id": row_id})
    if row.revoked_at is None:
        row.revoked_at = now
    session.flush()
    return row


# --- browser sessions ----------------------------------------------------------------------

@dataclass(frozen=True)
class NewSession:
    cookie: str
    csrf_token: str


def start_session(session: Session, *, user: User, now: datetime) -> NewSession:
    cookie = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(32)
    first_org = min((m.org_id for m in user.memberships), default=None)  # the oldest organization
    session.add(WebSession(user_id=user.id, session_hash=sha256(cookie), csrf_token=csrf,
                           current_org_id=first_org, created_at=now,
                           expires_at=now + timedelta(seconds=get_settings().session_max_age_seconds)))
    session.flush()
    return NewSession(cookie, csrf)


def resolve_session(session: Session, cookie: str, *, now: datetime) -> WebSession | None:
    row = session.scalars(select(WebSession).where(WebSession.session_hash == sha256(cookie))).one_or_none()
    if row is None or row.revoked_at is not None or row.expires_at <= now:
        return None
    return row


def end_session(session: Session, cookie: str, *, now: datetime) -> None:
    session.execute(update(WebSession).where(WebSession.session_hash == sha256(cookie))
                    .values(revoked_at=now))


def active_sessions(session: Session, *, user_id: int, now: datetime, before_id: int | None = None,
                    limit: int | None = None) -> list[WebSession]:
    """The user's web sessions that are signed in (not ended, not expired), newest first; a page
    of them with ``before_id`` and ``limit``."""
    stmt = select(WebSession).where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None),
                                    WebSession.expires_at > now)
    if before_id is not None:
        stmt = stmt.where(WebSession.id < before_id)
    return list(session.scalars(stmt.order_by(WebSession.id.desc()).limit(limit)))


def revoke_session(session: Session, *, user: User, session_id: int, now: datetime) -> WebSession:
    """End one of the user's web sessions (signed out there); again: no change."""
    return _revoke_own(session, WebSession, session_id, user=user, now=now, what="session")


def end_web_sessions(session: Session, *, user_id: int, now: datetime, except_id: int | None = None) -> int:
    """End the user's web sessions, all or all but one; API tokens stay. Returns how many were
    signed in; expired ones end too (another process's clock may run behind this one's)."""
    which = [WebSession.user_id == user_id, WebSession.revoked_at.is_(None)]
    if except_id is not None:
        which.append(WebSession.id != except_id)
    signed_in = session.scalar(select(func.count()).select_from(WebSession).where(*which, WebSession.expires_at > now))
    session.execute(update(WebSession).where(*which).values(revoked_at=now))
    return int(signed_in or 0)


def session_to_dict(row: WebSession) -> dict[str, Any]:
    return {"id": row.id, "created_at": row.created_at.isoformat(), "expires_at": row.expires_at.isoformat(),
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


def token_to_dict(row: ApiToken) -> dict[str, Any]:
    return {"id": row.id, "name": row.name, "prefix": row.prefix, "created_at": row.created_at.isoformat(),
            "last_used_at": row.last_used_at.isoformat() if row.last_used_at else None,
            "revoked_at": row.revoked_at.isoformat() if row.revoked_at else None}


def revoke_all_sessions(session: Session, *, user_ids: list[int], now: datetime) -> int:
    """Log users out everywhere: browser sessions and API/app tokens (used by migrations)."""
    n = 0
    for part in chunks(sorted(set(user_ids))):
        n += session.execute(update(WebSession).where(WebSession.user_id.in_(part), WebSession.revoked_at.is_(None))
                             .values(revoked_at=now)).rowcount or 0
        n += session.execute(update(ApiToken).where(ApiToken.user_id.in_(part), ApiToken.revoked_at.is_(None))
                             .values(revoked_at=now)).rowcount or 0
    return n
