"""The typed license-key code (R-CORE-4): plain functions, no I/O.

``7KQ2M-XW9PD-4HN3R-T8VCG``: four groups of five characters from Crockford's base-32 alphabet
(no I, L, O or U), 19 random characters (95 bits) and one check character, which catches every
single mistyped character and every swap of two neighbouring characters before any lookup.
(Luhn mod 32 would miss swapping 0 and Z, as Luhn mod 10 misses 09/90; see ``_syndrome``.)
Input is case-insensitive; dashes and spaces are ignored; O is read as 0 and I or L as 1, the
way Crockford's alphabet intends.
"""

from __future__ import annotations

import hashlib
import secrets

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_ALIASES = {"O": "0", "I": "1", "L": "1"}
N = len(ALPHABET)
DATA_CHARS = 19
GROUP = 5
RANDOM_BITS = DATA_CHARS * 5


class CodeError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# GF(32) = GF(2)[x] / (x^5 + x^2 + 1); the characters' values are its elements.
_MODULUS = 0b100101


def _times_x(value: int) -> int:
    value <<= 1
    return value ^ _MODULUS if value & 0b100000 else value


def _syndrome(chars: str) -> int:
    """Horner's rule at x: sum of c_i * x^(n-1-i) over GF(32). A valid code has syndrome 0.

    A substitution changes it by x^k * (a ^ b) != 0; swapping neighbours a != b changes it by
    x^k * (a ^ b) * (x ^ 1) != 0 - a field has no zero divisors, so both are always caught
    (the quasigroup a*x + y is totally anti-symmetric, as in Damm's algorithm).
    """
    total = 0
    for ch in chars:
        total = _times_x(total) ^ _INDEX[ch]
    return total


def check_char(data: str) -> str:
    """The character that brings the syndrome of ``data + check`` to zero."""
    return ALPHABET[_times_x(_syndrome(data))]


def generate() -> str:
    # One call to the OS generator: 96 random bits, of which 19 five-bit groups (95 bits) are used.
    bits = int.from_bytes(secrets.token_bytes(12), "big")
    data = "".join(ALPHABET[(bits >> (5 * i)) & 31] for i in range(DATA_CHARS))
    return format_code(data + check_char(data))


def format_code(compact: str) -> str:
    return "-".join(compact[i:i + GROUP] for i in range(0, len(compact), GROUP))


def normalize(typed: str) -> str:
    """Return the compact canonical code, or raise CodeError malformed/mistyped."""
    compact = "".join(ch for ch in typed.upper() if ch not in "- \t")
    compact = "".join(_ALIASES.get(ch, ch) for ch in compact)
    if len(compact) != DATA_CHARS + 1 or any(ch not in _INDEX for ch in compact):
        raise CodeError(
            "key_malformed",
            "That is not a license key: a key has 20 letters and digits in four groups of five, "
            "like 7KQ2M-XW9PD-4HN3R-T8VCG.",
        )
    if _syndrome(compact) != 0:
        raise CodeError(
            "key_mistyped",
            "The key's check character does not match: one character was probably mistyped. "
            "Compare the key with the one you received.",
        )
    return compact


def digest(compact: str) -> str:
    """What is stored: keys carry 95 random bits, so an unsalted SHA-256 cannot be reversed."""
    return hashlib.sha256(compact.encode()).hexdigest()
