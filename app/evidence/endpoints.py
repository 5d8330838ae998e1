from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from app.activity.recording import ActivityNote, Recorded
from app.core.auth import Authorized, Principal, Role
from app.core.body_limit import BodyTooLarge
from app.core.database import SessionDep
from app.core.errors import InvalidRequest, problem_response
from app.core.idempotency import REPLAY_HEADER
from app.core.json_body import ExactJsonRoute
from app.core.types import ResourceId
from app.evidence import service
from app.evidence.schemas import EvidenceOut

# Room for a multipart envelope around the image (boundaries, part headers).
MULTIPART_OVERHEAD = 64 * 1024

router = APIRouter(prefix="/v1/shipments", tags=["logistics"], route_class=ExactJsonRoute)

_IMAGE_BODY = {
    "required": True,
    "content": {
        "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
        "image/png": {"schema": {"type": "string", "format": "binary"}},
        "image/webp": {"schema": {"type": "string", "format": "binary"}},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {"file": {"type": "string", "format": "binary"}},
                "required": ["file"],
                "additionalProperties": False,
            }
        },
    },
}


async def image_bytes(request: Request, limit: int) -> bytes:
    """The image: the whole body, or the one file part of a multipart form. More than `limit` bytes is a 413,
    found while reading (the raw body stops being read at the first byte past it)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type == "multipart/form-data":
        try:
            form = await request.form(max_files=1, max_fields=0)
        except HTTPException as refused:  # malformed, or more than the one file (a 413 stays a 413)
            if refused.status_code == 413:
                raise
            raise InvalidRequest(f"body: {refused.detail}") from None
        try:
            files = [v for v in form.values() if isinstance(v, UploadFile)]
            if len(files) != 1:
                raise InvalidRequest("body: a multipart form with one file part (the image) is expected.")
            if files[0].size is not None and files[0].size > limit:
                raise BodyTooLarge(limit)
            return await files[0].read(limit + 1)
        finally:
            await form.close()
    chunks: list[bytes] = []
    received = 0
    async for chunk in request.stream():
        received += len(chunk)
        if received > limit:
            raise BodyTooLarge(limit)
        chunks.append(chunk)
    return b"".join(chunks)


@router.post(
    "/{shipment_id}/evidence",
    status_code=201,
    response_model=EvidenceOut,
    operation_id="post_shipment_evidence",
    openapi_extra={"requestBody": _IMAGE_BODY},
)
async def post_shipment_evidence(
    shipment_id: ResourceId,
    request: Request,
    response: Response,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.logistics),
    activity: ActivityNote = Recorded("shipment.add_evidence", "shipment", resource_id="shipment_id"),
) -> EvidenceOut | JSONResponse:
    """Keep a photo (JPEG, PNG or WebP, sent as the body or as a multipart form's one file) as proof for the
    shipment (its partner, or admin). Its metadata is removed except the orientation (the GPS of a delivery goes
    in the event); it is stored once by its SHA-256 and read back by the shipment's partner and the programme
    only. Name it in a `delivered` event's proof as `{"evidence_id": …}`. The same image again for the same
    shipment answers with the same evidence (`Idempotent-Replayed: true`). At most `G4G_MAX_EVIDENCE_BYTES` (413 beyond); anything that
    is not a real image of those kinds, whatever its Content-Type says, is a 422."""
    limit = request.app.state.settings.max_evidence_bytes
    try:
        data = await image_bytes(request, limit)
    except BodyTooLarge as too_large:
        activity.skip()
        return problem_response(413, "payload-too-large", "Payload too large", str(too_large.detail))
    evidence, created = await service.store(session, principal, shipment_id, data)
    if not created:
        response.headers[REPLAY_HEADER] = "true"
        activity.skip()  # the same photo again: nothing changed
    activity.details = {"evidence_id": evidence.evidence_id}
    return evidence


@router.get(
    "/{shipment_id}/evidence/{evidence_id}",
    response_class=Response,
    operation_id="get_shipment_evidence",
    responses={
        200: {
            "description": "The image as stored",
            "content": {t: {"schema": {"type": "string", "format": "binary"}} for t in service.MEDIA_TYPES},
        }
    },
)
async def get_shipment_evidence(
    shipment_id: ResourceId,
    evidence_id: ResourceId,
    session: SessionDep,
    principal: Principal = Authorized(Role.admin, Role.logistics),
) -> Response:
    """A photo kept as evidence (the shipment's partner, or admin; anyone else: 404 or 403). Never stored by
    caches."""
    content, media_type = await service.read(session, principal, shipment_id, evidence_id)
    return Response(
        content,
        media_type=media_type,
        headers={
            "Cache-Control": "private, no-store",
            "Content-Disposition": f'inline; filename="{evidence_id}.{media_type.split("/")[1]}"',
            "Content-Security-Policy": "default-src 'none'; sandbox",
        },
    )
