"""The clock every interface uses comes from one place (R-CORE-7)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from entitle.clock import SystemClock
from entitle.config import Settings
from entitle.context import build


def test_entitle_now_freezes_the_clock_of_every_interface(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # R-CORE-7: ENTITLE_NOW (tests, demos, scripted checks) sets the injected clock.
    monkeypatch.setenv("ENTITLE_NOW", "2027-03-01T12:00:00+01:00")
    ctx = build(Settings(database_url=database_url))
    assert ctx.clock.now() == datetime(2027, 3, 1, 11, 0, tzinfo=UTC)
    assert ctx.clock.now().tzinfo is not None
    ctx.engine.dispose()
    monkeypatch.delenv("ENTITLE_NOW")
    ctx = build(Settings(database_url=database_url))
    assert isinstance(ctx.clock, SystemClock)
    ctx.engine.dispose()


def test_a_naive_entitle_now_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ENTITLE_NOW", "2027-03-01T12:00:00")
    with pytest.raises(ValidationError, match="time zone"):
        Settings()
