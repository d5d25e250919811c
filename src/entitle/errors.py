"""Errors users can act on: a stable code, a sentence, the numbers involved (SPEC §5)."""

from __future__ import annotations

from typing import Any


class EntitleError(Exception):
    """A refusal. ``code`` is stable and documented; ``message`` tells the user what to do."""

    status = 400

    def __init__(self, code: str, message: str, *, status: int | None = None, **detail: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.detail = detail
        if status is not None:
            self.status = status

    def to_dict(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "detail": self.detail}}


class NotFound(EntitleError):
    status = 404

    def __init__(self, what: str, message: str | None = None, **detail: Any) -> None:
        super().__init__(f"{what}_not_found", message or f"No such {what.replace('_', ' ')} here.", **detail)


class Forbidden(EntitleError):
    status = 403


class Conflict(EntitleError):
    status = 409


class Unauthorized(EntitleError):
    status = 401


class RateLimited(EntitleError):
    status = 429

    def __init__(self, message: str, retry_after: int, **detail: Any) -> None:
        super().__init__("rate_limited", message, retry_after=retry_after, **detail)
        self.retry_after = retry_after


class Busy(EntitleError):
    """Expensive work of this kind is at its bound in this process: try again shortly."""

    status = 503

    def __init__(self, code: str, message: str, retry_after: int = 1, **detail: Any) -> None:
        super().__init__(code, message, retry_after=retry_after, **detail)
        self.retry_after = retry_after


def retry_after(exc: EntitleError) -> int | None:
    """Seconds a client should wait before trying again (the Retry-After header), if any."""
    return exc.retry_after if isinstance(exc, (RateLimited, Busy)) else None
