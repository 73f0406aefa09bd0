"""The operator HTTP API: rooms, invites, recordings, tokens, revocation (docs/api.md)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from improv_capture.api.auth import (
    PERFORMER_ID_PATTERN,
    require_operator,
    valid_performer_id,
)
from improv_capture.api.descriptions import describe_room
from improv_capture.clock import new_id, utc_iso
from improv_capture.errors import LimitReached
from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import Invite
from improv_capture.rooms.model import Room
from improv_capture.rooms.profiles import ProfileName, ProfileRequest, resolve_profile
from improv_capture.rooms.store import RoomStore


class RoomCreate(BaseModel):
    name: str | None = Field(default=None, min_length=1, max_length=200)
    #: `standard`, `studio`, or {"name": ..., "capture"|"live"|"hq": {overrides}}; none: the
    #: server's default (IMPROV_DEFAULT_PROFILE)
    profile: ProfileName | ProfileRequest | None = None


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
    profile: dict[str, Any]


class InviteOut(BaseModel):
    performer_id: str
    token: str
    url: str
    expires_at: str


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
async def create_room(request: Request, body: RoomCreate | None = None) -> dict[str, Any]:
    store: RoomStore = request.app.state.store
    settings = _hub(request).settings
    try:
        profile = resolve_profile(body.profile if body else None, settings)
    except ValueError as exc:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, str(exc)) from exc
    try:
        room = await store.create(body.name if body else None, settings.max_rooms, profile)
    except LimitReached as exc:
        raise limit_reached(exc) from exc
    if request.app.state.nodes is not None:  # one of several nodes: the room is this one's
        await request.app.state.nodes.claim(room.room_id)
    _hub(request).stats.changed()
    return {**room.record(), "profile": profile}


@router.get("/rooms")
async def list_rooms(request: Request) -> dict[str, list[dict[str, Any]]]:
    store: RoomStore = request.app.state.store
    return {"items": [describe_room(room, _hub(request)) for room in store.rooms.values()]}


@router.get("/rooms/{room_id}")
async def get_room(request: Request, room_id: str) -> dict[str, Any]:
    return describe_room(_room(request, room_id), _hub(request))


@router.delete("/rooms/{room_id}")
async def delete_room(request: Request, room_id: str) -> dict[str, str]:
    room = _room(request, room_id)
    await _hub(request).seats.close_room(room)
    store: RoomStore = request.app.state.store
    await store.delete(room_id)
    if request.app.state.nodes is not None:
        await request.app.state.nodes.release(room_id)
    _hub(request).stats.changed()
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
    _hub(request).stats.changed()
    return issued


@router.get("/rooms/{room_id}/invites")
async def list_invites(request: Request, room_id: str) -> dict[str, list[dict[str, str]]]:
    return {"items": _room(request, room_id).invites}


@router.delete("/rooms/{room_id}/performers/{performer_id}")
async def remove_performer(request: Request, room_id: str, performer_id: str) -> dict[str, str]:
    room = _room(request, room_id)
    if not room.knows(performer_id):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "performer not found in this room")
    store: RoomStore = request.app.state.store
    await store.remove_performer(room, performer_id)
    await _hub(request).seats.remove(room, performer_id)
    return {"performer_id": performer_id, "state": "removed"}


@router.post("/rooms/{room_id}/recording", status_code=status.HTTP_201_CREATED)
async def start_recording(request: Request, room_id: str) -> dict[str, str]:
    room = _room(request, room_id)
    if room.recording is not None:
        raise HTTPException(status.HTTP_409_CONFLICT, "room is already recording")
    recording = _hub(request).recordings.start(room)
    return {"session_id": recording.session_id, "started_at": recording.started_at}


@router.delete("/rooms/{room_id}/recording")
async def stop_recording(request: Request, room_id: str) -> dict[str, Any]:
    room = _room(request, room_id)
    if room.recording is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "room is not recording")
    manifest = await _hub(request).recordings.stop(room)
    return {"session_id": manifest["session_id"], "state": manifest["state"],
            "reason": manifest.get("reason")}


@router.post("/rooms/{room_id}/markers", status_code=status.HTTP_201_CREATED)
async def add_marker(request: Request, room_id: str, body: MarkerCreate) -> dict[str, Any]:
    room = _room(request, room_id)
    if room.recording is None:
        raise HTTPException(status.HTTP_409_CONFLICT, "markers need a running recording")
    marker = _hub(request).recordings.marker(room, body.kind, body.label, body.data)
    return {"t_s": marker["t_s"], "kind": marker["kind"], "label": marker["label"]}


@router.post("/rooms/{room_id}/prompt", status_code=status.HTTP_201_CREATED)
async def push_prompt(request: Request, room_id: str, body: PromptCreate) -> dict[str, Any]:
    room = _room(request, room_id)
    return _hub(request).recordings.prompt(room, body.model_dump())


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
    await _hub(request).remove_everywhere(valid_performer_id(performer_id))
    return await request.app.state.downstream.revoke(  # type: ignore[no-any-return]
        performer_id, body.reason if body else None
    )


@router.get("/webhooks/deliveries")
async def webhook_deliveries(request: Request) -> dict[str, Any]:
    return {"items": await request.app.state.downstream.deliverer.list()}


@router.get("/nodes")
async def list_nodes(request: Request) -> dict[str, Any]:
    """The live nodes (IMPROV_REDIS_URL) with their headroom; this node alone without Redis.
    503 when Redis cannot say."""
    nodes = request.app.state.nodes
    settings = _hub(request).settings
    if nodes is None:
        store: RoomStore = request.app.state.store
        return {"items": [{"node_id": settings.node_id, "public_url": settings.base_url,
                           "rooms": len(store.rooms), "max_rooms": settings.max_rooms}]}
    try:
        live = await nodes.registry.live_nodes()
    except RedisUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "nodes cannot be listed (Redis);"
                            " retry", headers={"Retry-After": "2"}) from exc
    return {"items": [dataclasses.asdict(n) for n in live]}


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
