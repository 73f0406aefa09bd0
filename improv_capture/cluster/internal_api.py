"""What the processes of a cluster tell each other (`serve --workers N`, docs/architecture.md).

Both ends of one small contract live here: the routes a worker serves under /internal/v1
(the router never exposes them; all but the upload admission take the operator token), and
the notifier with which a worker that is not the primary hands its sessions to the primary's
catalog, events and webhooks.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, HTTPException, Request, status
from pydantic import BaseModel, Field

from improv_capture.api.auth import (
    SESSION_ID,
    require_operator,
    session_dir_or_404,
    valid_performer_id,
)
from improv_capture.api.upload_routes import upload_target
from improv_capture.rooms.hq_uploads import Target

logger = logging.getLogger(__name__)

#: Session notices a worker holds while the primary is unreachable; past this the oldest is
#: dropped (its session stays on disk and the primary's catalog indexes it on its next start).
NOTICE_QUEUE = 1000
#: How long a stop waits for the primary to index the session before it answers anyway.
NOTICE_WAIT_S = 10.0
RETRY_MAX_S = 30.0

router = APIRouter(prefix="/internal/v1", include_in_schema=False)
#: what one process of the cluster asks another, with the operator token
operator_only = APIRouter(dependencies=[Depends(require_operator)])


class SessionStarted(BaseModel):
    room_id: str = Field(max_length=100)
    started_at: str = Field(max_length=40)


class SessionUpdated(BaseModel):
    #: what changed (Downstream.session_updated); the body is bounded by the HTTP guard
    detail: dict[str, Any] = Field(default_factory=dict)


def _primary_only(request: Request) -> None:
    if not request.app.state.settings.is_primary:
        raise HTTPException(status.HTTP_409_CONFLICT, "only the primary worker keeps the catalog")


@operator_only.post("/sessions/{session_id}/started", status_code=status.HTTP_204_NO_CONTENT)
async def session_started(request: Request, session_id: str, body: SessionStarted) -> None:
    _primary_only(request)
    # as in a lone server, the event goes out at once: the worker's writer thread may not
    # have put the session's first manifest on disk yet
    if not SESSION_ID.fullmatch(session_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "invalid session id")
    await request.app.state.downstream.session_started(session_id, body.room_id, body.started_at)


@operator_only.post("/sessions/{session_id}/finalised", status_code=status.HTTP_204_NO_CONTENT)
async def session_finalised(request: Request, session_id: str) -> None:
    _primary_only(request)
    await request.app.state.downstream.session_finalised(await session_dir_or_404(request, session_id))


@operator_only.post("/sessions/{session_id}/updated", status_code=status.HTTP_204_NO_CONTENT)
async def session_updated(request: Request, session_id: str, body: SessionUpdated) -> None:
    _primary_only(request)
    await request.app.state.downstream.session_updated(
        await session_dir_or_404(request, session_id), body.detail)


@operator_only.post("/performers/{performer_id}/remove-everywhere", status_code=status.HTTP_204_NO_CONTENT)
async def remove_everywhere(request: Request, performer_id: str) -> None:
    """The room half of a consent revocation, on a worker the revocation did not reach."""
    await request.app.state.hub.remove_everywhere(valid_performer_id(performer_id))


@router.get("/rooms/{room_id}/sessions/{session_id}/performers/{performer_id}/hq",
            status_code=status.HTTP_204_NO_CONTENT)
async def upload_admitted(target: Annotated[Target, Depends(upload_target)]) -> None:
    """Whether an upload request to the public path of the same name (under /api/v1) passes
    the checks made before its body is read: the router asks the room's worker this with the
    performer's own invite, and reads the body only then (a lone server reads none of a body
    it refuses). The invite is the credential, as on the public route."""


router.include_router(operator_only)


class PrimaryNotifier:
    """A worker's SessionEvents: each notice goes to the primary, in order, retried."""

    def __init__(self, primary_url: str, operator_token: str) -> None:
        self._client = httpx.AsyncClient(
            base_url=primary_url, headers={"Authorization": f"Bearer {operator_token}"}, timeout=60
        )
        self._queue: asyncio.Queue[tuple[str, dict[str, Any] | None, asyncio.Future[None]]] = (
            asyncio.Queue(maxsize=NOTICE_QUEUE)
        )
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self._client.aclose()

    async def session_started(self, session_id: str, room_id: str, started_at: str) -> None:
        self._submit(f"/internal/v1/sessions/{session_id}/started",
                     {"room_id": room_id, "started_at": started_at})

    async def session_finalised(self, session_dir: Path) -> None:
        # answer the stop once the session is in the catalog, as a lone server does
        await self._indexed(session_dir, self._submit(
            f"/internal/v1/sessions/{session_dir.name}/finalised", None))

    async def session_updated(self, session_dir: Path, detail: dict[str, Any]) -> None:
        # in order after the session's finalised notice: the same queue
        await self._indexed(session_dir, self._submit(
            f"/internal/v1/sessions/{session_dir.name}/updated", {"detail": detail}))

    async def _indexed(self, session_dir: Path, done: asyncio.Future[None]) -> None:
        """Wait (a bounded time) until the primary has indexed the session, as
        Downstream does before returning; the notice is retried beyond that."""
        try:
            await asyncio.wait_for(asyncio.shield(done), NOTICE_WAIT_S)
        except TimeoutError:
            logger.warning("the primary has not indexed %s yet; still trying", session_dir.name)

    def _submit(self, path: str, body: dict[str, Any] | None) -> asyncio.Future[None]:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._queue.full():
            dropped = self._queue.get_nowait()
            logger.error("primary unreachable: dropped the notice %s", dropped[0])
            dropped[2].cancel()
        self._queue.put_nowait((path, body, done))
        return done

    async def _run(self) -> None:
        while True:
            path, body, done = await self._queue.get()
            delay = 0.25
            while not done.done():
                try:
                    response = await self._client.post(path, json=body)
                    if response.status_code < 500:
                        if response.status_code >= 400:
                            logger.error("the primary refused %s: %s", path, response.text)
                        done.set_result(None)
                        break
                except httpx.HTTPError as exc:
                    logger.warning("notice %s failed (%s); retrying in %.1f s", path, exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
