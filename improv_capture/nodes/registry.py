"""This node in the list of live nodes: a heartbeat that writes its headroom with a TTL.

Every heartbeat_s the node writes its NodeInfo (headroom.py) as JSON to ``{prefix}node:{id}``
with SET ... PX ttl_s; a node whose heartbeats stop (crash, hang, network cut) drops out of
`live_nodes()` when the key expires, at most ttl_s after its last beat. ttl_s must be longer
than heartbeat_s; three heartbeats or more ride out a slow beat or two.

The heartbeat never gives up: when Redis cannot be reached it logs once, retries with a backoff
that doubles from heartbeat_s up to max_backoff_s (default ttl_s), and logs once when Redis is
back. Since every beat is a plain SET, the node is registered again by the first beat that gets
through, also after Redis restarted empty. When the beat finds its key gone (Redis restarted
without persistence, or the node stalled past its TTL) it also claims again the rooms it hosts
(local_rooms); those another node took meanwhile are handed to on_rooms_lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection

from improv_capture.nodes.connection import (
    DEFAULT_TIMEOUT_S,
    RedisUnavailable,
    bounded,
    connect,
)
from improv_capture.nodes.headroom import Headroom, NodeInfo
from improv_capture.nodes.keys import DEFAULT_PREFIX, Keys, check_node_id
from improv_capture.nodes.placement import RoomOwners

logger = logging.getLogger(__name__)

DEFAULT_HEARTBEAT_S = 2.0
DEFAULT_TTL_S = 10.0
#: Node keys one SCAN step asks for.
SCAN_COUNT = 200


def _no_rooms() -> Collection[str]:
    return ()


class NodeRegistry:
    """Registers this node in Redis and keeps it registered; lists the live nodes."""

    def __init__(self, redis_url: str, node_id: str, public_url: str,
                 heartbeat_s: float = DEFAULT_HEARTBEAT_S, ttl_s: float = DEFAULT_TTL_S,
                 key_prefix: str = DEFAULT_PREFIX, *,
                 max_rooms: int = 100,
                 local_rooms: Callable[[], Collection[str]] = _no_rooms,
                 on_rooms_lost: Callable[[list[str]], None] | None = None,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_backoff_s: float | None = None,
                 headroom: Headroom | None = None) -> None:
        """local_rooms: the ids of the rooms this node hosts now (its count is the headroom's
        room count; called on the event loop at every beat, so it must be cheap).
        timeout_s bounds every Redis call; max_backoff_s the wait between beats while Redis is
        unreachable (default ttl_s). headroom, when given, replaces public_url and max_rooms
        (tests give it a fixed CPU load)."""
        if heartbeat_s <= 0 or timeout_s <= 0:
            raise ValueError("heartbeat_s and timeout_s must be positive")
        if ttl_s <= heartbeat_s:
            raise ValueError(f"ttl_s ({ttl_s}) must be longer than heartbeat_s ({heartbeat_s})")
        self.node_id = check_node_id(node_id)
        self.heartbeat_s = heartbeat_s
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max(max_backoff_s if max_backoff_s is not None else ttl_s,
                                 heartbeat_s)
        self.keys = Keys(key_prefix)
        self.headroom = headroom or Headroom(node_id, public_url, max_rooms)
        if self.headroom.node_id != node_id:
            raise ValueError("headroom is another node's")
        self._local_rooms = local_rooms
        self._on_rooms_lost = on_rooms_lost
        self._redis = connect(redis_url, timeout_s)
        self.owners = RoomOwners(self._redis, key_prefix, timeout_s=timeout_s)
        self._task: asyncio.Task[None] | None = None
        self._lost = False
        self._reassert = False
        self._stopped = False
        self._registered_at: float | None = None
        #: What the last successful beat wrote (None before the first).
        self.info: NodeInfo | None = None

    @property
    def registered(self) -> bool:
        """True while the last beat reached Redis."""
        return self.info is not None and not self._lost

    @property
    def registered_for_s(self) -> float:
        """Seconds since this node last got through to Redis after not being registered (its
        first beat, or the end of an outage); 0 while not registered.

        Right after an outage the other nodes may not have beaten again yet and look dead:
        see `settled`.
        """
        if not self.registered or self._registered_at is None:
            return 0.0
        return time.monotonic() - self._registered_at

    @property
    def settled(self) -> bool:
        """True once every node that is alive has had time to beat since this one got through
        (max_backoff_s + timeout_s): only then may this node run reassign_orphans, or the first
        node back from an outage would take every other node's rooms."""
        return self.registered_for_s >= self.max_backoff_s + self.timeout_s

    async def start(self) -> bool:
        """Beats once and starts the heartbeat task; True if that first beat registered.

        A False is not fatal: the task keeps trying (Redis may come up later).
        """
        if self._task is not None or self._stopped:
            raise RuntimeError("a registry starts once")
        ok = await self._beat_logged()
        self._task = asyncio.create_task(self._run(ok), name=f"node-heartbeat-{self.node_id}")
        return ok

    async def stop(self, deregister: bool = True) -> None:
        """Stops the heartbeat; with deregister, also removes the node's key so that it drops
        out of live_nodes() at once (its rooms are then orphans: hand them over first).
        Later calls do nothing."""
        if self._stopped:
            return
        self._stopped = True
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if deregister:
            try:
                await bounded(self._redis.delete(self.keys.node(self.node_id)), self.timeout_s)
            except RedisUnavailable as e:
                logger.warning("node %s: could not deregister (%s); its key expires within "
                               "%.1f s", self.node_id, e, self.ttl_s)
        await self._redis.aclose()

    def claim_again(self) -> None:
        """Claim every local room again at the next beat (a room made while Redis was away)."""
        self._reassert = True

    async def node(self, node_id: str) -> NodeInfo | None:
        """One node's heartbeat, None once it expired (RedisUnavailable when Redis cannot say)."""
        found = await bounded(self._redis.get(self.keys.node(node_id)), self.timeout_s)
        return NodeInfo.from_json(str(found)) if found is not None else None

    async def live_nodes(self) -> list[NodeInfo]:
        """The nodes whose heartbeat key has not expired, sorted by node_id.

        Raises RedisUnavailable. Keys that do not parse are skipped with a warning.
        """
        return await bounded(self._live_nodes(), self.timeout_s)

    async def _live_nodes(self) -> list[NodeInfo]:
        keys = [str(k) async for k in self._redis.scan_iter(
            match=self.keys.node_pattern(), count=SCAN_COUNT)]
        if not keys:
            return []
        nodes = []
        for key, value in zip(keys, await self._redis.mget(keys), strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            try:
                nodes.append(NodeInfo.from_json(str(value)))
            except ValueError as e:
                logger.warning("node key %s skipped: %s", key, e)
        return sorted(nodes, key=lambda n: n.node_id)

    async def _run(self, ok: bool) -> None:
        delay = self.heartbeat_s
        took = 0.0
        while True:
            if ok:  # the next beat one heartbeat after the last one started
                delay = self.heartbeat_s
                wait = max(self.heartbeat_s - took, 0.0)
            else:  # backing off: heartbeat_s, twice that, ... up to max_backoff_s
                wait, delay = delay, min(delay * 2, self.max_backoff_s)
            await asyncio.sleep(wait)
            started = time.monotonic()
            ok = await self._beat_logged()
            took = time.monotonic() - started

    async def _beat_logged(self) -> bool:
        """One beat; logs the first failure and the recovery, never raises (but cancellation)."""
        try:
            await self._beat()
        except RedisUnavailable as e:
            if not self._lost:
                logger.warning("node %s: redis lost (%s); retrying every %.1f s at most",
                               self.node_id, e, self.max_backoff_s)
                self._lost = True
            return False
        except Exception:
            if not self._lost:
                logger.exception("node %s: heartbeat failed; retrying", self.node_id)
                self._lost = True
            return False
        if self._lost:
            logger.info("node %s: redis is back, registered again", self.node_id)
            self._lost = False
            self._registered_at = time.monotonic()
        elif self._registered_at is None:
            self._registered_at = time.monotonic()
        return True

    async def _beat(self) -> None:
        rooms = list(self._local_rooms())
        info = self.headroom.measure(len(rooms))
        previous = await bounded(self._redis.set(
            self.keys.node(self.node_id), info.to_json(), px=max(int(self.ttl_s * 1000), 1),
            get=True), self.timeout_s)
        self.info = info
        if previous is None:  # first beat, or Redis lost the key: claim the rooms again
            self._reassert = True
        if self._reassert and rooms:
            taken = await self.owners.reassert(self.node_id, rooms)
            logger.info("node %s: its key was gone; claimed its %d room(s) again",
                        self.node_id, len(rooms) - len(taken))
            if taken:
                logger.warning("node %s: %d room(s) now owned by other nodes: %s",
                               self.node_id, len(taken), ", ".join(taken))
                if self._on_rooms_lost is not None:
                    self._on_rooms_lost(taken)
        self._reassert = False
