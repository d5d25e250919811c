"""What every HTTP request passes first: a bound on its body and the security headers of every
answer (docs/security.md).

A pure ASGI middleware, so that it costs a header scan per request and nothing per byte beyond a
counter. A body larger than its limit is refused with 413 in the error shape: at once when the
``Content-Length`` says so, else as soon as the bytes read pass the limit (a chunked body), before
it is read whole.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from entitle.errors import EntitleError

MiB = 1024 * 1024


class BodyTooLarge(HTTPException):
    """Raised while the body is read. An ``HTTPException``: FastAPI re-raises those from its body
    parsing (any other error there becomes a 400), and the API's handler answers it in the error
    shape (``entitle.api.errors``)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413)
        self.error = EntitleError("request_too_large",
                                  f"The request body is larger than this address accepts ({_size(limit)}): "
                                  "send a smaller request (split a list into several requests).",
                                  status=413, limit_bytes=limit)


def _size(n: int) -> str:
    return f"{n // MiB} MiB" if n >= MiB and n % MiB == 0 else f"{n // 1024} KiB" if n >= 1024 else f"{n} bytes"


class Guard:
    """Body limits (``default``, or the first of ``larger`` whose pattern matches the path) and
    the headers every answer carries."""

    def __init__(self, app: ASGIApp, *, default: int, larger: Sequence[tuple[str, int]] = (),
                 hsts: bool = False) -> None:
        self.app = app
        self.default = default
        self.larger = [(re.compile(pattern), limit) for pattern, limit in larger]
        headers = [(b"x-content-type-options", b"nosniff")]
        if hsts:  # only behind HTTPS (ENTITLE_COOKIE_SECURE): a browser then never tries plain HTTP
            headers.append((b"strict-transport-security", b"max-age=31536000"))
        self.headers = headers

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.larger:
            if pattern.fullmatch(path):
                return limit
        return self.default

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        limit = self.limit_for(scope["path"])
        for name, value in scope["headers"]:
            if name == b"content-length":
                if value.isdigit() and int(value) > limit:  # the server refused a malformed one
                    await _refuse(send_with_headers, BodyTooLarge(limit).error)
                    return
                break
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)  # answered 413 by the API's HTTPException handler
            return message

        await self.app(scope, counted, send_with_headers)


async def _refuse(send: Send, exc: EntitleError) -> None:
    body: Any = json.dumps(exc.to_dict()).encode()
    await send({"type": "http.response.start", "status": exc.status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
