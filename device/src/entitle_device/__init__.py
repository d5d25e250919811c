"""Entitle's device library: verify signed license files offline, make signed system files.

One implementation of both formats, used by devices, offline installations and the Entitle server
alike. The only dependency is ``cryptography``.

``entitle_device.access_commander`` holds the Access Commander licensing rules (capacity,
protective period, suspension, activation checks) as pure code for the server and installations.
"""

from entitle_device.errors import (
    BadSignature,
    Expired,
    InvalidKeyRing,
    IssuedInFuture,
    LicenseError,
    MalformedLicense,
    MalformedSystemFile,
    NotForThisSystem,
    UnknownKey,
    UnsupportedVersion,
)
from entitle_device.keyring import KeyRing, public_key_bytes
from entitle_device.licensefile import (
    DEFAULT_CLOCK_SKEW,
    License,
    read_unverified,
    sign_license,
    verify,
)
from entitle_device.systemfile import SystemFile, make_system_file, read_system_file

__version__ = "1.0.0"

__all__ = [
    "DEFAULT_CLOCK_SKEW",
    "BadSignature",
    "Expired",
    "InvalidKeyRing",
    "IssuedInFuture",
    "KeyRing",
    "License",
    "LicenseError",
    "MalformedLicense",
    "MalformedSystemFile",
    "NotForThisSystem",
    "SystemFile",
    "UnknownKey",
    "UnsupportedVersion",
    "make_system_file",
    "public_key_bytes",
    "read_system_file",
    "read_unverified",
    "sign_license",
    "verify",
]
