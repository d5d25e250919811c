from __future__ import annotations

from fastapi import APIRouter

from entitle.api.deps import DB, CurrentActor, Paging
from entitle.api.routing import OneHopRoute
from entitle.api.schemas import HistoryPage, VerifyOut
from entitle.history import sentences
from entitle.history import services as history

router = APIRouter(route_class=OneHopRoute, tags=["history"])


@router.get("/orgs/{org_id}/history", response_model=HistoryPage)
def list_history(org_id: int, actor: CurrentActor, db: DB, page: Paging) -> dict[str, object]:
    """Who changed what and when, newest first, each entry also as the sentence the web UI shows
    (``summary``: "Ann allocated 12 Core licenses to the year …"). Read-only: history cannot be
    edited."""
    actor.require_member(org_id)
    rows = history.page(db, org_id, limit=page.limit + 1, before_seq=page.cursor)
    more = len(rows) > page.limit
    rows = rows[: page.limit]
    return {"items": [{**history.to_dict(line.entry), "summary": line.sentence.text}
                      for line in sentences.lines(db, org_id, rows)],
            "next_cursor": rows[-1].seq if more else None}


@router.get("/orgs/{org_id}/history/verify", response_model=VerifyOut)
def verify_history(org_id: int, actor: CurrentActor, db: DB) -> dict[str, object]:
    """Check the chain (every link, its key check, the head, the signed checkpoints); report the first
    entry changed, inserted or removed behind the software's back (docs/security.md)."""
    actor.require_member(org_id)
    return history.verify(db, org_id).to_dict()
