"""Sessions for downstream jobs and the console: catalog, manifest, files, events (SSE) and
the revocation feed. Readers and the operator may use every route here."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse, StreamingResponse

from .api import require_reader
from .events import sse

SESSION_ID = re.compile(r"^ses_[A-Za-z0-9_]{1,64}$")

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_reader)])


def _sessions_dir(request: Request) -> Path:
    return request.app.state.settings.sessions_dir  # type: ignore[no-any-return]


def session_dir_or_404(request: Request, session_id: str) -> Path:
    path = _sessions_dir(request) / session_id
    if not SESSION_ID.match(session_id) or not (path / "manifest.json").is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")
    return path


@router.get("/sessions")
async def list_sessions(
    request: Request,
    state: str | None = None,
    room_id: str | None = None,
    since: str | None = Query(default=None, description="started_at >= (ISO 8601 UTC)"),
    until: str | None = Query(default=None, description="started_at < (ISO 8601 UTC)"),
    after: str | None = Query(default=None, description="the `next` of the previous page"),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    try:
        return await request.app.state.downstream.catalog.page(  # type: ignore[no-any-return]
            state=state, room_id=room_id, since=since, until=until, after=after, limit=limit
        )
    except ValueError as exc:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, str(exc)) from exc


@router.get("/sessions/{session_id}")
async def get_session(request: Request, session_id: str) -> dict[str, Any]:
    path = session_dir_or_404(request, session_id) / "manifest.json"
    return json.loads(await asyncio.to_thread(path.read_text))  # type: ignore[no-any-return]


@router.get("/sessions/{session_id}/files/{file_path:path}")
async def get_file(request: Request, session_id: str, file_path: str) -> FileResponse:
    session_dir = session_dir_or_404(request, session_id)
    if "\x00" in file_path or file_path.startswith("/") or "\\" in file_path:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid file path")
    parts = file_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    manifest = json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))
    entries = {f["path"]: f for f in manifest.get("files", [])}
    entries.update({n: {} for n in ("manifest.json", "SHA256SUMS")})
    target = session_dir / file_path
    if file_path not in entries or target.is_symlink() or not target.is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    headers = {}
    digest = entries[file_path].get("sha256")
    if digest:
        headers["X-Content-SHA256"] = digest
        headers["ETag"] = f'"{digest}"'
    media_type = "video/webm" if file_path.endswith(".webm") else None
    return FileResponse(target, headers=headers, media_type=media_type)


@router.get("/events")
async def events(
    request: Request, after: int | None = Query(default=None, ge=0)
) -> StreamingResponse:
    """Server-Sent Events; resume with Last-Event-ID (or ?after=)."""
    log = request.app.state.downstream.events
    last = request.headers.get("last-event-id")
    start = after if after is not None else (int(last) if last and last.isdigit() else 0)

    async def stream():  # type: ignore[no-untyped-def]
        queue = log.subscribe()
        try:
            sent = start
            while True:  # the backlog first, then live (the queue holds what came meanwhile)
                backlog = await log.since(sent)
                for event in backlog:
                    sent = event["id"]
                    yield sse(event)
                if len(backlog) < 1000:
                    break
            yield ": live\n\n"
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), 15)
                except asyncio.TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                if event is None:
                    return  # fell behind: the client resumes from its last id
                if event["id"] > sent:
                    sent = event["id"]
                    yield sse(event)
        finally:
            log.unsubscribe(queue)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})


@router.get("/revocations")
async def revocations(
    request: Request,
    after: int = Query(default=0, ge=0),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    return await request.app.state.downstream.revocations(after, limit)  # type: ignore[no-any-return]
