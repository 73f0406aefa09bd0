"""Where rooms live: choosing a node by headroom, and each room's owner recorded in Redis.

Ownership is one hash, ``{prefix}owners`` (room_id -> node_id), with a set per node,
``{prefix}rooms:{node_id}``, as its index. Every change is one Lua script, so the hash and the
sets never disagree and no two nodes ever both own a room:
- claim: the room gets an owner only if it has none (a claim by the owner itself is a no-op);
- release: only the owner's release removes it;
- move (reassign_orphans): compare-and-set on the old owner, so of several nodes that move the
  same orphaned room at once exactly one succeeds; the same script appends a ROOM_ASSIGNED
  command to the new owner's stream (bus.py), so the new owner learns it even if the node that
  moved the room dies right after.

New rooms are placed one at a time across every node (``placing``: a lock in Redis, SET NX PX
with a lease), so each create reads the room counts after the last one's claim and a burst of
creates through several nodes spreads as one through a single node does. A node that dies
holding the lock blocks placements no longer than its lease; a create that waits longer than
its bound for the lock is placed without it (best effort: a node's max_rooms still bounds a
pile-up).

Ownership has no TTL: a room stays owned by a dead node until someone runs reassign_orphans
with the live nodes (registry.NodeRegistry.live_nodes()). A node must have registered before
it claims rooms, or a concurrent reassign_orphans may take them as orphans. Likewise, right
after Redis comes back from an outage longer than the TTL (with persistence, so the owners
survived), every node looks dead until it beats again: run reassign_orphans only from a node
whose NodeRegistry.settled is true, or the first node back takes every room.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import Counter
from collections.abc import AsyncIterator, Collection, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from redis.asyncio import Redis

from improv_capture.errors import LimitReached
from improv_capture.nodes.bus import (
    DEFAULT_STREAM_MAXLEN,
    DEFAULT_STREAM_TTL_S,
    ROOM_ASSIGNED,
    encode_action,
)
from improv_capture.nodes.connection import (
    DEFAULT_TIMEOUT_S,
    RedisUnavailable,
    bounded,
    client_from,
)
from improv_capture.nodes.headroom import NodeInfo
from improv_capture.nodes.keys import DEFAULT_PREFIX, Keys, check_node_id, check_room_id

logger = logging.getLogger(__name__)

# KEYS: owners, rooms:{node}; ARGV: room, node. Returns the owner after the call.
CLAIM_LUA = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner then return owner end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[1])
return ARGV[2]
"""

# KEYS: owners, rooms:{node}; ARGV: room, node. Returns 1 if released.
RELEASE_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[1])
return 1
"""

# KEYS: owners, rooms:{old}, rooms:{new}, commands:{new};
# ARGV: room, old, new, stream maxlen, notice (JSON), stream ttl ms. Returns 1 if moved.
MOVE_LUA = """
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('SREM', KEYS[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[1])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*', 'room', ARGV[1], 'action', ARGV[5])
redis.call('PEXPIRE', KEYS[4], ARGV[6])
return 1
"""

# KEYS: placing; ARGV: holder's token. Frees the lock only if it is still that holder's.
UNLOCK_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
#: how often a create waiting for the placing lock asks again
PLACING_POLL_S = 0.02


class NoNodeAvailable(LimitReached):
    """No live node has a free room slot (the cluster-wide form of max_rooms: HTTP 409)."""


def choose_node(nodes: Iterable[NodeInfo]) -> NodeInfo:
    """The node with the most headroom; never a full one.

    Ties (equal scores) go to the node with more free room slots, then to the smallest
    node_id, so every node that runs this on the same list picks the same one.
    Raises NoNodeAvailable when no node has a free slot (or the list is empty).
    """
    listed = list(nodes)
    free = [n for n in listed if n.has_room]
    if not free:
        raise NoNodeAvailable(
            f"no node has a free room slot ({len(listed)} live node(s), all full)"
            if listed else "no live node")
    return min(free, key=lambda n: (-n.score, -(n.max_rooms - n.rooms), n.node_id))


@dataclass(frozen=True)
class Move:
    """A room that reassign_orphans moved from a dead node to a live one."""

    room_id: str
    from_node: str
    to_node: str


class RoomOwners:
    """The owner of each room, in Redis; every change atomic (module docstring)."""

    def __init__(self, redis: Redis | str, key_prefix: str = DEFAULT_PREFIX, *,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
                 stream_ttl_s: float = DEFAULT_STREAM_TTL_S) -> None:
        """redis: a URL (opened and closed here) or a client to share. stream_maxlen and
        stream_ttl_s bound the command stream that ROOM_ASSIGNED notices go to: pass the
        RoomBus's values."""
        self.keys = Keys(key_prefix)
        self.timeout_s = timeout_s
        self.stream_maxlen = stream_maxlen
        self.stream_ttl_s = stream_ttl_s
        self._redis, self._owned = client_from(redis, timeout_s)
        self._claim = self._redis.register_script(CLAIM_LUA)
        self._release = self._redis.register_script(RELEASE_LUA)
        self._move = self._redis.register_script(MOVE_LUA)
        self._unlock = self._redis.register_script(UNLOCK_LUA)

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()

    async def claim_room(self, room_id: str, node_id: str) -> bool:
        """Makes node_id the owner if the room has none; True if node_id owns it now."""
        owner = await bounded(self._claim(
            keys=[self.keys.owners, self.keys.rooms(node_id)],
            args=[check_room_id(room_id), node_id]), self.timeout_s)
        return bool(owner == node_id)

    @asynccontextmanager
    async def placing(self, lease_s: float, wait_s: float) -> AsyncIterator[bool]:
        """Held while one room is placed and claimed (module docstring): yields whether the
        lock was had (False: Redis away, or not free within wait_s). lease_s bounds how long
        a holder that dies keeps it: longer than a placement takes."""
        token = secrets.token_hex(8)
        deadline = time.monotonic() + wait_s
        held = False
        while not held:
            try:
                held = bool(await bounded(self._redis.set(
                    self.keys.placing, token, nx=True, px=max(int(lease_s * 1000), 1)),
                    self.timeout_s))
            except RedisUnavailable:
                break
            if not held:
                if time.monotonic() >= deadline:
                    logger.warning("a room placed without the placing lock (busy over %.1f s)",
                                   wait_s)
                    break
                await asyncio.sleep(PLACING_POLL_S)
        try:
            yield held
        finally:
            if held:
                with contextlib.suppress(RedisUnavailable):  # it expires with its lease
                    await bounded(self._unlock(keys=[self.keys.placing], args=[token]),
                                  self.timeout_s)

    async def owner_of(self, room_id: str) -> str | None:
        owner = await bounded(self._redis.hget(self.keys.owners, check_room_id(room_id)),
                              self.timeout_s)
        return None if owner is None else str(owner)

    async def release_room(self, room_id: str, node_id: str) -> bool:
        """Removes the room's owner if it is node_id; True if it was."""
        released = await bounded(self._release(
            keys=[self.keys.owners, self.keys.rooms(node_id)],
            args=[check_room_id(room_id), node_id]), self.timeout_s)
        return bool(released)

    async def rooms_of(self, node_id: str) -> list[str]:
        """The rooms node_id owns, sorted."""
        rooms = await bounded(self._redis.smembers(self.keys.rooms(node_id)), self.timeout_s)
        return sorted(str(r) for r in rooms)

    async def owners(self) -> dict[str, str]:
        """Every owned room and its owner."""
        owners = await bounded(self._redis.hgetall(self.keys.owners), self.timeout_s)
        return {str(k): str(v) for k, v in owners.items()}

    async def reassert(self, node_id: str, room_ids: Collection[str]) -> list[str]:
        """Claims again the rooms node_id hosts (after Redis lost them); returns those that
        another node owns meanwhile, which node_id must give up."""
        check_node_id(node_id)
        taken = []
        for room_id in sorted(room_ids):
            if not await self.claim_room(room_id, node_id):
                taken.append(room_id)
        return taken

    async def move_room(self, room_id: str, from_node: str, to_node: str) -> bool:
        """Moves the room to to_node if from_node still owns it (compare-and-set); tells
        to_node with a ROOM_ASSIGNED command. True if this call moved it."""
        notice = encode_action({"type": ROOM_ASSIGNED, "previous_owner": from_node})
        moved = await bounded(self._move(
            keys=[self.keys.owners, self.keys.rooms(from_node), self.keys.rooms(to_node),
                  self.keys.commands(to_node)],
            args=[check_room_id(room_id), from_node, to_node, self.stream_maxlen, notice,
                  int(self.stream_ttl_s * 1000)]), self.timeout_s)
        return bool(moved)

    async def reassign_orphans(self, live_nodes: Sequence[NodeInfo]) -> list[Move]:
        """Moves every room whose owner is not among live_nodes to a live node, by headroom.

        Rooms go one at a time to choose_node() over the live nodes, each node's room count
        being the larger of its heartbeat's and the rooms it owns in Redis, plus the rooms
        given to it here. Safe to run on several nodes at once (each move is a compare-and-set
        on the old owner); returns the moves this call made. Rooms left when every live node
        is full stay with their dead owner, for a later call.
        """
        live = {n.node_id: n for n in live_nodes}
        owners = await self.owners()
        orphans = sorted((room, owner) for room, owner in owners.items() if owner not in live)
        if not orphans or not live:
            return []
        owned = Counter(owners.values())
        load = {node_id: max(n.rooms, owned[node_id]) for node_id, n in live.items()}
        moves: list[Move] = []
        for done, (room_id, old) in enumerate(orphans):
            try:
                target = choose_node(n.with_rooms(load[n.node_id]) for n in live.values())
            except NoNodeAvailable:
                logger.warning("%d orphaned room(s) left unassigned: every live node is full",
                               len(orphans) - done)
                break
            if await self.move_room(room_id, old, target.node_id):
                load[target.node_id] += 1
                moves.append(Move(room_id, old, target.node_id))
                logger.info("room %s moved from dead node %s to %s", room_id, old,
                            target.node_id)
        return moves
