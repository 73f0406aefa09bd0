"""A console watching a room that another node holds (several nodes sharing Redis).

This node opens the owner's operator socket, as a console tab would, and passes the watch
through: the owner's ``peers``, ``subscribe_offer`` and the room's ``stats`` go to the tab, the
tab's ``subscribe_answer`` to the owner. Only signaling passes here: the owner's offer names
its own addresses, so the monitor's media flows between the owner and the browser, as a
performer's does. The console page needs nothing of it: it watches any room on the socket it
has (a page cannot open a socket to another node: the pages' Content-Security-Policy keeps
sockets to their own origin).

Bounds: one upstream per console socket (a new watch closes the last), opened within
``open_timeout_s``, pinged (an owner gone silent ends it); the owner's messages at most
UPSTREAM_MAX_BYTES; the tab's answer passes
only after the tab's own socket bounded it."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import WebSocketException

logger = logging.getLogger(__name__)

#: the owner's messages are read whole: its `rooms` lists every room it holds
UPSTREAM_MAX_BYTES = 8 * 1024 * 1024
#: an owner that stops answering pings (its machine gone without closing the socket) ends the
#: watch within PING_EVERY_S + PING_TIMEOUT_S, so it is followed to the room's new node
PING_EVERY_S = 5.0
PING_TIMEOUT_S = 10.0
#: what the owner says of the watched room that the tab hears
PASSED = frozenset({"peers", "subscribe_offer", "stats", "error"})

Deliver = Callable[[dict[str, Any]], Awaitable[None]]


class UpstreamRefused(Exception):
    """The owner's operator socket could not be opened, or refused the hello."""


def operator_socket_url(node_url: str) -> str:
    """A node's public URL (http or https) as the URL of its operator socket."""
    scheme, sep, rest = node_url.rstrip("/").partition("://")
    if not sep or scheme not in ("http", "https"):
        raise ValueError(f"not an http(s) URL: {node_url!r}")
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/api/v1/operator"


class RemoteWatch:
    """The watch of ``room_id`` on the node at ``node_url``, passed to ``deliver``."""

    def __init__(self, node_id: str, node_url: str, room_id: str, token: str, deliver: Deliver,
                 open_timeout_s: float, on_end: Callable[[], None]) -> None:
        """on_end: the owner ended the watch (it went away, or the room left it); not called
        after :meth:`close`."""
        self.node_id = node_id
        self.room_id = room_id
        self._url = operator_socket_url(node_url)
        self._token = token
        self._deliver = deliver
        self._open_timeout_s = open_timeout_s
        self._on_end = on_end
        self._ws: ClientConnection | None = None
        self._pump: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Hello and watch on the owner's socket. UpstreamRefused when it cannot be had."""
        try:
            async with asyncio.timeout(self._open_timeout_s):
                self._ws = await connect(self._url, max_size=UPSTREAM_MAX_BYTES,
                                         open_timeout=None, ping_interval=PING_EVERY_S,
                                         ping_timeout=PING_TIMEOUT_S)
                await self._ws.send(json.dumps({"type": "hello", "token": self._token}))
                welcome = json.loads(await self._ws.recv())
        except (OSError, TimeoutError, WebSocketException, ValueError) as exc:
            await self.close()
            raise UpstreamRefused(f"node {self.node_id} did not take the watch ({exc})") from exc
        if not isinstance(welcome, dict) or welcome.get("type") != "welcome":
            await self.close()
            raise UpstreamRefused(f"node {self.node_id} did not take the watch")
        await self._ws.send(json.dumps({"type": "watch", "room_id": self.room_id}))
        self._pump = asyncio.ensure_future(self._pass_on(self._ws))

    async def answer(self, sdp: object) -> None:
        """The tab's answer to the owner's offer (the owner checks it, and says if it is bad)."""
        if self._ws is not None:
            with contextlib.suppress(WebSocketException):
                await self._ws.send(json.dumps({"type": "subscribe_answer", "sdp": sdp}))

    async def close(self) -> None:
        pump, self._pump = self._pump, None
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()
            await asyncio.gather(pump, return_exceptions=True)
        ws, self._ws = self._ws, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), self._open_timeout_s)

    async def _pass_on(self, ws: ClientConnection) -> None:
        try:
            async for frame in ws:
                message = json.loads(frame)
                if not isinstance(message, dict) or message.get("type") not in PASSED:
                    continue  # its rooms list, pongs: this node's own are the tab's
                if message.get("room_id", self.room_id) == self.room_id:
                    await self._deliver(message)
        except (WebSocketException, OSError, ValueError) as exc:
            logger.info("room %s: the watch through node %s ended (%s)", self.room_id,
                        self.node_id, exc)
        self._on_end()
