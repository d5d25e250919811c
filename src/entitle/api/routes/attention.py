from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter
from pydantic import BaseModel, Field

from entitle import attention
from entitle.api.deps import DB, CurrentActor, Now

router = APIRouter(tags=["attention"])


class AttentionItem(BaseModel):
    kind: str = Field(description="Stable: ac.protective_period, axis.grace_ending, my2n.lapsing, …")
    severity: Literal["critical", "warning", "info"]
    area: Literal["access_commander", "axis", "my2n", "organization"]
    subject: str
    message: str
    href: str = Field(description="The web page that fixes it.")
    action: str
    due_at: str | None
    seconds_left: int | None = Field(description="Negative when the moment has passed.")
    time_left: str


class AttentionOut(BaseModel):
    now: str
    attention: list[AttentionItem]
    models: list[str] = Field(description="The licensing models the organization uses.")
    access_commander: list[dict[str, Any]]
    axis: list[dict[str, Any]]
    my2n: list[dict[str, Any]]


@router.get("/orgs/{org_id}/attention", response_model=AttentionOut)
def org_attention(org_id: int, actor: CurrentActor, db: DB, now: Now) -> dict[str, Any]:
    """What needs doing, most urgent first (each item with its deadline and the page that fixes
    it), and the License tile of every Access Commander installation, the AXIS product list and the
    My2N sites -- derived at the moment of the request, whether or not a sweep ran."""
    role = actor.require_member(org_id)
    return attention.home(db, org_id, now, webhooks=role.may_license).to_dict()
