from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Request, Response, status
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from entitle.api.deps import DB, Ctx, CurrentActor, Now, Paging, refusals
from entitle.api.routing import OneHopRoute
from entitle.api.schemas import Paged
from entitle.db import transaction
from entitle.platform import idempotency
from entitle.signing import services as signing
from entitle.systems import services as systems

router = APIRouter(route_class=OneHopRoute, tags=["systems"])


class SystemOut(BaseModel):
    id: int
    uid: str
    name: str
    product: str
    offline: bool
    need: dict[str, int]
    devices: list[str]
    registered_at: str
    updated_at: str


class SystemPage(Paged[SystemOut]):
    pass


class UploadIn(BaseModel):
    system_file: str = Field(min_length=1, max_length=65536, description="The system file's text, as the system made it.")


class UploadOut(BaseModel):
    system: SystemOut
    license_file: str = Field(description="Signed license file for the system to import.")
    outcome: Literal["registered", "updated"] = Field(
        description="registered: the system's first file; updated: a newer file of a registered system.")
    license_expires: str = Field(description="When the license file stops being valid: the end of the grace "
                                             "period or trial it grants, of its last licensed year, or a year.")


class KeyOut(BaseModel):
    kid: str
    alg: str
    public_key: str


class KeyRingOut(BaseModel):
    keys: list[KeyOut]


@router.post("/orgs/{org_id}/systems/upload", response_model=UploadOut, status_code=status.HTTP_201_CREATED,
             responses=refusals(403, 409))
def upload_system_file(org_id: int, body: UploadIn, actor: CurrentActor, ctx: Ctx, request: Request,
                       response: Response,
                       idempotency_key: Annotated[str | None, Header(description=(
                           "Optional. A retry with the same key gets the first answer (the same license "
                           "file) instead of system_file_replayed."))] = None) -> dict[str, Any]:
    """Register or update an offline system from its system file and get its license file
    (R-AX-11). Refusals: system_file_malformed, system_file_bad_signature,
    system_file_replayed (this file was uploaded before, without the same Idempotency-Key),
    system_registered_elsewhere, system_key_mismatch."""
    actor.require_licensing(org_id)
    now = ctx.clock.now()

    def work(s: Session) -> tuple[int, dict[str, Any]]:
        done = systems.upload_system_file(s, org_id=org_id, text=body.system_file, actor=actor, now=now,
                                          secret=ctx.secret)
        return 201, {"system": systems.to_dict(done.system), "license_file": done.license_file,
                     "outcome": done.verb, "license_expires": done.expires.isoformat()}

    if idempotency_key is None:
        with transaction(ctx.sessions) as s:
            return work(s)[1]
    # The idempotency record answers first: a client whose answer was lost gets its license file.
    outcome = idempotency.run(ctx.sessions, org_id=org_id, key=idempotency.require_key(idempotency_key), now=now,
                              fp=idempotency.fingerprint("POST", request.url.path, body.model_dump()), work=work)
    if outcome.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    response.status_code = outcome.status
    return outcome.body


@router.get("/orgs/{org_id}/systems", response_model=SystemPage)
def list_systems(org_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, Any]:
    """The organization's systems (every licensing model's), oldest first."""
    actor.require_member(org_id)
    return page.answer(systems.systems_of(db, org_id, after_id=page.cursor, limit=page.fetch), systems.to_dict)


@router.get("/orgs/{org_id}/systems/{system_id}", response_model=SystemOut)
def get_system(org_id: int, system_id: int, actor: CurrentActor, db: DB) -> dict[str, Any]:
    actor.require_member(org_id)
    return systems.to_dict(systems.get(db, org_id, system_id))


@router.get("/keyring", response_model=KeyRingOut, tags=["signing"])
def public_keyring(db: DB) -> dict[str, Any]:
    """The issuer's public signing keys, every key ever used (stable path; no sign-in needed).
    Devices verify license files against it with the device library."""
    return signing.public_ring(db)


@router.post("/issuer/signing-keys/rotate", response_model=KeyOut, tags=["issuer"], responses=refusals(400, 403))
def rotate_signing_key(actor: CurrentActor, ctx: Ctx, db: DB, now: Now) -> dict[str, Any]:
    """Make a new current signing key (issuer only); files signed before keep verifying."""
    row = signing.rotate(db, secret=ctx.secret, actor=actor, now=now)
    return {"kid": row.kid, "alg": row.algorithm, "public_key": signing.b64u(row.public_key)}



