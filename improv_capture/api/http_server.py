"""uvicorn as `serve` runs it, for a lone server, a worker and the cluster router alike: a time
limit on each request's head, a connection cap that covers WebSockets too, keep-alive, and the
access log's query secrets redacted.

uvicorn bounds an idle keep-alive connection but not a request head that never ends: a client
that sends nothing, or one header line every few seconds, holds its connection for ever.
``HeadTimeoutProtocol`` (uvicorn's httptools protocol plus a timer) closes such a connection.
"""

from __future__ import annotations

import asyncio

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from improv_capture.api.http_guard import install_log_redaction
from improv_capture.settings import WS_MAX_BYTES, Settings

SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\nconnection: close\r\n\r\nService Unavailable"
)


class HeadTimeoutProtocol(HttpToolsProtocol):
    """Closes a connection whose next request head (request line and headers) is not complete
    within ``head_timeout_s`` of the connection's start or of the end of its previous response.
    A body's time is the ASGI layer's (api/http_guard.py)."""

    head_timeout_s: float = 10.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # else the next request's head is in already
        super().on_response_complete()
        if waiting and not self.transport.is_closing():
            self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        """uvicorn checks its concurrency limit on plain requests only: sockets count too."""
        limit = self.limit_concurrency
        if limit is not None and (len(self.connections) > limit or len(self.tasks) >= limit):
            self.logger.warning("Exceeded concurrency limit.")
            self.transport.write(SERVICE_UNAVAILABLE)
            self.transport.close()
            return
        super().handle_websocket_upgrade()

    def _arm_head_timer(self) -> None:
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


def head_timeout_protocol(head_timeout_s: float) -> type[HeadTimeoutProtocol]:
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {"head_timeout_s": head_timeout_s})


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=head_timeout_protocol(settings.http_head_timeout_s),
        ws_max_size=WS_MAX_BYTES,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.http_keep_alive_s,
        log_level=settings.log_level.lower(),
        lifespan="on",
    )
    install_log_redaction()  # after uvicorn configured its loggers
    return config
