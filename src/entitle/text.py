"""Words for numbers, the same in every message (CLI, API, web)."""

from __future__ import annotations


def plural(n: int | None, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number: "1 device", "0 devices", "1,000 devices";
    None is "unlimited devices". ``many`` defaults to ``one`` + "s"."""
    many = many if many is not None else one + "s"
    if n is None:
        return f"unlimited {many}"
    return f"{n:,} {one if n == 1 else many}"
