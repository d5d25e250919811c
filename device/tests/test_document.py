from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from entitle_device import _document
from entitle_device.errors import MalformedLicense, UnsupportedVersion

KIND = _document.DocumentKind(begin="-----BEGIN T-----", end="-----END T-----", fields=("A", "B"),
                              domain=b"t/v1\n", malformed=MalformedLicense, name="test file")


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
