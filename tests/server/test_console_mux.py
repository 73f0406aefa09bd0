"""The cluster router's console multiplexer (ConsoleMux, improv_capture/cluster/router.py) in
one process: the console's socket is a real starlette WebSocket fed ASGI messages in memory,
and each worker's operator socket is a real websockets connection to a small server on a Unix
socket in the test's directory. What reaches which end is what the console protocol promises:
one welcome, the rooms of every worker as one list, stats passed on, a watch and its answers on
the room's owner, everything else on the primary. With real workers: tests/server/test_cluster.py."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from starlette.websockets import WebSocket
from websockets.asyncio.client import ClientConnection, unix_connect
from websockets.asyncio.server import Server, ServerConnection, unix_serve

from improv_capture.close_codes import CLOSE_RESTART
from improv_capture.cluster.router import ConsoleMux, Router
from improv_capture.rooms.invites import InviteSigner
from improv_capture.settings import Settings
from tests.helpers import wait_for_async

pytestmark = pytest.mark.unit


class WorkerEnd:
    """A worker's end of one operator socket: what it received, and what it sends."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any] | str] = []
        self.connection: ServerConnection | None = None
        self.server: Server | None = None

    async def handle(self, connection: ServerConnection) -> None:
        self.connection = connection
        async for message in connection:
            try:
                self.received.append(dict(json.loads(message)))
            except ValueError:
                self.received.append(str(message))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.connection is not None
        await self.connection.send(json.dumps(message))


class ConsoleEnd:
    """The console's end of the router's starlette WebSocket, as ASGI messages in memory."""

    def __init__(self) -> None:
        self.to_router: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.from_router: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        scope = {"type": "websocket", "path": "/api/v1/operator", "headers": [],
                 "query_string": b"", "subprotocols": []}
        self.websocket = WebSocket(scope, self.to_router.get, self.from_router.put)

    async def accept(self) -> None:
        await self.to_router.put({"type": "websocket.connect"})
        await self.websocket.accept()
        assert (await self.from_router.get())["type"] == "websocket.accept"

    async def send(self, message: dict[str, Any] | str) -> None:
        text = message if isinstance(message, str) else json.dumps(message)
        await self.to_router.put({"type": "websocket.receive", "text": text})

    async def next(self) -> dict[str, Any]:
        """The next thing the router sends the console: a message, or its close."""
        event = await asyncio.wait_for(self.from_router.get(), 5)
        if event["type"] == "websocket.close":
            return {"closed": event["code"], "reason": event.get("reason", "")}
        assert event["type"] == "websocket.send", event
        return dict(json.loads(event["text"]))

    async def leave(self) -> None:
        await self.to_router.put({"type": "websocket.disconnect", "code": 1000})


@dataclass
class Multiplexed:
    router: Router
    console: ConsoleEnd
    workers: list[WorkerEnd]
    upstreams: list[ClientConnection] = field(default_factory=list)

    async def settled(self, *expected: list[Any]) -> None:
        """Wait until each worker has received as many messages as ``expected`` lists; then
        they must be exactly those."""
        await wait_for_async(
            lambda: all(len(w.received) >= len(e) for w, e in zip(self.workers, expected)),
            5, "the workers to receive the console's messages", every=0.01,
        )
        assert [w.received for w in self.workers] == list(expected)


@pytest.fixture
async def mux(tmp_path: Path) -> AsyncIterator[Multiplexed]:
    """A router of two workers whose console socket is multiplexed by a running ConsoleMux."""
    router = Router(Settings(data_dir=tmp_path / "data", workers=2), "operator token",
                    InviteSigner("invite key"))
    workers = [WorkerEnd(), WorkerEnd()]
    console = ConsoleEnd()
    multiplexed = Multiplexed(router, console, workers)
    run: asyncio.Task[None] | None = None
    try:
        for index, worker in enumerate(workers):
            path = str(tmp_path / f"worker{index}.sock")
            worker.server = await unix_serve(worker.handle, path)
            multiplexed.upstreams.append(await unix_connect(path))
        await wait_for_async(lambda: all(w.connection for w in workers), 5, "both upstreams",
                             every=0.01)
        await console.accept()
        run = asyncio.ensure_future(ConsoleMux(router, console.websocket, multiplexed.upstreams).run())
        yield multiplexed
    finally:
        if run is not None:
            await console.leave()
            await asyncio.wait_for(run, 5)
        for upstream in multiplexed.upstreams:
            await upstream.close()
        for worker in workers:
            if worker.server is not None:
                worker.server.close()
                await worker.server.wait_closed()
        await router.client.aclose()


def room(room_id: str, created_at: str) -> dict[str, Any]:
    return {"room_id": room_id, "created_at": created_at, "performers": []}


async def test_one_welcome_and_the_rooms_of_every_worker_as_one_list(mux: Multiplexed) -> None:
    primary, other = mux.workers
    console = mux.console
    await other.send({"type": "welcome", "worker": 1})  # only the primary's welcome goes on
    await primary.send({"type": "welcome", "worker": 0})
    assert await console.next() == {"type": "welcome", "worker": 0}
    late = room("room_b", "2024-05-01T10:00:02.000000Z")
    early = room("room_a", "2024-05-01T10:00:01.000000Z")
    await primary.send({"type": "rooms", "rooms": [late]})  # not on its own: worker 1 is unheard
    await other.send({"type": "rooms", "rooms": [early]})
    assert await console.next() == {"type": "rooms", "rooms": [early, late]}  # by creation
    await other.send({"type": "rooms", "rooms": []})  # room_a closed on worker 1
    assert await console.next() == {"type": "rooms", "rooms": [late]}

    await other.send({"type": "stats", "room_id": "room_a", "performers": {}})
    assert await console.next() == {"type": "stats", "room_id": "room_a", "performers": {}}
    await other.send({"type": "pong"})  # the console pings once, the primary answers
    await primary.send({"type": "pong"})
    assert await console.next() == {"type": "pong"}
    await other.send({"type": "subscribe_offer", "room_id": "room_a", "sdp": "v=0"})
    assert (await console.next())["type"] == "subscribe_offer"


async def test_no_rooms_before_the_welcome(mux: Multiplexed) -> None:
    primary, other = mux.workers
    await primary.send({"type": "rooms", "rooms": []})
    await other.send({"type": "rooms", "rooms": []})
    await primary.send({"type": "stats", "room_id": "room_a", "performers": {}})
    assert (await mux.console.next())["type"] == "stats"  # no rooms went out before it
    await primary.send({"type": "welcome"})
    assert await mux.console.next() == {"type": "welcome"}
    assert await mux.console.next() == {"type": "rooms", "rooms": []}  # held until now


async def test_a_watch_and_its_answers_go_to_the_rooms_owner(mux: Multiplexed) -> None:
    mux.router.rooms.update({"room_a": 0, "room_b": 1})
    console = mux.console
    watch_b = {"type": "watch", "room_id": "room_b"}
    answer = {"type": "subscribe_answer", "sdp": "v=0"}
    await console.send(watch_b)
    await console.send(answer)
    await console.send({"type": "ping"})  # the primary answers pings
    await console.send({"type": "marker", "room_id": "room_b"})  # anything else: the primary
    await mux.settled([{"type": "ping"}, {"type": "marker", "room_id": "room_b"}],
                      [watch_b, answer])

    watch_a = {"type": "watch", "room_id": "room_a"}
    await console.send(watch_a)  # another owner: worker 1 is told to stop
    await console.send(answer)
    await console.send({"type": "unwatch"})
    await console.send(answer)  # nothing watched: the primary
    await mux.settled(
        [{"type": "ping"}, {"type": "marker", "room_id": "room_b"}, watch_a, answer,
         {"type": "unwatch"}, answer],
        [watch_b, answer, {"type": "unwatch"}],
    )


async def test_unknown_rooms_and_bad_frames_go_to_the_primary(mux: Multiplexed) -> None:
    mux.router.rooms.update({"room_b": 1})
    console = mux.console
    await console.send({"type": "watch", "room_id": "room_gone"})
    await console.send({"type": "watch", "room_id": ["room_b"]})  # not a room id
    await console.send("{not json")  # the primary closes with the error a lone server gives
    await mux.settled(
        [{"type": "watch", "room_id": "room_gone"}, {"type": "watch", "room_id": ["room_b"]},
         "{not json"],
        [],
    )


async def test_a_workers_close_reaches_the_console(mux: Multiplexed) -> None:
    """A close for the console's own fault is passed on as the worker gave it."""
    primary, other = mux.workers
    assert primary.connection is not None
    await primary.connection.close(4400, "malformed message")
    assert await mux.console.next() == {"closed": 4400, "reason": "malformed message"}


async def test_a_worker_going_away_tells_the_console_to_reconnect(mux: Multiplexed) -> None:
    other = mux.workers[1]
    assert other.connection is not None
    await other.connection.close(1001, "going away")
    closed = await mux.console.next()
    assert closed["closed"] == CLOSE_RESTART and "reconnect" in closed["reason"]
