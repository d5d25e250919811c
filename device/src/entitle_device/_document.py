"""The signed text document both formats are made of: framing, header lines, signed message.

A document is a BEGIN line, ``Version: 1``, ``Algorithm: Ed25519``, the format's own header lines
in a fixed order, ``Signature: <base64url>`` and an END line. The signature covers the format's
domain prefix followed by every header line from ``Version`` to the line before ``Signature``,
each ending in ``\\n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NoReturn

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device._encoding import b64u_decode, b64u_encode, fail
from entitle_device.errors import LicenseError, UnsupportedVersion

MAX_SIZE = 64 * 1024
VERSION = "1"
ALGORITHM = "Ed25519"
SIGNATURE_BYTES = 64
_VERSION_PREFIX = "Version: "
_VERSION_LINE = _VERSION_PREFIX + VERSION
_ALGORITHM_LINE = f"Algorithm: {ALGORITHM}"
_SIGNATURE_PREFIX = "Signature: "
_VERSION_NUMBER = re.compile(r"[1-9][0-9]{0,8}", re.ASCII)


@dataclass(frozen=True, slots=True)
class DocumentKind:
    begin: str
    end: str
    fields: tuple[str, ...]  # the format's header names, between Algorithm and Signature
    domain: bytes
    malformed: type[LicenseError]
    name: str  # "license file", for messages
    prefixes: tuple[str, ...] = field(init=False)  # "Name: " for each of fields, then Signature
    shape: re.Pattern[str] = field(init=False)  # a whole well-formed document (see parse)

    def __post_init__(self) -> None:
        prefixes = tuple(f"{name}: " for name in (*self.fields, "Signature"))
        object.__setattr__(self, "prefixes", prefixes)
        # Literal lines and one "(.*+)" per header value: "." is anything but "\n", so each group
        # is the rest of its line, and "*+" never gives characters back, so a text that does not
        # match fails without backtracking. No alternation, no nesting: one linear pass in C.
        lines = [self.begin, _VERSION_LINE, _ALGORITHM_LINE]
        pattern = "\n".join([*map(re.escape, lines), *(re.escape(p) + "(.*+)" for p in prefixes),
                             re.escape(self.end)]) + "\n?"
        object.__setattr__(self, "shape", re.compile(pattern))


# values (one per DocumentKind.fields, in order), the signed message, the signature
Parsed = tuple[list[str], bytes, bytes]


def parse(text: str | bytes, kind: DocumentKind) -> Parsed:
    """Check the framing, the version and the header names; return values, message and signature.

    Refuses (with ``kind.malformed``): over 64 KiB, non-ASCII, anything before BEGIN or after END
    but one final line ending, a lone ``\\r``, a missing, extra, renamed, repeated or reordered
    header line. ``\\r\\n`` line endings are read as ``\\n``.
    """
    malformed = kind.malformed
    if isinstance(text, str):
        if len(text) > MAX_SIZE:
            fail(malformed, f"a {kind.name} is at most {MAX_SIZE} bytes", size=str(len(text)))
        if not text.isascii():
            fail(malformed, f"a {kind.name} is ASCII text")
    elif isinstance(text, bytes):
        if len(text) > MAX_SIZE:
            fail(malformed, f"a {kind.name} is at most {MAX_SIZE} bytes", size=str(len(text)))
        try:
            text = text.decode("ascii")
        except UnicodeDecodeError:
            fail(malformed, f"a {kind.name} is ASCII text")
    else:
        raise TypeError(f"a {kind.name} is str or bytes, not {type(text).__name__}")

    if "\r" in text:
        text = text.replace("\r\n", "\n")  # a lone \r left over fails the value checks below
    # A well-formed document is exactly kind.shape: BEGIN, "Version: 1", "Algorithm: Ed25519", each
    # "Name: value" in order, Signature and END, each line ending in "\n" but the last, which may.
    # Any other text is refused by _refuse, line by line, with the first thing wrong in it.
    match = kind.shape.fullmatch(text)
    if match is None:
        _refuse(text, kind)
    *values, signature_text = match.groups()
    signature = b64u_decode(signature_text, malformed, "Signature")
    if len(signature) != SIGNATURE_BYTES:
        fail(malformed, f"an {ALGORITHM} signature is {SIGNATURE_BYTES} bytes", field="Signature")
    # The signed lines are the text from Version up to the Signature line: one slice of it.
    signed = text[len(kind.begin) + 1 : match.start(len(values) + 1) - len(_SIGNATURE_PREFIX)]
    return values, kind.domain + signed.encode("ascii"), signature


def _refuse(text: str, kind: DocumentKind) -> NoReturn:
    """Say what is wrong with a text that is not a well-formed document (``kind.shape``)."""
    malformed = kind.malformed
    lines = text.split("\n")
    if not lines[-1]:
        lines.pop()
    if len(lines) < 3 or lines[0] != kind.begin or lines[-1] != kind.end:
        fail(malformed, f"a {kind.name} starts with {kind.begin} and ends with {kind.end}")

    # The version comes before everything else that is format-specific, so that a newer file is
    # reported as such rather than as malformed.
    version_line = lines[1]
    if not version_line.startswith(_VERSION_PREFIX):
        fail(malformed, f"the first line of a {kind.name} is Version", line="2")
    version = version_line[len(_VERSION_PREFIX) :]
    if _VERSION_NUMBER.fullmatch(version) is None:
        fail(malformed, "Version must be a number", line="2")
    if version != VERSION:
        fail(
            UnsupportedVersion,
            f"{kind.name} version {version} is not supported (this library reads version {VERSION})",
            version=version,
        )

    fields = kind.fields
    if len(lines) != len(fields) + 5:  # BEGIN, Version, Algorithm, fields, Signature, END
        fail(malformed, f"a {kind.name} has exactly these header lines, in order: "
             f"Version, Algorithm, {', '.join(fields)}, Signature")
    if lines[2] != _ALGORITHM_LINE:
        fail(malformed, f"Algorithm must be {ALGORITHM}", line="3")
    # What is left: a header line from the format's first to Signature without its "Name: ".
    # (Were there none, the text would be well-formed and never have come here.)
    index = next(i for i, line in enumerate(lines[3:-1]) if not line.startswith(kind.prefixes[i]))
    number = str(index + 4)
    if index == len(fields):
        fail(malformed, "the last header line must be Signature", line=number)
    fail(malformed, f"line {number} must be the {fields[index]} header", line=number)


def build(kind: DocumentKind, values: list[str], private_key: Ed25519PrivateKey) -> str:
    """Sign and frame the values; the caller has checked each one as its parser would."""
    lines = [_VERSION_PREFIX + VERSION, _ALGORITHM_LINE]
    lines += [f"{name}: {value}" for name, value in zip(kind.fields, values, strict=True)]
    signature = private_key.sign(kind.domain + "\n".join(lines).encode("ascii") + b"\n")
    text = "\n".join([kind.begin, *lines, _SIGNATURE_PREFIX + b64u_encode(signature), kind.end]) + "\n"
    if len(text) > MAX_SIZE:
        raise ValueError(f"the {kind.name} would be {len(text)} bytes; at most {MAX_SIZE} are read")
    return text
