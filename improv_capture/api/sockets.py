"""What the performer and console sockets share: :class:`JsonSocket`, the send and close side
of a WebSocket that the rooms side talks to (rooms/model.py's Socket), and
:class:`MessageReader`, which reads JSON messages within the socket's message budget."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from improv_capture.api.messages import MessageBudget, ProtocolError, parse_message
from improv_capture.close_codes import CLOSE_HELLO_TIMEOUT, CLOSE_MALFORMED
from improv_capture.settings import Settings


class JsonSocket:
    """Serialises sends on one socket; sending or closing after the client dropped is
    harmless (the reader sees the disconnect)."""

    def __init__(self, websocket: WebSocket) -> None:
        self._ws = websocket
        self._lock = asyncio.Lock()

    async def send_json(self, message: dict[str, Any]) -> None:
        async with self._lock:
            if self._ws.application_state == WebSocketState.CONNECTED:
                try:
                    await self._ws.send_text(json.dumps(message))
                except (RuntimeError, OSError, WebSocketDisconnect):  # the client is gone
                    pass

    async def close(self, code: int, reason: str) -> None:
        async with self._lock:
            if self._ws.application_state == WebSocketState.CONNECTED:
                try:
                    await self._ws.close(code=code, reason=reason)
                except (RuntimeError, OSError, WebSocketDisconnect):
                    pass


async def receive_message(websocket: WebSocket, settings: Settings) -> dict[str, Any]:
    event = await websocket.receive()
    if event["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(event.get("code", 1000))
    frame = event.get("text") if event.get("text") is not None else event.get("bytes")
    return parse_message(frame, settings.max_message_bytes, settings.max_message_depth)


class MessageReader:
    """Reads the messages of one of our sockets (performer or console) within the socket's
    message budget: over it, the message is answered with `rate_limited` and dropped; a
    client that keeps flooding is closed with 4420 (a ProtocolError out of :meth:`next`)."""

    def __init__(
        self, websocket: WebSocket, socket: JsonSocket, settings: Settings
    ) -> None:
        self._ws = websocket
        self._connection = socket
        self._settings = settings
        self._budget = MessageBudget(
            settings.signal_rate_per_s, settings.signal_burst, settings.signal_flood_limit
        )

    async def hello(self) -> dict[str, Any]:
        """The first message: a `hello`, in time, or a 44xx close."""
        try:
            message = await asyncio.wait_for(self.next(), self._settings.hello_timeout_s)
        except asyncio.TimeoutError as exc:
            raise ProtocolError(CLOSE_HELLO_TIMEOUT, "no hello received") from exc
        if message["type"] != "hello":
            raise ProtocolError(CLOSE_MALFORMED, "the first message must be hello")
        return message

    async def next(self) -> dict[str, Any]:
        while True:
            message = await receive_message(self._ws, self._settings)
            if self._budget.take():
                return message
            retry = round(self._budget.retry_after_s, 2)
            await self._connection.send_json(
                {
                    "type": "error",
                    "code": "rate_limited",
                    "message": f"over {self._settings.signal_rate_per_s:g} messages a second: "
                    f"{message['type']!r} dropped; retry in {retry} s",
                    "retry_after_s": retry,
                }
            )
