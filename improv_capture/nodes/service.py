"""This node among several (IMPROV_REDIS_URL): registered in Redis with a heartbeat, its rooms'
ownership kept there, new rooms placed on the node with the most headroom, and the requests
other nodes send it answered (nodecalls.py). Without Redis there is no ``Nodes``: one node.

Rooms outlive their node: each room's definition is kept in Redis by its owner (every change
of the rooms store); once a node's heartbeat has expired, the live nodes move its rooms to the
ones with the most headroom (placement.reassign_orphans, one compare-and-set per room, at every
beat of every settled node) and the new owner takes each in from its copy. A node that comes
back finds its rooms taken and drops them.

Consoles list every node's rooms: a node whose rooms change tells the other live nodes
(``ROOMS_CHANGED`` on their command streams, at most once per NEWS_EVERY_S), and theirs ask
again."""

from __future__ import annotations

import asyncio
import json
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Collection
from contextlib import AbstractAsyncContextManager
from typing import Any

from improv_capture.background import Background
from improv_capture.nodes.bus import ROOM_ASSIGNED, RoomBus
from improv_capture.nodes.connection import RedisUnavailable, bounded, connect
from improv_capture.nodes.headroom import (
    CpuSampler,
    Headroom,
    NodeInfo,
    ProcessCpuSampler,
)
from improv_capture.nodes.keys import Keys
from improv_capture.nodes.nodecalls import Answer, Handler, NodeCalls, Request
from improv_capture.nodes.placement import choose_node
from improv_capture.nodes.registry import NodeRegistry

logger = logging.getLogger(__name__)

#: the notice a node's rooms changed (what its consoles list of them is stale)
ROOMS_CHANGED = "node.rooms_changed"
#: changes within this are told in one notice
NEWS_EVERY_S = 0.5
#: the notice that a session another node went on with is recovered here
PART_RECOVERED = "node.part_recovered"


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
        self._watching: asyncio.Task[None] | None = None
        self._redis = connect(redis_url, timeout_s)
        self._keys = Keys(key_prefix)
        self._timeout_s = timeout_s
        self._call_timeout_s = call_timeout_s
        self._heartbeat_s = heartbeat_s
        #: a room moved here: take it in from its copy in Redis and the dead owner's id (set
        #: by the app)
        self.adopt: Callable[[dict[str, Any], str | None], Awaitable[None]] | None = None
        #: rooms of this node that another node took over meanwhile (set by the app)
        self.drop: Callable[[str], Awaitable[None]] | None = None
        #: another node's rooms changed (set by the app: its consoles list them again)
        self.heard_rooms_changed: Callable[[], None] | None = None
        self._news_pending = False
        #: a recording that went on here can get its earlier part (set by the app)
        self.part_recovered: Callable[[dict[str, Any]], None] | None = None
        self.public_url = public_url
        self._other_urls: tuple[str, ...] = ()
        self._background = Background()

    async def start(self, handle: Handler) -> None:
        """Register (or keep trying: Redis may come later), claim the rooms this node kept
        across its restart, and answer other nodes' requests with ``handle``."""
        await self.registry.start()  # its first beat claims the local rooms
        self._serving = asyncio.ensure_future(self.calls.serve(
            handle, {ROOM_ASSIGNED: self._assigned, ROOMS_CHANGED: self._heard,
                     PART_RECOVERED: self._part_recovered}))
        self._watching = asyncio.ensure_future(self._watch_orphans())

    async def stop(self) -> None:
        for task in (self._serving, self._watching):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        await self._background.cancel()
        await self.calls.aclose()
        await self.registry.stop()
        await self.bus.aclose()
        await self._redis.aclose()

    def _rooms_lost(self, rooms: list[str]) -> None:
        """Rooms this node held that another took over while it was away: dropped here."""
        for room_id in rooms:
            logger.warning("room %s: taken over by another node while this one was away; dropped here",
                           room_id)
            if self.drop is not None:
                self._background.spawn(self.drop(room_id))

    async def save(self, room_id: str, snapshot: dict[str, Any] | None) -> None:
        """Keep the room's definition in Redis (None: deleted), for a node that takes it over.
        Redis away: kept at the next change (the heartbeat claims the room meanwhile)."""
        try:
            if snapshot is None:
                await bounded(self._redis.delete(self._keys.room(room_id)), self._timeout_s)
            else:
                await bounded(self._redis.set(self._keys.room(room_id), json.dumps(snapshot)),
                              self._timeout_s)
        except RedisUnavailable as exc:
            logger.warning("room %s: its copy in Redis not kept (%s)", room_id, exc)

    def save_soon(self, room_id: str, snapshot: dict[str, Any]) -> None:
        """:meth:`save` from code that cannot wait for it (a change heard synchronously)."""
        self._background.spawn(self.save(room_id, snapshot))

    async def save_owned(self, snapshots: dict[str, dict[str, Any]]) -> None:
        """At start: the copies of the rooms this node still owns (a room taken over while it
        was away is the new owner's to keep)."""
        for room_id, snapshot in snapshots.items():
            try:
                owner = await self.owners.owner_of(room_id)
            except RedisUnavailable:
                return
            if owner == self.node_id:
                await self.save(room_id, snapshot)

    def rooms_changed(self) -> None:
        """This node's rooms changed: the other live nodes hear of it within NEWS_EVERY_S."""
        if not self._news_pending:
            self._news_pending = True
            self._background.spawn(self._tell_rooms_changed())

    async def _tell_rooms_changed(self) -> None:
        await asyncio.sleep(NEWS_EVERY_S)
        self._news_pending = False
        try:
            for node in await self.registry.live_nodes():
                if node.node_id != self.node_id:
                    await self.bus.send(node.node_id, {"type": ROOMS_CHANGED})
        except RedisUnavailable as exc:
            # their consoles are behind until the next change (or their next refresh)
            logger.warning("nodes: the change of this node's rooms not told (%s)", exc)

    async def _heard(self, room_id: str, action: dict[str, Any]) -> None:
        if self.heard_rooms_changed is not None:
            self.heard_rooms_changed()

    async def note_continued(self, earlier: str, session_id: str, wait_s: float) -> None:
        """A recording of a node that died goes on here as ``session_id``: kept in Redis for
        ``wait_s``, so that node, back, says when ``earlier`` is recovered."""
        record = json.dumps({"session_id": session_id, "node_id": self.node_id})
        try:
            await bounded(self._redis.set(self._keys.continued(earlier), record,
                                          px=max(int(wait_s * 1000), 1)), self._timeout_s)
        except RedisUnavailable as exc:
            logger.error("session %s: its earlier part %s will not be joined (Redis: %s)",
                         session_id, earlier, exc)

    async def tell_parts_recovered(self, sessions: Collection[str]) -> None:
        """Sessions recovered here at start: a node that went on with one of them hears it."""
        for earlier in sessions:
            try:
                found = await bounded(self._redis.get(self._keys.continued(earlier)), self._timeout_s)
                if found is None:
                    continue
                went_on = json.loads(found)
                if went_on["node_id"] != self.node_id:
                    await self.bus.send(went_on["node_id"], {
                        "type": PART_RECOVERED, "session_id": earlier,
                        "continued_by": went_on["session_id"], "url": self.public_url})
            except (RedisUnavailable, ValueError, KeyError, TypeError) as exc:
                # its part stays a session of its own here (and the start goes on)
                logger.error("session %s: the node that went on with it not told (%s)",
                             earlier, exc)

    async def _part_recovered(self, room_id: str, action: dict[str, Any]) -> None:
        if self.part_recovered is not None:
            self.part_recovered(action)

    def other_urls(self) -> tuple[str, ...]:
        """The other live nodes' public URLs, as of the last beat (the pages' policy lets
        their sockets go there: api/http_guard.py)."""
        return self._other_urls

    async def _watch_orphans(self) -> None:
        """At every beat: the other live nodes noted; once settled, the rooms of nodes whose
        heartbeat expired go to live nodes (every node runs this; each move is taken by one)."""
        while True:
            await asyncio.sleep(self._heartbeat_s)
            try:
                live = await self.registry.live_nodes()
                self._other_urls = tuple(sorted(n.public_url for n in live if n.node_id != self.node_id))
                if self.registry.settled:
                    await self.owners.reassign_orphans(live)
            except RedisUnavailable:
                continue  # the last known nodes stay
            except Exception:
                logger.exception("nodes: reassigning the rooms of dead nodes failed")

    async def _assigned(self, room_id: str, action: dict[str, Any]) -> None:
        """A room moved here from a dead node: taken in from its copy in Redis."""
        found = await bounded(self._redis.get(self._keys.room(room_id)), self._timeout_s)
        if found is None:
            logger.error("room %s moved here from %s without its copy in Redis: not served",
                         room_id, action.get("previous_owner"))
            return
        if self.adopt is not None:
            await self.adopt(json.loads(found), action.get("previous_owner"))
        logger.warning("room %s taken over from dead node %s", room_id, action.get("previous_owner"))

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

    def placing(self) -> AbstractAsyncContextManager[bool]:
        """Held by a create while its room is placed and claimed, on whichever node: one
        placement at a time across the nodes (placement.RoomOwners.placing). Its lease
        outlasts a create answered by another node; a create waits as long for it."""
        return self.owners.placing(lease_s=self._call_timeout_s + self._timeout_s,
                                   wait_s=self._call_timeout_s)

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

    async def url_of(self, node_id: str) -> str | None:
        """The public URL of a live node (None: its heartbeat expired)."""
        info = await self.registry.node(node_id)
        return info.public_url if info is not None else None

    async def where(self, room_id: str) -> tuple[str, str | None] | None:
        """For a room this node does not hold: (owner, its public URL, None while the owner is
        dead and the room not yet moved), or None when no node owns it.
        RedisUnavailable when Redis cannot say."""
        owner = await self.owners.owner_of(room_id)
        if owner is None or owner == self.node_id:
            return None
        return owner, await self.url_of(owner)

    async def live_urls(self) -> list[str]:
        """Every live node's public URL (what a performer's page tries when its node is gone);
        [] when Redis cannot say."""
        try:
            return [n.public_url for n in await self.registry.live_nodes()]
        except RedisUnavailable:
            return []

    async def is_live(self, node_id: str) -> bool:
        """Whether node_id's heartbeat has not expired (RedisUnavailable when Redis cannot say)."""
        return await self.registry.node(node_id) is not None

    async def call(self, node_id: str, request: Request, timeout_s: float | None = None) -> Answer:
        return await self.calls.call(node_id, request, timeout_s)
