"""A My2N site's apartments and devices as CSV: export, and import all or nothing (issue 6).

The format and every check are in ``entitle.my2n.csvio``; these routes only carry the file.
Another organization's site looks exactly like one that does not exist (R-CORE-1).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request, Response
from pydantic import BaseModel, Field

from entitle.api.deps import DB, CurrentActor, Now
from entitle.api.routing import OneHopRoute
from entitle.errors import EntitleError
from entitle.my2n import csvio
from entitle.my2n import services as my2n

router = APIRouter(route_class=OneHopRoute, tags=["my2n"])

SiteId = Annotated[int, Path(ge=1, le=2**63 - 1)]
MAX_BYTES = csvio.MAX_BYTES


async def csv_body(request: Request) -> bytes:
    """The request body, refused past ``MAX_BYTES`` before it is all read."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BYTES:
            raise EntitleError("csv_too_large", f"A CSV file is at most {MAX_BYTES // 2**20} MiB; split it.",
                               status=413, max_bytes=MAX_BYTES)
        chunks.append(chunk)
    return b"".join(chunks)


CsvBody = Annotated[bytes, Depends(csv_body)]


class ImportedOut(BaseModel):
    site: int
    rows: int = Field(description="Data rows in the file.")
    apartments_created: int
    devices_added: int
    devices_assigned: int = Field(description="Devices of the site moved into the apartment their row names.")
    local_mode_changed: int


CSV_DOC = ("Columns apartment,serial,kind,local_mode: one row per device (apartment empty for a device "
           "outside every apartment, e.g. an intercom), and a row with only the apartment for an apartment "
           "without devices. UTF-8; a header row first.")


@router.get("/orgs/{org_id}/sites/{site_id}/export.csv", response_class=Response,
            responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}, "description": CSV_DOC}})
def export_csv(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB) -> Response:
    """The site's apartments and devices as CSV, in the format the import reads."""
    actor.require_member(org_id)
    site = my2n.get_site(db, org_id, site_id)
    return Response(csvio.export_csv(db, site, actor=actor), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="site-{site.id}.csv"'})


@router.post("/orgs/{org_id}/sites/{site_id}/import", response_model=ImportedOut,
             responses={403: {}, 404: {}, 409: {}, 413: {},
                        422: {"description": "csv_invalid: detail.rows lists each problem (row, column, code, "
                                             "message)"}},
             openapi_extra={"requestBody": {"required": True, "description": CSV_DOC,
                                            "content": {"text/csv": {"schema": {"type": "string"}}}}})
def import_csv(org_id: int, site_id: SiteId, actor: CurrentActor, db: DB, now: Now, data: CsvBody) -> dict[str, Any]:
    """Import apartments and devices from CSV (the export's format) into the site: every row is
    checked first, against the file and the site (kinds, serials, a serial twice, a fifth paid
    device in an apartment counting those it holds, R-MY-2); one refused row refuses the file
    (csv_invalid, 422, detail.rows) and nothing is written. Otherwise missing apartments are
    created, new devices added and the site's unassigned devices assigned to the apartments their
    rows name. For company admins and the site's admins."""
    actor.require_member(org_id)
    site = my2n.get_site(db, org_id, site_id)
    return csvio.import_csv(db, site=site, data=data, actor=actor, now=now)
