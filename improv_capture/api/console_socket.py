"""The operator console's WebSocket: live room updates, per-second stats, and the receive-only
monitor of one room (docs/console-protocol.md; the monitor itself is rooms/media_wiring.py's).

On one of several nodes (IMPROV_REDIS_URL) the rooms listed are every node's (asked again
whenever a node says its rooms changed), and a room that another node holds is watched
through that node (console_watch.py)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from improv_capture.api.console_watch import ConsoleWatch
from improv_capture.api.descriptions import describe_room
from improv_capture.api.messages import ProtocolError
from improv_capture.api.node_routing import operator_request, rooms_elsewhere
from improv_capture.api.sockets import JsonSocket, MessageReader
from improv_capture.close_codes import CLOSE_BAD_INVITE, CLOSE_INTERNAL
from improv_capture.media.turn import ice_servers_for
from improv_capture.nodes.service import Nodes
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import tokens_equal

logger = logging.getLogger(__name__)


class ConsoleSocket:
    """One console tab, from hello to close."""

    def __init__(self, websocket: WebSocket, hub: Hub, operator_token: str,
                 nodes: Nodes | None = None, consoles: set[ConsoleSocket] | None = None) -> None:
        """nodes: this node among several (None: one node); consoles: this node's console
        sockets, which hear of other nodes' room changes (each adds itself while open)."""
        self.ws = websocket
        self.hub = hub
        self.socket = JsonSocket(websocket)
        self.reader = MessageReader(websocket, self.socket, hub.settings)
        self._operator_token = operator_token
        self._nodes = nodes
        self._consoles = consoles if consoles is not None else set()
        self.watching = ConsoleWatch(hub, nodes, operator_token, self.send)
        self._stats_in_flight: set[str] = set()
        self._rooms_sending = False
        self._rooms_dirty = False

    async def run(self) -> None:
        await self.ws.accept()
        try:
            await self._hello()
            self.hub.stats.listeners.add(self)
            self._consoles.add(self)
            try:
                await self._loop()
            finally:
                self.hub.stats.listeners.discard(self)
                self._consoles.discard(self)
        except ProtocolError as exc:
            await self.socket.close(exc.code, exc.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("console session failed")
            await self.socket.close(CLOSE_INTERNAL, "internal error")
        finally:
            await self.watching.close()

    async def _hello(self) -> None:
        message = await self.reader.hello()
        token = message.get("token")
        if not isinstance(token, str) or not tokens_equal(token, self._operator_token):
            raise ProtocolError(CLOSE_BAD_INVITE, "invalid operator token")
        # its own TURN credential: an operator may watch from a network that passes TCP only
        ice_servers = ice_servers_for(self.hub.settings, "operator")
        await self.send({"type": "welcome", "ice_servers": ice_servers})
        await self.send(await self._rooms_message())

    async def _loop(self) -> None:
        while True:
            message = await self.reader.next()
            kind = message["type"]
            if kind == "ping":
                await self.send({"type": "pong"})
            elif kind == "watch":
                await self.watching.watch(message.get("room_id"))
            elif kind == "unwatch":
                await self.watching.unwatch()
            elif kind == "subscribe_answer":
                await self.watching.answer(message.get("sdp"))
            else:
                await self._error("unknown_type", f"unknown message type {kind!r}")

    async def _error(self, code: str, text: str) -> None:
        await self.send({"type": "error", "code": code, "message": text})

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.socket.send_json(message)
        except Exception:
            pass  # the reader notices the close

    async def _rooms_message(self) -> dict[str, Any]:
        rooms = [describe_room(room, self.hub) for room in self.hub.store.rooms.values()]
        if self._nodes is not None:
            rooms += await rooms_elsewhere(
                self._nodes, operator_request(self._operator_token, "GET", "/api/v1/rooms"))
        return {"type": "rooms", "rooms": rooms}

    # Listener

    def rooms_changed(self) -> None:
        # one rooms send at a time; changes meanwhile are sent once, as the latest state
        if self._rooms_sending:
            self._rooms_dirty = True
        else:
            self._rooms_sending = True
            asyncio.ensure_future(self._send_rooms())
        self.watching.rooms_changed()

    async def _send_rooms(self) -> None:
        try:
            while True:
                self._rooms_dirty = False
                await self.send(await self._rooms_message())
                if not self._rooms_dirty:
                    return
        finally:
            self._rooms_sending = False

    def stats(self, room_id: str, performers: dict[str, Any]) -> None:
        # a console that reads slowly gets the latest stats, not a growing backlog of sends
        if room_id in self._stats_in_flight:
            return
        self._stats_in_flight.add(room_id)

        async def send() -> None:
            try:
                await self.send({"type": "stats", "room_id": room_id, "performers": performers})
            finally:
                self._stats_in_flight.discard(room_id)

        asyncio.ensure_future(send())
