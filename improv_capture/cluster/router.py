"""The router of a cluster (`serve --workers N`): one public address in front of N workers.

Every room lives in one worker process (its owner), which runs its signaling, relay and
recorder on its own event loop. The router owns no room: it keeps the map room -> worker,
puts a new room on the worker with the fewest rooms, and passes each room's HTTP requests,
each performer's signaling socket (routed by the room in its invite) and the console's
monitor to the owner. The catalog, files, events, webhooks and pages are served by worker 0,
the primary. Media never passes through the router: performers' peers connect to the
owner's ICE candidates. This is how LiveKit routes signaling to the node that hosts a room.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import quote

import httpx
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

from improv_capture import secrets_store
from improv_capture.api.http_guard import error_response
from improv_capture.api.messages import ProtocolError, parse_message
from improv_capture.api.upload_paths import UPLOAD_PATH
from improv_capture.close_codes import (
    CLIENT_FAULT,
    CLOSE_HELLO_TIMEOUT,
    CLOSE_LEFT,
    CLOSE_RESTART,
    CLOSE_TRY_LATER,
)
from improv_capture.cluster.workers import Worker, WorkerPool
from improv_capture.observability.merge import merge_expositions
from improv_capture.rooms.invites import InviteError, InviteSigner
from improv_capture.settings import WS_MAX_BYTES, Settings

logger = logging.getLogger(__name__)

#: Not passed on between client and worker (RFC 9110 7.6.1, plus what httpx sets itself).
HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer",
    "transfer-encoding", "upgrade", "host", "content-length",
}
ROOM_PATH = re.compile(r"/api/v1/rooms/([^/]+)(/.*)?", re.DOTALL)
REVOKE_PATH = re.compile(r"/api/v1/performers/([^/]+)/revoke", re.DOTALL)
STATUS_SUMS = ("tasks", "threads", "open_files", "rss_mb", "rooms", "performers", "recordings")


def _unavailable(worker: Worker) -> JSONResponse:
    return JSONResponse({"detail": f"worker {worker.index} is restarting; retry"},
                        status_code=503, headers={"Retry-After": "1"})


async def _http_error(request: Request, exc: Exception) -> Response:
    """A request's own fault found here (a body too large or too slow: api/http_guard.py),
    in the API's error shape."""
    assert isinstance(exc, HTTPException)
    return error_response(exc)


def _has_body(request: Request) -> bool:
    """As the HTTP guard tells (api/http_guard.py): a body it withheld has Content-Length 0."""
    length = request.headers.get("content-length")
    return length not in (None, "0") or (length is None and "transfer-encoding" in request.headers)


def _headers_out(headers: httpx.Headers) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP}


async def pipe_to_client(
    websocket: WebSocket,
    upstream: ClientConnection,
    relay: Callable[[str | bytes], Awaitable[None]] | None = None,
) -> None:
    """Worker -> client, frame by frame (or through ``relay``), then the worker's close."""
    try:
        async for message in upstream:
            if relay is not None:
                await relay(message)
            elif isinstance(message, str):
                await websocket.send_text(message)
            else:
                await websocket.send_bytes(message)
    except ConnectionClosed:
        pass  # any close but 1000 and 1001 ends the iteration with this
    # a close for the client's own fault is passed on; a worker that went away is a restart
    code = upstream.close_code
    if code is not None and (code == CLOSE_LEFT or code in CLIENT_FAULT):
        await websocket.close(code, upstream.close_reason or "")
    else:
        await websocket.close(CLOSE_RESTART, "the server restarted; reconnect")


async def pipe_from_client(
    websocket: WebSocket, route: Callable[[str | bytes], ClientConnection | None]
) -> None:
    """Client -> the worker ``route`` picks for each frame (None: handled already)."""
    while True:
        event = await websocket.receive()
        if event["type"] == "websocket.disconnect":
            return
        message = event.get("text") if event.get("text") is not None else event.get("bytes") or b""
        target = route(message)
        if target is not None:
            await target.send(message)


async def run_pipes(upstream_readers: list[Awaitable[None]], client_reader: Awaitable[None]) -> None:
    """Until either side ends; then the other side is cancelled."""
    tasks = [asyncio.ensure_future(t) for t in [*upstream_readers, client_reader]]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            exc = task.exception()
            if not isinstance(exc, (ConnectionClosed, WebSocketDisconnect, RuntimeError)):
                logger.error("socket relay failed: %r", exc)


class Router:
    def __init__(self, settings: Settings, operator_token: str, signer: InviteSigner) -> None:
        self.settings = settings
        self.signer = signer
        self.pool = WorkerPool(settings, self._worker_ready)
        self.rooms: dict[str, int] = {}  # room_id -> worker index
        self.client = httpx.AsyncClient(timeout=httpx.Timeout(None, connect=5.0))
        self._operator = {"Authorization": f"Bearer {operator_token}"}

    async def _worker_ready(self, worker: Worker) -> None:
        response = await self.client.get(f"{worker.url}/api/v1/rooms", headers=self._operator)
        response.raise_for_status()
        owned = {item["room_id"] for item in response.json()["items"]}
        for room_id in [r for r, i in self.rooms.items() if i == worker.index and r not in owned]:
            del self.rooms[room_id]
        self.rooms.update(dict.fromkeys(owned, worker.index))

    def owner(self, room_id: str) -> Worker:
        """The room's worker; an unknown room goes to the primary, which answers 404."""
        return self.pool.workers[self.rooms.get(room_id, 0)]

    def least_loaded(self) -> Worker:
        counts = [0] * len(self.pool.workers)
        for index in self.rooms.values():
            counts[index] += 1
        return min(self.pool.workers, key=lambda w: (not w.ready.is_set(), counts[w.index], w.index))

    # HTTP

    async def http(self, request: Request) -> Response:
        path = request.url.path
        if path.startswith("/internal/"):
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        method = request.method
        room = ROOM_PATH.fullmatch(path)
        upload = UPLOAD_PATH.fullmatch(path) if room else None
        if upload is not None and _has_body(request):
            return await self._upload(self.owner(upload["room_id"]), request, upload)
        body = await request.body()  # bounded, and empty unless the operator's (http_guard)
        if path.rstrip("/") == "/api/v1/rooms":
            if method == "POST":
                worker = self.least_loaded()
                response = await self._call(worker, request, body)
                if response is not None and response.status_code == 201:
                    self.rooms[response.json()["room_id"]] = worker.index
                return self._buffered(worker, response)
            if method == "GET":
                return await self._gather(request, self._merge_rooms)
        if path == "/api/v1/status" and method == "GET":
            return await self._gather(request, self._merge_status)
        if path == "/metrics" and method == "GET":
            return await self._metrics(request)
        if room:
            worker = self.owner(room.group(1))
            response = await self._call(worker, request, body)
            if method == "DELETE" and not room.group(2) and response is not None and response.status_code == 200:
                self.rooms.pop(room.group(1), None)
            return self._buffered(worker, response)
        revoke = REVOKE_PATH.fullmatch(path)
        if revoke and method == "POST":
            for worker in self.pool.workers[1:]:  # out of their rooms first, then the archive
                response = await self._call(
                    worker, request, b"", path=f"/internal/v1/performers/{revoke.group(1)}/remove-everywhere"
                )
                if response is None or response.status_code != 204:
                    return self._buffered(worker, response)
        return await self._stream(self.pool.primary, request, body)

    async def _upload(self, worker: Worker, request: Request, upload: re.Match[str]) -> Response:
        """A performer's upload with its body (admitted by the guard: their own invite on their
        own path). The owner's checks come first, without the body, as in a lone server; then
        the body goes through as it arrives, never held whole here: the owner bounds how many
        bodies it reads at once."""
        ids = (quote(upload[k], safe="") for k in ("room_id", "session_id", "performer_id"))
        admission = "/internal/v1/rooms/{}/sessions/{}/performers/{}/hq".format(*ids)
        authorization = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        try:
            checked = await self.client.get(worker.url + admission, headers=authorization)
        except httpx.TransportError:
            return _unavailable(worker)
        if checked.status_code != 204:
            return self._buffered(worker, checked)
        headers = self._upstream_headers(request)
        if "content-length" in request.headers:  # the owner's guard bounds it before reading
            headers["content-length"] = request.headers["content-length"]
        try:
            response = await self._call(worker, request, request.stream(), headers)
        except ClientDisconnect:
            return Response(status_code=400)  # nobody left to answer
        return self._buffered(worker, response)

    def _upstream_headers(self, request: Request) -> dict[str, str]:
        return {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}

    @staticmethod
    def _target(worker: Worker, request: Request) -> str:
        """The worker's URL for ``request``, its path as the client sent it (still encoded)."""
        raw = request.scope.get("raw_path") or request.url.path.encode()
        query = request.scope.get("query_string") or b""
        return worker.url + raw.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")

    async def _call(
        self, worker: Worker, request: Request, body: bytes | AsyncIterator[bytes],
        headers: dict[str, str] | None = None, path: str | None = None,
    ) -> httpx.Response | None:
        """A request to one worker, its answer read whole; None when the worker is not there."""
        try:
            return await self.client.request(
                request.method, worker.url + path if path else self._target(worker, request),
                headers=headers or self._upstream_headers(request), content=body,
            )
        except httpx.TransportError:
            return None

    def _buffered(self, worker: Worker, response: httpx.Response | None) -> Response:
        if response is None:
            return _unavailable(worker)
        return Response(response.content, status_code=response.status_code,
                        headers=_headers_out(response.headers))

    async def _stream(self, worker: Worker, request: Request, body: bytes) -> Response:
        """Pass a response through as it comes: files with Range, Server-Sent Events."""
        upstream = self.client.build_request(
            request.method, self._target(worker, request),
            headers=self._upstream_headers(request), content=body,
        )
        try:
            response = await self.client.send(upstream, stream=True)
        except httpx.TransportError:
            return _unavailable(worker)
        headers = _headers_out(response.headers)
        if "content-length" in response.headers and "content-encoding" not in response.headers:
            headers["content-length"] = response.headers["content-length"]
        return StreamingResponse(response.aiter_raw(), status_code=response.status_code,
                                 headers=headers, background=BackgroundTask(response.aclose))

    async def _gather(
        self, request: Request, merge: Callable[[list[dict[str, Any]]], dict[str, Any]]
    ) -> Response:
        """Ask every worker; the first refusal (a bad token) is the answer, else the merge."""
        responses = await asyncio.gather(*(self._call(w, request, b"") for w in self.pool.workers))
        for worker, response in zip(self.pool.workers, responses):
            if response is None or response.status_code != 200:
                return self._buffered(worker, response)
        return JSONResponse(merge([r.json() for r in responses if r is not None]))

    async def _metrics(self, request: Request) -> Response:
        """Every worker's /metrics in one, each sample labelled with its worker
        (observability/merge.py), in the text format. The first refusal (no token or a wrong
        one) is the answer; a worker that is restarting is left out of this scrape."""
        headers = {k: v for k, v in request.headers.items() if k.lower() == "authorization"}
        headers["accept"] = "text/plain"
        responses = await asyncio.gather(
            *(self._call(w, request, b"", headers=headers) for w in self.pool.workers))
        parts = []
        for worker, response in zip(self.pool.workers, responses):
            if response is None:
                continue
            if response.status_code != 200:
                return self._buffered(worker, response)
            parts.append((str(worker.index), response.text))
        if not parts:
            return _unavailable(self.pool.primary)
        return Response(merge_expositions(parts), media_type=CONTENT_TYPE_LATEST)

    @staticmethod
    def _merge_rooms(parts: list[dict[str, Any]]) -> dict[str, Any]:
        items = [item for part in parts for item in part["items"]]
        return {"items": sorted(items, key=lambda r: (r["created_at"], r["room_id"]))}

    def _merge_status(self, parts: list[dict[str, Any]]) -> dict[str, Any]:
        total: dict[str, Any] = {k: sum(p.get(k) or 0 for p in parts) for k in STATUS_SUMS}
        total["rss_mb"] = round(total["rss_mb"], 1)
        total["workers"] = [
            {"index": w.index, "restarts": w.restarts, **part}
            for w, part in zip(self.pool.workers, parts)
        ]
        return total

    # WebSockets

    async def signal(self, websocket: WebSocket) -> None:
        """A performer's socket goes to the worker that owns the room of its invite."""
        await websocket.accept()
        first = await self._first_message(websocket)
        if first is None:
            return
        worker = self.pool.primary  # a bad invite gets the primary's refusal, as from one server
        try:
            frame = first.get("text") if first.get("text") is not None else first.get("bytes")
            hello = self._parse(frame)
            invite = self.signer.verify(hello.get("token"))
            worker = self.owner(invite.room_id)
        except (InviteError, ValueError, AttributeError, ProtocolError):
            pass  # the primary parses it again and closes with the same code as a lone server
        upstream = await self._connect(websocket, worker, "/api/v1/signal", first)
        if upstream is None:
            return
        async with upstream:
            await run_pipes([pipe_to_client(websocket, upstream)],
                            pipe_from_client(websocket, lambda _: upstream))

    async def operator(self, websocket: WebSocket) -> None:
        """A console sees every worker's rooms and stats, and watches a room on its owner."""
        await websocket.accept()
        first = await self._first_message(websocket)
        if first is None:
            return
        upstreams: list[ClientConnection] = []
        try:
            for worker in self.pool.workers:
                upstream = await self._connect(websocket, worker, "/api/v1/operator", first)
                if upstream is None:
                    return
                upstreams.append(upstream)
            await ConsoleMux(self, websocket, upstreams).run()
        finally:
            for upstream in upstreams:
                await upstream.close()

    def _parse(self, frame: str | bytes | None) -> dict[str, Any]:
        """A client's frame as the workers parse it (api/messages.py)."""
        s = self.settings
        return parse_message(frame, s.max_message_bytes, s.max_message_depth)

    async def _first_message(self, websocket: WebSocket) -> dict[str, Any] | None:
        try:
            event = await asyncio.wait_for(websocket.receive(), self.settings.hello_timeout_s)
        except TimeoutError:
            await websocket.close(CLOSE_HELLO_TIMEOUT, "no hello received")
            return None
        return None if event["type"] == "websocket.disconnect" else event

    async def _connect(
        self, websocket: WebSocket, worker: Worker, path: str, first: dict[str, Any]
    ) -> ClientConnection | None:
        try:
            upstream = await connect(worker.ws_url + path, max_size=WS_MAX_BYTES, open_timeout=5)
            await upstream.send(first["text"] if first.get("text") is not None else first.get("bytes") or b"")
            return upstream
        except (OSError, InvalidHandshake, TimeoutError, ConnectionClosed):
            await websocket.close(CLOSE_TRY_LATER, f"worker {worker.index} is restarting; retry")
            return None


class ConsoleMux:
    """One console socket over one operator socket per worker (docs/console-protocol.md):
    `rooms` are merged, `stats` pass through, a `watch` and its answers go to the owner."""

    def __init__(self, router: Router, websocket: WebSocket, upstreams: list[ClientConnection]) -> None:
        self.router = router
        self.ws = websocket
        self.upstreams = upstreams
        self.rooms: dict[int, list[dict[str, Any]]] = {}
        self.welcomed = False
        self.watched: int | None = None
        self._sending = asyncio.Lock()  # one reader per worker, and pongs: one send at a time

    async def _send(self, text: str | bytes) -> None:
        async with self._sending:
            await self.ws.send_text(text if isinstance(text, str) else text.decode())

    async def run(self) -> None:
        readers = [
            pipe_to_client(self.ws, upstream, self._relay(index))
            for index, upstream in enumerate(self.upstreams)
        ]
        await run_pipes(readers, pipe_from_client(self.ws, self._route))

    def _relay(self, index: int) -> Callable[[str | bytes], Awaitable[None]]:
        async def relay(text: str | bytes) -> None:
            message = json.loads(text)
            kind = message.get("type")
            if kind == "welcome":
                if index == 0:
                    await self._send(text)
                    self.welcomed = True
                    await self._send_rooms()
            elif kind == "rooms":
                self.rooms[index] = message.get("rooms", [])
                await self._send_rooms()
            elif kind != "pong" or index == 0:
                await self._send(text)

        return relay

    async def _send_rooms(self) -> None:
        if self.welcomed and len(self.rooms) == len(self.upstreams):
            merged = Router._merge_rooms([{"items": r} for r in self.rooms.values()])["items"]
            await self._send(json.dumps({"type": "rooms", "rooms": merged}))

    def _route(self, text: str | bytes) -> ClientConnection | None:
        try:
            message = self.router._parse(text)
            kind = message["type"]
        except ProtocolError:
            return self.upstreams[0]  # the primary closes with the error a lone server gives
        if kind == "ping":  # the primary answers, within its message budget for this socket
            return self.upstreams[0]
        if kind == "watch" and isinstance(message.get("room_id"), str):
            owner = self.router.rooms.get(message["room_id"], 0)
            if self.watched is not None and self.watched != owner:
                asyncio.ensure_future(self.upstreams[self.watched].send(json.dumps({"type": "unwatch"})))
            self.watched = owner
            return self.upstreams[owner]
        if kind in ("unwatch", "subscribe_answer") and self.watched is not None:
            target = self.upstreams[self.watched]
            if kind == "unwatch":
                self.watched = None
            return target
        return self.upstreams[0]


def create_router_app(settings: Settings) -> Starlette:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    operator_token = secrets_store.operator_token(settings)
    router = Router(settings, operator_token, InviteSigner(secrets_store.invite_key(settings)))

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await router.pool.start()
        try:
            yield
        finally:
            await router.pool.stop()
            await router.client.aclose()

    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    app = Starlette(
        routes=[
            WebSocketRoute("/api/v1/signal", router.signal),
            WebSocketRoute("/api/v1/operator", router.operator),
            Route("/{path:path}", router.http, methods=methods),
        ],
        lifespan=lifespan,
        exception_handlers={HTTPException: _http_error},
    )
    app.state.operator_token = operator_token
    app.state.signer = router.signer
    app.state.router = router
    return app
