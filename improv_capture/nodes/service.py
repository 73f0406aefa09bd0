"""This node among several (IMPROV_REDIS_URL): registered in Redis with a heartbeat, its rooms'
ownership kept there, new rooms placed on the node with the most headroom, and the requests
other nodes send it answered (nodecalls.py). Without Redis there is no ``Nodes``: one node."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Collection

from improv_capture.nodes.bus import RoomBus
from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.headroom import (
    CpuSampler,
    Headroom,
    NodeInfo,
    ProcessCpuSampler,
)
from improv_capture.nodes.nodecalls import Answer, Handler, NodeCalls, Request
from improv_capture.nodes.placement import choose_node
from improv_capture.nodes.registry import NodeRegistry

logger = logging.getLogger(__name__)


class Nodes:
    def __init__(self, redis_url: str, node_id: str, public_url: str, max_rooms: int,
                 local_rooms: Callable[[], Collection[str]], *, key_prefix: str,
                 heartbeat_s: float, ttl_s: float, timeout_s: float, call_timeout_s: float,
                 cpu: str = "machine") -> None:
        self.node_id = node_id
        self._local_rooms = local_rooms
        headroom = Headroom(node_id, public_url, max_rooms,
                            cpu=ProcessCpuSampler() if cpu == "process" else CpuSampler())
        self.registry = NodeRegistry(redis_url, node_id, public_url, heartbeat_s, ttl_s, key_prefix,
                                     local_rooms=local_rooms, on_rooms_lost=self._rooms_lost,
                                     timeout_s=timeout_s, headroom=headroom)
        self.owners = self.registry.owners
        self.bus = RoomBus(redis_url, key_prefix, timeout_s=timeout_s)
        self.calls = NodeCalls(redis_url, node_id, self.bus, key_prefix=key_prefix,
                               timeout_s=timeout_s, call_timeout_s=call_timeout_s)
        self._serving: asyncio.Task[None] | None = None

    async def start(self, handle: Handler) -> None:
        """Register (or keep trying: Redis may come later), claim the rooms this node kept
        across its restart, and answer other nodes' requests with ``handle``."""
        await self.registry.start()  # its first beat claims the local rooms
        self._serving = asyncio.ensure_future(self.calls.serve(handle))

    async def stop(self) -> None:
        if self._serving is not None:
            self._serving.cancel()
            await asyncio.gather(self._serving, return_exceptions=True)
        await self.calls.aclose()
        await self.registry.stop()
        await self.bus.aclose()

    def _rooms_lost(self, rooms: list[str]) -> None:
        for room_id in rooms:
            logger.error("room %s: another node owns it in Redis; this node's copy is not served"
                         " through the other nodes", room_id)

    async def place(self) -> NodeInfo | None:
        """The live node with the most headroom for a new room (room counts from the owners in
        Redis, which every create updates at once, not from heartbeats a beat old); None when
        Redis cannot say (the room is made here and claimed by the next heartbeat).
        NoNodeAvailable (409) when every node is full."""
        try:
            nodes = await self.registry.live_nodes()
            counts = Counter((await self.owners.owners()).values())
        except RedisUnavailable as exc:
            logger.warning("nodes: placing a room here (%s)", exc)
            return None
        if not nodes:
            return None
        return choose_node([n.with_rooms(max(n.rooms, counts[n.node_id])) for n in nodes])

    async def claim(self, room_id: str) -> None:
        try:
            await self.owners.claim_room(room_id, self.node_id)
        except RedisUnavailable as exc:
            logger.warning("room %s: not claimed in Redis yet (%s); the next heartbeat will", room_id, exc)
            self.registry.claim_again()

    async def release(self, room_id: str) -> None:
        try:
            await self.owners.release_room(room_id, self.node_id)
        except RedisUnavailable as exc:
            logger.warning("room %s: not released in Redis (%s)", room_id, exc)

    async def call(self, node_id: str, request: Request) -> Answer:
        return await self.calls.call(node_id, request)
