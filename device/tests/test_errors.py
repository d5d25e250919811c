from __future__ import annotations

import entitle_device
from entitle_device import errors


def all_errors() -> list[type[errors.LicenseError]]:
    return [getattr(errors, name) for name in errors.__all__]


def test_every_error_is_a_license_error_with_its_own_code() -> None:
    # R-CORE-9: the verifier tells the failures apart, by a stable code
    codes = [error.code for error in all_errors()]
    assert all(issubclass(error, errors.LicenseError) for error in all_errors())
    assert len(set(codes)) == len(codes)


def test_the_codes_are_the_documented_ones() -> None:
    # R-CORE-9: codes are part of the interface (the server returns them); changing one breaks it
    assert {error.__name__: error.code for error in all_errors()} == {
        "LicenseError": "license_error",
        "MalformedLicense": "malformed",
        "MalformedSystemFile": "malformed_system_file",
        "UnsupportedVersion": "unsupported_version",
        "UnknownKey": "unknown_key",
        "BadSignature": "bad_signature",
        "NotForThisSystem": "not_for_this_system",
        "Expired": "expired",
        "IssuedInFuture": "issued_in_future",
        "InvalidKeyRing": "invalid_key_ring",
    }


def test_an_error_carries_its_message_and_detail() -> None:
    error = errors.UnknownKey("no such key", {"kid": "k1"})
    assert (str(error), error.message, error.detail) == ("no such key", "no such key", {"kid": "k1"})
    assert errors.BadSignature("changed").detail == {}


def test_the_package_exports_every_error() -> None:
    assert set(errors.__all__) <= set(entitle_device.__all__)
