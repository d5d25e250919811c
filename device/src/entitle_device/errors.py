"""The library's errors: every problem with a file is one of these, each with a stable ``code``.

Misuse of the API by the calling program (a naive ``now``, a negative TTL when signing) raises
``ValueError`` or ``TypeError`` instead: that is a bug to fix, not a file to refuse.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

__all__ = [
    "BadSignature",
    "Expired",
    "InvalidKeyRing",
    "IssuedInFuture",
    "LicenseError",
    "MalformedLicense",
    "MalformedSystemFile",
    "NotForThisSystem",
    "UnknownKey",
    "UnsupportedVersion",
]


class LicenseError(Exception):
    """Base of every error this library raises about a file or a key ring.

    ``code`` is stable (safe to switch on, to log, to return from an API); ``message`` is a sentence
    for people; ``detail`` holds the values involved, as strings.
    """

    code: ClassVar[str] = "license_error"

    def __init__(self, message: str, detail: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, str] = dict(detail or {})


class MalformedLicense(LicenseError):
    """The text is not a well-formed version 1 license file."""

    code = "malformed"


class MalformedSystemFile(LicenseError):
    """The text is not a well-formed version 1 system file."""

    code = "malformed_system_file"


class UnsupportedVersion(LicenseError):
    """The file is framed correctly but declares a format version this library does not read."""

    code = "unsupported_version"


class UnknownKey(LicenseError):
    """The file names a key id that is not in the verifier's key ring."""

    code = "unknown_key"


class BadSignature(LicenseError):
    """The signature does not match the signed lines: the file was changed or signed by another key."""

    code = "bad_signature"


class NotForThisSystem(LicenseError):
    """The file is authentic but its subject does not include this system or device."""

    code = "not_for_this_system"


class Expired(LicenseError):
    """The license has expired, or its TTL ran out and it must be refreshed."""

    code = "expired"


class IssuedInFuture(LicenseError):
    """The file was issued later than the verifier's clock allows: the clock was set back."""

    code = "issued_in_future"


class InvalidKeyRing(LicenseError):
    """A key ring document that cannot be loaded."""

    code = "invalid_key_ring"
