"""The names of every Redis key the nodes use, all under one prefix.

One module builds them so that the registry, the placement and the bus agree, and so that
several deployments (or tests) can share one Redis with different prefixes.

    {prefix}node:{node_id}       STRING  the node's NodeInfo as JSON, with a TTL (heartbeat)
    {prefix}owners               HASH    room_id -> owner node_id
    {prefix}rooms:{node_id}      SET     the rooms a node owns (index of the hash above)
    {prefix}reply:{uuid}         LIST    the answer to one request to another node (nodecalls.py), short-lived
    {prefix}commands:{node_id}   STREAM  operator actions for the rooms a node owns
    {prefix}placing              STRING  held while a new room is placed (placement.py), with a lease
    {prefix}room:{room_id}       STRING  a room's definition, kept by its owner
    {prefix}continued:{session}  STRING  the session that went on with one whose node died, and its node
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_PREFIX = "improv:"

#: Node ids go into key names and SCAN patterns: no glob characters, no separators.
NODE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: Room ids are hash fields and stream values only, so anything printable goes; capped so a
#: bad caller cannot fill Redis with one id.
MAX_ROOM_ID_CHARS = 256

_GLOB_SPECIAL = re.compile(r"([\\*?\[\]])")


def check_node_id(node_id: str) -> str:
    """Returns node_id, or raises ValueError when it could not be used in a key name."""
    if not NODE_ID_RE.fullmatch(node_id):
        raise ValueError(f"node id must match {NODE_ID_RE.pattern}: {node_id!r}")
    return node_id


def check_room_id(room_id: str) -> str:
    """Returns room_id, or raises ValueError when it is empty or too long."""
    if not room_id or len(room_id) > MAX_ROOM_ID_CHARS:
        raise ValueError(f"room id must have 1 to {MAX_ROOM_ID_CHARS} characters")
    return room_id


@dataclass(frozen=True)
class Keys:
    """Key names under one prefix (default "improv:")."""

    prefix: str = DEFAULT_PREFIX

    def node(self, node_id: str) -> str:
        return f"{self.prefix}node:{check_node_id(node_id)}"

    def node_pattern(self) -> str:
        """SCAN pattern matching every node key (the prefix's glob characters escaped)."""
        return _GLOB_SPECIAL.sub(r"\\\1", self.prefix) + "node:*"

    def node_id_of(self, key: str) -> str:
        return key[len(self.prefix) + len("node:"):]

    @property
    def owners(self) -> str:
        return f"{self.prefix}owners"

    def rooms(self, node_id: str) -> str:
        return f"{self.prefix}rooms:{check_node_id(node_id)}"

    @property
    def rooms_stem(self) -> str:
        """Start of rooms(node_id), for Lua scripts that learn the node id from Redis."""
        return f"{self.prefix}rooms:"

    def commands(self, node_id: str) -> str:
        return f"{self.prefix}commands:{check_node_id(node_id)}"

    @property
    def commands_stem(self) -> str:
        """Start of commands(node_id), for Lua scripts that learn the node id from Redis."""
        return f"{self.prefix}commands:"

    @property
    def placing(self) -> str:
        return f"{self.prefix}placing"

    def continued(self, session_id: str) -> str:
        return f"{self.prefix}continued:{check_room_id(session_id)}"

    def reply(self, call_id: str) -> str:
        return f"{self.prefix}reply:{call_id}"

    def room(self, room_id: str) -> str:
        """The room's definition (name, profile, invites, removed performers) as JSON, kept by
        its owner, for the node that takes the room over if its owner dies."""
        return f"{self.prefix}room:{check_room_id(room_id)}"
