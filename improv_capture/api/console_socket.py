"""The operator console's WebSocket: live room updates, per-second stats, and the receive-only
monitor of one room (docs/console-protocol.md; the monitor itself is rooms/media_wiring.py's)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect

from improv_capture.api.descriptions import describe_room
from improv_capture.api.messages import ProtocolError
from improv_capture.api.sockets import JsonSocket, MessageReader
from improv_capture.close_codes import CLOSE_BAD_INVITE, CLOSE_INTERNAL
from improv_capture.media.sdp_policy import NegotiationError
from improv_capture.media.turn import ice_servers_for
from improv_capture.rooms.hub import Hub
from improv_capture.rooms.invites import tokens_equal
from improv_capture.rooms.media_wiring import Monitor
from improv_capture.rooms.model import Room

logger = logging.getLogger(__name__)


class ConsoleSocket:
    """One console tab, from hello to close."""

    def __init__(self, websocket: WebSocket, hub: Hub, operator_token: str) -> None:
        self.ws = websocket
        self.hub = hub
        self.socket = JsonSocket(websocket)
        self.reader = MessageReader(websocket, self.socket, hub.settings)
        self._operator_token = operator_token
        self.monitor: Monitor | None = None
        self._stats_in_flight: set[str] = set()
        self._rooms_sending = False
        self._rooms_dirty = False

    async def run(self) -> None:
        await self.ws.accept()
        try:
            await self._hello()
            self.hub.stats.listeners.add(self)
            try:
                await self._loop()
            finally:
                self.hub.stats.listeners.discard(self)
        except ProtocolError as exc:
            await self.socket.close(exc.code, exc.reason)
        except WebSocketDisconnect:
            pass
        except Exception:
            logger.exception("console session failed")
            await self.socket.close(CLOSE_INTERNAL, "internal error")
        finally:
            if self.monitor is not None:
                await self.monitor.close()
                self.monitor = None

    async def _hello(self) -> None:
        message = await self.reader.hello()
        token = message.get("token")
        if not isinstance(token, str) or not tokens_equal(token, self._operator_token):
            raise ProtocolError(CLOSE_BAD_INVITE, "invalid operator token")
        # its own TURN credential: an operator may watch from a network that passes TCP only
        ice_servers = ice_servers_for(self.hub.settings, "operator")
        await self.send({"type": "welcome", "ice_servers": ice_servers})
        await self.send(self._rooms_message())

    async def _loop(self) -> None:
        while True:
            message = await self.reader.next()
            kind = message["type"]
            if kind == "ping":
                await self.send({"type": "pong"})
            elif kind == "watch":
                await self._watch(message.get("room_id"))
            elif kind == "unwatch":
                await self._unwatch()
            elif kind == "subscribe_answer":
                if self.monitor is None:
                    await self._error("wrong_state", "not watching a room")
                    continue
                try:
                    self.monitor.subscriber.handle_answer(message.get("sdp"))
                except NegotiationError as exc:
                    await self._error("bad_sdp", str(exc))
            else:
                await self._error("unknown_type", f"unknown message type {kind!r}")

    async def _watch(self, room_id: object) -> None:
        room = self.hub.store.get(room_id) if isinstance(room_id, str) else None
        if room is None:
            await self._error("not_found", "room not found")
            return
        await self._unwatch()
        self.monitor = self.hub.media.watch(room, lambda sdp: self.send_offer(room, sdp))
        await self.send({"type": "peers", "room_id": room.room_id, "peers": self.monitor.peers()})

    async def _unwatch(self) -> None:
        if self.monitor is not None:
            monitor, self.monitor = self.monitor, None
            await monitor.close()

    async def _error(self, code: str, text: str) -> None:
        await self.send({"type": "error", "code": code, "message": text})

    async def send(self, message: dict[str, Any]) -> None:
        try:
            await self.socket.send_json(message)
        except Exception:
            pass  # the reader notices the close

    async def send_offer(self, room: Room, sdp: str) -> None:
        peers = self.monitor.peers() if self.monitor is not None else []
        await self.send({"type": "subscribe_offer", "room_id": room.room_id, "sdp": sdp, "peers": peers})

    def _rooms_message(self) -> dict[str, Any]:
        return {
            "type": "rooms",
            "rooms": [describe_room(room, self.hub)
                      for room in self.hub.store.rooms.values()],
        }

    # Listener

    def rooms_changed(self) -> None:
        # one rooms send at a time; changes meanwhile are sent once, as the latest state
        if self._rooms_sending:
            self._rooms_dirty = True
        else:
            self._rooms_sending = True
            asyncio.ensure_future(self._send_rooms())
        if self.monitor is not None:
            if self.monitor.room.room_id not in self.hub.store.rooms:
                asyncio.ensure_future(self._unwatch())
            else:
                room = self.monitor.room
                asyncio.ensure_future(
                    self.send({"type": "peers", "room_id": room.room_id, "peers": self.monitor.peers()})
                )

    async def _send_rooms(self) -> None:
        try:
            while True:
                self._rooms_dirty = False
                await self.send(self._rooms_message())
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
