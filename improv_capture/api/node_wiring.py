"""This node among several (IMPROV_REDIS_URL), wired to the rooms: the room copies kept in
Redis as rooms change (their recording included), a room moved here from a dead node taken in
(its recording going on as a new session that says which one it continues), and revocations
made through other nodes leaving this node's live rooms."""

from __future__ import annotations

import logging
from typing import Any

from improv_capture.nodes.service import Nodes
from improv_capture.recorder.continued import missing_part
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.store import RoomStore
from improv_capture.settings import Settings

logger = logging.getLogger(__name__)


def node_of(settings: Settings, store: RoomStore) -> Nodes | None:
    """This node among several (IMPROV_REDIS_URL), or None: one node."""
    if settings.redis_url is None:
        return None
    return Nodes(settings.redis_url.get_secret_value(), settings.node_id, settings.base_url,
                 settings.max_rooms, lambda: list(store.rooms), key_prefix=settings.redis_key_prefix,
                 heartbeat_s=settings.node_heartbeat_s, ttl_s=settings.node_ttl_s,
                 timeout_s=settings.redis_timeout_s, call_timeout_s=settings.node_call_timeout_s,
                 cpu=settings.node_cpu)


class RoomCopies:
    """Keeps each room's copy in Redis: at every change of the rooms store, and whenever a
    room starts or stops recording (a listener of the hub's stats fan-out, which hears of
    both), so that the node taking a room over knows whether to go on recording; and tells the
    other nodes of every change, for their consoles."""

    def __init__(self, nodes: Nodes, hub: Hub, store: RoomStore) -> None:
        self.nodes = nodes
        self.store = store
        self._recording: dict[str, str | None] = {}  # room_id -> session_id last kept
        store.on_change = self._store_changed
        hub.stats.listeners.add(self)
        nodes.adopt = lambda snapshot, previous: adopted(nodes, hub, store, snapshot, previous)
        nodes.drop = store.forget

    async def _store_changed(self, room_id: str, room: Any) -> None:
        if room is None:
            self._recording.pop(room_id, None)
        await self.nodes.save(room_id, room.snapshot() if room is not None else None)

    def rooms_changed(self) -> None:
        self.nodes.rooms_changed()  # the other nodes' consoles list this node's rooms
        for room_id, room in self.store.rooms.items():
            session = room.recording.session_id if room.recording is not None else None
            if self._recording.get(room_id, None) != session or room_id not in self._recording:
                self._recording[room_id] = session
                self.nodes.save_soon(room_id, room.snapshot())

    def stats(self, room_id: str, performers: dict[str, Any]) -> None:
        pass


async def adopted(nodes: Nodes, hub: Hub, store: RoomStore, snapshot: dict[str, Any],
                  previous: str | None) -> None:
    """A room moved here from a dead node: kept like a room made here; if it was recording,
    the recording goes on here as a new session whose manifest says which one it continues,
    `missing` until the dead node, back, has recovered its part and this node joined it
    (api/earlier_parts.py)."""
    room = await store.adopt(snapshot)
    hub.stats.changed()
    was = snapshot.get("recording")
    if was and room.recording is None:
        continues = missing_part(was["session_id"], was["started_at"], previous)
        recording = hub.recordings.start(room, continues=continues)
        logger.warning("room %s: recording %s goes on as %s here", room.room_id,
                       was["session_id"], recording.session_id)
        await nodes.note_continued(was["session_id"], recording.session_id,
                                   hub.settings.node_part_wait_s)


async def revoked_here(hub: Hub, event: dict[str, Any]) -> None:
    if event["type"] == "consent.revoked":
        await hub.remove_everywhere(event["data"]["performer_id"])
