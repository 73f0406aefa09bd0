"""What the operator consoles hear of the rooms: that something changed (once per event
loop turn, however many changes it held) and every performer's stats once a second, which
the running recording logs too."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from improv_capture.media.stats import StatsSampler
from improv_capture.rooms.store import RoomStore

logger = logging.getLogger(__name__)

STATS_INTERVAL_S = 1.0


class Listener(Protocol):
    """An operator console (api/console_socket.py)."""

    def rooms_changed(self) -> None: ...

    def stats(self, room_id: str, performers: dict[str, Any]) -> None: ...


class StatsFanout:
    def __init__(self, store: RoomStore) -> None:
        self.store = store
        self.listeners: set[Listener] = set()
        self._changed_pending = False
        self._sampler = StatsSampler()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._loop())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def changed(self) -> None:
        """Something an operator sees changed; listeners hear of it once per loop turn."""
        if self._changed_pending:
            return
        self._changed_pending = True

        def notify() -> None:
            self._changed_pending = False
            for listener in list(self.listeners):
                listener.rooms_changed()

        asyncio.get_running_loop().call_soon(notify)

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL_S)
            for room in list(self.store.rooms.values()):
                if not room.members:
                    continue
                performers = {}
                for member in list(room.members.values()):
                    try:
                        stats = await self._sampler.sample(member)
                    except Exception:
                        logger.exception("stats of %s failed", member.performer_id)
                        continue
                    performers[member.performer_id] = stats
                    if room.recording is not None:
                        room.recording.stats(member, stats)
                for listener in list(self.listeners):
                    listener.stats(room.room_id, performers)
