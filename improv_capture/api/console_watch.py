"""The one room a console tab watches: on this node (a receive-only Monitor), or on the node
that holds it (console_relay.py); and, on one of several nodes, followed when it moves.

A room leaves its node when the node dies (its rooms move to live nodes) or comes back to find
them taken. The tab is told (``watch_ended``: it drops its monitor connection, whose media
came from there) and the watch is taken up again wherever the room is now, as soon as a live
node holds it, within FOLLOW_S; past that, or for a room that is gone, the tab gets an error."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from improv_capture.api.console_relay import RemoteWatch, UpstreamRefused
from improv_capture.background import Background
from improv_capture.media.sdp_policy import NegotiationError
from improv_capture.nodes.connection import RedisUnavailable
from improv_capture.nodes.service import Nodes
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.media_wiring import Monitor

#: how long a watched room that left its node is looked for (a dead node's rooms move within
#: its heartbeat's TTL and a beat or two: docs/architecture.md, "Many machines")
FOLLOW_S = 30.0
FOLLOW_EVERY_S = 1.0

Send = Callable[[dict[str, Any]], Awaitable[None]]


class WatchFailed(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(text)
        self.code = code


class ConsoleWatch:
    """What one console socket watches. ``send`` is the socket's."""

    def __init__(self, hub: Hub, nodes: Nodes | None, operator_token: str, send: Send) -> None:
        self.hub = hub
        self._nodes = nodes
        self._token = operator_token
        self._send = send
        self.monitor: Monitor | None = None
        self.remote: RemoteWatch | None = None
        #: the room the tab asked to watch (kept while it is followed)
        self.wanted: str | None = None
        self._following: asyncio.Task[None] | None = None
        self._background = Background()

    async def watch(self, room_id: object) -> None:
        """The tab's ``watch``: an error message when the room cannot be watched (and the
        last watch ended either way: the tab has left it)."""
        self._stop_following()
        self.wanted = None
        await self._stop()
        try:
            if not isinstance(room_id, str):
                raise WatchFailed("not_found", "room not found")
            await self._start(room_id)
        except WatchFailed as exc:
            await self._error(exc.code, str(exc))

    async def unwatch(self) -> None:
        """The tab's ``unwatch`` (and its socket's end)."""
        self.wanted = None
        self._stop_following()
        await self._stop()

    async def close(self) -> None:
        """The socket's end: the watch, and what was still being sent for it."""
        await self.unwatch()
        await self._background.cancel()

    async def answer(self, sdp: object) -> None:
        """The tab's ``subscribe_answer``, for whichever monitor offered."""
        if self.remote is not None:
            await self.remote.answer(sdp)
        elif self.monitor is None:
            await self._error("wrong_state", "not watching a room")
        else:
            try:
                self.monitor.subscriber.handle_answer(sdp)
            except NegotiationError as exc:
                await self._error("bad_sdp", str(exc))

    def rooms_changed(self) -> None:
        """This node's rooms changed: the watched room may have left it (or been deleted)."""
        if self.monitor is None:
            return
        room = self.monitor.room
        if room.room_id not in self.hub.store.rooms:
            self._lost(room.room_id)
        else:
            self._background.spawn(self._send(
                {"type": "peers", "room_id": room.room_id, "peers": self.monitor.peers()}))

    async def _start(self, room_id: str) -> None:
        """Watch room_id, here or through its node (nothing is watched when it is called)."""
        room = self.hub.store.get(room_id)
        if room is not None:
            async def send_offer(sdp: str) -> None:
                peers = self.monitor.peers() if self.monitor is not None else []
                await self._send({"type": "subscribe_offer", "room_id": room_id, "sdp": sdp,
                                  "peers": peers})

            self.monitor = self.hub.media.watch(room, send_offer)
            self.wanted = room_id
            await self._send({"type": "peers", "room_id": room_id, "peers": self.monitor.peers()})
            return
        if self._nodes is None:
            raise WatchFailed("not_found", "room not found")
        node_id, url = await self._owner(self._nodes, room_id)
        remote = RemoteWatch(node_id, url, room_id, self._token, self._send,
                             self.hub.settings.node_call_timeout_s,
                             on_end=lambda: self._lost(room_id))
        try:
            await remote.start()
        except UpstreamRefused as exc:
            raise WatchFailed("unavailable", str(exc)) from exc
        self.remote = remote
        self.wanted = room_id

    @staticmethod
    async def _owner(nodes: Nodes, room_id: str) -> tuple[str, str]:
        """The live node that holds room_id, and its public URL."""
        try:
            where = await nodes.where(room_id)
        except ValueError:  # not a room id
            where = None
        except RedisUnavailable as exc:
            raise WatchFailed("unavailable", "the nodes cannot reach each other (Redis); "
                              "watch again shortly") from exc
        if where is None:
            raise WatchFailed("not_found", "room not found")
        node_id, url = where
        if url is None:
            raise WatchFailed("unavailable", f"the room's node {node_id} is down; the room "
                              "moves to a live node shortly")
        return node_id, url

    async def _stop(self) -> None:
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            await monitor.close()
        if self.remote is not None:
            remote, self.remote = self.remote, None
            await remote.close()

    def _lost(self, room_id: str) -> None:
        """The watched room left this node, or the node it was watched through ended."""
        if self.wanted != room_id or self._nodes is None:
            self._background.spawn(self._stop())  # one node: the room was deleted
            return
        if self._following is None:
            self._following = asyncio.ensure_future(self._follow(room_id))

    async def _follow(self, room_id: str) -> None:
        await self._stop()
        await self._send({"type": "watch_ended", "room_id": room_id})
        deadline = time.monotonic() + FOLLOW_S
        failed = WatchFailed("unavailable", "the room was not found on a live node")
        while self.wanted == room_id and time.monotonic() < deadline:
            await asyncio.sleep(FOLLOW_EVERY_S)
            try:
                await self._start(room_id)
            except WatchFailed as exc:
                failed = exc
                if exc.code == "not_found":
                    break  # deleted meanwhile
            else:
                self._following = None
                return
        self._following = None
        if self.wanted == room_id:
            self.wanted = None
            await self._error(failed.code, f"the watched room moved and was lost: {failed}")

    def _stop_following(self) -> None:
        if self._following is not None:
            self._following.cancel()
            self._following = None

    async def _error(self, code: str, text: str) -> None:
        await self._send({"type": "error", "code": code, "message": text})
