from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from entitle_device import _document
from entitle_device.errors import LicenseError, MalformedLicense, UnsupportedVersion

KIND = _document.DocumentKind(begin="-----BEGIN T-----", end="-----END T-----", fields=("A", "B"),
                              domain=b"t/v1\n", malformed=MalformedLicense, name="test file")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(32))


def test_build_then_parse_gives_back_values_message_and_signature() -> None:
    # R-CORE-9: one framing for both formats; the message is the domain and the header lines
    key = Ed25519PrivateKey.generate()
    text = _document.build(KIND, ["one", "two"], key)
    assert text.split("\n")[:5] == ["-----BEGIN T-----", "Version: 1", "Algorithm: Ed25519",
                                    "A: one", "B: two"]
    values, message, signature = _document.parse(text, KIND)
    assert values == ["one", "two"]
    assert message == b"t/v1\nVersion: 1\nAlgorithm: Ed25519\nA: one\nB: two\n"
    key.public_key().verify(signature, message)


def test_values_are_returned_raw_for_the_format_to_check() -> None:
    key = Ed25519PrivateKey.generate()
    values, _, _ = _document.parse(_document.build(KIND, ["", " x "], key), KIND)
    assert values == ["", " x "]


def test_a_version_number_is_read_before_the_rest() -> None:
    # R-CORE-9: a newer file is "unsupported", not "malformed"
    with pytest.raises(UnsupportedVersion):
        _document.parse("-----BEGIN T-----\nVersion: 12\n-----END T-----", KIND)
    with pytest.raises(MalformedLicense):
        _document.parse("-----BEGIN T-----\nVersion: 1234567890\n-----END T-----", KIND)


def test_only_text_is_read() -> None:
    with pytest.raises(TypeError, match="str or bytes"):
        _document.parse(12, KIND)  # type: ignore[arg-type]


def test_build_refuses_a_file_too_large_to_read() -> None:
    with pytest.raises(ValueError, match="at most 65536"):
        _document.build(KIND, ["x" * 70_000, ""], Ed25519PrivateKey.generate())


# Any ASCII but the line endings (": ", spaces, "=", control characters): the parser cuts lines
# at "\n" only, and reads "\r\n" as "\n".
VALUE = st.text(st.characters(min_codepoint=0, max_codepoint=127, blacklist_characters="\r\n"),
                max_size=20)


@given(a=VALUE, b=VALUE, crlf=st.booleans(), final_newline=st.booleans())
def test_any_values_read_back_with_the_message_of_their_lines(
    a: str, b: str, crlf: bool, final_newline: bool
) -> None:
    # R-CORE-9: each value is the rest of its line; the message is the domain and the lines from
    # Version to the last before Signature, each ending in "\n", whatever the text's line endings
    text = _document.build(KIND, [a, b], KEY)
    if not final_newline:
        text = text[:-1]
    if crlf:
        text = text.replace("\n", "\r\n")
    values, message, signature = _document.parse(text, KIND)
    assert values == [a, b]
    assert message == f"t/v1\nVersion: 1\nAlgorithm: Ed25519\nA: {a}\nB: {b}\n".encode("ascii")
    KEY.public_key().verify(signature, message)


FRAMING = "a test file starts with -----BEGIN T----- and ends with -----END T-----"


@pytest.mark.parametrize("change, message, detail", [
    (("-----BEGIN T-----\n", "x\n"), FRAMING, {}),
    (("-----END T-----\n", "-----END T-----\n\n"), FRAMING, {}),
    (("-----END T-----\n", "-----END T-----\r"), FRAMING, {}),
    (("Version: 1", "Version:1"), "the first line of a test file is Version", {"line": "2"}),
    (("Version: 1", "Version: 1 "), "Version must be a number", {"line": "2"}),
    (("Version: 1", "Version: 2"),
     "test file version 2 is not supported (this library reads version 1)", {"version": "2"}),
    (("A: one\n", ""), "a test file has exactly these header lines, in order: "
     "Version, Algorithm, A, B, Signature", {}),
    (("Algorithm: Ed25519", "Algorithm: Ed25519 "), "Algorithm must be Ed25519", {"line": "3"}),
    (("A: one", "A:one"), "line 4 must be the A header", {"line": "4"}),
    (("B: two", "A: two"), "line 5 must be the B header", {"line": "5"}),
    (("Signature: ", "Signature:"), "the last header line must be Signature", {"line": "6"}),
    (("Signature: ", "Signature: ="), "Signature is not canonical unpadded base64url",
     {"field": "Signature"}),
])
def test_what_is_wrong_is_said_exactly(
    change: tuple[str, str], message: str, detail: dict[str, str]
) -> None:
    # R-CORE-9: the first thing wrong, in the documented order, with the line or field it is in
    text = _document.build(KIND, ["one", "two"], KEY).replace(*change, 1)
    with pytest.raises(LicenseError) as raised:
        _document.parse(text, KIND)
    assert (raised.value.message, raised.value.detail) == (message, detail)
