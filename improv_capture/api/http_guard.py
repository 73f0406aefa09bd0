"""What every HTTP request meets before a route, in a lone server and in the cluster router alike:
bodies are read only from the operator and bounded on the bytes received, in size and in time;
every response carries the browser security headers; no token in a query reaches the log.

Plain ASGI on starlette, so the router (which loads no aiortc) runs the same code.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable, Sequence
from typing import Protocol

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from improv_capture.rooms.invites import tokens_equal
from improv_capture.settings import Settings


def content_security_policy(other_sockets: Sequence[str] = ()) -> str:
    """The pages are plain ES modules and stylesheets from /static (no inline script or
    style); media may play from blob: URLs (the console's session player); sockets go to this
    origin, and, on one of several nodes, to the other live nodes' (a performer's page follows
    its room to the node it moved to: docs/signaling.md)."""
    return "; ".join((
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "media-src 'self' blob:",
        " ".join(("connect-src 'self'", *other_sockets)),
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ))


#: What a node's public URL gives a policy: a WebSocket origin, nothing that could end the
#: directive or the header.
SOCKET_ORIGIN = re.compile(r"wss?://[A-Za-z0-9.\-]+(:[0-9]{1,5})?|wss?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?")


def socket_origin(public_url: str) -> str | None:
    """A node's public URL as the origin of its sockets (None for anything else)."""
    scheme, sep, rest = public_url.partition("://")
    origin = f"{'wss' if scheme == 'https' else 'ws'}://{rest.split('/', 1)[0]}"
    return origin if sep and scheme in ("http", "https") and SOCKET_ORIGIN.fullmatch(origin) else None


#: Every header but the policy, which SecurityHeaders adds as it stands.
SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    # invite and console links carry their token in the fragment, which no Referer holds,
    # but a page's own path and query should not leave either
    (b"referrer-policy", b"no-referrer"),
]


def bearer_of(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header; None without one."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def error_response(exc: HTTPException) -> JSONResponse:
    """The one error shape of the API: ``{"detail": ...}``."""
    return JSONResponse({"detail": exc.detail}, status_code=exc.status_code, headers=exc.headers)


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, "request body too large")


class BodyTimeout(HTTPException):
    def __init__(self) -> None:
        super().__init__(408, "request body timed out", headers={"Connection": "close"})


class BodyReader:
    """The app's ``receive`` while the body comes in: at most ``limit`` bytes, all of them
    within ``timeout_s`` of the first call. Raises BodyTooLarge or BodyTimeout, which the
    app answers like any HTTPException (FastAPI passes them through its body parsing)."""

    def __init__(self, receive: Receive, limit: int, timeout_s: float) -> None:
        self._receive = receive
        self._limit = limit
        self._timeout_s = timeout_s
        self._deadline: float | None = None
        self._received = 0
        self._complete = False

    async def __call__(self) -> Message:
        if self._complete:  # after the body: only the disconnect is left to wait for
            return await self._receive()
        loop = asyncio.get_running_loop()
        if self._deadline is None:
            self._deadline = loop.time() + self._timeout_s
        try:
            message = await asyncio.wait_for(self._receive(), self._deadline - loop.time())
        except asyncio.TimeoutError:
            raise BodyTimeout() from None
        if message["type"] == "http.request":
            self._received += len(message.get("body", b""))
            if self._received > self._limit:
                raise BodyTooLarge()
            self._complete = not message.get("more_body", False)
        else:
            self._complete = True
        return message


def _withheld(scope: Scope, receive: Receive) -> tuple[Scope, Receive]:
    """The request as if it had no body: the client's body is never read (the server drops it
    after the answer), so whatever the route answers a caller without the right token is
    answered without reading a byte of it."""
    headers = [(k, v) for k, v in scope["headers"] if k not in (b"content-length", b"transfer-encoding")]
    sent = False

    async def empty() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        while True:  # later calls wait for the disconnect, as after any complete body
            message = await receive()
            if message["type"] == "http.disconnect":
                return message

    return {**scope, "headers": [*headers, (b"content-length", b"0")]}, empty


class PerformerBodies(Protocol):
    """The routes whose body a performer may send (api/upload_paths.py): the body limit of a
    request, or None when its body must not be read."""

    timeout_s: float

    def limit(self, path: str, authorization: str | None) -> int | None: ...


class RequestGuard:
    """Bodies: read only from who the route takes them from: the operator (``max_body_bytes``,
    within ``body_timeout_s``), or a performer on their own upload path (``performer``'s
    limits); anyone else gets the route's own 401/403 without their body being read."""

    def __init__(
        self,
        app: ASGIApp,
        operator_token: str,
        max_body_bytes: int,
        body_timeout_s: float,
        performer: PerformerBodies | None = None,
    ) -> None:
        self.app = app
        self.operator_token = operator_token
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.performer = performer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        length = headers.get("content-length")
        if (length is None and "transfer-encoding" not in headers) or length == "0":  # no body
            await self.app(scope, receive, send)
            return
        limit, timeout_s = self._body_limit(headers, scope["path"])
        if limit is None:
            scope, receive = _withheld(scope, receive)
        elif length is not None and (not length.isdigit() or int(length) > limit):
            await error_response(BodyTooLarge())(scope, receive, send)
            return
        else:
            receive = BodyReader(receive, limit, timeout_s)
        await self.app(scope, receive, send)

    def _body_limit(self, headers: Headers, path: str) -> tuple[int | None, float]:
        authorization = headers.get("authorization")
        token = bearer_of(authorization)
        if token is not None and tokens_equal(token, self.operator_token):
            return self.max_body_bytes, self.body_timeout_s
        if self.performer is not None:
            return self.performer.limit(path, authorization), self.performer.timeout_s
        return None, self.body_timeout_s


class SecurityHeaders:
    """Adds the policy and SECURITY_HEADERS to every HTTP response that does not set them
    itself (a worker's answer passed on by the router already has them). ``other_nodes``:
    the other live nodes' public URLs, on one of several (read at every response: kept up to
    date by the node's heartbeat)."""

    def __init__(self, app: ASGIApp, other_nodes: Callable[[], Sequence[str]] | None = None) -> None:
        self.app = app
        self._other_nodes = other_nodes
        self._policy: tuple[tuple[str, ...], bytes] = ((), content_security_policy().encode())

    def policy(self) -> bytes:
        urls = tuple(self._other_nodes()) if self._other_nodes is not None else ()
        if urls != self._policy[0]:
            sockets = sorted({o for o in map(socket_origin, urls) if o is not None})
            self._policy = (urls, content_security_policy(sockets).encode())
        return self._policy[1]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in [(b"content-security-policy", self.policy()),
                                             *SECURITY_HEADERS] if k not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


#: Query parameters whose value is a secret: anything named like a token, key or password.
SECRET_QUERY_VALUE = re.compile(
    r"(?P<name>[?&][^=&#\s]*(?:token|invite|key|secret|password|passwd|auth|signature)[^=&#\s]*=)"
    r"[^&#\s]*",
    re.IGNORECASE,
)


def redact_query(text: str) -> str:
    return SECRET_QUERY_VALUE.sub(r"\g<name>[redacted]", text)


class RedactQuerySecrets(logging.Filter):
    """On uvicorn's access log: the values of secret-looking query parameters become
    ``[redacted]`` (the server takes tokens only in headers and messages, but a client may
    still put one in a URL)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(redact_query(a) if isinstance(a, str) else a for a in record.args)
        return True


def install_log_redaction() -> None:
    logging.getLogger("uvicorn.access").addFilter(RedactQuerySecrets())


def guard(
    app: ASGIApp, operator_token: str, settings: Settings, performer: PerformerBodies | None = None,
    other_nodes: Callable[[], Sequence[str]] | None = None,
) -> ASGIApp:
    """The whole HTTP guard, outermost around an app, so that even its 500s get the headers."""
    guarded = RequestGuard(app, operator_token, settings.max_body_bytes,
                           settings.http_body_timeout_s, performer)
    return SecurityHeaders(guarded, other_nodes)
