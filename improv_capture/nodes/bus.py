"""Operator actions addressed to a room, delivered to the node that owns it.

Each node has one Redis stream, ``{prefix}commands:{node_id}``. `RoomBus.publish(room_id,
action)` looks up the room's owner and appends to the owner's stream in one Lua script, so a
command never goes to a node that had already lost the room when it was sent. `subscribe
(node_id)` reads the node's own stream with XREAD BLOCK from the last id it saw, so a command
sent while the subscriber was briefly cut off from Redis is read when it gets back: a stream,
unlike pub/sub, keeps what nobody was listening for.

Bounds (constructor parameters):
- stream_maxlen (default 1000): XADD ... MAXLEN ~ stream_maxlen. Redis trims the oldest entries
  past roughly that many (the ~ lets it trim whole nodes, so a few more may stay). A subscriber
  that falls further behind than that (a long outage, or a consumer stuck while operators keep
  sending) loses the oldest commands it had not read: it logs a warning when it notices (Redis
  7's max-deleted-entry-id is past the last id it read) and goes on with what is left.
- stream_ttl_s (default one day): each publish sets the stream's expiry, so the stream of a node
  that is gone for good does not stay in Redis forever.
- block_s (default 1 s): how long one XREAD waits for news before asking again.
- timeout_s, max_backoff_s: the bound on each call, and on the wait between tries while Redis
  is unreachable.

Delivery is at most once per subscriber and in order; nothing is acknowledged. A command whose
owner changes after it was appended stays with the old owner (the new owner learns the room's
state from Redis, not from old commands). Redis without persistence loses the unread entries
when it restarts. The publish script writes to a key named inside Lua, which is fine for one
Redis server and not for Redis Cluster.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from typing import Any

import redis.exceptions
from redis.asyncio import Redis

from improv_capture.nodes.connection import (
    DEFAULT_TIMEOUT_S,
    RedisUnavailable,
    bounded,
    client_from,
    connect,
)
from improv_capture.nodes.keys import DEFAULT_PREFIX, Keys, check_node_id, check_room_id

logger = logging.getLogger(__name__)

DEFAULT_STREAM_MAXLEN = 1000
DEFAULT_STREAM_TTL_S = 24 * 3600.0
DEFAULT_BLOCK_S = 1.0
DEFAULT_MAX_BACKOFF_S = 5.0
#: Entries one XREAD returns at most.
READ_COUNT = 100
#: The action placement.py sends to a room's new owner when it moves an orphaned room.
ROOM_ASSIGNED = "node.room_assigned"

PUBLISH_LUA = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if not owner then return false end
local key = ARGV[2] .. owner
local id = redis.call('XADD', key, 'MAXLEN', '~', ARGV[3], '*', 'room', ARGV[1], 'action', ARGV[4])
redis.call('PEXPIRE', key, ARGV[5])
return {owner, id}
"""


class NoOwner(LookupError):
    """The room has no owner in Redis: it was never claimed, or was released."""

    def __init__(self, room_id: str) -> None:
        super().__init__(f"room {room_id!r} has no owner node")
        self.room_id = room_id


@dataclass(frozen=True)
class Command:
    """One operator action as its owner reads it."""

    #: The stream entry id ("<ms>-<seq>"): pass it as subscribe(after=...) to resume.
    id: str
    node_id: str
    room_id: str
    action: dict[str, Any]


def encode_action(action: Mapping[str, Any]) -> str:
    return json.dumps(dict(action), separators=(",", ":"))


def stream_id(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


class RoomBus:
    """Publishes operator actions to rooms' owners; reads a node's own commands."""

    def __init__(self, redis: Redis | str, key_prefix: str = DEFAULT_PREFIX, *,
                 stream_maxlen: int = DEFAULT_STREAM_MAXLEN,
                 stream_ttl_s: float = DEFAULT_STREAM_TTL_S,
                 block_s: float = DEFAULT_BLOCK_S,
                 timeout_s: float = DEFAULT_TIMEOUT_S,
                 max_backoff_s: float = DEFAULT_MAX_BACKOFF_S) -> None:
        """redis: a URL (the bus opens and closes its own clients) or a client to share (its
        socket timeout must then be longer than block_s, or reads time out)."""
        if stream_maxlen < 1 or stream_ttl_s <= 0 or block_s <= 0 or timeout_s <= 0:
            raise ValueError("stream_maxlen, stream_ttl_s, block_s and timeout_s must be positive")
        self.keys = Keys(key_prefix)
        self.stream_maxlen = stream_maxlen
        self.stream_ttl_s = stream_ttl_s
        self.block_s = block_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max(max_backoff_s, block_s)
        self._redis, self._owned = client_from(redis, timeout_s)
        # blocking reads get their own client, whose socket waits out the block
        self._reader = (connect(redis, timeout_s, read_timeout_s=block_s + timeout_s)
                        if isinstance(redis, str) else self._redis)
        self._publish = self._redis.register_script(PUBLISH_LUA)

    async def aclose(self) -> None:
        if self._owned:
            await self._redis.aclose()
            await self._reader.aclose()

    async def publish(self, room_id: str, action: Mapping[str, Any]) -> Command:
        """Sends action to the node that owns room_id; returns it as that node will read it.

        Raises NoOwner when the room has no owner, RedisUnavailable when Redis cannot take it
        (then nothing was sent), TypeError/ValueError when action is not JSON.
        """
        check_room_id(room_id)
        payload = encode_action(action)
        result = await bounded(self._publish(
            keys=[self.keys.owners],
            args=[room_id, self.keys.commands_stem, self.stream_maxlen, payload,
                  int(self.stream_ttl_s * 1000)],
        ), self.timeout_s)
        if not result:
            raise NoOwner(room_id)
        owner, entry_id = str(result[0]), str(result[1])
        return Command(id=entry_id, node_id=owner, room_id=room_id, action=json.loads(payload))

    async def send(self, node_id: str, action: Mapping[str, Any]) -> Command:
        """Sends action to node_id itself (not through a room: nodecalls.py's requests).
        RedisUnavailable when Redis cannot take it."""
        key = self.keys.commands(check_node_id(node_id))
        payload = encode_action(action)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.xadd(key, {"room": "", "action": payload}, maxlen=self.stream_maxlen, approximate=True)
            pipe.pexpire(key, int(self.stream_ttl_s * 1000))
            entry_id, _ = await bounded(pipe.execute(), self.timeout_s)
        return Command(id=str(entry_id), node_id=node_id, room_id="", action=json.loads(payload))

    async def last_id(self, node_id: str) -> str:
        """The id of the newest command in node_id's stream ("0-0" when it has none)."""
        entries = await bounded(
            self._redis.xrevrange(self.keys.commands(node_id), count=1), self.timeout_s)
        return str(entries[0][0]) if entries else "0-0"

    async def subscribe(self, node_id: str, *, after: str | None = None
                        ) -> AsyncGenerator[Command, None]:
        """The commands for node_id's rooms, from after (default: those sent from now on).

        Never ends by itself and never raises for Redis trouble: while Redis is unreachable it
        logs once, retries with a bounded backoff, logs once when it is back, and goes on from
        the last command it yielded. Stop it by leaving the ``async for`` (or cancelling).
        """
        key = self.keys.commands(check_node_id(node_id))
        last = after
        lost = False
        delay = min(self.block_s, self.max_backoff_s)
        while True:
            try:
                if last is None:
                    last = await self.last_id(node_id)
                response = await bounded(
                    self._reader.xread({key: last}, count=READ_COUNT,
                                       block=max(int(self.block_s * 1000), 1)),
                    self.block_s + self.timeout_s)
                if lost:
                    logger.info("command stream %s: redis is back", key)
                    lost = False
                    await self._warn_if_trimmed(key, last)
                delay = min(self.block_s, self.max_backoff_s)
            except RedisUnavailable as e:
                if not lost:
                    logger.warning("command stream %s: redis lost (%s); retrying", key, e)
                    lost = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.max_backoff_s)
                continue
            for entry_id, fields in _entries(response):
                last = entry_id
                command = _command(node_id, entry_id, fields)
                if command is not None:
                    yield command

    async def _warn_if_trimmed(self, key: str, last: str) -> None:
        try:
            info = await bounded(self._redis.xinfo_stream(key), self.timeout_s)
        except (RedisUnavailable, redis.exceptions.ResponseError):  # gone again, or no stream
            return
        deleted = str(info.get("max-deleted-entry-id") or "0-0")
        if stream_id(deleted) > stream_id(last):
            logger.warning("command stream %s: commands after %s were trimmed before they were "
                           "read (stream_maxlen %d)", key, last, self.stream_maxlen)


def _entries(response: Any) -> list[tuple[str, dict[str, str]]]:
    """XREAD's answer (RESP2 list or RESP3 dict) as (id, fields) pairs."""
    if not response:
        return []
    streams = response.items() if isinstance(response, dict) else response
    out: list[tuple[str, dict[str, str]]] = []
    for _name, entries in streams:
        for entry_id, fields in entries:
            out.append((str(entry_id), dict(fields)))
    return out


def _command(node_id: str, entry_id: str, fields: dict[str, str]) -> Command | None:
    try:
        action = json.loads(fields["action"])
        if not isinstance(action, dict):
            raise TypeError("action is not an object")
        return Command(id=entry_id, node_id=node_id, room_id=fields["room"], action=action)
    except (KeyError, TypeError, ValueError) as e:
        logger.warning("command %s for node %s skipped: %s", entry_id, node_id, e)
        return None
