"""The operator's room routes on a node that is one of several (IMPROV_REDIS_URL): any node
answers them, as LiveKit's nodes do.

- ``POST /api/v1/rooms``: the room is made on the live node with the most headroom (here,
  or there through Redis: nodes/nodecalls.py), which claims it in Redis; its invite links then
  carry that node's public URL, so performers' signaling and media go straight to it.
- ``/api/v1/rooms/{room_id}/...``: a room this node does not hold is answered by its owner
  (Redis says which).
- ``GET /api/v1/rooms``: every live node's rooms.

Only a request with this node's operator token is sent on (the nodes share it): anything
else is answered here, as a lone server would (401, 403, 404). A request that came from
another node is answered here, never sent on again."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from improv_capture.api.http_guard import bearer_of
from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.nodecalls import NodeDidNotAnswer, decode_body, encode_body
from improv_capture.nodes.placement import NoNodeAvailable
from improv_capture.nodes.service import Nodes
from improv_capture.rooms.invites import tokens_equal
from improv_capture.rooms.store import RoomStore

FROM_NODE = "x-improv-from-node"
ROOM_PATH = re.compile(r"^/api/v1/rooms/([^/]+)(?:/.*)?$")
#: how long a list of every node's rooms waits for one node (all are asked at once)
LIST_TIMEOUT_S = 3.0
#: request headers a room route reads
PASSED = ("authorization", "content-type", "accept")


def request_of(scope: Scope, body: bytes) -> dict[str, Any]:
    headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
    return {"method": scope["method"], "path": scope["path"],
            "query": scope.get("query_string", b"").decode("latin-1"),
            "headers": {k: v for k, v in headers.items() if k in PASSED},
            "body": encode_body(body)}


class NodeRouting:
    def __init__(self, app: ASGIApp, nodes: Nodes, store: RoomStore, operator_token: str) -> None:
        self.app = app
        self.nodes = nodes
        self.store = store
        self.operator_token = operator_token
        # creates through this node one at a time (and through every node, by a lock in
        # Redis): each reads the room counts after the last one's claim, so a burst spreads
        self._placing = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._sent_on(scope):
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path == "/api/v1/rooms" and method == "POST":
            body = await read_body(receive)
            async with self._placing, self.nodes.placing():
                try:
                    target = await self.nodes.place()
                except NoNodeAvailable as exc:
                    await respond(send, 409, {"detail": str(exc)})
                    return
                if target is None or target.node_id == self.nodes.node_id:
                    await self.app(scope, replay(body), send)
                else:
                    await self._answer_from(target.node_id, scope, body, send)
        elif path == "/api/v1/rooms" and method == "GET":
            await self._all_rooms(scope, receive, send)
        elif (match := ROOM_PATH.match(path)) and match.group(1) not in self.store.rooms:
            try:
                owner = await self.nodes.owners.owner_of(match.group(1))
            except (RedisUnavailable, ValueError):
                owner = None
            if owner is None or owner == self.nodes.node_id:
                await self.app(scope, receive, send)
            elif not await self._live(owner):
                # its heartbeat expired: a live node takes the room over within a beat or two
                await respond(send, 503, {"detail": f"the room's node {owner} is down; the room"
                                          " moves to a live node shortly, retry"},
                              [(b"retry-after", b"2")])
            else:
                await self._answer_from(owner, scope, await read_body(receive), send)
        else:
            await self.app(scope, receive, send)

    async def _live(self, node_id: str) -> bool:
        try:
            return await self.nodes.is_live(node_id)
        except RedisUnavailable:
            return True  # let the call say (503 from Redis, or the answer)

    def _sent_on(self, scope: Scope) -> bool:
        """Whether this request may be answered by another node: the operator's, on a room
        route, not already from a node."""
        if not scope["path"].startswith("/api/v1/rooms"):
            return False
        headers = dict(scope["headers"])
        if FROM_NODE.encode() in headers:
            return False
        token = bearer_of(headers.get(b"authorization", b"").decode("latin-1"))
        return token is not None and tokens_equal(token, self.operator_token)

    async def _answer_from(self, node_id: str, scope: Scope, body: bytes, send: Send) -> None:
        try:
            answer = await self.nodes.call(node_id, request_of(scope, body))
        except NodeDidNotAnswer as exc:
            await respond(send, 504, {"detail": str(exc)})
            return
        except RedisUnavailable:
            await respond(send, 503, {"detail": "nodes cannot reach each other (Redis); retry"},
                          [(b"retry-after", b"2")])
            return
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in answer["headers"].items()]
        await send({"type": "http.response.start", "status": answer["status"], "headers": headers})
        await send({"type": "http.response.body", "body": decode_body(answer["body"])})

    async def _all_rooms(self, scope: Scope, receive: Receive, send: Send) -> None:
        """This node's list, then every other live node's, in node order."""
        local = await capture(self.app, scope, b"")
        if local["status"] != 200:
            await respond(send, local["status"], json.loads(decode_body(local["body"]) or b"{}"))
            return
        items = json.loads(decode_body(local["body"]))["items"]
        items += await rooms_elsewhere(self.nodes, request_of(scope, b""))
        await respond(send, 200, {"items": items})


def operator_request(token: str, method: str, path: str) -> dict[str, Any]:
    """A request of this node's own making, with the operator token the nodes share."""
    return {"method": method, "path": path, "query": "",
            "headers": {"authorization": f"Bearer {token}"}, "body": ""}


async def rooms_elsewhere(nodes: Nodes, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Every other live node's answer to ``GET /api/v1/rooms`` (all asked at once), in node
    order. A node going away (or slower than LIST_TIMEOUT_S) is left out: its rooms are listed
    once it is back or they moved."""
    try:
        others = [n.node_id for n in await nodes.registry.live_nodes() if n.node_id != nodes.node_id]
    except RedisUnavailable:
        return []
    answers = await asyncio.gather(*(nodes.call(node_id, request, LIST_TIMEOUT_S)
                                     for node_id in others), return_exceptions=True)
    items: list[dict[str, Any]] = []
    for answer in answers:
        if isinstance(answer, dict) and answer["status"] == 200:
            items += json.loads(decode_body(answer["body"]))["items"]
    return items


async def read_body(receive: Receive) -> bytes:
    """The request's body (the HTTP guard in front bounds it)."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(chunks)


def replay(body: bytes) -> Receive:
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return {"type": "http.disconnect"}

    return receive


async def capture(app: ASGIApp, scope: Scope, body: bytes) -> dict[str, Any]:
    """The app's answer to a request, whole (room routes answer small JSON)."""
    status, headers, chunks = 500, {}, []

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status = message["status"]
            headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in message.get("headers", [])}
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, replay(body), send)
    return {"status": status, "headers": headers, "body": encode_body(b"".join(chunks))}


async def respond(send: Send, status: int, body: Any,
                  headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


async def answer_request(app: ASGIApp, request: dict[str, Any]) -> dict[str, Any]:
    """Another node's request, answered by this node's app as if it came here."""
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request["headers"].items()]
    headers.append((FROM_NODE.encode(), b"1"))
    scope: Scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                    "method": request["method"], "scheme": "http", "path": request["path"],
                    "raw_path": request["path"].encode(), "root_path": "",
                    "query_string": request["query"].encode("latin-1"), "headers": headers,
                    "client": ("127.0.0.1", 0), "server": ("127.0.0.1", 0)}
    return await capture(app, scope, decode_body(request["body"]))
