"""The operator HTTP API (rooms and invites); contract in ../shared/SPEC.md."""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from improv_capture.api.http_guard import bearer_of
from improv_capture.clock import new_id, utc_iso
from improv_capture.errors import LimitReached
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import Invite, InviteError, InviteSigner, tokens_equal
from improv_capture.rooms.store import Room, RoomStore

#: Anchored for pydantic's `pattern=` (Rust regex: `$` is the end of the text); Python's `$`
#: also matches before a final newline, so Python code uses ``fullmatch``.
PERFORMER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,48}$"


def valid_performer_id(performer_id: str) -> str:
    if not re.fullmatch(PERFORMER_ID_PATTERN, performer_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "invalid performer id")
    return performer_id


class RoomCreate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)


class InviteCreate(BaseModel):
    display_name: str = Field(min_length=1, max_length=100)
    performer_id: str | None = Field(default=None, pattern=PERFORMER_ID_PATTERN)
    expires_in_s: int | None = Field(default=None, ge=60, le=90 * 24 * 3600)


class MarkerCreate(BaseModel):
    kind: Literal["scene", "take", "cut", "prompt", "note"]
    label: str = Field(default="", max_length=500)
    data: dict[str, Any] | None = None


class PromptCreate(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    target_emotion: str | None = Field(default=None, max_length=100)
    intensity: float | None = Field(default=None, ge=0, le=1)


class RoomOut(BaseModel):
    room_id: str
    name: str
    created_at: str


class InviteOut(BaseModel):
    performer_id: str
    token: str
    url: str
    expires_at: str


def bearer_token(request: Request) -> str:
    """The request's bearer token, read as the HTTP guard reads it (server/http_guard.py)."""
    token = bearer_of(request.headers.get("authorization"))
    if token is None:
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "missing bearer token",
            headers={"WWW-Authenticate": "Bearer"},
        )
    return token


def _invite_or_unknown(request: Request, token: str) -> HTTPException:
    signer: InviteSigner = request.app.state.signer
    try:
        signer.verify(token)
        is_invite = True
    except InviteError as exc:
        is_invite = exc.expired
    if is_invite:
        return HTTPException(status.HTTP_403_FORBIDDEN, "a performer invite cannot use this API")
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, "invalid token", headers={"WWW-Authenticate": "Bearer"}
    )


def require_operator(request: Request, token: Annotated[str, Depends(bearer_token)]) -> None:
    if tokens_equal(token, request.app.state.operator_token):
        return
    if request.app.state.downstream.tokens.is_reader(token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a reader token can only read sessions")
    raise _invite_or_unknown(request, token)


def require_reader(request: Request, token: Annotated[str, Depends(bearer_token)]) -> None:
    """Operator or reader: listing and fetching sessions, events and revocations."""
    if tokens_equal(token, request.app.state.operator_token):
        return
    if request.app.state.downstream.tokens.is_reader(token):
        return
    raise _invite_or_unknown(request, token)


router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_operator)])


def limit_reached(exc: LimitReached) -> HTTPException:
    """Every cap on what the server keeps answers 409 with the cap and its setting."""
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


def _hub(request: Request) -> Hub:
    return request.app.state.hub  # type: ignore[no-any-return]


def _room(request: Request, room_id: str) -> Room:
    store: RoomStore = request.app.state.store
    room = store.get(room_id)
    if room is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "room not found")
    return room


@router.post("/rooms", status_code=status.HTTP_201_CREATED, response_model=RoomOut)
async def create_room(request: Request, body: RoomCreate | None = None) -> dict[str, str]:
    store: RoomStore = request.app.state.store
    try:
        room = await store.create(body.name if body else None, _hub(request).settings.max_rooms)
    except LimitReached as exc:
        raise limit_reached(exc) from exc
    _hub(request).changed()
    return room.record()


@router.get("/rooms")
async def list_rooms(request: Request) -> dict[str, list[dict[str, Any]]]:
    store: RoomStore = request.app.state.store
    return {"items": [_hub(request).describe(room) for room in store.rooms.values()]}


@router.get("/rooms/{room_id}")
async def get_room(request: Request, room_id: str) -> dict[str, Any]:
    return _hub(request).describe(_room(request, room_id))


@router.delete("/rooms/{room_id}")
async def delete_room(request: Request, room_id: str) -> dict[str, str]:
    room = _room(request, room_id)
    await _hub(request).close_room(room)
    store: RoomStore = request.app.state.store
    await store.delete(room_id)
    _hub(request).changed()
    return {"room_id": room_id, "state": "closed"}


@router.post(
    "/rooms/{room_id}/invites", status_code=status.HTTP_201_CREATED, response_model=InviteOut
)
async def create_invite(request: Request, room_id: str, body: InviteCreate) -> dict[str, str]:
    room = _room(request, room_id)
    settings = _hub(request).settings
    ttl = body.expires_in_s or settings.invite_ttl_s
    invite = Invite(
        room_id=room.room_id,
        performer_id=body.performer_id or new_id("p"),
        display_name=body.display_name,
        expires_at=int(time.time()) + ttl,
    )
    if invite.performer_id in room.removed:
        raise HTTPException(status.HTTP_409_CONFLICT, "this performer was removed from the room")
    token = request.app.state.signer.sign(invite)
    issued = {
        "performer_id": invite.performer_id,
        "display_name": invite.display_name,
        "token": token,
        "url": f"{settings.base_url}/join#invite={token}",
        "expires_at": utc_iso(invite.expires_at),
    }
    store: RoomStore = request.app.state.store
    try:
        await store.add_invite(room, issued, settings.max_invites_per_room)
    except LimitReached as exc:
        raise limit_reached(exc) from exc
    _hub(request).changed()
    return issued


@router.get("/rooms/{room_id}/invites")
async def list_invites(request: Request, room_id: str) -> dict[str, list[dict[str, str]]]:
    return {"items": _room(request, room_id).invites}


@router.delete("/rooms/{room_id}/performers/{performer_id}")
async def remove_performer(request: Request, room_id: str, performer_id: str) -> dict[str, str]:
    room = _room(request, room_id)
    known = performer_id in room.members or any(
        i["performer_id"] == performer_id for i in room.invites
    )
    if not known:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "performer not found in this room")
    store: RoomStore = request.app.state.store
    await store.remove_performer(room, performer_id)
    await _hub(request).kick(room, performer_id)
    return {"performer_id": performer_id, "state": "removed"}


@router.post("/rooms/{room_id}/recording", status_code=status.HTTP_201_CREATED)
async def start_recording(request: Request, room_id: str) -> dict[str, str]:
    room = _room(request, room_id)
    if room.recording is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "room is already recording")
    recording = _hub(request).start_recording(room)
    return {"session_id": recording.session_id, "started_at": recording.started_at}


@router.delete("/rooms/{room_id}/recording")
async def stop_recording(request: Request, room_id: str) -> dict[str, Any]:
    room = _room(request, room_id)
    if room.recording is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "room is not recording")
    manifest = await _hub(request).stop_recording(room)
    return {"session_id": manifest["session_id"], "state": manifest["state"],
            "reason": manifest.get("reason")}


@router.post("/rooms/{room_id}/markers", status_code=status.HTTP_201_CREATED)
async def add_marker(request: Request, room_id: str, body: MarkerCreate) -> dict[str, Any]:
    room = _room(request, room_id)
    if room.recording is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "markers need a running recording")
    marker = room.recording.marker(body.kind, body.label, body.data)
    _hub(request).changed()
    return {"t_s": marker["t_s"], "kind": marker["kind"], "label": marker["label"]}


@router.post("/rooms/{room_id}/prompt", status_code=status.HTTP_201_CREATED)
async def push_prompt(request: Request, room_id: str, body: PromptCreate) -> dict[str, Any]:
    room = _room(request, room_id)
    return _hub(request).prompt(room, body.model_dump())


class TokenCreate(BaseModel):
    role: Literal["reader"]
    label: str = Field(min_length=1, max_length=200)


class RevokeBody(BaseModel):
    reason: str | None = Field(default=None, max_length=1000)


@router.post("/tokens", status_code=status.HTTP_201_CREATED)
async def create_token(request: Request, body: TokenCreate) -> dict[str, Any]:
    try:
        return await request.app.state.downstream.tokens.create(body.role, body.label)  # type: ignore[no-any-return]
    except LimitReached as exc:
        raise limit_reached(exc) from exc


@router.get("/tokens")
async def list_tokens(request: Request) -> dict[str, Any]:
    return {"items": await request.app.state.downstream.tokens.list()}


@router.delete("/tokens/{token_id}")
async def revoke_token(request: Request, token_id: str) -> dict[str, str]:
    if not await request.app.state.downstream.tokens.revoke(token_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "token not found or already revoked")
    return {"id": token_id, "state": "revoked"}


@router.post("/performers/{performer_id}/revoke")
async def revoke_consent(
    request: Request, performer_id: str, body: RevokeBody | None = None
) -> dict[str, Any]:
    await _hub(request).withdraw(valid_performer_id(performer_id))
    return await request.app.state.downstream.revoke(  # type: ignore[no-any-return]
        performer_id, body.reason if body else None
    )


@router.get("/webhooks/deliveries")
async def webhook_deliveries(request: Request) -> dict[str, Any]:
    return {"items": await request.app.state.downstream.deliverer.list()}


@router.get("/status")
async def runtime_status(request: Request) -> dict[str, Any]:
    """What an operator (or a soak test) watches for leaks: tasks, threads, files, memory."""
    store: RoomStore = request.app.state.store
    rooms = list(store.rooms.values())
    fds = len(os.listdir("/proc/self/fd")) if os.path.isdir("/proc/self/fd") else None
    status_file = Path("/proc/self/status")
    lines = status_file.read_text().splitlines() if status_file.exists() else []
    rss_kb = next((int(line.split()[1]) for line in lines if line.startswith("VmRSS:")), None)
    return {
        "pid": os.getpid(),
        "tasks": len(asyncio.all_tasks()),
        "threads": threading.active_count(),
        "open_files": fds,
        "rss_mb": round(rss_kb / 1024, 1) if rss_kb else None,
        "rooms": len(rooms),
        "performers": sum(len(r.members) for r in rooms),
        "recordings": sum(1 for r in rooms if r.recording is not None),
    }
