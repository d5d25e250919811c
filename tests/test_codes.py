"""The typed license-key format (R-CORE-4): pure functions, no database."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy import event

from conftest import auth
from entitle.keys import codes
from helpers import mistype, org_with_owner

GROUP = f"[{re.escape(codes.ALPHABET)}]{{5}}"
FORMAT = re.compile(f"^{GROUP}-{GROUP}-{GROUP}-{GROUP}$")

# A strategy for well-formed codes that does not depend on `secrets`, so hypothesis can shrink.
data_chars = st.text(alphabet=codes.ALPHABET, min_size=codes.DATA_CHARS, max_size=codes.DATA_CHARS)


def make_code(data: str) -> str:
    return data + codes.check_char(data)


def refusal(typed: str) -> str:
    with pytest.raises(codes.CodeError) as exc:
        codes.normalize(typed)
    return exc.value.code


def test_generated_codes_are_four_groups_of_five_with_at_least_80_random_bits():
    # R-CORE-4: the randomness is computed from the format, not taken from a constant.
    code = codes.generate()
    assert FORMAT.match(code), code
    compact = code.replace("-", "")
    check_chars = 1
    random_chars = len(compact) - check_chars
    bits = random_chars * math.log2(len(codes.ALPHABET))
    assert bits >= 80
    assert codes.RANDOM_BITS == bits


def test_generated_codes_use_every_character_in_every_random_position():
    # R-CORE-4: each random position really varies over the whole alphabet (so the bits are real).
    seen: list[set[str]] = [set() for _ in range(codes.DATA_CHARS)]
    generated = {codes.normalize(codes.generate()) for _ in range(3000)}
    assert len(generated) == 3000
    for compact in generated:
        for i, ch in enumerate(compact[:-1]):
            seen[i].add(ch)
    assert all(s == set(codes.ALPHABET) for s in seen)


def test_alphabet_has_no_ambiguous_characters():
    # R-CORE-4: no I, L, O or U (they read as 1, 1, 0 and the alphabet has 32 symbols).
    assert len(set(codes.ALPHABET)) == len(codes.ALPHABET) == 32
    assert not set("ILOU") & set(codes.ALPHABET)
    for _ in range(200):
        assert not set("ILOU") & set(codes.generate())


@given(data_chars)
def test_input_is_case_dash_and_space_insensitive(data):
    # R-CORE-4
    compact = make_code(data)
    formatted = codes.format_code(compact)
    variants = [formatted, formatted.lower(), compact, compact.lower(), formatted.replace("-", " "),
                f"  {formatted.lower().replace('-', ' - ')}  ", "\t".join(formatted.split("-"))]
    assert {codes.normalize(v) for v in variants} == {compact}


def test_ambiguous_letters_are_read_as_the_digits_they_look_like():
    # R-CORE-4: someone who types O for 0 or I/L for 1 did not mistype.
    data = "0011" + "A" * 15
    compact = make_code(data)
    typed = codes.format_code("OoIl" + compact[4:])
    assert codes.normalize(typed) == compact


@settings(max_examples=300)
@given(data_chars, st.integers(0, codes.DATA_CHARS), st.integers(1, len(codes.ALPHABET) - 1))
def test_every_single_substitution_is_caught_by_the_check_character(data, position, shift):
    # R-CORE-4: one wrong character anywhere (the check character included) -> key_mistyped.
    compact = make_code(data)
    wrong = codes.ALPHABET[(codes.ALPHABET.index(compact[position]) + shift) % len(codes.ALPHABET)]
    typed = compact[:position] + wrong + compact[position + 1:]
    assert typed != compact
    assert refusal(codes.format_code(typed)) == "key_mistyped"


@settings(max_examples=300)
@given(data_chars, st.integers(0, codes.DATA_CHARS - 1))
def test_every_adjacent_transposition_is_caught_by_the_check_character(data, position):
    # R-CORE-4: swapping two neighbouring characters (the check character included) -> key_mistyped.
    compact = make_code(data)
    a, b = compact[position], compact[position + 1]
    assume(a != b)  # swapping equal characters is no error
    typed = compact[:position] + b + a + compact[position + 2:]
    assert refusal(codes.format_code(typed)) == "key_mistyped"


def test_every_adjacent_transposition_of_every_pair_is_caught_exhaustively():
    # R-CORE-4: all 32 x 31 ordered pairs at every position, the weak spot of Luhn-style checks
    # (Luhn mod 32 misses swapping 0 and Z, as Luhn mod 10 misses 09 / 90).
    for a in codes.ALPHABET:
        for b in codes.ALPHABET:
            if a == b:
                continue
            for position in range(codes.DATA_CHARS):
                filler = list("7" * (codes.DATA_CHARS + 1))
                filler[position], filler[position + 1] = a, b
                # fix the check character: it may be one of the pair (position DATA_CHARS - 1)
                data = "".join(filler[:-1])
                compact = make_code(data)
                x, y = compact[position], compact[position + 1]
                if x == y:
                    continue
                swapped = compact[:position] + y + x + compact[position + 2:]
                assert codes.normalize(compact) == compact
                assert refusal(swapped) == "key_mistyped", (compact, swapped)


@pytest.mark.parametrize("typed", [
    "", "   ", "ABCDE", "ABCDE-FGHJK-MNPQR-STVW", "ABCDE-FGHJK-MNPQR-STVWXY",
    "ABCDE-FGHJK-MNPQR-STVWU", "ABCDE-FGHJK-MNPQR-STVW!", "ÄBCDE-FGHJK-MNPQR-STVWX",
    "ABCDE_FGHJK_MNPQR_STVWX", "https://example.com/key",
])
def test_malformed_input_is_refused_as_malformed(typed):
    # R-CORE-4: wrong length or a character outside the alphabet -> key_malformed.
    assert refusal(typed) == "key_malformed"


def test_refusals_tell_the_user_what_to_do():
    # R-CORE-4: each refusal has a sentence a user can act on.
    for typed in ("nonsense", mistype(codes.generate())):
        with pytest.raises(codes.CodeError) as exc:
            codes.normalize(typed)
        assert len(exc.value.message) > 40 and exc.value.message.endswith(".")


def test_a_mistyped_key_is_refused_before_any_database_lookup(world, client, ctx):
    # R-CORE-4: normalize is pure (it takes no session), and the redeem route refuses a
    # mistyped or malformed key without one query touching the license_keys table.
    org, owner = org_with_owner(world, "Acme", "ann@example.com")
    [code] = world.mint("91379040")
    statements: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
        statements.append(statement.lower())

    event.listen(ctx.engine, "before_cursor_execute", record)
    try:
        for typed, expected in ((mistype(code), "key_mistyped"), ("12345", "key_malformed")):
            statements.clear()
            r = client.post(f"/api/v1/orgs/{org}/wallet/redeem", json={"key": typed},
                            headers=auth(owner.token, f"idem-{expected}"))
            assert r.status_code == 400 and r.json()["error"]["code"] == expected, r.text
            assert statements, "the request did run (auth, idempotency) queries"
            assert not [s for s in statements if "license_keys" in s]
        statements.clear()
        r = client.post(f"/api/v1/orgs/{org}/wallet/redeem", json={"key": code},
                        headers=auth(owner.token, "idem-good"))
        assert r.status_code == 200
        assert [s for s in statements if "license_keys" in s], "a valid key is looked up"
    finally:
        event.remove(ctx.engine, "before_cursor_execute", record)
