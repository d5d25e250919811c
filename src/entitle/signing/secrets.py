"""The server's secret key, which encrypts signing keys at rest. Never logged, never stored in the
database."""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from entitle.config import Settings
from entitle.errors import EntitleError

KEY_BYTES = 32
NONCE_BYTES = 12


def load_secret_key(settings: Settings) -> bytes:
    if settings.secret_key:
        key = base64.b64decode(settings.secret_key)
        if len(key) != KEY_BYTES:
            raise EntitleError("secret_key_invalid", "ENTITLE_SECRET_KEY must be 32 bytes, base64-encoded.")
        return key
    path = Path(settings.secret_key_file)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Create owner-only from the start (no window where the file is world-readable).
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(base64.b64encode(secrets.token_bytes(KEY_BYTES)) + b"\n")
    if path.stat().st_mode & 0o077:
        raise EntitleError("secret_key_file_exposed",
                           f"{path} is readable by other users; run: chmod 600 {path}")
    key = base64.b64decode(path.read_bytes().strip())
    if len(key) != KEY_BYTES:
        raise EntitleError("secret_key_invalid", f"{path} must hold 32 bytes, base64-encoded.")
    return key


def seal(key: bytes, plaintext: bytes, *, context: str) -> bytes:
    nonce = secrets.token_bytes(NONCE_BYTES)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, context.encode())


def unseal(key: bytes, sealed: bytes, *, context: str) -> bytes:
    from cryptography.exceptions import InvalidTag

    try:
        return AESGCM(key).decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], context.encode())
    except InvalidTag:
        raise EntitleError(
            "secret_key_mismatch",
            "The signing keys cannot be decrypted with this server's secret key: every server "
            "sharing the database needs the same ENTITLE_SECRET_KEY (or secret key file).",
            status=500,
        ) from None
