"""Remembered answers: a read answered again from its bytes while nothing it shows can have changed
(issue 17; docs/architecture.md, "Remembered answers").

A route marked ``@remembered`` (a quick read whose answer depends only on the database, the caller's
token, the path and query, and the time) is answered once, and its bytes kept in this process with:

- **the database's mark** read *before* the answer was made (``db.HealthCheck``, on the event loop:
  SQLite's ``PRAGMA data_version``, which moves when any other connection of any process commits;
  PostgreSQL's ``pg_current_snapshot()``, which moves when any transaction that wrote commits or
  rolls back, or a new one starts writing). The same mark again means nothing was committed since,
  so the database would give the same rows. Any commit anywhere moves it: the rule is coarse and
  always safe — it never needs to know what a write touched.
- **the next moment a time rule changes the answer** (``until``), which the route gives
  (``valid_until``): a wallet lot's five years, say (R-CORE-7, right whenever read). A route that
  gives none is not remembered.

A request is answered from memory only with the same token (still a working one in the process's
token cache, whose bound for a revocation elsewhere holds as before), the same path and query, the
same mark, and a clock from the moment it was made (a clock set back makes it again) up to before
``until``. Everything else — a miss, another token, an unknown token
— goes the normal way. The memory is bounded (``MAX_ANSWERS``, ``MAX_BYTES``; the oldest go
first). ``check``: every answer given from memory is made again and compared (the test suite runs
so: an answer that was wrong to reuse fails the test that read it).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request
from starlette.responses import Response

from entitle.api.deps import bearer_token_hash

F = TypeVar("F", bound=Callable[..., Any])

MAX_ANSWERS = 4096
MAX_BYTES = 64 * 1024 * 1024
_REMEMBERED = "__entitle_remembered__"
_UNTIL = "entitle.answer_until"  # request.scope: the route's valid_until (a datetime, or FOREVER)
FOREVER = object()  # valid_until(request, None): no time rule changes this answer

log = logging.getLogger("entitle.answers")


def remembered(endpoint: F) -> F:
    """Mark a quick read whose answer may be remembered (it must call ``valid_until``)."""
    setattr(endpoint, _REMEMBERED, True)
    return endpoint


def is_remembered(endpoint: Callable[..., Any]) -> bool:
    return bool(getattr(endpoint, _REMEMBERED, False))


def valid_until(request: Request, at: datetime | None) -> None:
    """The next moment a time rule changes this answer (None: none does). Called again, the
    earliest counts."""
    held = request.scope.get(_UNTIL)
    if at is None:
        if held is None:
            request.scope[_UNTIL] = FOREVER
    elif held is None or held is FOREVER or at < held:
        request.scope[_UNTIL] = at


@dataclass(frozen=True)
class _Answer:
    mark: Any
    made_at: datetime  # the clock when it was made: never given for an earlier moment (a clock set back)
    until: datetime | None  # None: forever
    body: bytes
    media_type: str | None


class Answers:
    """The remembered answers of one app (one process)."""

    def __init__(self, *, mark: Callable[[], Awaitable[Any]], now: Callable[[], datetime], check: bool = False,
                 enabled: bool = True, max_answers: int = MAX_ANSWERS, max_bytes: int = MAX_BYTES) -> None:
        self._mark = mark
        self._now = now
        self.check = check
        self.enabled = enabled
        self.max_answers = max_answers
        self.max_bytes = max_bytes
        self._answers: OrderedDict[tuple[str, ...], _Answer] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._answers)

    def forget(self) -> None:
        self._answers.clear()
        self._bytes = 0

    @staticmethod
    def key_of(request: Request) -> tuple[str, ...] | None:
        """(token, method, path, query), or None when the request carries no token this process
        knows to work (it then goes the normal way, which authenticates it)."""
        token_hash = bearer_token_hash(request.headers.get("authorization"))
        if token_hash is None or request.app.state.ctx.token_actors.get(token_hash) is None:
            return None
        return (token_hash, request.method, request.url.path, request.url.query)

    async def answer(self, request: Request, make: Callable[[Request], Awaitable[Response]]) -> Response:
        """The remembered answer to ``request`` if it still holds, else ``make``'s (remembered
        when it is a 200 and the route said until when)."""
        key = self.key_of(request) if self.enabled else None
        if key is None:
            return await make(request)
        try:
            mark = await self._mark()  # before the answer is made: a commit meanwhile moves it
        except Exception:  # the database unreachable: the normal way answers it (503) as ever
            return await make(request)
        held = self._answers.get(key)
        now = self._now()
        if (held is not None and held.mark == mark and held.made_at <= now
                and (held.until is None or now < held.until)):
            self._answers.move_to_end(key)
            if not self.check:
                return Response(held.body, media_type=held.media_type)
            made = await make(request)
            fresh = bytes(getattr(made, "body", b""))
            if made.status_code != 200 or fresh != held.body:
                log.error("answers.stale path=%s", request.url.path)
                raise AssertionError(f"a remembered answer to {request.url.path} was stale:\n"
                                     f"remembered {held.body[:300]!r}\nnow        {fresh[:300]!r}")
            return made
        made = await make(request)
        until = request.scope.get(_UNTIL)
        body = getattr(made, "body", None)
        if made.status_code == 200 and until is not None and isinstance(body, bytes | memoryview):
            self._keep(key, _Answer(mark, now, None if until is FOREVER else until, bytes(body), made.media_type))
        return made

    def _keep(self, key: tuple[str, ...], answer: _Answer) -> None:
        if len(answer.body) > self.max_bytes:
            return
        old = self._answers.pop(key, None)
        if old is not None:
            self._bytes -= len(old.body)
        self._answers[key] = answer
        self._bytes += len(answer.body)
        while len(self._answers) > self.max_answers or self._bytes > self.max_bytes:
            _, gone = self._answers.popitem(last=False)
            self._bytes -= len(gone.body)
