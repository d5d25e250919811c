from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from entitle import attention
from entitle.api.deps import DB, CurrentActor, Now
from entitle.api.routing import OneHopRoute

router = APIRouter(route_class=OneHopRoute, tags=["attention"])


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


class AttentionTotals(BaseModel):
    attention: int
    access_commander: int
    axis: int
    my2n: int


class AttentionOut(BaseModel):
    now: str
    totals: AttentionTotals = Field(description="How many items each list holds in all; each list answers at "
                                    "most `limit` of them, the most urgent (or the first) first.")
    attention: list[AttentionItem]
    models: list[str] = Field(description="The licensing models the organization uses.")
    access_commander: list[dict[str, Any]]
    axis: list[dict[str, Any]]
    my2n: list[dict[str, Any]]


@router.get("/orgs/{org_id}/attention", response_model=AttentionOut)
def org_attention(org_id: int, actor: CurrentActor, db: DB, now: Now,
                  limit: Annotated[int, Query(ge=1, le=500, description="At most this many items in each "
                                              "list (the attention list and the three models' tiles).")] = 100,
                  ) -> dict[str, Any]:
    """What needs doing, most urgent first (each item with its deadline and the page that fixes
    it), and the License tile of every Access Commander installation, the AXIS product list and the
    My2N sites -- derived at the moment of the request, whether or not a sweep ran. Each list is cut
    at ``limit`` (``totals`` says how many there are); the models' own lists page through all of
    them (``/installations``, ``/axis/products``, ``/sites``)."""
    role = actor.require_member(org_id)
    answer = attention.home(db, org_id, now, webhooks=role.may_license).to_dict()
    lists = ("attention", "access_commander", "axis", "my2n")
    answer["totals"] = {name: len(answer[name]) for name in lists}
    for name in lists:
        answer[name] = answer[name][:limit]
    return answer
