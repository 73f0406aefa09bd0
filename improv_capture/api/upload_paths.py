"""The upload routes of high-quality copies, as the HTTP guard sees them: the one route family
whose body a performer may send, and only with the invite of the performer the path names.

Light on purpose (no aiortc, no rooms): the cluster router guards with it too."""

from __future__ import annotations

import re

from improv_capture.api.http_guard import bearer_of
from improv_capture.rooms.invites import InviteError, InviteSigner
from improv_capture.settings import Settings

#: /api/v1/rooms/{room_id}/sessions/{session_id}/performers/{performer_id}/hq/parts/{part}
#: [/chunks/{index} | /end]
UPLOAD_PATH = re.compile(
    r"/api/v1/rooms/(?P<room_id>[^/]+)/sessions/(?P<session_id>[^/]+)"
    r"/performers/(?P<performer_id>[^/]+)/hq/parts/(?P<part>[0-9]{1,3})"
    r"(?:/chunks/(?P<index>[0-9]{1,6})|(?P<end>/end))?"
)
#: A part's description and its end are small JSON bodies.
MAX_UPLOAD_JSON_BYTES = 16 * 1024


def upload_invite(signer: InviteSigner, token: str, room_id: str, performer_id: str) -> bool:
    """Whether ``token`` is the invite of that performer in that room. An expired invite still
    uploads: the copy of a take recorded while it was valid may arrive after it expires."""
    try:
        invite = signer.verify(token, now=0.0)
    except InviteError:
        return False
    return invite.room_id == room_id and invite.performer_id == performer_id


class UploadBodies:
    """The body limit of a performer's upload request, or None when its body must not be read
    (not an upload path, or not that performer's invite)."""

    def __init__(self, signer: InviteSigner, settings: Settings) -> None:
        self.signer = signer
        self.max_chunk_bytes = settings.hq_max_chunk_bytes
        self.timeout_s = settings.hq_chunk_timeout_s

    def limit(self, path: str, authorization: str | None) -> int | None:
        match = UPLOAD_PATH.fullmatch(path)
        token = bearer_of(authorization)
        if match is None or token is None:
            return None
        if not upload_invite(self.signer, token, match["room_id"], match["performer_id"]):
            return None
        return self.max_chunk_bytes if match["index"] is not None else MAX_UPLOAD_JSON_BYTES
