"""A performer's high-quality upload that reached a node other than its room's (several
nodes): sent on to the room's node over HTTP, and its answer passed back.

A page uploads to the node it was loaded from. When that node died and the room moved, the
page's socket followed the room but its uploads still go to its own origin (the page's
storage is that origin's); once that node is back, it passes them on here. A session this
node holds itself (a part recorded here before it died) is answered here as always.

The HTTP guard in front has already bounded the body (only the named performer's invite may
send one, at most a chunk's size); it is read whole and sent on with the headers the upload
routes read. Bounds: TIMEOUT_S for the owner's answer; an owner that cannot be reached is a
502, a dead one not yet replaced a 503 with Retry-After, and the page's client retries both."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from starlette.types import ASGIApp, Receive, Scope, Send

from improv_capture.api.node_proxy import FORWARDED_HEADER
from improv_capture.api.node_routing import read_body, respond
from improv_capture.api.upload_paths import UPLOAD_PATH
from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.service import Nodes
from improv_capture.rooms.store import RoomStore

#: the request headers the upload routes read, and the answer's headers the clients read
PASSED_REQUEST = ("authorization", "content-type", "x-chunk-sha256", "x-recorded-chunks")
PASSED_RESPONSE = ("content-type", "retry-after")
TIMEOUT_S = 30.0


class UploadForward:
    """ASGI middleware: uploads for another node's room go there, the rest to ``app``."""

    def __init__(self, app: ASGIApp, nodes: Nodes, store: RoomStore, sessions_dir: Path) -> None:
        self.app = app
        self.nodes = nodes
        self.store = store
        self.sessions_dir = sessions_dir

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and await self._elsewhere(scope):
            await self._forward(scope, receive, send)
        else:
            await self.app(scope, receive, send)

    async def _elsewhere(self, scope: Scope) -> bool:
        """Whether this request is an upload for a room and session this node does not hold
        (and did not come from another node)."""
        match = UPLOAD_PATH.fullmatch(scope["path"])
        if match is None or match["room_id"] in self.store.rooms:
            return False
        if FORWARDED_HEADER.encode() in dict(scope["headers"]):
            return False
        here = self.sessions_dir / match["session_id"]
        return not await asyncio.to_thread(here.is_dir)

    async def _forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = UPLOAD_PATH.fullmatch(scope["path"])
        assert match is not None
        try:
            where = await self.nodes.where(match["room_id"])
        except ValueError:
            where = None
        except RedisUnavailable:
            await respond(send, 503, {"detail": "the nodes cannot reach each other (Redis); retry"},
                          [(b"retry-after", b"2")])
            return
        if where is None:
            await respond(send, 404, {"detail": "no such session"})
            return
        node_id, url = where
        if url is None:
            await respond(send, 503, {"detail": f"the room's node {node_id} is down; retry"},
                          [(b"retry-after", b"5")])
            return
        body = await read_body(receive)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        passed = {k: v for k, v in headers.items() if k in PASSED_REQUEST}
        passed[FORWARDED_HEADER] = "1"
        target = url.rstrip("/") + scope["path"]
        try:
            async with httpx.AsyncClient(timeout=TIMEOUT_S) as client:
                answer = await client.request(scope["method"], target, headers=passed, content=body)
        except httpx.HTTPError:
            await respond(send, 502, {"detail": f"the room's node {node_id} cannot be reached; retry"},
                          [(b"retry-after", b"2")])
            return
        kept = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers.items()
                if k.lower() in PASSED_RESPONSE]
        await send({"type": "http.response.start", "status": answer.status_code,
                    "headers": [*kept, (b"content-length", str(len(answer.content)).encode())]})
        await send({"type": "http.response.body", "body": answer.content})
