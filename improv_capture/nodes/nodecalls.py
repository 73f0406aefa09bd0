"""An operator's HTTP request answered by the node that owns its room, through Redis: the
request is appended to that node's command stream (bus.py), the node runs it against its own
app and pushes the answer to a reply list that the asking node waits on (BLPOP). No socket
between nodes: Redis is the only thing they share, as with LiveKit's routing.

Bounds: a request waits call_timeout_s for its answer (then 504: the node is gone or stuck);
one that a node reads after its deadline is dropped unanswered; a node runs at most
MAX_RUNNING requests at once (more wait for a slot, bounded by their deadlines); an answer
is kept ANSWER_TTL_S in Redis for a caller that is late to read it."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from improv_capture.nodes.bus import Command, RoomBus
from improv_capture.nodes.connection import RedisUnavailable, bounded, connect
from improv_capture.nodes.keys import Keys

logger = logging.getLogger(__name__)

HTTP = "http"
MAX_RUNNING = 32
ANSWER_TTL_S = 60

Request = dict[str, Any]
Answer = dict[str, Any]
Handler = Callable[[Request], Awaitable[Answer]]
#: a command that is not a request: (room_id, action)
Notice = Callable[[str, dict[str, Any]], Awaitable[None]]


class NodeDidNotAnswer(Exception):
    """The node a request was for did not answer within call_timeout_s."""


def encode_body(body: bytes) -> str:
    return base64.b64encode(body).decode("ascii")


def decode_body(text: str) -> bytes:
    return base64.b64decode(text.encode("ascii"))


class NodeCalls:
    def __init__(self, redis_url: str, node_id: str, bus: RoomBus, *, key_prefix: str,
                 timeout_s: float, call_timeout_s: float) -> None:
        self.node_id = node_id
        self._bus = bus
        self._keys = Keys(key_prefix)
        self._timeout_s = timeout_s
        self._call_timeout_s = call_timeout_s
        # BLPOP waits out the call: its socket must wait longer
        self._waiter = connect(redis_url, timeout_s, read_timeout_s=call_timeout_s + timeout_s)
        self._slots = asyncio.Semaphore(MAX_RUNNING)
        self._running: set[asyncio.Task[None]] = set()

    async def aclose(self) -> None:
        for task in list(self._running):
            task.cancel()
        await self._waiter.aclose()

    async def call(self, node_id: str, request: Request, timeout_s: float | None = None) -> Answer:
        """``request`` ({method, path, query, headers, body}) answered by node_id.
        NodeDidNotAnswer past ``timeout_s`` (at most call_timeout_s); RedisUnavailable when
        Redis is."""
        wait = min(timeout_s or self._call_timeout_s, self._call_timeout_s)
        reply_to = self._keys.reply(uuid.uuid4().hex)
        deadline = time.time() + wait
        await self._bus.send(node_id, {**request, "type": HTTP, "reply_to": reply_to,
                                       "deadline": deadline, "from": self.node_id})
        found = await bounded(self._waiter.blpop([reply_to], timeout=wait), wait + self._timeout_s)
        if not found:
            raise NodeDidNotAnswer(f"node {node_id} did not answer within {wait:g} s")
        return dict(json.loads(found[1]))

    async def serve(self, handle: Handler, others: dict[str, Notice] | None = None) -> None:
        """Answer the requests sent to this node, and hand its other commands (by type) to
        ``others``, until cancelled (bus.subscribe rides out Redis outages by itself)."""
        async for command in self._bus.subscribe(self.node_id):
            kind = command.action.get("type")
            if kind != HTTP:
                notice = (others or {}).get(str(kind))
                if notice is not None:
                    try:
                        await notice(command.room_id, command.action)
                    except Exception:
                        logger.exception("command %s for room %s failed", kind, command.room_id)
                continue
            await self._slots.acquire()
            task = asyncio.ensure_future(self._answer(command, handle))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _answer(self, command: Command, handle: Handler) -> None:
        request = command.action
        try:
            if time.time() > float(request.get("deadline", 0)):
                logger.warning("request %s %s from node %s read after its deadline: dropped",
                               request.get("method"), request.get("path"), request.get("from"))
                return
            answer = await handle(request)
            key = str(request["reply_to"])
            async with self._waiter.pipeline(transaction=True) as pipe:
                pipe.rpush(key, json.dumps(answer))
                pipe.expire(key, ANSWER_TTL_S)
                await bounded(pipe.execute(), self._timeout_s)
        except RedisUnavailable as exc:
            logger.warning("request from node %s: the answer could not be sent (%s)", request.get("from"), exc)
        except Exception:
            logger.exception("request %s %s from node %s failed", request.get("method"),
                             request.get("path"), request.get("from"))
        finally:
            self._slots.release()
