"""uvicorn as `serve` runs it, for a lone server, a worker and the cluster router alike: a time
limit on each request's head, a connection cap that covers WebSockets too, keep-alive, a
lingering close after an answer given before the request's body was read, the access log's
query secrets redacted, and TLS (HTTPS and WSS) when a certificate is configured.

uvicorn bounds an idle keep-alive connection but not a request head that never ends: a client
that sends nothing, or one header line every few seconds, holds its connection for ever.
``HeadTimeoutProtocol`` (uvicorn's httptools protocol plus a timer) closes such a connection.

The server refuses a request (an upload chunk of the wrong invite, session or state) before
reading its body, by design. When that answer also ends the connection (``Connection: close``,
as nginx sends every proxied request), closing it with the body unread makes the kernel reset
it, and a proxy still sending the body loses the answer and says 502. So, like Apache and nginx
themselves, the connection first reads on and drops the body, within bounds (``BodyDrain``).
"""

from __future__ import annotations

import asyncio
import ssl
from pathlib import Path
from typing import Any

import uvicorn
from starlette.types import ASGIApp
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

from improv_capture.api.http_guard import install_log_redaction
from improv_capture.settings import WS_MAX_BYTES, Settings

SERVICE_UNAVAILABLE = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n"
    b"content-length: 19\r\nconnection: close\r\n\r\nService Unavailable"
)

#: A lingering connection on which nothing arrives for this long is closed: the client has
#: sent its body, or stopped to wait for the answer it already has.
LINGER_IDLE_S = 0.5


class HeadTimeoutProtocol(HttpToolsProtocol):
    """Closes a connection whose next request head (request line and headers) is not complete
    within ``head_timeout_s`` of the connection's start or of the end of its previous response.
    A body's time is the ASGI layer's (api/http_guard.py). A connection that closes after an
    answer while its request's body is still coming lingers (``BodyDrain``) within
    ``linger_max_bytes`` and ``linger_s``."""

    head_timeout_s: float = 10.0
    linger_max_bytes: int = 16 * 1024 * 1024
    linger_s: float = 5.0
    _head_timer: asyncio.TimerHandle | None = None
    #: Between a request's first byte and the end of its body, as the parser has them.
    _body_pending: bool = False
    #: What is still to come of a body of declared length (Content-Length); else None.
    body_left: int | None = None
    _drain: BodyDrain | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._body_pending = True

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        previous = self.cycle
        headers = dict(self.headers)
        length = headers.get(b"content-length", b"")
        declared = b"transfer-encoding" not in headers and length.isdigit()
        self.body_left = int(length) if declared else None
        super().on_headers_complete()
        if self.cycle is not previous:  # a request's cycle (a WebSocket upgrade makes none)
            self.cycle.transport = CycleTransport(self, self.cycle)  # type: ignore[assignment]

    def on_body(self, body: bytes) -> None:
        if self.body_left is not None:
            self.body_left -= len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_pending = False
        super().on_message_complete()

    def on_response_complete(self) -> None:
        waiting = not self.pipeline  # else the next request's head is in already
        super().on_response_complete()
        if self._drain is not None:
            # uvicorn saw the transport open and armed its keep-alive timer: the drain's own
            # bounds end this connection now
            self._unset_keepalive_if_required()
        elif waiting and not self.transport.is_closing():
            self._arm_head_timer()

    def close_after(self, cycle: RequestResponseCycle) -> None:
        """A request's cycle closes the connection: at once, unless its answer is complete and
        the request's body is still coming, within the byte bound as far as it is declared;
        then the body is drained first."""
        if self._drain is not None:
            return  # lingering already: BodyDrain closes within its bounds
        within = self.body_left is None or self.body_left <= self.linger_max_bytes
        if (cycle.response_complete and self._body_pending and within and not self.pipeline
                and not self.transport.is_closing()
                and self.linger_s > 0 and self.linger_max_bytes > 0):
            self._drain = BodyDrain(self)
        else:
            self.transport.close()

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


class CycleTransport:
    """The transport as one request's cycle (uvicorn's RequestResponseCycle) sees it: the same,
    but its close goes through the protocol (``HeadTimeoutProtocol.close_after``), since the
    cycle closes as soon as a ``Connection: close`` answer is sent, body read or not."""

    def __init__(self, protocol: HeadTimeoutProtocol, cycle: RequestResponseCycle) -> None:
        self._protocol = protocol
        self._cycle = cycle

    def close(self) -> None:
        self._protocol.close_after(self._cycle)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._protocol.transport, name)


class BodyDrain(asyncio.Protocol):
    """The end of a connection whose answer went out before its request's body was read: the
    rest of the body is read and dropped (the transport's protocol is this one now, so no byte
    of it is parsed or reaches the app), then the connection closes with a FIN. Closed with
    the body unread, it would be reset, and a proxy still sending the body would lose the
    answer. Apache and nginx close the same way ("lingering close").

    Bounded work: ends once the body's declared length is in, the client half-closes, sends
    nothing for LINGER_IDLE_S, has sent ``linger_max_bytes`` more or ``linger_s`` has passed
    (the last two close at once, with whatever is still unread). Until then the connection is
    its HTTP protocol's, so it counts toward the connection cap, and a server shutdown closes
    it like any other."""

    def __init__(self, http: HeadTimeoutProtocol) -> None:
        self._http = http
        self._transport = http.transport
        self._loop = http.loop
        self._left = http.linger_max_bytes
        self._body_left = http.body_left
        self._last_data = self._loop.time()
        self._deadline = self._loop.call_later(http.linger_s, self._close)
        self._idle = self._loop.call_later(LINGER_IDLE_S, self._idle_check)
        self._transport.set_protocol(self)
        http.flow.resume_reading()  # paused while the unread body filled the cycle's buffer

    def data_received(self, data: bytes) -> None:
        self._left -= len(data)
        self._last_data = self._loop.time()
        if self._body_left is not None:
            self._body_left -= len(data)
        if self._left < 0 or (self._body_left is not None and self._body_left <= 0):
            self._close()

    def eof_received(self) -> bool:
        self._close()
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._deadline.cancel()
        self._idle.cancel()
        self._http.connection_lost(exc)

    def _idle_check(self) -> None:
        quiet = self._loop.time() - self._last_data
        if quiet >= LINGER_IDLE_S:
            self._close()
        else:
            self._idle = self._loop.call_later(LINGER_IDLE_S - quiet, self._idle_check)

    def _close(self) -> None:
        if not self._transport.is_closing():
            self._transport.close()


def http_protocol(settings: Settings) -> type[HeadTimeoutProtocol]:
    """The protocol class with this server's bounds."""
    return type("HeadTimeoutProtocol", (HeadTimeoutProtocol,), {
        "head_timeout_s": settings.http_head_timeout_s,
        "linger_max_bytes": settings.http_linger_max_bytes,
        "linger_s": settings.http_linger_s,
    })


def tls_files(settings: Settings) -> tuple[Path, Path] | None:
    """The certificate and key this process serves HTTPS with, None for plain HTTP; a clear
    SystemExit when they cannot work (one without the other, unreadable, not a pair).

    Only the process that listens for browsers takes them: a lone server or the cluster
    router. A router's workers listen on loopback for the router alone, in plain HTTP.
    """
    cert, key = settings.tls_cert, settings.tls_key
    if settings.worker_index is not None or (cert is None and key is None):
        return None
    if cert is None or key is None:
        given, missing = ("IMPROV_TLS_CERT", "IMPROV_TLS_KEY") if key is None else (
            "IMPROV_TLS_KEY", "IMPROV_TLS_CERT")
        raise SystemExit(f"improv-capture: {given} is set but {missing} is not: set both "
                         f"(--tls-cert, --tls-key) to serve HTTPS, or neither for plain HTTP "
                         f"behind a TLS proxy")
    for name, path in (("IMPROV_TLS_CERT", cert), ("IMPROV_TLS_KEY", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as exc:
            raise SystemExit(f"improv-capture: cannot read {name} {path}: "
                             f"{exc.strerror or exc}") from None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        # an encrypted key would make OpenSSL prompt on the terminal: refuse it instead
        context.load_cert_chain(cert, key, password=lambda: b"")
    except ssl.SSLError as exc:
        raise SystemExit(
            f"improv-capture: TLS certificate {cert} and key {key} cannot be used "
            f"({exc.reason or exc}): the certificate must be a PEM chain (e.g. Let's "
            f"Encrypt's fullchain.pem) and the key its unencrypted PEM private key "
            f"(privkey.pem)") from None
    return cert, key


def server_config(app: ASGIApp, settings: Settings) -> uvicorn.Config:
    tls = tls_files(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=http_protocol(settings),
        ws_max_size=WS_MAX_BYTES,
        limit_concurrency=settings.max_connections,
        timeout_keep_alive=settings.http_keep_alive_s,
        log_level=settings.log_level.lower(),
        # JSON lines: uvicorn's loggers go through the root handler (observability/logs.py)
        log_config=None if settings.log_format == "json" else uvicorn.config.LOGGING_CONFIG,
        lifespan="on",
        ssl_certfile=tls[0] if tls else None,
        ssl_keyfile=tls[1] if tls else None,
    )
    install_log_redaction()  # after uvicorn configured its loggers
    return config
