"""The upload API of high-quality copies (docs/api.md, "Uploads"): a studio room's performer
pages send their own recording here, in chunks, with their invite. Every check on the caller
and the session is made before a byte of the body is read (api/http_guard.py lets only the
named performer's invite send one at all)."""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response, status
from pydantic import BaseModel, Field

from improv_capture.api.auth import SESSION_ID, bearer_token
from improv_capture.api.upload_paths import upload_invite
from improv_capture.recorder.hq.errors import UploadError
from improv_capture.recorder.hq.uploads import MAX_INDEX, MAX_PART
from improv_capture.rooms.hq_uploads import Target, UploadRefused
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import InviteError, InviteSigner

router = APIRouter(
    prefix="/api/v1/rooms/{room_id}/sessions/{session_id}/performers/{performer_id}/hq",
    tags=["uploads"],
)

SHA256_HEX = re.compile(r"[0-9a-f]{64}")


class PartEnd(BaseModel):
    chunks: int = Field(ge=0, le=MAX_INDEX + 1)


def _hub(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


async def upload_target(
    request: Request,
    room_id: str,
    session_id: str,
    performer_id: str,
    token: Annotated[str, Depends(bearer_token)],
) -> Target:
    """The caller is this performer's invite, and the session takes their copy."""
    signer: InviteSigner = request.app.state.signer
    if not upload_invite(signer, token, room_id, performer_id):
        try:
            invite = signer.verify(token, now=0.0)
        except InviteError:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "invalid token",
                                headers={"WWW-Authenticate": "Bearer"}) from None
        if invite.room_id != room_id:
            raise HTTPException(status.HTTP_403_FORBIDDEN, "this invite is for another room")
        raise HTTPException(status.HTTP_403_FORBIDDEN, "this invite is for another performer")
    if not SESSION_ID.fullmatch(session_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such session")
    try:
        return await _hub(request).uploads.target(room_id, session_id, performer_id)
    except UploadRefused as exc:
        raise HTTPException(exc.status, exc.detail) from exc


TargetDep = Annotated[Target, Depends(upload_target)]


def _part(part: int) -> int:
    if not 0 <= part <= MAX_PART:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"part must be 0..{MAX_PART}")
    return part


def _refused(exc: UploadError) -> HTTPException:
    headers = {"Retry-After": "5"} if exc.status in (503, 507) else None
    return HTTPException(exc.status, str(exc), headers=headers)


@router.get("")
async def upload_status(request: Request, target: TargetDep) -> dict[str, Any]:
    """What the server holds of this performer's copy: the page resumes from it."""
    return await _hub(request).uploads.status(target)


@router.put("/parts/{part}", status_code=status.HTTP_201_CREATED)
async def declare_part(request: Request, part: int, target: TargetDep, response: Response) -> dict[str, Any]:
    """A part of the copy: one run of the browser's recorder (a new one after a reload, a
    rejoin or a changed device), with its start on the page's clock."""
    try:
        info = await request.json()
    except ValueError:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "the body must be JSON") from None
    try:
        result = await _hub(request).uploads.declare_part(target, _part(part), info)
    except UploadError as exc:
        raise _refused(exc) from exc
    if result.get("repeat"):
        response.status_code = status.HTTP_200_OK
    return result


@router.put("/parts/{part}/chunks/{index}", status_code=status.HTTP_201_CREATED)
async def put_chunk(
    request: Request, part: int, index: int, target: TargetDep, response: Response
) -> dict[str, Any]:
    """One chunk, acknowledged only once it is on disk (written and fsynced)."""
    digest = (request.headers.get("x-chunk-sha256") or "").lower()
    if not SHA256_HEX.fullmatch(digest):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY,
                            "X-Chunk-Sha256 must be the chunk's sha256 in 64 hex digits")
    if not 0 <= index <= MAX_INDEX:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, f"index must be 0..{MAX_INDEX}")
    recorded_header = request.headers.get("x-recorded-chunks")
    recorded = int(recorded_header) if recorded_header and recorded_header.isdigit() else None
    uploads = _hub(request).uploads
    try:
        await asyncio.wait_for(uploads.chunk_slots.acquire(), timeout=0.5)
    except asyncio.TimeoutError:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "too many uploads at once; retry",
                            headers={"Retry-After": "1"}) from None
    try:
        data = await request.body()
        ack = await uploads.put_chunk(target, _part(part), index, data, digest, recorded)
    except UploadError as exc:
        raise _refused(exc) from exc
    finally:
        uploads.chunk_slots.release()
    if ack.get("repeat"):
        response.status_code = status.HTTP_200_OK
    return ack


@router.post("/parts/{part}/end")
async def end_part(request: Request, part: int, body: PartEnd, target: TargetDep) -> dict[str, Any]:
    """The part has exactly ``chunks`` chunks: once all are in (and the take is over), the
    copy is placed on the session timeline."""
    try:
        return await _hub(request).uploads.end_part(target, _part(part), body.chunks)
    except UploadError as exc:
        raise _refused(exc) from exc
