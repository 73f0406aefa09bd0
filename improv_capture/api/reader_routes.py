"""Sessions for downstream jobs and the console: catalog, manifest, files, events (SSE) and
the revocation feed. Readers and the operator may use every route here."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import (
    FileResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.types import Receive, Scope, Send

from improv_capture.api.auth import (
    SESSION_ID,
    bearer_token,
    real_session_dir,
    require_reader,
    unaliased,
)
from improv_capture.api.node_proxy import FORWARDED_HEADER, forward
from improv_capture.downstream.events import TooManyStreams, sse
from improv_capture.recorder.files import read_sums
from improv_capture.rooms.invites import tokens_equal
from improv_capture.storage.local_copy import local_media_missing
from improv_capture.storage.s3_archive import store_sums

#: Matched with ``fullmatch``: `$` alone would let a trailing newline through.
#: Event and revocation ids are SQLite integers: a larger one is bad input, not a 500.
MAX_ID = 2**63 - 1
#: Seconds between SSE comments that keep an idle stream (and proxies) open.
KEEPALIVE_S = 15.0

router = APIRouter(prefix="/api/v1", dependencies=[Depends(require_reader)])


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


async def local_session(request: Request, session_id: str) -> Path | Response:
    """The session's directory in this node's data dir, or the answer of the node that holds
    it (the catalog says which); 404 when neither."""
    path = await asyncio.to_thread(real_session_dir, request.app.state.settings.sessions_dir, session_id)
    if path is not None:
        return path
    if SESSION_ID.fullmatch(session_id) and FORWARDED_HEADER not in request.headers:
        holder = await request.app.state.downstream.catalog.holder_of(session_id)
        if holder is not None:
            return await forward(request, holder)
    raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")


@router.get("/sessions/{session_id}", response_model=None)
async def get_session(request: Request, session_id: str) -> dict[str, Any] | Response:
    session_dir = await local_session(request, session_id)
    if isinstance(session_dir, Response):
        return session_dir
    return json.loads(await asyncio.to_thread((session_dir / "manifest.json").read_text))  # type: ignore[no-any-return]


@router.get("/sessions/{session_id}/files/{file_path:path}", response_model=None,
            responses={307: {"description": "the file is in S3-compatible storage only: a "
                                            "presigned URL, valid for a few minutes"}})
async def get_file(request: Request, session_id: str, file_path: str) -> Response:
    session_dir = await local_session(request, session_id)
    if isinstance(session_dir, Response):
        return session_dir
    if "\x00" in file_path or file_path.startswith("/") or "\\" in file_path:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid file path")
    parts = file_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    manifest_bytes = await asyncio.to_thread((session_dir / "manifest.json").read_bytes)
    manifest = json.loads(manifest_bytes)
    entries = {f["path"]: f for f in manifest.get("files", [])}
    entries.update({n: {} for n in ("manifest.json", "SHA256SUMS")})
    target = session_dir / file_path
    if file_path not in entries:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    archive = request.app.state.downstream.archive
    if archive is not None:
        stored = await from_store(request, session_dir, file_path, manifest_bytes, manifest)
        if stored is not None:
            return stored
    # every component, not only the last: a symlinked directory must not serve what it points to
    if not await asyncio.to_thread(lambda: unaliased(target) and target.is_file()):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    headers = {}
    digest = entries[file_path].get("sha256")
    if digest:
        headers["X-Content-SHA256"] = digest
        headers["ETag"] = f'"{digest}"'
    media_type = "video/webm" if file_path.endswith(".webm") else None
    return FileResponse(target, headers=headers, media_type=media_type)


async def from_store(request: Request, session_dir: Path, file_path: str, manifest_bytes: bytes,
                     manifest: dict[str, Any]) -> Response | None:
    """A file whose local copy was removed after upload (IMPROV_S3_KEEP_LOCAL=false): a
    redirect to the stored object, or for SHA256SUMS the store's version of it (the local one
    no longer lists removed files once a later revision rewrote it). None: serve it locally."""
    downstream = request.app.state.downstream
    if file_path == "manifest.json":
        return None
    missing = await asyncio.to_thread(local_media_missing, session_dir, manifest)
    if not missing:
        return None
    if file_path == "SHA256SUMS":
        sums = await asyncio.to_thread(lambda: store_sums(
            read_sums(session_dir, missing_ok=True), manifest_bytes,
            {f["path"]: f for f in manifest.get("files", [])}, session_dir))
        return Response(sums, media_type="text/plain; charset=utf-8")
    if await asyncio.to_thread((session_dir / file_path).is_file):
        return None
    storage = await downstream.catalog.storage_of(session_dir.name)
    if not storage or storage["s3"] is None:
        return None  # never stored: a 404 as before
    url = await downstream.archive.presigned(storage["s3"]["key"], file_path)
    return RedirectResponse(url, status_code=status.HTTP_307_TEMPORARY_REDIRECT,
                            headers={"Cache-Control": "no-store"})


class EventStreamResponse(StreamingResponse):
    """A stream whose ``on_close`` runs however it ends, even if it never started."""

    def __init__(self, content: AsyncIterator[str], on_close: Callable[[], None]) -> None:
        super().__init__(content, media_type="text/event-stream",
                         headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._on_close()


@router.get("/events")
async def events(
    request: Request,
    token: Annotated[str, Depends(bearer_token)],
    after: int | None = Query(default=None, ge=0, le=MAX_ID),
) -> StreamingResponse:
    """Server-Sent Events; resume with Last-Event-ID (or ?after=). A stream opened with a
    reader token ends as soon as that token is revoked."""
    log = request.app.state.downstream.events
    tokens = request.app.state.downstream.tokens
    last = request.headers.get("last-event-id")
    if last and not (last.isascii() and last.isdigit() and len(last) <= 19 and int(last) <= MAX_ID):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "Last-Event-ID must be an event id")
    start = after if after is not None else int(last or 0)
    try:
        log.open_stream()
    except TooManyStreams as exc:
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, str(exc),
                            headers={"Retry-After": "5"}) from exc
    reader = not tokens_equal(token, request.app.state.operator_token)
    revoked = tokens.revoked_signal(token) if reader else asyncio.Event()  # the operator's is never set

    async def stream() -> AsyncIterator[str]:
        queue = log.subscribe()
        revocation = asyncio.ensure_future(revoked.wait())
        try:
            sent = start
            while True:  # the backlog first, then live (the queue holds what came meanwhile)
                backlog = await log.since(sent)
                for event in backlog:
                    if revoked.is_set():
                        break
                    sent = event["id"]
                    yield sse(event)
                if len(backlog) < 1000 or revoked.is_set():
                    break
            if not revoked.is_set():
                yield ": live\n\n"
            while not revoked.is_set():
                getting = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({getting, revocation}, timeout=KEEPALIVE_S,
                                             return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()  # Queue.get leaves the item queued when cancelled
                    if revocation not in done:
                        yield ": keep-alive\n\n"
                    continue
                event = getting.result()
                if event is None:
                    return  # fell behind: the client resumes from its last id
                if event["id"] > sent:
                    sent = event["id"]
                    yield sse(event)
            yield ": token revoked\n\n"
        finally:
            revocation.cancel()
            log.unsubscribe(queue)

    def closed() -> None:
        log.close_stream()
        tokens.forget_signal(revoked)

    return EventStreamResponse(stream(), on_close=closed)


@router.get("/revocations")
async def revocations(
    request: Request,
    after: int = Query(default=0, ge=0, le=MAX_ID),
    limit: int = Query(default=100, ge=1, le=1000),
) -> dict[str, Any]:
    return await request.app.state.downstream.revocations(after, limit)  # type: ignore[no-any-return]
