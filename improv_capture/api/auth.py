"""Who may call what, and the ids a path may hold: the API's auth dependencies and validators
in one place (operator and reader routes, the cluster's internal routes)."""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Annotated

from fastapi import Depends, HTTPException, Request, status

from improv_capture.api.http_guard import bearer_of
from improv_capture.database.base import DatabaseUnavailable
from improv_capture.rooms.invites import InviteError, InviteSigner, tokens_equal

#: Anchored for pydantic's `pattern=` (Rust regex: `$` is the end of the text); Python's `$`
#: also matches before a final newline, so Python code uses ``fullmatch``.
PERFORMER_ID_PATTERN = r"^[A-Za-z0-9_-]{1,48}$"


def valid_performer_id(performer_id: str) -> str:
    if not re.fullmatch(PERFORMER_ID_PATTERN, performer_id):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_ENTITY, "invalid performer id")
    return performer_id


SESSION_ID = re.compile(r"ses_[A-Za-z0-9_]{1,64}")


def bearer_token(request: Request) -> str:
    """The request's bearer token, read as the HTTP guard reads it (api/http_guard.py)."""
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


async def is_reader(request: Request, token: str) -> bool:
    """A reader token's check; 503 when the index cannot say (the database unavailable)."""
    try:
        return await request.app.state.downstream.tokens.is_reader(token)  # type: ignore[no-any-return]
    except DatabaseUnavailable as exc:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "the database is unavailable;"
                            " retry later", headers={"Retry-After": "5"}) from exc


async def require_operator(request: Request, token: Annotated[str, Depends(bearer_token)]) -> None:
    if tokens_equal(token, request.app.state.operator_token):
        return
    if await is_reader(request, token):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "a reader token can only read sessions")
    raise _invite_or_unknown(request, token)


async def require_reader(request: Request, token: Annotated[str, Depends(bearer_token)]) -> None:
    """Operator or reader: listing and fetching sessions, events and revocations."""
    if tokens_equal(token, request.app.state.operator_token):
        return
    if await is_reader(request, token):
        return
    raise _invite_or_unknown(request, token)


def _sessions_dir(request: Request) -> Path:
    return request.app.state.settings.sessions_dir  # type: ignore[no-any-return]


def unaliased(path: Path) -> bool:
    """No component of ``path`` (already normalised: no `.` or `..`) is a symlink."""
    return os.path.realpath(path) == str(path)


def real_session_dir(sessions_dir: Path, session_id: str) -> Path | None:
    """The session's directory when it is one: a well-formed id, a real directory right
    under sessions/ (not a symlink to elsewhere) with a real manifest (blocking)."""
    if not SESSION_ID.fullmatch(session_id):
        return None
    path = Path(os.path.realpath(sessions_dir)) / session_id
    manifest = path / "manifest.json"
    return path if unaliased(manifest) and manifest.is_file() else None


async def session_dir_or_404(request: Request, session_id: str) -> Path:
    path = await asyncio.to_thread(real_session_dir, _sessions_dir(request), session_id)
    if path is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "session not found")
    return path


