"""Device heartbeats at fleet rate: ``POST /api/v1/ac/heartbeat`` (R-AC-4, R-AC-5).

A fleet of installations reports that its devices are alive, thousands of times a second. One
transaction per report (``POST /api/v1/ac/state``) cannot keep up, so this path touches no
database while it answers (docs/access-commander.md, "Heartbeats: the write path"):

1. the installation token is looked up once and then trusted for ``heartbeat_token_ttl_seconds``
   (the delay after which a revoked token stops working in a process that used it);
2. the installation's serials are kept in memory too, looked up again on an unknown serial at
   most every ``heartbeat_serials_refresh_seconds``;
3. the evidence (per installation, per serial: the moments the device was heard, from the
   injected clock) goes into an in-process buffer and the answer is ``202 Accepted``;
4. a flusher thread writes the buffer every ``heartbeat_flush_interval_seconds``, every
   installation through ``services.seen`` inside ONE transaction, and once more on shutdown.

A crash loses the heartbeats accepted since the last flush began: at most one interval plus the
length of one flush. Losing evidence can only shorten the connected time, never lengthen it, and
``seen`` ignores evidence older than what is stored, so several processes (``--workers``,
several servers over one PostgreSQL), each with its own buffer, can flush in any order.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.routing import APIRoute
from pydantic import BaseModel, Field
from sqlalchemy import select
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from entitle.access_commander import services as ac
from entitle.access_commander.models import Device, Installation
from entitle.config import Settings
from entitle.context import Context
from entitle.db import chunks, reading, transaction

log = logging.getLogger("entitle.heartbeat")

PATH = "/api/v1/ac/heartbeat"
MAX_SERIALS = 1000
# 1,000 serials of 64 characters, quoted and separated, fit with room to spare.
MAX_BODY_BYTES = 128 * 1024
# Token look-ups remembered (known and unknown tokens); beyond this the cache starts afresh.
MAX_CACHED_TOKENS = 100_000


# --- what the process remembers ------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class KnownInstallation:
    """What the hot path needs of an installation: whose it is and its heartbeat timeout."""

    id: int
    org_id: int
    timeout: timedelta


@dataclass(slots=True)
class _Serials:
    serials: frozenset[str]
    loaded: float  # monotonic


@dataclass(slots=True)
class _Evidence:
    """One installation's heartbeats since the last flush: serial -> moments heard."""

    timeout: timedelta
    chains: dict[str, list[datetime]] = field(default_factory=dict)


def add_moment(chain: list[datetime], at: datetime, timeout: timedelta) -> None:
    """Add a moment a device was heard to its chain of moments (ascending).

    The chain keeps the fewest moments that tell the same story to ``seen``: a moment within the
    timeout of the one before the last replaces the last (the connection ran on through it), a
    later one is kept (a gap the rules must see). Within one flush interval, far shorter than any
    timeout, a chain is (first, last). A moment not later than the last adds nothing (the clock
    went back, or two requests were heard at once): ignoring it can only under-count.
    """
    if at <= chain[-1]:
        return
    if len(chain) >= 2 and at - chain[-2] <= timeout:
        chain[-1] = at
    else:
        chain.append(at)


@dataclass
class FlushStats:
    flushes: int = 0
    failures: int = 0
    devices_written: int = 0
    last_seconds: float = 0.0
    max_seconds: float = 0.0
    last_error: str | None = None


class Heartbeats:
    """The heartbeat buffer of one server process, its caches and its flusher."""

    def __init__(self, ctx: Context, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.ctx = ctx
        settings = ctx.settings
        self.flush_interval = float(settings.heartbeat_flush_interval_seconds)
        self.token_ttl = float(settings.heartbeat_token_ttl_seconds)
        self.serials_refresh = float(settings.heartbeat_serials_refresh_seconds)
        self._monotonic = monotonic
        # token digest -> (looked up at, installation or None for an unknown token)
        self._tokens: dict[bytes, tuple[float, KnownInstallation | None]] = {}
        self._serials: dict[int, _Serials] = {}
        self._lock = threading.Lock()  # guards _pending (request handlers vs. the flusher)
        self._pending: dict[int, _Evidence] = {}
        self._flush_lock = threading.Lock()  # one flush at a time in this process
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.stats = FlushStats()

    # --- the hot path (event loop; the database only on a cache miss, in a worker thread) -------

    async def installation(self, token: str) -> KnownInstallation | None:
        digest = ac.token_digest(token)
        hit = self._tokens.get(digest)
        if hit is not None and self._monotonic() - hit[0] < self.token_ttl:
            return hit[1]
        return await anyio.to_thread.run_sync(self._look_up_token, digest)

    async def unknown_serials(self, inst: KnownInstallation, serials: Iterable[str]) -> list[str]:
        """The serials that are not devices of the installation (usually none)."""
        known = self._serials.get(inst.id)
        missing = list(serials) if known is None else [s for s in serials if s not in known.serials]
        if missing and (known is None or self._monotonic() - known.loaded >= self.serials_refresh):
            known = await anyio.to_thread.run_sync(self._load_serials, inst.id)
            missing = [s for s in missing if s not in known.serials]
        return missing

    def record(self, inst: KnownInstallation, serials: Iterable[str], at: datetime) -> int:
        """Buffer the evidence that these devices were heard at ``at``."""
        n = 0
        with self._lock:
            pending = self._pending.get(inst.id)
            if pending is None:
                pending = self._pending[inst.id] = _Evidence(inst.timeout)
            chains = pending.chains
            for serial in serials:
                chain = chains.get(serial)
                if chain is None:
                    chains[serial] = [at]
                else:
                    add_moment(chain, at, inst.timeout)
                n += 1
        return n

    # --- cache misses (worker thread) -------------------------------------------------------------

    def _look_up_token(self, digest: bytes) -> KnownInstallation | None:
        with reading(self.ctx.sessions) as s:
            row = s.execute(select(Installation.id, Installation.org_id, Installation.heartbeat_timeout_seconds)
                            .where(Installation.token_hash == digest)).one_or_none()
            inst = None if row is None else KnownInstallation(row.id, row.org_id, timedelta(seconds=row[2]))
            if inst is not None and inst.id not in self._serials:
                self._serials[inst.id] = self._read_serials(s, inst.id)
        if len(self._tokens) >= MAX_CACHED_TOKENS:
            self._tokens.clear()
        self._tokens[digest] = (self._monotonic(), inst)
        return inst

    def _load_serials(self, installation_id: int) -> _Serials:
        with reading(self.ctx.sessions) as s:
            known = self._serials[installation_id] = self._read_serials(s, installation_id)
        return known

    def _read_serials(self, session: Any, installation_id: int) -> _Serials:
        serials = session.scalars(select(Device.serial).where(Device.installation_id == installation_id)).all()
        return _Serials(frozenset(serials), self._monotonic())

    # --- writing -----------------------------------------------------------------------------------

    def pending_devices(self) -> int:
        with self._lock:
            return sum(len(p.chains) for p in self._pending.values())

    def flush(self) -> int:
        """Write the buffered heartbeats: every installation in one transaction. Returns the
        number of devices written. If the transaction fails, the evidence goes back into the
        buffer (merged with what arrived since) and the error is raised."""
        with self._flush_lock:
            with self._lock:
                pending, self._pending = self._pending, {}
            if not pending:
                return 0
            started = time.perf_counter()
            try:
                written = self._write(pending)
            except BaseException as exc:
                self._put_back(pending)
                self.stats.failures += 1
                self.stats.last_error = f"{type(exc).__name__}: {exc}"
                raise
            took = time.perf_counter() - started
            self.stats.flushes += 1
            self.stats.devices_written += written
            self.stats.last_seconds = took
            self.stats.max_seconds = max(self.stats.max_seconds, took)
            return written

    def _write(self, pending: dict[int, _Evidence]) -> int:
        written = 0
        with transaction(self.ctx.sessions) as s:
            ids = sorted(pending)  # every writer locks installations in the same order
            installations = {i.id: i for part in chunks(ids)
                             for i in s.scalars(select(Installation).where(Installation.id.in_(part)))}
            for inst_id in ids:
                inst = installations.get(inst_id)
                if inst is None:
                    continue
                chains = pending[inst_id].chains
                longest = max(len(c) for c in chains.values())
                # Usually one round of (first, last); a chain with gaps in it takes more, in order.
                for r in range(0, longest, 2):
                    evidence = {serial: (c[r], c[r + 1] if len(c) > r + 1 else c[r])
                                for serial, c in chains.items() if len(c) > r}
                    n = ac.seen(s, inst, evidence)
                    if r == 0:
                        written += n
        return written

    def _put_back(self, pending: dict[int, _Evidence]) -> None:
        with self._lock:
            newer, self._pending = self._pending, pending
            for inst_id, evidence in newer.items():
                mine = pending.get(inst_id)
                if mine is None:
                    pending[inst_id] = evidence
                    continue
                for serial, chain in evidence.chains.items():
                    old = mine.chains.get(serial)
                    if old is None:
                        mine.chains[serial] = chain
                    else:
                        for at in chain:
                            add_moment(old, at, mine.timeout)

    def drop_buffer(self) -> int:
        """What a crash does: forget the buffered heartbeats. Returns how many devices had some."""
        with self._lock:
            dropped, self._pending = self._pending, {}
        return sum(len(p.chains) for p in dropped.values())

    # --- the flusher -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="heartbeat-flusher", daemon=True)
        self._thread.start()

    def stop(self, *, flush: bool = True) -> None:
        """Stop the flusher; write what is buffered unless ``flush`` is False (a crash)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join()
        if flush:
            self.flush()

    def _run(self) -> None:
        # A fixed cadence: a flush begins every interval (or right after a longer flush), so what
        # a crash can lose is one interval plus the flush that was running.
        next_at = time.monotonic() + self.flush_interval
        while not self._stop.wait(max(0.0, next_at - time.monotonic())):
            next_at = max(next_at + self.flush_interval, time.monotonic())
            try:
                self.flush()
            except Exception:  # the evidence is back in the buffer; the next flush retries
                log.exception("heartbeat flush failed; retrying in %s s", self.flush_interval)


# --- HTTP ------------------------------------------------------------------------------------------

class HeartbeatIn(BaseModel):
    """One device, or up to 1,000 devices of the installation, heard now."""

    serial: str | None = Field(default=None, min_length=1, max_length=64)
    serials: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        default=None, min_length=1, max_length=MAX_SERIALS)


class HeartbeatOut(BaseModel):
    accepted: int = Field(description="Devices whose heartbeat was buffered; written within the flush interval.")


_JSON = (b"content-type", b"application/json")


def _error(code: str, message: str, **detail: Any) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "detail": detail}},
                      separators=(",", ":")).encode()


_NO_TOKEN = _error("authentication_required",
                   "Send the installation's token as 'Authorization: Bearer <token>'.")
_BAD_TOKEN = _error("token_invalid", "This installation token is unknown; use the token shown when the "
                                     "installation was registered.")
_TOO_LARGE = _error("request_too_large", f"A heartbeat request is at most {MAX_BODY_BYTES} bytes; "
                                         f"send at most {MAX_SERIALS} serials at a time.",
                    max_bytes=MAX_BODY_BYTES)


def _invalid(at: str, problem: str) -> bytes:
    return _error("invalid_request", f"The request is not valid: {at}: {problem}.",
                  errors=[{"at": at, "problem": problem}])


def _serials_of(body: bytes) -> list[str] | bytes:
    """The serials a request body names, or the 422 answer's body."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return _invalid("body", "JSON expected")
    if not isinstance(data, dict):
        return _invalid("body", 'an object expected: {"serial": "..."} or {"serials": ["...", ...]}')
    serial, serials = data.get("serial"), data.get("serials")
    if (serial is None) == (serials is None):
        return _invalid("body", "give either serial or serials")
    if serial is not None:
        serials = [serial]
    elif not isinstance(serials, list) or not 1 <= len(serials) <= MAX_SERIALS:
        return _invalid("body.serials", f"a list of 1 to {MAX_SERIALS} serial numbers expected")
    for s in serials:
        if not isinstance(s, str) or not 1 <= len(s) <= 64:
            return _invalid("body.serial" if serial is not None else "body.serials",
                            "a serial number is a string of 1 to 64 characters")
    return serials


class HeartbeatEndpoint:
    """The ASGI app behind the route: no request object, no validation layer, no database."""

    def __init__(self, heartbeats: Heartbeats) -> None:
        self.heartbeats = heartbeats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        authorization = length = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value
            elif name == b"content-length":
                length = value
        if authorization is None or authorization[:7].lower() != b"bearer ":
            return await _answer(send, 401, _NO_TOKEN, unauthorized=True)
        inst = await self.heartbeats.installation(authorization[7:].strip().decode("latin-1"))
        if inst is None:
            return await _answer(send, 401, _BAD_TOKEN, unauthorized=True)
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return await _answer(send, 413, _TOO_LARGE)
        body = b""
        more = True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > MAX_BODY_BYTES:
                return await _answer(send, 413, _TOO_LARGE)
        serials = _serials_of(body)
        if isinstance(serials, bytes):
            return await _answer(send, 422, serials)
        unknown = await self.heartbeats.unknown_serials(inst, serials)
        if unknown:
            detail: dict[str, Any] = ({"serial": unknown[0]} if len(serials) == 1 else
                                      {"serials": unknown[:50], "unknown": len(unknown)})
            message_text = ("No such device in this installation: nothing was recorded. Add the device "
                            "first." if len(serials) == 1 else
                            f"{len(unknown)} of the serials are no devices of this installation: "
                            "nothing was recorded. Add the devices first.")
            return await _answer(send, 404, _error("device_not_found", message_text, **detail))
        n = self.heartbeats.record(inst, serials, self.heartbeats.ctx.clock.now())
        return await _answer(send, 202, b'{"accepted":%d}' % n)


async def _answer(send: Send, status: int, body: bytes, *, unauthorized: bool = False) -> None:
    headers = [_JSON, (b"content-length", b"%d" % len(body))]
    if unauthorized:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def openapi_route_kwargs() -> dict[str, Any]:
    """How the route is documented (the handler itself is ``HeartbeatEndpoint``)."""
    schema = HeartbeatIn.model_json_schema()
    interval = Settings.model_fields["heartbeat_flush_interval_seconds"].default
    return {
        "methods": ["POST"],
        "name": "device_heartbeat",
        "status_code": 202,
        "response_model": HeartbeatOut,
        "tags": ["access-commander"],
        "summary": "Device heartbeats",
        "description": (
            "A device, or the installation for up to 1,000 of its devices, reports that it is "
            "alive, authenticated by the installation's token (`Authorization: Bearer <token>`). "
            f"The heartbeat is buffered and written within the flush interval ({interval:g} s by "
            "default): `202 Accepted`. A server crash loses at most the heartbeats of one interval, which "
            "can only shorten the connected time (R-AC-4, R-AC-5). Refusals: "
            "authentication_required, token_invalid (401), device_not_found (404, nothing is "
            "recorded), invalid_request (422), request_too_large (413)."),
        "responses": {401: {"model": _error_model()}, 404: {"model": _error_model()},
                      413: {"model": _error_model()}, 422: {"model": _error_model()}},
        "openapi_extra": {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}},
    }


def _error_model() -> Any:
    from entitle.api.schemas import ErrorBody

    return ErrorBody


async def _documented(request: Request) -> None:  # pragma: no cover - replaced by HeartbeatEndpoint
    raise NotImplementedError


def install(app: FastAPI, heartbeats: Heartbeats) -> None:
    """Add the route, documented in the OpenAPI document like any other, served by
    ``HeartbeatEndpoint`` (FastAPI's request handling, built for the documented signature, is
    replaced), and put it first: the router tries routes in order."""
    app.add_api_route(PATH, _documented, **openapi_route_kwargs())
    route = app.router.routes.pop()
    assert isinstance(route, APIRoute) and route.path == PATH
    route.app = HeartbeatEndpoint(heartbeats)
    app.router.routes.insert(0, route)
