"""Request and response bodies of the REST API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from entitle.tenancy.services import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH


class ErrorDetail(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


class TokenRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)
    name: str = Field(default="api", max_length=200)


class TokenOut(BaseModel):
    id: int
    token: str = Field(description="Shown once; only its hash is stored.")
    prefix: str


class PasswordChangeIn(BaseModel):
    current_password: str = Field(max_length=PASSWORD_MAX_LENGTH)
    new_password: str = Field(max_length=PASSWORD_MAX_LENGTH, description=f"At least {PASSWORD_MIN_LENGTH} "
                              "characters, not the current password.")


class PasswordChangedOut(BaseModel):
    password_changed_at: str
    web_sessions_ended: int = Field(description="Your web sessions signed out by the change; API tokens are kept.")


class WebSessionOut(BaseModel):
    id: int
    created_at: str
    expires_at: str
    revoked_at: str | None = Field(description="When it was signed out; null while it is signed in.")


class ApiTokenOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it by.")
    created_at: str
    last_used_at: str | None
    revoked_at: str | None = Field(description="When it was revoked; null while it works.")


class OrgIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    region: str = Field(default="EU", description="EU, US, APAC, LATAM or MEA")


class OrgOut(BaseModel):
    id: int
    name: str
    region: str
    created_at: str
    role: str | None = None


class OrgPage(BaseModel):
    items: list[OrgOut]
    next_cursor: int | None = None


class MemberIn(BaseModel):
    email: str = Field(max_length=320)
    role: str = Field(pattern="^(owner|admin|viewer)$")


class MemberOut(BaseModel):
    email: str
    role: str


class MeOut(BaseModel):
    id: int
    email: str
    is_issuer: bool
    must_change_password: bool = Field(description="The web UI asks for a new password before anything else; "
                                       "the API keeps working (POST /api/v1/auth/password).")
    organizations: list[OrgOut]


class RedeemIn(BaseModel):
    key: str = Field(min_length=1, max_length=100, description="The typed license key, e.g. 7KQ2M-XW9PD-4HN3R-T8VCG")


class RedeemOut(BaseModel):
    key_id: int
    part_number: str
    product: str
    quantity: int
    wallet_units: int
    redeemed_at: str


class WalletLineOut(BaseModel):
    part_number: str
    name: str
    product: str
    grant_kind: str
    units: int


class WalletOut(BaseModel):
    org_id: int
    lines: list[WalletLineOut]


class HistoryOut(BaseModel):
    seq: int
    at: str
    actor: str
    action: str
    object_type: str
    object_id: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    hash: str


class HistoryPage(BaseModel):
    items: list[HistoryOut]
    next_cursor: int | None = None


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    first_bad_seq: int | None
    reason: str | None


class EntryOut(BaseModel):
    account_kind: str
    part_number: str
    amount: int


class LedgerTxnOut(BaseModel):
    id: int
    kind: str
    actor: str
    memo: str
    created_at: str
    entries: list[EntryOut]


class LedgerPage(BaseModel):
    items: list[LedgerTxnOut]
    next_cursor: int | None = None


class MintIn(BaseModel):
    part_number: str
    quantity_per_key: int = Field(default=1, ge=1, le=1_000_000)
    count: int = Field(ge=1, le=10_000, description="Larger batches: use `entitle keys mint`.")
    name: str = Field(default="", max_length=200)


class BatchOut(BaseModel):
    id: int
    part_number: str
    name: str
    quantity_per_key: int
    count: int
    minted_by: str
    created_at: str


class MintOut(BaseModel):
    batch: BatchOut
    keys: list[str] | None = Field(description="The codes, shown once: a replay of the same request returns null.")


class BatchPage(BaseModel):
    items: list[BatchOut]
    next_cursor: int | None = None


class CancelIn(BaseModel):
    key: str = Field(min_length=1, max_length=100)


class CancelOut(BaseModel):
    key_id: int
    state: str


class CatalogLoadOut(BaseModel):
    products_created: int
    products_updated: int
    skus_created: int
    skus_updated: int
