"""The route class of every API and web route: what a plain ``def`` endpoint costs in hops.

FastAPI runs a ``def`` endpoint in its thread pool and then, because the endpoint was not a
coroutine, validates its answer against the response model in the thread pool too: two hops
(~0.1-0.3 ms of CPU each here) for one request. ``OneHopRoute`` hands FastAPI a coroutine that
runs the endpoint in the thread pool, so the validation (pure CPU, microseconds) runs on the
event loop: the endpoint's own work is where it was, the second hop is gone.

A route marked ``@quick_read`` takes no hop at all on SQLite: it runs on the event loop. The
mark says the route only reads, runs a few bounded statements (by id, or one page) and calls
nothing outside the process (no payment provider, no mail). SQLite is a library reading a local
file, and in WAL mode a reader never waits for a writer: the statement costs less than the hop
(docs/benchmarks.md, "The API layer"). On PostgreSQL a statement is a network round trip, which
the event loop never waits for: the route runs in the thread pool as any other.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import anyio.to_thread
from fastapi import Request, Response
from fastapi.dependencies.utils import get_typed_signature
from fastapi.routing import APIRoute

from entitle.api import answers
from entitle.api.deps import REQUEST_SESSION, RequestSession

F = TypeVar("F", bound=Callable[..., Any])

_QUICK = "__entitle_quick_read__"
_REQUEST = "entitle_route_request"  # the hidden parameter a quick read receives its request by


def quick_read(endpoint: F) -> F:
    """Mark ``endpoint`` (a plain ``def``) as a quick read: on SQLite it runs on the event loop."""
    setattr(endpoint, _QUICK, True)
    return endpoint


def reads_on_loop(request: Request) -> bool:
    return request.app.state.ctx.engine.dialect.name == "sqlite"  # type: ignore[no-any-return]


def one_hop(endpoint: Callable[..., Any]) -> Callable[..., Any]:
    """``endpoint`` as a coroutine function running it in the thread pool (a quick read on
    SQLite: on the event loop), which also commits the request's transaction when the endpoint
    returns (``RequestSession.end_here``): one hop for the work and its commit. FastAPI reads
    the parameters from the signature given here (the endpoint's, and the request under a name
    of its own) and their annotations from the endpoint's module (``inspect.unwrap``)."""
    if inspect.iscoroutinefunction(endpoint) or not inspect.isfunction(endpoint):
        return endpoint
    quick = getattr(endpoint, _QUICK, False)
    # FastAPI hands the request to one parameter: the endpoint's own if it has one.
    own = next((p.name for p in get_typed_signature(endpoint).parameters.values()
                if isinstance(p.annotation, type) and issubclass(p.annotation, Request)), None)

    @functools.wraps(endpoint)
    async def run(**values: Any) -> Any:
        request: Request = values[own] if own else values.pop(_REQUEST)
        held = request.scope.get(REQUEST_SESSION)
        if quick and reads_on_loop(request):
            # Ended before anything else runs on the loop: the loop never holds more than one
            # connection, so it can never wait for one (the pool outnumbers the threads).
            ok = False
            try:
                answer = endpoint(**values)
                ok = True
                return answer
            finally:
                if held is not None:
                    held.end_here(ok=ok)
        return await anyio.to_thread.run_sync(_work, endpoint, values, held)

    if own is None:
        signature = inspect.signature(endpoint)
        hidden = inspect.Parameter(_REQUEST, inspect.Parameter.KEYWORD_ONLY, annotation=Request)
        run.__signature__ = signature.replace(  # type: ignore[attr-defined]
            parameters=[*signature.parameters.values(), hidden])
    return run


def _work(endpoint: Callable[..., Any], values: dict[str, Any], held: RequestSession | None) -> Any:
    answer = endpoint(**values)
    if held is not None:
        held.end_here(ok=True)  # an exception leaves it to the request's end: rolled back there
    return answer


class OneHopRoute(APIRoute):
    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__(path, one_hop(endpoint), **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        """A ``@remembered`` read asks the app's remembered answers first (``api.answers``),
        before FastAPI reads its parameters and solves its dependencies."""
        handler = super().get_route_handler()
        if not answers.is_remembered(self.endpoint):
            return handler

        async def remembered_or_made(request: Request) -> Response:
            return await request.app.state.answers.answer(request, handler)

        return remembered_or_made
