"""Words for numbers, the same in every message (CLI, API, web); what a name or serial number
may hold, the same wherever it is given."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, GetJsonSchemaHandler
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, PydanticCustomError

from entitle.errors import EntitleError


def with_article(word: str) -> str:
    """The word with its indefinite article: "an owner", "a viewer"."""
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def plural(n: int | None, one: str, many: str | None = None) -> str:
    """``n`` and the noun in the right number: "1 device", "0 devices", "1,000 devices";
    None is "unlimited devices". ``many`` defaults to ``one`` + "s"."""
    many = many if many is not None else one + "s"
    if n is None:
        return f"unlimited {many}"
    return f"{n:,} {one if n == 1 else many}"


# --- names and serial numbers: one line of visible text (issue 15, point 8) -------------------------
#
# Refused in every name and serial number the server accepts (organizations, installations,
# systems, sites, apartments, devices, users, products, key and voucher batches, tokens, webhook
# descriptions), whichever way it comes (API, web, CLI, CSV import):
# - C0 and C1 control characters (U+0000-U+001F, U+007F-U+009F), tab and line breaks included:
#   they break CSV exports, logs and terminals, and hide text;
# - the line and paragraph separators U+2028 and U+2029 (line breaks to JavaScript and to some
#   CSV readers);
# - the bidirectional embeddings, overrides and isolates U+202A-U+202E and U+2066-U+2069, which
#   show text in another order than it is stored ("Trojan Source", CVE-2021-42574);
# - unpaired surrogates (U+D800-U+DFFF, from a JSON "\ud800"), which no database can store.
# The bidirectional marks (U+200E, U+200F, U+061C) and the zero-width joiners stay allowed: they
# only steer the text next to them, and names in right-to-left scripts and emoji need them.
_REFUSED_CLASS = r"\x00-\x1F\x7F-\x9F\u2028\u2029\u202A-\u202E\u2066-\u2069"
_REFUSED = re.compile(f"[{_REFUSED_CLASS}\\ud800-\\udfff]")
# The same rule as a JSON Schema pattern (ECMA-262) for the OpenAPI document. It cannot name the
# surrogates: an ECMA pattern without the "u" flag reads UTF-16 code units, so it would refuse
# every emoji; the server refuses unpaired ones all the same.
SINGLE_LINE_PATTERN = f"^[^{_REFUSED_CLASS}]*$"
CONTROL_CHARACTERS = "text_control_characters"


@dataclass(frozen=True, slots=True)
class ControlCharacter:
    """The first refused character of a text: ``position`` counts from 1."""

    character: str
    position: int

    @property
    def code_point(self) -> str:
        return f"U+{ord(self.character):04X}"

    @property
    def kind(self) -> str:
        c = ord(self.character)
        if self.character == "\t":
            return "a tab"
        if self.character in "\n\r\x0b\x0c\x85\u2028\u2029":
            return "a line break"
        if 0x202A <= c <= 0x202E or 0x2066 <= c <= 0x2069:
            return "a text-direction control"
        if 0xD800 <= c <= 0xDFFF:
            return "half of a character (an unpaired surrogate)"
        return "a control character"


def control_character(value: str) -> ControlCharacter | None:
    """The first character of ``value`` that a name or serial number may not hold, if any."""
    found = _REFUSED.search(value)
    return None if found is None else ControlCharacter(found.group(), found.start() + 1)


def control_message(what: str, found: ControlCharacter) -> str:
    return (f"The {what} holds {found.kind} ({found.code_point}, character {found.position:,}): it must be "
            "one line of visible text; remove it.")


def single_line(value: str, what: str, *, field: str = "name", max_length: int | None = None) -> str:
    """``value`` unchanged when it is one line of visible text (see above), of at most
    ``max_length`` characters when given (its column's size: 200 for names); else the refusal
    ``text_control_characters`` (422), naming the character, where it is and the ``field``, or
    ``text_too_long`` (422). ``what`` names the text in the sentence ("site name", "device serial
    number"). The console and the web UI reach the services without the API's schema: this is
    where every interface gets the same bounds (SQLite does not enforce a column's size)."""
    found = control_character(value)
    if found is not None:
        raise EntitleError(CONTROL_CHARACTERS, control_message(what, found), status=422, field=field,
                           character=found.code_point, position=found.position)
    if max_length is not None and len(value) > max_length:
        raise EntitleError("text_too_long", f"The {what} is {len(value):,} characters long: shorten it to at most "
                           f"{max_length:,}.", status=422, field=field, length=len(value), max_length=max_length)
    return value


def _single_line(value: str) -> str:
    found = control_character(value)
    if found is not None:
        raise PydanticCustomError(CONTROL_CHARACTERS, "holds {kind} ({character}, character {position}): it must be "
                                  "one line of visible text; remove it",
                                  {"kind": found.kind, "character": found.code_point, "position": found.position})
    return value


class _SingleLinePattern:
    """Shows the rule in the JSON Schema (the OpenAPI document) as ``pattern``; the check itself
    is ``_single_line``, so that a refusal has the rule's code and sentence."""

    def __get_pydantic_json_schema__(self, schema: CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        json_schema = handler(schema)
        json_schema["pattern"] = SINGLE_LINE_PATTERN
        return json_schema


# A pydantic string that is one line of visible text: ``name: SingleLine = Field(max_length=200)``.
SingleLine = Annotated[str, AfterValidator(_single_line), _SingleLinePattern()]
