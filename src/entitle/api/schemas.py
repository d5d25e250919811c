"""Request and response bodies of the REST API.

Every name and serial number a body carries is ``SingleLine`` (``entitle.text``): one line of
visible text, shown in the OpenAPI document as its ``pattern``; a refusal is
``text_control_characters`` (422), as the services answer.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel, Field

from entitle.tenancy.services import PASSWORD_MAX_LENGTH, PASSWORD_MIN_LENGTH
from entitle.text import SingleLine


class ErrorDetail(BaseModel):
    code: str
    message: str
    detail: dict[str, Any] = Field(default_factory=dict)


class ErrorBody(BaseModel):
    error: ErrorDetail


Item = TypeVar("Item")


class Paged(BaseModel, Generic[Item]):
    """One page of a list (``Page`` in api/deps.py): a page model names its items, e.g.
    ``class SessionPage(Paged[WebSessionOut])``."""

    items: list[Item]
    next_cursor: int | None = Field(default=None, description="Pass as cursor for the next page; null on the last page.")


class TokenRequest(BaseModel):
    email: str = Field(max_length=320)
    password: str = Field(max_length=1000)
    name: SingleLine = Field(default="api", max_length=200)


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


class SessionPage(Paged[WebSessionOut]):
    pass


class ApiTokenOut(BaseModel):
    id: int
    name: str
    prefix: str = Field(description="The token's first characters, to recognise it by.")
    created_at: str
    last_used_at: str | None
    revoked_at: str | None = Field(description="When it was revoked; null while it works.")


class TokenPage(Paged[ApiTokenOut]):
    pass


class OrgIn(BaseModel):
    name: SingleLine = Field(min_length=1, max_length=200)
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


class MemberPage(Paged[MemberOut]):
    pass


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
    summary: str = Field(description="What happened, in one sentence, as the History page says it.")


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
    name: SingleLine = Field(default="", max_length=200)


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


class CatalogSkuOut(BaseModel):
    part_number: str
    name: str
    product: str
    grant_kind: str = Field(description="capacity, feature, tier, subscription, apartment_year or expansion")
    grants: dict[str, Any] = Field(description='What one unit grants, e.g. {"devices": 5}.')
    term_years: int | None
    regions: list[str] = Field(description="Where the part is sold; empty: everywhere.")
    alt_part_numbers: list[str]


class CatalogProductOut(BaseModel):
    code: str
    name: str
    model: str = Field(description="access_commander, axis or my2n")
    skus: list[CatalogSkuOut]


class CatalogProductPage(Paged[CatalogProductOut]):
    pass
