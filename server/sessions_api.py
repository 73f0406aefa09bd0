"""Finished sessions over HTTP: list, manifest, files (docs/console-protocol.md; the reader
tokens, index and events of SPEC.md come with the downstream access issue)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, status
from fastapi.responses import FileResponse

from .api import require_operator

SESSION_ID = re.compile(r"^ses_[A-Za-z0-9_]{1,64}$")

router = APIRouter(prefix="/api/v1/sessions", dependencies=[Depends(require_operator)])


def _sessions_dir(request: Request) -> Path:
    return request.app.state.settings.sessions_dir  # type: ignore[no-any-return]


def _session_dir(request: Request, session_id: str) -> Path:
    path = _sessions_dir(request) / session_id
    if not SESSION_ID.match(session_id) or not (path / "manifest.json").is_file():
        raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")
    return path


def read_manifests(sessions_dir: Path) -> list[dict[str, Any]]:
    manifests = []
    for path in sessions_dir.glob("ses_*/manifest.json"):
        try:
            manifests.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    manifests.sort(key=lambda m: (m.get("started_at") or "", m.get("session_id") or ""))
    return manifests


def summary(manifest: dict[str, Any]) -> dict[str, Any]:
    return {
        **{k: manifest.get(k) for k in ("session_id", "room_id", "room_name", "state", "reason",
                                         "started_at", "ended_at", "duration_s")},
        "performers": [
            {"performer_id": p["performer_id"], "display_name": p.get("display_name")}
            for p in manifest.get("performers", [])
        ],
        "markers": len(manifest.get("markers", [])),
        "prompts": len(manifest.get("prompts", [])),
    }


@router.get("")
async def list_sessions(
    request: Request,
    state: str | None = None,
    room_id: str | None = None,
    after: str | None = None,
    limit: int = Query(default=50, ge=1, le=500),
) -> dict[str, Any]:
    manifests = await asyncio.to_thread(read_manifests, _sessions_dir(request))
    items = [
        m for m in manifests
        if (state is None or m.get("state") == state) and (room_id is None or m.get("room_id") == room_id)
    ]
    if after is not None:
        ids = [m.get("session_id") for m in items]
        if after not in ids:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, "unknown cursor")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    return {
        "items": [summary(m) for m in page],
        "next": page[-1]["session_id"] if len(items) > limit else None,
    }


@router.get("/{session_id}")
async def get_session(request: Request, session_id: str) -> dict[str, Any]:
    path = _session_dir(request, session_id) / "manifest.json"
    return json.loads(await asyncio.to_thread(path.read_text))  # type: ignore[no-any-return]


@router.get("/{session_id}/files/{file_path:path}")
async def get_file(request: Request, session_id: str, file_path: str) -> FileResponse:
    session_dir = _session_dir(request, session_id)
    if "\x00" in file_path or file_path.startswith("/") or "\\" in file_path:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, "invalid file path")
    parts = file_path.split("/")
    if any(part in ("", ".", "..") for part in parts):
        raise HTTPException(status.HTTP_404_NOT_FOUND, "file not found")
    manifest = json.loads((session_dir / "manifest.json").read_text())
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
