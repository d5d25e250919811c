from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, LargeBinary, String, text
from sqlalchemy.orm import Mapped, mapped_column

from entitle.db import Base, BigId


class SigningKey(Base):
    """One issuer signing key. The private key is stored only encrypted (AES-256-GCM under the
    server's secret key, the key id as associated data); the public key in clear."""

    __tablename__ = "signing_keys"
    # At most one current key, even when two processes make the first one at once.
    __table_args__ = (Index("uq_signing_keys_current", "is_current", unique=True,
                            postgresql_where=text("is_current"), sqlite_where=text("is_current")),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    kid: Mapped[str] = mapped_column(String(64), unique=True)
    algorithm: Mapped[str] = mapped_column(String(16), default="Ed25519")
    public_key: Mapped[bytes] = mapped_column(LargeBinary(32))
    private_key_encrypted: Mapped[bytes] = mapped_column(LargeBinary(128))
    is_current: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime]
    retired_at: Mapped[datetime | None]
